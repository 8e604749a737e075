//! The chart through real Helm: lint, render and the version range, plus the API server's
//! validation of everything it renders.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::{Value, json};
use tiermq_testkit::tools::{self, Tool};

use crate::common::{Tools, chart, root, yaml_docs};

const RELEASE: &str = "tiermq";
const NAMESPACE: &str = "tiermq-system";

/// `None` for the chart's defaults, then every values file in `charts/tiermq/ci/`.
fn values_files() -> Vec<Option<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("charts/tiermq/ci"))
        .expect("charts/tiermq/ci/ lists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 4,
        "charts/tiermq/ci/ should hold the example values files: {files:?}"
    );
    std::iter::once(None)
        .chain(files.into_iter().map(Some))
        .collect()
}

fn label(file: &Option<PathBuf>) -> String {
    file.as_ref().map_or("defaults".into(), |p| {
        p.file_name().unwrap().to_string_lossy().into_owned()
    })
}

/// `-f <file>` when there is one.
fn values_args(file: &Option<PathBuf>) -> Vec<String> {
    file.iter()
        .flat_map(|p| ["-f".to_string(), p.display().to_string()])
        .collect()
}

fn helm_only(test: &str) -> Option<Tools> {
    let helm = tools::require(Tool::Helm, test)?;
    Some(Tools::new(Some(helm), tools::MACHINE_KUBECTL.into(), None))
}

async fn template(t: &Tools, file: &Option<PathBuf>, extra: &[&str]) -> String {
    let chart = chart();
    let vargs = values_args(file);
    let mut args = vec!["template", RELEASE, chart.as_str(), "-n", NAMESPACE];
    args.extend(vargs.iter().map(String::as_str));
    args.extend_from_slice(extra);
    t.helm(&args).await.ok()
}

