//! Condition types and reasons the operator sets. Kept with the API because users match on them.

/// The instance serves clients.
pub const READY: &str = "Ready";
/// A tier conversion is running.
pub const MIGRATING: &str = "Migrating";
/// A tier flip is held; the reason says why (not in service, no capacity, ...).
pub const CONVERSION_BLOCKED: &str = "ConversionBlocked";
/// The source did not drain within `spec.migration.drainTimeoutSeconds`. Nothing was deleted.
pub const DRAIN_TIMED_OUT: &str = "DrainTimedOut";
/// The spec asks for something the operator will not do (e.g. an unknown SharedCluster).
pub const INVALID_SPEC: &str = "InvalidSpec";

pub mod reasons {
    pub const NOT_IN_SERVICE: &str = "InstanceNotInService";
    pub const NO_CAPACITY: &str = "SharedClusterFull";
    pub const SHARED_CLUSTER_NOT_FOUND: &str = "SharedClusterNotFound";
    pub const SHARED_CLUSTER_NOT_READY: &str = "SharedClusterNotReady";
    pub const DESTINATION_NOT_READY: &str = "DestinationNotReady";
    pub const BACKLOG_REMAINS: &str = "BacklogRemains";
    pub const CONVERTING: &str = "Converting";
    pub const ABORTING: &str = "FlipBackBeforeCutover";
    pub const REVERSE_QUEUED: &str = "FlipBackAfterCutover";
    pub const IN_SERVICE: &str = "InService";
    pub const PROVISIONING: &str = "Provisioning";
    pub const STABLE: &str = "NoConversion";
}
