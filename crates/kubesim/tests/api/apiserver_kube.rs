//! kube-rs 5 against the kubesim API server: watchers, a runtime Controller, optimistic
//! concurrency, server-side apply, finalizers, garbage collection and fault injection.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{CustomResource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::common::{client, eventually, install_crd, server};

#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, JsonSchema)]
#[kube(
    group = "test.kubesim.io",
    version = "v1",
    kind = "Broker",
    namespaced,
    status = "BrokerStatus"
)]
pub struct BrokerSpec {
    pub series: String,
    pub tier: Option<String>,
    pub replicas: Option<i64>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BrokerStatus {
    pub phase: Option<String>,
    pub observed_generation: Option<i64>,
}

fn cm(name: &str, data: serde_json::Value) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": data})).unwrap()
}

#[tokio::test]
async fn watcher_resumes_after_the_server_ends_its_watch() {
    let s = server().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&s), "default");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let w = tokio::spawn(
        watcher(api.clone(), watcher::Config::default())
            .applied_objects()
            .for_each(move |o| {
                if let Ok(o) = o {
                    let _ = tx.send(o.name_any());
                }
                futures::future::ready(())
            }),
    );
    api.create(&PostParams::default(), &cm("before", json!({})))
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, "before");

    s.faults().end_watches();
    tokio::time::sleep(Duration::from_millis(200)).await;
    api.create(&PostParams::default(), &cm("after", json!({})))
        .await
        .unwrap();
    let seen = eventually(
        15,
        "the watcher to see an object created after its watch ended",
        || {
            let got = rx.try_recv().ok();
            async move { got.filter(|n| n == "after") }
        },
    )
    .await;
    assert_eq!(seen, "after");
    w.abort();
}

#[tokio::test]
async fn watch_from_a_compacted_version_gets_410_gone() {
    let s = server().await;
    let c = client(&s);
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let first = api
        .create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap();
    let old_rv = first.resource_version().unwrap();
    api.create(&PostParams::default(), &cm("b", json!({})))
        .await
        .unwrap();
    s.compact_watch_history();
    // a raw watch from before the compaction ends with an ERROR event carrying 410
    let mut stream = api
        .watch(&kube::api::WatchParams::default(), &old_rv)
        .await
        .unwrap()
        .boxed();
    let ev = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap();
    match ev {
        Ok(kube::api::WatchEvent::Error(status)) => assert_eq!(status.code, 410, "{status:?}"),
        other => panic!("expected a 410 error event, got {other:?}"),
    }

    // so does a version the server never reached (a client of an earlier server)
    let mut stream = api
        .watch(&kube::api::WatchParams::default(), "999999")
        .await
        .unwrap()
        .boxed();
    let ev = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(ev, Ok(kube::api::WatchEvent::Error(ref st)) if st.code == 410),
        "{ev:?}"
    );

    // a kube-runtime watcher that resumes into a compacted history re-lists and carries on
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let w = tokio::spawn(
        watcher(api.clone(), watcher::Config::default())
            .applied_objects()
            .for_each(move |o| {
                if let Ok(o) = o {
                    let _ = tx.send(o.name_any());
                }
                futures::future::ready(())
            }),
    );
    eventually(10, "the initial list", || {
        let got = rx.try_recv().ok();
        async move { got.filter(|n| n == "b") }
    })
    .await;
    api.create(&PostParams::default(), &cm("c", json!({})))
        .await
        .unwrap();
    s.compact_watch_history();
    s.faults().end_watches();
    api.create(&PostParams::default(), &cm("d", json!({})))
        .await
        .unwrap();
    eventually(15, "the watcher to re-list after 410 and see d", || {
        let got = rx.try_recv().ok();
        async move { got.filter(|n| n == "d") }
    })
    .await;
    w.abort();
}

