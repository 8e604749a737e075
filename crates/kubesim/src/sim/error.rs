//! Errors of the simulated controllers. Each names the object and the action that failed.

use std::path::PathBuf;

/// What went wrong in a simulated controller.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// An API request failed.
    #[error("{action} {kind} {object}: {source}; check that the kubesim API server is running")]
    Kube {
        /// What was attempted (`list`, `create`, ...).
        action: &'static str,
        /// Kind of the object.
        kind: &'static str,
        /// `namespace/name` of the object, or which objects.
        object: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// A file or folder operation failed.
    #[error("{action} {path}: {source}; check permissions and free space under the kubesim dir")]
    Io {
        /// What was attempted (`create`, `write`, ...).
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Every pod IP of the cluster's /24 is taken.
    #[error(
        "no free pod IP left in {prefix}.0/24 (254 addresses); delete unused pods or start a fresh cluster"
    )]
    PodIpsExhausted {
        /// The first three octets of the range.
        prefix: String,
    },
    /// A pod refers to something that is missing or unusable (a ConfigMap, Secret or key).
    #[error("pod {pod}: {message}")]
    PodSpec {
        /// `namespace/name` of the pod.
        pod: String,
        /// What is wrong.
        message: String,
    },
    /// A pod's `rabbitmq-server` could not be configured or started.
    #[error("pod {pod}: rabbitmq-server: {message}")]
    Broker {
        /// `namespace/name` of the pod.
        pod: String,
        /// What failed.
        message: String,
    },
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

/// The result of a simulated controller's step.
pub type Result<T, E = SimError> = std::result::Result<T, E>;
