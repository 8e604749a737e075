//! `helm install` yields a running operator: kubesim's kubelet runs the chart's operator image as
//! this build's `tiermq-operator` binary (see `kubesim::sim::images`), in-cluster, with the
//! ServiceAccount token the chart's RBAC applies to. The Deployment turns Available only through
//! the operator's own readiness probe, and the request log shows the operator working under its
//! ServiceAccount without one request denied.

use std::time::Duration;

use kubesim::cluster::{ClusterConfig, start};
use serde_json::Value;
use tiermq_testkit::tools::{self, Tool};

use crate::common::{Tools, chart};

const NS: &str = "tiermq-system";
const SA_USER: &str = "system:serviceaccount:tiermq-system:tiermq";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_runs_the_operator_in_cluster_under_the_charts_rbac() {
    let Some(helm) = tools::require(
        Tool::Helm,
        "incluster::helm_install_runs_the_operator_in_cluster_under_the_charts_rbac",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = ClusterConfig::new(dir.path())
        .with_image_binary("tiermq-operator", env!("CARGO_BIN_EXE_tiermq-operator"));
    let cluster = start(cfg).await.expect("kubesim starts");
    let t = Tools::new(
        Some(helm),
        tools::MACHINE_KUBECTL.into(),
        Some(cluster.kubeconfig_path()),
    );
    // --wait: Available only once the operator's /readyz answered the kubelet's probe.
    t.helm(&[
        "install",
        "tiermq",
        &chart(),
        "-n",
        NS,
        "--create-namespace",
        // Pods share the host's network here: listen on the pod's own address only.
        "--set-string",
        "metrics.bindAddress=$(POD_IP)",
        "--wait",
        "--timeout=60s",
    ])
    .await
    .ok();
    let pods = t
        .get_json(&["pods", "-n", NS, "-l", "app.kubernetes.io/instance=tiermq"])
        .await;
    let pod = &pods["items"][0];
    let st = &pod["status"]["containerStatuses"][0];
    assert_eq!(st["ready"], true, "{st}");
    assert!(st["state"]["running"].is_object(), "{st}");
    assert_eq!(st["restartCount"], 0, "{st}");
    let ip = pod["status"]["podIP"].as_str().unwrap().to_string();
    // The operator's own endpoint on the pod's address.
    let metrics = tiermq_testkit::tls::http_client()
        .get(format!("http://{ip}:8080/metrics"))
        .send()
        .await
        .expect("the operator serves /metrics on its pod IP");
    assert!(metrics.status().is_success(), "{}", metrics.status());

    // Let it run a little under its ServiceAccount (watches, the leader Lease).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = cluster.api().request_log().records_of(SA_USER);
    let denied: Vec<String> = log
        .iter()
        .filter(|r| r.code == 401 || r.code == 403)
        .map(|r| format!("{} {} {} -> {}", r.verb, r.resource, r.uri, r.code))
        .collect();
    assert!(
        denied.is_empty(),
        "requests of the operator the chart's RBAC denied: {denied:#?}"
    );
    let did = |verb: &str, resource: &str| {
        log.iter()
            .any(|r| r.verb == verb && r.resource == resource && r.code < 300)
    };
    for resource in ["rabbitmqinstances", "sharedclusters"] {
        assert!(
            did("list", resource) && did("watch", resource),
            "the operator did not list and watch {resource} under its ServiceAccount"
        );
    }
    assert!(
        log.iter()
            .any(|r| r.resource == "leases" && r.is_write() && r.code < 300),
        "the operator did not take its leader Lease under its ServiceAccount"
    );
    // What the operator printed is there for `kubectl logs`.
    let name = pod["metadata"]["name"].as_str().unwrap();
    let logs = t.kubectl(&["logs", "-n", NS, name]).await.ok();
    assert!(!logs.trim().is_empty(), "the operator's log is empty");

    // uninstall: the pod goes, and with it the operator process.
    t.helm(&["uninstall", "tiermq", "-n", NS, "--wait", "--timeout=30s"])
        .await
        .ok();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left: Value = t.get_json(&["pods", "-n", NS]).await;
        if left["items"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "operator pod still there"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        tiermq_testkit::tls::http_client()
            .get(format!("http://{ip}:8080/metrics"))
            .send()
            .await
            .is_err(),
        "the operator process outlived its pod"
    );
    cluster.shutdown().await;
}