#[tokio::test]
async fn runtime_controller_reconciles_a_custom_resource() {
    let s = server().await;
    let c = client(&s);
    install_crd(&c).await;
    let brokers: Api<Broker> = Api::namespaced(c.clone(), "default");
    let b = Broker::new(
        "alpha",
        BrokerSpec {
            series: "professional".into(),
            tier: None,
            replicas: None,
        },
    );
    brokers.create(&PostParams::default(), &b).await.unwrap();

    async fn reconcile(obj: Arc<Broker>, api: Arc<Api<Broker>>) -> Result<Action, kube::Error> {
        let status = json!({"status": {"phase": format!("Ready-{}", obj.spec.tier.clone().unwrap_or_default()),
            "observedGeneration": obj.metadata.generation}});
        api.patch_status(
            &obj.name_any(),
            &PatchParams::apply("test-controller").force(),
            &Patch::Apply(json!({
            "apiVersion": "test.kubesim.io/v1", "kind": "Broker", "status": status["status"]})),
        )
        .await?;
        Ok(Action::await_change())
    }
    fn on_error(_: Arc<Broker>, _: &kube::Error, _: Arc<Api<Broker>>) -> Action {
        Action::requeue(Duration::from_millis(200))
    }
    let ctl = tokio::spawn(
        Controller::new(brokers.clone(), watcher::Config::default())
            .run(reconcile, on_error, Arc::new(brokers.clone()))
            .for_each(|_| futures::future::ready(())),
    );
    // defaulting from the schema made tier "shared"; the controller reports it
    eventually(15, "the controller to write status", || {
        let brokers = brokers.clone();
        async move {
            let b = brokers.get("alpha").await.ok()?;
            (b.status?.phase.as_deref() == Some("Ready-shared")).then_some(())
        }
    })
    .await;
    // a spec change bumps generation and is reconciled again
    brokers
        .patch(
            "alpha",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"tier": "dedicated"}})),
        )
        .await
        .unwrap();
    let b = eventually(15, "the controller to see the spec change", || {
        let brokers = brokers.clone();
        async move {
            let b = brokers.get("alpha").await.ok()?;
            (b.status.as_ref()?.phase.as_deref() == Some("Ready-dedicated")).then_some(b)
        }
    })
    .await;
    assert_eq!(b.metadata.generation, Some(2));
    assert_eq!(b.status.unwrap().observed_generation, Some(2));
    ctl.abort();
}

#[tokio::test]
async fn stale_update_gets_409_conflict() {
    let s = server().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&s), "default");
    let v1 = api
        .create(&PostParams::default(), &cm("c", json!({"k": "1"})))
        .await
        .unwrap();
    let mut fresh = v1.clone();
    fresh.data = Some([("k".to_string(), "2".to_string())].into());
    api.replace("c", &PostParams::default(), &fresh)
        .await
        .unwrap();
    let mut stale = v1.clone();
    stale.data = Some([("k".to_string(), "3".to_string())].into());
    match api.replace("c", &PostParams::default(), &stale).await {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 409);
            assert_eq!(e.reason, "Conflict");
            assert!(
                e.message.contains("the object has been modified"),
                "{}",
                e.message
            );
        }
        other => panic!("expected 409, got {other:?}"),
    }
    assert_eq!(api.get("c").await.unwrap().data.unwrap()["k"], "2");
}

