//! The state machine's table: every phase × every kind of observation, both directions.
//!
//! `expect` matches exhaustively on the phase and the observation kind: a new phase or kind does
//! not compile until its row is written.

use std::collections::BTreeSet;

use crate::common::*;
use chrono::{DateTime, Duration, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use tiermq_crd::conditions::{self, reasons};
use tiermq_crd::{
    ClusterKind, ClusterRef, ConnectionPolicy, DrainStrategy, MigrationOutcome, MigrationPhase,
    MigrationStatus, PhaseTiming, Tier,
};
use tiermq_operator::controller::plan::{
    Access, ClusterObservation, EDGES, EventType, Observed, Plan, QueueMessages, Step, TenantState,
    is_allowed, plan, to_time,
};

use MigrationPhase::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    Upgrade,
    Downgrade,
}

impl Dir {
    const ALL: [Dir; 2] = [Dir::Upgrade, Dir::Downgrade];
    fn tiers(self) -> (Tier, Tier) {
        match self {
            Dir::Upgrade => (Tier::Shared, Tier::Dedicated),
            Dir::Downgrade => (Tier::Dedicated, Tier::Shared),
        }
    }
}

/// The kinds of observation the planner must handle in every phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// The phase's baseline world, nothing new.
    Steady,
    /// The serving/source cluster is down and its management API does not answer.
    NotInService,
    /// The destination cluster is down and does not answer.
    DestinationNotReady,
    /// The destination is ready with tenant and topology.
    DestinationReady,
    /// The SharedCluster has no room for another instance.
    DestinationFull,
    /// `spec.tier` returns to the tier the instance is leaving (in `Stable`/`Blocked`: the flip is
    /// withdrawn; in `Aborting`: the user flips forward again).
    FlipBack,
    /// The drained cluster's latest sample is the already-counted one.
    StaleSample,
    /// A newer sample with 0 ready/unacked/delayed everywhere.
    FreshEmptySample,
    /// A newer sample with messages.
    FreshNonEmptySample,
    /// Time jumps past the drain timeout.
    DrainTimeout,
    /// Time jumps past the grace period (but not the drain timeout).
    GraceElapsed,
    /// The instance is being deleted.
    Deletion,
    /// A subscriber on the source has not consumed what was published for it.
    SubscriberBacklog,
    /// A stream on the source holds history (consuming does not remove it).
    StreamHistory,
    /// A subscriber (exclusive or auto-delete queue) is connected to the source.
    SubscriberConnected,
    /// `spec.migration.window` is set and closed now: only the start of a conversion waits.
    OutsideWindow,
}

const KINDS: [Kind; 16] = [
    Kind::Steady,
    Kind::NotInService,
    Kind::DestinationNotReady,
    Kind::DestinationReady,
    Kind::DestinationFull,
    Kind::FlipBack,
    Kind::StaleSample,
    Kind::FreshEmptySample,
    Kind::FreshNonEmptySample,
    Kind::DrainTimeout,
    Kind::GraceElapsed,
    Kind::Deletion,
    Kind::SubscriberBacklog,
    Kind::StreamHistory,
    Kind::SubscriberConnected,
    Kind::OutsideWindow,
];

fn now0() -> DateTime<Utc> {
    t0() + Duration::hours(1)
}

/// When the drained cluster's last counted sample was taken in the baselines.
fn last_counted() -> DateTime<Utc> {
    now0() - Duration::seconds(30)
}

fn migration(dir: Dir, phases: &[MigrationPhase]) -> MigrationStatus {
    let (from, to) = dir.tiers();
    let start = now0() - Duration::seconds(600);
    MigrationStatus {
        from,
        to,
        source: cluster_ref(from.cluster_kind()),
        destination: cluster_ref(to.cluster_kind()),
        drain_strategy: DrainStrategy::Consume,
        connection_policy: ConnectionPolicy::default_for(to),
        started: to_time(start),
        phases: phases
            .iter()
            .enumerate()
            .map(|(i, p)| PhaseTiming {
                phase: *p,
                started: to_time(start + Duration::seconds(120 * i as i64)),
            })
            .collect(),
        remaining_messages: None,
        drain_rate: None,
        eta_seconds: None,
        empty_samples: 0,
        last_sample: None,
        source_revoked_at: None,
        source_closed_at: None,
        reverse_requested: false,
        source_frozen_at: None,
        stats_behind_since: None,
        stats_lag_seconds: None,
    }
}

fn with_tenant(
    kind: ClusterKind,
    access: Access,
    sample_at: Option<(DateTime<Utc>, i64)>,
) -> ClusterObservation {
    up(
        cluster_ref(kind),
        Some(tenant(access, sample_at.map(|(at, n)| sample(at, n)))),
    )
}

