//! Upgrade (shared → dedicated) under load, for each drain strategy: the operator binary
//! converts the instance while publishers (confirms) and consumers (manual acks) run through the
//! instance Service; nothing confirmed is lost, phases come in order, the shared tenant is
//! retired, the credentials stay the same, consumers connected before the flip are left alone
//! (busy publishers are closed at the write cutover, see `upgrade_checks`) and a new connection
//! lands on the dedicated cluster.

mod common;

use common::*;
use tiermq_crd::{MigrationPhase, Tier};
use tiermq_tests::load::Role;

fn upgrade_checks(o: &Outcome) {
    let c = &o.conversion;
    assert_eq!(
        o.probe,
        ProbeResult::Destination,
        "a connection opened after the cutover lands on the dedicated cluster"
    );
    // The operator performs the cutover (revoking writes, closing busy publishers) in the
    // reconcile that follows DualWriteDualRead and records SingleWriteDualRead only after those
    // steps succeeded, so the watch sees the new phase slightly after the closes. "Before the
    // cutover" therefore means before DualWriteDualRead was recorded.
    let cutover = phase_at(c, MigrationPhase::DualWriteDualRead);
    let retire_from = phase_at(c, MigrationPhase::DestinationOnly);
    let describe = |i: &tiermq_tests::load::Interruption| {
        format!(
            "{:?} {} at {:.1}s: {}",
            i.role,
            i.client,
            i.after.as_secs_f64(),
            i.reason
        )
    };
    // Default upgrade policy (Keep): until the write cutover nothing is closed by the server.
    let early: Vec<_> = o
        .report
        .interruptions
        .iter()
        .filter(|i| i.after < cutover)
        .map(describe)
        .collect();
    assert!(
        early.is_empty(),
        "connections closed before the write cutover: {early:?}"
    );
    // Consumers that connected before the flip keep their connection until the source tenant is
    // retired (DestinationOnly, after the grace period).
    let consumers = closed_between(&o.report, c.flipped_at, retire_from, Some(Role::Consumer));
    assert!(
        consumers.is_empty(),
        "consumers open before the flip were interrupted: {consumers:?}"
    );
    // Deliberate deviation from "not closed" (operator commit 50fc2e8): RabbitMQ 3.10 channels
    // cache permission checks while busy, so revoking writes does not stop a publisher that never
    // pauses; the operator closes such publishing connections at the cutover, with a reason, so
    // they reconnect to the destination. Anything closed before retirement must be a publisher
    // closed with that explicit reason.
    let closed: Vec<_> = o
        .report
        .interruptions
        .iter()
        .filter(|i| i.after < retire_from)
        .collect();
    for i in &closed {
        assert!(
            i.role == Role::Publisher && i.reason.contains("CONNECTION_FORCED - tiermq:"),
            "only busy publishers are closed before retirement, with the operator's reason: {}",
            describe(i)
        );
    }
    println!(
        "upgrade: {} busy publisher connection(s) closed at the cutover: {:?}",
        closed.len(),
        closed.iter().map(|i| describe(i)).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upgrade_with_consume_drain_under_load_loses_nothing() {
    let o = convert_under_load("upgrade-consume", Tier::Shared, Tier::Dedicated, "Consume").await;
    upgrade_checks(&o);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upgrade_with_shovel_drain_under_load_loses_nothing() {
    let o = convert_under_load("upgrade-shovel", Tier::Shared, Tier::Dedicated, "Shovel").await;
    upgrade_checks(&o);
}
