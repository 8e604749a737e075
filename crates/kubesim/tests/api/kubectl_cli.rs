//! Real kubectl (/usr/bin/kubectl, or the one `KUBECTL` names) against the kubesim API server
//! through a kubeconfig: the everyday commands an operator's users and the project's docs rely on.
//! `kubectl_skew` runs these tests again with the newest kubectl `make setup` installs.

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kubesim::apiserver::ApiServerHandle;

use crate::common;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The kubectl under test: `KUBECTL` if set (the version-skew run sets it), else the machine's.
fn kubectl_bin() -> String {
    std::env::var("KUBECTL").unwrap_or_else(|_| tiermq_testkit::tools::MACHINE_KUBECTL.into())
}

struct Kubectl {
    server: ApiServerHandle,
    dir: tempfile::TempDir,
}

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
        .display()
        .to_string()
}

impl Kubectl {
    async fn new() -> Self {
        let server = common::server().await;
        let dir = tempfile::tempdir().expect("a temp dir");
        server
            .write_kubeconfig(&dir.path().join("kubeconfig"))
            .expect("kubeconfig written");
        Kubectl { server, dir }
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(kubectl_bin());
        c.arg("--kubeconfig")
            .arg(self.dir.path().join("kubeconfig"))
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(args)
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    async fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut c = self.command(args);
        if stdin.is_some() {
            c.stdin(Stdio::piped());
        }
        let mut child = c.spawn().expect("kubectl starts");
        if let Some(input) = stdin {
            let mut s = child.stdin.take().expect("piped stdin");
            s.write_all(input.as_bytes()).await.expect("stdin written");
        }
        tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} did not finish in 30s"))
            .expect("kubectl ran")
    }

    /// Runs kubectl, asserts success, returns stdout.
    async fn ok(&self, args: &[&str]) -> String {
        self.ok_stdin(args, None).await
    }

    async fn ok_stdin(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin).await;
        let (so, se) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "kubectl {args:?} failed: {se}\n{so}");
        so.into_owned()
    }

    /// Runs kubectl, asserts failure, returns stderr.
    async fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args, None).await;
        assert!(
            !out.status.success(),
            "kubectl {args:?} should fail: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    async fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a).await).expect("kubectl -o json prints JSON")
    }

    async fn with_crd(self) -> Self {
        self.ok(&["apply", "-f", &fixture("crd-broker.yaml")]).await;
        self
    }
}

const STS: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
  labels: {app: web}
spec:
  serviceName: web
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: app
        image: rabbitmq:3.10
        ports:
        - containerPort: 5672
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 5672
"#;

#[tokio::test]
async fn api_resources_shows_built_ins_and_crd_short_names() {
    let k = Kubectl::new().await.with_crd().await;
    let out = k.ok(&["api-resources"]).await;
    let line = out
        .lines()
        .find(|l| l.starts_with("brokers"))
        .unwrap_or_else(|| panic!("brokers missing:\n{out}"));
    assert!(
        line.contains("brk") && line.contains("test.kubesim.io/v1") && line.contains("Broker"),
        "{line}"
    );
    for expect in [
        "statefulsets",
        "endpointslices",
        "customresourcedefinitions",
        "leases",
        "poddisruptionbudgets",
    ] {
        assert!(out.contains(expect), "{expect} missing:\n{out}");
    }
    assert!(k.ok(&["version"]).await.contains("Server Version: v1.33.0"));
}