fn put(o: &mut Observed, c: ClusterObservation) {
    match c.cluster.kind {
        ClusterKind::Shared => o.shared = c,
        ClusterKind::Dedicated => o.dedicated = c,
    }
}

/// The world of an instance recorded in `phase`, converting in `dir`.
fn baseline(phase: MigrationPhase, dir: Dir) -> Observed {
    let (from, to) = dir.tiers();
    let (sk, dk) = (from.cluster_kind(), to.cluster_kind());
    let (s, d) = (cluster_ref(sk), cluster_ref(dk));
    let mut o = stable_observed(from);
    o.spec.tier = to;
    o.status.migration_phase = Some(phase);
    o.generation = 2;
    // Destination default: a downgrade's SharedCluster is up without the tenant; an upgrade's
    // dedicated cluster does not exist yet.
    put(
        &mut o,
        match dir {
            Dir::Upgrade => absent(d.clone()),
            Dir::Downgrade => up(d.clone(), None),
        },
    );
    if phase.past_write_cutover() {
        // status.tier follows the writes.
        o.status.tier = Some(to);
        o.status.serving = Some(d.clone());
    }
    let l = last_counted();
    match phase {
        Stable => {}
        Blocked => {
            o.status.conditions = vec![Condition {
                type_: conditions::CONVERSION_BLOCKED.into(),
                status: "True".into(),
                reason: reasons::NOT_IN_SERVICE.into(),
                message: "held".into(),
                observed_generation: Some(2),
                last_transition_time: to_time(t0()),
            }];
        }
        PreparingDestination => {
            o.status.migration = Some(migration(dir, &[PreparingDestination]));
            if dir == Dir::Upgrade {
                put(&mut o, down(d.clone()));
            }
        }
        DualWriteDualRead => {
            o.status.migration = Some(migration(dir, &[PreparingDestination, DualWriteDualRead]));
            // Until the cutover the destination refuses writes and clients stay on the source.
            put(&mut o, with_tenant(dk, Access::ReadOnly, None));
            o.service_routes = vec![s.clone()];
        }
        SingleWriteDualRead => {
            o.status.migration = Some(migration(
                dir,
                &[PreparingDestination, DualWriteDualRead, SingleWriteDualRead],
            ));
            put(&mut o, with_tenant(dk, Access::ReadWrite, None));
            put(&mut o, with_tenant(sk, Access::ReadOnly, Some((l, 4))));
            o.service_routes = vec![d.clone()];
        }
        DrainingSource => {
            let mut m = migration(
                dir,
                &[
                    PreparingDestination,
                    DualWriteDualRead,
                    SingleWriteDualRead,
                    DrainingSource,
                ],
            );
            m.empty_samples = 1;
            m.last_sample = Some(to_time(l));
            m.remaining_messages = Some(0);
            o.status.migration = Some(m);
            put(&mut o, with_tenant(dk, Access::ReadWrite, None));
            put(&mut o, with_tenant(sk, Access::ReadOnly, Some((l, 0))));
            o.service_routes = vec![d.clone()];
        }
        DestinationOnly => {
            let mut m = migration(
                dir,
                &[
                    PreparingDestination,
                    DualWriteDualRead,
                    SingleWriteDualRead,
                    DrainingSource,
                    DestinationOnly,
                ],
            );
            m.empty_samples = 2;
            m.last_sample = Some(to_time(l));
            m.remaining_messages = Some(0);
            m.source_revoked_at = Some(to_time(now0() - Duration::seconds(10)));
            o.status.migration = Some(m);
            put(&mut o, with_tenant(dk, Access::ReadWrite, None));
            put(&mut o, with_tenant(sk, Access::None, Some((l, 0))));
            o.service_routes = vec![d.clone()];
        }
        Completed => {
            let mut m = migration(
                dir,
                &[
                    PreparingDestination,
                    DualWriteDualRead,
                    SingleWriteDualRead,
                    DrainingSource,
                    DestinationOnly,
                    Completed,
                ],
            );
            m.empty_samples = 2;
            o.status.migration = Some(m);
            put(&mut o, with_tenant(dk, Access::ReadWrite, None));
            put(
                &mut o,
                match dir {
                    Dir::Upgrade => up(s.clone(), None),
                    Dir::Downgrade => absent(s.clone()),
                },
            );
            o.service_routes = vec![d.clone()];
        }
        Aborting => {
            let m = migration(dir, &[PreparingDestination, DualWriteDualRead, Aborting]);
            o.status.migration = Some(m);
            o.spec.tier = from;
            put(&mut o, with_tenant(dk, Access::ReadOnly, Some((l, 0))));
            o.service_routes = vec![s.clone()];
        }
    }
    o
}

