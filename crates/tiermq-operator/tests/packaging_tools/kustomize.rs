//! `kubectl apply -k deploy/` and `kubectl delete -k deploy/` with the machine's kubectl 1.32
//! and the newest one, on kubesim.

use std::collections::BTreeSet;
use std::path::PathBuf;

use tiermq_testkit::tools::{self, Tool};

use crate::common::{Tools, root, yaml_docs};

/// `kind/namespace/name` of every object.
fn ids(items: &[serde_json::Value]) -> BTreeSet<String> {
    items
        .iter()
        .map(|o| {
            let kind = o["kind"].as_str().unwrap();
            // Cluster-scoped kinds kubectl 1.32's kustomize does not know as such get the
            // base's namespace, which the API server clears.
            let ns = match kind.starts_with("ValidatingAdmissionPolicy") {
                true => "",
                false => o["metadata"]["namespace"].as_str().unwrap_or(""),
            };
            format!("{kind}/{ns}/{}", o["metadata"]["name"].as_str().unwrap())
        })
        .collect()
}

async fn apply_k(kubectl: PathBuf) {
    let server = kubesim::apiserver::start(Default::default())
        .await
        .expect("kubesim API server");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let t = Tools::new(None, kubectl, Some(&kubeconfig));
    let deploy = root().join("deploy").display().to_string();

    let rendered = yaml_docs(&t.kubectl(&["kustomize", &deploy]).await.ok());
    let want = ids(&rendered);
    assert!(want.len() >= 10, "the base renders its objects: {want:?}");

    let out = t.kubectl(&["apply", "-k", &deploy]).await.ok();
    assert_eq!(
        out.lines().filter(|l| l.ends_with(" created")).count(),
        want.len(),
        "every object created:\n{out}"
    );
    let live = t.get_json(&["-k", &deploy]).await;
    let items = live["items"].as_array().unwrap();
    assert_eq!(ids(items), want);
    // What is stored is what was rendered (the server may add defaults, never change a value).
    let dep = |docs: &[serde_json::Value]| {
        docs.iter()
            .find(|o| o["kind"] == "Deployment")
            .map(|d| d["spec"]["template"]["spec"]["containers"][0].clone())
            .unwrap()
    };
    let (r, l) = (dep(&rendered), dep(items));
    for key in ["image", "args", "env", "ports"] {
        assert_eq!(r[key], l[key], "Deployment container {key}");
    }

    // A second apply changes nothing.
    let out = t.kubectl(&["apply", "-k", &deploy]).await.ok();
    assert!(
        out.lines().all(|l| l.ends_with(" unchanged")),
        "a repeated apply changed something:\n{out}"
    );

    // Delete (kubectl 1.37 adds "from <namespace> namespace" to each line): the namespace goes
    // first, then each object in it (still there while the namespace
    // terminates), and kubectl waits until all are gone.
    let out = t.kubectl(&["delete", "-k", &deploy]).await.ok();
    assert_eq!(
        out.lines().filter(|l| l.contains("\" deleted")).count(),
        want.len(),
        "every object deleted:\n{out}"
    );
    assert!(t.names(&["-k", &deploy]).await.is_empty());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_32_applies_the_kustomize_base() {
    apply_k(tools::MACHINE_KUBECTL.into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newest_kubectl_applies_the_kustomize_base() {
    if let Some(k) = tools::require(
        Tool::NewestKubectl,
        "kustomize::newest_kubectl_applies_the_kustomize_base",
    ) {
        apply_k(k).await;
    }
}