#[tokio::test]
async fn apply_client_side_and_server_side_with_conflicts() {
    let k = Kubectl::new().await.with_crd().await;
    // client-side apply of a custom resource, defaults from the schema filled in
    assert!(
        k.ok(&["apply", "-f", &fixture("broker-a.yaml")])
            .await
            .contains("broker.test.kubesim.io/alpha created")
    );
    let b = k.json(&["get", "brk", "alpha"]).await;
    assert_eq!(b["spec"]["tier"], "shared");
    assert_eq!(b["spec"]["replicas"], 1);
    assert!(
        k.ok(&["apply", "-f", &fixture("broker-a.yaml")])
            .await
            .contains("unchanged")
    );

    // client-side apply of built-ins (strategic merge on the second apply)
    k.ok_stdin(&["apply", "-f", "-"], Some(STS)).await;
    let changed = STS.replace("replicas: 2", "replicas: 3");
    assert!(
        k.ok_stdin(&["apply", "-f", "-"], Some(&changed))
            .await
            .contains("statefulset.apps/web configured")
    );
    assert_eq!(
        k.ok(&["get", "sts", "web", "-o", "jsonpath={.spec.replicas}"])
            .await,
        "3"
    );
    let svc = k.json(&["get", "svc", "web"]).await;
    assert!(
        svc["spec"]["clusterIP"]
            .as_str()
            .unwrap()
            .starts_with("127.20.7."),
        "{svc}"
    );

    // server-side apply: a field another manager set to another value conflicts
    k.ok(&["scale", "sts", "web", "--replicas=5"]).await;
    let ssa = STS.replace("replicas: 2", "replicas: 4");
    let err = k
        .run(&["apply", "--server-side", "-f", "-"], Some(&ssa))
        .await;
    let stderr = String::from_utf8_lossy(&err.stderr);
    assert!(
        !err.status.success() && stderr.contains("conflict") && stderr.contains(".spec.replicas"),
        "{stderr}"
    );
    let out = k
        .ok_stdin(
            &["apply", "--server-side", "--force-conflicts", "-f", "-"],
            Some(&ssa),
        )
        .await;
    assert!(out.contains("serverside-applied"), "{out}");
    assert_eq!(
        k.ok(&["get", "sts", "web", "-o", "jsonpath={.spec.replicas}"])
            .await,
        "4"
    );
    let managers = k
        .ok(&[
            "get",
            "sts",
            "web",
            "--show-managed-fields",
            "-o",
            "jsonpath={.metadata.managedFields[*].manager}",
        ])
        .await;
    assert!(managers.contains("kubectl"), "{managers}");

    // kubectl diff previews through a server-side dry run and changes nothing
    let preview = STS.replace("replicas: 2", "replicas: 7");
    let out = k.run(&["diff", "-f", "-"], Some(&preview)).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "diff exits 1 on differences: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("+  replicas: 7") && stdout.contains("-  replicas: 4"),
        "{stdout}"
    );
    assert_eq!(
        k.ok(&["get", "sts", "web", "-o", "jsonpath={.spec.replicas}"])
            .await,
        "4"
    );
    // `all` covers the workload kinds
    let all = k.ok(&["get", "all"]).await;
    assert!(
        all.contains("statefulset.apps/web") && all.contains("service/web"),
        "{all}"
    );
}