/// The cluster whose samples count: the source.
fn drained_kind(_phase: MigrationPhase, dir: Dir) -> ClusterKind {
    dir.tiers().0.cluster_kind()
}

/// The source's tenant observation, when there is one.
fn source_tenant(
    o: &mut Observed,
    dir: Dir,
) -> Option<&mut tiermq_operator::controller::plan::TenantObservation> {
    let c = match dir.tiers().0.cluster_kind() {
        ClusterKind::Shared => &mut o.shared,
        ClusterKind::Dedicated => &mut o.dedicated,
    };
    c.broker.as_mut().and_then(|b| b.tenant.as_mut())
}
fn apply(kind: Kind, phase: MigrationPhase, dir: Dir) -> (Observed, DateTime<Utc>) {
    let mut o = baseline(phase, dir);
    let mut now = now0();
    let (from, to) = dir.tiers();
    let (s, d) = (
        cluster_ref(from.cluster_kind()),
        cluster_ref(to.cluster_kind()),
    );
    let set_sample = |o: &mut Observed, at: DateTime<Utc>, n: i64| {
        let c = match drained_kind(phase, dir) {
            ClusterKind::Shared => &mut o.shared,
            ClusterKind::Dedicated => &mut o.dedicated,
        };
        if let Some(t) = c.broker.as_mut().and_then(|b| b.tenant.as_mut()) {
            t.backlog = Some(sample(at, n));
        }
    };
    match kind {
        Kind::Steady => {}
        Kind::NotInService => put(&mut o, down(s)),
        Kind::DestinationNotReady => put(&mut o, down(d)),
        Kind::DestinationReady => {
            let existing = o.cluster(d.kind).tenant().map(|t| t.access);
            put(
                &mut o,
                with_tenant(d.kind, existing.unwrap_or(Access::ReadWrite), None),
            );
        }
        Kind::DestinationFull => {
            if let Some(c) = o.shared.capacity.as_mut() {
                c.instance_count = c.max_instances;
                c.counts_this_instance = false;
            }
        }
        Kind::FlipBack => o.spec.tier = if phase == Aborting { to } else { from },
        Kind::StaleSample => set_sample(&mut o, last_counted(), 0),
        Kind::FreshEmptySample => set_sample(&mut o, last_counted() + Duration::seconds(5), 0),
        Kind::FreshNonEmptySample => set_sample(&mut o, last_counted() + Duration::seconds(5), 7),
        Kind::DrainTimeout => now += Duration::seconds(3700),
        Kind::GraceElapsed => {
            now += Duration::seconds(400);
            // In DestinationOnly: the retirement's close of the source's connections happened
            // after the grace period, and a sample taken since shows it empty and unconnected.
            if phase == DestinationOnly {
                let closed = now - Duration::seconds(10);
                if let Some(m) = o.status.migration.as_mut() {
                    m.source_closed_at = Some(to_time(closed));
                }
                set_sample(&mut o, closed + Duration::seconds(5), 0);
                if let Some(t) = source_tenant(&mut o, dir) {
                    t.connections = 0;
                }
            }
        }
        Kind::Deletion => o.deletion_requested = true,
        Kind::SubscriberBacklog | Kind::StreamHistory => {
            let at = last_counted() + Duration::seconds(5);
            if let Some(t) = source_tenant(&mut o, dir) {
                let mut b = t.backlog.clone().unwrap_or_else(|| sample(at, 0));
                // A newer sample, and the queues themselves agree.
                b.stats_at = at;
                b.live_ready = b.live_ready.map(|n| n + 5);
                b.queues.push(QueueMessages {
                    queue: "amq.gen-sub".into(),
                    ready: 5,
                    subscriber: kind == Kind::SubscriberBacklog,
                    stream: kind == Kind::StreamHistory,
                    ..Default::default()
                });
                t.backlog = Some(b);
            }
        }
        Kind::SubscriberConnected => {
            if let Some(t) = source_tenant(&mut o, dir) {
                t.subscribers = 1;
            }
        }
        // Closed all the time but one minute a week (`now0()` is a Thursday, 01:00).
        Kind::OutsideWindow => {
            o.spec.migration.window = Some(tiermq_crd::MaintenanceWindow {
                days: vec![tiermq_crd::Weekday::Mon],
                start_time: "10:00".into(),
                end_time: "10:01".into(),
            })
        }
    }
    (o, now)
}

