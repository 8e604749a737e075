//! The plugin against kubesim's API server (no brokers): `status` through real kubectl's plugin
//! mechanism, `watch` following recorded status changes, and `preview` reading the operator's
//! settings from its Deployment and reporting what the operator would: a source that is not in
//! service, a SharedCluster's capacity, and a management API it cannot reach from here.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use serde_json::{Value, json};
use tiermq_crd::RabbitMQInstance;

struct Cluster {
    server: kubesim::apiserver::ApiServerHandle,
    client: kube::Client,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

async fn cluster(namespaces: &[&str]) -> Cluster {
    let server = kubesim::apiserver::start(Default::default())
        .await
        .expect("kubesim API server");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    // kubesim serves HTTPS with its own CA and authenticates clients: the admin identity.
    let client = server.admin_client().unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (_, yaml) in tiermq_crd::crd_files() {
        let crd: CustomResourceDefinition = serde_yaml::from_str(&yaml).unwrap();
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    for ns in namespaces {
        create(
            &client,
            "v1",
            "Namespace",
            "namespaces",
            None,
            json!({"metadata": {"name": ns}}),
        )
        .await;
    }
    Cluster {
        server,
        client,
        kubeconfig,
        _dir: dir,
    }
}

async fn create(
    client: &kube::Client,
    api_version: &str,
    kind: &str,
    plural: &str,
    ns: Option<&str>,
    mut obj: Value,
) -> DynamicObject {
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let ar = ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: api_version.into(),
        kind: kind.into(),
        plural: plural.into(),
    };
    let api: Api<DynamicObject> = match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    let obj: DynamicObject = serde_json::from_value(obj).unwrap();
    api.create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("create {kind}: {e}"))
}

/// Records `status` on the instance through the status subresource, as the operator does.
async fn set_status(client: &kube::Client, ns: &str, name: &str, status: Value) {
    let api: Api<RabbitMQInstance> = Api::namespaced(client.clone(), ns);
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .unwrap();
}

async fn instance(client: &kube::Client, ns: &str, name: &str, spec: Value) {
    create(
        client,
        "tiermq.io/v1alpha1",
        "RabbitMQInstance",
        "rabbitmqinstances",
        Some(ns),
        json!({"metadata": {"name": name, "namespace": ns}, "spec": spec}),
    )
    .await;
}

fn draining_status() -> Value {
    json!({
        "tier": "Shared", "phase": "Migrating", "migrationPhase": "DrainingSource",
        "observedGeneration": 1,
        "serving": {"kind": "Shared", "name": "main", "namespace": "ops"},
        "migration": {
            "from": "Dedicated", "to": "Shared",
            "source": {"kind": "Dedicated", "name": "orders-dedicated", "namespace": "team-a"},
            "destination": {"kind": "Shared", "name": "main", "namespace": "ops"},
            "drainStrategy": "Shovel", "connectionPolicy": "Close",
            "started": "2026-01-01T00:00:00Z",
            "phases": [
                {"phase": "PreparingDestination", "started": "2026-01-01T00:00:00Z"},
                {"phase": "DualWriteDualRead", "started": "2026-01-01T00:00:40Z"},
                {"phase": "SingleWriteDualRead", "started": "2026-01-01T00:01:00Z"},
                {"phase": "DrainingSource", "started": "2026-01-01T00:01:05Z"}
            ],
            "remainingMessages": 640, "drainRate": 32.0, "etaSeconds": 20
        },
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "InService",
             "message": "served by SharedCluster ops/main", "lastTransitionTime": "2026-01-01T00:00:00Z"},
            {"type": "Migrating", "status": "True", "reason": "Converting",
             "message": "draining dedicated cluster team-a/orders-dedicated: 640 messages remain, ETA 20s",
             "lastTransitionTime": "2026-01-01T00:00:00Z"}
        ]
    })
}

