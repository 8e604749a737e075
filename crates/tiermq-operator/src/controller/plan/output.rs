//! What the planner returns: the next phase, the steps that bring the world to it, the status to
//! record, the Events to emit and when to look again.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use tiermq_crd::{ClusterRef, MigrationPhase, MigrationRecord, RabbitMQInstanceStatus, Tier};

/// The outcome of one planning pass.
///
/// How the executor uses it: run `steps` in order, each idempotently (a step whose effect is
/// already there succeeds; a tenant step on an absent vhost succeeds). Stop at the first failure
/// and record nothing (the next reconcile plans again from the same recorded state and gets the
/// same steps). When every step succeeded, write `status` (only if it differs from the stored
/// one), then emit `events`, then requeue after `requeue_after`. Events describe transitions
/// against the recorded status, so a steady pass emits none and a replay after a crash before the
/// status write emits them once more at most.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The migration phase the instance is in once `steps` succeeded (also in `status`).
    pub phase: MigrationPhase,
    /// Desired-state actions, in the order they must run.
    pub steps: Vec<Step>,
    /// The complete status to record after the steps succeeded.
    pub status: RabbitMQInstanceStatus,
    /// Events for transitions made by this plan (never repeated for an unchanged state).
    pub events: Vec<PlannedEvent>,
    /// When to reconcile again even if nothing changes.
    pub requeue_after: Duration,
    /// The conversion this plan ends (its record is also the last of `status.history`): counted
    /// and logged once the status is written.
    pub finished: Option<MigrationRecord>,
}

impl Plan {
    /// The conditions to record (a view into `status`).
    pub fn conditions(&self) -> &[Condition] {
        &self.status.conditions
    }

    /// The condition of `type_`, if planned.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.status.conditions.iter().find(|c| c.type_ == type_)
    }
}

/// One idempotent action. Every variant names the cluster it acts on, so the executor never has
/// to guess roles. All of them describe a desired state ("the Service routes to X"), not a delta,
/// so running one twice is harmless.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// The dedicated cluster's objects (StatefulSet, headless Service, ConfigMap, Secrets, PDB)
    /// exist as the spec says.
    EnsureDedicatedCluster {
        /// The dedicated cluster to create or bring up to date.
        cluster: ClusterRef,
    },
    /// The instance's vhost, user (with the instance's one set of credentials) and vhost limits
    /// exist on `cluster`, the user with full permissions when `writable`, else read only (a
    /// conversion's destination until its write cutover is complete).
    EnsureTenant {
        /// Where the tenant must exist.
        cluster: ClusterRef,
        /// Full permissions when true, read only when false.
        writable: bool,
    },
    /// Every exchange, queue, binding and policy of the tenant's vhost on `from` exists on `to`.
    CopyTopology {
        /// The cluster whose definitions are copied.
        from: ClusterRef,
        /// The cluster that receives them.
        to: ClusterRef,
        /// The policy keys `to` admits (a SharedCluster's `spec.tenants.policyKeys`); other
        /// keys are dropped on the way. `None` copies policies whole.
        policy_keys: Option<Vec<String>>,
    },
    /// The tenant's own shovels and federation upstreams on `from` exist on `to` too.
    CopyTransfers {
        /// The cluster whose shovels and upstreams are copied.
        from: ClusterRef,
        /// The cluster that receives them.
        to: ClusterRef,
    },
    /// The instance's client Service routes new connections to exactly these clusters (one
    /// EndpointSlice each; empty slices for the others).
    RouteService {
        /// The clusters that take new connections; empty routes them nowhere.
        to: Vec<ClusterRef>,
    },
    /// No federation upstreams/policies of the tenant remain on either cluster.
    DisableFederation {
        /// The conversion's source cluster.
        source: ClusterRef,
        /// The conversion's destination cluster.
        destination: ClusterRef,
    },
    /// The source at the cutover and while it drains: the tenant's user may read but neither
    /// write nor change topology on `cluster` (this also gives reads back after `RevokeAll`),
    /// and connections still publishing there are closed (a busy channel keeps a cached
    /// permission); subscribers are left for `CloseSubscribers`.
    FreezeSource {
        /// The source cluster to make read only.
        cluster: ClusterRef,
    },
    /// The tenant's user has full permissions on `cluster` again.
    RestoreWrites {
        /// The cluster where the tenant may write again.
        cluster: ClusterRef,
    },
    /// The tenant's user has no permissions at all on `cluster`.
    RevokeAll {
        /// The cluster the tenant loses all access to.
        cluster: ClusterRef,
    },
    /// A dynamic shovel (`src-delete-after: queue-length`, `ack-mode: on-confirm`) exists for every
    /// non-empty queue of the tenant on `from`, moving its backlog to the same queue on `to`.
    StartShovels {
        /// The draining source whose queues are shovelled.
        from: ClusterRef,
        /// The cluster that receives the messages.
        to: ClusterRef,
    },
    /// No shovel of the tenant remains on `from`.
    StopShovels {
        /// The cluster the drain shovels run from.
        from: ClusterRef,
    },
    /// No tenant-defined shovel or federation upstream remains on `cluster`.
    StopTransfers {
        /// The cluster to clear of the tenant's own shovels and upstreams.
        cluster: ClusterRef,
    },
    /// The tenant's subscriber connections on `cluster` (exclusive or auto-delete queues) are
    /// closed with `reason`.
    CloseSubscribers {
        /// The cluster whose subscriber connections are closed.
        cluster: ClusterRef,
        /// Close reason sent to the clients.
        reason: String,
    },
    /// The tenant's connections with a consumer on `cluster` are closed with `reason`.
    CloseConsumers {
        /// The cluster whose consuming connections are closed.
        cluster: ClusterRef,
        /// Close reason sent to the clients.
        reason: String,
    },
    /// The tenant's client connections on `cluster` are closed with `reason` (shown to clients).
    CloseConnections {
        /// The cluster whose tenant connections are closed.
        cluster: ClusterRef,
        /// Close reason sent to the clients.
        reason: String,
    },
    /// The tenant's vhost and user are gone from a retired source: its connections closed, and
    /// only once the statistics and the queues themselves show it empty.
    DeleteTenant {
        /// The retired source to remove the tenant from.
        cluster: ClusterRef,
    },
    /// The tenant's vhost and user are gone from `cluster`, whatever it holds: the instance is
    /// deleted, or an aborted destination that never took a client's message.
    DiscardTenant {
        /// The cluster to remove the tenant from.
        cluster: ClusterRef,
    },
    /// The dedicated cluster's objects are gone (PVCs per the documented retention choice).
    DeleteDedicatedCluster {
        /// The dedicated cluster to remove.
        cluster: ClusterRef,
    },
    /// Remove the operator's finalizer: every cleanup step before it succeeded.
    RemoveFinalizer,
    /// Auto-tiering: `spec.tier` becomes `tier`, patched against the instance version the plan
    /// was made from (a concurrent edit wins; the next pass decides again). The conversion
    /// itself starts from the next pass, like any flip.
    SetTier {
        /// The tier to write into `spec.tier`.
        tier: Tier,
    },
}

