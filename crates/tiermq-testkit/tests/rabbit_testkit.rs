//! The harness itself, against real nodes of each runtime (RabbitMQ 3.10 from the host, 4.0 from
//! the Debian 13 root): parallel start, clustering, and that nodes are always stopped — when
//! dropped, when the owning test panics, and when the owning process is killed outright.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tiermq_testkit::{BrokerRuntime, RabbitNode, start_nodes_on, test_each_runtime};

fn alive(pid: u32) -> bool {
    // A zombie has exited: only its parent's wait is missing.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(") ")
            .is_some_and(|(_, r)| !r.starts_with('Z'))
    })
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

/// The release the node's management API reports.
async fn version(node: &RabbitNode) -> String {
    let body: serde_json::Value = tiermq_testkit::tls::http_client()
        .get(format!("{}/api/overview", node.management_url()))
        .basic_auth(&node.admin().username, Some(&node.admin().password))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["rabbitmq_version"].as_str().unwrap().to_string()
}

/// Mount points the host sees at or below `dir`.
fn mounts_below(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .filter(|m| Path::new(m).starts_with(dir))
        .map(String::from)
        .collect()
}

/// Where a 4.0 node's folder is bound inside the root; `None` for 3.10.
fn mount_point(runtime: BrokerRuntime, base: &Path) -> Option<PathBuf> {
    let base = std::fs::canonicalize(base).unwrap_or_else(|_| base.to_path_buf());
    runtime
        .root()
        .map(|root| root.join(base.strip_prefix("/").unwrap()))
}

async fn two_nodes_start_in_parallel_cluster_and_are_stopped_on_drop(runtime: BrokerRuntime) {
    let nodes = start_nodes_on(runtime, 2).await.expect("start two nodes");
    let (a, b) = (&nodes[0], &nodes[1]);
    assert_eq!(a.runtime(), runtime);
    let v = version(a).await;
    assert!(runtime.matches_version(&v), "{runtime} node reports {v}");
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
    // The node's mounts (4.0: proc and its folder) live in its own namespace, never the host's.
    if let Some(root) = runtime.root() {
        assert_eq!(mounts_below(&root), Vec::<String>::new());
    }

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
    let points: Vec<_> = nodes
        .iter()
        .filter_map(|n| mount_point(runtime, &n.config().base_dir))
        .collect();
    drop(nodes);
    for pid in pids {
        assert!(
            wait_gone(pid).await,
            "node process {pid} still running after drop"
        );
    }
    for p in points {
        assert!(!p.exists(), "mount point {} left in the root", p.display());
    }
}
test_each_runtime!(two_nodes_start_in_parallel_cluster_and_are_stopped_on_drop);

/// Clustering at the testkit level, opt-in (`make test-faults`, or `--profile full`): kubesim's
/// `two_replicas_form_a_rabbitmq_cluster` covers clustering in `make test`, and
/// `two_nodes_start_in_parallel_cluster_and_are_stopped_on_drop` the mount-point cleanup.
mod matrix {
    use super::*;

    async fn nodes_sharing_a_cookie_form_a_real_cluster(runtime: BrokerRuntime) {
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
        let a = RabbitNode::start_on(runtime, configs[0].clone()).unwrap();
        let b = RabbitNode::start_on(runtime, configs[1].clone()).unwrap();
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
        let v = version(&b).await;
        assert!(runtime.matches_version(&v), "{runtime} node reports {v}");
        // The folders a 4.0 start made inside the root for these mount points (the temp dir's own
        // and one per node) go with the nodes; nothing of the host's folder stays in the root.
        let inside = mount_point(runtime, dir.path());
        drop((a, b));
        if let Some(inside) = inside {
            assert!(!inside.exists(), "{} left in the root", inside.display());
        }
    }
    test_each_runtime!(nodes_sharing_a_cookie_form_a_real_cluster);
}

async fn a_panicking_test_still_stops_its_node(runtime: BrokerRuntime) {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let node = tiermq_testkit::start_test_node_on(runtime)
                .await
                .expect("start node");
            tx.send(node.pid()).unwrap();
            panic!("simulated test failure while the node runs");
        });
    });
    assert!(handle.join().is_err(), "the thread panicked");
    let pid = rx.recv().unwrap();
    assert!(wait_gone(pid).await, "node {pid} survived a panic");
}
test_each_runtime!(a_panicking_test_still_stops_its_node);

const OWNER_ENV: &str = "TIERMQ_TESTKIT_OWNER_OF";

/// Not a test of its own: the process [`a_killed_owner_leaves_a_node_that_the_next_start_sweeps`]
/// starts and then kills with SIGKILL. It starts a node, reports its pid and folder on stdout,
/// and waits to be killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper process of a_killed_owner_leaves_a_node_that_the_next_start_sweeps"]
async fn owner_process_for_the_sweep_test() {
    let runtime = match std::env::var(OWNER_ENV).as_deref() {
        Ok("3.10") => BrokerRuntime::Host310,
        Ok("4.0") => BrokerRuntime::Debian13V40,
        _ => return,
    };
    let node = tiermq_testkit::start_test_node_on(runtime).await.unwrap();
    println!(
        "OWNED-NODE {} {}",
        node.pid(),
        node.config().base_dir.display()
    );
    tokio::time::sleep(Duration::from_secs(120)).await;
}

async fn a_killed_owner_leaves_a_node_that_the_next_start_sweeps(runtime: BrokerRuntime) {
    use tokio::io::AsyncBufReadExt;
    let mut owner = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "owner_process_for_the_sweep_test",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(OWNER_ENV, runtime.series())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(owner.stdout.take().unwrap()).lines();
    let (pid, base) = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            // libtest may print "test <name> ... " on the same line first.
            if let Some((_, rest)) = line.split_once("OWNED-NODE ") {
                let (pid, base) = rest.split_once(' ').unwrap();
                return (pid.parse::<u32>().unwrap(), PathBuf::from(base));
            }
        }
        panic!("the owner process ended without starting a node");
    })
    .await
    .expect("the owner process started a node");
    let point = mount_point(runtime, &base);

    // SIGKILL: no destructor runs, the node is orphaned and keeps running.
    owner.start_kill().unwrap();
    owner.wait().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(alive(pid), "the orphaned node {pid} runs on");

    tiermq_testkit::sweep_stale_nodes();
    assert!(wait_gone(pid).await, "the sweep stopped orphan {pid}");
    assert!(
        !base.exists(),
        "the orphan's folder {} is gone",
        base.display()
    );
    if let Some(point) = point {
        assert!(!point.exists(), "mount point {} is gone", point.display());
    }
    if let Some(root) = runtime.root() {
        assert_eq!(mounts_below(&root), Vec::<String>::new());
    }
}
test_each_runtime!(a_killed_owner_leaves_a_node_that_the_next_start_sweeps);
