//! The ConfigMap the builders write is a configuration RabbitMQ 3.10 really boots with: every
//! `rabbitmq.conf` key is known to the broker (it refuses to start otherwise), the plugins exist
//! and run, and the statistics interval takes effect.
//!
//! The node runs as kubesim's kubelet would run a pod: the ConfigMap's `rabbitmq.conf` plus the
//! admin user the pod gets from `RABBITMQ_DEFAULT_USER`/`PASS`, and the ConfigMap's
//! `enabled_plugins`. The classic-config peers (pod DNS names) do not resolve here, which also
//! shows that the first node of a new cluster boots on its own.

use std::time::Duration;

use tiermq_crd::SharedCluster;
use tiermq_operator::build::{self, BrokerCluster, config_map};
use tiermq_testkit::{IpLease, NodeConfig, RabbitNode};

fn shared_cluster() -> SharedCluster {
    let mut sc = SharedCluster::new(
        "main",
        serde_json::from_value(serde_json::json!({"replicas": 3})).unwrap(),
    );
    sc.metadata.namespace = Some("tiermq".into());
    sc.metadata.uid = Some("uid-1".into());
    sc
}

/// `[a,b].` → names (the Erlang list the ConfigMap carries).
fn plugin_names(text: &str) -> Vec<String> {
    let inner = text.trim().strip_suffix('.').expect("ends with a dot");
    let inner = inner
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .expect("a list");
    inner.split(',').map(|p| p.trim().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_config_map_boots_rabbitmq_with_the_migration_plugins() {
    let mut cluster = BrokerCluster::for_shared_cluster(&shared_cluster()).unwrap();
    cluster.stats_interval_ms = 700;
    let cm = config_map::build(&cluster);
    let data = cm.data.unwrap();
    let conf = &data[config_map::KEY_RABBITMQ_CONF];
    let plugins = plugin_names(&data[config_map::KEY_ENABLED_PLUGINS]);
    assert!(
        conf.contains("cluster_formation.classic_config.nodes.3"),
        "{conf}"
    );

    let lease = IpLease::acquire().expect("loopback IP");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut node_cfg = NodeConfig::for_test(
        format!("cfg{}", std::process::id()),
        lease.ip(),
        dir.path().to_path_buf(),
    );
    let admin = node_cfg.admin.clone();
    // What the pod's env adds (the kubelet does the same from the admin Secret).
    node_cfg.config = format!(
        "{conf}default_user = {u}\ndefault_pass = {p}\ndefault_user_tags.administrator = true\n\
         default_permissions.configure = .*\ndefault_permissions.read = .*\n\
         default_permissions.write = .*\n",
        u = admin.username,
        p = admin.password
    );
    node_cfg.advanced_config = None;
    node_cfg.plugins = plugins.clone();
    let node = RabbitNode::start(node_cfg).expect("start node");
    if let Err(e) = node.wait_ready(Duration::from_secs(90)).await {
        panic!(
            "node with the generated config did not become ready: {e}\n{}",
            node.log_tail(40)
        );
    }

    let interval = node
        .rabbitmqctl(&[
            "eval",
            "application:get_env(rabbit, collect_statistics_interval).",
        ])
        .await
        .expect("rabbitmqctl eval");
    assert!(interval.contains("{ok,700}"), "{interval}");
    let partition = node
        .rabbitmqctl(&[
            "eval",
            "application:get_env(rabbit, cluster_partition_handling).",
        ])
        .await
        .expect("rabbitmqctl eval");
    assert!(partition.contains("pause_minority"), "{partition}");

    // The management API answers for shovels and federation: their plugins run.
    let http = reqwest::Client::new();
    for path in ["/api/overview", "/api/shovels", "/api/federation-links"] {
        let resp = http
            .get(format!("{}{path}", node.management_url()))
            .basic_auth(&admin.username, Some(&admin.password))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
    }
    let listed = node
        .rabbitmqctl(&["eval", "rabbit_plugins:active()."])
        .await
        .unwrap();
    for p in &plugins {
        assert!(listed.contains(p.as_str()), "{p} is not running: {listed}");
    }
    assert_eq!(plugins.len(), build::config_map::PLUGINS.len());
    node.stop(Duration::from_secs(20)).await;
    drop(node);
    drop(lease);
}
