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
//! # Rules (after DESIGN.md's table; each names the function that implements it)
//!
//! - **R-stable** (`idle()`): `spec.tier == status.tier` → `Stable`, no migration. The serving
//!   cluster, tenant and Service routing are kept (in-tier changes such as replicas, resources or
//!   limits are the executor's business: they never start a conversion). A new instance (no
//!   `status.tier`) adopts `spec.tier` without a conversion.
//! - **R-blocked** (`idle()`): a flip while the instance is not in service (serving cluster not
//!   ready, management API unreachable, tenant missing) → `Blocked` with condition
//!   `ConversionBlocked` (reason `InstanceNotInService`) and a requeue; it proceeds once in service.
//!   A downgrade onto a SharedCluster that is missing / not ready / at capacity is blocked with
//!   `SharedClusterNotFound` / `SharedClusterNotReady` / `SharedClusterFull`. Withdrawing the flip
//!   returns to `Stable`.
//! - **R-write-ahead** (`idle()`): the pass that starts a conversion only records it (source
//!   kept as is); destination state is created from the next pass on, so everything on the
//!   destination is owned by a recorded migration and an abort or deletion finds it.
//! - **R-prepare** (`preparing()`): create the dedicated cluster (upgrade), wait until ready,
//!   ensure the tenant with the *same* credentials, copy the topology; advance once the
//!   destination is ready, has the tenant and holds every topology object of the source.
//! - **R-dual** (`dual()`): the Service routes to both clusters (plus federation if asked); the
//!   write cutover follows as soon as the destination is observed routed and in service.
//! - **R-single** (`single_write()`): the source leaves the Service, then its writes are revoked
//!   (reads kept). Draining starts once the routing and the read-only permission are observed.
//! - **R-drain** (`draining()`, module `drain`): `Consume` waits for clients; `Shovel` moves the backlog
//!   with shovels. Federation is removed first (it could move messages back onto the source).
//!   "Drained" = 2 consecutive fresh empty samples (see the `drain` module); status shows remaining
//!   messages, rate and ETA.
//! - **R-timeout** (`draining()`): after `drainTimeoutSeconds` in `DrainingSource` the condition
//!   `DrainTimedOut` turns True and one Warning Event is emitted; nothing is deleted, the drain
//!   goes on.
//! - **R-retire** (`destination_only()`): the connection policy is applied (`Close`: close with a
//!   reason; `Keep`: leave them), all source permissions are revoked, and after the grace period
//!   the source tenant is deleted and a dedicated source StatefulSet with it → `Completed`. The
//!   drain accounting continues; should a fresh sample find messages on the source again, the
//!   source gets its read access back (`DrainingSource`) before anything is deleted.
//! - **R-policy** ([`effective_policy`]): `spec.migration.connectionPolicy` wins; otherwise
//!   upgrades keep source connections and downgrades close them.
//! - **R-complete** (`completed()`): history is recorded, `status.tier` becomes the new tier,
//!   back to `Stable`.
//! - **R-abort** (`abort_steps()`, `aborting()`): a flip back before the write cutover
//!   (`PreparingDestination` or `DualWriteDualRead`) → `Aborting`. In `DualWriteDualRead` clients
//!   may have published to the destination, so the abort loses nothing by treating the destination
//!   exactly like a source being drained: the Service routes to the source only, source writes are
//!   restored, destination writes are revoked (publishers reconnect to the source), shovels move
//!   the destination's backlog back to the source, and only after 2 fresh empty samples of the
//!   destination are its tenant (and a dedicated destination StatefulSet) deleted. A destination
//!   whose broker cannot be asked is never assumed empty: the abort waits. A second flip during
//!   the abort does not interrupt it; the new conversion starts from `Stable` afterwards.
//! - **R-reverse** (`single_write()`, `draining()`, `destination_only()`): a flip back after the
//!   write cutover cannot undo it (the destination holds the newest messages); the running
//!   conversion finishes (`reverse_requested` shows it), then `Stable` sees `spec.tier !=
//!   status.tier` and starts the conversion back, subject to the same in-service checks.
//! - **R-delete** (`deletion()`): deleting the instance (finalizer) deletes its broker state on
//!   every cluster it has state on, both sides of a running conversion, then removes the
//!   finalizer. The phase is left as recorded.
//!
//! The allowed transitions are listed once in [`EDGES`].

mod drain;
mod edges;
mod observed;
mod output;
mod time;

pub use drain::DRAINED_AFTER;
pub use edges::{EDGES, is_allowed};
pub use observed::{
    Access, BacklogSample, BrokerObservation, ClusterObservation, Observed, QueueBacklog,
    SharedCapacity, ShovelObservation, TenantObservation, TenantState,
};
pub use output::{EventType, Plan, PlannedEvent, Step};
pub use time::{from_time, to_time};

use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use tiermq_crd::conditions::{self, reasons};
use tiermq_crd::{
    ClusterKind, ClusterRef, ConnectionPolicy, DrainStrategy, InstancePhase, MigrationOutcome,
    MigrationPhase, MigrationRecord, MigrationStatus, PhaseDuration, PhaseTiming, Tier,
};

use MigrationPhase::*;

/// Completed and aborted conversions kept in `status.history` (oldest dropped first).
pub const HISTORY_LIMIT: usize = 10;