/// What a row asserts.
struct Expect {
    phase: MigrationPhase,
    /// Steps that must be there, with the cluster they act on (None: any).
    has: Vec<(&'static str, Option<ClusterRef>)>,
    /// Step names that must not be there.
    lacks: Vec<&'static str>,
    /// Steps that must not act on that cluster.
    lacks_on: Vec<(&'static str, ClusterRef)>,
}

const DESTRUCTIVE: [&str; 4] = [
    "RevokeAll",
    "DeleteTenant",
    "DiscardTenant",
    "DeleteDedicatedCluster",
];

fn go(phase: MigrationPhase) -> Expect {
    Expect {
        phase,
        has: vec![],
        lacks: DESTRUCTIVE.to_vec(),
        lacks_on: vec![],
    }
}

impl Expect {
    fn has(mut self, name: &'static str, c: &ClusterRef) -> Self {
        self.has.push((name, Some(c.clone())));
        self.lacks.retain(|n| *n != name);
        self
    }
    fn lacks(mut self, name: &'static str) -> Self {
        self.lacks.push(name);
        self
    }
    fn lacks_on(mut self, name: &'static str, c: &ClusterRef) -> Self {
        self.lacks_on.push((name, c.clone()));
        self
    }
}

/// The table. Exhaustive in both phase and kind.
fn expect(phase: MigrationPhase, kind: Kind, dir: Dir) -> Expect {
    let (from, to) = dir.tiers();
    let (s, d) = (
        &cluster_ref(from.cluster_kind()),
        &cluster_ref(to.cluster_kind()),
    );
    let up = dir == Dir::Upgrade;
    let deletion = |keep: MigrationPhase, both: bool| {
        let mut e = Expect {
            phase: keep,
            has: vec![("RemoveFinalizer", None)],
            lacks: vec![],
            lacks_on: vec![],
        };
        for c in if both { vec![s, d] } else { vec![s] } {
            let name = match c.kind {
                ClusterKind::Shared => "DiscardTenant",
                ClusterKind::Dedicated => "DeleteDedicatedCluster",
            };
            e.has.push((name, Some(c.clone())));
        }
        e
    };
    // Write-ahead: the pass that starts a conversion records it and touches no destination.
    let start = || {
        go(PreparingDestination)
            .has("RouteService", s)
            .lacks_on("EnsureDedicatedCluster", d)
            .lacks_on("EnsureTenant", d)
            .lacks("CopyTopology")
    };
    // The abort: the source alone again, the destination (never routed, never writable)
    // discarded at once.
    let aborted = |phase: MigrationPhase| {
        let e = go(phase).has("RouteService", s).has("RestoreWrites", s);
        if up {
            e.has("DeleteDedicatedCluster", d)
        } else {
            e.has("DiscardTenant", d)
        }
    };
    match phase {
        Stable | Blocked => match kind {
            Kind::Steady
            | Kind::DestinationReady
            | Kind::StaleSample
            | Kind::FreshEmptySample
            | Kind::FreshNonEmptySample
            | Kind::DrainTimeout
            | Kind::GraceElapsed
            | Kind::SubscriberBacklog
            | Kind::SubscriberConnected => start(),
            // Outside the maintenance window: held like a problem, nothing created for the
            // destination (every other phase reads the closed window as `Steady`).
            Kind::OutsideWindow => go(Blocked)
                .has("RouteService", s)
                .lacks_on("EnsureDedicatedCluster", d)
                .lacks_on("EnsureTenant", d)
                .lacks("CopyTopology"),
            // A stream's history cannot move: held before anything is created.
            Kind::StreamHistory => go(Blocked)
                .has("RouteService", s)
                .lacks_on("EnsureTenant", d)
                .lacks("CopyTopology"),
            // Blocked keeps the serving side as it is and creates nothing for the destination.
            Kind::NotInService if up => go(Blocked)
                .has("RouteService", s)
                .lacks("EnsureDedicatedCluster")
                .lacks("CopyTopology"),
            Kind::NotInService => go(Blocked)
                .has("EnsureDedicatedCluster", s)
                .has("RouteService", s)
                .lacks("CopyTopology"),
            Kind::DestinationNotReady | Kind::DestinationFull if !up => go(Blocked),
            Kind::DestinationNotReady | Kind::DestinationFull => start(),
            Kind::FlipBack => go(Stable)
                .has("RouteService", s)
                .lacks("CopyTopology")
                .lacks(if up {
                    "EnsureDedicatedCluster"
                } else {
                    "CopyTopology"
                }),
            // Deleting a Stable/Blocked instance: only the serving side has state; a downgrade's
            // idle SharedCluster holds no tenant of it.
            Kind::Deletion => deletion(phase, false),
        },
        PreparingDestination => match kind {
            Kind::Steady
            | Kind::OutsideWindow
            | Kind::NotInService
            | Kind::DestinationFull
            | Kind::StaleSample
            | Kind::FreshEmptySample
            | Kind::FreshNonEmptySample
            | Kind::DrainTimeout
            | Kind::GraceElapsed
            | Kind::SubscriberBacklog
            | Kind::StreamHistory
            | Kind::SubscriberConnected => {
                let e = go(PreparingDestination).has("RouteService", s);
                if up {
                    e.has("EnsureDedicatedCluster", d).lacks("EnsureTenant")
                } else {
                    e.has("EnsureTenant", d)
                }
            }
            Kind::DestinationNotReady => go(PreparingDestination)
                .lacks("EnsureTenant")
                .lacks("CopyTopology"),
            // Ready: the dual phase keeps clients on the source.
            Kind::DestinationReady => go(DualWriteDualRead)
                .has("RouteService", s)
                .lacks_on("RouteService", d),
            Kind::FlipBack => aborted(Aborting),
            Kind::Deletion => deletion(PreparingDestination, true),
        },
        DualWriteDualRead => match kind {
            // Write-ahead: the pass that decides the cutover records it and changes nothing.
            Kind::Steady
            | Kind::OutsideWindow
            | Kind::DestinationReady
            | Kind::DestinationFull
            | Kind::StaleSample
            | Kind::FreshEmptySample
            | Kind::FreshNonEmptySample
            | Kind::DrainTimeout
            | Kind::GraceElapsed
            | Kind::SubscriberConnected => go(SingleWriteDualRead)
                .has("RouteService", s)
                .lacks_on("RouteService", d)
                .lacks("FreezeSource"),
            // Held: a subscriber would lose its backlog, a stream its history.
            Kind::SubscriberBacklog | Kind::StreamHistory => go(DualWriteDualRead)
                .has("RouteService", s)
                .lacks("FreezeSource"),
            // The cutover needs both clusters answering: the source to be frozen, the
            // destination to open for writes.
            Kind::DestinationNotReady | Kind::NotInService => go(DualWriteDualRead)
                .has("RouteService", s)
                .lacks("FreezeSource"),
            // Nothing reached the destination: it is discarded at once.
            Kind::FlipBack => aborted(Aborting),
            Kind::Deletion => deletion(DualWriteDualRead, true),
        },
        SingleWriteDualRead => match kind {
            // The source cannot be asked: its read-only state is unverified, stay.
            Kind::NotInService => go(SingleWriteDualRead)
                .has("RouteService", d)
                .has("FreezeSource", s),
            // A subscriber is still on the source: it moves once the settle time has passed
            // since the source was seen refusing writes (this pass records that moment).
            Kind::SubscriberConnected => go(SingleWriteDualRead)
                .has("RouteService", d)
                .has("FreezeSource", s)
                .lacks("CloseSubscribers"),
            // The destination must take writes before the source drains: wait for it.
            Kind::DestinationNotReady => go(SingleWriteDualRead)
                .has("RouteService", d)
                .has("FreezeSource", s),
            Kind::Steady
            | Kind::OutsideWindow
            | Kind::DestinationReady
            | Kind::DestinationFull
            | Kind::FlipBack
            | Kind::StaleSample
            | Kind::FreshEmptySample
            | Kind::FreshNonEmptySample
            | Kind::DrainTimeout
            | Kind::GraceElapsed
            | Kind::SubscriberBacklog
            | Kind::StreamHistory => go(DrainingSource)
                .has("RouteService", d)
                .has("FreezeSource", s)
                .has("CloseSubscribers", s),
            Kind::Deletion => deletion(SingleWriteDualRead, true),
        },
        DrainingSource => match kind {
            Kind::FreshEmptySample => {
                let e = go(DestinationOnly)
                    .has("RevokeAll", s)
                    .lacks("DeleteTenant")
                    .lacks("DiscardTenant");
                // The source's consumers move now; `Close` closes every connection.
                if up {
                    e.has("CloseConsumers", s).lacks("CloseConnections")
                } else {
                    e.has("CloseConnections", s)
                }
            }
            Kind::Steady
            | Kind::OutsideWindow
            | Kind::NotInService
            | Kind::DestinationNotReady
            | Kind::DestinationReady
            | Kind::DestinationFull
            | Kind::FlipBack
            | Kind::StaleSample
            | Kind::FreshNonEmptySample
            | Kind::DrainTimeout
            | Kind::GraceElapsed
            | Kind::SubscriberBacklog
            | Kind::StreamHistory
            | Kind::SubscriberConnected => go(DrainingSource)
                .has("FreezeSource", s)
                .has("CloseSubscribers", s)
                .has("RouteService", d),
            Kind::Deletion => deletion(DrainingSource, true),
        },
        DestinationOnly => match kind {
            // Retirement starts by closing the source's connections (recorded); the delete
            // waits for a sample taken after that.
            Kind::DrainTimeout => go(DestinationOnly)
                .has("RevokeAll", s)
                .has("CloseConnections", s)
                .lacks("DeleteTenant")
                .lacks("DeleteDedicatedCluster"),
            Kind::GraceElapsed => {
                let e = go(Completed).has("RevokeAll", s).has("DeleteTenant", s);
                if up {
                    e.lacks("DeleteDedicatedCluster")
                } else {
                    e.has("DeleteDedicatedCluster", s)
                }
            }
            // Reads come back, and since the source's consumers have moved, the returned
            // backlog is shovelled over whatever the strategy.
            Kind::FreshNonEmptySample | Kind::SubscriberBacklog | Kind::StreamHistory => {
                go(DrainingSource)
                    .has("FreezeSource", s)
                    .has("StartShovels", s)
            }
            Kind::Steady
            | Kind::OutsideWindow
            | Kind::NotInService
            | Kind::DestinationNotReady
            | Kind::DestinationReady
            | Kind::DestinationFull
            | Kind::FlipBack
            | Kind::StaleSample
            | Kind::FreshEmptySample
            | Kind::SubscriberConnected => {
                // NotInService: the source does not answer; the plan still wants it revoked.
                go(DestinationOnly)
                    .has("RevokeAll", s)
                    .has("RouteService", d)
            }
            Kind::Deletion => deletion(DestinationOnly, true),
        },
        Completed => match kind {
            Kind::Deletion => {
                // The source is gone already; cleanup targets what still exists.
                let mut e = deletion(Completed, true);
                if !up {
                    e.has.retain(|(n, c)| {
                        !(*n == "DeleteDedicatedCluster" && c.as_ref() == Some(s))
                    });
                }
                e
            }
            Kind::Steady
            | Kind::OutsideWindow
            | Kind::NotInService
            | Kind::DestinationNotReady
            | Kind::DestinationReady
            | Kind::DestinationFull
            | Kind::FlipBack
            | Kind::StaleSample
            | Kind::FreshEmptySample
            | Kind::FreshNonEmptySample
            | Kind::DrainTimeout
            | Kind::GraceElapsed
            | Kind::SubscriberBacklog
            | Kind::StreamHistory
            | Kind::SubscriberConnected => go(Stable).has("RouteService", d),
        },
        Aborting => match kind {
            Kind::Deletion => deletion(Aborting, true),
            // A destination that never took a client's message is not waited for, whether it
            // answers or not.
            Kind::Steady
            | Kind::OutsideWindow
            | Kind::NotInService
            | Kind::DestinationNotReady
            | Kind::DestinationReady
            | Kind::DestinationFull
            | Kind::FlipBack
            | Kind::StaleSample
            | Kind::FreshEmptySample
            | Kind::FreshNonEmptySample
            | Kind::DrainTimeout
            | Kind::GraceElapsed
            | Kind::SubscriberBacklog
            | Kind::StreamHistory
            | Kind::SubscriberConnected => aborted(Stable).lacks("RevokeAll"),
        },
    }
}

fn has_step(p: &Plan, name: &str, c: Option<&ClusterRef>) -> bool {
    p.steps.iter().any(|s| {
        s.name() == name
            && match (c, s) {
                (None, _) => true,
                (Some(c), Step::RouteService { to }) => to.contains(c),
                (Some(c), Step::StartShovels { from, .. }) => from == c,
                (Some(c), Step::CopyTopology { to, .. }) => to == c,
                (Some(c), s) => s.destroys() == Some(c) || step_cluster(s) == Some(c),
            }
    })
}

fn step_cluster(s: &Step) -> Option<&ClusterRef> {
    match s {
        Step::EnsureDedicatedCluster { cluster }
        | Step::EnsureTenant { cluster, .. }
        | Step::FreezeSource { cluster }
        | Step::RestoreWrites { cluster }
        | Step::RevokeAll { cluster }
        | Step::StopTransfers { cluster }
        | Step::CloseSubscribers { cluster, .. }
        | Step::CloseConsumers { cluster, .. }
        | Step::CloseConnections { cluster, .. }
        | Step::DeleteTenant { cluster }
        | Step::DiscardTenant { cluster }
        | Step::DeleteDedicatedCluster { cluster } => Some(cluster),
        Step::StopShovels { from } => Some(from),
        _ => None,
    }
}

#[test]
fn every_phase_times_every_observation_in_both_directions() {
    let mut rows = 0;
    let mut failures = Vec::new();
    let mut transitions = BTreeSet::new();
    for dir in Dir::ALL {
        for phase in MigrationPhase::ALL {
            for kind in KINDS {
                rows += 1;
                let (o, now) = apply(kind, phase, dir);
                let p = plan(&o, now);
                let e = expect(phase, kind, dir);
                let here = format!("{dir:?} {phase:?} x {kind:?}");
                if p != plan(&o, now) {
                    failures.push(format!("{here}: not deterministic"));
                }
                if !is_allowed(phase, p.phase) {
                    failures.push(format!(
                        "{here}: edge {phase:?} -> {:?} not allowed",
                        p.phase
                    ));
                }
                transitions.insert((phase, p.phase));
                if p.phase != e.phase {
                    failures.push(format!(
                        "{here}: phase {:?}, expected {:?}; steps {:?}",
                        p.phase,
                        e.phase,
                        step_names(&p)
                    ));
                    continue;
                }
                for (name, c) in &e.has {
                    if !has_step(&p, name, c.as_ref()) {
                        failures.push(format!(
                            "{here}: missing {name} on {:?}; steps {:?}",
                            c.as_ref().map(|c| &c.name),
                            step_names(&p)
                        ));
                    }
                }
                for (name, c) in &e.lacks_on {
                    if has_step(&p, name, Some(c)) {
                        failures.push(format!(
                            "{here}: unexpected {name} on {}; steps {:?}",
                            c.name,
                            step_names(&p)
                        ));
                    }
                }
                for name in &e.lacks {
                    if has_step(&p, name, None) {
                        failures.push(format!(
                            "{here}: unexpected {name}; steps {:?}",
                            step_names(&p)
                        ));
                    }
                }
                if p.status.migration_phase != Some(p.phase)
                    || p.status.observed_generation != Some(o.generation)
                {
                    failures.push(format!("{here}: status does not record phase/generation"));
                }
                for c in p.conditions() {
                    if c.observed_generation != Some(o.generation) {
                        failures.push(format!(
                            "{here}: condition {} lacks observedGeneration",
                            c.type_
                        ));
                    }
                }
            }
        }
    }
    assert_eq!(rows, 2 * MigrationPhase::ALL.len() * KINDS.len());
    assert!(
        failures.is_empty(),
        "{} of {rows} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Every edge of the table is taken by some row.
    let untaken: Vec<_> = EDGES
        .iter()
        .filter(|(f, t, _)| !transitions.contains(&(*f, *t)))
        .collect();
    assert!(
        untaken.is_empty(),
        "edges never taken by the table: {untaken:?}"
    );
}

#[test]
fn blocked_reasons_name_the_cause() {
    let cases = [
        (Kind::NotInService, Dir::Upgrade, reasons::NOT_IN_SERVICE),
        (Kind::NotInService, Dir::Downgrade, reasons::NOT_IN_SERVICE),
        (
            Kind::DestinationNotReady,
            Dir::Downgrade,
            reasons::SHARED_CLUSTER_NOT_READY,
        ),
        (Kind::DestinationFull, Dir::Downgrade, reasons::NO_CAPACITY),
    ];
    for (kind, dir, reason) in cases {
        let (o, now) = apply(kind, Stable, dir);
        let p = plan(&o, now);
        let c = p.condition(conditions::CONVERSION_BLOCKED).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", reason),
            "{kind:?} {dir:?}"
        );
        assert!(!p.requeue_after.is_zero());
        assert_eq!(p.events.len(), 1, "one Warning on entering Blocked");
        assert_eq!(p.events[0].type_, EventType::Warning);
    }
    // A missing SharedCluster has its own reason.
    let mut o = baseline(Stable, Dir::Downgrade);
    o.shared = absent(shared_ref());
    let p = plan(&o, now0());
    assert_eq!(p.phase, Blocked);
    assert_eq!(
        p.condition(conditions::CONVERSION_BLOCKED).unwrap().reason,
        reasons::SHARED_CLUSTER_NOT_FOUND
    );
    // Already Blocked: the condition stays, no second Event.
    let (o, now) = apply(Kind::NotInService, Blocked, Dir::Upgrade);
    let p = plan(&o, now);
    assert_eq!(p.phase, Blocked);
    assert!(p.events.is_empty(), "{:?}", p.events);
    let c = p.condition(conditions::CONVERSION_BLOCKED).unwrap();
    assert_eq!(
        c.last_transition_time,
        to_time(t0()),
        "transition time kept while status unchanged"
    );
}

#[test]
fn draining_counts_only_fresh_samples() {
    for dir in Dir::ALL {
        let (o, now) = apply(Kind::StaleSample, DrainingSource, dir);
        let m = plan(&o, now).status.migration.unwrap();
        assert_eq!(m.empty_samples, 1, "stale sample changes nothing");
        let (o, now) = apply(Kind::FreshNonEmptySample, DrainingSource, dir);
        let m = plan(&o, now).status.migration.unwrap();
        assert_eq!(
            (m.empty_samples, m.remaining_messages),
            (0, Some(7)),
            "non-zero resets"
        );
        let (o, now) = apply(Kind::FreshEmptySample, DrainingSource, dir);
        let p = plan(&o, now);
        let m = p.status.migration.unwrap();
        assert_eq!(m.empty_samples, 2);
        assert_eq!(
            m.source_revoked_at,
            Some(to_time(now)),
            "grace period starts"
        );
    }
}

#[test]
fn drain_reports_rate_and_eta() {
    let mut o = baseline(DrainingSource, Dir::Upgrade);
    {
        let m = o.status.migration.as_mut().unwrap();
        m.remaining_messages = Some(100);
        m.empty_samples = 0;
    }
    if let Some(t) = o.shared.broker.as_mut().and_then(|b| b.tenant.as_mut()) {
        t.backlog = Some(sample(last_counted() + Duration::seconds(10), 60));
    }
    let m = plan(&o, now0()).status.migration.unwrap();
    assert_eq!(m.remaining_messages, Some(60));
    assert_eq!(m.drain_rate, Some(4.0), "40 messages in 10 s");
    assert_eq!(m.eta_seconds, Some(15));
}

#[test]
fn an_abort_does_not_wait_for_a_destination_that_never_served() {
    for dir in Dir::ALL {
        let (mut o, now) = apply(Kind::Steady, Aborting, dir);
        let d = o.status.migration.as_ref().unwrap().destination.clone();
        // The destination's broker does not answer (a broken image, an unbindable volume).
        match d.kind {
            ClusterKind::Shared => o.shared.broker = None,
            ClusterKind::Dedicated => o.dedicated.broker = None,
        }
        assert_eq!(o.cluster(d.kind).tenant_state(), TenantState::Unknown);
        let p = plan(&o, now);
        assert_eq!(p.phase, Stable, "{dir:?}");
        assert_eq!(p.status.tier, Some(dir.tiers().0));
        assert!(
            p.steps.iter().any(|s| s.destroys() == Some(&d)),
            "{dir:?}: {:?}",
            step_names(&p)
        );
    }
}

#[test]
fn completion_records_history_and_the_new_tier() {
    for dir in Dir::ALL {
        let (from, to) = dir.tiers();
        let (o, now) = apply(Kind::Steady, Completed, dir);
        let p = plan(&o, now);
        assert_eq!(p.status.tier, Some(to));
        assert!(p.status.migration.is_none());
        let h = p.status.history.last().unwrap();
        assert_eq!(
            (h.from, h.to, h.outcome),
            (from, to, MigrationOutcome::Completed)
        );
        assert_eq!(h.phase_seconds.len(), 6);
        assert_eq!(p.events[0].reason, conditions::events::CONVERSION_COMPLETED);
        let mig = p.condition(conditions::MIGRATING).unwrap();
        assert_eq!(mig.status, "False");
    }
}

#[test]
fn a_hand_edited_status_without_its_migration_block_keeps_the_roles() {
    for dir in Dir::ALL {
        let (from, to) = dir.tiers();
        for phase in MigrationPhase::ALL {
            let (mut o, now) = apply(Kind::Steady, phase, dir);
            if o.status.migration.take().is_none() {
                continue;
            }
            let p = plan(&o, now);
            assert!(
                is_allowed(phase, p.phase),
                "{dir:?} {phase:?} -> {:?}",
                p.phase
            );
            if let Some(m) = &p.status.migration {
                assert_eq!((m.from, m.to), (from, to), "{dir:?} {phase:?}");
            }
            assert!(
                p.steps.iter().all(|s| !s.is_destructive()),
                "{dir:?} {phase:?}: {:?}",
                step_names(&p)
            );
        }
    }
}

#[test]
fn samples_do_not_count_while_federation_can_still_move_messages_in() {
    for dir in Dir::ALL {
        let (mut o, now) = apply(Kind::FreshEmptySample, DrainingSource, dir);
        let s = o.status.migration.as_ref().unwrap().source.clone();
        let c = match s.kind {
            ClusterKind::Shared => &mut o.shared,
            ClusterKind::Dedicated => &mut o.dedicated,
        };
        c.broker
            .as_mut()
            .unwrap()
            .tenant
            .as_mut()
            .unwrap()
            .federated = true;
        let p = plan(&o, now);
        assert_eq!(p.phase, DrainingSource, "{dir:?}");
        let m = p.status.migration.as_ref().unwrap();
        assert_eq!(
            (m.empty_samples, m.last_sample.as_ref()),
            (0, None),
            "{dir:?}"
        );
        assert!(
            p.steps
                .iter()
                .any(|s| matches!(s, Step::DisableFederation { .. })),
            "{dir:?}: {:?}",
            step_names(&p)
        );
    }
}
