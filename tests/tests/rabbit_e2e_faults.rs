//! The operator crashes, and the conversion completes anyway with nothing lost, nothing
//! duplicated and nothing left behind.
//!
//! Two kinds of crash, both with the operator restarted at once as a kubelet would:
//! - **before every status write that records a phase change**: the operator's test hook
//!   (`tiermq_operator::fault`) aborts the process right after a pass's steps ran and before the
//!   status write that records them, once per phase: the worst moment for a crash, in every
//!   phase;
//! - **a crash loop**: SIGKILL every 3–6 s for the whole conversion (every retirement step must be
//!   short and recorded, or the loop never converges).
//!
//! `make test` runs one representative (an upgrade with a crash before every status write);
//! `make test-faults` runs the matrix (module `matrix`): both directions × both drains, an abort,
//! and the crash loop both ways.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::ListParams;
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
    let slices: Vec<String> = Api::<EndpointSlice>::namespaced(c, NS)
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={NAME}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|s| s.metadata.name.unwrap_or_default())
        .collect();
    assert_eq!(
        slices.len(),
        1,
        "one EndpointSlice for the instance: {slices:?}"
    );
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
            kill_every: Some((Duration::from_secs(3), Duration::from_secs(6))),
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
        assert!(kills >= 3, "the crash loop ran: {kills} kills");
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

/// The fault matrix, opt-in (`make test-faults`).
mod matrix {
    use super::*;

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

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn an_upgrade_completes_with_the_operator_killed_every_3_to_6_seconds() {
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
    async fn a_downgrade_completes_with_the_operator_killed_every_3_to_6_seconds() {
        crashing_conversion(
            "crash-loop-downgrade",
            Tier::Dedicated,
            Tier::Shared,
            "Shovel",
            true,
        )
        .await;
    }
}