#[tokio::test]
async fn server_side_apply_conflicts_between_managers_and_force_takes_over() {
    let s = server().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&s), "default");
    let doc = |v: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"x": v}});
    api.patch("ssa", &PatchParams::apply("alice"), &Patch::Apply(doc("1")))
        .await
        .unwrap();
    // the same value from another manager is shared ownership, not a conflict
    let shared = api
        .patch("ssa", &PatchParams::apply("bob"), &Patch::Apply(doc("1")))
        .await
        .unwrap();
    // re-applying the same configuration changes nothing, not even the resourceVersion
    let again = api
        .patch("ssa", &PatchParams::apply("alice"), &Patch::Apply(doc("1")))
        .await
        .unwrap();
    assert_eq!(again.resource_version(), shared.resource_version());
    match api
        .patch("ssa", &PatchParams::apply("carol"), &Patch::Apply(doc("2")))
        .await
    {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 409);
            assert!(
                e.message.contains("conflict with \"alice\""),
                "{}",
                e.message
            );
            assert!(e.message.contains(".data.x"), "{}", e.message);
        }
        other => panic!("expected an apply conflict, got {other:?}"),
    }
    let forced = api
        .patch(
            "ssa",
            &PatchParams::apply("carol").force(),
            &Patch::Apply(doc("2")),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap()["x"], "2");
    let managers: Vec<String> = forced
        .metadata
        .managed_fields
        .unwrap()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(managers.contains(&"carol".to_string()), "{managers:?}");
    // dropping a field from carol's configuration removes it
    api.patch(
        "ssa",
        &PatchParams::apply("carol"),
        &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "ssa"}, "data": {"y": "new"}})),
    )
    .await
    .unwrap();
    let now = api.get("ssa").await.unwrap().data.unwrap();
    assert!(!now.contains_key("x") && now["y"] == "new", "{now:?}");
}

#[tokio::test]
async fn finalizer_blocks_deletion_until_removed() {
    let s = server().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&s), "default");
    let mut o = cm("fin", json!({}));
    o.metadata.finalizers = Some(vec!["test.kubesim.io/cleanup".into()]);
    api.create(&PostParams::default(), &o).await.unwrap();
    let deleted = api.delete("fin", &DeleteParams::default()).await.unwrap();
    let pending = deleted.left().expect("deletion waits for the finalizer");
    assert!(pending.metadata.deletion_timestamp.is_some());
    let still = api.get("fin").await.unwrap();
    assert!(still.metadata.deletion_timestamp.is_some());
    api.patch(
        "fin",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(
        api.get_opt("fin").await.unwrap().is_none(),
        "removing the last finalizer deletes the object"
    );
}

#[tokio::test]
async fn deleting_an_owner_collects_its_dependents() {
    let s = server().await;
    let c = client(&s);
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(c.clone(), "default");
    let owner = cms
        .create(&PostParams::default(), &cm("owner", json!({})))
        .await
        .unwrap();
    let oref = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.uid().unwrap(), "controller": true}]);
    let child: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "child", "ownerReferences": oref}}))
            .unwrap();
    let child = cms.create(&PostParams::default(), &child).await.unwrap();
    // a grandchild: cascading goes on through the child
    let gref = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "child", "uid": child.uid().unwrap()}]);
    let grandchild: Secret = serde_json::from_value(
        json!({"metadata": {"name": "grandchild", "ownerReferences": gref}}),
    )
    .unwrap();
    secrets
        .create(&PostParams::default(), &grandchild)
        .await
        .unwrap();
    cms.delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    assert!(cms.get_opt("child").await.unwrap().is_none());
    assert!(secrets.get_opt("grandchild").await.unwrap().is_none());

    // foreground: the owner stays (with the foregroundDeletion finalizer) while a dependent
    // is held by its own finalizer
    let owner = cms
        .create(&PostParams::default(), &cm("fg", json!({})))
        .await
        .unwrap();
    let oref = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "fg", "uid": owner.uid().unwrap(), "blockOwnerDeletion": true}]);
    let held: Secret = serde_json::from_value(
        json!({"metadata": {"name": "held", "ownerReferences": oref, "finalizers": ["test/hold"]}}),
    )
    .unwrap();
    secrets.create(&PostParams::default(), &held).await.unwrap();
    cms.delete("fg", &DeleteParams::foreground()).await.unwrap();
    let fg = cms.get("fg").await.unwrap();
    assert!(fg.finalizers().contains(&"foregroundDeletion".to_string()));
    assert!(
        secrets
            .get("held")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
    secrets
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    assert!(secrets.get_opt("held").await.unwrap().is_none());
    assert!(
        cms.get_opt("fg").await.unwrap().is_none(),
        "the owner goes once its dependents are gone"
    );

    // orphan: the dependent stays and loses its owner reference
    let owner = cms
        .create(&PostParams::default(), &cm("or", json!({})))
        .await
        .unwrap();
    let oref = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "or", "uid": owner.uid().unwrap()}]);
    let orphan: Secret =
        serde_json::from_value(json!({"metadata": {"name": "orphan", "ownerReferences": oref}}))
            .unwrap();
    secrets
        .create(&PostParams::default(), &orphan)
        .await
        .unwrap();
    cms.delete("or", &DeleteParams::orphan()).await.unwrap();
    assert!(cms.get_opt("or").await.unwrap().is_none());
    let kept = secrets.get("orphan").await.unwrap();
    assert!(kept.owner_references().is_empty());
}

