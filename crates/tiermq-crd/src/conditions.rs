//! Condition types, condition reasons and Event reasons the operator sets, and the annotation
//! that pauses it. Kept with the API because users, dashboards and GitOps health checks match on
//! them; the operator names no reason anywhere else.

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
/// Reconciling keeps failing (a broker unreachable or refusing, a Kubernetes write refused, a
/// Secret missing); the reason and message say which step and why. Set after
/// [`DEGRADED_AFTER_FAILURES`] consecutive failed passes, cleared by the next pass that succeeds.
pub const DEGRADED: &str = "Degraded";
/// kstatus convention (read by Flux, `kstatus` and Argo CD health checks): True while the
/// operator works towards the spec: a conversion or its abort runs, a flip is held, a cluster is
/// being provisioned, the object is being deleted. False once the spec is served, and also when
/// [`STALLED`] is True or reconciling is [`PAUSED`] (nothing moves then). With
/// `status.observedGeneration == metadata.generation`, `Ready` True and this False, the resource
/// is current.
pub const RECONCILING: &str = "Reconciling";
/// kstatus convention: True when the operator cannot go on without someone changing something:
/// an invalid spec, an unknown or full SharedCluster for a new instance, a name conflict, a
/// drain past its timeout (the drain still goes on). The reason and message say which.
pub const STALLED: &str = "Stalled";
/// True when the annotation [`PAUSED_ANNOTATION`] is `"true"`: the operator does nothing for the
/// instance but set this condition (deletion still proceeds).
pub const PAUSED: &str = "Paused";
/// True when the tier of `spec.tier` serves the tenant with no conversion running or held: what
/// `kubectl wait --for=condition=TierServed` waits for after a flip (kubectl also requires the
/// condition's `observedGeneration` to be current, so it never returns on the previous spec's
/// state).
pub const TIER_SERVED: &str = "TierServed";
/// Every condition type the operator sets (a metric counts the instances with each one True).
pub const ALL: [&str; 10] = [
    READY,
    MIGRATING,
    CONVERSION_BLOCKED,
    DRAIN_TIMED_OUT,
    INVALID_SPEC,
    DEGRADED,
    RECONCILING,
    STALLED,
    PAUSED,
    TIER_SERVED,
];

/// The annotation that pauses reconciling one instance when set to `"true"` (see [`PAUSED`]).
pub const PAUSED_ANNOTATION: &str = "tiermq.io/paused";

