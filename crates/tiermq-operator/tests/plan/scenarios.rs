//! Named scenarios: conversions told as stories against the simulated world (true message counts,
//! lagging statistics, an executor that runs the planned steps).

use crate::common::*;
use tiermq_crd::conditions;
use tiermq_crd::{
    ClusterKind, ConnectionPolicy, DrainStrategy, MigrationOutcome, MigrationPhase, Tier,
};
use tiermq_operator::controller::plan::{
    Access, EventType, Plan, RETIRE_REASON, Step, plan, requeue_after,
};

use MigrationPhase::*;

const BOTH: [ClusterKind; 2] = [ClusterKind::Shared, ClusterKind::Dedicated];

/// Reconcile with fresh (one emission behind) statistics and `secs` of time between passes,
/// letting `world` act first each round; stop when `done` or after `max` rounds.
fn drive(
    w: &mut World,
    max: usize,
    secs: i64,
    mut world: impl FnMut(&mut World),
    done: impl Fn(&World) -> bool,
) -> Vec<Plan> {
    let mut plans = Vec::new();
    for _ in 0..max {
        world(w);
        w.tick(secs);
        for k in BOTH {
            w.sample_lagging(k);
        }
        plans.push(w.reconcile());
        if done(w) {
            break;
        }
    }
    plans
}

/// A close of the source's connections by the connection policy, not the one that comes with
/// retiring the source.
fn policy_close(s: &Step) -> bool {
    matches!(s, Step::CloseConnections { reason, .. } if !reason.starts_with(RETIRE_REASON))
}

fn stable_on(tier: Tier) -> impl Fn(&World) -> bool {
    move |w: &World| w.phase() == Stable && w.status.tier == Some(tier)
}

fn events(plans: &[Plan]) -> Vec<&'static str> {
    plans
        .iter()
        .flat_map(|p| p.events.iter().map(|e| e.reason))
        .collect()
}

fn any_step(plans: &[Plan], f: impl Fn(&Step) -> bool) -> bool {
    plans.iter().any(|p| p.steps.iter().any(&f))
}

const ALL_PHASES_IN_ORDER: [MigrationPhase; 8] = [
    Stable,
    PreparingDestination,
    DualWriteDualRead,
    SingleWriteDualRead,
    DrainingSource,
    DestinationOnly,
    Completed,
    Stable,
];

#[test]
fn upgrade_under_consume_walks_all_phases_in_order() {
    let mut w = World::new(Tier::Shared);
    w.publish_via_service(40);
    w.set_tier(Tier::Dedicated);
    let plans = drive(
        &mut w,
        200,
        10,
        |w| {
            // The dedicated pods come up some time after the StatefulSet is created.
            if w.dedicated.exists {
                w.dedicated.ready = true;
            }
            // Steady load through the Service; consumers on the source take 5 messages a round.
            w.publish_via_service(3);
            w.consume(ClusterKind::Shared, 5);
            w.consume(ClusterKind::Dedicated, 3);
        },
        stable_on(Tier::Dedicated),
    );
    assert_eq!(w.phases, ALL_PHASES_IN_ORDER, "events {:?}", events(&plans));
    assert!(w.violations.is_empty(), "{:?}", w.violations);
    assert!(w.balance_ok(), "messages lost");
    assert!(w.shared.tenant.is_none(), "source tenant retired");
    assert!(w.dedicated.tenant.is_some());
    assert_eq!(w.routes, vec![dedicated_ref()]);
    assert_eq!(
        events(&plans),
        [
            conditions::events::CONVERSION_STARTED,
            conditions::events::DUAL_WRITE,
            conditions::events::WRITE_CUTOVER,
            conditions::events::SUBSCRIBERS_MOVED,
            conditions::events::DRAINING,
            conditions::events::SOURCE_DRAINED,
            conditions::events::SOURCE_RETIRED,
            conditions::events::CONVERSION_COMPLETED,
        ],
        "one Event per transition, none for steady passes"
    );
    // Upgrade default: source connections are left alone until the source is retired.
    assert!(!any_step(&plans, policy_close));
    // The drain was reported while it lasted.
    assert!(
        plans
            .iter()
            .any(|p| p
                .status
                .migration
                .as_ref()
                .is_some_and(|m| m.phases.last().unwrap().phase == DrainingSource
                    && m.remaining_messages.is_some_and(|n| n > 0)
                    && m.eta_seconds.is_some()))
    );
    let h = w.status.history.last().unwrap();
    assert_eq!(h.outcome, MigrationOutcome::Completed);
    let phases: Vec<_> = h.phase_seconds.iter().map(|p| p.phase).collect();
    assert_eq!(phases, ALL_PHASES_IN_ORDER[1..7]);
    assert!(h.phase_seconds.iter().all(|p| p.seconds >= 0));
    // A pass that moved the phase is followed at once by one acting on the new phase; passes
    // that stay in a phase wait (the bench's overhead came from a 1 s wait after each change).
    for pair in plans.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if a.phase != b.phase && b.phase != Stable {
            assert!(
                b.requeue_after < std::time::Duration::from_secs(1),
                "{:?} -> {:?} waits {:?}",
                a.phase,
                b.phase,
                b.requeue_after
            );
        }
    }
    assert!(
        plans
            .iter()
            .any(|p| p.requeue_after >= std::time::Duration::from_secs(1))
    );
}