/// `kubectl tiermq status` runs the plugin binary through real kubectl's plugin lookup (`PATH`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_through_kubectl_shows_the_phase_timeline_backlog_and_conditions() {
    let c = cluster(&["team-a"]).await;
    instance(
        &c.client,
        "team-a",
        "orders",
        json!({"series": "Subscription", "tier": "Shared"}),
    )
    .await;
    set_status(&c.client, "team-a", "orders", draining_status()).await;

    let bin = Path::new(env!("CARGO_BIN_EXE_kubectl-tiermq"));
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // Real kubectl, as kubesim's kubectl tests run it: /usr/bin/kubectl or the one KUBECTL names.
    let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "/usr/bin/kubectl".into());
    let out = tokio::process::Command::new(kubectl)
        .args(["tiermq", "status", "orders", "-n", "team-a"])
        .env("PATH", path)
        .env("KUBECONFIG", &c.kubeconfig)
        .output()
        .await
        .expect("kubectl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kubectl tiermq status failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "RabbitMQInstance team-a/orders",
        "tier:         Shared   phase: Migrating   migration: DrainingSource",
        "Conversion Dedicated -> Shared, started 2026-01-01T00:00:00Z",
        "drain:        Shovel; source connections: Close",
        "backlog:      640 messages left on the source, draining 32.0 msg/s, ETA 20s",
        "PreparingDestination   2026-01-01T00:00:00Z   40s",
        "DualWriteDualRead      2026-01-01T00:00:40Z   20s",
        "SingleWriteDualRead    2026-01-01T00:01:00Z   5s",
        "DrainingSource         2026-01-01T00:01:05Z",
        "(current)",
        "Migrating          True    Converting",
        "draining dedicated cluster team-a/orders-dedicated: 640 messages remain, ETA 20s",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }

    // A missing instance is an error that says so.
    let out = tokio::process::Command::new(bin)
        .args(["status", "nope", "-n", "team-a"])
        .env("KUBECONFIG", &c.kubeconfig)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("RabbitMQInstance team-a/nope not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.server.shutdown().await;
}