/// An object written for an owner that is already gone (a controller acting on a stale cache
/// re-creates a pod after its StatefulSet was deleted) is collected, as the real garbage
/// collector removes dependents whose owners all dangle; a live owner keeps it.
#[tokio::test]
async fn an_object_whose_owners_are_already_gone_is_collected() {
    let s = server().await;
    let c = client(&s);
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let owner = cms
        .create(&PostParams::default(), &cm("owner", json!({})))
        .await
        .unwrap();
    let gone_uid = owner.uid().unwrap();
    cms.delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    let dangling = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": gone_uid, "controller": true}]);
    let late: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "late", "ownerReferences": dangling}}))
            .unwrap();
    cms.create(&PostParams::default(), &late).await.unwrap();
    assert!(
        cms.get_opt("late").await.unwrap().is_none(),
        "created for a gone owner: collected"
    );

    let live = cms
        .create(&PostParams::default(), &cm("live", json!({})))
        .await
        .unwrap();
    let lref = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "live", "uid": live.uid().unwrap()}]);
    let kept: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "kept", "ownerReferences": lref}}))
            .unwrap();
    cms.create(&PostParams::default(), &kept).await.unwrap();
    assert!(
        cms.get_opt("kept").await.unwrap().is_some(),
        "a live owner keeps it"
    );
    cms.patch(
        "kept",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"ownerReferences": dangling}})),
    )
    .await
    .unwrap();
    assert!(
        cms.get_opt("kept").await.unwrap().is_none(),
        "moved to a gone owner: collected"
    );
}

#[tokio::test]
async fn status_subresource_and_generation_follow_kubernetes_rules() {
    let s = server().await;
    let c = client(&s);
    install_crd(&c).await;
    let api: Api<Broker> = Api::namespaced(c.clone(), "default");
    api.create(
        &PostParams::default(),
        &Broker::new(
            "g",
            BrokerSpec {
                series: "platinum".into(),
                tier: None,
                replicas: Some(1),
            },
        ),
    )
    .await
    .unwrap();
    // status through the main resource is ignored
    let b = api
        .patch(
            "g",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "x"}})),
        )
        .await
        .unwrap();
    assert!(b.status.is_none());
    // status through /status: generation unchanged; spec in a /status write is ignored
    let b = api
        .patch_status(
            "g",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 9}, "status": {"phase": "Running"}})),
        )
        .await
        .unwrap();
    assert_eq!(b.status.unwrap().phase.as_deref(), Some("Running"));
    assert_eq!(b.spec.replicas, Some(1));
    assert_eq!(b.metadata.generation, Some(1));
    // metadata-only change: no generation bump; spec change: bump
    let b = api
        .patch(
            "g",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(b.metadata.generation, Some(1));
    let b = api
        .patch(
            "g",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .unwrap();
    assert_eq!(b.metadata.generation, Some(2));
    // the scale subresource reads and writes spec.replicas
    let scale = api.get_scale("g").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(2));
    api.patch_scale(
        "g",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 4}})),
    )
    .await
    .unwrap();
    assert_eq!(api.get("g").await.unwrap().spec.replicas, Some(4));
    // schema validation and the CEL transition rule reject bad writes with 422
    let err = api
        .patch(
            "g",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"series": "professional"}})),
        )
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(e) => {
            assert_eq!(e.code, 422);
            assert!(e.message.contains("series is immutable"), "{}", e.message);
        }
        other => panic!("expected 422, got {other:?}"),
    }
    let err = api
        .patch(
            "g",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": -1}})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 422 && e.message.contains("spec.replicas")),
        "{err:?}"
    );
}

