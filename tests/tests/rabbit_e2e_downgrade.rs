//! Downgrade (dedicated → shared) under load, for each drain strategy: source connections are
//! closed by the operator with a reason, the reconnecting clients continue on the shared cluster,
//! nothing confirmed is lost, phases come in order, the dedicated StatefulSet is deleted and the
//! credentials stay the same.

mod common;

use common::*;
use tiermq_crd::Tier;
use tiermq_tests::load::{Pattern, Role};

fn downgrade_checks(o: &Outcome) {
    assert_eq!(
        o.probe,
        ProbeResult::Destination,
        "a connection opened after the cutover lands on the shared cluster"
    );
    let forced: Vec<_> = o
        .report
        .interruptions
        .iter()
        .filter(|i| i.reason.contains("CONNECTION_FORCED"))
        .collect();
    println!(
        "downgrade: connections closed by the server: {}",
        forced.len()
    );
    for r in [Role::Publisher, Role::Consumer] {
        assert!(
            forced
                .iter()
                .any(|i| i.role == r && i.connection_opened < o.conversion.flipped_at),
            "{r:?} connections from before the flip are closed with a reason: {:?}",
            o.report.interruptions
        );
    }
    // The reason is the operator's own text, not a bare socket error.
    let reason = &forced[0].reason;
    assert!(
        reason.contains("CONNECTION_FORCED - ") && reason.len() > "CONNECTION_FORCED - ".len() + 5,
        "{reason}"
    );
}

async fn downgrade_with_consume_drain_closes_source_connections_and_loses_nothing(
    runtime: BrokerRuntime,
) {
    let o = convert_under_load(
        runtime,
        "downgrade-consume",
        Tier::Dedicated,
        Tier::Shared,
        "Consume",
        &[
            Pattern::FanoutPubSub,
            Pattern::SingleActiveConsumer,
            Pattern::WorkQueueNoConfirm,
        ],
    )
    .await;
    downgrade_checks(&o);
}
tiermq_testkit::test_each_runtime!(
    downgrade_with_consume_drain_closes_source_connections_and_loses_nothing,
    flavor = "multi_thread",
    worker_threads = 4
);

async fn downgrade_with_shovel_drain_closes_source_connections_and_loses_nothing(
    runtime: BrokerRuntime,
) {
    let o = convert_under_load(
        runtime,
        "downgrade-shovel",
        Tier::Dedicated,
        Tier::Shared,
        "Shovel",
        &[
            Pattern::FanoutPubSub,
            Pattern::TopicRouting,
            Pattern::DelayedDelivery,
            Pattern::Quorum,
        ],
    )
    .await;
    downgrade_checks(&o);
}
tiermq_testkit::test_each_runtime!(
    downgrade_with_shovel_drain_closes_source_connections_and_loses_nothing,
    flavor = "multi_thread",
    worker_threads = 4
);
