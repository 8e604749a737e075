//! R-auto: auto-tiering decisions with an injected clock, and one auto-started conversion told
//! against the simulated world.

use std::time::Duration as StdDuration;

use chrono::Duration;
use tiermq_crd::conditions::events;
use tiermq_crd::{
    AutoTieringSpec, AutoTieringStatus, ClusterKind, MigrationOutcome, MigrationPhase,
    MigrationRecord, Tier, TierThresholds,
};
use tiermq_operator::controller::plan::{Observed, Plan, Step, plan, to_time};

use crate::common::*;

fn thresholds(publish_rate: Option<u32>, connections: Option<u32>, secs: i64) -> TierThresholds {
    TierThresholds {
        publish_rate,
        connections,
        backlog: None,
        for_seconds: secs,
    }
}

fn auto(
    upgrade: TierThresholds,
    downgrade: Option<TierThresholds>,
    cooldown: i64,
) -> AutoTieringSpec {
    AutoTieringSpec {
        upgrade,
        downgrade,
        cooldown_seconds: cooldown,
    }
}

/// A stable instance on `tier` whose tenant shows `rate` msg/s and `connections` connections.
fn loaded(tier: Tier, a: AutoTieringSpec, rate: f64, connections: u32) -> Observed {
    let mut o = stable_observed(tier);
    o.spec.auto_tiering = Some(a);
    let c = match tier {
        Tier::Shared => &mut o.shared,
        Tier::Dedicated => &mut o.dedicated,
    };
    let t = c.broker.as_mut().unwrap().tenant.as_mut().unwrap();
    t.connections = connections;
    t.backlog.as_mut().unwrap().publish_rate = rate;
    o
}

/// The observation after the plan's status was recorded.
fn recorded(mut o: Observed, p: &Plan) -> Observed {
    o.status = p.status.clone();
    o
}

fn sets_tier(p: &Plan) -> Option<Tier> {
    p.steps.iter().find_map(|s| match s {
        Step::SetTier { tier } => Some(*tier),
        _ => None,
    })
}

#[test]
fn a_sustained_publish_rate_upgrades_once_the_time_is_up_and_not_before() {
    let a = auto(thresholds(Some(100), None, 60), None, 3600);
    let o = loaded(Tier::Shared, a, 150.0, 2);
    let p0 = plan(&o, t0());
    assert_eq!(sets_tier(&p0), None);
    let s = p0.status.auto_tiering.clone().unwrap();
    assert_eq!(s.crossed_since, Some(to_time(t0())));
    assert_eq!(s.crossed.as_deref(), Some("publishRate >= 100/s"));
    // Sampled a fifth of the sustain time apart, not at the idle 300 s.
    assert_eq!(p0.requeue_after, StdDuration::from_secs(12));

    let o = recorded(o, &p0);
    let p1 = plan(&o, t0() + Duration::seconds(59));
    assert_eq!(sets_tier(&p1), None);
    assert_eq!(
        p1.status, o.status,
        "a crossing that goes on is not rewritten"
    );
    assert_eq!(p1.requeue_after, StdDuration::from_secs(1));

    let p2 = plan(&o, t0() + Duration::seconds(60));
    assert_eq!(sets_tier(&p2), Some(Tier::Dedicated));
    assert_eq!(
        p2.steps.last(),
        Some(&Step::SetTier {
            tier: Tier::Dedicated
        })
    );
    let e = p2
        .events
        .iter()
        .find(|e| e.reason == events::AUTO_TIERED)
        .expect("an AutoTiered Event");
    assert!(e.note.contains("150.0 msg/s"), "{}", e.note);
    assert!(e.note.contains("for 60s"), "{}", e.note);
    let s = p2.status.auto_tiering.clone().unwrap();
    assert_eq!(s.crossed_since, None);
    assert_eq!(s.last_change, Some(to_time(t0() + Duration::seconds(60))));
    // The flip itself is the executor's patch of spec.tier; the status keeps serving Shared.
    assert_eq!(p2.status.tier, Some(Tier::Shared));
    assert_eq!(p2.phase, MigrationPhase::Stable);
}