/// A `Consume` drain whose source loses its consumers after the cutover (its broker restarted
/// and they reconnected through the Service, which routes to the destination) with messages
/// left: none can come back, so the rest is shovelled and the conversion completes.
#[test]
fn a_consume_drain_left_without_consumers_shovels_the_rest() {
    let mut w = World::new(Tier::Shared);
    w.spec.migration.grace_period_seconds = 5;
    w.publish_via_service(40);
    w.set_tier(Tier::Dedicated);
    let mut plans = Vec::new();
    for _ in 0..100 {
        if w.dedicated.exists {
            w.dedicated.ready = true;
        }
        if w.phase() == DrainingSource {
            // The consumers are gone from the source, and with them all consuming there.
            w.shared.tenant.as_mut().unwrap().connections = 0;
        } else if !w.phase().past_write_cutover() {
            w.consume(ClusterKind::Shared, 2);
        }
        w.tick(1);
        for k in BOTH {
            w.sample(k);
        }
        plans.push(w.reconcile());
        if stable_on(Tier::Dedicated)(&w) {
            break;
        }
    }
    assert_eq!(w.phases, ALL_PHASES_IN_ORDER, "events {:?}", events(&plans));
    assert!(w.violations.is_empty(), "{:?}", w.violations);
    assert!(w.balance_ok(), "messages lost");
    let shovelled_while_draining = plans.iter().any(|p| {
        p.phase == DrainingSource
            && p.steps
                .iter()
                .any(|s| matches!(s, Step::StartShovels { .. }))
    });
    assert!(shovelled_while_draining, "no shovel while draining");
}

/// Paced only by its own requeue delays (drain poll 1 s, statistics every 500 ms, a fresh
/// sample at every pass), a conversion waits for nothing it need not: the grace period to the
/// millisecond, the subscriber settle, and a statistics interval per confirming sample; a pass
/// that ran the steps its phase waits for is followed within a fraction of a second. The bench's
/// operator overhead came from whole-second polls between such passes.
#[test]
fn a_conversion_paced_by_its_own_requeues_waits_only_for_what_it_must() {
    for drain in [DrainStrategy::Consume, DrainStrategy::Shovel] {
        let mut w = World::new(Tier::Dedicated);
        w.spec.migration.drain_strategy = drain;
        w.spec.migration.grace_period_seconds = 5;
        w.publish_via_service(30);
        w.set_tier(Tier::Shared);
        let grace = w.spec.migration.grace_period_seconds;
        let start = w.now;
        let mut passes = Vec::new();
        let mut next = std::time::Duration::ZERO;
        for _ in 0..200 {
            w.tick_ms(next.as_millis() as i64);
            // The source's consumers keep taking messages until they are moved.
            w.consume(ClusterKind::Dedicated, 10);
            w.consume(ClusterKind::Shared, 10);
            for k in BOTH {
                w.sample(k);
            }
            let p = w.reconcile();
            next = requeue_after(&p, 1, 500);
            let remaining = p
                .status
                .migration
                .as_ref()
                .and_then(|m| m.remaining_messages);
            passes.push((w.now, p.phase, next, remaining));
            if stable_on(Tier::Shared)(&w) {
                break;
            }
        }
        assert_eq!(
            w.phases,
            ALL_PHASES_IN_ORDER,
            "{drain:?}: {:?}",
            &passes[passes.len().saturating_sub(8)..]
        );
        assert!(w.violations.is_empty(), "{:?}", w.violations);
        assert!(w.balance_ok(), "messages lost");
        let entered = |phase| passes.iter().find(|(_, p, ..)| *p == phase).unwrap().0;
        let ms = |d: chrono::TimeDelta| d.num_milliseconds();
        let destination_only = ms(entered(Completed) - entered(DestinationOnly));
        // The grace period, then the retirement's close and one sample after it.
        assert!(
            (grace * 1000..grace * 1000 + 700).contains(&destination_only),
            "{drain:?}: DestinationOnly lasted {destination_only} ms with a {grace} s grace period"
        );
        let total = ms(w.now - start);
        assert!(
            total - grace * 1000 < 4_000,
            "{drain:?}: {total} ms from the flip to Stable, {grace} s of it grace: {passes:?}"
        );
        // Once a sample showed the source empty, the next is awaited a statistics interval.
        for (at, phase, wait, remaining) in &passes {
            if *phase == DrainingSource && *remaining == Some(0) {
                assert!(
                    *wait <= std::time::Duration::from_millis(500),
                    "{drain:?}: a drain pass at {at} waits {wait:?}"
                );
            }
        }
    }
}

#[test]
fn upgrade_under_shovel_moves_the_backlog_without_consumers() {
    let mut w = World::new(Tier::Shared);
    w.spec.migration.drain_strategy = DrainStrategy::Shovel;
    w.publish_via_service(500);
    w.set_tier(Tier::Dedicated);
    let plans = drive(
        &mut w,
        200,
        10,
        |w| {
            if w.dedicated.exists {
                w.dedicated.ready = true;
            }
        },
        stable_on(Tier::Dedicated),
    );
    assert_eq!(w.phases, ALL_PHASES_IN_ORDER);
    assert!(any_step(
        &plans,
        |s| matches!(s, Step::StartShovels { from, .. } if *from == shared_ref())
    ));
    assert!(w.violations.is_empty(), "{:?}", w.violations);
    // Nobody consumed: all 500 messages are on the dedicated cluster now.
    assert_eq!(w.dedicated.tenant.as_ref().unwrap().messages, 500);
    assert!(w.balance_ok());
}

