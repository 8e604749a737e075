//! The operator crashes, the API server fails its requests or a broker is killed, and the
//! conversion completes anyway with nothing lost, nothing duplicated and nothing left behind.
//!
//! Two kinds of crash, both with the operator restarted at once as a kubelet would:
//! - **before every status write that records a phase change**: the operator's test hook
//!   (`tiermq_operator::fault`) aborts the process right after a pass's steps ran and before the
//!   status write that records them, once per phase: the worst moment for a crash, in every
//!   phase;
//! - **a crash loop**: SIGKILL every 2–4 s for the whole conversion (every retirement step must be
//!   short and recorded, or the loop never converges).
//!
//! Broker kills SIGKILL one side's broker process group in a given phase; the kubelet restarts
//! it after its back-off. A moved broker pod (deleted, recreated with a new IP) must not cut
//! clients off while the operator is stopped or its reconciles keep failing.
//!
//! `make test` runs one representative of each kind (an upgrade with a crash before every status
//! write, a leader cut off from the API server, a broker pod moved with the operator down and
//! then failing, which also re-creates a broker); `make test-faults` runs the matrix (module
//! `matrix`): both directions × both drains, an abort, the crash loop both ways, API-server and
//! management API faults, the destination killed in the dual phase, the source killed in either
//! drain, and the shared broker killed while three tenants convert. (The API-fault upgrade and
//! the dual-phase kill moved to the matrix to keep `make test` within its 40-minute budget.)

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use tiermq_crd::Tier;
use tiermq_tests::harness::{Supervision, World};
use tiermq_tests::load::Pattern;
use tiermq_tests::scenario::{NAME, NS};

/// The crash hook in every phase, with its marks in the world's folder.
fn crash_before_every_status_write(world_dir: &std::path::Path) -> Supervision {
    let marks = world_dir.join("crash-marks");
    std::fs::create_dir_all(&marks).unwrap();
    Supervision {
        restart: true,
        kill_every: None,
        env: vec![
            ("TIERMQ_TEST_CRASH_BEFORE_STATUS".into(), "all".into()),
            (
                "TIERMQ_TEST_CRASH_MARKS".into(),
                marks.display().to_string(),
            ),
        ],
    }
}

/// Exactly the broker StatefulSets and instance EndpointSlices a finished conversion to `to`
/// leaves: no duplicate, no orphan.
async fn assert_nothing_duplicated_or_orphaned(world: &World, to: Tier) {
    let c = world.cluster.client();
    let sets: Vec<String> = Api::<StatefulSet>::namespaced(c.clone(), NS)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|s| s.metadata.name.unwrap_or_default())
        .collect();
    let expected: Vec<String> = match to {
        Tier::Dedicated => vec![dedicated()],
        Tier::Shared => vec![],
    };
    assert_eq!(sets, expected, "broker StatefulSets in {NS}");
    let slices = Api::<EndpointSlice>::namespaced(c.clone(), NS)
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={NAME}")))
        .await
        .unwrap()
        .items;
    let by = |manager: &str| -> Vec<String> {
        slices
            .iter()
            .filter(|s| s.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(manager))
            .map(|s| s.name_any())
            .collect()
    };
    assert_eq!(
        by("tiermq-operator").len(),
        1,
        "one operator EndpointSlice for the instance: {slices:?}"
    );
    // Stable on its dedicated cluster, the Service also selects that cluster's pods, so
    // Kubernetes keeps a slice too; on a SharedCluster in another namespace it cannot.
    let selector = Api::<Service>::namespaced(c, NS)
        .get(NAME)
        .await
        .unwrap()
        .spec
        .unwrap()
        .selector;
    match to {
        Tier::Dedicated => {
            assert_eq!(
                selector.as_ref().and_then(|s| s.get("tiermq.io/cluster")),
                Some(&dedicated()),
                "the Service selects the dedicated pods"
            );
            let theirs = wait_until(Duration::from_secs(10), || async {
                kubernetes_slices(&world.cluster.client()).await.len() == 1
            })
            .await;
            assert!(theirs, "one Kubernetes EndpointSlice for the selector");
        }
        Tier::Shared => {
            assert_eq!(selector, None, "no selector across namespaces");
            assert!(
                by("endpointslice-controller.k8s.io").is_empty(),
                "{slices:?}"
            );
        }
    }
}

