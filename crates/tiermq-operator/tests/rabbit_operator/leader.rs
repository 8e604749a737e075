//! Leader election against kubesim's real API server (no broker): one leader at a time, a clean
//! release hands over at once, and a leader that cannot renew gives up within its renew deadline
//! — before anyone else may take over — and can no longer confirm destructive steps.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use tiermq_operator::leader::{Leadership, Timings};
use tokio::sync::watch;

const NS: &str = "tiermq-system";
const LEASE: &str = "tiermq-test";

fn fast() -> Timings {
    Timings {
        lease_duration: Duration::from_secs(3),
        renew_deadline: Duration::from_secs(2),
        retry_period: Duration::from_millis(300),
    }
}

async fn until(what: &str, within: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < within, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

/// A kubesim cluster (no broker) with the Lease's namespace; keep the folder while it runs.
async fn cluster_with_namespace() -> (kubesim::cluster::Cluster, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cluster = kubesim::cluster::start(kubesim::cluster::ClusterConfig::new(dir.path()))
        .await
        .unwrap();
    let _ = Api::<Namespace>::all(cluster.client())
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": NS}})).unwrap(),
        )
        .await;
    (cluster, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_leader_at_a_time_a_release_hands_over_and_a_cut_off_leader_steps_down_in_time() {
    let (cluster, _dir) = cluster_with_namespace().await;
    let client = cluster.client();
    let (stop_tx, stop) = watch::channel(false);
    let a = Leadership::new(client.clone(), NS, LEASE, "a", fast());
    let b = Leadership::new(client.clone(), NS, LEASE, "b", fast());
    let (ra, rb) = (a.subscribe(), b.subscribe());
    let ta = tokio::spawn(a.clone().run(stop.clone()));
    until("a leads", Duration::from_secs(5), || *ra.borrow()).await;
    let tb = tokio::spawn(b.clone().run(stop.clone()));
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(*ra.borrow() && !*rb.borrow(), "exactly one leader");
    a.confirm().await.expect("the leader confirms");
    assert!(b.confirm().await.is_err(), "a follower never confirms");

    // A clean release: b takes over at once, not after the lease duration.
    a.release().await;
    ta.abort();
    let took = until("b leads after a's release", Duration::from_secs(3), || {
        *rb.borrow()
    })
    .await;
    println!("handover after a release: {took:?}");

    // b is cut off from writing its Lease: it gives up within the renew deadline (2 s) plus one
    // retry, before the lease (3 s after its last renewal) could pass to anyone.
    let faults = cluster.api().faults();
    faults.fail_writes("coordination.k8s.io", "leases", Some(LEASE), 1000, 503);
    let cut = Instant::now();
    let gave_up = until("b steps down", Duration::from_secs(4), || !*rb.borrow()).await;
    println!("a leader unable to renew stepped down after {gave_up:?}");
    assert!(
        gave_up < fast().lease_duration,
        "stepped down after {gave_up:?}, not before the lease of {:?} ran out",
        fast().lease_duration
    );
    let err = b.confirm().await.unwrap_err();
    println!("confirm after stepping down: {err}");
    // The stored Lease still names b (nobody could write it): a renewed within neither.
    let lease = Api::<Lease>::namespaced(client.clone(), NS)
        .get(LEASE)
        .await
        .unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some("b"),
        "no other replica took the Lease while writes failed ({:?} since the cut)",
        cut.elapsed()
    );
    let _ = stop_tx.send(true);
    let _ = tb.await;
    cluster.shutdown().await;
}

/// A release is final, also when it lands while the elector is mid-round (here rounds run every
/// 40 ms and the elector is still running): it may not read the emptied record and take the
/// Lease straight back. CI once saw that race in the test above: b waited a whole lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_release_is_final_even_while_the_elector_runs() {
    let (cluster, _dir) = cluster_with_namespace().await;
    let client = cluster.client();
    let busy = Timings {
        lease_duration: Duration::from_secs(3),
        renew_deadline: Duration::from_secs(2),
        retry_period: Duration::from_millis(40),
    };
    let leases = Api::<Lease>::namespaced(client.clone(), NS);
    for round in 0..10 {
        let name = format!("{LEASE}-{round}");
        let (stop_tx, stop) = watch::channel(false);
        let a = Leadership::new(client.clone(), NS, &name, "a", busy);
        let ra = a.subscribe();
        let ta = tokio::spawn(a.clone().run(stop));
        until("a leads", Duration::from_secs(5), || *ra.borrow()).await;
        // Let a few renewals pass so the release lands at a different point of a round each time.
        tokio::time::sleep(Duration::from_millis(20 + 7 * round)).await;
        a.release().await;
        // Rounds would have run many times over in this while.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let holder = leases
            .get(&name)
            .await
            .unwrap()
            .spec
            .and_then(|s| s.holder_identity);
        assert_eq!(
            holder, None,
            "attempt {round}: the released Lease stays free"
        );
        assert!(!*ra.borrow(), "attempt {round}: a no longer leads");
        let _ = stop_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), ta).await;
    }
    cluster.shutdown().await;
}