#[test]
fn downgrade_closes_source_connections_by_default_and_removes_the_dedicated_cluster() {
    let mut w = World::new(Tier::Dedicated);
    w.dedicated.tenant.as_mut().unwrap().connections = 7;
    w.publish_via_service(20);
    w.set_tier(Tier::Shared);
    let plans = drive(
        &mut w,
        200,
        10,
        |w| {
            w.consume(ClusterKind::Dedicated, 4);
        },
        stable_on(Tier::Shared),
    );
    assert_eq!(w.phases, ALL_PHASES_IN_ORDER);
    assert!(w.violations.is_empty(), "{:?}", w.violations);
    let closes: Vec<_> = plans
        .iter()
        .enumerate()
        .flat_map(|(i, p)| p.steps.iter().map(move |s| (i, s)))
        .filter_map(|(i, s)| match s {
            Step::CloseConnections { cluster, reason } if policy_close(s) => {
                Some((i, cluster.clone(), reason.clone()))
            }
            _ => None,
        })
        .collect();
    assert!(!closes.is_empty(), "source connections closed");
    assert!(
        closes
            .iter()
            .all(|(_, c, r)| *c == dedicated_ref() && r.contains("Shared"))
    );
    let deleted_at = plans
        .iter()
        .position(|p| {
            p.steps
                .iter()
                .any(|s| matches!(s, Step::DeleteDedicatedCluster { .. }))
        })
        .expect("dedicated cluster deleted");
    assert!(
        closes[0].0 < deleted_at,
        "connections closed before the cluster is removed"
    );
    // Within the deleting plan, too, the close comes first.
    let p = &plans[deleted_at];
    let close = p
        .steps
        .iter()
        .position(|s| matches!(s, Step::CloseConnections { .. }));
    let delete = p
        .steps
        .iter()
        .position(|s| matches!(s, Step::DeleteDedicatedCluster { .. }));
    assert!(close < delete);
    assert!(!w.dedicated.exists);
    assert_eq!(policy_recorded(&plans), Some(ConnectionPolicy::Close));
    assert!(w.balance_ok());
}

/// The effective connection policy the conversion recorded in status.
fn policy_recorded(plans: &[Plan]) -> Option<ConnectionPolicy> {
    plans
        .iter()
        .find_map(|p| p.status.migration.as_ref().map(|m| m.connection_policy))
}

#[test]
fn the_spec_connection_policy_wins_over_the_direction_default() {
    for (start, policy, expect_close) in [
        (Tier::Shared, Some(ConnectionPolicy::Close), true),
        (Tier::Dedicated, Some(ConnectionPolicy::Keep), false),
        (Tier::Shared, None, false),
        (Tier::Dedicated, None, true),
    ] {
        let mut w = World::new(start);
        w.spec.migration.connection_policy = policy;
        w.set_tier(other(start));
        let plans = drive(
            &mut w,
            200,
            10,
            |w| {
                if w.dedicated.exists {
                    w.dedicated.ready = true;
                }
            },
            stable_on(other(start)),
        );
        assert_eq!(w.phase(), Stable);
        let closed = any_step(&plans, policy_close);
        assert_eq!(closed, expect_close, "{start:?} with {policy:?}");
    }
}

#[test]
fn flip_back_during_dual_write_aborts_and_loses_nothing() {
    let mut w = World::new(Tier::Shared);
    w.publish_via_service(10);
    w.set_tier(Tier::Dedicated);
    // Reach DualWriteDualRead.
    drive(
        &mut w,
        50,
        10,
        |w| {
            if w.dedicated.exists {
                w.dedicated.ready = true;
            }
        },
        |w| w.phase() == DualWriteDualRead,
    );
    assert_eq!(w.phase(), DualWriteDualRead);
    // Clients stay on the source, and the destination takes no writes, even from a client
    // that reaches it directly.
    assert_eq!(w.routes, vec![shared_ref()]);
    assert!(
        !w.publish(ClusterKind::Dedicated, 25),
        "destination refuses writes"
    );
    assert!(w.publish_via_service(5));
    w.set_tier(Tier::Shared);
    let p = w.reconcile();
    assert_eq!(p.phase, Aborting);
    assert_eq!(w.routes, vec![shared_ref()], "Service on the source only");
    assert!(w.publish(ClusterKind::Shared, 1), "source takes writes");
    let plans = drive(&mut w, 100, 10, |_| {}, stable_on(Tier::Shared));
    assert_eq!(
        w.phases,
        [
            Stable,
            PreparingDestination,
            DualWriteDualRead,
            Aborting,
            Stable
        ]
    );
    assert!(w.violations.is_empty(), "{:?}", w.violations);
    assert_eq!(w.shared.tenant.as_ref().unwrap().messages, 10 + 5 + 1);
    assert!(w.balance_ok(), "no message lost");
    assert!(!w.dedicated.exists, "dedicated destination removed");
    assert_eq!(
        w.status.history.last().unwrap().outcome,
        MigrationOutcome::Aborted
    );
    assert!(events(&plans).contains(&conditions::events::ABORTED));
}

#[test]
fn flip_back_while_preparing_removes_a_destination_that_never_came_up() {
    let mut w = World::new(Tier::Shared);
    w.set_tier(Tier::Dedicated);
    w.reconcile(); // records the conversion
    w.reconcile(); // creates the dedicated StatefulSet
    assert!(w.dedicated.exists && !w.dedicated.ready);
    w.set_tier(Tier::Shared);
    assert_eq!(w.reconcile().phase, Aborting);
    // Its pods never become ready (a broken image): it never took a message, so the abort
    // does not wait for it.
    w.tick(10);
    let p = w.reconcile();
    assert_eq!(p.phase, Stable);
    assert!(p.steps.contains(&Step::DeleteDedicatedCluster {
        cluster: dedicated_ref()
    }));
    assert!(!w.dedicated.exists);
    assert!(w.violations.is_empty());
}

