//! The tier-conversion state machine, as a pure function: [`plan`]`(observed, now) -> Plan`.
//!
//! No client, no clock, no IO: the observe step fills an [`Observed`], the planner returns the
//! next phase, the ordered idempotent [`Step`]s, the status (incl. conditions) to record, the
//! Events and the requeue delay; an executor runs the steps and records the status only after all
//! of them succeeded. Steps are desired states, never deltas, so re-planning from the recorded
//! state after a crash at any point yields steps that are safe to run again.
//!
//! # Using it
//!
//! ```text
//! let observed = observe(...).await?;          // Kubernetes objects + management APIs
//! let p = plan(&observed, Utc::now());         // `now` read after observing
//! for step in &p.steps { run(step).await? }    // in order; stop at the first error
//! write_status_if_changed(&p.status).await?;   // only after every step succeeded
//! emit(&p.events); requeue(p.requeue_after);
//! ```
//!
//! # Roles
//!
//! A conversion moves an instance from its *source* cluster (the one serving `status.tier`) to a
//! *destination* cluster (the one of `spec.tier`): upgrade = shared → dedicated (a new
//! StatefulSet), downgrade = dedicated → shared (the instance's SharedCluster). Both are recorded
//! in `status.migration` when the conversion starts and never change until it ends, so at most
//! one conversion runs per instance (rule **R-one**).
//!
//! # Rules (each names the function that implements it)
//!
//! - **R-stable** (`idle()`): `spec.tier == status.tier` → `Stable`, no migration. The serving
//!   cluster, tenant and Service routing are kept (in-tier changes such as replicas, resources or
//!   limits are the executor's business: they never start a conversion). A new instance (no
//!   `status.tier`) adopts `spec.tier` without a conversion.
//! - **R-blocked** (`idle()`): a flip while the instance is not in service (serving cluster not
//!   ready, management API unreachable, tenant missing) → `Blocked` with condition
//!   `ConversionBlocked` (reason `InstanceNotInService`) and a requeue; it proceeds once in service.
//!   A downgrade onto a SharedCluster that is missing / not ready / at capacity / not taking the
//!   instance's namespace or Service type (`spec.tenants`) is blocked with
//!   `SharedClusterNotFound` / `SharedClusterNotReady` / `SharedClusterFull` /
//!   `NamespaceNotAllowed` / `AccessTypeNotAllowed`. Withdrawing the flip returns to `Stable`.
//! - **R-window** (`idle()`, module `window`): with `spec.migration.window`, a flip that passed
//!   the R-blocked checks outside the window is held too (`Blocked`, `ConversionBlocked` with
//!   reason `OutsideMaintenanceWindow`, `status.nextMaintenanceWindow`, one Normal Event) and
//!   looked at again when the window opens. Only the start of a conversion is gated: a running
//!   conversion, its abort, a deletion and in-tier changes go on whatever the time, and a
//!   conversion is never interrupted when the window closes. An unreadable window holds the flip
//!   (`InvalidMaintenanceWindow`).
//! - **R-limit** (`idle()`): with the operator's `--max-concurrent-conversions`, a flip that
//!   passed the checks above while that many conversions run (or while flips held before it wait
//!   for the free slots) is held too (`Blocked`, `ConversionBlocked` with reason
//!   `ConversionLimitReached`, one Normal Event). Held flips start in the order they were held,
//!   as conversions end; running conversions are never held.
//! - **R-write-ahead** (`idle()`): the pass that starts a conversion only records it (source
//!   kept as is); destination state is created from the next pass on, so everything on the
//!   destination is owned by a recorded migration and an abort or deletion finds it.
//! - **R-one-writer** (all phases): at any moment only one cluster takes the tenant's writes, so
//!   a subscriber (exclusive or auto-delete queue) on that cluster misses nothing. The
//!   destination's tenant is read-only until the cutover is complete.
//! - **R-prepare** (`preparing()`): create the dedicated cluster (upgrade), wait until ready,
//!   ensure the tenant with the *same* credentials, read-only, copy the topology; advance once the
//!   destination is ready, has the tenant and holds every topology object of the source.
//! - **R-dual** (`dual()`): the destination is kept in step (topology refreshed); clients stay on
//!   the source. The cutover waits for a complete statistics sample of the source, and is held
//!   (`ConversionBlocked`) while a queue cannot move (module `queues`: a stream with history, a
//!   short TTL without dead-lettering) or a subscriber has a backlog. It is recorded before it is
//!   performed (write-ahead), so while `DualWriteDualRead` is recorded the destination was never
//!   routed or writable.
//! - **R-cutover** (`single_write()`): the Service routes to the destination; the source is
//!   frozen (no writes, no topology changes, reads kept) and connections still publishing there
//!   are closed; the final topology is copied. Once the source has been seen frozen for
//!   [`SUBSCRIBER_SETTLE`] (or has no subscriber), subscribers are closed, the tenant's own shovels
//!   and federation upstreams move, and the destination opens for writes. Draining starts once
//!   that is observed.
//! - **R-drain** (`draining()`, module `drain`): `Consume` waits for clients (and shovels what
//!   is left once no consumer is on the source: none can come back); `Shovel` moves the backlog
//!   with shovels. "Drained" = 2 consecutive fresh samples empty by the statistics and
//!   by the queues themselves (see the `drain` module); status shows remaining messages, rate
//!   and ETA.
//! - **R-timeout** (`draining()`): after `drainTimeoutSeconds` in `DrainingSource` the condition
//!   `DrainTimedOut` turns True and one Warning Event is emitted; nothing is deleted, the drain
//!   goes on.
//! - **R-retire** (`destination_only()`): the source's consumers move (`Close`: every connection
//!   is closed with a reason; `Keep`: connections with consumers), all source permissions are
//!   revoked, and after the grace period (at least twice the statistics lag measured during the
//!   drain) the source tenant is deleted — its connections closed and its queues asked once more
//!   — and a dedicated source StatefulSet with it → `Completed`. The drain accounting continues;
//!   should a fresh sample find messages on the source again, the source gets its read access back
//!   (`DrainingSource`) and the returned backlog is shovelled over (its consumers have moved)
//!   before anything is deleted.
//! - **R-auto** (`autotier::evaluate()`, from `idle()`): with `spec.autoTiering`, a `Stable`
//!   instance in service whose load stays across the thresholds towards the other tier for
//!   `forSeconds` (and past the cooldown) gets `spec.tier` set by the plan (`Step::SetTier`); the
//!   conversion starts from the next pass like any flip.
//! - **R-policy** ([`effective_policy`]): `spec.migration.connectionPolicy` wins; otherwise
//!   upgrades keep source connections and downgrades close them.
//! - **R-complete** (`completed()`): history is recorded, `status.tier` becomes the new tier,
//!   back to `Stable`.
//! - **R-abort** (`abort_steps()`, `aborting()`): a flip back before the write cutover
//!   (`PreparingDestination` or `DualWriteDualRead`) → `Aborting`: the Service routes to the source
//!   alone, its writes are restored, and the destination — which never took a message — is
//!   discarded at once, whether its broker answers or not. With a hand-edited status that lost the
//!   conversion's record, the destination is kept. A second flip during the abort does not
//!   interrupt it; the new conversion starts from `Stable` afterwards.
//! - **R-reverse** (`single_write()`, `draining()`, `destination_only()`): a flip back after the
//!   write cutover cannot undo it (the destination holds the newest messages); the running
//!   conversion finishes (`reverse_requested` shows it), then `Stable` sees `spec.tier !=
//!   status.tier` and starts the conversion back, subject to the same in-service checks.
//! - **R-delete** (`deletion()`): deleting the instance (finalizer) deletes its broker state on
//!   every cluster it has state on, both sides of a running conversion, then removes the
//!   finalizer. The phase is left as recorded.
//!
//! The allowed transitions are listed once in [`EDGES`].

