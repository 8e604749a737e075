//! A tenant's own move from RabbitMQ 3.10 to 4.0, blue-green and per tenant: from a 3.10
//! SharedCluster to a dedicated 4.0 cluster, and on to a 4.0 SharedCluster, under load the whole
//! time, losing nothing. The tenant carries what 4.0 does not take as it is: a classic mirroring
//! policy (4.0 refuses its keys: dropped, and said in a Warning Event) and a queue with
//! `x-queue-mode: lazy` and `x-queue-version: 1` (kept: 4.0 accepts and ignores them, and a client
//! declaring them again is not refused). The 4.0 SharedCluster's brokers default to quorum queues
//! (`default_queue_type = quorum`): the tenant's vhost keeps its classic default, so its clients
//! keep declaring classic queues without a type. In `make test-matrix` (about 2 minutes).

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tiermq_broker::model::Policy;
use tiermq_crd::{MigrationPhase, Tier};
use tiermq_tests::harness::{
    CONVERSION_PHASES, IMAGE_3_10, IMAGE_4_0, InstanceSpec, World, shared_cluster_yaml_with,
};
use tiermq_tests::load::{Load, Pattern, Workload, WorkloadConfig};
use tiermq_tests::scenario::{self, NAME, NS};

const SHARED_4: &str = "main4";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_moves_from_3_10_shared_to_4_0_dedicated_to_4_0_shared_under_load_losing_nothing()
{
    let started = Instant::now();
    let mut world = World::start("versions").await.unwrap();
    world.start_operator(&[]).unwrap();
    world
        .kubectl
        .apply(&shared_cluster_yaml_with("main", IMAGE_3_10, 10))
        .await
        .unwrap();
    let mut shared4 = shared_cluster_yaml_with(SHARED_4, IMAGE_4_0, 10);
    shared4.push_str("  additionalConfig: |\n    default_queue_type = quorum\n");
    world.kubectl.apply(&shared4).await.unwrap();
    let spec = InstanceSpec {
        namespace: NS,
        name: NAME,
        tier: "Shared",
        drain_strategy: "Consume",
        grace_period_seconds: 3,
        connection_policy: None,
    };
    world
        .kubectl
        .apply(&spec.yaml_with(IMAGE_4_0))
        .await
        .unwrap();
    world
        .wait_ready(NS, NAME, Duration::from_secs(120))
        .await
        .unwrap();
    println!(
        "versions: instance ready on the 3.10 SharedCluster after {:.1}s",
        started.elapsed().as_secs_f64()
    );

    // What a 3.10 tenant may have that 4.0 does not take as it is.
    let v310 = world.management("tiermq-system", "main").await.unwrap();
    assert!(
        v310.overview()
            .await
            .unwrap()
            .rabbitmq_version
            .starts_with("3.10.")
    );
    let mirror = Policy {
        name: "mirror-archive".into(),
        vhost: TENANT.into(),
        pattern: "^archive$".into(),
        apply_to: "queues".into(),
        definition: json!({"ha-mode": "all", "ha-sync-mode": "automatic"})
            .as_object()
            .unwrap()
            .clone(),
        priority: 1,
    };
    v310.put_policy(TENANT, &mirror).await.unwrap();
    let target = world.instance_target(NS, NAME).await.unwrap();
    let lazy_args = || {
        let mut t = lapin::types::FieldTable::default();
        t.insert(
            "x-queue-mode".into(),
            lapin::types::AMQPValue::LongString("lazy".into()),
        );
        t.insert(
            "x-queue-version".into(),
            lapin::types::AMQPValue::LongInt(1),
        );
        t
    };
    let declare_archive = |what: &'static str| {
        let target = target.clone();
        async move {
            let conn = tiermq_tests::load::probe_connection(&target, what, Duration::from_secs(10))
                .await
                .unwrap();
            let ch = conn.create_channel().await.unwrap();
            let r = ch
                .queue_declare(
                    "archive".into(),
                    lapin::options::QueueDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    lazy_args(),
                )
                .await
                .map(|_| ());
            let _ = conn.close(200, "done".into()).await;
            r
        }
    };
    declare_archive("archive-setup").await.unwrap();

    let load = Load::start(load_config(target.clone())).await.unwrap();
    let mut others = load_config(target.clone());
    others.name = "mix".into();
    others.messages_per_publisher = 4000;
    others.consumers = 2;
    let workload = Workload::start(WorkloadConfig::new(
        others,
        &[
            Pattern::FanoutPubSub,
            Pattern::TopicRouting,
            Pattern::Quorum,
        ],
    ))
    .await
    .unwrap();
    wait_for_flow(&load).await;

    // 1. 3.10 SharedCluster -> dedicated 4.0.
    let up = scenario::convert(
        &mut world,
        NS,
        NAME,
        Tier::Dedicated,
        &load,
        Duration::from_secs(150),
        Some(&mut |l: &str| println!("{l}")),
    )
    .await
    .unwrap();
    println!(
        "versions: 3.10 shared -> 4.0 dedicated took {:.1}s: {}",
        up.duration.as_secs_f64(),
        scenario::phase_table(&up)
    );
    let dedicated = world.management(NS, &common::dedicated()).await.unwrap();
    assert!(
        dedicated
            .overview()
            .await
            .unwrap()
            .rabbitmq_version
            .starts_with("4.0."),
        "the dedicated cluster runs 4.0"
    );
    assert!(
        dedicated
            .list_policies(TENANT)
            .await
            .unwrap()
            .iter()
            .all(|p| p.name != "mirror-archive"),
        "the mirroring-only policy is not copied onto 4.0"
    );
    let archive = dedicated
        .get_queue(TENANT, "archive")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(archive.arguments["x-queue-mode"], "lazy");
    assert_eq!(archive.arguments["x-queue-version"], 1);
    declare_archive("archive-on-4.0")
        .await
        .expect("declaring archive as on 3.10 works on 4.0");
    let events: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(world.cluster.client(), NS);
    let notes: String = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("TranslatedForDestination"))
        .filter_map(|e| e.note)
        .collect::<Vec<_>>()
        .join("\n");
    println!("versions: TranslatedForDestination: {notes}");
    assert!(
        notes.contains("mirror-archive (ha-mode, ha-sync-mode)") && notes.contains("4.x"),
        "a Warning Event says the mirroring keys are dropped: {notes:?}"
    );

    // 2. dedicated 4.0 -> the 4.0 SharedCluster, whose brokers default to quorum queues.
    tiermq_tests::harness::patch_instance(
        &world.kubectl,
        NS,
        NAME,
        &format!(r#"{{"spec":{{"shared":{{"clusterRef":{{"name":"{SHARED_4}"}}}}}}}}"#),
    )
    .await
    .unwrap();
    let down = scenario::convert(
        &mut world,
        NS,
        NAME,
        Tier::Shared,
        &load,
        Duration::from_secs(150),
        Some(&mut |l: &str| println!("{l}")),
    )
    .await
    .unwrap();
    println!(
        "versions: 4.0 dedicated -> 4.0 shared took {:.1}s: {}",
        down.duration.as_secs_f64(),
        scenario::phase_table(&down)
    );
    load.stop_publishing();
    workload.stop_publishing();
    let shared4 = world.management("tiermq-system", SHARED_4).await.unwrap();
    let consumers_moved = wait_until(Duration::from_secs(15), || async {
        shared4
            .list_connections(TENANT)
            .await
            .map(|cs| {
                cs.iter()
                    .any(|c| c.client_name().is_some_and(|n| n.starts_with("load-con-")))
            })
            .unwrap_or(false)
    })
    .await;
    let report = load.finish(Duration::from_secs(60)).await;
    let mix = workload.finish(Duration::from_secs(30)).await;
    println!("versions: load {report}");
    println!("versions: the other patterns through both conversions:\n{mix}");

    assert_eq!(
        report.lost, 0,
        "confirmed but never consumed: {:?}",
        report.lost_sample
    );
    for p in &mix.patterns {
        assert!(
            p.confirmed.is_none() || p.lost == 0,
            "pattern {} lost {}:\n{mix}",
            p.pattern,
            p.lost
        );
        assert_eq!(
            p.problems(),
            0,
            "pattern {} reports problems:\n{mix}",
            p.pattern
        );
        assert!(p.received > 0, "pattern {} ran:\n{mix}", p.pattern);
    }
    assert!(report.stats.confirmed >= 200, "{report}");
    for c in [&up, &down] {
        assert_eq!(
            tiermq_tests::harness::collapse_drain_retries(&c.phases),
            CONVERSION_PHASES,
            "phases in order: {:?}",
            c.phases
        );
        assert!(scenario::completed(c), "{:?}", c.record);
    }
    assert!(
        consumers_moved,
        "consumers continue on the 4.0 SharedCluster"
    );
    assert!(
        shared4
            .overview()
            .await
            .unwrap()
            .rabbitmq_version
            .starts_with("4.0.")
    );
    // The tenant's vhost keeps its classic default on a cluster defaulting to quorum queues:
    // the queues its clients declared without a type are classic, as on 3.10.
    let vhost = shared4.get_vhost(TENANT).await.unwrap().unwrap();
    assert_eq!(vhost.default_queue_type.as_deref(), Some("classic"));
    for q in ["orders", "archive"] {
        let info = shared4.get_queue(TENANT, q).await.unwrap();
        assert_eq!(
            info.and_then(|i| i.queue_type).as_deref(),
            Some("classic"),
            "{q} on the 4.0 SharedCluster"
        );
    }
    assert_eq!(
        v310.get_vhost(TENANT).await.unwrap(),
        None,
        "the 3.10 tenant was retired"
    );
    let gone = wait_until(Duration::from_secs(30), || async {
        !world
            .statefulset_exists(NS, &common::dedicated())
            .await
            .unwrap()
    })
    .await;
    assert!(gone, "the dedicated 4.0 cluster is deleted at the end");
    let st = world.status(NS, NAME).await.unwrap();
    assert_eq!(st.tier, Some(Tier::Shared));
    assert_eq!(st.migration_phase, Some(MigrationPhase::Stable));
    println!(
        "versions: both moves done after {:.1}s in all",
        started.elapsed().as_secs_f64()
    );
}
