//! `--max-concurrent-conversions`: a flip while the operator's conversion slots are taken (or
//! promised to flips held before it) waits, and starts once one is free; a running conversion,
//! a withdrawal and a deletion are never held by it.

use tiermq_crd::conditions::{self, events, reasons};
use tiermq_crd::{MigrationPhase, Tier};
use tiermq_operator::controller::plan::{ConversionSlots, EventType, Plan};

use crate::common::*;

use MigrationPhase::*;

fn slots(limit: u32, running: u32, ahead: u32) -> ConversionSlots {
    ConversionSlots {
        limit: Some(limit),
        running,
        ahead,
    }
}

fn event_reasons(p: &Plan) -> Vec<(EventType, &'static str)> {
    p.events.iter().map(|e| (e.type_, e.reason)).collect()
}

#[test]
fn a_flip_waits_for_a_free_slot_behind_earlier_flips_then_starts() {
    let mut w = World::new(Tier::Shared);
    w.publish_via_service(10);
    w.conversions = slots(2, 2, 0);
    w.set_tier(Tier::Dedicated);

    let p = w.reconcile();
    assert_eq!(p.phase, Blocked);
    let (on, reason, msg) = blocked(&p);
    assert_eq!(
        (on.as_str(), reason.as_str()),
        ("True", reasons::CONVERSION_LIMIT_REACHED)
    );
    assert!(
        msg.contains("2 of at most 2 run at once") && msg.contains("it is next"),
        "{msg}"
    );
    // A wait, not a problem: one Normal Event, nothing on the destination, served as before.
    assert_eq!(
        event_reasons(&p),
        [(EventType::Normal, events::WAITING_FOR_CONVERSION_SLOT)]
    );
    assert!(!w.dedicated.exists);
    assert_eq!(
        p.condition(conditions::TIER_SERVED).unwrap().status,
        "False"
    );
    // Still held, now behind another flip: the message follows, no second Event; a slow
    // requeue (a freed slot wakes the instance).
    w.conversions = slots(2, 1, 1);
    w.tick(30);
    let p = w.reconcile();
    assert_eq!(p.phase, Blocked);
    assert!(
        blocked(&p).2.contains("1 held flip starts before it"),
        "{}",
        blocked(&p).2
    );
    assert!(p.events.is_empty(), "{:?}", p.events);
    assert_eq!(p.requeue_after.as_secs(), 30);

    // Its turn: the conversion starts and the hold is cleared.
    w.conversions = slots(2, 1, 0);
    let p = w.reconcile();
    assert_eq!(p.phase, PreparingDestination);
    assert_eq!(blocked(&p).0, "False");
    assert!(event_reasons(&p).contains(&(EventType::Normal, events::CONVERSION_STARTED)));

    // Slots full again while it runs: a running conversion is never held.
    w.conversions = slots(1, 5, 3);
    for _ in 0..300 {
        if w.dedicated.exists {
            w.dedicated.ready = true;
        }
        w.consume(tiermq_crd::ClusterKind::Shared, 5);
        w.consume(tiermq_crd::ClusterKind::Dedicated, 5);
        w.tick(5);
        for k in [
            tiermq_crd::ClusterKind::Shared,
            tiermq_crd::ClusterKind::Dedicated,
        ] {
            w.sample_lagging(k);
        }
        let p = w.reconcile();
        assert_ne!(p.phase, Blocked, "a running conversion was held");
        if w.phase() == Stable && w.status.tier == Some(Tier::Dedicated) {
            break;
        }
    }
    assert_eq!(w.status.tier, Some(Tier::Dedicated), "{:?}", w.phases);
    assert!(
        w.violations.is_empty() && w.balance_ok(),
        "{:?}",
        w.violations
    );
}

#[test]
fn a_problem_after_the_wait_warns_and_a_withdrawn_flip_is_stable() {
    let mut w = World::new(Tier::Dedicated);
    w.conversions = slots(1, 1, 0);
    w.set_tier(Tier::Shared);
    let p = w.reconcile();
    assert_eq!(blocked(&p).1, reasons::CONVERSION_LIMIT_REACHED);
    // The SharedCluster goes away while the flip waits: that is a problem, told as a Warning.
    w.shared.exists = false;
    let p = w.reconcile();
    assert_eq!(p.phase, Blocked);
    assert_eq!(blocked(&p).1, reasons::SHARED_CLUSTER_NOT_FOUND);
    assert_eq!(
        event_reasons(&p),
        [(EventType::Warning, events::CONVERSION_BLOCKED)]
    );
    // Back, and still no slot: the wait again (a Normal Event, since the reason changed).
    w.shared.exists = true;
    let p = w.reconcile();
    assert_eq!(blocked(&p).1, reasons::CONVERSION_LIMIT_REACHED);
    assert_eq!(
        event_reasons(&p),
        [(EventType::Normal, events::WAITING_FOR_CONVERSION_SLOT)]
    );
    // Withdrawn: stable on its tier, no slot needed.
    w.set_tier(Tier::Dedicated);
    let p = w.reconcile();
    assert_eq!(p.phase, Stable);
    assert_eq!(blocked(&p).0, "False");
    assert!(event_reasons(&p).contains(&(EventType::Normal, events::CONVERSION_WITHDRAWN)));
}

#[test]
fn the_limit_holds_starts_only() {
    // Unbounded (the default) and a free slot start at once; in-tier life goes on when full.
    for free in [ConversionSlots::default(), slots(3, 2, 0)] {
        let mut w = World::new(Tier::Shared);
        w.conversions = free;
        w.set_tier(Tier::Dedicated);
        assert_eq!(w.reconcile().phase, PreparingDestination);
    }
    let mut w = World::new(Tier::Shared);
    w.conversions = slots(1, 1, 0);
    let p = w.reconcile();
    assert_eq!((p.phase, blocked(&p).0.as_str()), (Stable, "False"));
    // A held flip's instance is deleted: the deletion is not held.
    w.set_tier(Tier::Dedicated);
    assert_eq!(w.reconcile().phase, Blocked);
    w.deletion = true;
    let p = w.reconcile();
    assert_ne!(blocked(&p).1, reasons::CONVERSION_LIMIT_REACHED);
    assert!(
        step_names(&p).contains(&"RemoveFinalizer"),
        "{:?}",
        step_names(&p)
    );
}
