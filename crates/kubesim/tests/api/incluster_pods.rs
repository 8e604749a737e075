//! Pods whose image maps to a local binary (`kubesim-testpod`, see `kubesim::sim::images`): the
//! kubelet runs them as real processes with their ServiceAccount credentials and the API server's
//! address, evaluates their probes, and reports a container that fails like a real kubelet does.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};
use kubesim::cluster::{self, Cluster, ClusterConfig, wait_for};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);

async fn start_cluster() -> (Cluster, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ClusterConfig::new(dir.path())
        .with_image_binary("testpod", env!("CARGO_BIN_EXE_kubesim-testpod"));
    let c = cluster::start(cfg).await.unwrap();
    (c, dir)
}

async fn create<K>(client: &kube::Client, obj: Value) -> K
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let obj: K = serde_json::from_value(obj).unwrap();
    Api::<K>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &obj)
        .await
        .unwrap()
}

fn container_status(pod: &Pod) -> Option<k8s_openapi::api::core::v1::ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()
        .cloned()
}

/// The pod's process reaches the API server with its own ServiceAccount token (found where
/// client libraries look, with the CA and the namespace), which only the RBAC granted to that
/// ServiceAccount authorizes; readiness waits for that, and a failing liveness probe restarts it.
#[tokio::test]
async fn a_mapped_image_runs_in_cluster_under_its_service_account() {
    let (c, _dir) = start_cluster().await;
    let client = c.client();
    let _: ServiceAccount = create(
        &client,
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader"}}),
    )
    .await;
    let _: Role = create(
        &client,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "pod-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}),
    )
    .await;
    let _: RoleBinding = create(
        &client,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": "default"}]}),
    )
    .await;
    let probe = |path: &str, period: u32| {
        json!({"httpGet": {"path": path, "port": "http"}, "periodSeconds": period,
            "failureThreshold": 1})
    };
    let pod: Pod = create(
        &client,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "who"},
        "spec": {"serviceAccountName": "reader", "containers": [{
            "name": "app", "image": "example.org/tests/testpod:1",
            "args": ["serve", "--addr", "$(POD_IP):8080", "--healthy-for", "4"],
            "env": [
                {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
            ],
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": probe("/readyz", 1),
            "livenessProbe": probe("/healthz", 1)
        }]}}),
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    // Ready only once the process read its own Pod with its token (the readiness probe).
    let ip = wait_for("the pod Ready", T, || async {
        let p = pods.get("who").await.ok()?;
        let ready = container_status(&p)?.ready;
        ready.then(|| p.status?.pod_ip).flatten()
    })
    .await
    .unwrap();
    let body: Value = tiermq_testkit::tls::http_client()
        .get(format!("http://{ip}:8080/whoami"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["username"], "system:serviceaccount:default:reader",
        "{body}"
    );
    assert_eq!(body["namespace"], "default", "{body}");
    assert_eq!(body["podUid"].as_str(), pod.uid().as_deref(), "{body}");
    // The request log shows the pod's own identity reading its Pod, granted by the Role.
    let log = c
        .api()
        .request_log()
        .records_of("system:serviceaccount:default:reader");
    assert!(
        log.iter()
            .any(|e| e.verb == "get" && e.resource == "pods" && e.code == 200),
        "no pod read by the ServiceAccount in the request log"
    );

    // /healthz fails after 4 s: the liveness probe kills the container, which restarts.
    let p = wait_for("a restart after the liveness probe failed", T, || async {
        let p = pods.get("who").await.ok()?;
        (container_status(&p)?.restart_count >= 1).then_some(p)
    })
    .await
    .unwrap();
    let last = container_status(&p).unwrap().last_state.unwrap();
    let term = last.terminated.expect("the killed run is terminated");
    assert_eq!(term.exit_code, 143, "SIGTERM ends the run: {term:?}");
    let events = event_reasons(&client, "who").await;
    assert!(
        events.contains(&("Warning".into(), "Unhealthy".into())),
        "{events:?}"
    );
    assert!(
        events.contains(&("Normal".into(), "Killing".into())),
        "{events:?}"
    );
    c.shutdown().await;
}

async fn event_reasons(client: &kube::Client, pod: &str) -> Vec<(String, String)> {
    Api::<Event>::namespaced(client.clone(), "default")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(pod))
        .map(|e| (e.type_.unwrap_or_default(), e.reason.unwrap_or_default()))
        .collect()
}

/// A container that exits with an error is reported as a real kubelet reports it: the exit code
/// and the log's last line in `lastState.terminated`, `CrashLoopBackOff` while it waits, restarts
/// counted, a Warning Event `BackOff`; and its log is served as `pods/{name}/log`.
#[tokio::test]
async fn a_failing_container_crash_loops_with_its_exit_code_and_a_warning() {
    let (c, _dir) = start_cluster().await;
    let client = c.client();
    // kubesim has no ServiceAccount controller making each namespace's `default` one.
    let _: ServiceAccount = create(
        &client,
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}),
    )
    .await;
    let _: Pod = create(
        &client,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "crash"},
        "spec": {"containers": [{
            "name": "app", "image": "testpod",
            "args": ["fail", "--code", "3", "--message", "cannot open /data: Permission denied"],
            "terminationMessagePolicy": "FallbackToLogsOnError"
        }]}}),
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let created = std::time::Instant::now();
    let st = wait_for("CrashLoopBackOff after three restarts", T, || async {
        let st = container_status(&pods.get("crash").await.ok()?)?;
        let waiting = st.state.as_ref()?.waiting.as_ref()?.reason.clone();
        (waiting.as_deref() == Some("CrashLoopBackOff") && st.restart_count >= 3).then_some(st)
    })
    .await
    .unwrap();
    // The third restart comes only after the back-offs of the first two (1 s, then 2 s).
    assert!(
        created.elapsed() >= Duration::from_secs(3),
        "three restarts within {:?}: no back-off",
        created.elapsed()
    );
    assert!(!st.ready);
    let term = st.last_state.unwrap().terminated.unwrap();
    assert_eq!(term.exit_code, 3, "{term:?}");
    assert_eq!(term.reason.as_deref(), Some("Error"), "{term:?}");
    assert!(
        term.message
            .as_deref()
            .is_some_and(|m| m.contains("cannot open /data: Permission denied")),
        "{term:?}"
    );
    let events = event_reasons(&client, "crash").await;
    assert!(
        events.contains(&("Warning".into(), "BackOff".into())),
        "{events:?}"
    );
    let log = pods.logs("crash", &Default::default()).await.unwrap();
    assert!(log.contains("Permission denied"), "{log:?}");
    c.shutdown().await;
}
