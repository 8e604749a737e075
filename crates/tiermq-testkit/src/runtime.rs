//! Which RabbitMQ a node runs: the host's Debian 12 package (3.10) or Debian 13's (4.0) from a
//! root built by `make setup`. See the crate docs for what each costs.

use std::fmt;
use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::TestkitError;

/// Environment variable naming the RabbitMQ 4.0 root; `.ci/setup` reads the same one.
pub const RABBITMQ4_ROOT_ENV: &str = "TIERMQ_RABBITMQ4_ROOT";
/// Where `.ci/setup` builds the RabbitMQ 4.0 root unless [`RABBITMQ4_ROOT_ENV`] says otherwise.
pub const DEFAULT_RABBITMQ4_ROOT: &str = "/var/cache/tiermq/rabbitmq-4.0-root";
/// `.ci/setup` writes this file into the root only after the root was built and checked.
pub const ROOT_COMPLETE_MARKER: &str = ".tiermq-root-complete";

/// The start script, the same path on the host and inside the 4.0 root.
pub(crate) const SERVER_SCRIPT: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
pub(crate) const CTL_SCRIPT: &str = "/usr/lib/rabbitmq/bin/rabbitmqctl";
pub(crate) const CHROOT: &str = "/usr/sbin/chroot";
pub(crate) const UNSHARE: &str = "/usr/bin/unshare";

/// The RabbitMQ a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BrokerRuntime {
    /// RabbitMQ 3.10.8 on Erlang 25: the host's own Debian 12 `rabbitmq-server` package, started
    /// directly (as the host's `rabbitmq` user when running as root).
    #[default]
    Host310,
    /// RabbitMQ 4.0.5 on Erlang 27: Debian 13's `rabbitmq-server` in a minimal Debian 13 root that
    /// `make setup` builds once with debootstrap (see [`BrokerRuntime::root`]). Each node starts
    /// in a private mount namespace that mounts `proc` into the root and binds the node's folder
    /// to the same path inside it, then `chroot`s into the root as the root's own `rabbitmq` user.
    /// The mounts exist only for that node's processes and vanish with them; the host's epmd
    /// serves these nodes too.
    Debian13V40,
}

impl BrokerRuntime {
    /// Both runtimes, oldest first.
    pub const ALL: [BrokerRuntime; 2] = [BrokerRuntime::Host310, BrokerRuntime::Debian13V40];

    /// `"3.10"` or `"4.0"`: the RabbitMQ release series. The management API's `rabbitmq_version`
    /// of a node starts with it followed by a dot.
    pub fn series(self) -> &'static str {
        match self {
            BrokerRuntime::Host310 => "3.10",
            BrokerRuntime::Debian13V40 => "4.0",
        }
    }

    /// Whether `version` (as the management API reports it, e.g. `4.0.5`) belongs to this runtime.
    pub fn matches_version(self, version: &str) -> bool {
        version
            .strip_prefix(self.series())
            .is_some_and(|rest| rest.starts_with('.'))
    }

    /// The folder the node's file system is rooted in: `None` for the host's package, the
    /// debootstrap root for 4.0 ([`RABBITMQ4_ROOT_ENV`], default [`DEFAULT_RABBITMQ4_ROOT`]).
    pub fn root(self) -> Option<PathBuf> {
        match self {
            BrokerRuntime::Host310 => None,
            BrokerRuntime::Debian13V40 => Some(
                std::env::var_os(RABBITMQ4_ROOT_ENV)
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_RABBITMQ4_ROOT)),
            ),
        }
    }

    /// Checks that the runtime is installed: the host's start script, or a complete 4.0 root
    /// (built by `make setup`) with its start script and the tools that start it.
    pub fn check_installed(self) -> Result<(), TestkitError> {
        match self.root() {
            None => {
                let script = host_server_script();
                if Path::new(&script).exists() {
                    Ok(())
                } else {
                    Err(TestkitError::ServerNotFound(script))
                }
            }
            Some(root) => self.check_root(&root),
        }
    }

    fn check_root(self, root: &Path) -> Result<(), TestkitError> {
        let missing = |reason: String| {
            Err(TestkitError::RuntimeMissing {
                runtime: self.to_string(),
                root: root.to_path_buf(),
                reason,
            })
        };
        if !root.join(ROOT_COMPLETE_MARKER).is_file() {
            return missing(format!(
                "no complete root there ({ROOT_COMPLETE_MARKER} is missing)"
            ));
        }
        if !root.join(SERVER_SCRIPT.trim_start_matches('/')).exists() {
            return missing(format!("the root has no {SERVER_SCRIPT}"));
        }
        for tool in [CHROOT, UNSHARE] {
            if !Path::new(tool).exists() {
                return missing(format!("the host has no {tool}"));
            }
        }
        if !is_root() {
            return missing("starting a node in the root needs root (chroot, mount)".into());
        }
        Ok(())
    }

    /// uid and gid of the `rabbitmq` user the node runs as: the host's, or the root's own (it
    /// differs from the host's).
    pub(crate) fn rabbitmq_ids(self) -> Result<(u32, u32), TestkitError> {
        let passwd = match self.root() {
            None => PathBuf::from("/etc/passwd"),
            Some(root) => root.join("etc/passwd"),
        };
        let text = fs::read_to_string(&passwd).map_err(TestkitError::io("read", &passwd))?;
        text.lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() > 3 && f[0] == "rabbitmq")
            .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
            .ok_or_else(|| {
                TestkitError::Config(format!(
                    "running as root but {} has no `rabbitmq` user; install rabbitmq-server \
                     (or run make setup)",
                    passwd.display()
                ))
            })
    }
}

