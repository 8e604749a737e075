//! `spec.migration.window`: a flip outside the maintenance window waits for it, told as stories
//! against the simulated world with its injected clock (which starts at 2026-01-01 00:00 UTC, a
//! Thursday).

use chrono::{Duration, TimeZone, Utc};
use tiermq_crd::conditions::{self, events, reasons};
use tiermq_crd::{MaintenanceWindow, MigrationPhase, Tier, Weekday};
use tiermq_operator::controller::plan::{EventType, from_time, plan};

use crate::common::*;

use MigrationPhase::*;

fn window(days: &[Weekday], start: &str, end: &str) -> Option<MaintenanceWindow> {
    Some(MaintenanceWindow {
        days: days.to_vec(),
        start_time: start.into(),
        end_time: end.into(),
    })
}

/// Reconciles with the dedicated cluster coming up as soon as it exists and clients consuming,
/// `secs` apart, until `done` (at most 300 passes); returns the recorded phases.
fn drive(w: &mut World, secs: i64, done: impl Fn(&World) -> bool) -> Vec<MigrationPhase> {
    let mut seen = Vec::new();
    for _ in 0..300 {
        if w.dedicated.exists {
            w.dedicated.ready = true;
        }
        w.consume(tiermq_crd::ClusterKind::Shared, 5);
        w.consume(tiermq_crd::ClusterKind::Dedicated, 5);
        w.tick(secs);
        for k in [
            tiermq_crd::ClusterKind::Shared,
            tiermq_crd::ClusterKind::Dedicated,
        ] {
            w.sample_lagging(k);
        }
        seen.push(w.reconcile().phase);
        if done(w) {
            return seen;
        }
    }
    panic!("did not settle: {:?}", w.phases);
}

#[test]
fn a_flip_outside_the_window_waits_for_it_then_converts_and_is_not_cut_short_when_it_closes() {
    let mut w = World::new(Tier::Shared);
    w.publish_via_service(20);
    w.spec.migration.window = window(&[Weekday::Thu], "00:30", "00:40");
    w.set_tier(Tier::Dedicated);
    let opens = Utc.with_ymd_and_hms(2026, 1, 1, 0, 30, 0).unwrap();

    let p = w.reconcile();
    assert_eq!(p.phase, Blocked);
    let (on, reason, msg) = blocked(&p);
    assert_eq!(
        (on.as_str(), reason.as_str()),
        ("True", reasons::OUTSIDE_MAINTENANCE_WINDOW)
    );
    assert!(
        msg.contains("Thu 00:30-00:40 UTC") && msg.contains("starts at 2026-01-01T00:30:00Z"),
        "{msg}"
    );
    assert_eq!(
        p.status.next_maintenance_window.as_ref().map(from_time),
        Some(opens)
    );
    assert_eq!(p.status.phase, Some(tiermq_crd::InstancePhase::Blocked));
    // kstatus: still reconciling (it will act by itself), the tier not served yet.
    let rec = p.condition(conditions::RECONCILING).unwrap();
    assert_eq!(
        (rec.status.as_str(), rec.reason.as_str()),
        ("True", reasons::OUTSIDE_MAINTENANCE_WINDOW)
    );
    assert_eq!(
        p.condition(conditions::TIER_SERVED).unwrap().status,
        "False"
    );
    assert_eq!(
        p.events
            .iter()
            .map(|e| (e.type_, e.reason))
            .collect::<Vec<_>>(),
        [(EventType::Normal, events::WAITING_FOR_WINDOW)]
    );
    assert!(
        !w.dedicated.exists,
        "nothing created on the destination while waiting"
    );

    // Waiting: no repeated Event, a requeue at the window's start, capped at 5 minutes.
    w.tick(60);
    let p = w.reconcile();
    assert_eq!(p.phase, Blocked);
    assert!(p.events.is_empty(), "{:?}", p.events);
    assert_eq!(p.requeue_after.as_secs(), 300);
    w.now = opens - Duration::seconds(90);
    let p = w.reconcile();
    assert_eq!((p.phase, p.requeue_after.as_secs()), (Blocked, 90));
    w.now = opens - Duration::milliseconds(200);
    let p = w.reconcile();
    assert_eq!(p.phase, Blocked);
    assert_eq!(p.requeue_after.as_secs(), 1, "never sooner than a second");
    assert!(!w.dedicated.exists);

    // The window opens: the conversion starts and the wait is cleared.
    w.now = opens;
    let p = w.reconcile();
    assert_eq!(p.phase, PreparingDestination);
    assert_eq!(blocked(&p).0, "False");
    assert_eq!(p.status.next_maintenance_window, None);
    assert!(
        p.events
            .iter()
            .any(|e| e.reason == events::CONVERSION_STARTED)
    );

    // 60 s passes: the window closes at 00:40 long before the drain ends; the conversion goes on.
    let phases = drive(&mut w, 60, |w| {
        w.phase() == Stable && w.status.tier == Some(Tier::Dedicated)
    });
    assert!(
        w.now > opens + Duration::minutes(10),
        "the window closed mid-conversion"
    );
    assert!(!phases.contains(&Blocked), "{phases:?}");
    assert!(
        w.violations.is_empty() && w.balance_ok(),
        "{:?}",
        w.violations
    );
}

