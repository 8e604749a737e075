//! What the planner sees: plain observation types the observe step fills from the Kubernetes API
//! and from each broker's management API. No client types and no broker-crate types appear here,
//! so the planner stays a pure function that tests can feed by hand.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use tiermq_crd::{
    ClusterKind, ClusterRef, RabbitMQInstanceSpec, RabbitMQInstanceStatus, TenantTerms,
};

/// Everything [`plan`](super::plan) decides from, gathered by one observe pass.
///
/// The two clusters are described by kind, not by role: `shared` is the SharedCluster the instance
/// is (or is to be) placed on and `dedicated` is the instance's own cluster. The observer picks
/// `shared` as follows: while `status.migration` is set, the SharedCluster recorded there (source
/// or destination); else, when `status.serving` is a SharedCluster, that one; else
/// `spec.shared.clusterRef` (or the operator's default). `dedicated` is always the instance's
/// dedicated StatefulSet. The planner derives the roles (source, destination) itself from the
/// recorded status and matches observations by full ref ([`Observed::cluster_by_ref`]), so an
/// observation of another cluster is treated as "unknown", never as the one it looks for.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    /// `metadata.generation`; written to `status.observedGeneration` and every condition.
    pub generation: i64,
    /// `metadata.deletionTimestamp` is set: plan the finalizer's cleanup.
    pub deletion_requested: bool,
    /// The instance's spec as stored (desired tier, migration settings).
    pub spec: RabbitMQInstanceSpec,
    /// The status as last recorded by the executor (the phase the plan starts from).
    pub status: RabbitMQInstanceStatus,
    /// The instance's SharedCluster.
    pub shared: ClusterObservation,
    /// The instance's dedicated cluster (which usually does not exist on the shared tier).
    pub dedicated: ClusterObservation,
    /// Clusters the instance's client Service currently routes to (from its EndpointSlices).
    pub service_routes: Vec<ClusterRef>,
    /// The operator's conversion slots, as seen when a flip waits to start (unbounded otherwise).
    pub conversions: ConversionSlots,
}

/// The operator-wide bound on conversions running at once (`--max-concurrent-conversions`), as
/// seen by an instance whose flip would start one. The default is unbounded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConversionSlots {
    /// At most this many conversions at once; `None`: no bound.
    pub limit: Option<u32>,
    /// Conversions of other instances running now (recorded, or just started by this replica).
    pub running: u32,
    /// Flips held for a slot since before this one: they start first.
    pub ahead: u32,
}

impl ConversionSlots {
    /// A conversion may start now: a slot is free once every flip held before this one has one.
    pub fn free(&self) -> bool {
        self.limit
            .is_none_or(|l| self.running.saturating_add(self.ahead) < l)
    }
}

impl Observed {
    /// The instance's namespace (its dedicated cluster always lives there).
    pub fn namespace(&self) -> &str {
        &self.dedicated.cluster.namespace
    }

    /// The observation of the cluster of `kind`.
    pub fn cluster(&self, kind: ClusterKind) -> &ClusterObservation {
        match kind {
            ClusterKind::Shared => &self.shared,
            ClusterKind::Dedicated => &self.dedicated,
        }
    }

    /// The observation of the cluster `r` names, if the observer looked at that very cluster.
    /// A ref of the right kind but another name (e.g. a migration recorded onto a SharedCluster the
    /// observer did not observe) yields `None`: the planner then treats the cluster as unknown.
    pub fn cluster_by_ref(&self, r: &ClusterRef) -> Option<&ClusterObservation> {
        let c = self.cluster(r.kind);
        (c.cluster == *r).then_some(c)
    }

    /// True when the Service routes to exactly the clusters in `want` (order ignored).
    pub fn routes_exactly(&self, want: &[&ClusterRef]) -> bool {
        let have: BTreeSet<(String, String, bool)> =
            self.service_routes.iter().map(route_key).collect();
        let want: BTreeSet<(String, String, bool)> = want.iter().map(|r| route_key(r)).collect();
        have == want
    }
}

fn route_key(r: &ClusterRef) -> (String, String, bool) {
    (
        r.namespace.clone(),
        r.name.clone(),
        r.kind == ClusterKind::Shared,
    )
}