#[test]
fn drain_timeout_warns_once_and_deletes_nothing() {
    let mut w = World::new(Tier::Shared);
    w.publish_via_service(50);
    w.set_tier(Tier::Dedicated);
    drive(
        &mut w,
        50,
        10,
        |w| {
            if w.dedicated.exists {
                w.dedicated.ready = true;
            }
        },
        |w| w.phase() == DrainingSource,
    );
    assert_eq!(w.phase(), DrainingSource);
    // Nobody consumes for two hours (the timeout is one hour).
    let plans = drive(&mut w, 72, 100, |_| {}, |_| false);
    let warnings: Vec<_> = plans
        .iter()
        .flat_map(|p| &p.events)
        .filter(|e| e.reason == conditions::events::DRAIN_TIMED_OUT)
        .collect();
    assert_eq!(warnings.len(), 1, "exactly one Warning");
    assert_eq!(warnings[0].type_, EventType::Warning);
    assert!(
        warnings[0].note.contains("50 messages remain"),
        "{}",
        warnings[0].note
    );
    let last = plans.last().unwrap();
    let c = last.condition(conditions::DRAIN_TIMED_OUT).unwrap();
    assert_eq!(c.status, "True");
    let first_true = plans
        .iter()
        .find_map(|p| {
            p.condition(conditions::DRAIN_TIMED_OUT)
                .filter(|c| c.status == "True")
        })
        .unwrap();
    assert_eq!(c.last_transition_time, first_true.last_transition_time);
    assert!(!any_step(&plans, Step::is_destructive), "nothing deleted");
    assert_eq!(w.phase(), DrainingSource);
    assert_eq!(w.shared.tenant.as_ref().unwrap().messages, 50);
    // Consumers return: the drain completes and the condition clears.
    let plans = drive(
        &mut w,
        100,
        10,
        |w| {
            w.consume(ClusterKind::Shared, 10);
        },
        stable_on(Tier::Dedicated),
    );
    assert_eq!(w.phase(), Stable);
    let c = plans
        .last()
        .unwrap()
        .condition(conditions::DRAIN_TIMED_OUT)
        .unwrap();
    assert_eq!(c.status, "False");
    assert!(w.violations.is_empty() && w.balance_ok());
}

#[test]
fn flip_back_after_the_cutover_finishes_first_then_converts_back() {
    let mut w = World::new(Tier::Shared);
    w.publish_via_service(5);
    w.set_tier(Tier::Dedicated);
    let ready = |w: &mut World| {
        if w.dedicated.exists {
            w.dedicated.ready = true;
        }
        w.consume(ClusterKind::Shared, 1);
    };
    drive(&mut w, 50, 10, ready, |w| w.phase() == SingleWriteDualRead);
    w.set_tier(Tier::Shared);
    let p = w.reconcile();
    assert_ne!(
        p.phase, Aborting,
        "past the cutover a flip back never aborts"
    );
    let m = p.status.migration.as_ref().unwrap();
    assert!(m.reverse_requested);
    assert_eq!(m.to, Tier::Dedicated);
    assert!(
        p.events
            .iter()
            .any(|e| e.reason == conditions::events::REVERSE_QUEUED)
    );
    assert_eq!(
        p.condition(conditions::MIGRATING).unwrap().reason,
        tiermq_crd::conditions::reasons::REVERSE_QUEUED
    );
    // The upgrade completes, then the downgrade runs.
    drive(&mut w, 300, 10, ready, stable_on(Tier::Shared));
    assert_eq!(
        w.phases,
        [
            Stable,
            PreparingDestination,
            DualWriteDualRead,
            SingleWriteDualRead,
            DrainingSource,
            DestinationOnly,
            Completed,
            Stable,
            PreparingDestination,
            DualWriteDualRead,
            SingleWriteDualRead,
            DrainingSource,
            DestinationOnly,
            Completed,
            Stable,
        ]
    );
    let outcomes: Vec<_> = w
        .status
        .history
        .iter()
        .map(|h| (h.from, h.to, h.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            (Tier::Shared, Tier::Dedicated, MigrationOutcome::Completed),
            (Tier::Dedicated, Tier::Shared, MigrationOutcome::Completed),
        ]
    );
    assert!(w.violations.is_empty() && w.balance_ok());
    assert!(!w.dedicated.exists);
}

#[test]
fn a_flip_while_not_in_service_is_held_and_proceeds_once_in_service() {
    let mut w = World::new(Tier::Shared);
    w.shared.ready = false;
    w.set_tier(Tier::Dedicated);
    let p = w.reconcile();
    assert_eq!(p.phase, Blocked);
    let c = p.condition(conditions::CONVERSION_BLOCKED).unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("True", conditions::reasons::NOT_IN_SERVICE)
    );
    assert!(c.message.contains("0/1 replicas ready"), "{}", c.message);
    assert!(!w.dedicated.exists, "nothing created while held");
    assert!(
        p.requeue_after < std::time::Duration::from_secs(1),
        "transition: look again at once"
    );
    let p = w.reconcile();
    assert!(p.events.is_empty(), "held: no repeated Event");
    assert_eq!(p.requeue_after.as_secs(), 30);
    w.shared.ready = true;
    let p = w.reconcile();
    assert_eq!(p.phase, PreparingDestination);
    assert_eq!(
        p.condition(conditions::CONVERSION_BLOCKED).unwrap().status,
        "False"
    );
}

#[test]
fn a_downgrade_onto_a_full_shared_cluster_is_held_with_its_own_reason() {
    let mut w = World::new(Tier::Dedicated);
    w.shared.full = true;
    w.set_tier(Tier::Shared);
    let p = w.reconcile();
    assert_eq!(p.phase, Blocked);
    assert_eq!(
        p.condition(conditions::CONVERSION_BLOCKED).unwrap().reason,
        conditions::reasons::NO_CAPACITY
    );
    // The user withdraws the flip: back to Stable, nothing happened.
    w.set_tier(Tier::Dedicated);
    let p = w.reconcile();
    assert_eq!(p.phase, Stable);
    assert!(
        p.events
            .iter()
            .any(|e| e.reason == conditions::events::CONVERSION_WITHDRAWN)
    );
    assert!(w.shared.tenant.is_none());
}

