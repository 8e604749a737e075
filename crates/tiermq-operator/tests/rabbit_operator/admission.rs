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

/// The generated ValidatingAdmissionPolicy (`deploy/admission-policy.yaml`), enforced by
/// kubesim: the operator's ServiceAccount, which RBAC lets write every EndpointSlice and Secret
/// of the cluster, creates, changes and deletes only objects labelled as its own. Others
/// (admins, controllers) are not matched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admission_policy_keeps_the_operator_to_objects_it_manages() {
    use k8s_openapi::api::core::v1::{Namespace, Secret};
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    use kube::api::{DeleteParams, DynamicObject};
    use kube::discovery::ApiResource;

    const NS: &str = "tiermq-system";
    let server = kubesim::apiserver::start(Default::default()).await.unwrap();
    let admin = server.admin_client().unwrap();
    let pp = PostParams::default();
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap();
    Api::<Namespace>::all(admin.clone())
        .create(&pp, &ns)
        .await
        .unwrap();
    let rules = crate::operator_identity(&admin, NS, "tiermq-operator").await;
    let role: ClusterRole =
        serde_json::from_value(json!({"metadata": {"name": "tiermq-operator"}, "rules": rules}))
            .unwrap();
    Api::<ClusterRole>::all(admin.clone())
        .create(&pp, &role)
        .await
        .unwrap();
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "tiermq-operator"},
        "subjects": [{"kind": "ServiceAccount", "name": "tiermq-operator", "namespace": NS}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "tiermq-operator"}
    }))
    .unwrap();
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&pp, &binding)
        .await
        .unwrap();
    for doc in tiermq_operator::rbac::deploy_admission_policy().split("\n---\n") {
        let obj: DynamicObject = serde_yaml::from_str(doc).unwrap();
        let kind = obj.types.as_ref().unwrap().kind.clone();
        let plural = match kind.as_str() {
            "ValidatingAdmissionPolicy" => "validatingadmissionpolicies",
            _ => "validatingadmissionpolicybindings",
        };
        let ar = ApiResource {
            group: "admissionregistration.k8s.io".into(),
            version: "v1".into(),
            api_version: "admissionregistration.k8s.io/v1".into(),
            kind,
            plural: plural.into(),
        };
        Api::<DynamicObject>::all_with(admin.clone(), &ar)
            .create(&pp, &obj)
            .await
            .unwrap();
    }
    let token = server
        .issue_token(NS, "tiermq-operator", std::time::Duration::from_secs(600))
        .unwrap();
    let operator = kube::Client::try_from(server.token_config(&token.token)).unwrap();

    let slice = |name: &str, managed: bool| -> EndpointSlice {
        let mut labels = json!({"kubernetes.io/service-name": "orders"});
        if managed {
            labels["app.kubernetes.io/managed-by"] = json!("tiermq-operator");
        }
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "labels": labels},
            "addressType": "IPv4", "endpoints": [], "ports": []
        }))
        .unwrap()
    };
    let denied = |r: Result<EndpointSlice, kube::Error>| match r {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 422, "{e:?}");
            e.message
        }
        other => panic!("not refused: {other:?}"),
    };
    let as_operator = Api::<EndpointSlice>::namespaced(operator.clone(), "default");
    let as_admin = Api::<EndpointSlice>::namespaced(admin.clone(), "default");

    // Its own: created, changed and deleted.
    as_operator.create(&pp, &slice("mine", true)).await.unwrap();
    as_operator
        .patch(
            "mine",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"a": "b"}}})),
        )
        .await
        .unwrap();
    // Unlabelled: not created, also when the server picks the name; a label removed: refused.
    let mut unnamed = slice("", false);
    unnamed.metadata.name = None;
    unnamed.metadata.generate_name = Some("orders-".into());
    denied(as_operator.create(&pp, &unnamed).await);
    let msg = denied(as_operator.create(&pp, &slice("unlabelled", false)).await);
    assert_eq!(
        msg,
        "ValidatingAdmissionPolicy 'tiermq-operator-managed-objects' with binding \
         'tiermq-operator-managed-objects' denied request: the tiermq operator writes only \
         objects labelled app.kubernetes.io/managed-by=tiermq-operator"
    );
    denied(
        as_operator
            .patch(
                "mine",
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": null}}}),
                ),
            )
            .await,
    );
    // Another controller's slice: neither changed nor deleted by the operator; the admin may.
    as_admin.create(&pp, &slice("theirs", false)).await.unwrap();
    let msg = denied(
        as_operator
            .patch(
                "theirs",
                &PatchParams::default(),
                &Patch::Merge(json!({"endpoints": [{"addresses": ["10.0.0.9"]}]})),
            )
            .await,
    );
    assert!(
        msg.contains("changes and deletes only objects labelled"),
        "{msg}"
    );
    match as_operator.delete("theirs", &DeleteParams::default()).await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 422, "{e:?}"),
        other => panic!("delete not refused: {other:?}"),
    }
    as_admin
        .patch(
            "theirs",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"a": "b"}}})),
        )
        .await
        .unwrap();
    as_operator
        .delete("mine", &DeleteParams::default())
        .await
        .unwrap();

    // The same for Secrets: an admin's Secret cannot be deleted by the operator.
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "backup", "namespace": "default"}, "stringData": {"k": "v"}
    }))
    .unwrap();
    Api::<Secret>::namespaced(admin.clone(), "default")
        .create(&pp, &secret)
        .await
        .unwrap();
    match Api::<Secret>::namespaced(operator.clone(), "default")
        .delete("backup", &DeleteParams::default())
        .await
    {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 422, "{e:?}"),
        other => panic!("delete not refused: {other:?}"),
    }
}