/// Reasons of the Events the planner emits.
pub mod event_reasons {
    pub const CONVERSION_BLOCKED: &str = "ConversionBlocked";
    pub const CONVERSION_WITHDRAWN: &str = "ConversionWithdrawn";
    pub const CONVERSION_STARTED: &str = "ConversionStarted";
    pub const DUAL_WRITE: &str = "DualWriteDualRead";
    pub const WRITE_CUTOVER: &str = "WriteCutover";
    pub const DRAINING: &str = "DrainingSource";
    pub const SOURCE_DRAINED: &str = "SourceDrained";
    pub const BACKLOG_REAPPEARED: &str = "BacklogReappeared";
    pub const SOURCE_RETIRED: &str = "SourceRetired";
    pub const CONVERSION_COMPLETED: &str = "ConversionCompleted";
    pub const ABORTING: &str = "ConversionAborting";
    pub const ABORTED: &str = "ConversionAborted";
    pub const REVERSE_QUEUED: &str = "ReverseQueued";
    pub const DRAIN_TIMED_OUT: &str = "DrainTimedOut";
}

/// Reasons of conditions in their False state (the True reasons live in `tiermq_crd::conditions`).
pub mod false_reasons {
    pub const NOT_BLOCKED: &str = "NotBlocked";
    pub const WITHIN_TIMEOUT: &str = "WithinDrainTimeout";
    pub const DELETING: &str = "Deleting";
}

/// Plan the next step of the instance from what was observed, at `now`.
///
/// `now` should be read after the observation was taken (the drain baseline relies on it).
/// Deterministic: the same input gives the same plan.
pub fn plan(o: &Observed, now: DateTime<Utc>) -> Plan {
    let recorded = o.status.migration_phase.unwrap_or(Stable);
    let d = if o.deletion_requested {
        deletion(o, recorded)
    } else {
        match recorded {
            Stable | Blocked => idle(o, recorded, now),
            PreparingDestination => preparing(o, now),
            DualWriteDualRead => dual(o, now),
            SingleWriteDualRead => single_write(o, now),
            DrainingSource => draining(o, now),
            DestinationOnly => destination_only(o, now),
            Completed => completed(o, now),
            Aborting => aborting(o, now),
        }
    };
    finish(o, recorded, d, now)
}

/// What one phase function decided, before it is turned into a [`Plan`].
struct Decision {
    phase: MigrationPhase,
    steps: Vec<Step>,
    migration: Option<MigrationStatus>,
    tier: Option<Tier>,
    serving: Option<ClusterRef>,
    blocked: Option<(&'static str, String)>,
    progress: String,
    drain_timed_out: Option<String>,
    record: Option<MigrationRecord>,
    events: Vec<PlannedEvent>,
    deleting: bool,
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
            progress: String::new(),
            drain_timed_out: None,
            record: None,
            events: Vec::new(),
            deleting: false,
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

    fn progress(mut self, msg: String) -> Self {
        self.progress = msg;
        self
    }
}

// ---------------------------------------------------------------------------------------------
// Roles and small observation helpers

fn other(t: Tier) -> Tier {
    match t {
        Tier::Shared => Tier::Dedicated,
        Tier::Dedicated => Tier::Shared,
    }
}

/// R-policy: the spec's connection policy, else the direction's default.
pub fn effective_policy(spec_policy: Option<ConnectionPolicy>, to: Tier) -> ConnectionPolicy {
    spec_policy.unwrap_or(ConnectionPolicy::default_for(to))
}

fn new_migration(o: &Observed, from: Tier, to: Tier, now: DateTime<Utc>) -> MigrationStatus {
    MigrationStatus {
        from,
        to,
        source: serving_ref(o, from),
        destination: o.cluster(to.cluster_kind()).cluster.clone(),
        drain_strategy: o.spec.migration.drain_strategy,
        connection_policy: effective_policy(o.spec.migration.connection_policy, to),
        started: to_time(now),
        phases: Vec::new(),
        remaining_messages: None,
        drain_rate: None,
        eta_seconds: None,
        empty_samples: 0,
        last_sample: None,
        source_revoked_at: None,
        reverse_requested: false,
    }
}

/// The running conversion as recorded, with the live spec settings (the spec wins at any time).
/// A migration phase without a recorded block (a hand-edited status) gets one rebuilt from
/// `status.tier`, so the planner never guesses roles from the spec alone.
fn running(o: &Observed, now: DateTime<Utc>) -> MigrationStatus {
    let mut m = match &o.status.migration {
        Some(m) => m.clone(),
        None => {
            // status.tier names the destination once past the write cutover.
            let recorded = o.status.migration_phase.unwrap_or(Stable);
            let from = match o.status.tier {
                Some(t) if recorded.past_write_cutover() => other(t),
                Some(t) => t,
                None => other(o.spec.tier),
            };
            new_migration(o, from, other(from), now)
        }
    };
    m.drain_strategy = o.spec.migration.drain_strategy;
    m.connection_policy = effective_policy(o.spec.migration.connection_policy, m.to);
    m
}

fn tenant_of<'a>(o: &'a Observed, r: &ClusterRef) -> TenantState<'a> {
    o.cluster_by_ref(r)
        .map_or(TenantState::Unknown, ClusterObservation::tenant_state)
}

fn exists(o: &Observed, r: &ClusterRef) -> bool {
    // An unobserved ref counts as existing: cleanup steps are then emitted, never skipped.
    o.cluster_by_ref(r).is_none_or(|c| c.exists)
}

fn in_service(o: &Observed, r: &ClusterRef) -> bool {
    o.cluster_by_ref(r)
        .is_some_and(ClusterObservation::in_service)
}

