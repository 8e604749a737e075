//! Errors of the simulated controllers. Each names the object and the action that failed.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("{action} {kind} {object}: {source}; check that the kubesim API server is running")]
    Kube {
        action: &'static str,
        kind: &'static str,
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("{action} {path}: {source}; check permissions and free space under the kubesim dir")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no free pod IP left in {prefix}.0/24 (254 addresses); delete unused pods or start a fresh cluster"
    )]
    PodIpsExhausted { prefix: String },
    #[error("pod {pod}: {message}")]
    PodSpec { pod: String, message: String },
    #[error("pod {pod}: rabbitmq-server: {message}")]
    Broker { pod: String, message: String },
}

impl SimError {
    pub(crate) fn kube(
        action: &'static str,
        kind: &'static str,
        object: impl Into<String>,
        source: kube::Error,
    ) -> Self {
        SimError::Kube {
            action,
            kind,
            object: object.into(),
            source,
        }
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        SimError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = SimError> = std::result::Result<T, E>;
