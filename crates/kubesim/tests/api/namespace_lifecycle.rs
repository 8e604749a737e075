//! A deleted namespace ends the way a real cluster ends it: Terminating first, its content still
//! there for a moment (and deletable one by one), nothing new admitted, then emptied and gone.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

use crate::common::{client, eventually, server};

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": "v"}})).unwrap()
}

fn ns(name: &str) -> Namespace {
    serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_namespace_terminates_then_takes_its_content() {
    let s = server().await;
    let c = client(&s);
    let namespaces: Api<Namespace> = Api::all(c.clone());
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "scratch");
    namespaces
        .create(&PostParams::default(), &ns("scratch"))
        .await
        .unwrap();
    for name in ["a", "b"] {
        cms.create(&PostParams::default(), &cm(name)).await.unwrap();
    }

    namespaces
        .delete("scratch", &DeleteParams::default())
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let terminating = namespaces.get("scratch").await.unwrap();
    assert!(terminating.metadata.deletion_timestamp.is_some());
    assert_eq!(
        terminating.status.unwrap().phase.as_deref(),
        Some("Terminating")
    );
    // The content is still there right after the DELETE, and can be deleted on its own ...
    assert!(cms.get("a").await.is_ok());
    cms.delete("a", &DeleteParams::default()).await.unwrap();
    // ... but nothing new gets in.
    let err = cms
        .create(&PostParams::default(), &cm("c"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403 && s.message.contains("being terminated")),
        "{err:?}"
    );

    eventually(10, "the namespace and its content gone", || async {
        let gone = namespaces.get_opt("scratch").await.unwrap().is_none()
            && cms.get_opt("b").await.unwrap().is_none();
        gone.then_some(())
    })
    .await;
    assert!(
        started.elapsed() >= kubesim::apiserver::store::CONTENT_DELAY - Duration::from_millis(100),
        "the content went at once: {:?}",
        started.elapsed()
    );
    s.shutdown().await;
}

#[tokio::test]
async fn an_empty_namespace_is_deleted_at_once() {
    let s = server().await;
    let namespaces: Api<Namespace> = Api::all(client(&s));
    namespaces
        .create(&PostParams::default(), &ns("empty"))
        .await
        .unwrap();
    namespaces
        .delete("empty", &DeleteParams::default())
        .await
        .unwrap();
    assert!(namespaces.get_opt("empty").await.unwrap().is_none());
    s.shutdown().await;
}