#[tokio::test]
async fn get_prints_yaml_json_jsonpath_and_tables() {
    let k = Kubectl::new().await.with_crd().await;
    k.ok(&["apply", "-f", &fixture("broker-a.yaml")]).await;
    let yaml = k.ok(&["get", "broker", "alpha", "-o", "yaml"]).await;
    assert!(
        yaml.contains("series: professional") && yaml.contains("kind: Broker"),
        "{yaml}"
    );
    let json = k.json(&["get", "brokers.test.kubesim.io", "alpha"]).await;
    assert_eq!(json["metadata"]["labels"]["app"], "alpha");
    assert_eq!(
        k.ok(&["get", "brk", "alpha", "-o", "jsonpath={.spec.series}"])
            .await,
        "professional"
    );
    let table = k.ok(&["get", "brk"]).await;
    let header = table.lines().next().unwrap();
    assert!(
        header.contains("SERIES") && header.contains("TIER") && header.contains("AGE"),
        "{table}"
    );
    assert!(
        table.lines().nth(1).unwrap().starts_with("alpha"),
        "{table}"
    );
    let ns = k.ok(&["get", "namespaces"]).await;
    assert!(ns.contains("kube-system") && ns.contains("Active"), "{ns}");
    let list = k.json(&["get", "brk", "-l", "app=alpha"]).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let none = k.json(&["get", "brk", "-l", "app notin (alpha)"]).await;
    assert_eq!(none["items"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn get_watch_streams_a_change() {
    let k = Kubectl::new().await.with_crd().await;
    k.ok(&["apply", "-f", &fixture("broker-a.yaml")]).await;
    let mut child = k
        .command(&[
            "get",
            "brk",
            "-w",
            "-o",
            "custom-columns=NAME:.metadata.name,TIER:.spec.tier",
        ])
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = vec![];
    let result = tokio::time::timeout(Duration::from_secs(20), async {
        // the initial listing, then the change made below
        while let Some(l) = lines.next_line().await.unwrap() {
            seen.push(l.clone());
            if l.starts_with("alpha") && l.contains("shared") {
                k.ok(&[
                    "patch",
                    "brk",
                    "alpha",
                    "--type",
                    "merge",
                    "-p",
                    r#"{"spec":{"tier":"dedicated"}}"#,
                ])
                .await;
            }
            if l.starts_with("alpha") && l.contains("dedicated") {
                return;
            }
        }
    })
    .await;
    child.kill().await.ok();
    assert!(
        result.is_ok(),
        "kubectl get -w did not stream the change; saw {seen:?}"
    );
}

#[tokio::test]
async fn patch_label_annotate_and_scale() {
    let k = Kubectl::new().await.with_crd().await;
    k.ok(&["apply", "-f", &fixture("broker-a.yaml")]).await;
    k.ok(&[
        "patch",
        "brk",
        "alpha",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"replicas":2}}"#,
    ])
    .await;
    k.ok(&[
        "patch",
        "brk",
        "alpha",
        "--type",
        "json",
        "-p",
        r#"[{"op":"replace","path":"/spec/tier","value":"dedicated"}]"#,
    ])
    .await;
    k.ok(&["label", "brk", "alpha", "team=blue"]).await;
    k.ok(&["annotate", "brk", "alpha", "owner=ops"]).await;
    let b = k.json(&["get", "brk", "alpha"]).await;
    assert_eq!(b["spec"]["replicas"], 2);
    assert_eq!(b["spec"]["tier"], "dedicated");
    assert_eq!(b["metadata"]["labels"]["team"], "blue");
    assert_eq!(b["metadata"]["annotations"]["owner"], "ops");
    assert_eq!(
        b["metadata"]["generation"], 3,
        "two spec changes, label and annotation do not count"
    );
    // a JSON patch that does not apply is refused
    let err = k
        .fails(&[
            "patch",
            "brk",
            "alpha",
            "--type",
            "json",
            "-p",
            r#"[{"op":"remove","path":"/spec/nope"}]"#,
        ])
        .await;
    assert!(err.contains("nope") || err.contains("Invalid"), "{err}");
    k.ok(&["label", "brk", "alpha", "team-"]).await;
    assert!(
        k.json(&["get", "brk", "alpha"]).await["metadata"]["labels"]
            .get("team")
            .is_none()
    );

    // scale a StatefulSet and a custom resource through their scale subresources
    k.ok_stdin(&["apply", "-f", "-"], Some(STS)).await;
    assert!(
        k.ok(&["scale", "statefulset", "web", "--replicas=4"])
            .await
            .contains("scaled")
    );
    assert_eq!(
        k.ok(&["get", "sts", "web", "-o", "jsonpath={.spec.replicas}"])
            .await,
        "4"
    );
    k.ok(&["scale", "brk", "alpha", "--replicas=3"]).await;
    assert_eq!(
        k.ok(&["get", "brk", "alpha", "-o", "jsonpath={.spec.replicas}"])
            .await,
        "3"
    );
}

#[tokio::test]
async fn wait_for_a_condition_set_through_the_status_subresource() {
    let k = Kubectl::new().await.with_crd().await;
    k.ok(&["apply", "-f", &fixture("broker-a.yaml")]).await;
    let waiter = k
        .command(&[
            "wait",
            "--for=condition=Ready",
            "brk/alpha",
            "--timeout=20s",
        ])
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let brokers: Api<kube::api::DynamicObject> = Api::namespaced_with(
        common::client(&k.server),
        "default",
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("test.kubesim.io", "v1", "Broker"),
            "brokers",
        ),
    );
    brokers
        .patch_status(
            "alpha",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [
            {"type": "Ready", "status": "True", "reason": "Provisioned", "message": "broker is up",
             "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})),
        )
        .await
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(25), waiter.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kubectl wait failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("condition met"), "{stdout}");
}

#[tokio::test]
async fn describe_shows_events_of_the_object() {
    let k = Kubectl::new().await.with_crd().await;
    k.ok(&["apply", "-f", &fixture("broker-a.yaml")]).await;
    k.ok_stdin(&["apply", "-f", "-"], Some(STS)).await;
    let c = common::client(&k.server);
    let events: Api<Event> = Api::namespaced(c, "default");
    for (kind, api_version, name) in [
        ("Broker", "test.kubesim.io/v1", "alpha"),
        ("StatefulSet", "apps/v1", "web"),
    ] {
        let uid = k
            .ok(&[
                "get",
                if kind == "Broker" { "brk" } else { "sts" },
                name,
                "-o",
                "jsonpath={.metadata.uid}",
            ])
            .await;
        let ev: Event = serde_json::from_value(json!({
            "metadata": {"name": format!("{name}.provisioned")},
            "involvedObject": {"kind": kind, "apiVersion": api_version, "name": name, "namespace": "default", "uid": uid},
            "reason": "Provisioned", "message": format!("{name} provisioned by the test"), "type": "Normal",
            "count": 1, "source": {"component": "kubesim-test"},
            "firstTimestamp": chrono::Utc::now().to_rfc3339(), "lastTimestamp": chrono::Utc::now().to_rfc3339(),
        }))
        .unwrap();
        events.create(&PostParams::default(), &ev).await.unwrap();
    }
    // an operator's events go through events.k8s.io/v1 (kube-rs Recorder); describe reads
    // core/v1 Events, which are the same objects
    let recorder = kube::runtime::events::Recorder::new(
        common::client(&k.server),
        kube::runtime::events::Reporter {
            controller: "tiermq-test".into(),
            instance: None,
        },
    );
    let reference = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("test.kubesim.io/v1".into()),
        kind: Some("Broker".into()),
        name: Some("alpha".into()),
        namespace: Some("default".into()),
        uid: Some(
            k.ok(&["get", "brk", "alpha", "-o", "jsonpath={.metadata.uid}"])
                .await,
        ),
        ..Default::default()
    };
    let ev = kube::runtime::events::Event {
        type_: kube::runtime::events::EventType::Warning,
        reason: "ConversionBlocked".into(),
        note: Some("instance is not Ready".into()),
        action: "Convert".into(),
        secondary: None,
    };
    recorder.publish(&ev, &reference).await.unwrap();
    // publishing it again patches the same event into a series
    recorder.publish(&ev, &reference).await.unwrap();
    let d = k.ok(&["describe", "brk", "alpha"]).await;
    assert!(
        d.contains("Provisioned") && d.contains("alpha provisioned by the test"),
        "{d}"
    );
    assert!(
        d.contains("ConversionBlocked")
            && d.contains("instance is not Ready")
            && d.contains("tiermq-test"),
        "{d}"
    );
    let v1 = k.json(&["get", "events.v1.events.k8s.io"]).await;
    let notes: Vec<&str> = v1["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["note"].as_str())
        .collect();
    assert!(
        notes.contains(&"alpha provisioned by the test"),
        "core events are visible through events.k8s.io: {notes:?}"
    );
    assert!(d.contains("Series:") && d.contains("professional"), "{d}");
    let d = k.ok(&["describe", "statefulset", "web"]).await;
    assert!(
        d.contains("web provisioned by the test") && d.contains("Replicas:"),
        "{d}"
    );
    assert!(
        !d.contains("alpha provisioned"),
        "events of other objects are not shown: {d}"
    );
}

#[tokio::test]
async fn delete_cascades_to_owned_objects() {
    let k = Kubectl::new().await.with_crd().await;
    k.ok(&["apply", "-f", &fixture("broker-a.yaml")]).await;
    let uid = k
        .ok(&["get", "brk", "alpha", "-o", "jsonpath={.metadata.uid}"])
        .await;
    let owned = format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: alpha-conf
  ownerReferences:
  - {{apiVersion: test.kubesim.io/v1, kind: Broker, name: alpha, uid: "{uid}", controller: true, blockOwnerDeletion: true}}
data: {{rabbitmq.conf: "x"}}
---
apiVersion: v1
kind: Secret
metadata:
  name: alpha-cookie
  ownerReferences:
  - {{apiVersion: test.kubesim.io/v1, kind: Broker, name: alpha, uid: "{uid}"}}
stringData: {{cookie: "c"}}
"#
    );
    k.ok_stdin(&["apply", "-f", "-"], Some(&owned)).await;
    k.ok(&["get", "cm", "alpha-conf"]).await;
    assert!(k.ok(&["delete", "brk", "alpha"]).await.contains("deleted"));
    for what in [
        ["brk", "alpha"],
        ["cm", "alpha-conf"],
        ["secret", "alpha-cookie"],
    ] {
        let err = k.fails(&["get", what[0], what[1]]).await;
        assert!(
            err.contains("NotFound") || err.contains("not found"),
            "{what:?}: {err}"
        );
    }
    // a namespace takes its content with it
    k.ok_stdin(
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: Namespace\nmetadata: {name: scratch}\n"),
    )
    .await;
    k.ok(&["-n", "scratch", "apply", "-f", &fixture("broker-a.yaml")])
        .await;
    k.ok(&["delete", "namespace", "scratch"]).await;
    assert!(
        k.fails(&["get", "ns", "scratch"])
            .await
            .contains("not found")
    );
}