const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";

/// The slices Kubernetes' EndpointSlice controller keeps for the instance Service.
async fn kubernetes_slices(c: &kube::Client) -> Vec<EndpointSlice> {
    Api::<EndpointSlice>::namespaced(c.clone(), NS)
        .list(&ListParams::default().labels(&format!(
            "kubernetes.io/service-name={NAME},{MANAGED_BY_LABEL}=endpointslice-controller.k8s.io"
        )))
        .await
        .unwrap()
        .items
}

/// A conversion under load with the faults `opts` asks for: it completes, nothing is lost (the
/// scenario asserts it) and nothing is duplicated or left behind.
async fn conversion_through_faults(name: &str, from: Tier, to: Tier, drain: &str, opts: Opts) {
    let o = convert_under_load_opts(name, from, to, drain, &[Pattern::FanoutPubSub], opts).await;
    println!(
        "{name}: conversion took {:.1}s; lost {}; duplicates {}",
        o.conversion.duration.as_secs_f64(),
        o.report.lost,
        o.report.duplicates
    );
    assert_nothing_duplicated_or_orphaned(&o.world, to).await;
}

fn crash_counts(o: &Outcome) -> (u32, u32) {
    let op = o.world.operator.as_ref().unwrap();
    (op.restarts, op.kills)
}

