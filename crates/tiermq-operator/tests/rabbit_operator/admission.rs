//! Day-two changes a StatefulSet cannot take are refused at admission with a message that says
//! what to do instead (CEL rules in the CRDs, evaluated by kubesim's real API server; no broker
//! and no operator run here).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tiermq_crd::{
    DEDICATED_SCALE_DOWN_MESSAGE, DEDICATED_STORAGE_MESSAGE, RabbitMQInstance,
    SHARED_EXTERNAL_MESSAGE, SHARED_SCALE_DOWN_MESSAGE, SHARED_STORAGE_MESSAGE, SharedCluster,
    WINDOW_EMPTY_MESSAGE,
};

async fn refused<K>(api: &Api<K>, name: &str, patch: serde_json::Value) -> Option<String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => None,
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 422, "{e:?}");
            Some(e.message)
        }
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_cluster_cannot_become_external_or_stop_being_it_or_point_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = kubesim::cluster::start(kubesim::cluster::ClusterConfig::new(dir.path()))
        .await
        .unwrap();
    let c = cluster.client();
    let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
    for (_, yaml) in tiermq_crd::crd_files() {
        let crd: CustomResourceDefinition = serde_yaml::from_str(&yaml).unwrap();
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    let scs = Api::<SharedCluster>::namespaced(c.clone(), "default");
    for (name, spec) in [
        ("own", json!({})),
        (
            "byo",
            json!({"external": {"rabbitmqClusterRef": {"name": "prod"}}}),
        ),
    ] {
        scs.create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "tiermq.io/v1alpha1", "kind": "SharedCluster",
                "metadata": {"name": name}, "spec": spec
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    }
    let external =
        |name: &str| json!({"spec": {"external": {"rabbitmqClusterRef": {"name": name}}}});
    for (name, patch) in [
        ("own", external("prod")),
        ("byo", external("other")),
        ("byo", json!({"spec": {"external": null}})),
    ] {
        let msg = refused(&scs, name, patch.clone()).await;
        assert!(
            msg.as_deref()
                .is_some_and(|m| m.contains(SHARED_EXTERNAL_MESSAGE)),
            "{name} {patch}: {msg:?}"
        );
    }
    assert_eq!(
        refused(
            &scs,
            "byo",
            json!({"spec": {"capacity": {"maxInstances": 3}}})
        )
        .await,
        None,
        "the rest of an external cluster's spec may change"
    );
    assert_eq!(
        refused(&scs, "own", json!({"spec": {"replicas": 3}})).await,
        None
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_changes_and_scale_downs_are_refused_with_what_to_do_instead() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = kubesim::cluster::start(kubesim::cluster::ClusterConfig::new(dir.path()))
        .await
        .unwrap();
    let c = cluster.client();
    let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
    for (_, yaml) in tiermq_crd::crd_files() {
        let crd: CustomResourceDefinition = serde_yaml::from_str(&yaml).unwrap();
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    let scs = Api::<SharedCluster>::namespaced(c.clone(), "default");
    scs.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "apiVersion": "tiermq.io/v1alpha1", "kind": "SharedCluster",
            "metadata": {"name": "main"},
            "spec": {"replicas": 3, "storage": {"size": "1Gi"}}
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    let msg = refused(&scs, "main", json!({"spec": {"replicas": 1}})).await;
    assert!(
        msg.as_deref()
            .is_some_and(|m| m.contains(SHARED_SCALE_DOWN_MESSAGE)),
        "{msg:?}"
    );
    let msg = refused(&scs, "main", json!({"spec": {"storage": {"size": "2Gi"}}})).await;
    assert!(
        msg.as_deref()
            .is_some_and(|m| m.contains(SHARED_STORAGE_MESSAGE)),
        "{msg:?}"
    );
    assert_eq!(
        refused(&scs, "main", json!({"spec": {"replicas": 5}})).await,
        None
    );

    let instances = Api::<RabbitMQInstance>::namespaced(c.clone(), "default");
    for (name, tier) in [("on-shared", "Shared"), ("on-dedicated", "Dedicated")] {
        instances
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "apiVersion": "tiermq.io/v1alpha1", "kind": "RabbitMQInstance",
                    "metadata": {"name": name},
                    "spec": {"series": "Subscription", "tier": tier,
                             "dedicated": {"replicas": 3, "storage": {"size": "1Gi"}}}
                }))
                .unwrap(),
            )
            .await
            .unwrap();
    }
    let msg = refused(
        &instances,
        "on-dedicated",
        json!({"spec": {"dedicated": {"storage": {"size": "5Gi"}}}}),
    )
    .await;
    assert!(
        msg.as_deref()
            .is_some_and(|m| m.contains(DEDICATED_STORAGE_MESSAGE)),
        "{msg:?}"
    );
    let msg = refused(
        &instances,
        "on-dedicated",
        json!({"spec": {"dedicated": {"replicas": 1}}}),
    )
    .await;
    assert!(
        msg.as_deref()
            .is_some_and(|m| m.contains(DEDICATED_SCALE_DOWN_MESSAGE)),
        "{msg:?}"
    );
    // A maintenance window: HH:MM times that differ (an end before the start crosses midnight).
    let window = |start: &str, end: &str| json!({"spec": {"migration": {"window": {"days": ["Sat"], "startTime": start, "endTime": end}}}});
    let msg = refused(&instances, "on-shared", window("02:00", "02:00")).await;
    assert!(
        msg.as_deref()
            .is_some_and(|m| m.contains(WINDOW_EMPTY_MESSAGE)),
        "{msg:?}"
    );
    for (start, end) in [("24:00", "01:00"), ("2:00", "03:00"), ("02:00", "03:60")] {
        assert!(
            refused(&instances, "on-shared", window(start, end))
                .await
                .is_some(),
            "{start}-{end} refused"
        );
    }
    assert_eq!(
        refused(&instances, "on-shared", window("22:00", "02:00")).await,
        None
    );
    // On the shared tier there is no dedicated cluster yet: both may change.
    assert_eq!(
        refused(
            &instances,
            "on-shared",
            json!({"spec": {"dedicated": {"replicas": 1, "storage": {"size": "5Gi"}}}}),
        )
        .await,
        None
    );
    cluster.shutdown().await;
}

