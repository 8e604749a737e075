//! Property tests: random observation sequences against the simulated world (random flips,
//! readiness and reachability changes, publishes and consumes, samples with random staleness,
//! executor crashes after any step, time jumps, deletion), proving for every plan made:
//!
//! - (a) the phase only moves along [`EDGES`] (`World::check_plan`);
//! - (b) no tenant loses read access while it still holds messages (`World::run`, `RevokeAll`);
//! - (c) no broker state holding messages is deleted unless the instance itself is deleted
//!   (`World::run`, `DeleteTenant`/`DeleteDedicatedCluster`), and the message balance holds;
//! - (d) at most one migration per instance: the migration block exists exactly in conversion
//!   phases, its identity never changes while it runs, steps touch only its two clusters, and
//!   outside a conversion only one cluster holds the tenant;
//! - (w) a conversion starts only inside `spec.migration.window` (random windows come and go);
//! - determinism: the same input gives the same plan;
//! - and progress: from any state reached, a cooperative world (everything up, consumers active,
//!   fresh statistics, time passing until a maintenance window opens) ends `Stable` on
//!   `spec.tier` (or, when deleted, without any broker state).

use crate::common::*;
use proptest::prelude::*;
use tiermq_crd::{
    ClusterKind, ConnectionPolicy, DrainStrategy, MaintenanceWindow, MigrationPhase, Tier, Weekday,
};
use tiermq_operator::controller::plan::{EDGES, WindowState, is_allowed, window_state};

#[derive(Clone, Debug)]
enum Ev {
    Flip(Tier),
    Ready(ClusterKind, bool),
    Answers(ClusterKind, bool),
    Full(bool),
    Publish(ClusterKind, i64),
    PublishViaService(i64),
    Consume(ClusterKind, i64),
    Sample(ClusterKind, bool),
    Stale(ClusterKind, usize),
    Tick(i64),
    Reconcile,
    Crash(usize),
    Strategy(DrainStrategy),
    Policy(Option<ConnectionPolicy>),
    Federation(bool),
    Window(Option<MaintenanceWindow>),
    Delete,
}

/// A random weekly window (some days or every day, any start, 1 minute to 23:59 long), or none.
fn window() -> impl Strategy<Value = Option<MaintenanceWindow>> {
    use Weekday::*;
    let days = prop::sample::subsequence(vec![Mon, Tue, Wed, Thu, Fri, Sat, Sun], 0..=7);
    let some = (days, 0u32..1440, 1u32..1440).prop_map(|(days, start, len)| {
        let hm = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
        MaintenanceWindow {
            days,
            start_time: hm(start),
            end_time: hm((start + len) % 1440),
        }
    });
    prop_oneof![1 => Just(None), 2 => some.prop_map(Some)]
}

fn kind() -> impl Strategy<Value = ClusterKind> {
    prop_oneof![Just(ClusterKind::Shared), Just(ClusterKind::Dedicated)]
}

fn tier() -> impl Strategy<Value = Tier> {
    prop_oneof![Just(Tier::Shared), Just(Tier::Dedicated)]
}

fn ev_base() -> impl Strategy<Value = Ev> {
    prop_oneof![
        3 => tier().prop_map(Ev::Flip),
        3 => (kind(), prop::bool::weighted(0.7)).prop_map(|(k, b)| Ev::Ready(k, b)),
        2 => (kind(), prop::bool::weighted(0.7)).prop_map(|(k, b)| Ev::Answers(k, b)),
        1 => any::<bool>().prop_map(Ev::Full),
        4 => (kind(), 1..50i64).prop_map(|(k, n)| Ev::Publish(k, n)),
        3 => (1..50i64).prop_map(Ev::PublishViaService),
        4 => (kind(), 1..80i64).prop_map(|(k, n)| Ev::Consume(k, n)),
        6 => (kind(), any::<bool>()).prop_map(|(k, lag)| Ev::Sample(k, lag)),
        3 => (kind(), 1..4usize).prop_map(|(k, b)| Ev::Stale(k, b)),
        6 => prop_oneof![8 => 1..60i64, 2 => 60..1000i64, 1 => 3000..100_000i64].prop_map(Ev::Tick),
        14 => Just(Ev::Reconcile),
        3 => (0..8usize).prop_map(Ev::Crash),
        1 => prop_oneof![Just(DrainStrategy::Consume), Just(DrainStrategy::Shovel)].prop_map(Ev::Strategy),
        1 => prop_oneof![Just(None), Just(Some(ConnectionPolicy::Keep)), Just(Some(ConnectionPolicy::Close))]
            .prop_map(Ev::Policy),
        1 => any::<bool>().prop_map(Ev::Federation),
        1 => window().prop_map(Ev::Window),
    ]
}