#[test]
fn stale_statistics_never_finish_a_drain() {
    let mut w = World::new(Tier::Shared);
    w.publish_via_service(3);
    w.set_tier(Tier::Dedicated);
    drive(
        &mut w,
        50,
        10,
        |w| {
            if w.dedicated.exists {
                w.dedicated.ready = true;
            }
        },
        |w| w.phase() == DrainingSource,
    );
    // An empty sample from before the publishes, shown over and over.
    w.shared.samples.insert(0, (t0(), 0, 0));
    w.shared.shown = Some(0);
    for _ in 0..50 {
        w.tick(30);
        let p = w.reconcile();
        assert_eq!(p.phase, DrainingSource);
        assert_eq!(p.status.migration.as_ref().unwrap().empty_samples, 0);
    }
    // One fresh empty sample is not enough either.
    w.consume(ClusterKind::Shared, 3);
    w.tick(5);
    w.sample(ClusterKind::Shared);
    assert_eq!(w.reconcile().phase, DrainingSource);
    w.tick(5);
    w.sample(ClusterKind::Shared);
    assert_eq!(w.reconcile().phase, DestinationOnly);
    assert!(w.violations.is_empty());
}

#[test]
fn a_crash_after_any_step_of_either_conversion_replays_safely() {
    for start in [Tier::Shared, Tier::Dedicated] {
        for crash_at in 0..8 {
            let mut w = World::new(start);
            w.publish_via_service(30);
            w.set_tier(other(start));
            let mut rounds = 0;
            while !(w.phase() == Stable && w.status.tier == Some(other(start))) && rounds < 300 {
                rounds += 1;
                if w.dedicated.exists {
                    w.dedicated.ready = true;
                }
                w.publish_via_service(2);
                for k in BOTH {
                    w.consume(k, 4);
                }
                w.tick(10);
                for k in BOTH {
                    w.sample_lagging(k);
                }
                // Every pass first crashes after `crash_at` steps, then runs again in full.
                w.reconcile_with(Some(crash_at));
                w.reconcile();
            }
            assert_eq!(
                w.phase(),
                Stable,
                "{start:?} crash at {crash_at}: {:?}",
                w.phases
            );
            assert!(w.violations.is_empty(), "{:?}", w.violations);
            assert!(w.balance_ok());
            assert_eq!(
                w.phases, ALL_PHASES_IN_ORDER,
                "{start:?} crash at {crash_at}"
            );
        }
    }
}

#[test]
fn deleting_the_instance_mid_migration_cleans_up_both_sides() {
    for stop_in in [
        PreparingDestination,
        DualWriteDualRead,
        SingleWriteDualRead,
        DrainingSource,
        DestinationOnly,
        Aborting,
    ] {
        for start in [Tier::Shared, Tier::Dedicated] {
            let mut w = World::new(start);
            w.publish_via_service(10);
            w.set_tier(other(start));
            let flip_back = stop_in == Aborting;
            drive(
                &mut w,
                100,
                10,
                |w| {
                    if w.dedicated.exists {
                        w.dedicated.ready = true;
                    }
                    w.consume(start.cluster_kind(), 2);
                    if flip_back && w.phase() == DualWriteDualRead {
                        w.publish(other(start).cluster_kind(), 4);
                        w.set_tier(start);
                    }
                },
                |w| w.phase() == stop_in,
            );
            assert_eq!(w.phase(), stop_in, "{start:?}");
            w.deletion = true;
            let p = w.reconcile();
            assert_eq!(p.phase, stop_in, "deletion leaves the phase as recorded");
            assert_eq!(p.steps.last(), Some(&Step::RemoveFinalizer));
            assert!(!w.finalizer, "{start:?} {stop_in:?}: {:?}", step_names(&p));
            assert!(
                w.shared.tenant.is_none(),
                "{start:?} {stop_in:?}: shared tenant left"
            );
            assert!(
                !w.dedicated.exists,
                "{start:?} {stop_in:?}: dedicated cluster left"
            );
            assert_eq!(p.status.phase, Some(tiermq_crd::InstancePhase::Deleting));
        }
    }
}

#[test]
fn steady_passes_change_nothing_and_emit_nothing() {
    let mut w = World::new(Tier::Shared);
    let first = w.reconcile();
    w.tick(300);
    let o = w.observe();
    let a = plan(&o, w.now);
    let b = plan(&o, w.now);
    assert_eq!(a, b, "same input, same plan");
    assert!(a.events.is_empty());
    assert_eq!(a.phase, Stable);
    assert_eq!(a.requeue_after.as_secs(), 300);
    assert_eq!(
        a.status, first.status,
        "the recorded status is unchanged, so the executor writes nothing"
    );
    let ready = a.condition(conditions::READY).unwrap();
    assert_eq!(ready.status, "True");
    assert_eq!(
        ready.last_transition_time,
        first
            .condition(conditions::READY)
            .unwrap()
            .last_transition_time
    );
}

#[test]
fn a_new_instance_adopts_its_tier_without_a_conversion() {
    for tier in [Tier::Shared, Tier::Dedicated] {
        let mut w = World::new(tier);
        w.status = Default::default();
        w.shared.tenant = None;
        w.dedicated = {
            let mut d = w.dedicated.clone();
            d.exists = false;
            d.tenant = None;
            d
        };
        let p = w.reconcile();
        assert_eq!(p.phase, Stable);
        assert_eq!(p.status.tier, Some(tier));
        assert!(p.status.migration.is_none());
        assert_eq!(
            p.status.phase,
            Some(tiermq_crd::InstancePhase::Provisioning)
        );
        let mut passes = 1;
        while w.status.phase != Some(tiermq_crd::InstancePhase::Ready) && passes < 5 {
            if w.dedicated.exists {
                w.dedicated.ready = true;
            }
            let p = w.reconcile();
            assert_eq!((p.phase, p.status.tier), (Stable, Some(tier)));
            passes += 1;
        }
        assert_eq!(w.status.phase, Some(tiermq_crd::InstancePhase::Ready));
        assert!(w.cluster(tier.cluster_kind()).tenant.is_some());
        assert!(w.cluster(other(tier).cluster_kind()).tenant.is_none());
        assert_eq!(w.phases, [Stable], "no conversion");
    }
}