/// One broker cluster (a SharedCluster or an instance's dedicated StatefulSet).
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterObservation {
    /// Which cluster this is.
    pub cluster: ClusterRef,
    /// The StatefulSet (for a SharedCluster: the SharedCluster object and its StatefulSet) exists.
    pub exists: bool,
    /// `spec.replicas` of the StatefulSet.
    pub desired_replicas: i32,
    /// `status.readyReplicas` of the StatefulSet.
    pub ready_replicas: i32,
    /// For a SharedCluster: its placement capacity. `None` for a dedicated cluster, or when unknown.
    pub capacity: Option<SharedCapacity>,
    /// For a SharedCluster: what it allows its tenants (`spec.tenants`). `None` for a dedicated
    /// cluster, or when the SharedCluster object was not found.
    pub tenancy: Option<TenantTerms>,
    /// What the management API said; `None` when it could not be reached (or was not asked because
    /// the cluster does not exist). The planner never treats an unreachable broker as empty.
    pub broker: Option<BrokerObservation>,
    /// The RabbitMQ major version the cluster's image names (its StatefulSet's broker image);
    /// `None` when the cluster does not exist or the tag names no version.
    pub rabbitmq_major: Option<u32>,
    /// The cluster's configuration does not permit transient non-exclusive queues (RabbitMQ 4.x:
    /// `deprecated_features.permit.transient_nonexcl_queues = false`): it refuses clients
    /// declaring them, and its definitions import skips them.
    pub refuses_transient_queues: bool,
    /// Why broker pods are not ready, as their kubelet reports it (a container in
    /// `CrashLoopBackOff` with its last exit code, a configuration error), one line per pod;
    /// looked at only while replicas are missing. Carried into the instance's conditions.
    pub pod_problems: Vec<String>,
}

impl ClusterObservation {
    /// A cluster that does not exist (the observer's answer for a missing StatefulSet).
    pub fn absent(cluster: ClusterRef) -> Self {
        Self {
            cluster,
            exists: false,
            desired_replicas: 0,
            ready_replicas: 0,
            capacity: None,
            tenancy: None,
            broker: None,
            rabbitmq_major: None,
            refuses_transient_queues: false,
            pod_problems: Vec::new(),
        }
    }

    /// Every desired replica is ready.
    pub fn ready(&self) -> bool {
        self.exists && self.desired_replicas > 0 && self.ready_replicas >= self.desired_replicas
    }

    /// The management API answered.
    pub fn reachable(&self) -> bool {
        self.exists && self.broker.is_some()
    }

    /// The instance's tenant as observed, `None` when absent *or unknown* (see [`Self::tenant_state`]).
    pub fn tenant(&self) -> Option<&TenantObservation> {
        self.broker.as_ref().and_then(|b| b.tenant.as_ref())
    }

    /// Whether the instance's tenant is there, distinguishing "absent" from "could not look".
    pub fn tenant_state(&self) -> TenantState<'_> {
        if !self.exists {
            return TenantState::Absent;
        }
        match &self.broker {
            None => TenantState::Unknown,
            Some(BrokerObservation { tenant: None }) => TenantState::Absent,
            Some(BrokerObservation { tenant: Some(t) }) => TenantState::Present(t),
        }
    }

    /// Ready and serving the instance's tenant: what "in service" means for a conversion.
    pub fn in_service(&self) -> bool {
        self.ready() && self.tenant().is_some()
    }
}

/// Three-valued tenant presence: the planner deletes or skips only on a definite answer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TenantState<'a> {
    /// The broker answered and the tenant's vhost exists.
    Present(&'a TenantObservation),
    /// The broker answered and the vhost does not exist (or the cluster itself is gone).
    Absent,
    /// The broker could not be asked; nothing may be concluded.
    Unknown,
}

/// Placement capacity of a SharedCluster (from its spec and status).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedCapacity {
    /// Instances placed on the cluster (including ones migrating onto or off it).
    pub instance_count: i32,
    /// `spec.capacity.maxInstances`.
    pub max_instances: i32,
    /// `instance_count` already includes this instance (it is placed or migrating there).
    pub counts_this_instance: bool,
}

impl SharedCapacity {
    /// There is room for this instance.
    pub fn has_room(&self) -> bool {
        self.counts_this_instance || self.instance_count < self.max_instances
    }
}

/// What one broker's management API reported about this instance.
#[derive(Clone, Debug, PartialEq)]
pub struct BrokerObservation {
    /// The instance's vhost + user; `None` when the vhost does not exist.
    pub tenant: Option<TenantObservation>,
}

