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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_pods_wait_for_their_secret_and_for_a_free_broker_slot() {
    use k8s_openapi::api::core::v1::{Pod, Secret};
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ClusterConfig::new(dir.path());
    cfg.max_brokers = 1;
    let c = cluster::start(cfg).await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(90), async {
        let sets: Api<StatefulSet> = Api::namespaced(c.client(), "default");
        let pods: Api<Pod> = Api::namespaced(c.client(), "default");
        let sts: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": "w"},
            "spec": {
                "replicas": 2, "serviceName": "w", "podManagementPolicy": "Parallel",
                "selector": {"matchLabels": {"app": "w"}},
                "template": {"metadata": {"labels": {"app": "w"}},
                    "spec": {"containers": [{"name": "rabbitmq", "image": "rabbitmq:3.10",
                        "env": [{"name": "RABBITMQ_DEFAULT_USER", "value": "admin"},
                                {"name": "RABBITMQ_DEFAULT_PASS", "valueFrom": {"secretKeyRef": {"name": "w-admin", "key": "password"}}}]}]}}
            }
        }))
        .unwrap();
        sets.create(&PostParams::default(), &sts).await.unwrap();
        let waiting_reason = |p: &Pod| -> Option<String> {
            p.status
                .as_ref()?
                .container_statuses
                .as_ref()?
                .first()?
                .state
                .as_ref()?
                .waiting
                .as_ref()?
                .reason
                .clone()
        };
        // Without its Secret a broker pod does not start, and says why.
        wait_for("w-0 waiting for its Secret", Duration::from_secs(30), || async {
            let p = pods.get_opt("w-0").await.ok()??;
            (waiting_reason(&p).as_deref() == Some("CreateContainerConfigError")).then_some(())
        })
        .await
        .unwrap();
        assert!(c.broker_pids().is_empty());

        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "w-admin"}, "stringData": {"password": "not-a-secret"}
        }))
        .unwrap();
        Api::<Secret>::namespaced(c.client(), "default")
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
        // One broker slot: one pod runs its broker, the other stays Pending and says why.
        wait_for("one broker running, one pod waiting for a slot", Duration::from_secs(30), || async {
            if c.broker_pids().len() != 1 {
                return None;
            }
            let list = pods.list(&Default::default()).await.ok()?;
            list.items.into_iter().find(|p| {
                let st = p.status.clone().unwrap_or_default();
                st.phase.as_deref() == Some("Pending")
                    && st.message.as_deref().is_some_and(|m| m.contains("at most 1 RabbitMQ brokers"))
            })
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(c.broker_pids().len(), 1, "the limit holds");

    })
    .await;
    let pids: Vec<u32> = c.broker_pids().into_values().collect();
    c.shutdown().await;
    for pid in pids {
        assert!(!pid_alive(pid), "broker {pid} still running after shutdown");
    }
    result.expect("test took too long");
}