mod abort;
mod autotier;
pub mod conditions;
mod convert;
mod delete;
mod drain;
mod edges;
mod finish;
mod idle;
mod observed;
mod output;
mod placement;
mod queues;
mod requeue;
mod roles;
mod time;
mod window;

pub use convert::{CUTOVER_REASON, RETIRE_REASON, cutover_hold};
pub use drain::DRAINED_AFTER;
pub use edges::{EDGES, is_allowed};
pub use observed::{
    Access, BacklogSample, BrokerObservation, ClusterObservation, ConversionSlots, Observed,
    QueueMessages, SharedCapacity, ShovelObservation, TenantObservation, TenantState,
};
pub use output::{EventType, Plan, PlannedEvent, Step};
pub use placement::{new_instance_problem, tenancy_problem};
pub use queues::MIN_SAFE_TTL_SECONDS;
pub use requeue::requeue_after;
pub use roles::{describe, effective_policy};
pub use time::{from_time, to_time};
pub use window::{WindowState, describe_window, window_state};

use chrono::{DateTime, Utc};
use tiermq_crd::{ClusterRef, MigrationPhase, MigrationRecord, MigrationStatus, Tier};

use MigrationPhase::*;

/// Completed and aborted conversions kept in `status.history` (oldest dropped first).
pub const HISTORY_LIMIT: usize = 10;