impl Step {
    /// A short stable name, for logs and metrics labels.
    pub fn name(&self) -> &'static str {
        match self {
            Step::EnsureDedicatedCluster { .. } => "EnsureDedicatedCluster",
            Step::EnsureTenant { .. } => "EnsureTenant",
            Step::CopyTopology { .. } => "CopyTopology",
            Step::CopyTransfers { .. } => "CopyTransfers",
            Step::RouteService { .. } => "RouteService",
            Step::DisableFederation { .. } => "DisableFederation",
            Step::FreezeSource { .. } => "FreezeSource",
            Step::RestoreWrites { .. } => "RestoreWrites",
            Step::RevokeAll { .. } => "RevokeAll",
            Step::StartShovels { .. } => "StartShovels",
            Step::StopShovels { .. } => "StopShovels",
            Step::StopTransfers { .. } => "StopTransfers",
            Step::CloseSubscribers { .. } => "CloseSubscribers",
            Step::CloseConsumers { .. } => "CloseConsumers",
            Step::CloseConnections { .. } => "CloseConnections",
            Step::DeleteTenant { .. } => "DeleteTenant",
            Step::DiscardTenant { .. } => "DiscardTenant",
            Step::DeleteDedicatedCluster { .. } => "DeleteDedicatedCluster",
            Step::RemoveFinalizer => "RemoveFinalizer",
            Step::SetTier { .. } => "SetTier",
        }
    }

    /// Steps that take read access from, or delete state on, a cluster: the ones the safety rules
    /// guard (never while that cluster may still hold messages, except on instance deletion and
    /// for an aborted destination that never took one).
    pub fn is_destructive(&self) -> bool {
        self.destroys().is_some()
    }

    /// Steps that change who reads or writes where, or delete: run only by a replica that has just
    /// confirmed it still leads (a replica cut off from the API server may believe it leads).
    pub fn needs_leadership(&self) -> bool {
        match self {
            Step::EnsureTenant { writable, .. } => *writable,
            Step::RouteService { .. }
            | Step::FreezeSource { .. }
            | Step::RestoreWrites { .. }
            | Step::RevokeAll { .. }
            | Step::StopShovels { .. }
            | Step::StopTransfers { .. }
            | Step::CloseSubscribers { .. }
            | Step::CloseConsumers { .. }
            | Step::CloseConnections { .. }
            | Step::DeleteTenant { .. }
            | Step::DiscardTenant { .. }
            | Step::DeleteDedicatedCluster { .. }
            | Step::RemoveFinalizer
            | Step::SetTier { .. } => true,
            Step::EnsureDedicatedCluster { .. }
            | Step::CopyTopology { .. }
            | Step::CopyTransfers { .. }
            | Step::DisableFederation { .. }
            | Step::StartShovels { .. } => false,
        }
    }

    /// The cluster a destructive step acts on.
    pub fn destroys(&self) -> Option<&ClusterRef> {
        match self {
            Step::RevokeAll { cluster }
            | Step::DeleteTenant { cluster }
            | Step::DiscardTenant { cluster }
            | Step::DeleteDedicatedCluster { cluster } => Some(cluster),
            _ => None,
        }
    }
}

/// A Kubernetes Event to emit (on `RabbitMQInstance`), type Normal or Warning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedEvent {
    /// Normal or Warning.
    pub type_: EventType,
    /// CamelCase reason, one of [`tiermq_crd::conditions::events`].
    pub reason: &'static str,
    /// Human-readable note.
    pub note: String,
}

/// The type of a Kubernetes Event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// A transition users may want to know about.
    Normal,
    /// A problem, or a transition that needs attention.
    Warning,
}