#[tokio::test]
async fn injected_faults_fail_writes_and_reads_and_delay_answers() {
    let s = server().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&s), "default");
    s.faults()
        .fail_writes("", "configmaps", Some("flaky"), 2, 500);
    for _ in 0..2 {
        match api
            .create(&PostParams::default(), &cm("flaky", json!({})))
            .await
        {
            Err(kube::Error::Api(e)) => assert_eq!(e.code, 500),
            other => panic!("expected an injected 500, got {other:?}"),
        }
    }
    api.create(&PostParams::default(), &cm("flaky", json!({})))
        .await
        .unwrap();
    s.faults().fail_writes("", "configmaps", None, 1, 409);
    let err = api
        .delete("flaky", &DeleteParams::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 409),
        "{err:?}"
    );
    // A read fault fails GETs of that object only, not lists, not other objects.
    s.faults().fail_reads("", "configmaps", "flaky", 1, 500);
    api.list(&Default::default()).await.unwrap();
    match api.get("flaky").await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 500),
        other => panic!("expected an injected 500, got {other:?}"),
    }
    api.get("flaky").await.unwrap();
    s.faults().set_delay(Duration::from_millis(300));
    let t = std::time::Instant::now();
    api.get("flaky").await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300));
    s.faults().clear();
    let t = std::time::Instant::now();
    api.get("flaky").await.unwrap();
    assert!(t.elapsed() < Duration::from_millis(300));
}

#[tokio::test]
async fn list_filters_by_label_and_field_selectors_and_services_get_cluster_ips() {
    use k8s_openapi::api::core::v1::Service;
    let s = server().await;
    let c = client(&s);
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    for (n, tier) in [("a", "shared"), ("b", "dedicated"), ("c", "shared")] {
        let o: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": n, "labels": {"tier": tier}}}))
                .unwrap();
        api.create(&PostParams::default(), &o).await.unwrap();
    }
    let names = |l: kube::api::ObjectList<ConfigMap>| {
        l.items.iter().map(|o| o.name_any()).collect::<Vec<_>>()
    };
    let lp = kube::api::ListParams::default();
    assert_eq!(
        names(api.list(&lp.clone().labels("tier=shared")).await.unwrap()),
        ["a", "c"]
    );
    assert_eq!(
        names(
            api.list(&lp.clone().labels("tier notin (shared)"))
                .await
                .unwrap()
        ),
        ["b"]
    );
    assert_eq!(
        names(
            api.list(&lp.clone().fields("metadata.name=c"))
                .await
                .unwrap()
        ),
        ["c"]
    );

    let svcs: Api<Service> = Api::namespaced(c, "default");
    let svc = |n: &str, ip: Option<&str>| -> Service {
        let mut spec = json!({"ports": [{"port": 5672}]});
        if let Some(ip) = ip {
            spec["clusterIP"] = json!(ip);
        }
        serde_json::from_value(json!({"metadata": {"name": n}, "spec": spec})).unwrap()
    };
    let one = svcs
        .create(&PostParams::default(), &svc("one", None))
        .await
        .unwrap();
    let ip = one.spec.unwrap().cluster_ip.unwrap();
    assert!(ip.starts_with("127.20.7."), "{ip}");
    let headless = svcs
        .create(&PostParams::default(), &svc("headless", Some("None")))
        .await
        .unwrap();
    assert_eq!(headless.spec.unwrap().cluster_ip.as_deref(), Some("None"));
}