fn reachable(o: &Observed, r: &ClusterRef) -> bool {
    o.cluster_by_ref(r)
        .is_some_and(|c| c.ready() && c.reachable())
}

fn topology_synced(o: &Observed, m: &MigrationStatus) -> bool {
    holds_topology_of(o, &m.destination, &m.source)
}

/// `to`'s tenant holds every topology object `from`'s tenant holds (both observed).
fn holds_topology_of(o: &Observed, to: &ClusterRef, from: &ClusterRef) -> bool {
    match (tenant_of(o, from), tenant_of(o, to)) {
        (TenantState::Present(f), TenantState::Present(t)) => f.topology.is_subset(&t.topology),
        _ => false,
    }
}

fn federation_in_use(o: &Observed, m: &MigrationStatus) -> bool {
    let federated =
        |r: &ClusterRef| matches!(tenant_of(o, r), TenantState::Present(t) if t.federated);
    o.spec.migration.federation || federated(&m.source) || federated(&m.destination)
}

fn source_writable(o: &Observed, m: &MigrationStatus) -> Option<bool> {
    match tenant_of(o, &m.source) {
        TenantState::Present(t) => Some(t.access.writable()),
        TenantState::Absent | TenantState::Unknown => None,
    }
}

fn flipped_back(o: &Observed, m: &MigrationStatus) -> bool {
    o.spec.tier == m.from
}

fn describe(c: &ClusterRef) -> String {
    let kind = match c.kind {
        ClusterKind::Shared => "SharedCluster",
        ClusterKind::Dedicated => "dedicated cluster",
    };
    format!("{kind} {}/{}", c.namespace, c.name)
}