#[tokio::test]
async fn cel_transition_rule_rejects_an_apply_with_its_message() {
    let k = Kubectl::new().await.with_crd().await;
    k.ok(&["apply", "-f", &fixture("broker-a.yaml")]).await;
    let err = k
        .fails(&["apply", "-f", &fixture("broker-a-platinum.yaml")])
        .await;
    assert!(
        err.contains(r#"The Broker "alpha" is invalid: spec: Invalid value: "object": series is immutable; create a new Broker to change the series"#),
        "{err}"
    );
    // server-side: first the field conflict with the client-side applier, then, forced, the rule
    let err = k
        .fails(&[
            "apply",
            "--server-side",
            "-f",
            &fixture("broker-a-platinum.yaml"),
        ])
        .await;
    assert!(
        err.contains("conflict") && err.contains(".spec.series"),
        "{err}"
    );
    let err = k
        .fails(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            &fixture("broker-a-platinum.yaml"),
        ])
        .await;
    assert!(err.contains("series is immutable"), "{err}");
    // schema validation: an enum violation names the field
    let bad = std::fs::read_to_string(fixture("broker-a.yaml"))
        .unwrap()
        .replace("name: alpha", "name: beta")
        .replace("professional", "gold");
    let out = k.run(&["apply", "-f", "-"], Some(&bad)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("spec.series") && stderr.contains("gold"),
        "{stderr}"
    );
    assert_eq!(
        k.ok(&["get", "brk", "alpha", "-o", "jsonpath={.spec.series}"])
            .await,
        "professional"
    );
}

