//! The operator installed the way users install it: `helm install` of `charts/tiermq` onto
//! kubesim, whose kubelet runs the chart's operator image as this build's `tiermq-operator`
//! binary in-cluster (its ServiceAccount token, `KUBERNETES_SERVICE_HOST`, probes). A
//! SharedCluster and an instance are applied with kubectl and the instance is converted shared →
//! dedicated and back with real brokers under AMQP load (0 lost); the operator does all of it
//! under the chart's RBAC, and kubesim's request log shows not one of its requests denied and
//! not one granted rule unused. `/metrics` is installed behind authentication
//! (`metrics.authentication=kubernetes`): a ServiceAccount bound to a `/metrics` reader role
//! scrapes it with its token, a request without one gets 401 (and the operator's TokenReview and
//! SubjectAccessReview rights are among the rules checked as used).

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tiermq_crd::{MigrationPhase, Tier};
use tiermq_testkit::tls::TestCa;
use tiermq_testkit::tools::{self, Tool};
use tiermq_tests::harness::{
    InstanceSpec, World, flip_tier, operator_binary, shared_cluster_yaml, workspace_root,
};

const OPERATOR_NS: &str = "tiermq-system";
const SA_USER: &str = "system:serviceaccount:tiermq-system:tiermq";
const NS: &str = "team-a";
const NAME: &str = "orders";

/// `helm` with a private HOME and the cluster's kubeconfig; panics with its output on failure.
async fn helm(helm: &PathBuf, world: &World, home: &std::path::Path, args: &[&str]) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(helm)
            .args(args)
            .env("HOME", home)
            .env("HELM_CACHE_HOME", home.join("helm-cache"))
            .env("HELM_CONFIG_HOME", home.join("helm-config"))
            .env("HELM_DATA_HOME", home.join("helm-data"))
            .env("KUBECONFIG", world.cluster.kubeconfig_path())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("helm finishes within 120 s")
    .expect("helm runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "helm {}: {text}", args.join(" "));
    text
}

/// The operator pod's log (for failure messages).
async fn operator_log(world: &World) -> String {
    world
        .kubectl
        .run(
            &[
                "logs",
                "-n",
                OPERATOR_NS,
                "-l",
                "app.kubernetes.io/instance=tiermq",
                "--tail=40",
            ],
            None,
        )
        .await
        .map(|o| o.stdout)
        .unwrap_or_default()
}

/// (API group, resource, verb) of every rule the chart's ClusterRole and Role grant, as installed.
async fn granted_rules(world: &World) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for args in [
        vec!["get", "clusterrole", "tiermq", "-o", "json"],
        vec![
            "get",
            "role",
            "-n",
            OPERATOR_NS,
            "tiermq-leader-election",
            "-o",
            "json",
        ],
    ] {
        let json = world.kubectl.ok(&args, None).await.unwrap();
        let role: serde_json::Value = serde_json::from_str(&json).unwrap();
        for rule in role["rules"].as_array().into_iter().flatten() {
            let list = |k: &str| -> Vec<String> {
                rule[k]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            };
            for g in list("apiGroups") {
                for r in list("resources") {
                    for v in list("verbs") {
                        out.push((g.clone(), r.clone(), v));
                    }
                }
            }
        }
    }
    out
}

