//! The harness itself, against real nodes: parallel start, clustering, and that nodes are always
//! stopped — when dropped and when the owning test panics.

use std::path::Path;
use std::time::Duration;

use tiermq_testkit::{RabbitNode, start_nodes};

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

async fn wait_gone(pid: u32) -> bool {
    for _ in 0..50 {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_start_in_parallel_cluster_and_are_stopped_on_drop() {
    let nodes = start_nodes(2).await.expect("start two nodes");
    let (a, b) = (&nodes[0], &nodes[1]);
    assert_ne!(
        a.config().ip,
        b.config().ip,
        "each node gets its own loopback IP"
    );
    assert_ne!(a.node_name(), b.node_name());
    a.probe().await.expect("a answers");
    b.probe().await.expect("b answers");
    tokio::net::TcpStream::connect(a.amqp_address())
        .await
        .expect("AMQP listener is up");

    // Clustering needs a shared cookie; test nodes get random ones, so give b a's cookie.
    let err = b
        .join_cluster(a)
        .await
        .expect_err("different cookies cannot cluster");
    assert!(
        err.to_string().contains("different Erlang cookies"),
        "{err}"
    );

    // A graceful stop ends the node (SIGTERM, then SIGKILL after the grace period).
    a.stop(Duration::from_secs(20)).await;
    assert!(!a.is_running());
    assert!(
        wait_gone(a.pid()).await,
        "node {} still running after stop",
        a.pid()
    );
    assert!(b.is_running());

    let pids: Vec<u32> = nodes.iter().map(RabbitNode::pid).collect();
    drop(nodes);
    for pid in pids {
        assert!(
            wait_gone(pid).await,
            "node process {pid} still running after drop"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_sharing_a_cookie_form_a_real_cluster() {
    let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let leases = [
        tiermq_testkit::IpLease::acquire().unwrap(),
        tiermq_testkit::IpLease::acquire().unwrap(),
    ];
    let mut configs = Vec::new();
    for (i, lease) in leases.iter().enumerate() {
        let base = dir.path().join(format!("n{i}"));
        let mut cfg = tiermq_testkit::NodeConfig::for_test(
            format!("cl{}-{i}", std::process::id()),
            lease.ip(),
            base,
        );
        if let Some(first) = configs.first() {
            let first: &tiermq_testkit::NodeConfig = first;
            cfg.erlang_cookie = first.erlang_cookie.clone();
            cfg.config = first.config.clone();
            cfg.admin = first.admin.clone();
        }
        configs.push(cfg);
    }
    // Let the rabbitmq user reach the folders below the temp dir.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let a = RabbitNode::start(configs[0].clone()).unwrap();
    let b = RabbitNode::start(configs[1].clone()).unwrap();
    let ready = tiermq_testkit::READY_TIMEOUT;
    a.wait_ready(ready).await.unwrap();
    b.wait_ready(ready).await.unwrap();
    b.join_cluster(&a).await.expect("join cluster");
    let status = a.rabbitmqctl(&["cluster_status"]).await.unwrap();
    assert!(
        status.contains(&a.node_name()) && status.contains(&b.node_name()),
        "{status}"
    );
    // A second node in the cluster sees the same users: the admin from a's config logs in on b.
    b.wait_ready(ready)
        .await
        .expect("b serves the management API after joining");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_test_still_stops_its_node() {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let node = tiermq_testkit::start_test_node().await.expect("start node");
            tx.send(node.pid()).unwrap();
            panic!("simulated test failure while the node runs");
        });
    });
    assert!(handle.join().is_err(), "the thread panicked");
    let pid = rx.recv().unwrap();
    assert!(wait_gone(pid).await, "node {pid} survived a panic");
}