#[test]
fn one_sample_below_the_threshold_starts_the_count_again() {
    let a = auto(thresholds(Some(100), Some(50), 60), None, 0);
    let o = loaded(Tier::Shared, a.clone(), 150.0, 2);
    let o = recorded(o.clone(), &plan(&o, t0()));
    let dip = loaded(Tier::Shared, a.clone(), 20.0, 2);
    let dip = Observed {
        status: o.status.clone(),
        ..dip
    };
    let p = plan(&dip, t0() + Duration::seconds(30));
    assert_eq!(p.status.auto_tiering.as_ref().unwrap().crossed_since, None);
    let again = Observed {
        status: p.status.clone(),
        ..loaded(Tier::Shared, a, 20.0, 60)
    };
    let p = plan(&again, t0() + Duration::seconds(61));
    assert_eq!(sets_tier(&p), None);
    let s = p.status.auto_tiering.unwrap();
    assert_eq!(s.crossed_since, Some(to_time(t0() + Duration::seconds(61))));
    assert_eq!(s.crossed.as_deref(), Some("connections >= 50"));
}

#[test]
fn a_broker_that_cannot_be_sampled_neither_starts_nor_ends_a_crossing() {
    let a = auto(thresholds(Some(100), None, 60), None, 0);
    let o = loaded(Tier::Shared, a, 150.0, 2);
    let mut o = recorded(o.clone(), &plan(&o, t0()));
    // Statistics incomplete: the tenant is there but the sample is missing.
    o.shared
        .broker
        .as_mut()
        .unwrap()
        .tenant
        .as_mut()
        .unwrap()
        .backlog = None;
    let p = plan(&o, t0() + Duration::seconds(90));
    assert_eq!(sets_tier(&p), None);
    assert_eq!(p.status.auto_tiering, o.status.auto_tiering);
}

#[test]
fn without_downgrade_thresholds_a_dedicated_instance_is_never_downgraded() {
    let a = auto(thresholds(Some(100), None, 10), None, 0);
    let o = loaded(Tier::Dedicated, a, 0.0, 0);
    for secs in [0, 3600, 86_400] {
        let p = plan(&o, t0() + Duration::seconds(secs));
        assert_eq!(sets_tier(&p), None);
        assert!(p.events.is_empty());
    }
}

#[test]
fn a_downgrade_needs_every_threshold_undercut() {
    let low = thresholds(Some(10), Some(5), 30);
    let a = auto(thresholds(Some(100), None, 10), Some(low), 0);
    // Publishing has stopped, but 8 connections are still open: not a downgrade.
    let o = loaded(Tier::Dedicated, a.clone(), 1.0, 8);
    let p = plan(&o, t0());
    assert_eq!(p.status.auto_tiering.as_ref().unwrap().crossed_since, None);
    let o = loaded(Tier::Dedicated, a, 1.0, 2);
    let o = recorded(o.clone(), &plan(&o, t0()));
    assert_eq!(
        o.status.auto_tiering.as_ref().unwrap().crossed.as_deref(),
        Some("publishRate < 10/s, connections < 5")
    );
    let p = plan(&o, t0() + Duration::seconds(30));
    assert_eq!(sets_tier(&p), Some(Tier::Shared));
}