/// True when `annotations` pause the object: [`PAUSED_ANNOTATION`] is `"true"`, in any case,
/// surrounding blanks ignored; any other value (or none) does not pause.
pub fn paused_by(annotations: &std::collections::BTreeMap<String, String>) -> bool {
    annotations
        .get(PAUSED_ANNOTATION)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// Consecutive failed reconciles after which [`DEGRADED`] turns True (one failure is often a
/// race that the retry settles).
pub const DEGRADED_AFTER_FAILURES: u32 = 2;

/// Reasons of conditions, True and False.
pub mod reasons {
    /// `ConversionBlocked`: the instance is not in service on its current cluster.
    pub const NOT_IN_SERVICE: &str = "InstanceNotInService";
    /// `ConversionBlocked` / `InvalidSpec`: the SharedCluster has no room for the instance.
    pub const NO_CAPACITY: &str = "SharedClusterFull";
    /// `ConversionBlocked` / `InvalidSpec`: the SharedCluster does not exist (or none is named).
    pub const SHARED_CLUSTER_NOT_FOUND: &str = "SharedClusterNotFound";
    /// `ConversionBlocked` / `InvalidSpec`: the SharedCluster's `spec.tenants.namespaces` does
    /// not admit the instance's namespace.
    pub const NAMESPACE_NOT_ALLOWED: &str = "NamespaceNotAllowed";
    /// `ConversionBlocked` / `InvalidSpec`: the SharedCluster's `spec.tenants.accessTypes` does
    /// not admit the instance's `spec.access.serviceType`.
    pub const ACCESS_TYPE_NOT_ALLOWED: &str = "AccessTypeNotAllowed";
    /// `InvalidSpec`: `spec.dedicated` is outside the bounds the operator is configured with
    /// (images, replicas, resources, storage).
    pub const OUTSIDE_OPERATOR_POLICY: &str = "OutsideOperatorPolicy";
    /// `ConversionBlocked`: the SharedCluster exists but is not ready or not reachable.
    pub const SHARED_CLUSTER_NOT_READY: &str = "SharedClusterNotReady";
    /// `ConversionBlocked`: the destination cluster is not ready.
    pub const DESTINATION_NOT_READY: &str = "DestinationNotReady";
    /// `ConversionBlocked`: a queue cannot move without losing messages (a stream's history, a
    /// short TTL without dead-lettering, a length limit dropping the oldest) or would be refused
    /// by the destination (a transient queue onto a RabbitMQ 4.x cluster that does not permit
    /// them); the message names it and the way out.
    pub const QUEUE_CANNOT_MOVE: &str = "QueueCannotMove";
    /// `ConversionBlocked`: the cutover waits for a subscriber to consume its backlog.
    pub const SUBSCRIBER_BACKLOG: &str = "SubscriberBacklog";
    /// `ConversionBlocked`: the flip waits for `spec.migration.window` to open; the message and
    /// `status.nextMaintenanceWindow` say when it does (the conversion starts then).
    pub const OUTSIDE_MAINTENANCE_WINDOW: &str = "OutsideMaintenanceWindow";
    /// `ConversionBlocked`: `spec.migration.window` cannot be read (a time that is not `HH:MM`,
    /// or a start equal to the end); the flip waits until it is fixed or removed.
    pub const INVALID_MAINTENANCE_WINDOW: &str = "InvalidMaintenanceWindow";
    /// `ConversionBlocked`: as many conversions as the operator's
    /// `--max-concurrent-conversions` allows are running; held flips start in the order they were
    /// held as conversions end (the message says how many run and how many wait ahead).
    pub const CONVERSION_LIMIT_REACHED: &str = "ConversionLimitReached";
    /// `ConversionBlocked` False: no flip is held.
    pub const NOT_BLOCKED: &str = "NotBlocked";
    /// `DrainTimedOut` True: the source still holds messages after the drain timeout.
    pub const BACKLOG_REMAINS: &str = "BacklogRemains";
    /// `DrainTimedOut` False: no drain has exceeded its timeout.
    pub const WITHIN_DRAIN_TIMEOUT: &str = "WithinDrainTimeout";
    /// `Migrating` True: a conversion runs.
    pub const CONVERTING: &str = "Converting";
    /// `Migrating` True: a flip back before the write cutover is being aborted.
    pub const ABORTING: &str = "FlipBackBeforeCutover";
    /// `Migrating` True: a flip back after the write cutover waits for this conversion to end.
    pub const REVERSE_QUEUED: &str = "FlipBackAfterCutover";
    /// `Migrating` False: no conversion runs.
    pub const STABLE: &str = "NoConversion";
    /// `Ready` True: the Service routes to a cluster serving the tenant.
    pub const IN_SERVICE: &str = "InService";
    /// `Ready` False: waiting for a cluster to serve the tenant.
    pub const PROVISIONING: &str = "Provisioning";
    /// `Ready` False: the instance is being deleted.
    pub const DELETING: &str = "Deleting";
    /// `InvalidSpec` False: the spec can be served.
    pub const SPEC_VALID: &str = "SpecValid";
    /// `Degraded`: a broker did not answer.
    pub const BROKER_UNREACHABLE: &str = "BrokerUnreachable";
    /// `Degraded`: a broker refused the operator's admin login (401/403).
    pub const BROKER_UNAUTHORIZED: &str = "BrokerUnauthorized";
    /// `Degraded`: the destination holds an object that differs from the source's (named in the
    /// message); someone has to remove or fix it.
    pub const TOPOLOGY_CONFLICT: &str = "TopologyConflict";
    /// `Degraded`: a broker refused a request or a step refused to act (the message says why).
    pub const BROKER_REFUSED: &str = "BrokerRefused";
    /// `Degraded`: the Kubernetes API refused or failed a request (for example a StatefulSet
    /// change it does not allow).
    pub const KUBERNETES_API_ERROR: &str = "KubernetesApiError";
    /// `Degraded`: a Secret the operator needs is missing or malformed.
    pub const SECRET_PROBLEM: &str = "SecretProblem";
    /// `Degraded`: an object the operator would write under this resource's name exists and is
    /// controlled by something else (for example an instance named like a SharedCluster in its
    /// namespace); the operator leaves it alone.
    pub const NAME_CONFLICT: &str = "NameConflict";
    /// `Degraded`: something the next step needs keeps not being there (a cluster that does not
    /// become ready, a Service without its IP).
    pub const WAITING: &str = "Waiting";
    /// SharedCluster `Ready` False: it is being deleted but instances are still placed on it.
    pub const DELETION_BLOCKED: &str = "DeletionBlocked";
    /// `Degraded`: the spec names a broker image the running brokers cannot change to in place
    /// (more than one minor release ahead, or older; see `tiermq_crd::versions`). The brokers keep
    /// running their image; the message says the way there.
    pub const UNSUPPORTED_UPGRADE: &str = "UnsupportedUpgrade";
    /// `Degraded`: the feature flags an in-place upgrade needs enabled first could not be
    /// enabled; the brokers keep their image.
    pub const FEATURE_FLAGS_NOT_ENABLED: &str = "FeatureFlagsNotEnabled";
    /// `Degraded` False: the last pass succeeded.
    pub const RECONCILED: &str = "Reconciled";
    /// `Reconciling` False: the spec is served and nothing is left to do.
    pub const UP_TO_DATE: &str = "UpToDate";
    /// `Stalled` False: nothing needs someone's change.
    pub const NOT_STALLED: &str = "NotStalled";
    /// `Paused` True (and `Reconciling` False): the annotation `tiermq.io/paused` is `"true"`.
    pub const PAUSED_BY_ANNOTATION: &str = "PausedByAnnotation";
    /// `Paused` False: the operator reconciles the instance.
    pub const NOT_PAUSED: &str = "NotPaused";
    /// `TierServed` True: the tier of `spec.tier` serves the tenant, no conversion runs.
    pub const SPEC_TIER_SERVED: &str = "SpecTierServed";
}

/// Reasons of the Events the operator emits on a `RabbitMQInstance`, one per transition.
pub mod events {
    /// Warning (SharedCluster): its deletion waits for the instances placed on it.
    pub const DELETION_BLOCKED: &str = "DeletionBlocked";
    /// Warning: reconciling keeps failing (see the `Degraded` condition).
    pub const RECONCILE_FAILING: &str = "ReconcileFailing";
    /// A broker cluster's image changes in place: its stable feature flags were enabled (the
    /// note names them) and the StatefulSet rolls to the new image.
    pub const UPGRADING_IMAGE: &str = "UpgradingImage";
    /// Warning: a flip is held (see the `ConversionBlocked` condition).
    pub const CONVERSION_BLOCKED: &str = "ConversionBlocked";
    /// Auto-tiering changed `spec.tier`; the note names the thresholds and the measured load.
    pub const AUTO_TIERED: &str = "AutoTiered";
    /// A flip waits for its maintenance window (the note says when it opens).
    pub const WAITING_FOR_WINDOW: &str = "WaitingForMaintenanceWindow";
    /// A flip waits for one of the operator's conversion slots (`--max-concurrent-conversions`).
    pub const WAITING_FOR_CONVERSION_SLOT: &str = "WaitingForConversionSlot";
    /// A held flip was withdrawn.
    pub const CONVERSION_WITHDRAWN: &str = "ConversionWithdrawn";
    /// A conversion started (`PreparingDestination`).
    pub const CONVERSION_STARTED: &str = "ConversionStarted";
    /// Warning, with `ConversionStarted`: the destination runs a RabbitMQ release that does not
    /// take the tenant's topology as it is (classic mirroring policy keys dropped on 4.x,
    /// deprecated transient queues); the note says what changes.
    pub const TRANSLATED_FOR_DESTINATION: &str = "TranslatedForDestination";
    /// The Service routes to both clusters.
    pub const DUAL_WRITE: &str = "DualWriteDualRead";
    /// The source refuses writes and left the Service.
    pub const WRITE_CUTOVER: &str = "WriteCutover";
    /// Subscribers moved to the destination, which now takes writes.
    pub const SUBSCRIBERS_MOVED: &str = "SubscribersMoved";
    /// The source is being drained.
    pub const DRAINING: &str = "DrainingSource";
    /// The source was proven empty.
    pub const SOURCE_DRAINED: &str = "SourceDrained";
    /// Warning: messages showed up on a source proven empty before.
    pub const BACKLOG_REAPPEARED: &str = "BacklogReappeared";
    /// The source tenant (and a dedicated source cluster) was deleted.
    pub const SOURCE_RETIRED: &str = "SourceRetired";
    /// The conversion ended; `status.tier` is the new tier.
    pub const CONVERSION_COMPLETED: &str = "ConversionCompleted";
    /// A flip back before the write cutover is being aborted.
    pub const ABORTING: &str = "ConversionAborting";
    /// The abort ended; the source serves alone.
    pub const ABORTED: &str = "ConversionAborted";
    /// A flip back after the write cutover is queued behind the running conversion.
    pub const REVERSE_QUEUED: &str = "ReverseQueued";
    /// Warning: the drain exceeded `drainTimeoutSeconds`.
    pub const DRAIN_TIMED_OUT: &str = "DrainTimedOut";
    /// Reconciling stopped: the annotation `tiermq.io/paused` was set to `"true"`.
    pub const PAUSED: &str = "ReconcilePaused";
    /// Reconciling resumed after a pause.
    pub const RESUMED: &str = "ReconcileResumed";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_true_in_any_case_pauses() {
        let with = |v: &str| {
            [(PAUSED_ANNOTATION.to_string(), v.to_string())]
                .into_iter()
                .collect()
        };
        assert!(paused_by(&with("true")));
        assert!(paused_by(&with(" TRUE ")));
        assert!(!paused_by(&with("false")));
        assert!(!paused_by(&with("yes")));
        assert!(!paused_by(&Default::default()));
    }

    #[test]
    fn every_condition_type_is_counted_once() {
        let mut seen = ALL.to_vec();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), ALL.len());
    }
}