/// A `Write` the test can read while `watch` writes to it.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    fn text(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(|l| l.split_once("  ").map_or(l, |(_, rest)| rest).to_string())
            .collect()
    }

    async fn until(&self, n: usize) -> Vec<String> {
        for _ in 0..100 {
            if self.text().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.text()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_one_line_per_change() {
    let c = cluster(&["team-a"]).await;
    let lines = Lines::default();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = {
        let client = c.client.clone();
        let mut out = lines.clone();
        tokio::spawn(async move {
            kubectl_tiermq::watch::follow(client, "team-a", "orders", &mut out, async {
                let _ = stop_rx.await;
            })
            .await
        })
    };
    assert_eq!(
        lines.until(1).await,
        ["team-a/orders  not found (yet); waiting for it"]
    );
    instance(
        &c.client,
        "team-a",
        "orders",
        json!({"series": "Subscription", "tier": "Shared"}),
    )
    .await;
    lines.until(2).await;
    set_status(
        &c.client,
        "team-a",
        "orders",
        json!({"tier": "Dedicated", "phase": "Migrating", "migrationPhase": "PreparingDestination"}),
    )
    .await;
    lines.until(3).await;
    set_status(&c.client, "team-a", "orders", draining_status()).await;
    lines.until(4).await;
    // Only the progress message changes: no line.
    let mut reworded = draining_status();
    reworded["conditions"][1]["message"] = json!("draining: 600 messages remain");
    set_status(&c.client, "team-a", "orders", reworded).await;
    let mut fewer = draining_status();
    fewer["migration"]["remainingMessages"] = json!(320);
    fewer["migration"]["etaSeconds"] = json!(10);
    set_status(&c.client, "team-a", "orders", fewer).await;
    lines.until(5).await;
    let api: Api<RabbitMQInstance> = Api::namespaced(c.client.clone(), "team-a");
    api.delete("orders", &Default::default()).await.unwrap();
    let got = lines.until(6).await;
    let _ = stop_tx.send(());
    task.await.unwrap().expect("watch ends cleanly");
    assert_eq!(
        got,
        [
            "team-a/orders  not found (yet); waiting for it",
            "team-a/orders  no status yet",
            "team-a/orders  tier=Dedicated phase=Migrating migration=PreparingDestination",
            "team-a/orders  tier=Shared phase=Migrating migration=DrainingSource backlog=640 rate=32.0/s eta=20s Ready=True(InService) Migrating=True(Converting)",
            "team-a/orders  tier=Shared phase=Migrating migration=DrainingSource backlog=320 rate=32.0/s eta=10s Ready=True(InService) Migrating=True(Converting)",
            "team-a/orders  deleted",
        ]
    );
    c.server.shutdown().await;
}

/// Preview without brokers: the operator's settings come from its Deployment, the instance names
/// no SharedCluster so the operator's default is the destination, the SharedCluster's capacity is
/// counted from the instances, and the dedicated source's management API cannot be reached from
/// here (nothing listens on its ClusterIP), which the operator would also report as not in
/// service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_reports_the_destination_capacity_and_what_cannot_be_known_from_here() {
    let c = cluster(&["team-a", "team-b", "ops", "tiermq-system"]).await;
    create(
        &c.client,
        "apps/v1",
        "Deployment",
        "deployments",
        Some("tiermq-system"),
        json!({
            "metadata": {"name": "tiermq-operator", "namespace": "tiermq-system",
                         "labels": {"app.kubernetes.io/name": "tiermq", "app.kubernetes.io/component": "operator"}},
            "spec": {
                "selector": {"matchLabels": {"app.kubernetes.io/name": "tiermq"}},
                "template": {
                    "metadata": {"labels": {"app.kubernetes.io/name": "tiermq"}},
                    "spec": {"containers": [{"name": "operator", "image": "tiermq/tiermq-operator:0.1.0",
                        "env": [{"name": "TIERMQ_DEFAULT_SHARED_CLUSTER", "value": "ops/main"}]}]}
                }
            }
        }),
    )
    .await;
    create(
        &c.client,
        "tiermq.io/v1alpha1",
        "SharedCluster",
        "sharedclusters",
        Some("ops"),
        json!({"metadata": {"name": "main", "namespace": "ops"},
               "spec": {"replicas": 1, "capacity": {"maxInstances": 2}}}),
    )
    .await;
    // Another instance already placed on the SharedCluster.
    instance(
        &c.client,
        "team-b",
        "billing",
        json!({"series": "Subscription", "tier": "Shared"}),
    )
    .await;
    set_status(
        &c.client,
        "team-b",
        "billing",
        json!({"tier": "Shared", "serving": {"kind": "Shared", "name": "main", "namespace": "ops"}}),
    )
    .await;
    // The dedicated instance to preview: its StatefulSet is ready, its admin Secret and Service
    // exist, but no broker answers on the Service's ClusterIP.
    instance(
        &c.client,
        "team-a",
        "orders",
        json!({"series": "Subscription", "tier": "Dedicated"}),
    )
    .await;
    set_status(
        &c.client,
        "team-a",
        "orders",
        json!({"tier": "Dedicated", "phase": "Ready", "migrationPhase": "Stable",
               "serving": {"kind": "Dedicated", "name": "orders-dedicated", "namespace": "team-a"}}),
    )
    .await;
    let labels =
        json!({"app.kubernetes.io/name": "rabbitmq", "tiermq.io/cluster": "orders-dedicated"});
    create(
        &c.client,
        "apps/v1",
        "StatefulSet",
        "statefulsets",
        Some("team-a"),
        json!({"metadata": {"name": "orders-dedicated", "namespace": "team-a", "labels": labels},
               "spec": {"replicas": 1, "serviceName": "orders-dedicated-nodes",
                        "selector": {"matchLabels": labels},
                        "template": {"metadata": {"labels": labels},
                                     "spec": {"containers": [{"name": "rabbitmq", "image": "busybox"}]}}}}),
    )
    .await;
    let sts: Api<k8s_openapi::api::apps::v1::StatefulSet> =
        Api::namespaced(c.client.clone(), "team-a");
    sts.patch_status(
        "orders-dedicated",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"replicas": 1, "readyReplicas": 1}})),
    )
    .await
    .unwrap();
    create(
        &c.client,
        "v1",
        "Secret",
        "secrets",
        Some("team-a"),
        json!({"metadata": {"name": "orders-dedicated-admin", "namespace": "team-a"},
               "stringData": {"username": "admin", "password": "not-a-real-one"}}),
    )
    .await;
    create(
        &c.client,
        "v1",
        "Service",
        "services",
        Some("team-a"),
        json!({"metadata": {"name": "orders-dedicated", "namespace": "team-a"},
               "spec": {"selector": labels, "ports": [{"name": "management", "port": 15672}]}}),
    )
    .await;

    let bin = env!("CARGO_BIN_EXE_kubectl-tiermq");
    let out = tokio::process::Command::new(bin)
        .args(["preview", "orders", "-n", "team-a", "--to", "Shared"])
        .env("KUBECONFIG", &c.kubeconfig)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "preview failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    for want in [
        "Preview: RabbitMQInstance team-a/orders, Dedicated -> Shared (downgrade); nothing is changed",
        "operator settings: from Deployment tiermq-system/tiermq-operator",
        "hold the flip (migrationPhase Blocked)",
        "blocker: ConversionBlocked (InstanceNotInService): conversion to Shared held: the instance is not in service on dedicated cluster team-a/orders-dedicated (its management API does not answer)",
        "source:       dedicated cluster team-a/orders-dedicated (1/1 replicas ready, management API not reachable from here)",
        "destination:  SharedCluster ops/main (the SharedCluster exists, its brokers (StatefulSet) do not yet)",
        "capacity:     1/2 instances placed (room for 1 more)",
        "unknown: the management API of dedicated cluster team-a/orders-dedicated is not reachable from here (addressed by the cluster Services' ClusterIPs)",
        "unknown without the source's queue statistics",
        "every source connection is closed (connection policy Close, the default for a downgrade)",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    // The password of the admin Secret never shows.
    assert!(!text.contains("not-a-real-one"));
    c.server.shutdown().await;
}