#[test]
fn the_cooldown_after_the_last_conversion_holds_the_change() {
    let a = auto(thresholds(Some(100), None, 10), None, 600);
    let mut o = loaded(Tier::Shared, a, 500.0, 2);
    // A conversion back to Shared finished 100 s before t0.
    o.status.history.push(MigrationRecord {
        from: Tier::Dedicated,
        to: Tier::Shared,
        started: to_time(t0() - Duration::seconds(400)),
        finished: to_time(t0() - Duration::seconds(100)),
        outcome: MigrationOutcome::Completed,
        phase_seconds: Vec::new(),
    });
    let o = recorded(o.clone(), &plan(&o, t0()));
    let p = plan(&o, t0() + Duration::seconds(60));
    assert_eq!(sets_tier(&p), None, "sustained, but still in the cooldown");
    assert!(p.requeue_after <= StdDuration::from_secs(5));
    let p = plan(&o, t0() + Duration::seconds(500));
    assert_eq!(sets_tier(&p), Some(Tier::Dedicated));
}

#[test]
fn a_crossing_recorded_before_the_last_conversion_ended_does_not_count() {
    let a = auto(thresholds(Some(100), None, 60), None, 0);
    let mut o = loaded(Tier::Shared, a, 500.0, 2);
    o.status.auto_tiering = Some(AutoTieringStatus {
        crossed_since: Some(to_time(t0() - Duration::seconds(3600))),
        crossed: Some("publishRate >= 100/s".into()),
        ..Default::default()
    });
    o.status.history.push(MigrationRecord {
        from: Tier::Dedicated,
        to: Tier::Shared,
        started: to_time(t0() - Duration::seconds(60)),
        finished: to_time(t0() - Duration::seconds(10)),
        outcome: MigrationOutcome::Completed,
        phase_seconds: Vec::new(),
    });
    let p = plan(&o, t0());
    assert_eq!(sets_tier(&p), None);
    assert_eq!(
        p.status.auto_tiering.unwrap().crossed_since,
        Some(to_time(t0()))
    );
}

#[test]
fn an_idle_auto_tiered_instance_writes_nothing_and_without_the_spec_nothing_changes() {
    let a = auto(thresholds(Some(100), None, 60), None, 0);
    let o = loaded(Tier::Shared, a, 3.0, 2);
    let o = recorded(o.clone(), &plan(&o, t0()));
    for (i, rate) in [0.0, 7.5, 99.9].into_iter().enumerate() {
        let mut next = o.clone();
        next.shared
            .broker
            .as_mut()
            .unwrap()
            .tenant
            .as_mut()
            .unwrap()
            .backlog
            .as_mut()
            .unwrap()
            .publish_rate = rate;
        let p = plan(&next, t0() + Duration::seconds(12 * (i as i64 + 1)));
        assert_eq!(p.status, o.status, "sample {i}: idle passes write nothing");
        assert!(p.steps.iter().all(|s| !matches!(s, Step::SetTier { .. })));
    }
    let plain = stable_observed(Tier::Shared);
    let p = plan(&plain, t0());
    assert_eq!(p.status.auto_tiering, None);
    assert_eq!(p.requeue_after, StdDuration::from_secs(300));
}

#[test]
fn an_auto_started_upgrade_converts_like_a_users_flip_and_loses_nothing() {
    let mut w = World::new(Tier::Shared);
    w.spec.auto_tiering = Some(auto(thresholds(None, Some(2), 40), None, 0));
    w.publish(ClusterKind::Shared, 25);
    let mut plans = Vec::new();
    for _ in 0..40 {
        w.tick(10);
        w.sample_lagging(ClusterKind::Shared);
        w.sample_lagging(ClusterKind::Dedicated);
        plans.push(w.reconcile());
        if w.spec.tier == Tier::Dedicated {
            break;
        }
    }
    assert_eq!(
        w.spec.tier,
        Tier::Dedicated,
        "the operator flipped spec.tier"
    );
    // 2 connections >= 2 from the first sample at t0+10 s; due 40 s later.
    assert_eq!(w.now, t0() + Duration::seconds(50));
    assert!(w.settle(200), "the conversion finishes");
    assert_eq!(w.status.tier, Some(Tier::Dedicated));
    assert!(w.violations.is_empty(), "{:?}", w.violations);
    assert!(w.balance_ok());
}