/// A cluster made by an older operator with `OrderedReady` pod management (a field a StatefulSet
/// cannot change in place): applying today's `Parallel` is refused with 422, so the operator
/// recreates the StatefulSet without its pods (orphan) and the new one adopts them — the broker
/// pod keeps running (same UID), no 422 loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_statefulset_field_that_cannot_change_is_changed_by_recreating_it_keeping_the_pods() {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::Pod;
    use tiermq_operator::build::BrokerCluster;
    use tiermq_operator::controller::clusters::ensure_cluster;

    let dir = tempfile::tempdir().unwrap();
    let cluster = kubesim::cluster::start(kubesim::cluster::ClusterConfig::new(dir.path()))
        .await
        .unwrap();
    let c = cluster.client();
    let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
    for (_, yaml) in tiermq_crd::crd_files() {
        let crd: CustomResourceDefinition = serde_yaml::from_str(&yaml).unwrap();
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    let sc = Api::<SharedCluster>::namespaced(c.clone(), "default")
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "tiermq.io/v1alpha1", "kind": "SharedCluster",
                "metadata": {"name": "main"},
                "spec": {"replicas": 1, "image": "rabbitmq:3.10-management"}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let bc = BrokerCluster::for_shared_cluster(&sc).unwrap();
    let args = tiermq_operator::config::RunArgs::local("default");
    ensure_cluster(&c, &args, &bc).await.unwrap();
    let pods = Api::<Pod>::namespaced(c.clone(), "default");
    let ready_uid = || async {
        let p = pods.get_opt("main-0").await.ok()??;
        let ready = p
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        ready.then(|| p.metadata.uid.clone().unwrap_or_default())
    };
    let uid = kubesim::cluster::wait_for(
        "the broker pod is ready",
        std::time::Duration::from_secs(120),
        ready_uid,
    )
    .await
    .unwrap();
    // What an older operator left: the same StatefulSet with OrderedReady.
    let sets = Api::<StatefulSet>::namespaced(c.clone(), "default");
    sets.delete("main", &kube::api::DeleteParams::orphan())
        .await
        .unwrap();
    kubesim::cluster::wait_for(
        "the StatefulSet is gone",
        std::time::Duration::from_secs(10),
        || async { sets.get_opt("main").await.ok()?.is_none().then_some(()) },
    )
    .await
    .unwrap();
    let mut old = tiermq_operator::build::statefulset::build(&bc);
    old.spec.as_mut().unwrap().pod_management_policy = Some("OrderedReady".into());
    sets.create(&PostParams::default(), &old).await.unwrap();

    ensure_cluster(&c, &args, &bc).await.expect("no 422 loop");
    let now = sets.get("main").await.unwrap();
    assert_eq!(
        now.spec.unwrap().pod_management_policy.as_deref(),
        Some("Parallel")
    );
    let after = kubesim::cluster::wait_for(
        "the pod is ready",
        std::time::Duration::from_secs(30),
        ready_uid,
    )
    .await
    .unwrap();
    assert_eq!(
        after, uid,
        "the broker pod kept running through the recreation"
    );
    cluster.shutdown().await;
}
