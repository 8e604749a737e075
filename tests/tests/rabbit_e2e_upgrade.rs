//! Upgrade (shared → dedicated) under load, for each drain strategy: the operator binary
//! converts the instance while publishers (confirms) and consumers (manual acks) run through the
//! instance Service; nothing confirmed is lost, phases come in order, the shared tenant is
//! retired, the credentials stay the same, connections open before the flip are left alone and a
//! new connection lands on the dedicated cluster.

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
    // Default upgrade policy: the operator does not close source connections. Until the source
    // tenant is retired (DestinationOnly, after the grace period) no client is closed by the
    // server, and consumers that connected before the flip keep their connection.
    let retire_from = phase_at(c, MigrationPhase::DestinationOnly);
    let forced: Vec<_> = o
        .report
        .interruptions
        .iter()
        .filter(|i| i.after < retire_from && i.reason.contains("CONNECTION_FORCED"))
        .map(|i| {
            format!(
                "{} at {:.1}s: {}",
                i.client,
                i.after.as_secs_f64(),
                i.reason
            )
        })
        .collect();
    assert!(
        forced.is_empty(),
        "connections closed by the server before the source was retired: {forced:?}"
    );
    let consumers = closed_between(&o.report, c.flipped_at, retire_from, Some(Role::Consumer));
    assert!(
        consumers.is_empty(),
        "consumers open before the flip were interrupted: {consumers:?}"
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