#[tokio::test]
async fn a_filtered_watch_sees_objects_enter_and_leave_its_selection() {
    use kube::api::WatchEvent;
    let s = server().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&s), "default");
    let o = api
        .create(&PostParams::default(), &cm("moving", json!({})))
        .await
        .unwrap();
    let wp = kube::api::WatchParams::default().labels("ready=yes");
    let mut stream = api
        .watch(&wp, &o.resource_version().unwrap())
        .await
        .unwrap()
        .boxed();
    let label = |v: Option<&str>| Patch::Merge(json!({"metadata": {"labels": {"ready": v}}}));
    api.patch("moving", &PatchParams::default(), &label(Some("yes")))
        .await
        .unwrap();
    api.patch("moving", &PatchParams::default(), &label(Some("no")))
        .await
        .unwrap();
    let mut seen = vec![];
    for _ in 0..2 {
        let ev = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push(match ev {
            WatchEvent::Added(_) => "ADDED",
            WatchEvent::Modified(_) => "MODIFIED",
            WatchEvent::Deleted(_) => "DELETED",
            _ => "OTHER",
        });
    }
    assert_eq!(seen, ["ADDED", "DELETED"]);
}

#[tokio::test]
async fn streaming_list_watchers_get_initial_events_then_changes() {
    let s = server().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&s), "default");
    api.create(&PostParams::default(), &cm("existing", json!({})))
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let w = tokio::spawn(
        watcher(api.clone(), watcher::Config::default().streaming_lists())
            .applied_objects()
            .for_each(move |o| {
                if let Ok(o) = o {
                    let _ = tx.send(o.name_any());
                }
                futures::future::ready(())
            }),
    );
    let first = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, "existing");
    api.create(&PostParams::default(), &cm("later", json!({})))
        .await
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next, "later");
    w.abort();
}

#[tokio::test]
async fn dry_run_writes_change_nothing() {
    let s = server().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&s), "default");
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    api.create(&dry, &cm("ghost", json!({}))).await.unwrap();
    assert!(api.get_opt("ghost").await.unwrap().is_none());
    let real = api
        .create(&PostParams::default(), &cm("real", json!({"a": "1"})))
        .await
        .unwrap();
    let pp = PatchParams {
        dry_run: true,
        ..Default::default()
    };
    let preview = api
        .patch("real", &pp, &Patch::Merge(json!({"data": {"a": "2"}})))
        .await
        .unwrap();
    assert_eq!(preview.data.unwrap()["a"], "2");
    assert_eq!(
        preview.metadata.resource_version,
        real.metadata.resource_version
    );
    assert_eq!(api.get("real").await.unwrap().data.unwrap()["a"], "1");
}

#[tokio::test]
async fn kube_runtime_finalizer_helper_adds_and_removes_its_finalizer() {
    use kube::runtime::finalizer::{Event as Fin, finalizer};
    let s = server().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&s), "default");
    api.create(&PostParams::default(), &cm("guarded", json!({})))
        .await
        .unwrap();
    let run = |api: Api<ConfigMap>| async move {
        let obj = Arc::new(api.get("guarded").await.unwrap());
        finalizer(&api, "test.kubesim.io/cleanup", obj, |ev| async move {
            Ok::<_, std::convert::Infallible>(match ev {
                Fin::Apply(_) => Action::requeue(Duration::from_secs(1)),
                Fin::Cleanup(_) => Action::requeue(Duration::from_secs(2)),
            })
        })
        .await
    };
    // first pass adds the finalizer (JSON patch with a `test` against the absent list)
    run(api.clone()).await.unwrap();
    let o = api.get("guarded").await.unwrap();
    assert_eq!(o.finalizers(), ["test.kubesim.io/cleanup"]);
    assert_eq!(
        run(api.clone()).await.unwrap(),
        Action::requeue(Duration::from_secs(1))
    );
    api.delete("guarded", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        api.get("guarded")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
    assert_eq!(
        run(api.clone()).await.unwrap(),
        Action::requeue(Duration::from_secs(2))
    );
    assert!(
        api.get_opt("guarded").await.unwrap().is_none(),
        "the cleanup removed the finalizer and the object went"
    );
}