/// How long subscribers stay on the source after it was seen refusing writes: what was routed
/// to their queues before reaches them in far less (nothing new can be routed there).
pub const SUBSCRIBER_SETTLE: chrono::TimeDelta = chrono::TimeDelta::seconds(1);

/// Plan the next step of the instance from what was observed, at `now`.
///
/// `now` should be read after the observation was taken (the drain baseline relies on it).
/// Deterministic: the same input gives the same plan.
pub fn plan(o: &Observed, now: DateTime<Utc>) -> Plan {
    let recorded = o.status.migration_phase.unwrap_or(Stable);
    let d = if o.deletion_requested {
        delete::deletion(o, recorded)
    } else {
        match recorded {
            Stable | Blocked => idle::idle(o, recorded, now),
            PreparingDestination => convert::preparing(o, now),
            DualWriteDualRead => convert::dual(o, now),
            SingleWriteDualRead => convert::single_write(o, now),
            DrainingSource => convert::draining(o, now),
            DestinationOnly => convert::destination_only(o, now),
            Completed => convert::completed(o, now),
            Aborting => abort::aborting(o, now),
        }
    };
    finish::finish(o, recorded, d, now)
}

/// What one phase function decided, before it is turned into a [`Plan`] (module `finish`).
struct Decision {
    phase: MigrationPhase,
    steps: Vec<Step>,
    migration: Option<MigrationStatus>,
    tier: Option<Tier>,
    serving: Option<ClusterRef>,
    blocked: Option<(&'static str, String)>,
    /// While a flip waits for the maintenance window: when it opens.
    window_opens: Option<DateTime<Utc>>,
    progress: String,
    drain_timed_out: Option<String>,
    record: Option<MigrationRecord>,
    events: Vec<PlannedEvent>,
    deleting: bool,
    /// `status.autoTiering` to record: `None` keeps the recorded one, `Some(None)` removes it.
    auto_tiering: Option<Option<tiermq_crd::AutoTieringStatus>>,
    /// Look again no later than this (auto-tiering's sampling), whatever the phase's delay.
    look_again: Option<std::time::Duration>,
}

impl Decision {
    fn new(phase: MigrationPhase, steps: Vec<Step>) -> Self {
        Self {
            phase,
            steps,
            migration: None,
            tier: None,
            serving: None,
            blocked: None,
            window_opens: None,
            progress: String::new(),
            drain_timed_out: None,
            record: None,
            events: Vec::new(),
            deleting: false,
            auto_tiering: None,
            look_again: None,
        }
    }

    /// A decision inside a running conversion.
    /// `status.tier` and `status.serving` follow the writes: the source until the write
    /// cutover, the destination from then on (as the CRD documents `status.tier`).
    fn migrating(phase: MigrationPhase, m: MigrationStatus, steps: Vec<Step>) -> Self {
        let (tier, serving) = if phase.past_write_cutover() {
            (m.to, m.destination.clone())
        } else {
            (m.from, m.source.clone())
        };
        let mut d = Self::new(phase, steps);
        d.tier = Some(tier);
        d.serving = Some(serving);
        d.migration = Some(m);
        d
    }

    fn event(mut self, type_: EventType, reason: &'static str, note: String) -> Self {
        self.events.push(PlannedEvent {
            type_,
            reason,
            note,
        });
        self
    }

    /// Look again no later than `after` (see `requeue::soon` and `requeue::until`).
    fn look_again(mut self, after: std::time::Duration) -> Self {
        self.look_again = Some(self.look_again.map_or(after, |l| l.min(after)));
        self
    }

    fn progress(mut self, msg: String) -> Self {
        self.progress = msg;
        self
    }
}