#[tokio::test]
async fn explain_reads_the_openapi_documents() {
    let k = Kubectl::new().await.with_crd().await;
    let out = k.ok(&["explain", "brokers.spec"]).await;
    assert!(
        out.contains("series") && out.contains("professional, enterprise, platinum"),
        "{out}"
    );
    let out = k.ok(&["explain", "statefulset.spec.replicas"]).await;
    assert!(
        out.contains("KIND:       StatefulSet") && out.contains("replicas"),
        "{out}"
    );
}

#[tokio::test]
async fn unknown_fields_are_refused_by_default_and_warned_about_on_request() {
    let k = Kubectl::new().await.with_crd().await;
    let typo = std::fs::read_to_string(fixture("broker-a.yaml"))
        .unwrap()
        .replace("series: professional", "series: professional\n  bogus: 1");
    let out = k.run(&["apply", "-f", "-"], Some(&typo)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains(r#"strict decoding error: unknown field "spec.bogus""#),
        "{stderr}"
    );
    let sts = STS.replace("replicas: 2", "replica: 2");
    let out = k.run(&["apply", "-f", "-"], Some(&sts)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains(r#"unknown field "spec.replica""#),
        "{stderr}"
    );
    let out = k
        .run(&["apply", "--validate=warn", "-f", "-"], Some(&typo))
        .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.contains(r#"Warning: unknown field "spec.bogus""#),
        "{stderr}"
    );
    // the unknown field was pruned, as the real server does for custom resources
    assert!(
        k.json(&["get", "brk", "alpha"]).await["spec"]
            .get("bogus")
            .is_none()
    );
}

#[tokio::test]
async fn create_subcommands_that_send_protobuf_work_for_simple_kinds() {
    let k = Kubectl::new().await;
    k.ok(&["create", "namespace", "tenants"]).await;
    k.ok(&[
        "-n",
        "tenants",
        "create",
        "configmap",
        "conf",
        "--from-literal=a=1",
        "--from-literal=b=2",
    ])
    .await;
    k.ok(&[
        "-n",
        "tenants",
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=password=s3cret",
    ])
    .await;
    k.ok(&["-n", "tenants", "create", "serviceaccount", "robot"])
        .await;
    let cm = k.json(&["-n", "tenants", "get", "cm", "conf"]).await;
    assert_eq!(cm["data"], json!({"a": "1", "b": "2"}));
    let secret = k.json(&["-n", "tenants", "get", "secret", "creds"]).await;
    assert_eq!(
        secret["data"]["password"], "czNjcmV0",
        "base64 of the value"
    );
    assert_eq!(secret["type"], "Opaque");
    k.ok(&["-n", "tenants", "get", "sa", "robot"]).await;
    // kinds it cannot decode are refused with advice, not misread
    let err = k
        .fails(&["-n", "tenants", "create", "deployment", "d", "--image=x"])
        .await;
    assert!(err.contains("kubectl apply"), "{err}");
}

#[tokio::test]
async fn auth_can_i_says_yes_to_the_admin_in_system_masters() {
    let k = Kubectl::new().await;
    assert_eq!(
        k.ok(&["auth", "can-i", "create", "statefulsets"])
            .await
            .trim(),
        "yes"
    );
    let out = k
        .ok(&[
            "api-resources",
            "--verbs=create",
            "--api-group=authorization.k8s.io",
        ])
        .await;
    assert!(out.contains("selfsubjectaccessreviews"), "{out}");
}
