//! The operator's error type.
//!
//! An [`Error`] says what failed and on which object (a Kubernetes call, a broker call, a Secret,
//! an invalid spec, ...). The reconcilers wrap it with the pipeline [`Stage`] that failed and,
//! while executing a plan, the step that failed ([`Error::at`]), so logs, the
//! `tiermq_reconcile_errors_total` metric and Events say *where* as well as *what*.
//!
//! One rule decides what happens next: [`Error::retry`]. A [`Retry::Backoff`] error clears up by
//! itself (an API server hiccup, a broker restarting, an object not created yet) and is retried
//! with a growing per-object backoff; a [`Retry::Report`] error needs someone to change something
//! (the spec, a missing SharedCluster), so it is reported on the object (condition and one Warning
//! Event) and looked at again after the given delay.

use std::fmt;
use std::time::Duration;

/// Where in a reconcile an error happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Reading the object itself, fresh from the API server.
    Read,
    /// Checking the spec (names, placement) before anything is changed.
    Validate,
    /// Adding the finalizer.
    Finalizer,
    /// Creating or reading the instance's credentials Secret.
    Credentials,
    /// Reading Kubernetes objects and broker state for the planner.
    Observe,
    /// Running a planned step ([`Error::step`] names it).
    Execute,
    /// Applying a SharedCluster's objects.
    Apply,
    /// Writing the status subresource.
    Status,
}

impl Stage {
    /// A short stable name, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Read => "read",
            Stage::Validate => "validate",
            Stage::Finalizer => "finalizer",
            Stage::Credentials => "credentials",
            Stage::Observe => "observe",
            Stage::Execute => "execute",
            Stage::Apply => "apply",
            Stage::Status => "status",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to do after a failed reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Transient: retry with the per-object exponential backoff.
    Backoff,
    /// Needs a change by someone: report it on the object and look again after this long.
    Report(Duration),
}