async fn crashing_conversion(name: &str, from: Tier, to: Tier, drain: &str, loop_kill: bool) {
    let dir = std::env::temp_dir().join(format!("tiermq-{name}-{}", std::process::id()));
    let supervision = if loop_kill {
        Supervision {
            restart: true,
            kill_every: Some((Duration::from_secs(2), Duration::from_secs(4))),
            env: vec![],
        }
    } else {
        crash_before_every_status_write(&dir)
    };
    let o = convert_under_load_opts(
        name,
        from,
        to,
        drain,
        &[Pattern::FanoutPubSub],
        Opts {
            supervision: Some(supervision),
            timeout: Duration::from_secs(if loop_kill { 420 } else { 240 }),
            ..Opts::default()
        },
    )
    .await;
    let (restarts, kills) = crash_counts(&o);
    println!(
        "{name}: {restarts} crashes by the hook (restarted), {kills} SIGKILLs; conversion took {:.1}s; lost {}",
        o.conversion.duration.as_secs_f64(),
        o.report.lost
    );
    if loop_kill {
        // A kill every 2-4 s: a conversion of d seconds sees at least d/4 of them, and at least
        // 2 (a downgrade takes ~9 s since the operator stopped polling whole seconds; at 3-6 s
        // it saw one kill).
        let expected = ((o.conversion.duration.as_secs_f64() / 4.0).floor() as u32).max(2);
        assert!(
            kills >= expected,
            "the crash loop ran: {kills} kills, at least {expected} expected"
        );
    } else {
        // Every phase change of a conversion crashes once before its record:
        // PreparingDestination … Completed and back to Stable.
        assert!(
            restarts >= 6,
            "a crash before each phase's record: {restarts}"
        );
    }
    assert_nothing_duplicated_or_orphaned(&o.world, to).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_before_every_status_write_of_an_upgrade_loses_nothing() {
    crashing_conversion(
        "crash-upgrade-consume",
        Tier::Shared,
        Tier::Dedicated,
        "Consume",
        false,
    )
    .await;
}

/// A conversion under load during which one side's brokers are SIGKILLed (the kubelet restarts
/// them): it completes, nothing is lost and nothing is left behind.
async fn conversion_with_a_broker_killed(
    name: &str,
    from: Tier,
    to: Tier,
    drain: &str,
    side: Side,
    phase: tiermq_crd::MigrationPhase,
) {
    let opts = Opts {
        broker_kill: Some(BrokerKill { side, phase }),
        timeout: Duration::from_secs(300),
        ..Opts::default()
    };
    conversion_through_faults(name, from, to, drain, opts).await;
}

mod matrix {
    use super::*;

    /// The operator's API requests fail in turns (500, 409, 503, 429, reset, hang; watches broken)
    /// through a whole upgrade under load: the conversion completes and nothing is lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn an_upgrade_through_api_server_faults_loses_nothing() {
        conversion_through_faults(
            "api-faults-upgrade",
            Tier::Shared,
            Tier::Dedicated,
            "Consume",
            Opts {
                api_faults: true,
                timeout: Duration::from_secs(300),
                ..Opts::default()
            },
        )
        .await;
    }

    /// The destination (the new dedicated broker) killed while clients write to both clusters.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_destination_broker_killed_during_dual_write_loses_nothing() {
        conversion_with_a_broker_killed(
            "kill-destination-dual-write",
            Tier::Shared,
            Tier::Dedicated,
            "Consume",
            Side::Destination,
            tiermq_crd::MigrationPhase::DualWriteDualRead,
        )
        .await;
    }

    /// The brokers' management API answers 500, hangs or resets in turns (3 s windows, 4 s apart)
    /// through a whole upgrade under load: the conversion completes and nothing is lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn an_upgrade_through_management_api_faults_loses_nothing() {
        conversion_through_faults(
            "mgmt-faults-upgrade",
            Tier::Shared,
            Tier::Dedicated,
            "Consume",
            Opts {
                management_faults: true,
                timeout: Duration::from_secs(300),
                ..Opts::default()
            },
        )
        .await;
    }

    /// The source (the dedicated broker) killed while the operator shovels its backlog away.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_source_broker_killed_during_a_shovel_drain_loses_nothing() {
        conversion_with_a_broker_killed(
            "kill-source-shovel-drain",
            Tier::Dedicated,
            Tier::Shared,
            "Shovel",
            Side::Source,
            tiermq_crd::MigrationPhase::DrainingSource,
        )
        .await;
    }

    /// The source (the shared broker) killed while its consumers drain it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_source_broker_killed_during_a_consume_drain_loses_nothing() {
        conversion_with_a_broker_killed(
            "kill-source-consume-drain",
            Tier::Shared,
            Tier::Dedicated,
            "Consume",
            Side::Source,
            tiermq_crd::MigrationPhase::DrainingSource,
        )
        .await;
    }

    /// The destination (the shared broker) killed during the dual phase of a downgrade.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_destination_broker_killed_during_a_downgrade_loses_nothing() {
        conversion_with_a_broker_killed(
            "kill-destination-downgrade",
            Tier::Dedicated,
            Tier::Shared,
            "Shovel",
            Side::Destination,
            tiermq_crd::MigrationPhase::DualWriteDualRead,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_downgrade_with_shovel_through_management_api_faults_loses_nothing() {
        conversion_through_faults(
            "mgmt-faults-downgrade",
            Tier::Dedicated,
            Tier::Shared,
            "Shovel",
            Opts {
                management_faults: true,
                timeout: Duration::from_secs(300),
                ..Opts::default()
            },
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_downgrade_with_shovel_through_api_server_faults_loses_nothing() {
        conversion_through_faults(
            "api-faults-downgrade",
            Tier::Dedicated,
            Tier::Shared,
            "Shovel",
            Opts {
                api_faults: true,
                timeout: Duration::from_secs(300),
                ..Opts::default()
            },
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_crash_before_every_status_write_of_an_upgrade_with_shovel_loses_nothing() {
        crashing_conversion(
            "crash-upgrade-shovel",
            Tier::Shared,
            Tier::Dedicated,
            "Shovel",
            false,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_crash_before_every_status_write_of_a_downgrade_loses_nothing() {
        crashing_conversion(
            "crash-downgrade-consume",
            Tier::Dedicated,
            Tier::Shared,
            "Consume",
            false,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_crash_before_every_status_write_of_a_downgrade_with_shovel_loses_nothing() {
        crashing_conversion(
            "crash-downgrade-shovel",
            Tier::Dedicated,
            Tier::Shared,
            "Shovel",
            false,
        )
        .await;
    }

    /// An abort with a crash before every status write: the flip back lands in the dual phase
    /// (held there by failing writes of the source's EndpointSlice, as in the guards test), the
    /// operator crashes before it records `DualWriteDualRead`, `Aborting` and `Stable`, and the
    /// abort still completes: back on the source, 0 lost, the dedicated cluster gone, one
    /// EndpointSlice.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn an_abort_with_a_crash_before_every_status_write_loses_nothing() {
        use tiermq_crd::{MigrationOutcome, MigrationPhase};
        use tiermq_tests::harness::{PhaseRecorder, conversion_sequence, flip_tier, reached_phase};
        use tiermq_tests::load::Load;

        let mut world =
            tiermq_tests::scenario::world_with_instance("crash-abort", Tier::Shared, "Consume", 2)
                .await
                .unwrap();
        let target = world.instance_target(NS, NAME).await.unwrap();
        let load = Load::start(load_config(target)).await.unwrap();
        wait_for_flow(&load).await;
        let dir = world.dir.clone();
        world
            .operator
            .as_mut()
            .expect("the scenario started the operator")
            .restart_with(crash_before_every_status_write(&dir))
            .unwrap();
        let recorder = PhaseRecorder::start(world.instances(NS), NAME);
        let faults = world.cluster.api().faults();
        let holder = {
            let api = world.instances(NS);
            let faults = faults.clone();
            tokio::spawn(async move {
                let reached = reached_phase(api, NAME, &[MigrationPhase::DualWriteDualRead]).await;
                if reached {
                    // A dual pass writes nothing but reads the source's slice first: while
                    // that read fails, no dual pass completes and the conversion stays dual.
                    faults.fail_reads(
                        "discovery.k8s.io",
                        "endpointslices",
                        &format!("{NAME}.main"),
                        10_000,
                        500,
                    );
                }
                reached
            })
        };
        flip_tier(&world.kubectl, NS, NAME, "Dedicated")
            .await
            .unwrap();
        // The operator is restarted after each crash (as a kubelet would) while the test waits.
        let started = std::time::Instant::now();
        while !holder.is_finished() {
            world.operator.as_mut().unwrap().tend().unwrap();
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "DualWriteDualRead not reached; phases {:?}\n{}",
                recorder.phases(),
                world.operator_log_tail(60)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(holder.await.unwrap());
        tokio::time::sleep(Duration::from_secs(2)).await;
        flip_tier(&world.kubectl, NS, NAME, "Shared").await.unwrap();
        faults.clear();
        let started = std::time::Instant::now();
        let done = loop {
            world.operator.as_mut().unwrap().tend().unwrap();
            let s = world.status(NS, NAME).await.unwrap_or_default();
            if s.migration_phase == Some(MigrationPhase::Stable) && !s.history.is_empty() {
                break s;
            }
            assert!(
                started.elapsed() < Duration::from_secs(180),
                "the abort did not finish; phases {:?}\n{}",
                recorder.phases(),
                world.operator_log_tail(60)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let seq = conversion_sequence(&recorder.phases());
        let rec = done.history.last().unwrap();
        assert_eq!(rec.outcome, MigrationOutcome::Aborted, "{rec:?} {seq:?}");
        assert_eq!(done.tier, Some(Tier::Shared));
        load.stop_publishing();
        let report = load.finish(Duration::from_secs(60)).await;
        let op = world.operator.as_ref().unwrap();
        println!(
            "crash-abort: phases {seq:?}; {} crashes by the hook; load {report}",
            op.restarts
        );
        assert!(
            op.restarts >= 2,
            "the hook crashed the operator on the way: {}",
            op.restarts
        );
        assert_eq!(report.lost, 0, "lost: {:?}", report.lost_sample);
        let gone = wait_until(Duration::from_secs(30), || async {
            !world.statefulset_exists(NS, &dedicated()).await.unwrap()
        })
        .await;
        assert!(gone, "the dedicated cluster is removed after the abort");
        assert_nothing_duplicated_or_orphaned(&world, Tier::Shared).await;
    }

    /// Three tenants of one SharedCluster flipped to Dedicated at once, each under its own load;
    /// the shared broker (the source of all three) is SIGKILLed once the first reaches
    /// `DualWriteDualRead`. All three complete with 0 lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_shared_broker_killed_while_three_tenants_convert_loses_nothing() {
        use tiermq_crd::MigrationPhase;
        let name = "kill-shared-three";
        let started = std::time::Instant::now();
        let names = [NAME, "billing", "audit"];
        let world = tiermq_tests::scenario::world_with_instances_on(
            // Four brokers at once (kubesim's default is three): otherwise the third dedicated
            // broker takes the killed shared broker's slot and the shared one never restarts.
            World::start_configured(name, |mut c| {
                c.max_brokers = 4;
                c
            })
            .await
            .unwrap(),
            &names,
            Tier::Shared,
            "Consume",
            3,
            tiermq_tests::harness::IMAGE_3_10,
        )
        .await
        .unwrap();
        let mut loads = Vec::new();
        for n in names {
            let mut cfg = load_config(world.instance_target(NS, n).await.unwrap());
            cfg.name = format!("load-{n}");
            // Three loads on two cores: a lighter rate each.
            cfg.publish_interval = Duration::from_millis(80);
            loads.push(tiermq_tests::load::Load::start(cfg).await.unwrap());
        }
        for l in &loads {
            wait_for_flow(l).await;
        }
        let killer = spawn_broker_kill(
            &world,
            MigrationPhase::DualWriteDualRead,
            "tiermq-system",
            "main".into(),
        );
        let flipped = std::time::Instant::now();
        for n in names {
            tiermq_tests::harness::flip_tier(&world.kubectl, NS, n, "Dedicated")
                .await
                .unwrap();
        }
        for n in names {
            let done = wait_until(Duration::from_secs(300), || async {
                world.status(NS, n).await.is_ok_and(|s| {
                    s.tier == Some(Tier::Dedicated)
                        && matches!(s.migration_phase, None | Some(MigrationPhase::Stable))
                        && s.history.iter().any(|h| h.to == Tier::Dedicated)
                })
            })
            .await;
            assert!(
                done,
                "{n} completed its upgrade: {:?}\n{}",
                world.status(NS, n).await,
                world.operator_log_tail(40)
            );
        }
        let kill = tokio::time::timeout(Duration::from_secs(60), killer)
            .await
            .expect("the broker-kill task ends")
            .unwrap()
            .expect("the first tenant reached DualWriteDualRead and the shared broker was killed");
        println!(
            "{name}: {kill}; all three completed {:.1}s after the flips",
            flipped.elapsed().as_secs_f64()
        );
        for (n, l) in names.iter().zip(loads) {
            l.stop_publishing();
            let report = l.finish(Duration::from_secs(60)).await;
            println!("{name}: {n}: load {report}");
            assert_eq!(
                report.lost, 0,
                "{n}: confirmed but never consumed: {:?}",
                report.lost_sample
            );
            assert!(report.stats.confirmed >= 100, "{n}: the load ran: {report}");
        }
        println!("{name}: whole test {:.1}s", started.elapsed().as_secs_f64());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn an_upgrade_completes_with_the_operator_killed_every_2_to_4_seconds() {
        crashing_conversion(
            "crash-loop-upgrade",
            Tier::Shared,
            Tier::Dedicated,
            "Consume",
            true,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_downgrade_completes_with_the_operator_killed_every_2_to_4_seconds() {
        crashing_conversion(
            "crash-loop-downgrade",
            Tier::Dedicated,
            Tier::Shared,
            "Shovel",
            true,
        )
        .await;
    }

    /// The fault matrix, opt-in (`make test-faults`).
    /// Clients keep reaching a Stable instance whose broker pod comes back with a new IP, both while
    /// the operator is stopped and while its reconciles keep failing. kubesim gives a recreated pod a
    /// new IP (`with_fresh_pod_ips`), as a real cluster's network does.
    /// - Dedicated, operator stopped: the Service selects the dedicated pods, so Kubernetes' own
    ///   EndpointSlice follows the new IP (without the selector the operator's slice would keep the
    ///   old one and every reconnect would fail).
    /// - Converted to the shared tier (SharedCluster in another namespace, routed by the operator's
    ///   slice only), then the credentials Secret is deleted, so each reconcile fails before it
    ///   plans: the router, which waits for no step, moves the slice to the new IP.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn clients_follow_a_broker_pod_to_its_new_ip_while_the_operator_is_down_or_failing() {
        let name = "route-new-ip";
        let started = std::time::Instant::now();
        let mut world = tiermq_tests::scenario::world_with_instances_on(
            World::start_configured(name, |c| c.with_fresh_pod_ips())
                .await
                .unwrap(),
            &[NAME],
            Tier::Dedicated,
            "Consume",
            3,
            tiermq_tests::harness::IMAGE_3_10,
        )
        .await
        .unwrap();
        println!(
            "{name}: instance ready on Dedicated after {:.1}s",
            started.elapsed().as_secs_f64()
        );
        let target = world.instance_target(NS, NAME).await.unwrap();
        let load = tiermq_tests::load::Load::start(load_config(target))
            .await
            .unwrap();
        wait_for_flow(&load).await;
        let c = world.cluster.client();
        let theirs = wait_until(Duration::from_secs(15), || async {
            !kubernetes_slices(&c).await.is_empty()
        })
        .await;
        assert!(
            theirs,
            "Kubernetes keeps a slice for the Service's selector"
        );
        // ... and the operator's slice steps back to a record of the route, so no stale copy of
        // the address outlives the operator.
        let slices = Api::<EndpointSlice>::namespaced(c.clone(), NS);
        let record = format!("{NAME}.{}", dedicated());
        let emptied = wait_until(Duration::from_secs(15), || async {
            slices
                .get_opt(&record)
                .await
                .ok()
                .flatten()
                .is_some_and(|s| s.endpoints.is_empty())
        })
        .await;
        assert!(emptied, "the operator's slice {record} is emptied");

        // 1. The operator is stopped; the dedicated broker pod moves.
        world
            .operator
            .as_mut()
            .unwrap()
            .stop(Duration::from_secs(5));
        let pod = format!("{}-0", dedicated());
        let (old, new) = move_broker_pod(&world, NS, &pod).await;
        let since = load.stats();
        let resumed = flowing_again(&load, since, 50, Duration::from_secs(60)).await;
        println!(
            "{name}: operator stopped, {pod} moved {old} -> {new}; clients flowing again after {resumed:?}"
        );
        assert!(
            resumed.is_some(),
            "clients reach the moved broker with the operator stopped: {:?} {:?}",
            load.stats(),
            load.interruptions().last()
        );

        // 2. The operator is back; the instance moves to the shared tier under the same load.
        world.start_operator(&[]).unwrap();
        let conversion = tiermq_tests::scenario::convert(
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
            "{name}: converted to Shared in {:.1}s",
            conversion.duration.as_secs_f64()
        );
        assert_nothing_duplicated_or_orphaned(&world, Tier::Shared).await;

        // 3. The credentials Secret is deleted, so every reconcile fails before it plans (a missing
        //    Secret is reported, never regenerated); the shared broker pod moves.
        world
            .kubectl
            .ok(
                &["-n", NS, "delete", "secret", &format!("{NAME}-credentials")],
                None,
            )
            .await
            .unwrap();
        // Secrets are not watched, so the next pass reports it: brought now.
        world.poke_instance(NS, NAME).await.unwrap();
        let secret_problem = |s: &tiermq_crd::RabbitMQInstanceStatus| {
            s.conditions.iter().any(|c| {
                c.status == "True" && c.reason == tiermq_crd::conditions::reasons::SECRET_PROBLEM
            })
        };
        let failing = wait_until(Duration::from_secs(60), || async {
            world
                .status(NS, NAME)
                .await
                .is_ok_and(|s| secret_problem(&s))
        })
        .await;
        assert!(
            failing,
            "the instance reports the missing Secret: {:?}",
            world.status(NS, NAME).await.map(|s| s.conditions)
        );
        let (old, new) = move_broker_pod(&world, "tiermq-system", "main-0").await;
        let since = load.stats();
        let resumed = flowing_again(&load, since, 50, Duration::from_secs(60)).await;
        println!(
            "{name}: reconciles failing (missing Secret), main-0 moved {old} -> {new}; clients flowing again after {resumed:?}"
        );
        assert!(
            resumed.is_some(),
            "clients reach the moved shared broker while reconciles fail: {:?} {:?}\n{}",
            load.stats(),
            load.interruptions().last(),
            world.operator_log_tail(30)
        );
        let still = world
            .status(NS, NAME)
            .await
            .is_ok_and(|s| secret_problem(&s));
        assert!(still, "the reconciles were failing all along");

        load.stop_publishing();
        let report = load.finish(Duration::from_secs(60)).await;
        println!(
            "{name}: load {report}; whole test {:.1}s",
            started.elapsed().as_secs_f64()
        );
        assert_eq!(
            report.lost, 0,
            "confirmed but never consumed: {:?}",
            report.lost_sample
        );
    }

    /// Split brain: two operator processes under leader election; in the middle of a conversion
    /// the leader is cut off from the API server (its requests hang; the brokers stay reachable),
    /// and the partition heals 30 s later. The cut-off leader gives up within its renew deadline
    /// (10 s) and exits; the other replica takes the Lease once it expired (15 s) and finishes the
    /// conversion with nothing lost; the request log shows the old leader wrote nothing after its
    /// deadline, also after the partition healed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_leader_cut_off_from_the_api_server_steps_down_and_the_other_replica_finishes() {
        use kubesim::apiserver::{ClientFaultMode, ClientSelector};
        use tiermq_tests::harness::{
            InstanceSpec, OperatorProcess, operator_binary, shared_cluster_yaml,
        };
        use tiermq_tests::load::Load;

        const RENEW_DEADLINE: Duration = Duration::from_secs(10);
        let mut world = World::start("split-brain").await.unwrap();
        world.kubectl.apply(&shared_cluster_yaml(10)).await.unwrap();
        let requests = world.cluster.api().request_log();
        let client_faults = world.cluster.api().client_faults();
        let bin = operator_binary().unwrap();
        let ids = ["operator-a", "operator-b"];
        let mut ops = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let kubeconfig = world.dir.join(format!("{id}.kubeconfig"));
            world
                .cluster
                .api()
                .write_kubeconfig_for_user(&kubeconfig, id, &["system:masters".to_string()])
                .unwrap();
            let metrics = format!("127.19.{}.{}:8080", world.cluster.slot(), 3 + i);
            ops.push(
                OperatorProcess::spawn_as(
                    &bin,
                    &kubeconfig,
                    &world.dir.join(format!("{id}.log")),
                    &metrics,
                    &[],
                    Some(id),
                )
                .unwrap(),
            );
        }
        let spec = InstanceSpec {
            namespace: NS,
            name: NAME,
            tier: "Shared",
            drain_strategy: "Consume",
            grace_period_seconds: 3,
            connection_policy: None,
        };
        world.kubectl.apply(&spec.yaml()).await.unwrap();
        world
            .wait_ready(NS, NAME, Duration::from_secs(120))
            .await
            .unwrap();
        let lease = |c: kube::Client| async move {
            Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(c, "tiermq-system")
                .get("tiermq-operator")
                .await
                .ok()
                .and_then(|l| l.spec?.holder_identity)
        };
        let leader = lease(world.cluster.client())
            .await
            .expect("a leader holds the Lease");
        let (old, new) = if leader == ids[0] { (0, 1) } else { (1, 0) };
        println!("split-brain: {leader} leads");

        let target = world.instance_target(NS, NAME).await.unwrap();
        let load = Load::start(load_config(target)).await.unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;

        // Cut the leader off once the conversion is in its dual phase.
        let cutter = {
            let instances = world.instances(NS);
            let faults = client_faults.clone();
            let leader = leader.clone();
            tokio::spawn(async move {
                use tiermq_crd::MigrationPhase::{DualWriteDualRead, SingleWriteDualRead};
                let dual = [DualWriteDualRead, SingleWriteDualRead];
                if !tiermq_tests::harness::reached_phase(instances, NAME, &dual).await {
                    return None;
                }
                let at = chrono::Utc::now();
                faults.start(
                    ClientSelector::user(leader.clone()),
                    ClientFaultMode::Hang,
                    Some(Duration::from_secs(30)),
                );
                Some((at, std::time::Instant::now()))
            })
        };
        tiermq_tests::harness::flip_tier(&world.kubectl, NS, NAME, "Dedicated")
            .await
            .unwrap();
        let (cut_at, cut) = tokio::time::timeout(Duration::from_secs(90), cutter)
            .await
            .expect("the dual phase is reached")
            .unwrap()
            .expect("the watch saw it");
        // The old leader exits by itself.
        let mut exited = None;
        while cut.elapsed() < RENEW_DEADLINE + Duration::from_secs(20) {
            if let Some(status) = ops[old].exited() {
                exited = Some((cut.elapsed(), status));
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (after, status) = exited.expect("the cut-off leader exits");
        println!("split-brain: {leader} exited {after:?} after the cut ({status})");
        let done = world
            .wait_status(
                NS,
                NAME,
                "the other replica finishes",
                Duration::from_secs(240),
                |s| {
                    s.tier == Some(Tier::Dedicated)
                        && s.migration_phase == Some(tiermq_crd::MigrationPhase::Stable)
                },
            )
            .await;
        if let Err(e) = &done {
            panic!("{e}\n{} log:\n{}", ids[new], ops[new].log_tail(40));
        }
        let holder = lease(world.cluster.client()).await;
        assert_eq!(holder.as_deref(), Some(ids[new]), "the other replica leads");
        load.stop_publishing();
        let report = load.finish(Duration::from_secs(60)).await;
        println!("split-brain: load {report}");
        assert_eq!(report.lost, 0, "lost: {:?}", report.lost_sample);
        // Let the partition heal (30 s after the cut) and a little more: the old leader must not
        // come back with stale writes.
        let heal = Duration::from_secs(35).saturating_sub(cut.elapsed());
        tokio::time::sleep(heal).await;
        let deadline = cut_at + chrono::Duration::from_std(RENEW_DEADLINE).unwrap();
        let late: Vec<_> = requests
            .records_of(&leader)
            .into_iter()
            .filter(|r| r.is_write() && r.time > deadline && (200..300).contains(&r.code))
            .collect();
        let writes_before = requests
            .records_of(&leader)
            .into_iter()
            .filter(|r| r.is_write() && (200..300).contains(&r.code))
            .count();
        println!(
            "split-brain: {leader} made {writes_before} successful writes in all, {} after its renew deadline",
            late.len()
        );
        assert!(writes_before > 0, "the log holds the old leader's writes");
        assert!(late.is_empty(), "writes after the deadline: {late:?}");
    }
}