impl fmt::Display for BrokerRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BrokerRuntime::Host310 => f.write_str("RabbitMQ 3.10 (host package)"),
            BrokerRuntime::Debian13V40 => f.write_str("RabbitMQ 4.0 (Debian 13 root)"),
        }
    }
}

/// The host's start script (`TIERMQ_RABBITMQ_SERVER` overrides it, for 3.10 only).
pub(crate) fn host_server_script() -> String {
    std::env::var("TIERMQ_RABBITMQ_SERVER").unwrap_or_else(|_| SERVER_SCRIPT.into())
}

pub(crate) fn is_root() -> bool {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() == 0 }
}

/// Makes sure an epmd serves the machine before a 4.0 node starts. A node starts one itself when
/// none answers, but one started from inside the 4.0 root would live on in that node's private
/// mount namespace (keeping its mounts) and inside the cache folder. The host's epmd is the one
/// a 3.10 node would start anyway; both releases speak the same epmd protocol.
pub(crate) fn ensure_host_epmd() -> Result<(), TestkitError> {
    let answers = || {
        TcpStream::connect_timeout(
            &SocketAddrV4::new(Ipv4Addr::LOCALHOST, 4369).into(),
            Duration::from_millis(500),
        )
        .is_ok()
    };
    if answers() {
        return Ok(());
    }
    let epmd = ["/usr/bin/epmd", "/usr/lib/erlang/bin/epmd"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .ok_or_else(|| {
            TestkitError::Config(
                "no epmd on the host; install rabbitmq-server (make setup)".to_string(),
            )
        })?;
    let mut cmd = Command::new(epmd);
    cmd.arg("-daemon")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if is_root()
        && let Ok((uid, gid)) = BrokerRuntime::Host310.rabbitmq_ids()
    {
        // As a 3.10 node would have started it.
        use std::os::unix::process::CommandExt;
        cmd.uid(uid).gid(gid);
    }
    // `-daemon` forks the daemon off and returns; a second one racing us exits on the busy port.
    let _ = cmd.status().map_err(TestkitError::io("start epmd", epmd))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !answers() {
        if Instant::now() >= deadline {
            return Err(TestkitError::Config(
                "epmd did not answer on 127.0.0.1:4369 within 5 s".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_belong_to_their_series_only() {
        assert!(BrokerRuntime::Host310.matches_version("3.10.8"));
        assert!(!BrokerRuntime::Host310.matches_version("3.100.1"));
        assert!(!BrokerRuntime::Host310.matches_version("4.0.5"));
        assert!(BrokerRuntime::Debian13V40.matches_version("4.0.5"));
        assert!(!BrokerRuntime::Debian13V40.matches_version("4.01"));
        assert_eq!(BrokerRuntime::default(), BrokerRuntime::Host310);
    }

    #[test]
    fn a_missing_root_says_to_run_make_setup() {
        let dir = tempfile::tempdir().unwrap();
        let err = BrokerRuntime::Debian13V40
            .check_root(&dir.path().join("nowhere"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("run `make setup`"), "{err}");
        assert!(err.contains(".tiermq-root-complete is missing"), "{err}");
        assert!(err.contains("TIERMQ_RABBITMQ4_ROOT"), "{err}");
        // A half-built root (no completion marker) is refused the same way.
        std::fs::create_dir_all(dir.path().join("usr/lib/rabbitmq/bin")).unwrap();
        std::fs::write(dir.path().join(SERVER_SCRIPT.trim_start_matches('/')), "").unwrap();
        let err = BrokerRuntime::Debian13V40
            .check_root(dir.path())
            .unwrap_err();
        assert!(err.to_string().contains("no complete root"), "{err}");
    }

    #[test]
    fn only_the_4_0_runtime_has_a_root() {
        assert_eq!(BrokerRuntime::Host310.root(), None);
        // The variable may be set by whoever runs the tests; the default applies otherwise.
        let root = BrokerRuntime::Debian13V40.root().unwrap();
        match std::env::var_os(RABBITMQ4_ROOT_ENV).filter(|v| !v.is_empty()) {
            Some(v) => assert_eq!(root, PathBuf::from(v)),
            None => assert_eq!(root, PathBuf::from(DEFAULT_RABBITMQ4_ROOT)),
        }
    }
}