/// values.yaml with `file` merged over it, the way Helm merges values files.
fn merged_values(file: &Option<PathBuf>) -> Value {
    fn merge(base: &mut Value, over: &Value) {
        match (base, over) {
            (Value::Object(b), Value::Object(o)) => {
                for (k, v) in o {
                    merge(b.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
            (b, o) => *b = o.clone(),
        }
    }
    let read = |p: PathBuf| -> Value {
        serde_yaml::from_str(&std::fs::read_to_string(&p).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    let mut v = read(root().join("charts/tiermq/values.yaml"));
    if let Some(f) = file {
        merge(&mut v, &read(f.clone()));
    }
    v
}

#[tokio::test]
async fn helm_lint_strict_passes_for_defaults_and_every_ci_values_file() {
    let Some(t) = helm_only("chart::helm_lint_strict_passes_for_defaults_and_every_ci_values_file")
    else {
        return;
    };
    for file in values_files() {
        let chart = chart();
        let vargs = values_args(&file);
        let mut args = vec!["lint", "--strict", chart.as_str()];
        args.extend(vargs.iter().map(String::as_str));
        let out = t.helm(&args).await.ok();
        assert!(
            out.contains("1 chart(s) linted, 0 chart(s) failed"),
            "helm lint --strict with {}:\n{out}",
            label(&file)
        );
    }
}

/// Renders each values set and checks that the objects follow from the values: which objects
/// exist, their names, the ServiceAccount everything refers to, the Deployment's image, replicas,
/// pod metadata and the operator's settings.
#[tokio::test]
async fn helm_template_renders_what_each_values_file_asks_for() {
    let Some(t) = helm_only("chart::helm_template_renders_what_each_values_file_asks_for") else {
        return;
    };
    for file in values_files() {
        let what = label(&file);
        let v = merged_values(&file);
        let docs = yaml_docs(&template(&t, &file, &[]).await);
        let full = v["fullnameOverride"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or(RELEASE)
            .to_string();
        let sa_create = v["serviceAccount"]["create"].as_bool().unwrap();
        let sa_name = match v["serviceAccount"]["name"]
            .as_str()
            .filter(|s| !s.is_empty())
        {
            Some(n) => n.to_string(),
            None if sa_create => full.clone(),
            None => "default".into(),
        };
        let rbac = v["rbac"]["create"].as_bool().unwrap();
        let service = v["metrics"]["service"]["enabled"].as_bool().unwrap();

        let mut expected = BTreeSet::from([format!("Deployment/{full}")]);
        if sa_create {
            expected.insert(format!("ServiceAccount/{sa_name}"));
        }
        // Namespaced mode: a Role and RoleBinding in each watched namespace, no cluster role.
        let watched: Vec<String> = v["operator"]["watchNamespaces"]
            .as_array()
            .map(|a| a.iter().map(|n| n.as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        if rbac && v["rbac"]["admissionPolicy"].as_bool().unwrap() {
            expected.extend([
                format!("ValidatingAdmissionPolicy/{full}-managed-objects"),
                format!("ValidatingAdmissionPolicyBinding/{full}-managed-objects"),
            ]);
        }
        if rbac {
            expected.extend([
                format!("Role/{full}-leader-election"),
                format!("RoleBinding/{full}-leader-election"),
            ]);
            if watched.is_empty() {
                expected.extend([
                    format!("ClusterRole/{full}"),
                    format!("ClusterRoleBinding/{full}"),
                ]);
            } else {
                expected.extend([format!("Role/{full}"), format!("RoleBinding/{full}")]);
            }
        }
        if service {
            expected.insert(format!("Service/{full}-metrics"));
        }
        let mon = &v["monitoring"];
        if mon["operator"]["enabled"].as_bool().unwrap() {
            expected.insert(format!(
                "{}/{full}",
                mon["operator"]["kind"].as_str().unwrap()
            ));
        }
        if mon["brokers"]["enabled"].as_bool().unwrap() {
            expected.insert(format!(
                "{}/{full}-brokers",
                mon["brokers"]["kind"].as_str().unwrap()
            ));
        }
        if mon["prometheusRule"]["enabled"].as_bool().unwrap() {
            expected.insert(format!("PrometheusRule/{full}"));
        }
        let dashboard_ns = mon["grafanaDashboard"]["enabled"]
            .as_bool()
            .unwrap()
            .then(|| {
                expected.insert(format!("ConfigMap/{full}-dashboard"));
                mon["grafanaDashboard"]["namespace"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .unwrap_or(NAMESPACE)
                    .to_string()
            });
        let got: BTreeSet<String> = docs
            .iter()
            .map(|d| {
                format!(
                    "{}/{}",
                    d["kind"].as_str().unwrap(),
                    d["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(got, expected, "{what}: rendered objects");

        for d in &docs {
            let id = format!("{what}: {} {}", d["kind"], d["metadata"]["name"]);
            let labels = &d["metadata"]["labels"];
            assert_eq!(labels["app.kubernetes.io/managed-by"], "Helm", "{id}");
            assert_eq!(labels["app.kubernetes.io/instance"], RELEASE, "{id}");
            let kind = d["kind"].as_str().unwrap();
            let cluster_scoped =
                kind.starts_with("Cluster") || kind.starts_with("ValidatingAdmissionPolicy");
            if d["kind"] == "ConfigMap" {
                assert_eq!(
                    d["metadata"]["namespace"].as_str(),
                    dashboard_ns.as_deref(),
                    "{id}"
                );
            } else if !watched.is_empty() && d["metadata"]["name"] == full.as_str() {
                // One Role and RoleBinding per watched namespace.
                let ns = d["metadata"]["namespace"].as_str().unwrap_or("");
                assert!(watched.iter().any(|w| w == ns), "{id} in {ns}");
            } else if !cluster_scoped {
                assert_eq!(d["metadata"]["namespace"], NAMESPACE, "{id}");
            }
            if kind.ends_with("RoleBinding") {
                assert_eq!(
                    d["subjects"],
                    json!([{"kind": "ServiceAccount", "name": sa_name, "namespace": NAMESPACE}]),
                    "{id}"
                );
            }
            if d["kind"] == "Service" {
                assert_eq!(d["spec"]["type"], v["metrics"]["service"]["type"], "{id}");
                assert_eq!(
                    d["spec"]["ports"][0]["port"], v["metrics"]["service"]["port"],
                    "{id}"
                );
                assert_eq!(d["spec"]["ports"][0]["targetPort"], "metrics", "{id}");
            }
        }

        let dep = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
        let spec = &dep["spec"];
        let pod = &spec["template"]["spec"];
        let c = &pod["containers"][0];
        assert_eq!(spec["replicas"], v["replicaCount"], "{what}");
        assert_eq!(pod["serviceAccountName"], sa_name.as_str(), "{what}");
        let tag = v["image"]["tag"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or("0.1.0");
        assert_eq!(
            c["image"],
            format!("{}:{tag}", v["image"]["repository"].as_str().unwrap()),
            "{what}"
        );
        let env = |name: &str| -> Value {
            c["env"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == name)
                .map(|e| e["value"].clone())
                .unwrap_or_else(|| panic!("{what}: no env {name}"))
        };
        let op = &v["operator"];
        assert_eq!(env("RUST_LOG"), op["logLevel"], "{what}");
        assert_eq!(env("TIERMQ_LOG_FORMAT"), op["logFormat"], "{what}");
        assert_eq!(
            env("TIERMQ_BROKER_ADDRESSING"),
            op["brokerAddressing"],
            "{what}"
        );
        assert_eq!(
            env("TIERMQ_DEFAULT_SHARED_CLUSTER"),
            op["defaultSharedCluster"],
            "{what}"
        );
        assert_eq!(
            env("TIERMQ_LEADER_ELECTION"),
            op["leaderElection"]["enabled"].to_string(),
            "{what}"
        );
        assert_eq!(
            env("TIERMQ_METRICS_ADDR"),
            format!(
                "{}:{}",
                v["metrics"]["bindAddress"].as_str().unwrap(),
                v["metrics"]["port"]
            ),
            "{what}"
        );
        assert_eq!(
            env("TIERMQ_BROKER_STATS_INTERVAL_MS"),
            op["brokerStatsIntervalMs"].to_string(),
            "{what}"
        );
        assert_eq!(
            c["ports"][0]["containerPort"], v["metrics"]["port"],
            "{what}"
        );
        let tmeta = &spec["template"]["metadata"];
        for (k, val) in v["podLabels"].as_object().unwrap() {
            assert_eq!(&tmeta["labels"][k], val, "{what}: pod label {k}");
        }
        let annotations = v["podAnnotations"].as_object().unwrap();
        if annotations.is_empty() {
            assert!(tmeta["annotations"].is_null(), "{what}: {tmeta}");
        } else {
            assert_eq!(tmeta["annotations"], json!(annotations), "{what}");
        }
        for key in ["nodeSelector", "tolerations", "affinity"] {
            let want = &v[key];
            let empty = want.as_object().is_some_and(|o| o.is_empty())
                || want.as_array().is_some_and(|a| a.is_empty());
            if empty {
                assert!(pod[key].is_null(), "{what}: {key} rendered though empty");
            } else {
                assert_eq!(&pod[key], want, "{what}: {key}");
            }
        }
    }
}

/// What Helm renders, CRDs included, passes the API server's own checks: kubectl's OpenAPI
/// validation and the server's strict field validation, as a server-side dry run that stores
/// nothing. The Prometheus Operator's kinds (monitors, rules) are left out: kubesim does not
/// serve them, and their CRDs are not available here; `monitoring.rs` checks them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_objects_pass_the_api_servers_validation() {
    let Some(helm) = tools::require(
        Tool::Helm,
        "chart::rendered_objects_pass_the_api_servers_validation",
    ) else {
        return;
    };
    let server = kubesim::apiserver::start(Default::default())
        .await
        .expect("kubesim API server");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let t = Tools::new(Some(helm), tools::MACHINE_KUBECTL.into(), Some(&kubeconfig));
    t.kubectl(&["create", "namespace", NAMESPACE]).await.ok();
    // Where ci/monitoring-values.yaml puts the dashboard, and ci/namespaced-values.yaml's
    // watched namespaces.
    for ns in ["monitoring", "team-a", "team-b"] {
        t.kubectl(&["create", "namespace", ns]).await.ok();
    }
    for file in values_files() {
        let what = label(&file);
        let docs: Vec<Value> = yaml_docs(&template(&t, &file, &["--include-crds"]).await)
            .into_iter()
            .filter(|d| d["apiVersion"] != "monitoring.coreos.com/v1")
            .collect();
        let objects = docs.len();
        let rendered = docs
            .iter()
            .map(|d| serde_yaml::to_string(d).unwrap())
            .collect::<Vec<_>>()
            .join("---\n");
        let out = t
            .kubectl_stdin(
                &["apply", "--dry-run=server", "--validate=strict", "-f", "-"],
                &rendered,
            )
            .await
            .ok();
        let accepted = out
            .lines()
            .filter(|l| l.ends_with("(server dry run)"))
            .count();
        assert_eq!(accepted, objects, "{what}: every object accepted:\n{out}");
    }
    // A dry run stores nothing.
    assert!(
        t.names(&["deployments,serviceaccounts,services", "-A"])
            .await
            .is_empty()
    );
    assert!(t.names(&["crd"]).await.is_empty());
    server.shutdown().await;
}

/// The chart states the Kubernetes releases it supports (README "Kubernetes versions"): Helm
/// refuses anything outside 1.33–1.37.
#[tokio::test]
async fn helm_refuses_kubernetes_versions_outside_the_supported_range() {
    let Some(t) = helm_only("chart::helm_refuses_kubernetes_versions_outside_the_supported_range")
    else {
        return;
    };
    let chart = chart();
    for (version, supported) in [
        ("1.32.9", false),
        ("1.33.0", true),
        ("v1.33.5-eks-2a3b4c", true),
        ("1.37.1", true),
        ("1.38.0", false),
    ] {
        let run = t
            .helm(&[
                "template",
                RELEASE,
                chart.as_str(),
                "--kube-version",
                version,
            ])
            .await;
        if supported {
            run.ok();
        } else {
            let err = run.fails();
            assert!(
                err.contains("chart requires kubeVersion") && err.contains("incompatible"),
                "{version}: {err}"
            );
        }
    }
}