#[test]
fn queues_declared_on_the_source_before_the_cutover_reach_the_destination_before_it_takes_writes() {
    let mut w = World::new(Tier::Shared);
    w.set_tier(Tier::Dedicated);
    drive(
        &mut w,
        50,
        10,
        |w| {
            if w.dedicated.exists {
                w.dedicated.ready = true;
            }
        },
        |w| w.phase() == DualWriteDualRead,
    );
    // A client declares a queue on the source while it still serves...
    let declare = |w: &mut World, name: &str| {
        w.shared
            .tenant
            .as_mut()
            .unwrap()
            .topology
            .insert(name.into());
    };
    declare(&mut w, "queue/during-dual");
    // The cutover waits for the copy; the pass that decides it only records it (write-ahead).
    assert_eq!(w.reconcile().phase, DualWriteDualRead);
    assert_eq!(w.reconcile().phase, SingleWriteDualRead);
    assert_eq!(w.routes, vec![shared_ref()], "recorded, not yet performed");
    // ...and another right before the source is frozen, after the planner last looked.
    declare(&mut w, "queue/just-before-freeze");
    for _ in 0..20 {
        w.tick(1);
        w.reconcile();
        let d = w.dedicated.tenant.as_ref().unwrap();
        if d.access.writable() {
            let s = w.shared.tenant.as_ref().unwrap();
            assert!(
                s.topology.is_subset(&d.topology),
                "the destination takes writes without {:?}",
                s.topology.difference(&d.topology).collect::<Vec<_>>()
            );
            break;
        }
    }
    assert!(w.dedicated.tenant.as_ref().unwrap().access.writable());
    assert!(w.violations.is_empty(), "{:?}", w.violations);
}

#[test]
fn a_changed_shared_cluster_ref_does_not_move_a_shared_instance() {
    let mut o = stable_observed(Tier::Shared);
    // The user points spec.shared.clusterRef elsewhere and the observer followed the spec.
    let mut elsewhere = shared_ref();
    elsewhere.name = "shared-b".into();
    o.shared = up(elsewhere.clone(), None);
    let p = plan(&o, t0());
    assert_eq!(p.phase, Stable);
    assert_eq!(
        p.steps,
        vec![Step::RouteService {
            to: vec![shared_ref()]
        }],
        "the instance stays on the cluster that serves it; nothing happens on the other"
    );
    assert_eq!(p.status.serving, Some(shared_ref()));
}

#[test]
fn failed_shovels_are_reported_and_re_created() {
    let mut w = World::new(Tier::Shared);
    w.spec.migration.drain_strategy = DrainStrategy::Shovel;
    w.publish_via_service(5);
    w.set_tier(Tier::Dedicated);
    drive(
        &mut w,
        50,
        10,
        |w| {
            if w.dedicated.exists {
                w.dedicated.ready = true;
            }
        },
        |w| w.phase() == DrainingSource,
    );
    let mut o = w.observe();
    let t = o.shared.broker.as_mut().unwrap().tenant.as_mut().unwrap();
    t.shovels.failed = 2;
    let p = plan(&o, w.now);
    assert_eq!(p.phase, DrainingSource);
    assert!(p.steps.contains(&Step::StartShovels {
        from: shared_ref(),
        to: dedicated_ref()
    }));
    let m = p.condition(conditions::MIGRATING).unwrap();
    assert!(m.message.contains("2 shovels terminated"), "{}", m.message);
}

#[test]
fn before_the_cutover_the_destination_takes_no_message_so_an_abort_needs_no_drain_back() {
    let mut w = World::new(Tier::Shared);
    w.set_tier(Tier::Dedicated);
    drive(
        &mut w,
        50,
        10,
        |w| {
            if w.dedicated.exists {
                w.dedicated.ready = true;
            }
        },
        |w| w.phase() == DualWriteDualRead,
    );
    assert_eq!(
        w.dedicated.tenant.as_ref().unwrap().access,
        Access::ReadOnly,
        "read-only until the cutover"
    );
    assert!(!w.publish(ClusterKind::Dedicated, 9));
    assert!(
        w.publish_via_service(9),
        "the Service still routes to the source"
    );
    w.set_tier(Tier::Shared);
    let plans = drive(&mut w, 50, 10, |_| {}, stable_on(Tier::Shared));
    assert!(
        plans.len() <= 3,
        "the abort waits for nothing: {} passes",
        plans.len()
    );
    assert_eq!(w.shared.tenant.as_ref().unwrap().messages, 9);
    assert!(!w.dedicated.exists);
    assert!(w.violations.is_empty() && w.balance_ok());
}

/// A flip from Stable shared with one extra queue on the tenant; the plan's phase and the
/// `ConversionBlocked` condition's (reason, message).
fn flip_with_queue(
    q: tiermq_operator::controller::plan::QueueMessages,
    allow: bool,
) -> (MigrationPhase, String, String) {
    let mut o = stable_observed(Tier::Shared);
    o.spec.tier = Tier::Dedicated;
    o.spec.migration.allow_limit_drops = allow;
    let t = o.shared.broker.as_mut().unwrap().tenant.as_mut().unwrap();
    t.backlog.as_mut().unwrap().queues.push(q);
    let p = plan(&o, t0());
    let c = p.condition(conditions::CONVERSION_BLOCKED).cloned();
    let (reason, message) = c.map(|c| (c.reason, c.message)).unwrap_or_default();
    (p.phase, reason, message)
}

