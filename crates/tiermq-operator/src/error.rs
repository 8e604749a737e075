//! The operator's error type. Each variant says what failed and on which object; `category` maps it
//! to an Event reason and a metrics label, and `is_transient` decides how fast to retry.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {action} {object}: {source}")]
    Kube {
        action: &'static str,
        object: String,
        #[source]
        source: kube::Error,
    },
    /// A RabbitMQ management API call failed.
    #[error("broker: {0}")]
    Broker(#[from] tiermq_broker::BrokerError),
    /// The spec asks for something that cannot be done; fixing the spec is the way out.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// A Secret the operator relies on is missing a key or malformed.
    #[error("secret {name}: {problem}")]
    Secret { name: String, problem: String },
    /// Serializing an object failed (a bug, not a user error).
    #[error("serialization: {0}")]
    Serialization(#[from] serde_json::Error),
    /// The object lacks a namespace or name the operator needs.
    #[error("object {0} has no namespace or name")]
    Incomplete(String),
    /// Something the next step needs does not exist yet (a Service without a ClusterIP, a broker
    /// without its admin Secret); it will, so retry soon.
    #[error("not ready yet: {0}")]
    NotReady(String),
    /// A shared instance cannot be placed (its SharedCluster is unknown or full); `reason` is the
    /// condition/Event reason.
    #[error("{message}")]
    Placement {
        reason: &'static str,
        message: String,
    },
    /// A builder refused its input (a name that cannot name Services, an object not read from
    /// the API server).
    #[error("{0}")]
    Build(#[from] crate::build::BuildError),
}

impl Error {
    /// Short, stable label for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "KubernetesApi",
            Error::Broker(_) => "BrokerApi",
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::Secret { .. } => "SecretInvalid",
            Error::Serialization(_) => "Serialization",
            Error::Incomplete(_) => "Incomplete",
            Error::NotReady(_) => "NotReady",
            Error::Build(_) => "InvalidSpec",
            Error::Placement { .. } => "Placement",
        }
    }

    /// Permanent errors wait for a spec change (or a long timer); transient ones back off briefly.
    pub fn retry_after(&self) -> Duration {
        match self {
            Error::InvalidSpec(_)
            | Error::Incomplete(_)
            | Error::Serialization(_)
            | Error::Build(_) => Duration::from_secs(300),
            Error::Secret { .. } | Error::Placement { .. } => Duration::from_secs(30),
            Error::Kube { .. } | Error::Broker(_) | Error::NotReady(_) => Duration::from_secs(5),
        }
    }

    /// Retrying cannot help until someone changes the spec (or the broker state a step refused
    /// on): report it with a condition and a Warning Event, and retry slowly.
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::InvalidSpec(_)
            | Error::Build(_)
            | Error::Incomplete(_)
            | Error::Placement { .. } => true,
            // Broker refusals (a conflicting queue, messages still on a vhost) clear up by
            // themselves or by a fix on the broker: retried with a growing backoff.
            Error::Broker(_)
            | Error::Kube { .. }
            | Error::Secret { .. }
            | Error::Serialization(_)
            | Error::NotReady(_) => false,
        }
    }
}

/// Shorthand to attach context to kube errors: `.map_err(kube_err("apply", &name))`.
pub fn kube_err(
    action: &'static str,
    object: impl Into<String>,
) -> impl FnOnce(kube::Error) -> Error {
    let object = object.into();
    move |source| Error::Kube {
        action,
        object,
        source,
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
