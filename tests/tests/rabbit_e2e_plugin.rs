//! `kubectl tiermq preview` and `status` against the real thing: kubesim, the operator binary and
//! a real shared broker holding a backlog. The preview must read the queue counts from the
//! broker (as the operator would), give the operator's verdict, and change nothing.

use std::time::{Duration, Instant};

use clap::Parser;
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::Api;
use kubectl_tiermq::cli::{Cli, execute};
use tiermq_crd::{MigrationPhase, Tier};
use tiermq_tests::load::{Load, LoadConfig};
use tiermq_tests::scenario::{self, NAME, NS};

/// Runs one plugin command line against the world's API server and returns its output.
async fn plugin(client: &kube::Client, args: &[&str]) -> String {
    let cli = Cli::try_parse_from(std::iter::once("kubectl-tiermq").chain(args.iter().copied()))
        .expect("the command line parses");
    let mut out = Vec::new();
    execute(client.clone(), NS, cli.command, &mut out)
        .await
        .expect("the plugin command succeeds");
    String::from_utf8(out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn preview_reads_the_real_backlog_and_changes_nothing() {
    let world = scenario::world_with_instance("plugin-preview", Tier::Shared, "Consume", 2)
        .await
        .unwrap();
    let client = world.cluster.client();

    // A backlog on the shared tier: 2 publishers x 100 confirmed messages, no consumer.
    let target = world.instance_target(NS, NAME).await.unwrap();
    let mut cfg = LoadConfig::steady(target, "orders", 100, 100.0);
    cfg.consumers = 0;
    cfg.max_duration = Duration::from_secs(30);
    let load = Load::start(cfg).await.unwrap();
    let started = Instant::now();
    while !load.publishing_done() && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let confirmed = load.stats().confirmed;
    assert_eq!(confirmed, 200, "every message confirmed");
    drop(load);

    // The broker's statistics catch up within a few collection intervals.
    let want_total = format!("total:        {confirmed} messages in 1 queue(s)");
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = plugin(&client, &["preview", NAME, "--to", "Dedicated"]).await;
        if text.contains(&want_total) || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    println!("{text}");
    for want in [
        "Preview: RabbitMQInstance team-a/orders, Shared -> Dedicated (upgrade); nothing is changed",
        "start the conversion on its next pass (PreparingDestination)",
        "source:       SharedCluster tiermq-system/main (1/1 replicas ready, management API answers)",
        "destination:  dedicated cluster team-a/",
        "(created for the conversion: 1 replica(s) of rabbitmq:3.10-management",
        &want_total,
        "no consumer is on the source, and with drainStrategy Consume the drain waits for consumers",
        "the default for an upgrade",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    let row = text
        .lines()
        .find(|l| l.trim_start().starts_with("orders "))
        .unwrap_or_else(|| panic!("no row for queue orders in\n{text}"));
    let ready: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(ready.get(1), Some(&"200"), "ready messages: {row}");
    assert!(!text.contains("blocker"), "{text}");

    // Nothing was written: the spec, the phase and the dedicated tier are as they were.
    let i = world.instances(NS).get(NAME).await.unwrap();
    assert_eq!(i.spec.tier, Tier::Shared);
    let st = i.status.unwrap();
    assert_eq!(st.migration_phase, Some(MigrationPhase::Stable));
    assert!(st.migration.is_none());
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), NS);
    assert!(
        sts.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "no dedicated StatefulSet was created"
    );

    let status = plugin(&client, &["status", NAME]).await;
    println!("{status}");
    for want in [
        "RabbitMQInstance team-a/orders",
        "tier:         Shared   phase: Ready   migration: Stable",
        "serving:      SharedCluster tiermq-system/main",
        "No conversion runs.",
        "Ready ",
    ] {
        assert!(status.contains(want), "missing {want:?} in\n{status}");
    }
}