#[tokio::test]
async fn discovery_plain_and_aggregated_both_find_builtins_and_crds() {
    use kube::discovery::{Discovery, Scope, verbs};
    let s = server().await;
    let c = client(&s);
    install_crd(&c).await;
    for aggregated in [false, true] {
        let d = Discovery::new(c.clone());
        let d = if aggregated {
            d.run_aggregated().await.unwrap()
        } else {
            d.run().await.unwrap()
        };
        let (ar, caps) = d
            .resolve_gvk(&kube::api::GroupVersionKind::gvk(
                "test.kubesim.io",
                "v1",
                "Broker",
            ))
            .expect("Broker discovered");
        assert_eq!(ar.plural, "brokers");
        assert_eq!(caps.scope, Scope::Namespaced);
        assert!(caps.supports_operation(verbs::WATCH));
        assert!(
            caps.subresources
                .iter()
                .any(|(sub, _)| sub.plural == "brokers/status" || sub.plural == "status"),
            "{aggregated}: {:?}",
            caps.subresources
        );
        let (sts, _) = d
            .resolve_gvk(&kube::api::GroupVersionKind::gvk(
                "apps",
                "v1",
                "StatefulSet",
            ))
            .expect("StatefulSet discovered");
        assert_eq!(sts.plural, "statefulsets");
        assert!(
            d.resolve_gvk(&kube::api::GroupVersionKind::gvk("", "v1", "ConfigMap"))
                .is_some(),
            "core group ({aggregated})"
        );
    }
}

#[tokio::test]
async fn built_in_validation_catches_what_a_real_server_refuses() {
    use k8s_openapi::api::apps::v1::StatefulSet;
    let s = server().await;
    let c = client(&s);
    // a selector that does not match the template labels
    let sts: StatefulSet = serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {
        "serviceName": "web", "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "other"}}, "spec": {"containers": [{"name": "rabbitmq", "image": "rabbitmq:3.10"}]}}}}))
    .unwrap();
    let err = Api::<StatefulSet>::namespaced(c.clone(), "default")
        .create(&PostParams::default(), &sts)
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(e) => {
            assert_eq!(e.code, 422);
            assert!(
                e.message
                    .contains("`selector` does not match template `labels`"),
                "{}",
                e.message
            );
        }
        other => panic!("expected 422, got {other:?}"),
    }
    // a label value longer than 63 characters
    let long: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "l", "labels": {"instance": "x".repeat(64)}}}),
    )
    .unwrap();
    let err = Api::<ConfigMap>::namespaced(c.clone(), "default")
        .create(&PostParams::default(), &long)
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 422 && e.message.contains("must be no more than 63 characters")),
        "{err:?}"
    );
    // stringData is write-only and lands in data
    let secrets: Api<Secret> = Api::namespaced(c, "default");
    let sec: Secret = serde_json::from_value(
        json!({"metadata": {"name": "creds"}, "stringData": {"password": "s3cret"}}),
    )
    .unwrap();
    let stored = secrets.create(&PostParams::default(), &sec).await.unwrap();
    assert!(stored.string_data.is_none());
    assert_eq!(stored.data.unwrap()["password"].0, b"s3cret");
}

#[tokio::test]
async fn bookmarks_when_asked_and_generated_names() {
    use kube::api::WatchEvent;
    let s = server().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&s), "default");
    let mut o = cm("", json!({}));
    o.metadata.name = None;
    o.metadata.generate_name = Some("gen-".into());
    let a = api.create(&PostParams::default(), &o).await.unwrap();
    let b = api.create(&PostParams::default(), &o).await.unwrap();
    assert!(
        a.name_any().starts_with("gen-") && a.name_any().len() == 9,
        "{}",
        a.name_any()
    );
    assert_ne!(a.name_any(), b.name_any());

    let rv = b.resource_version().unwrap();
    let wp = kube::api::WatchParams::default();
    assert!(wp.bookmarks, "kube asks for bookmarks by default");
    let mut stream = api.watch(&wp, &rv).await.unwrap().boxed();
    let ev = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match ev {
        WatchEvent::Bookmark(bm) => assert_eq!(bm.metadata.resource_version, rv),
        other => panic!("expected a bookmark, got {other:?}"),
    }
}