#[test]
fn limits_that_could_drop_messages_hold_the_flip_until_the_tenant_accepts() {
    use tiermq_operator::controller::plan::QueueMessages;
    let bounded = QueueMessages {
        queue: "bounded".into(),
        drops_oldest: true,
        ..Default::default()
    };
    let (phase, reason, msg) = flip_with_queue(bounded.clone(), false);
    assert_eq!(phase, Blocked);
    assert_eq!(reason, conditions::reasons::QUEUE_CANNOT_MOVE);
    assert!(
        msg.contains("\"bounded\"") && msg.contains("drop-head") && msg.contains("allowLimitDrops"),
        "{msg}"
    );
    assert_eq!(
        flip_with_queue(bounded.clone(), true).0,
        PreparingDestination
    );

    let short_ttl = QueueMessages {
        queue: "short-ttl".into(),
        ttl_ms: Some(10_000),
        ..Default::default()
    };
    let (phase, _, msg) = flip_with_queue(short_ttl.clone(), false);
    assert_eq!(phase, Blocked);
    assert!(
        msg.contains("\"short-ttl\"") && msg.contains("10000 ms"),
        "{msg}"
    );
    assert_eq!(
        flip_with_queue(short_ttl.clone(), true).0,
        PreparingDestination
    );

    // What moves without consent: an expiry that dead-letters, a long TTL, and a subscriber's
    // own queue (it moves with its subscriber, before the destination takes writes).
    for q in [
        QueueMessages {
            dead_letters: true,
            ..short_ttl.clone()
        },
        QueueMessages {
            ttl_ms: Some(120_000),
            ..short_ttl.clone()
        },
        QueueMessages {
            subscriber: true,
            ..bounded.clone()
        },
        QueueMessages {
            subscriber: true,
            ..short_ttl
        },
    ] {
        let (phase, _, msg) = flip_with_queue(q.clone(), false);
        assert_eq!(phase, PreparingDestination, "{q:?}: {msg}");
    }
}

/// A tenant moving onto RabbitMQ 4.x: what the destination does not take as it is is said in a
/// Warning Event when the conversion starts (mirroring policy keys dropped, deprecated transient
/// queues), and a transient queue onto a 4.x cluster that does not permit them holds the flip.
#[test]
fn moves_onto_rabbitmq_4_say_what_changes_and_hold_what_the_destination_refuses() {
    use tiermq_operator::controller::plan::QueueMessages;
    let with_legacy = |o: &mut tiermq_operator::controller::plan::Observed, kind: ClusterKind| {
        let c = match kind {
            ClusterKind::Shared => &mut o.shared,
            ClusterKind::Dedicated => &mut o.dedicated,
        };
        let t = c.broker.as_mut().unwrap().tenant.as_mut().unwrap();
        t.mirroring_policies = vec!["ha-all (ha-mode, ha-sync-mode)".into()];
        t.backlog.as_mut().unwrap().queues.push(QueueMessages {
            queue: "scratch".into(),
            transient: true,
            ..Default::default()
        });
    };
    let translated = |p: &Plan| {
        p.events
            .iter()
            .find(|e| e.reason == conditions::events::TRANSLATED_FOR_DESTINATION)
            .map(|e| (e.type_, e.note.clone()))
    };

    // Upgrade from a 3.10 SharedCluster onto a dedicated 4.0 cluster not created yet: the image
    // in spec.dedicated says what it will run.
    let mut o = stable_observed(Tier::Shared);
    o.spec.tier = Tier::Dedicated;
    o.spec.dedicated.image = "rabbitmq:4.0-management".into();
    with_legacy(&mut o, ClusterKind::Shared);
    let p = plan(&o, t0());
    assert_eq!(p.phase, PreparingDestination);
    let (kind, note) = translated(&p).expect("a Warning Event says what changes");
    assert_eq!(kind, EventType::Warning);
    assert!(
        note.contains("RabbitMQ 4.x")
            && note.contains("ha-all (ha-mode, ha-sync-mode)")
            && note.contains("\"scratch\""),
        "{note}"
    );
    // Onto 3.10 nothing changes and nothing is said.
    o.spec.dedicated.image = "rabbitmq:3.10-management".into();
    let p = plan(&o, t0());
    assert_eq!(p.phase, PreparingDestination);
    assert_eq!(translated(&p), None);

    // Downgrade from a dedicated 3.10 cluster onto a 4.0 SharedCluster that does not permit
    // transient non-exclusive queues: held, naming the queue and the way out.
    let mut o = stable_observed(Tier::Dedicated);
    o.spec.tier = Tier::Shared;
    o.shared.rabbitmq_major = Some(4);
    o.shared.refuses_transient_queues = true;
    with_legacy(&mut o, ClusterKind::Dedicated);
    let p = plan(&o, t0());
    assert_eq!(p.phase, Blocked);
    let c = p.condition(conditions::CONVERSION_BLOCKED).unwrap();
    assert_eq!(c.reason, conditions::reasons::QUEUE_CANNOT_MOVE);
    assert!(
        c.message.contains("\"scratch\"")
            && c.message.contains("transient_nonexcl_queues = false")
            && c.message.contains("durable"),
        "{}",
        c.message
    );
    // A 4.0 SharedCluster that permits them (4.0's default) takes the move, and says it.
    o.shared.refuses_transient_queues = false;
    let p = plan(&o, t0());
    assert_eq!(p.phase, PreparingDestination);
    assert!(translated(&p).unwrap().1.contains("deprecates"));
}