fn backlog_note(m: &MigrationStatus) -> String {
    match (m.remaining_messages, m.eta_seconds) {
        (Some(n), Some(eta)) => format!("{n} messages remain, ETA {eta}s"),
        (Some(n), None) => format!("{n} messages remain, no drain rate yet"),
        _ => "backlog not sampled yet".to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Stable and Blocked

/// R-stable, R-blocked.
fn idle(o: &Observed, recorded: MigrationPhase, now: DateTime<Utc>) -> Decision {
    match o.status.tier {
        Some(from) if from != o.spec.tier => {
            let to = o.spec.tier;
            if let Some((reason, msg)) = blocker(o, from, to) {
                let mut d = steady(o, from, Blocked);
                if recorded != Blocked {
                    d = d.event(
                        EventType::Warning,
                        event_reasons::CONVERSION_BLOCKED,
                        msg.clone(),
                    );
                }
                d.blocked = Some((reason, msg));
                return d;
            }
            let m = new_migration(o, from, to, now);
            let note = format!(
                "converting {from} -> {to}: preparing {}",
                describe(&m.destination)
            );
            // Write-ahead: this pass only records the conversion (the source stays as it is);
            // destination state is created from the next pass on, once the recorded migration
            // owns it, so a crash plus a flip back can never leave an orphaned destination.
            let steps = steady(o, from, Stable).steps;
            Decision::migrating(PreparingDestination, m, steps)
                .event(
                    EventType::Normal,
                    event_reasons::CONVERSION_STARTED,
                    note.clone(),
                )
                .progress(note)
        }
        current => {
            let tier = current.unwrap_or(o.spec.tier);
            let mut d = steady(o, tier, Stable);
            if recorded == Blocked {
                d = d.event(
                    EventType::Normal,
                    event_reasons::CONVERSION_WITHDRAWN,
                    format!("spec.tier is {tier} again: no conversion"),
                );
            }
            d
        }
    }
}

/// The steady state of an instance served by the cluster of `tier`.
fn steady(o: &Observed, tier: Tier, phase: MigrationPhase) -> Decision {
    let c = serving_ref(o, tier);
    let mut steps = Vec::new();
    if tier == Tier::Dedicated {
        steps.push(Step::EnsureDedicatedCluster { cluster: c.clone() });
    }
    if reachable(o, &c) {
        steps.push(Step::EnsureTenant { cluster: c.clone() });
    }
    steps.push(Step::RouteService {
        to: vec![c.clone()],
    });
    let mut d = Decision::new(phase, steps);
    d.tier = Some(tier);
    d.serving = Some(c);
    d
}

/// The cluster serving an instance on `tier`: `status.serving` when it is of that tier (the
/// instance stays where it is even if `spec.shared.clusterRef` changes: moving between
/// SharedClusters is not a tier conversion), else the observed cluster of that kind.
fn serving_ref(o: &Observed, tier: Tier) -> ClusterRef {
    match &o.status.serving {
        Some(r) if r.kind == tier.cluster_kind() => r.clone(),
        _ => o.cluster(tier.cluster_kind()).cluster.clone(),
    }
}

/// Why a flip from `from` to `to` cannot start now, if it cannot.
fn blocker(o: &Observed, from: Tier, to: Tier) -> Option<(&'static str, String)> {
    let src_ref = serving_ref(o, from);
    let Some(src) = o.cluster_by_ref(&src_ref) else {
        let msg = format!(
            "conversion to {to} held: {} serves the instance but was not observed",
            describe(&src_ref)
        );
        return Some((reasons::NOT_IN_SERVICE, msg));
    };
    if !src.in_service() {
        let why = if !src.exists {
            "its cluster does not exist".to_string()
        } else if !src.ready() {
            format!(
                "{}/{} replicas ready",
                src.ready_replicas, src.desired_replicas
            )
        } else if !src.reachable() {
            "its management API does not answer".to_string()
        } else {
            "its vhost/user is missing".to_string()
        };
        let msg = format!(
            "conversion to {to} held: the instance is not in service on {} ({why}); it starts once the instance is in service",
            describe(&src.cluster)
        );
        return Some((reasons::NOT_IN_SERVICE, msg));
    }
    if to == Tier::Shared {
        let dst = &o.shared;
        let name = describe(&dst.cluster);
        if !dst.exists {
            return Some((
                reasons::SHARED_CLUSTER_NOT_FOUND,
                format!(
                    "conversion to Shared held: {name} does not exist; create it or set spec.shared.clusterRef"
                ),
            ));
        }
        if !dst.ready() || !dst.reachable() {
            return Some((
                reasons::SHARED_CLUSTER_NOT_READY,
                format!(
                    "conversion to Shared held: {name} is not ready ({}/{} replicas, management API {})",
                    dst.ready_replicas,
                    dst.desired_replicas,
                    if dst.reachable() {
                        "answers"
                    } else {
                        "unreachable"
                    }
                ),
            ));
        }
        match dst.capacity {
            Some(c) if c.has_room() => {}
            Some(c) => {
                return Some((
                    reasons::NO_CAPACITY,
                    format!(
                        "conversion to Shared held: {name} is full ({}/{} instances); raise spec.capacity.maxInstances or pick another SharedCluster",
                        c.instance_count, c.max_instances
                    ),
                ));
            }
            None => {
                return Some((
                    reasons::SHARED_CLUSTER_NOT_READY,
                    format!("conversion to Shared held: {name} reports no capacity yet"),
                ));
            }
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// The conversion

fn preparing_steps(o: &Observed, m: &MigrationStatus) -> Vec<Step> {
    let (s, d) = (&m.source, &m.destination);
    let mut steps = vec![Step::RouteService {
        to: vec![s.clone()],
    }];
    if d.kind == ClusterKind::Dedicated {
        steps.push(Step::EnsureDedicatedCluster { cluster: d.clone() });
    }
    if reachable(o, d) {
        steps.push(Step::EnsureTenant { cluster: d.clone() });
        if matches!(tenant_of(o, s), TenantState::Present(_)) && reachable(o, s) {
            steps.push(Step::CopyTopology {
                from: s.clone(),
                to: d.clone(),
            });
        }
    }
    steps
}

/// R-prepare.
fn preparing(o: &Observed, now: DateTime<Utc>) -> Decision {
    let m = running(o, now);
    if flipped_back(o, &m) {
        return start_abort(o, m);
    }
    if in_service(o, &m.destination) && topology_synced(o, &m) {
        let note = format!(
            "{} ready with tenant and topology: the Service routes to both clusters",
            describe(&m.destination)
        );
        let steps = dual_steps(o, &m);
        return Decision::migrating(DualWriteDualRead, m, steps)
            .event(EventType::Normal, event_reasons::DUAL_WRITE, note.clone())
            .progress(note);
    }
    let waiting = match o.cluster_by_ref(&m.destination) {
        Some(c) if !c.ready() => format!(
            "waiting for {}: {}/{} replicas ready",
            describe(&m.destination),
            c.ready_replicas,
            c.desired_replicas
        ),
        Some(c) if !c.reachable() => format!(
            "waiting for the management API of {}",
            describe(&m.destination)
        ),
        Some(_) => "creating the tenant and copying the topology".to_string(),
        None => format!("{} is not observed", describe(&m.destination)),
    };
    let steps = preparing_steps(o, &m);
    Decision::migrating(PreparingDestination, m, steps).progress(waiting)
}

/// Copy the source's topology again when both tenants answer and the destination lacks some
/// object (clients may declare queues on the source while both clusters serve).
fn topology_refresh(o: &Observed, m: &MigrationStatus) -> Option<Step> {
    let both_up = reachable(o, &m.source) && reachable(o, &m.destination);
    (both_up
        && matches!(tenant_of(o, &m.destination), TenantState::Present(_))
        && !topology_synced(o, m))
    .then(|| Step::CopyTopology {
        from: m.source.clone(),
        to: m.destination.clone(),
    })
}

fn dual_steps(o: &Observed, m: &MigrationStatus) -> Vec<Step> {
    let (s, d) = (&m.source, &m.destination);
    let mut steps = Vec::new();
    // A crash while entering the write cutover may have revoked source writes already.
    if source_writable(o, m) == Some(false) {
        steps.push(Step::RestoreWrites { cluster: s.clone() });
    }
    if reachable(o, d) {
        steps.push(Step::EnsureTenant { cluster: d.clone() });
    }
    steps.extend(topology_refresh(o, m));
    steps.push(Step::RouteService {
        to: vec![s.clone(), d.clone()],
    });
    if o.spec.migration.federation {
        steps.push(Step::EnableFederation {
            source: s.clone(),
            destination: d.clone(),
        });
    }
    steps
}

/// R-dual.
fn dual(o: &Observed, now: DateTime<Utc>) -> Decision {
    let m = running(o, now);
    if flipped_back(o, &m) {
        return start_abort(o, m);
    }
    // The cutover needs the destination routed; the source may already have left the Service
    // if an earlier attempt at this very cutover crashed half-way (then it simply continues).
    if o.service_routes.contains(&m.destination) && in_service(o, &m.destination) {
        let note = format!(
            "write cutover: {} leaves the Service and refuses writes, reads continue",
            describe(&m.source)
        );
        let steps = single_write_steps(o, &m);
        return Decision::migrating(SingleWriteDualRead, m, steps)
            .event(
                EventType::Normal,
                event_reasons::WRITE_CUTOVER,
                note.clone(),
            )
            .progress(note);
    }
    let steps = dual_steps(o, &m);
    Decision::migrating(DualWriteDualRead, m, steps)
        .progress("routing new connections to both clusters".to_string())
}

fn single_write_steps(o: &Observed, m: &MigrationStatus) -> Vec<Step> {
    let (s, d) = (&m.source, &m.destination);
    let mut steps = Vec::new();
    if reachable(o, d) {
        steps.push(Step::EnsureTenant { cluster: d.clone() });
    }
    // Objects clients declared on the source during the dual phase follow before the cutover.
    steps.extend(topology_refresh(o, m));
    steps.push(Step::RouteService {
        to: vec![d.clone()],
    });
    steps.push(Step::RevokeWrites { cluster: s.clone() });
    if o.spec.migration.federation {
        steps.push(Step::EnableFederation {
            source: s.clone(),
            destination: d.clone(),
        });
    }
    steps
}

/// Keeps `reverse_requested` equal to "spec asks for the source tier again" (R-reverse) and
/// reports the moment it turns on.
fn note_reverse(mut d: Decision, was: bool) -> Decision {
    let Some(m) = &d.migration else { return d };
    if m.reverse_requested && !was {
        let note = format!(
            "spec.tier is {} again after the write cutover: this conversion completes first, then the conversion back starts",
            m.from
        );
        d = d.event(EventType::Normal, event_reasons::REVERSE_QUEUED, note);
    }
    d
}

fn with_reverse_flag(o: &Observed, m: &mut MigrationStatus) -> bool {
    let was = m.reverse_requested;
    m.reverse_requested = flipped_back(o, m);
    was
}

/// R-single.
fn single_write(o: &Observed, now: DateTime<Utc>) -> Decision {
    let mut m = running(o, now);
    let was = with_reverse_flag(o, &mut m);
    let d = if o.routes_exactly(&[&m.destination]) && source_writable(o, &m) == Some(false) {
        drain::reset(&mut m);
        // The refusal of writes is observed now: only later samples can count.
        let source = m.source.clone();
        drain::account(&mut m, tenant_of(o, &source), now);
        let note = format!(
            "{} refuses writes; draining it ({})",
            describe(&m.source),
            match m.drain_strategy {
                DrainStrategy::Consume => "waiting for consumers",
                DrainStrategy::Shovel => "shovels move the backlog",
            }
        );
        let steps = draining_steps(o, &m);
        Decision::migrating(DrainingSource, m, steps)
            .event(EventType::Normal, event_reasons::DRAINING, note.clone())
            .progress(note)
    } else {
        let steps = single_write_steps(o, &m);
        Decision::migrating(SingleWriteDualRead, m, steps)
            .progress("waiting for the source to leave the Service and refuse writes".to_string())
    };
    note_reverse(d, was)
}

fn draining_steps(o: &Observed, m: &MigrationStatus) -> Vec<Step> {
    let (s, d) = (&m.source, &m.destination);
    let mut steps = Vec::new();
    if reachable(o, d) {
        steps.push(Step::EnsureTenant { cluster: d.clone() });
    }
    steps.push(Step::RouteService {
        to: vec![d.clone()],
    });
    steps.push(Step::RevokeWrites { cluster: s.clone() });
    if federation_in_use(o, m) {
        steps.push(Step::DisableFederation {
            source: s.clone(),
            destination: d.clone(),
        });
    }
    if m.drain_strategy == DrainStrategy::Shovel {
        steps.push(Step::StartShovels {
            from: s.clone(),
            to: d.clone(),
        });
    }
    steps
}

/// When the current stay in `DrainingSource` began.
fn draining_since(m: &MigrationStatus) -> DateTime<Utc> {
    m.phases
        .iter()
        .rev()
        .find(|p| p.phase == DrainingSource)
        .map_or_else(|| from_time(&m.started), |p| from_time(&p.started))
}

/// R-drain, R-timeout.
fn draining(o: &Observed, now: DateTime<Utc>) -> Decision {
    let mut m = running(o, now);
    let was = with_reverse_flag(o, &mut m);
    let source = m.source.clone();
    drain::account(&mut m, tenant_of(o, &source), now);
    let d = if drain::drained(&m) {
        m.source_revoked_at = Some(to_time(now));
        let note = format!(
            "{} drained ({} consecutive fresh empty samples): destination only",
            describe(&m.source),
            m.empty_samples
        );
        let steps = destination_only_steps(o, &m);
        Decision::migrating(DestinationOnly, m, steps)
            .event(
                EventType::Normal,
                event_reasons::SOURCE_DRAINED,
                note.clone(),
            )
            .progress(note)
    } else {
        let elapsed = (now - draining_since(&m)).num_seconds();
        let timeout = o.spec.migration.drain_timeout_seconds;
        let timed_out = (elapsed >= timeout).then(|| {
            format!(
                "{} not drained after {elapsed}s (drainTimeoutSeconds {timeout}): {}; nothing was deleted, still waiting",
                describe(&m.source),
                backlog_note(&m)
            )
        });
        let mut progress = format!("draining {}: {}", describe(&m.source), backlog_note(&m));
        if let TenantState::Present(t) = tenant_of(o, &m.source)
            && t.shovels.failed > 0
        {
            progress.push_str(&format!(
                "; {} shovels failed and are re-created",
                t.shovels.failed
            ));
        }
        let steps = draining_steps(o, &m);
        let mut d = Decision::migrating(DrainingSource, m, steps).progress(progress);
        d.drain_timed_out = timed_out;
        d
    };
    note_reverse(d, was)
}

fn destination_only_steps(o: &Observed, m: &MigrationStatus) -> Vec<Step> {
    let (s, d) = (&m.source, &m.destination);
    let mut steps = Vec::new();
    if reachable(o, d) {
        steps.push(Step::EnsureTenant { cluster: d.clone() });
    }
    steps.push(Step::RouteService {
        to: vec![d.clone()],
    });
    if federation_in_use(o, m) {
        steps.push(Step::DisableFederation {
            source: s.clone(),
            destination: d.clone(),
        });
    }
    let source_tenant_gone = matches!(tenant_of(o, s), TenantState::Absent);
    if exists(o, s) && !source_tenant_gone {
        steps.push(Step::StopShovels { from: s.clone() });
        steps.push(Step::RevokeAll { cluster: s.clone() });
        if m.connection_policy == ConnectionPolicy::Close {
            steps.push(Step::CloseConnections {
                cluster: s.clone(),
                reason: format!(
                    "tiermq: this instance moved to the {} tier; reconnect to the same endpoint",
                    m.to
                ),
            });
        }
    }
    steps
}

/// R-retire.
fn destination_only(o: &Observed, now: DateTime<Utc>) -> Decision {
    let mut m = running(o, now);
    let was = with_reverse_flag(o, &mut m);
    let source = m.source.clone();
    drain::account(&mut m, tenant_of(o, &source), now);
    let d = if !drain::drained(&m) {
        // Messages (or writes) showed up on the source again: give reads back, drain again.
        m.source_revoked_at = None;
        let note = format!(
            "{} holds messages again ({}): read access restored, draining again",
            describe(&m.source),
            backlog_note(&m)
        );
        let steps = draining_steps(o, &m);
        Decision::migrating(DrainingSource, m, steps)
            .event(
                EventType::Warning,
                event_reasons::BACKLOG_REAPPEARED,
                note.clone(),
            )
            .progress(note)
    } else {
        let revoked_at = m.source_revoked_at.as_ref().map_or(now, from_time);
        m.source_revoked_at = Some(to_time(revoked_at));
        let grace = o.spec.migration.grace_period_seconds;
        let left = grace - (now - revoked_at).num_seconds();
        let mut steps = destination_only_steps(o, &m);
        if left <= 0 {
            let s = m.source.clone();
            if exists(o, &s) {
                steps.push(Step::DeleteTenant { cluster: s.clone() });
                if s.kind == ClusterKind::Dedicated {
                    steps.push(Step::DeleteDedicatedCluster { cluster: s.clone() });
                }
            }
            let note = format!("grace period over: {} retired", describe(&s));
            Decision::migrating(Completed, m, steps)
                .event(
                    EventType::Normal,
                    event_reasons::SOURCE_RETIRED,
                    note.clone(),
                )
                .progress(note)
        } else {
            let conns = match tenant_of(o, &m.source) {
                TenantState::Present(t) => format!(", {} source connections open", t.connections),
                _ => String::new(),
            };
            let note = format!(
                "destination only; {} is retired in {left}s{conns}",
                describe(&m.source)
            );
            Decision::migrating(DestinationOnly, m, steps).progress(note)
        }
    };
    note_reverse(d, was)
}

fn history_record(
    m: &MigrationStatus,
    now: DateTime<Utc>,
    outcome: MigrationOutcome,
) -> MigrationRecord {
    let mut phase_seconds = Vec::new();
    for (i, p) in m.phases.iter().enumerate() {
        let end = m.phases.get(i + 1).map_or(now, |n| from_time(&n.started));
        phase_seconds.push(PhaseDuration {
            phase: p.phase,
            seconds: (end - from_time(&p.started)).num_seconds().max(0),
        });
    }
    MigrationRecord {
        from: m.from,
        to: m.to,
        started: m.started.clone(),
        finished: to_time(now),
        outcome,
        phase_seconds,
    }
}

/// R-complete.
fn completed(o: &Observed, now: DateTime<Utc>) -> Decision {
    let m = running(o, now);
    let record = history_record(&m, now, MigrationOutcome::Completed);
    let steps = vec![
        Step::RouteService {
            to: vec![m.destination.clone()],
        },
        Step::RecordHistory {
            record: record.clone(),
        },
    ];
    let mut note = format!("conversion {} -> {} completed", m.from, m.to);
    if o.spec.tier != m.to {
        note.push_str(&format!(
            "; the conversion back to {} starts next",
            o.spec.tier
        ));
    }
    let mut d = Decision::new(Stable, steps).event(
        EventType::Normal,
        event_reasons::CONVERSION_COMPLETED,
        note,
    );
    d.tier = Some(m.to);
    d.serving = Some(m.destination);
    d.record = Some(record);
    d
}

/// R-abort: the abort's desired state while the destination is not yet proven empty.
fn abort_steps(o: &Observed, m: &MigrationStatus) -> Vec<Step> {
    let (s, d) = (&m.source, &m.destination);
    let mut steps = vec![
        Step::RouteService {
            to: vec![s.clone()],
        },
        Step::RestoreWrites { cluster: s.clone() },
    ];
    if federation_in_use(o, m) {
        steps.push(Step::DisableFederation {
            source: s.clone(),
            destination: d.clone(),
        });
    }
    if let TenantState::Present(_) = tenant_of(o, d) {
        steps.push(Step::RevokeWrites { cluster: d.clone() });
        // Queues clients declared on the destination during the dual phase must exist on the
        // source before their messages are shovelled back.
        if reachable(o, s)
            && matches!(tenant_of(o, s), TenantState::Present(_))
            && !holds_topology_of(o, s, d)
        {
            steps.push(Step::CopyTopology {
                from: d.clone(),
                to: s.clone(),
            });
        }
        steps.push(Step::StartShovels {
            from: d.clone(),
            to: s.clone(),
        });
    }
    steps
}

fn start_abort(o: &Observed, mut m: MigrationStatus) -> Decision {
    drain::reset(&mut m);
    m.reverse_requested = false;
    m.source_revoked_at = None;
    let note = format!(
        "spec.tier is {} again before the write cutover: aborting; {} is drained back before it is removed",
        m.from,
        describe(&m.destination)
    );
    let steps = abort_steps(o, &m);
    Decision::migrating(Aborting, m, steps)
        .event(EventType::Normal, event_reasons::ABORTING, note.clone())
        .progress(note)
}

/// R-abort, continued: drain the destination back, then remove it and return to `Stable`.
fn aborting(o: &Observed, now: DateTime<Utc>) -> Decision {
    let mut m = running(o, now);
    let dst = m.destination.clone();
    // A dedicated destination whose StatefulSet does not exist holds nothing.
    let state = if dst.kind == ClusterKind::Dedicated && !exists(o, &dst) {
        TenantState::Absent
    } else {
        tenant_of(o, &dst)
    };
    let mut steps = abort_steps(o, &m);
    let done = match state {
        TenantState::Unknown => false,
        TenantState::Absent => true,
        TenantState::Present(_) => {
            drain::account(&mut m, state, now);
            if drain::drained(&m) {
                steps.push(Step::StopShovels { from: dst.clone() });
                steps.push(Step::DeleteTenant {
                    cluster: dst.clone(),
                });
                true
            } else {
                false
            }
        }
    };
    if !done {
        let why = match state {
            TenantState::Unknown => format!(
                "waiting for the management API of {} to prove it holds no messages",
                describe(&dst)
            ),
            _ => format!("draining {} back: {}", describe(&dst), backlog_note(&m)),
        };
        return Decision::migrating(Aborting, m, steps).progress(why);
    }
    if dst.kind == ClusterKind::Dedicated && exists(o, &dst) {
        steps.push(Step::DeleteDedicatedCluster {
            cluster: dst.clone(),
        });
    }
    let record = history_record(&m, now, MigrationOutcome::Aborted);
    steps.push(Step::RecordHistory {
        record: record.clone(),
    });
    let note = format!(
        "conversion {} -> {} aborted; {} serves the instance alone, no message lost",
        m.from,
        m.to,
        describe(&m.source)
    );
    let mut d = Decision::new(Stable, steps).event(EventType::Normal, event_reasons::ABORTED, note);
    d.tier = Some(m.from);
    d.serving = Some(m.source);
    d.record = Some(record);
    d
}

/// R-delete: the finalizer's cleanup on every cluster the instance has state on.
fn deletion(o: &Observed, recorded: MigrationPhase) -> Decision {
    let mut clusters: Vec<ClusterRef> = Vec::new();
    let mut add = |r: &ClusterRef| {
        if !clusters.contains(r) {
            clusters.push(r.clone());
        }
    };
    if let Some(m) = &o.status.migration {
        add(&m.source);
        add(&m.destination);
    }
    if let Some(t) = o.status.tier {
        add(&o.cluster(t.cluster_kind()).cluster);
    }
    if let Some(s) = &o.status.serving {
        add(s);
    }
    for c in [&o.shared, &o.dedicated] {
        if matches!(c.tenant_state(), TenantState::Present(_))
            || (c.exists && c.cluster.kind == ClusterKind::Dedicated)
        {
            add(&c.cluster);
        }
    }
    let mut steps = Vec::new();
    for c in clusters.iter().filter(|c| exists(o, c)) {
        match c.kind {
            ClusterKind::Shared => steps.push(Step::DeleteTenant { cluster: c.clone() }),
            ClusterKind::Dedicated => {
                steps.push(Step::DeleteDedicatedCluster { cluster: c.clone() })
            }
        }
    }
    steps.push(Step::RemoveFinalizer);
    let mut d = Decision::new(recorded, steps);
    d.migration = o.status.migration.clone();
    d.deleting = true;
    d.progress = "instance deleted: removing its broker state".to_string();
    d
}

// ---------------------------------------------------------------------------------------------
// Turning a decision into a plan

fn finish(o: &Observed, recorded: MigrationPhase, d: Decision, now: DateTime<Utc>) -> Plan {
    let phase = d.phase;
    let mut status = o.status.clone();
    status.observed_generation = Some(o.generation);
    status.migration_phase = Some(phase);
    if d.tier.is_some() {
        status.tier = d.tier;
    }
    if d.serving.is_some() {
        status.serving = d.serving.clone();
    }
    let mut migration = d.migration.clone();
    if let Some(m) = migration
        .as_mut()
        .filter(|m| !d.deleting && m.phases.last().map(|p| p.phase) != Some(phase))
    {
        m.phases.push(PhaseTiming {
            phase,
            started: to_time(now),
        });
    }
    status.migration = migration;
    if let Some(r) = &d.record {
        status.history.push(r.clone());
        let excess = status.history.len().saturating_sub(HISTORY_LIMIT);
        status.history.drain(..excess);
    }

    let routed: Vec<ClusterRef> = d
        .steps
        .iter()
        .rev()
        .find_map(|s| match s {
            Step::RouteService { to } => Some(to.clone()),
            _ => None,
        })
        .unwrap_or_default();
    let serving_ok = routed.iter().any(|r| in_service(o, r));
    status.phase = Some(if d.deleting {
        InstancePhase::Deleting
    } else {
        match phase {
            Blocked => InstancePhase::Blocked,
            Stable if serving_ok => InstancePhase::Ready,
            Stable => InstancePhase::Provisioning,
            PreparingDestination | DualWriteDualRead | SingleWriteDualRead | DrainingSource
            | DestinationOnly | Completed | Aborting => InstancePhase::Migrating,
        }
    });

    let recorded_conditions = &o.status.conditions;
    let cond = |type_: &str, on: bool, reason: &str, message: String| -> Condition {
        let status = if on { "True" } else { "False" };
        let since = recorded_conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map_or_else(|| to_time(now), |c| c.last_transition_time.clone());
        Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message,
            observed_generation: Some(o.generation),
            last_transition_time: since,
        }
    };
    let names: Vec<String> = routed.iter().map(describe).collect();
    let ready = if d.deleting {
        cond(
            conditions::READY,
            false,
            false_reasons::DELETING,
            d.progress.clone(),
        )
    } else if serving_ok {
        cond(
            conditions::READY,
            true,
            reasons::IN_SERVICE,
            format!("served by {}", names.join(" and ")),
        )
    } else {
        cond(
            conditions::READY,
            false,
            reasons::PROVISIONING,
            format!("waiting for {} to serve the tenant", names.join(" and ")),
        )
    };
    let migrating_now = status.migration.is_some() && phase != Stable && phase != Blocked;
    let migrating = if migrating_now {
        let reverse = status
            .migration
            .as_ref()
            .is_some_and(|m| m.reverse_requested);
        let reason = match phase {
            Aborting => reasons::ABORTING,
            _ if reverse => reasons::REVERSE_QUEUED,
            _ => reasons::CONVERTING,
        };
        cond(conditions::MIGRATING, true, reason, d.progress.clone())
    } else {
        cond(
            conditions::MIGRATING,
            false,
            reasons::STABLE,
            "no conversion runs".to_string(),
        )
    };
    let blocked = match &d.blocked {
        Some((reason, msg)) => cond(conditions::CONVERSION_BLOCKED, true, reason, msg.clone()),
        None => cond(
            conditions::CONVERSION_BLOCKED,
            false,
            false_reasons::NOT_BLOCKED,
            "no tier flip is held".to_string(),
        ),
    };
    let timed_out = match &d.drain_timed_out {
        Some(msg) => cond(
            conditions::DRAIN_TIMED_OUT,
            true,
            reasons::BACKLOG_REMAINS,
            msg.clone(),
        ),
        None => cond(
            conditions::DRAIN_TIMED_OUT,
            false,
            false_reasons::WITHIN_TIMEOUT,
            "no drain has exceeded its timeout".to_string(),
        ),
    };
    let requeue_after = requeue(o, recorded, &d, status.migration.as_ref(), serving_ok, now);
    let mut events = d.events;
    if let Some(msg) = &d.drain_timed_out {
        let was_on = recorded_conditions
            .iter()
            .any(|c| c.type_ == conditions::DRAIN_TIMED_OUT && c.status == "True");
        if !was_on {
            events.push(PlannedEvent {
                type_: EventType::Warning,
                reason: event_reasons::DRAIN_TIMED_OUT,
                note: msg.clone(),
            });
        }
    }
    let managed = [ready, migrating, blocked, timed_out];
    let mut conds: Vec<Condition> = managed.to_vec();
    conds.extend(
        recorded_conditions
            .iter()
            .filter(|c| !managed.iter().any(|m| m.type_ == c.type_))
            .cloned(),
    );
    status.conditions = conds;

    Plan {
        phase,
        steps: d.steps,
        status,
        events,
        requeue_after,
    }
}

fn requeue(
    o: &Observed,
    recorded: MigrationPhase,
    d: &Decision,
    m: Option<&MigrationStatus>,
    serving_ok: bool,
    now: DateTime<Utc>,
) -> Duration {
    let secs = |s: u64| Duration::from_secs(s);
    if d.deleting {
        return secs(5);
    }
    if d.phase != recorded {
        return secs(1);
    }
    match d.phase {
        Stable if serving_ok => secs(300),
        Stable => secs(10),
        Blocked => secs(30),
        PreparingDestination => secs(10),
        DualWriteDualRead | SingleWriteDualRead => secs(2),
        DrainingSource | Aborting => secs(5),
        DestinationOnly => {
            let left = m.and_then(|m| m.source_revoked_at.as_ref()).map_or(0, |t| {
                o.spec.migration.grace_period_seconds - (now - from_time(t)).num_seconds()
            });
            secs(left.clamp(1, 30) as u64)
        }
        Completed => secs(1),
    }
}