fn ev(with_delete: bool) -> BoxedStrategy<Ev> {
    if with_delete {
        prop_oneof![80 => ev_base(), 1 => Just(Ev::Delete)].boxed()
    } else {
        ev_base().boxed()
    }
}

fn play(w: &mut World, e: &Ev) {
    match *e {
        Ev::Flip(t) => w.set_tier(t),
        Ev::Ready(k, b) => {
            let c = w.cluster_mut(k);
            if c.exists {
                c.ready = b;
            }
        }
        Ev::Answers(k, b) => w.cluster_mut(k).answers = b,
        Ev::Full(b) => w.shared.full = b,
        Ev::Publish(k, n) => {
            w.publish(k, n);
        }
        Ev::PublishViaService(n) => {
            w.publish_via_service(n);
        }
        Ev::Consume(k, n) => {
            w.consume(k, n);
        }
        Ev::Sample(k, false) => w.sample(k),
        Ev::Sample(k, true) => w.sample_lagging(k),
        Ev::Stale(k, back) => w.show_stale(k, back),
        Ev::Tick(s) => w.tick(s),
        Ev::Reconcile => {
            let before = w.phase();
            w.reconcile();
            started_in_window(w, before);
        }
        Ev::Crash(k) => {
            w.reconcile_with(Some(k));
        }
        Ev::Strategy(s) => w.spec.migration.drain_strategy = s,
        Ev::Policy(p) => w.spec.migration.connection_policy = p,
        Ev::Federation(b) => w.spec.migration.federation = b,
        Ev::Window(ref win) => w.spec.migration.window = win.clone(),
        Ev::Delete => w.deletion = true,
    }
    one_migration_at_most(w);
}

/// (w): a pass that moved the instance from `Stable`/`Blocked` into a conversion ran inside the
/// maintenance window (or without one).
fn started_in_window(w: &mut World, before: MigrationPhase) {
    let started = matches!(before, MigrationPhase::Stable | MigrationPhase::Blocked)
        && w.phase() == MigrationPhase::PreparingDestination;
    if let (true, Some(win)) = (started, &w.spec.migration.window) {
        let state = window_state(win, w.now);
        if !matches!(state, Ok(WindowState::Open { .. })) {
            let msg = format!("(w) a conversion started at {} outside {win:?}", w.now);
            w.violations.push(msg);
        }
    }
}

/// (d), on the world: outside a conversion only the serving cluster holds the tenant.
fn one_migration_at_most(w: &mut World) {
    if w.deletion {
        return;
    }
    if matches!(w.phase(), MigrationPhase::Stable | MigrationPhase::Blocked) {
        let both = w.shared.tenant.is_some() && w.dedicated.tenant.is_some();
        if both {
            w.violations
                .push(format!("{:?} with a tenant on both clusters", w.phase()));
        }
    }
}