/// `(status, reason)` of the planned condition `type_`, which must be at the plan's generation.
fn cond_of(p: &Plan, type_: &str, generation: i64) -> (String, String) {
    let c = p
        .condition(type_)
        .unwrap_or_else(|| panic!("{type_} planned"));
    assert_eq!(c.observed_generation, Some(generation), "{type_}");
    (c.status.clone(), c.reason.clone())
}

fn is(status: &str, reason: &str) -> (String, String) {
    (status.to_string(), reason.to_string())
}

#[test]
fn gitops_conditions_read_reconciling_during_a_conversion_and_tier_served_after_it() {
    use conditions::reasons;
    let mut w = World::new(Tier::Shared);
    let p = w.reconcile();
    assert_eq!(
        cond_of(&p, conditions::RECONCILING, 1),
        is("False", reasons::UP_TO_DATE)
    );
    assert_eq!(
        cond_of(&p, conditions::TIER_SERVED, 1),
        is("True", reasons::SPEC_TIER_SERVED)
    );
    w.publish_via_service(20);
    w.set_tier(Tier::Dedicated);
    let plans = drive(
        &mut w,
        200,
        10,
        |w| {
            if w.dedicated.exists {
                w.dedicated.ready = true;
            }
            w.consume(ClusterKind::Shared, 5);
        },
        stable_on(Tier::Dedicated),
    );
    let g = w.generation;
    let (last, during) = plans.split_last().unwrap();
    assert!(!during.is_empty());
    for p in during {
        assert_ne!(p.phase, Stable);
        assert_eq!(p.status.observed_generation, Some(g));
        let (on, _) = cond_of(p, conditions::RECONCILING, g);
        assert_eq!(on, "True", "{:?} reads as reconciling", p.phase);
        assert_eq!(
            cond_of(p, conditions::TIER_SERVED, g).0,
            "False",
            "{:?}",
            p.phase
        );
        assert_eq!(
            cond_of(p, conditions::STALLED, g),
            is("False", reasons::NOT_STALLED)
        );
    }
    assert_eq!(
        cond_of(&plans[0], conditions::RECONCILING, g),
        is("True", reasons::CONVERTING)
    );
    // Done: kstatus "Current" (generation observed, Ready, not reconciling, not stalled) and
    // TierServed True for `kubectl wait`.
    assert_eq!(last.phase, Stable);
    assert_eq!(last.status.observed_generation, Some(g));
    assert_eq!(cond_of(last, conditions::READY, g).0, "True");
    assert_eq!(
        cond_of(last, conditions::RECONCILING, g),
        is("False", reasons::UP_TO_DATE)
    );
    assert_eq!(
        cond_of(last, conditions::STALLED, g),
        is("False", reasons::NOT_STALLED)
    );
    assert_eq!(
        cond_of(last, conditions::TIER_SERVED, g),
        is("True", reasons::SPEC_TIER_SERVED)
    );
    assert_eq!(
        cond_of(last, conditions::PAUSED, g),
        is("False", reasons::NOT_PAUSED)
    );
}

#[test]
fn a_held_flip_reads_as_reconciling_and_a_timed_out_drain_as_stalled() {
    use conditions::reasons;
    let mut w = World::new(Tier::Shared);
    w.shared.ready = false;
    w.set_tier(Tier::Dedicated);
    let p = w.reconcile();
    assert_eq!(p.phase, Blocked);
    assert_eq!(
        cond_of(&p, conditions::RECONCILING, 2),
        is("True", reasons::NOT_IN_SERVICE)
    );
    assert_eq!(
        cond_of(&p, conditions::TIER_SERVED, 2),
        is("False", reasons::NOT_IN_SERVICE)
    );
    assert_eq!(cond_of(&p, conditions::STALLED, 2).0, "False");
    w.shared.ready = true;
    w.publish_via_service(50);
    drive(
        &mut w,
        50,
        10,
        |w| {
            if w.dedicated.exists {
                w.dedicated.ready = true;
            }
        },
        |w| w.phase() == DrainingSource,
    );
    // Nobody consumes for two hours (the timeout is one hour): stalled, not reconciling.
    let plans = drive(&mut w, 72, 100, |_| {}, |_| false);
    let p = plans.last().unwrap();
    assert_eq!(p.phase, DrainingSource);
    assert_eq!(
        cond_of(p, conditions::STALLED, 2),
        is("True", reasons::BACKLOG_REMAINS)
    );
    assert_eq!(
        cond_of(p, conditions::RECONCILING, 2),
        is("False", reasons::BACKLOG_REMAINS)
    );
    assert_eq!(cond_of(p, conditions::TIER_SERVED, 2).0, "False");
    // Consumers return: the drain ends and the stall clears.
    let plans = drive(
        &mut w,
        100,
        10,
        |w| {
            w.consume(ClusterKind::Shared, 10);
        },
        stable_on(Tier::Dedicated),
    );
    let p = plans.last().unwrap();
    assert_eq!(
        cond_of(p, conditions::STALLED, 2),
        is("False", reasons::NOT_STALLED)
    );
    assert_eq!(cond_of(p, conditions::TIER_SERVED, 2).0, "True");
}

#[test]
fn the_first_pass_after_a_pause_clears_it_and_announces_the_resume() {
    use tiermq_operator::controller::conditions::update;
    let mut w = World::new(Tier::Shared);
    update(
        &mut w.status.conditions,
        conditions::PAUSED,
        true,
        conditions::reasons::PAUSED_BY_ANNOTATION,
        "paused".into(),
        1,
        w.now,
    );
    let p = w.reconcile();
    assert_eq!(
        events(std::slice::from_ref(&p)),
        [conditions::events::RESUMED]
    );
    assert_eq!(
        cond_of(&p, conditions::PAUSED, 1),
        is("False", conditions::reasons::NOT_PAUSED)
    );
    let p = w.reconcile();
    assert!(p.events.is_empty(), "the resume is announced once");
}