/// The instance's vhost and user on one broker.
#[derive(Clone, Debug, PartialEq)]
pub struct TenantObservation {
    /// The user's permissions on the vhost.
    pub access: Access,
    /// Names of the vhost's exchanges, queues, bindings and policies (any stable encoding, e.g.
    /// `queue/orders`). The destination is in sync when it holds every name the source holds.
    pub topology: BTreeSet<String>,
    /// Open client connections of the user on this vhost.
    pub connections: u32,
    /// Of those, connections that subscribe: they consume from (or own) an exclusive or
    /// auto-delete queue, whose messages exist on this cluster only.
    pub subscribers: u32,
    /// Of those, connections with at least one consumer.
    pub consumers: u32,
    /// The tenant's own shovels and federation upstreams on this vhost.
    pub transfers: u32,
    /// Drain shovels defined on this vhost.
    pub shovels: ShovelObservation,
    /// tiermq's federation upstream exists on this vhost (left by an older operator version;
    /// removed before any drain sample counts).
    pub federated: bool,
    /// The latest queue statistics, `None` when the broker gave none.
    pub backlog: Option<BacklogSample>,
    /// The tenant's policies that set classic queue mirroring keys (RabbitMQ 3.x), each as
    /// `name (key, key)`: a copy onto RabbitMQ 4.x drops those keys.
    pub mirroring_policies: Vec<String>,
    /// The tenant's policies (as in `topology`) with the keys each sets, by name.
    pub policy_keys: BTreeMap<String, Vec<String>>,
}

/// Permissions of the tenant's user on its vhost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Configure, write and read.
    ReadWrite,
    /// Writes refused (`write: "^$"`), reads allowed.
    ReadOnly,
    /// No permissions at all.
    None,
}

impl Access {
    /// Publishing is possible, so the backlog may still grow.
    pub fn writable(self) -> bool {
        self == Access::ReadWrite
    }
}

/// Dynamic shovels on the vhost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShovelObservation {
    /// Drain shovels declared and not terminated (starting, running, or not reported yet).
    pub running: u32,
    /// Shovels in a failed/terminated state; reported in conditions, re-created by `StartShovels`.
    pub failed: u32,
}

/// One statistics sample of the vhost's queues.
#[derive(Clone, Debug, PartialEq)]
pub struct BacklogSample {
    /// The broker's statistics timestamp of this sample (not the time the operator asked). Two
    /// samples with the same timestamp are the same sample; only a later one is "fresh".
    pub stats_at: DateTime<Utc>,
    /// Per-queue counts; delayed messages held by a delayed-message exchange may be reported as an
    /// extra entry named after the exchange.
    pub queues: Vec<QueueMessages>,
    /// Messages per second leaving the vhost as the broker reports it (deliver/get + shovel rates);
    /// `None` lets the planner derive a rate from consecutive samples.
    pub drain_rate: Option<f64>,
    /// Messages per second clients publish into the vhost, from the vhost's statistics (what
    /// auto-tiering compares).
    pub publish_rate: f64,
    /// Ready messages over all queues as the queues themselves answered right after the
    /// statistics were read (passive declares), not from the statistics; `None` when not asked
    /// (only a draining source is) or when some queue could not be asked.
    pub live_ready: Option<i64>,
}

impl BacklogSample {
    /// Ready + unacked + delayed messages over all queues.
    pub fn total(&self) -> i64 {
        self.queues.iter().map(QueueMessages::total).sum()
    }

    /// Every queue has 0 ready, 0 unacked and 0 delayed messages.
    pub fn is_empty(&self) -> bool {
        self.queues.iter().all(|q| q.total() == 0)
    }

    /// Ready messages waiting in subscriber queues (exclusive or auto-delete): what a subscriber
    /// has not consumed yet.
    pub fn subscriber_backlog(&self) -> i64 {
        self.queues
            .iter()
            .filter(|q| q.subscriber)
            .map(|q| q.ready.max(0))
            .sum()
    }
}

/// Message counts of one queue, and what decides whether it can move.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueMessages {
    /// The queue's name.
    pub queue: String,
    /// Ready messages, not counting `delayed`.
    pub ready: i64,
    /// Unacknowledged, plus a quorum queue's messages waiting for at-least-once dead-lettering.
    pub unacked: i64,
    /// Ready messages of a delay queue (TTL + dead-letter delayed delivery), counted apart.
    pub delayed: i64,
    /// Exclusive or auto-delete: its messages belong to one connection.
    pub subscriber: bool,
    /// A stream: `ready` is its retained history, which consuming does not remove.
    pub stream: bool,
    /// The queue's message TTL in milliseconds, when it has one.
    pub ttl_ms: Option<u64>,
    /// Expired or rejected messages are dead-lettered instead of dropped.
    pub dead_letters: bool,
    /// A length limit whose overflow drops (or dead-letters) the oldest message.
    pub drops_oldest: bool,
    /// Not durable and not exclusive: deprecated in RabbitMQ 4.x, refused where not permitted.
    pub transient: bool,
}

impl QueueMessages {
    /// Every message still in the queue: ready, unacknowledged and delayed.
    pub fn total(&self) -> i64 {
        self.ready.max(0) + self.unacked.max(0) + self.delayed.max(0)
    }
}
