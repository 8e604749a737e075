use std::path::PathBuf;
use std::time::Duration;

/// What went wrong while starting, probing or stopping a node.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    #[error("{what} ({path}): {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "node {node} exited during start-up ({status}); last lines of its log:\n{log_tail}\n\
         check that rabbitmq-server is installed and that its ports are free"
    )]
    Exited {
        node: String,
        status: String,
        log_tail: String,
    },
    #[error(
        "node {node} was not ready after {timeout:?} (last probe: {last_probe}); last lines of its \
         log:\n{log_tail}"
    )]
    NotReady {
        node: String,
        timeout: Duration,
        last_probe: String,
        log_tail: String,
    },
    #[error("no free loopback IP left in 127.3.0.0/16 (all leased or their ports taken)")]
    NoFreeIp,
    #[error("cannot find the rabbitmq-server start script ({0}); install Debian's rabbitmq-server")]
    ServerNotFound(String),
    #[error("`rabbitmqctl {args}` against {node} failed ({status}): {output}")]
    Ctl {
        node: String,
        args: String,
        status: String,
        output: String,
    },
    #[error("invalid node configuration: {0}")]
    Config(String),
    #[error(
        "the node's folder {base} is not reachable by its user {user} (uid {uid}): {blocked} has \
         mode {mode:04o} and owner uid {owner}; give that folder o+x (chmod o+x) or put the node's \
         folder elsewhere"
    )]
    FolderUnreachable {
        base: PathBuf,
        user: String,
        uid: u32,
        /// The first folder on the way the user may not enter.
        blocked: PathBuf,
        mode: u32,
        owner: u32,
    },
    #[error(
        "{runtime} is not installed at {root}: {reason}; run `make setup` (it builds the root \
         once; TIERMQ_RABBITMQ4_ROOT names another place)"
    )]
    RuntimeMissing {
        runtime: String,
        root: PathBuf,
        reason: String,
    },
}

impl TestkitError {
    pub(crate) fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| TestkitError::Io { what, path, source }
    }
}