/// `/metrics` of the in-cluster operator, behind authentication: 200 for a ServiceAccount token
/// allowed to `get /metrics`, 401 without a token.
async fn scrape_with_a_token(world: &World) {
    world
        .kubectl
        .apply(&format!(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: scraper\n  namespace: {OPERATOR_NS}\n\
             ---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: metrics-reader\n\
             rules:\n  - nonResourceURLs: [\"/metrics\"]\n    verbs: [\"get\"]\n\
             ---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: scraper-metrics\n\
             roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: metrics-reader\n\
             subjects:\n  - kind: ServiceAccount\n    name: scraper\n    namespace: {OPERATOR_NS}\n"
        ))
        .await
        .unwrap();
    let token = world
        .kubectl
        .ok(&["create", "token", "scraper", "-n", OPERATOR_NS], None)
        .await
        .unwrap();
    let ip = world
        .kubectl
        .ok(
            &[
                "get",
                "pods",
                "-n",
                OPERATOR_NS,
                "-l",
                "app.kubernetes.io/instance=tiermq",
                "-o",
                "jsonpath={.items[0].status.podIP}",
            ],
            None,
        )
        .await
        .unwrap();
    let url = format!("http://{}:8080/metrics", ip.trim());
    let client = reqwest::Client::new();
    let with = client
        .get(&url)
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(
        with.status().as_u16(),
        200,
        "{url} with the scraper's token"
    );
    let body = with.text().await.unwrap();
    assert!(body.contains("tiermq_"), "the operator's metrics: {body}");
    let without = client.get(&url).send().await.unwrap();
    assert_eq!(without.status().as_u16(), 401, "{url} without a token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn helm_installed_operator_converts_an_instance_under_the_charts_rbac() {
    let Some(helm_bin) = tools::require(
        Tool::Helm,
        "helm_installed_operator_converts_an_instance_under_the_charts_rbac",
    ) else {
        return;
    };
    let bin = operator_binary().unwrap();
    let mut world = World::start_with_images("helm-e2e", &[("tiermq-operator", bin.as_path())])
        .await
        .unwrap();
    let home = world.dir.join("helm-home");
    std::fs::create_dir_all(&home).unwrap();
    let chart = workspace_root().join("charts/tiermq");
    helm(
        &helm_bin,
        &world,
        &home,
        &[
            "install",
            "tiermq",
            &chart.display().to_string(),
            "-n",
            OPERATOR_NS,
            "--create-namespace",
            // Pods share the host's network on kubesim: listen on the pod's own address.
            "--set-string",
            "metrics.bindAddress=$(POD_IP)",
            // Host processes (kubesim's pods) reach brokers by ClusterIP, not cluster DNS.
            "--set",
            "operator.brokerAddressing=cluster-ip",
            "--set",
            "operator.drainPollSeconds=1",
            "--set",
            "operator.brokerStatsIntervalMs=500",
            "--set",
            "metrics.authentication=kubernetes",
            "--wait",
            "--timeout=60s",
        ],
    )
    .await;

    world.kubectl.apply(&shared_cluster_yaml(10)).await.unwrap();
    let spec = InstanceSpec {
        namespace: NS,
        name: NAME,
        tier: "Shared",
        drain_strategy: "Consume",
        grace_period_seconds: 2,
        connection_policy: None,
    };
    // The dedicated cluster serves TLS (a test CA's certificate in a cert-manager-shaped Secret),
    // so the conversion also moves the instance's credentials to AMQPS and back, under the
    // chart's RBAC and admission policy.
    let ca = TestCa::new("tiermq helm e2e CA").unwrap();
    world
        .kubectl
        .apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NS}\n"
        ))
        .await
        .unwrap();
    let dedicated = format!("{NAME}-dedicated");
    world
        .create_tls_secret(
            &ca,
            NS,
            "orders-tls",
            &dedicated,
            &format!("{NAME}.{NS}.svc"),
        )
        .await
        .unwrap();
    let instance = spec.yaml().replace(
        "  dedicated:\n",
        "  dedicated:\n    tls:\n      secretName: orders-tls\n",
    );
    assert!(instance.contains("orders-tls"), "{instance}");
    world.kubectl.apply(&instance).await.unwrap();
    if let Err(e) = world.wait_ready(NS, NAME, Duration::from_secs(180)).await {
        panic!("{e}\noperator pod log:\n{}", operator_log(&world).await);
    }
    // AMQP load through the instance's Service for both conversions.
    let target = world.instance_target(NS, NAME).await.unwrap();
    let load = tiermq_tests::load::Load::start(common::load_config(target))
        .await
        .unwrap();
    common::wait_for_flow(&load).await;
    flip_tier(&world.kubectl, NS, NAME, "Dedicated")
        .await
        .unwrap();
    let done = world
        .wait_status(
            NS,
            NAME,
            "converted to Dedicated",
            Duration::from_secs(240),
            |s| {
                s.tier == Some(Tier::Dedicated)
                    && s.migration_phase == Some(MigrationPhase::Stable)
                    && s.phase == Some(tiermq_crd::InstancePhase::Ready)
            },
        )
        .await;
    if let Err(e) = done {
        panic!("{e}\noperator pod log:\n{}", operator_log(&world).await);
    }
    let (uri, port, ca_key) = credentials(&world).await;
    assert!(
        uri.starts_with("amqps://") && uri.ends_with(&format!("@{NAME}.{NS}.svc:5671/{NS}.{NAME}")),
        "the credentials name AMQPS on a TLS dedicated cluster: {}",
        uri.split('@').next_back().unwrap_or_default()
    );
    // The plain port stays for clients that build from host and port (it is open on every tier).
    assert_eq!(port, "5672");
    assert_eq!(ca_key.as_deref(), Some(ca.ca_pem()));

    // And back: the dedicated cluster's objects are deleted under the same RBAC.
    flip_tier(&world.kubectl, NS, NAME, "Shared").await.unwrap();
    let done = world
        .wait_status(
            NS,
            NAME,
            "converted back to Shared",
            Duration::from_secs(240),
            |s| {
                s.tier == Some(Tier::Shared)
                    && s.migration_phase == Some(MigrationPhase::Stable)
                    && s.phase == Some(tiermq_crd::InstancePhase::Ready)
            },
        )
        .await;
    if let Err(e) = done {
        panic!("{e}\noperator pod log:\n{}", operator_log(&world).await);
    }

    let (uri, port, ca_key) = credentials(&world).await;
    assert!(
        uri.starts_with("amqp://"),
        "plain AMQP again on the plain shared cluster"
    );
    assert_eq!(port, "5672");
    assert_eq!(
        ca_key, None,
        "no CA while nothing serving the instance has TLS"
    );

    load.stop_publishing();
    let report = load.finish(Duration::from_secs(60)).await;
    println!("helm-e2e: load through both conversions: {report}");
    assert_eq!(report.lost, 0, "lost: {:?}", report.lost_sample);
    assert!(
        report.stats.confirmed >= 200,
        "the load ran through both conversions: {report}"
    );

    scrape_with_a_token(&world).await;

    // Everything above was done by the in-cluster operator under its ServiceAccount, and the
    // chart's RBAC allowed every request it made.
    let log = world.cluster.api().request_log().records_of(SA_USER);
    let denied: Vec<String> = log
        .iter()
        .filter(|r| r.code == 401 || r.code == 403)
        .map(|r| {
            format!(
                "{} {}/{} {} -> {}",
                r.verb, r.api_group, r.resource, r.uri, r.code
            )
        })
        .collect();
    assert!(denied.is_empty(), "denied by the chart's RBAC: {denied:#?}");
    let granted = granted_rules(&world).await;
    let unused: Vec<String> = granted
        .iter()
        .filter(|(group, resource, verb)| {
            let (resource, sub) = resource.split_once('/').unwrap_or((resource, ""));
            !log.iter().any(|r| {
                r.api_group == *group
                    && r.resource == resource
                    && r.subresource == sub
                    && (r.verb == *verb
                        // A server-side apply that creates its object is authorized as create.
                        || (verb == "create" && r.verb == "patch" && r.code == 201))
            })
        })
        .map(|(g, r, v)| format!("{v} {g}/{r}"))
        .collect();
    // Least privilege: every granted (group, resource, verb) was used in this run. The
    // `update */finalizers` grants are used by kubesim's OwnerReferencesPermissionEnforcement
    // check of each write that sets blockOwnerDeletion (logged as a request of its own).
    assert!(
        unused.is_empty(),
        "granted by the chart but never used by the operator: {unused:#?}"
    );
    for resource in ["statefulsets", "services", "secrets", "endpointslices"] {
        assert!(
            log.iter()
                .any(|r| r.resource == resource && r.is_write() && r.code < 300),
            "the operator wrote no {resource} under its ServiceAccount"
        );
    }
    assert!(
        log.iter().any(|r| r.resource == "rabbitmqinstances"
            && r.subresource == "status"
            && r.is_write()
            && r.code < 300),
        "the operator wrote no instance status under its ServiceAccount"
    );
    // The operator pod ran throughout: never restarted.
    let pods = world
        .kubectl
        .ok(
            &[
                "get",
                "pods",
                "-n",
                OPERATOR_NS,
                "-l",
                "app.kubernetes.io/instance=tiermq",
                "-o",
                "jsonpath={.items[*].status.containerStatuses[*].restartCount}",
            ],
            None,
        )
        .await
        .unwrap();
    assert_eq!(pods.trim(), "0", "operator restarts: {pods}");
    helm(
        &helm_bin,
        &world,
        &home,
        &["uninstall", "tiermq", "-n", OPERATOR_NS, "--wait"],
    )
    .await;
}

/// The instance credentials' `uri`, `port` and `ca.crt` (if any), as the tenant's apps read them.
async fn credentials(world: &World) -> (String, String, Option<String>) {
    let secret =
        kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(world.cluster.client(), NS)
            .get(&format!("{NAME}-credentials"))
            .await
            .unwrap();
    let data = secret.data.unwrap_or_default();
    let text = |k: &str| data.get(k).map(|v| String::from_utf8(v.0.clone()).unwrap());
    (
        text("uri").unwrap_or_default(),
        text("port").unwrap_or_default(),
        text("ca.crt"),
    )
}
