//! The ConfigMap the builders write is a configuration RabbitMQ 3.10 and 4.0 really boot with:
//! every `rabbitmq.conf` key is known to the broker (it refuses to start otherwise), the plugins
//! exist and run, the statistics interval takes effect, and `rabbitmq_prometheus` serves
//! `/metrics` with every RabbitMQ metric the chart's Grafana dashboard queries.
//!
//! The node runs as kubesim's kubelet would run a pod: the ConfigMap's `rabbitmq.conf` plus the
//! admin user the pod gets from `RABBITMQ_DEFAULT_USER`/`PASS`, and the ConfigMap's
//! `enabled_plugins`. The classic-config peers (pod DNS names) do not resolve here, which on 3.10
//! also shows that the first node of a new cluster boots on its own (4.0 runs without those
//! lines, see below).

use std::time::Duration;

use tiermq_crd::SharedCluster;
use tiermq_operator::build::{self, BrokerCluster, config_map};
use tiermq_testkit::promql::{exposed_names, metric_names};
use tiermq_testkit::{BrokerRuntime, IpLease, NodeConfig, RabbitNode, test_each_runtime};

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

/// The `rabbitmq_*` metrics the chart's dashboard queries.
fn dashboard_rabbitmq_metrics() -> std::collections::BTreeSet<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../charts/tiermq/dashboards/tiermq.json"
    );
    let d: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("the dashboard")).unwrap();
    d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(metric_names))
        .flatten()
        .filter(|n| n.starts_with("rabbitmq_"))
        .collect()
}

test_each_runtime!(generated_config_map_boots_rabbitmq_with_the_migration_plugins);

async fn generated_config_map_boots_rabbitmq_with_the_migration_plugins(runtime: BrokerRuntime) {
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
    // RabbitMQ 4.0 keeps retrying classic peer discovery when its own node name is not in the
    // list (here it cannot be: the name is not a pod DNS name) and does not finish booting for
    // minutes; kubesim's kubelet drops these lines for the same reason. 3.10 boots on its own.
    let conf: String = match runtime {
        BrokerRuntime::Host310 => conf.clone(),
        BrokerRuntime::Debian13V40 => conf
            .lines()
            .filter(|l| !l.starts_with("cluster_formation."))
            .map(|l| format!("{l}\n"))
            .collect(),
    };
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
    let node = RabbitNode::start_on(runtime, node_cfg).expect("start node");
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
    let http = tiermq_testkit::tls::http_client();
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

    // Prometheus scrapes every broker on the port the operator names `prometheus`. A queue with
    // a message makes the queue metrics non-trivial.
    assert_eq!(
        tiermq_testkit::PROMETHEUS_PORT as i32,
        build::PROMETHEUS_PORT
    );
    let declared = http
        .put(format!(
            "{}/api/queues/%2F/metrics-check",
            node.management_url()
        ))
        .basic_auth(&admin.username, Some(&admin.password))
        .json(&serde_json::json!({"durable": true}))
        .send()
        .await
        .expect("declare a queue");
    assert!(declared.status().is_success(), "{}", declared.status());
    let published = http
        .post(format!(
            "{}/api/exchanges/%2F/amq.default/publish",
            node.management_url()
        ))
        .basic_auth(&admin.username, Some(&admin.password))
        .json(
            &serde_json::json!({"properties": {}, "routing_key": "metrics-check",
                                  "payload": "m", "payload_encoding": "string"}),
        )
        .send()
        .await
        .expect("publish");
    assert!(published.status().is_success(), "{}", published.status());
    let page = http
        .get(format!("{}/metrics", node.prometheus_url()))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("GET /metrics on the prometheus port");
    assert!(page.status().is_success(), "/metrics: {}", page.status());
    let exposed = exposed_names(&page.text().await.unwrap());
    assert!(exposed.contains("rabbitmq_identity_info"), "{exposed:?}");
    let wanted = dashboard_rabbitmq_metrics();
    assert!(!wanted.is_empty(), "the dashboard queries no broker metric");
    let missing: Vec<&String> = wanted.difference(&exposed).collect();
    assert!(
        missing.is_empty(),
        "{runtime}: the dashboard queries broker metrics /metrics does not have: {missing:?}"
    );
    println!("{runtime}: /metrics has the dashboard's {wanted:?}");
    node.stop(Duration::from_secs(20)).await;
    drop(node);
    drop(lease);
}