#[tokio::test]
async fn scheduled_pods_terminate_gracefully_until_confirmed() {
    use k8s_openapi::api::core::v1::Pod;
    let s = server().await;
    let pods: Api<Pod> = Api::namespaced(client(&s), "default");
    let pod = |name: &str, node: Option<&str>| -> Pod {
        let mut spec = json!({"containers": [{"name": "c", "image": "rabbitmq:3.10"}], "terminationGracePeriodSeconds": 20});
        if let Some(n) = node {
            spec["nodeName"] = json!(n);
        }
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
    };
    // not scheduled: gone at once
    pods.create(&PostParams::default(), &pod("unscheduled", None))
        .await
        .unwrap();
    assert!(
        pods.delete("unscheduled", &DeleteParams::default())
            .await
            .unwrap()
            .is_right()
    );
    assert!(pods.get_opt("unscheduled").await.unwrap().is_none());

    // scheduled: marked with its grace period and kept, also across status updates
    pods.create(&PostParams::default(), &pod("web-0", Some("kubesim")))
        .await
        .unwrap();
    let marked = pods
        .delete("web-0", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .expect("still there");
    assert_eq!(marked.metadata.deletion_grace_period_seconds, Some(20));
    pods.patch_status(
        "web-0",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running"}})),
    )
    .await
    .unwrap();
    assert!(
        pods.get("web-0")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
    // the kubelet confirms with grace period 0
    let confirm = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    assert!(pods.delete("web-0", &confirm).await.unwrap().is_right());
    assert!(pods.get_opt("web-0").await.unwrap().is_none());
}

#[tokio::test]
async fn metadata_only_gets_lists_and_watches() {
    use kube::core::PartialObjectMeta;
    let s = server().await;
    let api: Api<ConfigMap> = Api::namespaced(client(&s), "default");
    api.create(&PostParams::default(), &cm("m1", json!({"big": "value"})))
        .await
        .unwrap();
    let meta = api.get_metadata("m1").await.unwrap();
    assert_eq!(meta.metadata.name.as_deref(), Some("m1"));
    let list = api
        .list_metadata(&kube::api::ListParams::default())
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let w = tokio::spawn(
        watcher(
            Api::<PartialObjectMeta<ConfigMap>>::namespaced(client(&s), "default"),
            watcher::Config::default(),
        )
        .applied_objects()
        .for_each(move |o| {
            if let Ok(o) = o {
                let _ = tx.send(o.name_any());
            }
            futures::future::ready(())
        }),
    );
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap(),
        "m1"
    );
    api.create(&PostParams::default(), &cm("m2", json!({})))
        .await
        .unwrap();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap(),
        "m2"
    );
    w.abort();
}

/// More Services than one /24 holds (1,000 shared instances each have one): the range goes on in
/// the next second octets, every ClusterIP is distinct, and a deleted Service's IP is free again.
#[tokio::test]
async fn more_than_254_services_get_distinct_cluster_ips() {
    let s = server().await;
    let svcs: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(client(&s), "default");
    let mut ips = Vec::new();
    for n in 0..300 {
        let svc = serde_json::from_value(
            json!({"metadata": {"name": format!("s{n}")}, "spec": {"ports": [{"port": 5672}]}}),
        )
        .unwrap();
        let created = svcs.create(&PostParams::default(), &svc).await.unwrap();
        ips.push(created.spec.unwrap().cluster_ip.unwrap());
    }
    let distinct: std::collections::BTreeSet<&String> = ips.iter().collect();
    assert_eq!(distinct.len(), 300, "distinct ClusterIPs");
    assert!(ips[0].starts_with("127.20.7."), "{}", ips[0]);
    assert!(ips[299].starts_with("127.21.7."), "{}", ips[299]);
    svcs.delete("s3", &DeleteParams::default()).await.unwrap();
    let again = svcs
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "again"}, "spec": {"ports": [{"port": 5672}]}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    // The lowest free address: the one s3 had.
    assert_eq!(again.spec.unwrap().cluster_ip.as_ref(), Some(&ips[3]));
}