fn run(start: Tier, events: &[Ev]) -> Result<World, TestCaseError> {
    let mut w = World::new(start);
    for e in events {
        play(&mut w, e);
        if !w.finalizer {
            break;
        }
    }
    prop_assert!(
        w.violations.is_empty(),
        "violations during the random run: {:?}\nphases {:?}",
        w.violations,
        w.phases
    );
    prop_assert!(w.balance_ok(), "message balance broken: {w:?}");
    for pair in w.phases.windows(2) {
        prop_assert!(is_allowed(pair[0], pair[1]), "recorded {pair:?}");
    }
    // Progress: a cooperative world finishes whatever is running.
    prop_assert!(
        w.settle(600),
        "did not settle: phase {:?}, spec {:?}, status tier {:?}, phases {:?}",
        w.phase(),
        w.spec.tier,
        w.status.tier,
        w.phases
    );
    prop_assert!(
        w.violations.is_empty(),
        "violations while settling: {:?}",
        w.violations
    );
    prop_assert!(w.balance_ok(), "message balance broken after settling");
    if w.deletion {
        prop_assert!(!w.finalizer);
        prop_assert!(
            w.shared.tenant.is_none() && !w.dedicated.exists,
            "state left behind after delete"
        );
    } else {
        let serving = w.cluster(w.spec.tier.cluster_kind());
        prop_assert!(serving.tenant.is_some(), "no tenant on the serving cluster");
        let other = w.cluster(other(w.spec.tier).cluster_kind());
        prop_assert!(other.tenant.is_none(), "a tenant left on the other cluster");
        if w.spec.tier == Tier::Shared {
            prop_assert!(
                !w.dedicated.exists,
                "dedicated cluster left after a downgrade"
            );
        }
    }
    Ok(w)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, max_shrink_iters: 4000, ..ProptestConfig::default() })]

    #[test]
    fn random_worlds_keep_every_safety_rule(start in tier(), events in prop::collection::vec(ev(false), 1..160)) {
        run(start, &events)?;
    }

    #[test]
    fn random_worlds_with_deletion_clean_up_both_sides(start in tier(), events in prop::collection::vec(ev(true), 1..160)) {
        run(start, &events)?;
    }

    /// Frequent flips back and forth: the conversions chain, never overlap, and lose nothing.
    #[test]
    fn flip_storms_never_overlap_conversions(
        start in tier(),
        events in prop::collection::vec(prop_oneof![
            3 => tier().prop_map(Ev::Flip),
            4 => Just(Ev::Reconcile),
            2 => (kind(), 1..20i64).prop_map(|(k, n)| Ev::Publish(k, n)),
            2 => (kind(), any::<bool>()).prop_map(|(k, lag)| Ev::Sample(k, lag)),
            2 => (1..400i64).prop_map(Ev::Tick),
            1 => (kind(), any::<bool>()).prop_map(|(k, b)| Ev::Ready(k, b)),
            1 => (0..6usize).prop_map(Ev::Crash),
        ], 1..200),
    ) {
        let w = run(start, &events)?;
        prop_assert!(w.plans > 0);
    }
}

/// The edge set is the one the module documents: every phase has a way back to `Stable`.
#[test]
fn every_phase_can_reach_stable_along_the_edges() {
    for start in MigrationPhase::ALL {
        let mut seen = vec![start];
        let mut i = 0;
        while i < seen.len() {
            let p = seen[i];
            for (f, t, _) in EDGES {
                if *f == p && !seen.contains(t) {
                    seen.push(*t);
                }
            }
            i += 1;
        }
        assert!(
            seen.contains(&MigrationPhase::Stable),
            "{start:?} cannot reach Stable"
        );
    }
    // No edge skips the write cutover backwards: nothing past it leads to Aborting.
    for (f, t, _) in EDGES {
        if f.past_write_cutover() {
            assert_ne!(*t, MigrationPhase::Aborting, "{f:?} -> Aborting");
        }
    }
}

/// The generator has teeth: random runs (then settling) take every edge of the state machine,
/// so the properties above are checked in every phase, not only near `Stable`.
#[test]
fn random_runs_cover_every_edge() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    use std::collections::BTreeSet;

    let mut runner = TestRunner::deterministic();
    let seq = (tier(), prop::collection::vec(ev(false), 1..160));
    let mut taken = BTreeSet::new();
    for _ in 0..400 {
        let (start, events) = seq.new_tree(&mut runner).unwrap().current();
        let mut w = World::new(start);
        for e in &events {
            play(&mut w, e);
        }
        w.settle(600);
        assert!(w.violations.is_empty(), "{:?}", w.violations);
        for pair in w.phases.windows(2) {
            taken.insert((pair[0], pair[1]));
        }
    }
    // DestinationOnly -> DrainingSource is a defence: it needs messages to appear on a source
    // whose writes are revoked, which nothing in an honest world does (the table covers it).
    let defensive = (
        MigrationPhase::DestinationOnly,
        MigrationPhase::DrainingSource,
    );
    let missing: Vec<_> = EDGES
        .iter()
        .filter(|(f, t, _)| (*f, *t) != defensive && !taken.contains(&(*f, *t)))
        .map(|(f, t, why)| format!("{f:?} -> {t:?} ({why})"))
        .collect();
    assert!(missing.is_empty(), "edges no random run took: {missing:#?}");
}
