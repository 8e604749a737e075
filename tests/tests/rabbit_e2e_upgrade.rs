//! Upgrade (shared → dedicated) under load, for each drain strategy: the operator binary
//! converts the instance while publishers (confirms) and consumers (manual acks) run through the
//! instance Service; nothing confirmed is lost, phases come in order, the shared tenant is
//! retired, the credentials stay the same, consumers connected before the flip keep consuming the
//! source until it is drained (busy publishers are closed at the write cutover, consumers once
//! the source is drained; see `upgrade_checks`) and a new connection lands on the dedicated
//! cluster.

mod common;

use common::*;
use tiermq_crd::{MigrationPhase, Tier};
use tiermq_tests::load::{Pattern, Role};

fn upgrade_checks(o: &Outcome) {
    let c = &o.conversion;
    assert_eq!(
        o.probe,
        ProbeResult::Destination,
        "a connection opened after the cutover lands on the dedicated cluster"
    );
    // The cutover is recorded (SingleWriteDualRead) before it is performed, so no close comes
    // before that; "before the cutover" is taken as before DualWriteDualRead was seen, which
    // is earlier still.
    let cutover = phase_at(c, MigrationPhase::DualWriteDualRead);
    let drain_from = phase_at(c, MigrationPhase::DrainingSource);
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
    // Consumers that connected before the flip keep consuming the source while it drains.
    let consumers = closed_between(&o.report, c.flipped_at, drain_from, Some(Role::Consumer));
    assert!(
        consumers.is_empty(),
        "consumers open before the flip were interrupted before the drain: {consumers:?}"
    );
    // Every server-side close carries the operator's reason: busy publishers at the cutover
    // (RabbitMQ 3.10 channels cache permission checks while busy, so a revoked write does not
    // stop them), consumers once the source is drained (it has nothing left for them).
    let closed: Vec<_> = o
        .report
        .interruptions
        .iter()
        .filter(|i| i.reason.contains("CONNECTION_FORCED"))
        .collect();
    for i in &closed {
        assert!(
            i.reason.contains("CONNECTION_FORCED - tiermq:"),
            "a server-side close without the operator's reason: {}",
            describe(i)
        );
    }
    println!(
        "upgrade: {} connection(s) closed by the operator: {:?}",
        closed.len(),
        closed.iter().map(|i| describe(i)).collect::<Vec<_>>()
    );
}

async fn upgrade_with_consume_drain_under_load_loses_nothing(runtime: BrokerRuntime) {
    let o = convert_under_load(
        runtime,
        "upgrade-consume",
        Tier::Shared,
        Tier::Dedicated,
        "Consume",
        &[
            Pattern::FanoutPubSub,
            Pattern::TopicRouting,
            Pattern::Quorum,
        ],
    )
    .await;
    upgrade_checks(&o);
}
tiermq_testkit::test_each_runtime!(
    upgrade_with_consume_drain_under_load_loses_nothing,
    flavor = "multi_thread",
    worker_threads = 4
);

/// Also carries the tenant's own shovel: it moves to the destination at the cutover and
/// ingestion goes on there.
async fn upgrade_with_shovel_drain_under_load_loses_nothing(runtime: BrokerRuntime) {
    let o = convert_under_load_with(
        runtime,
        "upgrade-shovel",
        Tier::Shared,
        Tier::Dedicated,
        "Shovel",
        &[
            Pattern::FanoutPubSub,
            Pattern::DelayedDelivery,
            Pattern::MaxLength,
        ],
        Some(20),
    )
    .await;
    upgrade_checks(&o);
}
tiermq_testkit::test_each_runtime!(
    upgrade_with_shovel_drain_under_load_loses_nothing,
    flavor = "multi_thread",
    worker_threads = 4
);
