//! A Helm release's whole life on kubesim: install, upgrade with changed values, rollback and
//! uninstall, each waiting for readiness and checked with kubectl. Once with server-side apply
//! (Helm 4's default) and Helm 4's kstatus watcher for `--wait`, once with client-side apply
//! (three-way strategic merge patches) and the Helm 3 readiness checks (`--wait=legacy`): the API
//! server and kubesim's Deployment and ReplicaSet controllers serve each pair through different
//! code.

use std::time::Duration;

use serde_json::Value;
use tiermq_testkit::tools::{self, Tool};

use crate::common::{Tools, chart};

const NS: &str = "tiermq-system";
const RELEASE: &str = "tiermq";

/// Every object the chart's templates create with default values, as `kubectl get -o name`
/// prints them (the CRDs come from `crds/` and are checked on their own).
const OBJECTS: &[&str] = &[
    "clusterrole.rbac.authorization.k8s.io/tiermq",
    "clusterrolebinding.rbac.authorization.k8s.io/tiermq",
    "deployment.apps/tiermq",
    "role.rbac.authorization.k8s.io/tiermq-leader-election",
    "rolebinding.rbac.authorization.k8s.io/tiermq-leader-election",
    "service/tiermq-metrics",
    "serviceaccount/tiermq",
];
const CRDS: &[&str] = &[
    "customresourcedefinition.apiextensions.k8s.io/rabbitmqinstances.tiermq.io",
    "customresourcedefinition.apiextensions.k8s.io/sharedclusters.tiermq.io",
];

/// The chart's objects that exist now, among [`OBJECTS`].
async fn chart_objects(t: &Tools) -> Vec<String> {
    let mut got = t
        .names(&[
            "serviceaccounts,services,deployments,roles,rolebindings",
            "-n",
            NS,
        ])
        .await;
    got.extend(
        t.names(&[
            "clusterroles,clusterrolebindings",
            "-l",
            "app.kubernetes.io/instance=tiermq",
        ])
        .await,
    );
    got.sort();
    got
}

fn expected(without: &[&str]) -> Vec<String> {
    OBJECTS
        .iter()
        .filter(|o| !without.contains(o))
        .map(|s| s.to_string())
        .collect()
}