#[test]
fn withdrawing_a_waiting_flip_clears_the_wait() {
    let mut w = World::new(Tier::Dedicated);
    w.spec.migration.window = window(&[Weekday::Sat], "22:00", "02:00");
    w.set_tier(Tier::Shared);
    let p = w.reconcile();
    assert_eq!(p.phase, Blocked);
    assert!(
        blocked(&p).2.contains("starts at 2026-01-03T22:00:00Z"),
        "{}",
        blocked(&p).2
    );
    w.set_tier(Tier::Dedicated);
    let p = w.reconcile();
    assert_eq!(p.phase, Stable);
    assert_eq!(blocked(&p).0, "False");
    assert_eq!(p.status.next_maintenance_window, None);
    assert!(
        p.events
            .iter()
            .any(|e| e.reason == events::CONVERSION_WITHDRAWN)
    );
    assert_eq!(p.condition(conditions::TIER_SERVED).unwrap().status, "True");
}

#[test]
fn a_flip_inside_the_window_starts_at_once() {
    // Thursday 00:00 lies in Wednesday's window that crosses midnight.
    let mut w = World::new(Tier::Shared);
    w.spec.migration.window = window(&[Weekday::Wed], "23:00", "01:00");
    w.set_tier(Tier::Dedicated);
    assert_eq!(w.reconcile().phase, PreparingDestination);
}

#[test]
fn in_tier_changes_a_flip_back_and_a_deletion_are_not_held_by_the_window() {
    // A window that is closed at every moment the test looks at.
    let closed = window(&[Weekday::Mon], "10:00", "10:01");

    // In-tier change (replicas) without a flip: stable, nothing held.
    let mut w = World::new(Tier::Dedicated);
    w.spec.migration.window = closed.clone();
    w.spec.dedicated.replicas = 3;
    w.generation += 1;
    let p = w.reconcile();
    assert_eq!(p.phase, Stable);
    assert_eq!(blocked(&p).0, "False");
    assert_eq!(p.status.next_maintenance_window, None);

    // A conversion started without a window, then the window is set and the flip withdrawn
    // before the cutover: the abort runs at once.
    let mut w = World::new(Tier::Shared);
    w.set_tier(Tier::Dedicated);
    drive(&mut w, 10, |w| w.phase() == DualWriteDualRead);
    w.spec.migration.window = closed.clone();
    w.set_tier(Tier::Shared);
    assert_eq!(w.reconcile().phase, Aborting);
    drive(&mut w, 10, |w| w.phase() == Stable);
    assert_eq!(w.status.tier, Some(Tier::Shared));

    // Deleting an instance whose flip waits: the deletion goes on.
    let mut w = World::new(Tier::Shared);
    w.spec.migration.window = closed;
    w.set_tier(Tier::Dedicated);
    assert_eq!(w.reconcile().phase, Blocked);
    w.deletion = true;
    let p = w.reconcile();
    assert!(
        step_names(&p).contains(&"DiscardTenant") && step_names(&p).contains(&"RemoveFinalizer"),
        "{:?}",
        step_names(&p)
    );
    assert_eq!(p.status.next_maintenance_window, None);
}

#[test]
fn a_problem_is_reported_before_the_window_and_an_unreadable_window_holds_the_flip() {
    // Not in service and outside the window: the problem (something to fix) is what shows.
    let mut w = World::new(Tier::Shared);
    w.shared.ready = false;
    w.spec.migration.window = window(&[], "12:00", "13:00");
    w.set_tier(Tier::Dedicated);
    let p = w.reconcile();
    assert_eq!(blocked(&p).1, reasons::NOT_IN_SERVICE);
    assert_eq!(p.status.next_maintenance_window, None);
    // Fixed: now the window holds it, with its Normal Event.
    w.shared.ready = true;
    let p = w.reconcile();
    assert_eq!(blocked(&p).1, reasons::OUTSIDE_MAINTENANCE_WINDOW);
    assert!(
        p.events
            .iter()
            .any(|e| e.reason == events::WAITING_FOR_WINDOW)
    );

    // A window the API server would refuse (it checks the pattern): held, with the field named.
    let mut o = stable_observed(Tier::Shared);
    o.spec.tier = Tier::Dedicated;
    o.spec.migration.window = window(&[], "25:00", "01:00");
    let p = plan(&o, t0());
    assert_eq!(p.phase, Blocked);
    let c = p.condition(conditions::CONVERSION_BLOCKED).unwrap();
    assert_eq!(c.reason, reasons::INVALID_MAINTENANCE_WINDOW);
    assert!(c.message.contains("startTime \"25:00\""), "{}", c.message);
}