/// Everything that can stop a reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {action} {object}: {}", kube_message(source))]
    Kube {
        /// What was being done (`get`, `list`, `delete`, …).
        action: &'static str,
        /// What it was done to, readable (`StatefulSet ns/name`).
        object: String,
        /// The client's error.
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
    Secret {
        /// The Secret's name.
        name: String,
        /// What is wrong with it.
        problem: String,
    },
    /// Serializing an object failed (a bug, not a user error).
    #[error("serialization: {0}")]
    Serialization(#[from] serde_json::Error),
    /// Something the next step needs does not exist yet (a Service without a ClusterIP, a broker
    /// without its admin Secret); it will, so retry soon.
    #[error("not ready yet: {0}")]
    NotReady(String),
    /// A refusal someone must lift: a shared instance cannot be placed (its SharedCluster is
    /// unknown, full or does not admit it), or the spec is outside the SharedCluster's tenant
    /// terms or the operator's policy; `reason` is the condition/Event reason.
    #[error("{message}")]
    Placement {
        /// The condition and Event reason.
        reason: &'static str,
        /// What is wrong and what the user can do.
        message: String,
    },
    /// A builder refused its input (a name that cannot name Services, an object not read from
    /// the API server).
    #[error("{0}")]
    Build(#[from] crate::build::BuildError),
    /// A write carried the resourceVersion the reconcile read and the object changed since
    /// (another writer, for example a second operator replica): plan again from what is stored.
    #[error("{0} changed since it was read; planning again")]
    Conflict(String),
    /// An object the operator would write exists and is not controlled by the resource it would
    /// belong to; the operator never takes over or deletes such an object.
    #[error(
        "{object} exists and is controlled by {controller}, not by this resource: the operator \
         leaves it alone; rename this resource or remove the other object"
    )]
    NotOwned {
        /// The object the operator would write.
        object: String,
        /// Who controls it instead.
        controller: String,
    },
    /// The spec names a broker image the running brokers cannot change to in place
    /// ([`tiermq_crd::versions::in_place_upgrade_problem`] says why); they keep their image.
    #[error("{0}")]
    UnsupportedUpgrade(String),
    /// Enabling the stable feature flags before an in-place upgrade failed; the brokers keep
    /// their image and the upgrade is tried again.
    #[error("feature flags must be enabled before the brokers move to {image:?}: {source}")]
    FeatureFlags {
        /// The image the brokers would move to.
        image: String,
        /// The broker's error.
        #[source]
        source: tiermq_broker::BrokerError,
    },
    /// A step that needs leadership could not confirm it (see [`crate::leader::Leadership::confirm`]).
    #[error("{0}")]
    NotLeader(String),
    /// `source` happened in `stage` (and, while executing a plan, in `step`).
    #[error("{stage}{}: {source}", step.map(|s| format!(" step {s}")).unwrap_or_default())]
    In {
        /// The reconcile stage.
        stage: Stage,
        /// The plan step being executed, in the execute stage.
        step: Option<&'static str>,
        /// The error itself.
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// A closure wrapping an error with the stage it happened in:
    /// `.map_err(Error::during(Stage::Observe))`.
    pub fn during(stage: Stage) -> impl FnOnce(Error) -> Error {
        move |e| e.wrap(stage, None)
    }

    /// A closure wrapping an error with the plan step it happened in (stage `Execute`).
    pub fn at(step: &'static str) -> impl FnOnce(Error) -> Error {
        move |e| e.wrap(Stage::Execute, Some(step))
    }

    fn wrap(self, stage: Stage, step: Option<&'static str>) -> Error {
        // The innermost (most precise) location wins.
        match self {
            e @ Error::In { .. } => e,
            e => Error::In {
                stage,
                step,
                source: Box::new(e),
            },
        }
    }

    /// The error without its stage and step.
    pub fn cause(&self) -> &Error {
        match self {
            Error::In { source, .. } => source.cause(),
            e => e,
        }
    }

    /// The reconcile stage that failed, when known.
    pub fn stage(&self) -> Option<Stage> {
        match self {
            Error::In { stage, .. } => Some(*stage),
            _ => None,
        }
    }

    /// The plan step that failed, when the error happened executing one.
    pub fn step(&self) -> Option<&'static str> {
        match self {
            Error::In { step, .. } => *step,
            _ => None,
        }
    }

    /// Short, stable label for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self.cause() {
            Error::Kube { .. } => "KubernetesApi",
            Error::Broker(_) => "BrokerApi",
            Error::InvalidSpec(_) | Error::Build(_) => "InvalidSpec",
            Error::Secret { .. } => "SecretInvalid",
            Error::Serialization(_) => "Serialization",
            Error::NotReady(_) => "NotReady",
            Error::Conflict(_) => "Conflict",
            Error::NotLeader(_) => "NotLeader",
            Error::Placement { .. } => "Placement",
            Error::NotOwned { .. } => "NameConflict",
            Error::UnsupportedUpgrade(_) => "UnsupportedUpgrade",
            Error::FeatureFlags { .. } => "FeatureFlags",
            Error::In { .. } => unreachable!("cause() unwraps every stage"),
        }
    }

    /// The `Degraded` condition's reason for this error.
    pub fn degraded_reason(&self) -> &'static str {
        use tiermq_broker::ErrorKind;
        use tiermq_crd::conditions::reasons;
        match self.cause() {
            Error::Broker(b) => match &b.kind {
                ErrorKind::Unreachable { .. } | ErrorKind::Server { .. } => {
                    reasons::BROKER_UNREACHABLE
                }
                ErrorKind::Unauthorized { .. } => reasons::BROKER_UNAUTHORIZED,
                ErrorKind::Conflict { .. } => reasons::TOPOLOGY_CONFLICT,
                _ => reasons::BROKER_REFUSED,
            },
            Error::Kube { .. } | Error::Conflict(_) | Error::Serialization(_) => {
                reasons::KUBERNETES_API_ERROR
            }
            Error::Secret { .. } => reasons::SECRET_PROBLEM,
            Error::NotOwned { .. } => reasons::NAME_CONFLICT,
            Error::UnsupportedUpgrade(_) => reasons::UNSUPPORTED_UPGRADE,
            Error::FeatureFlags { .. } => reasons::FEATURE_FLAGS_NOT_ENABLED,
            Error::NotReady(_) | Error::NotLeader(_) => reasons::WAITING,
            Error::InvalidSpec(_) | Error::Build(_) | Error::Placement { .. } => {
                tiermq_crd::conditions::INVALID_SPEC
            }
            Error::In { .. } => unreachable!("cause() unwraps every stage"),
        }
    }

    /// The one retry rule (see the module docs).
    pub fn retry(&self) -> Retry {
        match self.cause() {
            // Only a spec change helps: report, look again now and then.
            Error::InvalidSpec(_) | Error::Build(_) => Retry::Report(Duration::from_secs(300)),
            // A SharedCluster may be created or get room soon.
            Error::Placement { .. } => Retry::Report(Duration::from_secs(30)),
            // Clears when the other object goes; nothing to retry quickly.
            Error::NotOwned { .. } => Retry::Report(Duration::from_secs(60)),
            // Only a spec change helps; the rest of the cluster's objects were applied.
            Error::UnsupportedUpgrade(_) => Retry::Report(Duration::from_secs(300)),
            // Broker refusals (a conflicting queue, messages still on a vhost) and API failures
            // clear up by themselves or by a fix on the broker; a missing Secret by a restore.
            Error::Broker(_)
            | Error::Kube { .. }
            | Error::Secret { .. }
            | Error::Serialization(_)
            | Error::NotReady(_)
            | Error::Conflict(_)
            | Error::NotLeader(_)
            | Error::FeatureFlags { .. } => Retry::Backoff,
            Error::In { .. } => unreachable!("cause() unwraps every stage"),
        }
    }
}

/// A kube error in one line: an API server's answer as "HTTP code Reason: message" (the
/// Status struct's Debug form says nothing more and buries the message).
fn kube_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("HTTP {} {}: {}", s.code, s.reason, s.message),
        other => other.to_string(),
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

/// The operator's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_and_step_are_kept_from_the_innermost_wrap_and_shown() {
        let e = Error::NotReady("no ClusterIP".into());
        let e = Error::at("RouteService")(e);
        let e = Error::during(Stage::Observe)(e);
        assert_eq!(e.stage(), Some(Stage::Execute));
        assert_eq!(e.step(), Some("RouteService"));
        assert_eq!(e.category(), "NotReady");
        assert_eq!(e.retry(), Retry::Backoff);
        assert_eq!(
            e.to_string(),
            "execute step RouteService: not ready yet: no ClusterIP"
        );
        let e = Error::during(Stage::Validate)(Error::InvalidSpec("x".into()));
        assert_eq!(e.to_string(), "validate: invalid spec: x");
        assert_eq!(e.retry(), Retry::Report(Duration::from_secs(300)));
        assert!(matches!(e.cause(), Error::InvalidSpec(_)));
    }
}