/// Revision → status of the release's Secrets (Helm's storage driver), from their labels.
async fn release_secrets(t: &Tools) -> Vec<(String, String)> {
    let list = t
        .get_json(&["secrets", "-n", NS, "-l", "owner=helm,name=tiermq"])
        .await;
    let mut out: Vec<(String, String)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert_eq!(s["type"], "helm.sh/release.v1", "{s}");
            let l = &s["metadata"]["labels"];
            (
                l["version"].as_str().unwrap().to_string(),
                l["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// (replicas, RUST_LOG, pod annotations) of the operator Deployment.
async fn deployment_settings(t: &Tools) -> (i64, String, Value) {
    let d = t.get_json(&["deployment", RELEASE, "-n", NS]).await;
    let env = d["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap();
    let log = env.iter().find(|e| e["name"] == "RUST_LOG").unwrap()["value"]
        .as_str()
        .unwrap()
        .to_string();
    (
        d["spec"]["replicas"].as_i64().unwrap(),
        log,
        d["spec"]["template"]["metadata"]["annotations"].clone(),
    )
}

/// The operator Deployment is Available with `n` ready replicas, all of the current template:
/// checked once, right after a `helm ... --wait` returned.
async fn assert_rolled_out(t: &Tools, n: i64) {
    let d = t.get_json(&["deployment", RELEASE, "-n", NS]).await;
    let st = &d["status"];
    assert_eq!(
        st["observedGeneration"], d["metadata"]["generation"],
        "{st}"
    );
    assert_eq!(
        (st["readyReplicas"].as_i64(), st["updatedReplicas"].as_i64()),
        (Some(n), Some(n)),
        "{st}"
    );
    let available = st["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["type"] == "Available" && c["status"] == "True");
    assert!(available, "{st}");
}

/// Polls until the operator's pods (run by kubesim's Deployment controller) number `n`.
async fn wait_for_pods(t: &Tools, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let pods = t
            .names(&["pods", "-n", NS, "-l", "app.kubernetes.io/instance=tiermq"])
            .await;
        if pods.len() == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "expected {n} operator pods, still {pods:?} after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn lifecycle(server_side: bool, test: &str) {
    let Some(helm) = tools::require(Tool::Helm, test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cluster = kubesim::cluster::start(kubesim::cluster::ClusterConfig::new(dir.path()))
        .await
        .expect("kubesim starts");
    let t = Tools::new(
        Some(helm),
        tools::MACHINE_KUBECTL.into(),
        Some(cluster.kubeconfig_path()),
    );
    let chart = chart();
    let ssa = format!("--server-side={server_side}");
    let wait = if server_side {
        "--wait=watcher"
    } else {
        "--wait=legacy"
    };
    let helm_ok = |args: Vec<&'static str>| {
        let t = &t;
        let chart = chart.clone();
        let ssa = ssa.clone();
        async move {
            let dry_run = args.contains(&"--dry-run=server");
            let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            if let Some(i) = a.iter().position(|s| s == "CHART") {
                a[i] = chart;
            }
            if matches!(a[0].as_str(), "install" | "upgrade" | "rollback") {
                a.push(ssa);
            }
            if matches!(
                a[0].as_str(),
                "install" | "upgrade" | "rollback" | "uninstall"
            ) && !dry_run
            {
                a.extend([wait.to_string(), "--timeout=30s".to_string()]);
            }
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            t.helm(&a).await.ok()
        }
    };

    // A server-side dry run talks to the API server but stores nothing.
    if server_side {
        helm_ok(vec![
            "install",
            RELEASE,
            "CHART",
            "-n",
            NS,
            "--create-namespace",
            "--dry-run=server",
        ])
        .await;
        assert!(
            chart_objects(&t).await.is_empty(),
            "a dry run created objects"
        );
        assert!(t.names(&["crd"]).await.is_empty(), "a dry run created CRDs");
    }

    // install
    helm_ok(vec![
        "install",
        RELEASE,
        "CHART",
        "-n",
        NS,
        "--create-namespace",
    ])
    .await;
    assert_eq!(chart_objects(&t).await, expected(&[]));
    assert_eq!(t.names(&["crd"]).await, CRDS);
    for o in OBJECTS {
        let obj = if o.starts_with("cluster") {
            t.get_json(&[o]).await
        } else {
            t.get_json(&[o, "-n", NS]).await
        };
        assert_eq!(
            obj["metadata"]["labels"]["app.kubernetes.io/managed-by"], "Helm",
            "{o}"
        );
        assert_eq!(
            obj["metadata"]["annotations"]["meta.helm.sh/release-name"], RELEASE,
            "{o}"
        );
        assert_eq!(
            obj["metadata"]["annotations"]["meta.helm.sh/release-namespace"], NS,
            "{o}"
        );
    }
    // Server-side apply records Helm as an Apply manager; client-side apply as an Update one.
    let d = t
        .get_json(&["deployment", RELEASE, "-n", NS, "--show-managed-fields"])
        .await;
    let ops: Vec<&str> = d["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["manager"] == "helm")
        .map(|m| m["operation"].as_str().unwrap())
        .collect();
    assert_eq!(ops, [if server_side { "Apply" } else { "Update" }], "{d}");
    assert_eq!(release_secrets(&t).await, pairs(&[("1", "deployed")]));
    let list: Value =
        serde_json::from_str(&helm_ok(vec!["list", "-n", NS, "-o", "json"]).await).unwrap();
    assert_eq!(list[0]["name"], RELEASE);
    assert_eq!(list[0]["status"], "deployed");
    assert_eq!(list[0]["revision"], "1");
    assert_eq!(
        deployment_settings(&t).await,
        (1, "info".into(), Value::Null)
    );
    assert_rolled_out(&t, 1).await;
    wait_for_pods(&t, 1).await;

    // upgrade: more replicas, another log level, a pod annotation, and no metrics Service
    helm_ok(vec![
        "upgrade",
        RELEASE,
        "CHART",
        "-n",
        NS,
        "--set",
        "replicaCount=2",
        "--set",
        "operator.logLevel=debug",
        "--set",
        "metrics.service.enabled=false",
        "--set-string",
        "podAnnotations.example\\.com/rollout=2",
    ])
    .await;
    assert_eq!(
        chart_objects(&t).await,
        expected(&["service/tiermq-metrics"])
    );
    let (replicas, log, annotations) = deployment_settings(&t).await;
    assert_eq!((replicas, log.as_str()), (2, "debug"));
    assert_eq!(annotations["example.com/rollout"], "2", "{annotations}");
    assert_eq!(
        release_secrets(&t).await,
        pairs(&[("1", "superseded"), ("2", "deployed")])
    );
    assert_rolled_out(&t, 2).await;
    wait_for_pods(&t, 2).await;

    // rollback to the first revision: every change is undone, the Service comes back
    helm_ok(vec!["rollback", RELEASE, "1", "-n", NS]).await;
    assert_eq!(chart_objects(&t).await, expected(&[]));
    let (replicas, log, annotations) = deployment_settings(&t).await;
    assert_eq!((replicas, log.as_str()), (1, "info"));
    assert!(
        annotations.get("example.com/rollout").is_none(),
        "the annotation outlived the rollback: {annotations}"
    );
    assert_eq!(
        release_secrets(&t).await,
        pairs(&[("1", "superseded"), ("2", "superseded"), ("3", "deployed")])
    );
    let history: Value =
        serde_json::from_str(&helm_ok(vec!["history", RELEASE, "-n", NS, "-o", "json"]).await)
            .unwrap();
    let descriptions: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["description"].as_str().unwrap())
        .collect();
    assert_eq!(
        descriptions,
        ["Install complete", "Upgrade complete", "Rollback to 1"]
    );
    assert_rolled_out(&t, 1).await;
    wait_for_pods(&t, 1).await;

    // uninstall: the chart's objects and the release's Secrets go, the CRDs stay (Helm never
    // deletes what crds/ installed), the operator's pods go with their Deployment
    helm_ok(vec!["uninstall", RELEASE, "-n", NS]).await;
    assert!(
        chart_objects(&t).await.is_empty(),
        "{:?}",
        chart_objects(&t).await
    );
    assert!(release_secrets(&t).await.is_empty());
    assert_eq!(t.names(&["crd"]).await, CRDS);
    let list: Value =
        serde_json::from_str(&helm_ok(vec!["list", "-n", NS, "-o", "json"]).await).unwrap();
    assert_eq!(list, serde_json::json!([]));
    wait_for_pods(&t, 0).await;

    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_upgrade_rollback_uninstall_with_server_side_apply() {
    lifecycle(
        true,
        "release::helm_install_upgrade_rollback_uninstall_with_server_side_apply",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_upgrade_rollback_uninstall_with_client_side_apply() {
    lifecycle(
        false,
        "release::helm_install_upgrade_rollback_uninstall_with_client_side_apply",
    )
    .await;
}
