//! The guard rails of a conversion, on kubesim with the operator binary and real kubectl:
//! a flip while the instance is not in service is held with a clear condition and proceeds once
//! it is; a flip back before the write cutover aborts without losing a message; a series change is
//! refused at admission with the CEL message; `kubectl get rmqi` and `kubectl describe` show what
//! happened.

#[path = "day_two/byo.rs"]
mod byo;
mod common;
#[path = "day_two/tls.rs"]
mod tls;

use std::time::{Duration, Instant};

use common::*;
use tiermq_crd::{MigrationOutcome, MigrationPhase, SERIES_IMMUTABLE_MESSAGE, Tier};
use tiermq_tests::harness::{PhaseRecorder, conversion_sequence, flip_tier, reached_phase};
use tiermq_tests::load::Load;
use tiermq_tests::scenario::{self, NAME, NS};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flip_back_before_the_write_cutover_aborts_and_loses_nothing() {
    let mut world = scenario::world_with_instance("abort", Tier::Shared, "Consume", 2)
        .await
        .unwrap();
    let target = world.instance_target(NS, NAME).await.unwrap();
    let load = Load::start(load_config(target)).await.unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    while load.stats().received < 50 {
        assert!(
            Instant::now() < until,
            "load did not start: {:?}",
            load.stats()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recorder = PhaseRecorder::start(world.instances(NS), NAME);
    flip_tier(&world.kubectl, NS, NAME, "Dedicated")
        .await
        .unwrap();
    // Flip back as soon as the conversion has started: before the write cutover (the dedicated
    // broker needs seconds to start, so this lands in PreparingDestination or
    // DualWriteDualRead).
    let until = Instant::now() + Duration::from_secs(30);
    let flipped_back_in = loop {
        match recorder.current() {
            Some(
                p @ (MigrationPhase::PreparingDestination | MigrationPhase::DualWriteDualRead),
            ) => break p,
            Some(p) if p.past_write_cutover() => panic!(
                "the cutover came before the flip back could: {:?}",
                recorder.phases()
            ),
            _ => {}
        }
        assert!(
            Instant::now() < until,
            "conversion did not start: {:?}",
            recorder.phases()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    flip_tier(&world.kubectl, NS, NAME, "Shared").await.unwrap();
    println!("flipped back during {flipped_back_in}");
    let done = world
        .wait_status(
            NS,
            NAME,
            "the abort finishes",
            Duration::from_secs(120),
            |s| s.migration_phase == Some(MigrationPhase::Stable) && !s.history.is_empty(),
        )
        .await
        .unwrap();
    let seq = conversion_sequence(&recorder.phases());
    println!("phases: {seq:?}");
    let rec = done.history.last().unwrap();
    assert_eq!(rec.outcome, MigrationOutcome::Aborted, "{rec:?}");
    assert_eq!(done.tier, Some(Tier::Shared));
    assert!(seq.contains(&MigrationPhase::Aborting), "{seq:?}");
    assert!(
        !seq.iter().any(|p| p.past_write_cutover()),
        "no write cutover happened: {seq:?}"
    );
    // The clients keep working on the shared cluster after the abort.
    let before = load.stats().received;
    let flowing = wait_until(Duration::from_secs(20), || async {
        load.stats().received > before + 50
    })
    .await;
    assert!(flowing, "load continues after the abort");
    load.stop_publishing();
    let report = load.finish(Duration::from_secs(60)).await;
    println!("abort: load {report}; reasons {:?}", report.reasons());
    assert_eq!(report.lost, 0, "lost: {:?}", report.lost_sample);
    let gone = wait_until(Duration::from_secs(30), || async {
        !world.statefulset_exists(NS, &dedicated()).await.unwrap()
    })
    .await;
    assert!(gone, "the half-built dedicated cluster is removed");
}

/// Holds the conversion in DualWriteDualRead the way a transient API failure would: as soon as
/// the phase is recorded, reads of the source's EndpointSlice fail (kubesim fault injection;
/// a dual pass has nothing to write, but it reads the slice before deciding that), so no pass of
/// the dual phase completes and the cutover is never recorded. New clients connect
/// meanwhile; none of them may reach the destination (it is not routed and refuses writes), so
/// the flip back discards it without a drain back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flip_back_during_dual_write_dual_read_aborts_and_loses_nothing() {
    let mut world = scenario::world_with_instance("abort-dual", Tier::Shared, "Consume", 2)
        .await
        .unwrap();
    let target = world.instance_target(NS, NAME).await.unwrap();
    let mut load = Load::start(load_config(target)).await.unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    while load.stats().received < 50 {
        assert!(
            Instant::now() < until,
            "load did not start: {:?}",
            load.stats()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recorder = PhaseRecorder::start(world.instances(NS), NAME);
    let faults = world.cluster.api().faults();
    let holder = {
        let api = world.instances(NS);
        let faults = faults.clone();
        tokio::spawn(async move {
            let reached = reached_phase(api, NAME, &[MigrationPhase::DualWriteDualRead]).await;
            if reached {
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
    let held = tokio::time::timeout(Duration::from_secs(90), holder)
        .await
        .expect("DualWriteDualRead reached")
        .unwrap();
    assert!(held);
    // New clients while dual: they must all land on the source.
    load.add_publishers(2);
    load.add_consumers(2);
    // Which of them the dedicated cluster serves (its management API lists them).
    let dest = world.management(NS, &dedicated()).await.unwrap();
    let mut on_dest = Vec::new();
    let until = Instant::now() + Duration::from_secs(8);
    while on_dest.is_empty() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(500)).await;
        on_dest = dest
            .list_connections(TENANT)
            .await
            .unwrap_or_default()
            .iter()
            .filter_map(|c| c.client_name().map(str::to_string))
            .collect();
    }
    assert!(
        on_dest.is_empty(),
        "clients stay on the source until the write cutover; on the destination: {on_dest:?}"
    );
    let phases = recorder.phases();
    assert_eq!(
        recorder.current(),
        Some(MigrationPhase::DualWriteDualRead),
        "still dual: {phases:?}"
    );
    flip_tier(&world.kubectl, NS, NAME, "Shared").await.unwrap();
    faults.clear();
    println!("flipped back during DualWriteDualRead");
    let done = world
        .wait_status(
            NS,
            NAME,
            "the abort finishes",
            Duration::from_secs(120),
            |s| s.migration_phase == Some(MigrationPhase::Stable) && !s.history.is_empty(),
        )
        .await
        .unwrap();
    let seq = conversion_sequence(&recorder.phases());
    println!("phases: {seq:?}");
    let rec = done.history.last().unwrap();
    assert_eq!(rec.outcome, MigrationOutcome::Aborted, "{rec:?}");
    assert_eq!(done.tier, Some(Tier::Shared));
    assert_eq!(
        seq,
        [
            MigrationPhase::PreparingDestination,
            MigrationPhase::DualWriteDualRead,
            MigrationPhase::Aborting
        ]
    );
    let before = load.stats().received;
    let flowing = wait_until(Duration::from_secs(20), || async {
        load.stats().received > before + 50
    })
    .await;
    assert!(flowing, "load continues after the abort");
    load.stop_publishing();
    let report = load.finish(Duration::from_secs(60)).await;
    println!(
        "abort during dual: load {report}; reasons {:?}",
        report.reasons()
    );
    assert_eq!(report.lost, 0, "lost: {:?}", report.lost_sample);
    let gone = wait_until(Duration::from_secs(30), || async {
        !world.statefulset_exists(NS, &dedicated()).await.unwrap()
    })
    .await;
    assert!(gone, "the dedicated cluster is removed after the abort");
}

/// Queues a conversion cannot move hold the flip with a condition naming them and the way out,
/// and the flip proceeds once the cause is gone: a stream with history (until it is deleted), a
/// short TTL without dead-lettering (until it is deleted), a length limit that drops the oldest
/// messages (until `allowLimitDrops` says the tenant accepts it).
/// A work queue runs through it all and loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queues_that_cannot_move_hold_the_flip_and_name_the_queue() {
    use lapin::options::{BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions};
    use lapin::types::{AMQPValue, FieldTable};
    let mut world = scenario::world_with_instance("held-queues", Tier::Shared, "Consume", 2)
        .await
        .unwrap();
    let target = world.instance_target(NS, NAME).await.unwrap();
    let conn = tiermq_tests::load::probe_connection(&target, "setup", Duration::from_secs(10))
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut stream_args = FieldTable::default();
    stream_args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("stream".into()),
    );
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare("history".into(), durable, stream_args)
        .await
        .unwrap();
    for _ in 0..5 {
        ch.basic_publish(
            "".into(),
            "history".into(),
            BasicPublishOptions::default(),
            b"event",
            Default::default(),
        )
        .await
        .unwrap();
    }
    let mut ttl_args = FieldTable::default();
    ttl_args.insert("x-message-ttl".into(), AMQPValue::LongInt(10_000));
    ch.queue_declare("short-ttl".into(), durable, ttl_args)
        .await
        .unwrap();
    let mut bounded_args = FieldTable::default();
    bounded_args.insert("x-max-length".into(), AMQPValue::LongInt(100));
    ch.queue_declare("bounded".into(), durable, bounded_args)
        .await
        .unwrap();
    let load = Load::start(load_config(target.clone())).await.unwrap();

    let held_by = |queue: &'static str| {
        move |s: &tiermq_crd::RabbitMQInstanceStatus| {
            s.conditions.iter().any(|c| {
                c.type_ == "ConversionBlocked"
                    && c.status == "True"
                    && c.reason == "QueueCannotMove"
                    && c.message.contains(queue)
            })
        }
    };
    flip_tier(&world.kubectl, NS, NAME, "Dedicated")
        .await
        .unwrap();
    let s = world
        .wait_status(
            NS,
            NAME,
            "held by the stream",
            Duration::from_secs(60),
            held_by("history"),
        )
        .await
        .unwrap();
    // Held at the flip (Blocked), or, when the stream's statistics were not in yet at the flip,
    // right before the write cutover (still DualWriteDualRead: clients stay on the source).
    assert!(
        matches!(
            s.migration_phase,
            Some(MigrationPhase::Blocked | MigrationPhase::DualWriteDualRead)
        ),
        "{:?}",
        s.migration_phase
    );
    let msg = &s
        .conditions
        .iter()
        .find(|c| c.type_ == "ConversionBlocked")
        .unwrap()
        .message;
    println!("held: {msg}");
    assert!(msg.contains("flip spec.tier back"), "{msg}");
    // kubectl shows it too.
    let shown = world
        .kubectl
        .ok(
            &[
                "-n",
                NS,
                "get",
                "rmqi",
                NAME,
                "-o",
                "jsonpath={.status.conditions}",
            ],
            None,
        )
        .await
        .unwrap();
    assert!(shown.contains("QueueCannotMove"), "{shown}");

    // The stream goes: the TTL queue holds the flip next.
    ch.queue_delete("history".into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    let s = world
        .wait_status(
            NS,
            NAME,
            "held by the TTL queue",
            Duration::from_secs(60),
            held_by("short-ttl"),
        )
        .await
        .unwrap();
    let msg = &s
        .conditions
        .iter()
        .find(|c| c.type_ == "ConversionBlocked")
        .unwrap()
        .message;
    assert!(msg.contains("allowLimitDrops"), "{msg}");

    // The TTL queue goes: the length-limited queue holds the flip next.
    ch.queue_delete("short-ttl".into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    let s = world
        .wait_status(
            NS,
            NAME,
            "held by the length-limited queue",
            Duration::from_secs(60),
            held_by("bounded"),
        )
        .await
        .unwrap();
    let msg = &s
        .conditions
        .iter()
        .find(|c| c.type_ == "ConversionBlocked")
        .unwrap()
        .message;
    assert!(
        msg.contains("drop-head") && msg.contains("allowLimitDrops"),
        "{msg}"
    );
    let _ = conn.close(200, "done".into()).await;

    // The tenant accepts drops by its limits: the conversion runs.
    tiermq_tests::harness::patch_instance(
        &world.kubectl,
        NS,
        NAME,
        r#"{"spec":{"migration":{"allowLimitDrops":true}}}"#,
    )
    .await
    .unwrap();
    let done = world
        .wait_status(
            NS,
            NAME,
            "the conversion completes",
            Duration::from_secs(150),
            |s| {
                s.tier == Some(Tier::Dedicated) && s.migration_phase == Some(MigrationPhase::Stable)
            },
        )
        .await
        .unwrap();
    assert_eq!(
        done.history.last().map(|h| h.outcome),
        Some(MigrationOutcome::Completed)
    );
    load.stop_publishing();
    let report = load.finish(Duration::from_secs(60)).await;
    println!("held queues: load {report}");
    assert_eq!(report.lost, 0, "lost: {:?}", report.lost_sample);
}

mod matrix {
    use super::*;

    /// Auto-tiering end to end (~1.5 min, so outside `make test`): a shared instance with
    /// `spec.autoTiering` (upgrade at 10 msg/s sustained for 15 s) stays shared while idle, then
    /// under ~50 msg/s of confirmed load the operator sets `spec.tier` to Dedicated itself, says
    /// why in an Event and in `status.autoTiering`, and the conversion it started loses nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sustained_load_upgrades_an_auto_tiered_instance_and_loses_nothing() {
        let mut world = scenario::world_with_instance("auto-tier", Tier::Shared, "Consume", 2)
            .await
            .unwrap();
        let k = world.kubectl.clone();
        let auto = r#"{"spec":{"autoTiering":{"upgrade":{"publishRate":10,"forSeconds":15},"cooldownSeconds":0}}}"#;
        tiermq_tests::harness::patch_instance(&k, NS, NAME, auto)
            .await
            .unwrap();
        // Idle for longer than the sustain time: nothing changes.
        let idle_until = Instant::now() + Duration::from_secs(25);
        while Instant::now() < idle_until {
            if let Some(op) = world.operator.as_mut() {
                op.tend().unwrap();
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let i = world.instances(NS).get(NAME).await.unwrap();
        assert_eq!(
            i.spec.tier,
            Tier::Shared,
            "an idle instance is not upgraded"
        );
        let seen = i.status.unwrap_or_default().auto_tiering;
        assert!(
            seen.as_ref().is_some_and(|s| s.crossed_since.is_none()),
            "the operator looked at the idle tenant and saw nothing crossed: {seen:?}"
        );

        let target = world.instance_target(NS, NAME).await.unwrap();
        let load = Load::start(load_config(target)).await.unwrap();
        wait_for_flow(&load).await;
        let loaded_at = Instant::now();
        let flipped = world
            .wait_status(
                NS,
                NAME,
                "a conversion to Dedicated",
                Duration::from_secs(90),
                |s| {
                    s.migration
                        .as_ref()
                        .is_some_and(|m| m.to == Tier::Dedicated)
                },
            )
            .await
            .unwrap();
        println!(
            "auto-tier: conversion started {:.1}s after the load flowed; status.autoTiering: {:?}",
            loaded_at.elapsed().as_secs_f64(),
            flipped.auto_tiering
        );
        let i = world.instances(NS).get(NAME).await.unwrap();
        assert_eq!(i.spec.tier, Tier::Dedicated, "the operator set spec.tier");
        let reason = flipped
            .auto_tiering
            .and_then(|a| a.last_change_reason)
            .unwrap_or_default();
        assert!(
            reason.contains("publishRate >= 10/s") && reason.contains("msg/s published"),
            "{reason}"
        );
        let done = world
            .wait_status(
                NS,
                NAME,
                "Stable on Dedicated",
                Duration::from_secs(150),
                |s| {
                    s.tier == Some(Tier::Dedicated)
                        && s.migration_phase == Some(MigrationPhase::Stable)
                        && !s.history.is_empty()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            done.history.last().unwrap().outcome,
            MigrationOutcome::Completed
        );
        load.stop_publishing();
        let report = load.finish(Duration::from_secs(60)).await;
        println!("auto-tier: load {report}");
        assert_eq!(report.lost, 0, "lost: {:?}", report.lost_sample);
        assert!(report.stats.confirmed > 500, "the load ran: {report}");
        let described = k
            .ok(&["-n", NS, "describe", "rmqi", NAME], None)
            .await
            .unwrap();
        let events = described.split("Events:").nth(1).unwrap_or_default();
        assert!(
            events.lines().any(|l| l.contains("AutoTiered")),
            "an AutoTiered Event: {events}"
        );
        // No downgrade thresholds: load gone, it stays dedicated.
        tokio::time::sleep(Duration::from_secs(20)).await;
        let i = world.instances(NS).get(NAME).await.unwrap();
        assert_eq!(
            i.spec.tier,
            Tier::Dedicated,
            "never downgraded unless opted in"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn flip_while_not_in_service_is_held_then_proceeds_and_kubectl_shows_it() {
        let mut world = scenario::world_with_instance("held-flip", Tier::Shared, "Consume", 2)
            .await
            .unwrap();
        let k = world.kubectl.clone();

        // A series change is refused at admission with the CEL rule's message.
        let out = k
            .run(
                &[
                    "-n",
                    NS,
                    "patch",
                    "rmqi",
                    NAME,
                    "--type",
                    "merge",
                    "-p",
                    r#"{"spec":{"series":"Serverless"}}"#,
                ],
                None,
            )
            .await
            .unwrap();
        assert!(!out.success, "series change accepted: {}", out.stdout);
        assert!(
            out.stderr.contains(SERIES_IMMUTABLE_MESSAGE),
            "CEL message shown: {}",
            out.stderr
        );
        let mut spec = tiermq_tests::harness::InstanceSpec {
            namespace: NS,
            name: NAME,
            tier: "Shared",
            drain_strategy: "Consume",
            grace_period_seconds: 2,
            connection_policy: None,
        }
        .yaml();
        spec = spec.replace("series: Subscription", "series: Serverless");
        let out = k.run(&["apply", "-f", "-"], Some(&spec)).await.unwrap();
        assert!(
            !out.success && out.stderr.contains(SERIES_IMMUTABLE_MESSAGE),
            "kubectl apply of a series change refused with the CEL message: {}",
            out.stderr
        );
        println!("series change refused: {}", out.stderr.trim());

        // Take the shared broker down: its pod is deleted and comes back after a broker start.
        let recorder = PhaseRecorder::start(world.instances(NS), NAME);
        k.ok(
            &[
                "-n",
                "tiermq-system",
                "delete",
                "pod",
                "main-0",
                "--wait=false",
            ],
            None,
        )
        .await
        .unwrap();
        let down = wait_until(Duration::from_secs(20), || async {
            let r = k
                .ok(
                    &[
                        "-n",
                        "tiermq-system",
                        "get",
                        "statefulset",
                        "main",
                        "-o",
                        "jsonpath={.status.readyReplicas}",
                    ],
                    None,
                )
                .await
                .unwrap_or_default();
            r.trim().is_empty() || r.trim() == "0"
        })
        .await;
        assert!(
            down,
            "the shared cluster's StatefulSet reports no ready replica"
        );
        let flipped = Instant::now();
        flip_tier(&k, NS, NAME, "Dedicated").await.unwrap();

        let held = world
            .wait_status(
                NS,
                NAME,
                "the flip held with ConversionBlocked",
                Duration::from_secs(20),
                |s| {
                    s.migration_phase == Some(MigrationPhase::Blocked)
                        && s.conditions
                            .iter()
                            .any(|c| c.type_ == "ConversionBlocked" && c.status == "True")
                },
            )
            .await
            .unwrap();
        let cond = held
            .conditions
            .iter()
            .find(|c| c.type_ == "ConversionBlocked")
            .unwrap();
        println!(
            "held after {:.1}s: {} - {}",
            flipped.elapsed().as_secs_f64(),
            cond.reason,
            cond.message
        );
        assert_eq!(cond.reason, "InstanceNotInService");
        assert!(
            cond.message.contains("held") && cond.message.contains("not in service"),
            "clear message: {}",
            cond.message
        );

        // `kubectl get rmqi` shows the tier, phase and migration columns while it is held.
        let table = k.ok(&["-n", NS, "get", "rmqi"], None).await.unwrap();
        println!("{table}");
        let header = table.lines().next().unwrap_or_default();
        for col in ["NAME", "TIER", "PHASE", "MIGRATION", "AGE"] {
            assert!(header.contains(col), "column {col} in {header}");
        }
        assert!(table.contains("Blocked"), "{table}");

        // Once the broker is back the conversion proceeds on its own and completes.
        let done = world
            .wait_status(
                NS,
                NAME,
                "the held conversion completes",
                Duration::from_secs(150),
                |s| {
                    s.tier == Some(Tier::Dedicated)
                        && s.migration_phase == Some(MigrationPhase::Stable)
                        && !s.history.is_empty()
                },
            )
            .await
            .unwrap();
        let seq = conversion_sequence(&recorder.phases());
        println!(
            "phases after the flip: {seq:?} in {:.1}s",
            flipped.elapsed().as_secs_f64()
        );
        assert_eq!(seq.first(), Some(&MigrationPhase::Blocked));
        assert_eq!(
            tiermq_tests::harness::collapse_drain_retries(&seq[1..]),
            tiermq_tests::harness::CONVERSION_PHASES,
            "proceeds through every phase once in service"
        );
        assert_eq!(
            done.history.last().unwrap().outcome,
            MigrationOutcome::Completed
        );
        assert!(
            !done
                .conditions
                .iter()
                .any(|c| c.type_ == "ConversionBlocked" && c.status == "True"),
            "the block is lifted"
        );

        let table = k.ok(&["-n", NS, "get", "rmqi", NAME], None).await.unwrap();
        println!("{table}");
        let row = table.lines().nth(1).unwrap_or_default();
        assert!(
            row.contains("Dedicated") && row.contains("Ready") && row.contains("Stable"),
            "{row}"
        );
        // `kubectl describe` shows the Events of the conversion.
        let described = k
            .ok(&["-n", NS, "describe", "rmqi", NAME], None)
            .await
            .unwrap();
        let events = described.split("Events:").nth(1).unwrap_or_default();
        println!("Events:{events}");
        assert!(
            events
                .lines()
                .filter(|l| l.contains("Normal") || l.contains("Warning"))
                .count()
                >= 3,
            "Events listed: {events}"
        );
    }
}

/// `--max-concurrent-conversions 1` with two instances flipped at once: never two conversions at
/// the same time; the second is held (`ConversionBlocked`, `ConversionLimitReached`, next in
/// line) and starts once the first ends, woken by it rather than by its 30 s requeue.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_conversion_limit_holds_the_second_flip_until_the_first_ends() {
    let names = ["orders", "billing"];
    let world = scenario::world_with_instances_run_with(
        tiermq_tests::harness::World::start("conversion-limit")
            .await
            .unwrap(),
        &names,
        Tier::Shared,
        "Shovel",
        1,
        tiermq_tests::harness::IMAGE_3_10,
        &["--max-concurrent-conversions", "1"],
    )
    .await
    .unwrap();
    for name in names {
        flip_tier(&world.kubectl, NS, name, "Dedicated")
            .await
            .unwrap();
    }
    let start = Instant::now();
    let mut held_seen = None;
    let mut ended = Vec::new();
    let mut started: Vec<(&str, Duration)> = Vec::new();
    while ended.len() < names.len() {
        assert!(
            start.elapsed() < Duration::from_secs(420),
            "conversions did not finish: started {started:?}, ended {ended:?}\n{}",
            world.operator_log_tail(30)
        );
        let mut running = Vec::new();
        for name in names {
            let s = world.status(NS, name).await.unwrap();
            if s.migration.is_some() {
                running.push(name);
                if !started.iter().any(|(n, _)| *n == name) {
                    started.push((name, start.elapsed()));
                }
            }
            if let Some(c) = s.conditions.iter().find(|c| {
                c.type_ == "ConversionBlocked"
                    && c.status == "True"
                    && c.reason == "ConversionLimitReached"
            }) {
                held_seen.get_or_insert((name, c.message.clone()));
            }
            let done = s.tier == Some(Tier::Dedicated)
                && s.migration_phase == Some(MigrationPhase::Stable)
                && s.migration.is_none();
            if done && !ended.iter().any(|(n, _)| *n == name) {
                ended.push((name, start.elapsed()));
            }
        }
        assert!(
            running.len() <= 1,
            "two conversions at once: {running:?} (limit 1)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("started {started:?}; ended {ended:?}; held {held_seen:?}");
    let (held, msg) = held_seen.expect("the second flip was held for a slot");
    assert!(
        msg.contains("1 of at most 1 run at once") && msg.contains("it is next"),
        "{msg}"
    );
    let (first, first_end) = ended[0];
    assert_ne!(held, first, "the held flip is not the one that ran first");
    let second_start = started
        .iter()
        .find(|(n, _)| *n == held)
        .map(|(_, t)| *t)
        .expect("the held conversion started");
    let waited = second_start.saturating_sub(first_end);
    println!("the held flip started {waited:?} after the first conversion ended");
    // Woken by the end of the first (its fallback requeue would be 30 s).
    assert!(
        waited < Duration::from_secs(20),
        "the held flip waited {waited:?} after a slot freed"
    );
}