/// `deploy/krew/tiermq.yaml` is a Krew plugin manifest for this binary at this version, once a
/// release fills in its placeholders (Krew's rules: the name is the file name, `v` + semver, one
/// entry per os/arch, the binary named `kubectl-<name>`).
#[test]
fn the_krew_manifest_installs_this_binary_at_this_version() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/krew/tiermq.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let filled = text
        .replace(
            "RELEASE_BASE_URL",
            "https://releases.example.invalid/tiermq",
        )
        .replace("SHA256_LINUX_AMD64", &"a".repeat(64))
        .replace("SHA256_LINUX_ARM64", &"b".repeat(64))
        .replace("SHA256_DARWIN_AMD64", &"c".repeat(64))
        .replace("SHA256_DARWIN_ARM64", &"d".repeat(64));
    let m: Value = serde_yaml::from_str(&filled).unwrap();
    assert_eq!(
        m["apiVersion"],
        "krew.googlecontainertools.github.com/v1alpha2"
    );
    assert_eq!(m["kind"], "Plugin");
    let name = m["metadata"]["name"].as_str().unwrap();
    assert_eq!(
        format!("{name}.yaml"),
        path.file_name().unwrap().to_string_lossy()
    );
    let bin = Path::new(env!("CARGO_BIN_EXE_kubectl-tiermq"))
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert_eq!(bin, format!("kubectl-{name}"));
    let spec = &m["spec"];
    let version = format!("v{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(spec["version"], version.as_str());
    assert!(spec["shortDescription"].as_str().unwrap().len() <= 50);
    let mut seen = std::collections::BTreeSet::new();
    for p in spec["platforms"].as_array().unwrap() {
        let labels = &p["selector"]["matchLabels"];
        let (os, arch) = (
            labels["os"].as_str().unwrap(),
            labels["arch"].as_str().unwrap(),
        );
        assert!(seen.insert((os, arch)), "{os}/{arch} twice");
        let uri = p["uri"].as_str().unwrap();
        assert!(uri.starts_with("https://"), "{uri}");
        assert!(
            uri.ends_with(&format!("/{version}/{bin}-{os}-{arch}.tar.gz")),
            "{uri}"
        );
        let sha = p["sha256"].as_str().unwrap();
        assert!(sha.len() == 64 && sha.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(p["bin"], bin.as_str());
        assert_eq!(p["files"], json!([{"from": bin, "to": "."}]));
    }
    assert!(seen.contains(&("linux", "amd64")));
    // Every placeholder is one the test (and so a release) fills.
    let left: Vec<&str> = filled
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter(|l| l.contains("SHA256_") || l.contains("RELEASE_BASE_URL"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
