//! A cluster dropped without `shutdown` (a failing test) still kills its broker processes, and
//! deleting a StatefulSet garbage-collects its pods and stops their brokers.

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::Api;
use kube::api::PostParams;
use kubesim::cluster::{self, ClusterConfig, wait_for};
use serde_json::json;

fn pid_alive(pid: u32) -> bool {
    // A reaped process has no /proc entry; RabbitNode::kill reaps.
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_stop_with_their_statefulset_and_with_a_dropped_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let c = cluster::start(ClusterConfig::new(dir.path()))
        .await
        .unwrap();
    let sets: Api<StatefulSet> = Api::namespaced(c.client(), "default");
    let sts = |name: &str| -> StatefulSet {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "replicas": 1, "serviceName": name,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "rabbitmq", "image": "rabbitmq:3.10",
                        "env": [{"name": "RABBITMQ_DEFAULT_USER", "value": "admin"},
                                {"name": "RABBITMQ_DEFAULT_PASS", "value": "not-a-secret"}]}]}}
            }
        }))
        .unwrap()
    };
    let running = |key: &'static str| {
        let c = &c;
        move || async move { c.broker_pids().get(key).copied() }
    };
    let boot = Duration::from_secs(60);

    // Deleting the StatefulSet: the API server garbage-collects the pod, the kubelet stops it.
    sets.create(&PostParams::default(), &sts("gc"))
        .await
        .unwrap();
    let pid = wait_for("broker of gc-0", boot, running("default/gc-0"))
        .await
        .unwrap();
    assert!(pid_alive(pid));
    sets.delete("gc", &Default::default()).await.unwrap();
    wait_for("gc-0's broker gone", Duration::from_secs(30), || async {
        (!pid_alive(pid)).then_some(())
    })
    .await
    .unwrap();

    // Dropping the cluster without shutdown kills the broker at once.
    sets.create(&PostParams::default(), &sts("drop"))
        .await
        .unwrap();
    let pid = wait_for("broker of drop-0", boot, running("default/drop-0"))
        .await
        .unwrap();
    assert!(pid_alive(pid));
    drop(c);
    assert!(
        !pid_alive(pid),
        "broker {pid} survived dropping its cluster"
    );
}
