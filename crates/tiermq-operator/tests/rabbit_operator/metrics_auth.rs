//! `/metrics` behind authentication (`--metrics-auth kubernetes`) against kubesim's TokenReview
//! and SubjectAccessReview (no broker): a ServiceAccount allowed to `get /metrics` reads it, one
//! without that right gets 403, no token or a forged one 401; the probes need no token.

use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use serde_json::json;
use tiermq_operator::config::{MetricsAuth, RunArgs};

const NS: &str = "default";

fn free_addr() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

async fn token_of(client: &kube::Client, sa: &str) -> String {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), NS);
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": sa}})).unwrap(),
    )
    .await
    .unwrap();
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: Vec::new(),
            expiration_seconds: Some(600),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    sas.create_token_request(sa, &PostParams::default(), &req)
        .await
        .unwrap()
        .status
        .unwrap()
        .token
}

async fn get(url: &str, token: Option<&str>) -> (u16, String) {
    let mut req = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(5));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_callers_allowed_to_get_metrics_read_it() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = kubesim::cluster::start(kubesim::cluster::ClusterConfig::new(dir.path()))
        .await
        .unwrap();
    let client = cluster.client();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (_, yaml) in tiermq_crd::crd_files() {
        let crd: CustomResourceDefinition = serde_yaml::from_str(&yaml).unwrap();
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    let scraper = token_of(&client, "scraper").await;
    let stranger = token_of(&client, "stranger").await;
    let pp = PostParams::default();
    Api::<ClusterRole>::all(client.clone())
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": "metrics-reader"},
                "rules": [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]}))
            .unwrap(),
        )
        .await
        .unwrap();
    Api::<ClusterRoleBinding>::all(client.clone())
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": "scraper-metrics"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": "metrics-reader"},
                "subjects": [{"kind": "ServiceAccount", "name": "scraper", "namespace": NS}]}))
            .unwrap(),
        )
        .await
        .unwrap();

    let mut args = RunArgs::local("tiermq-system");
    args.metrics_addr = free_addr();
    let probe = free_addr();
    args.probe_addr = Some(probe);
    args.metrics_auth = MetricsAuth::Kubernetes;
    let metrics = format!("http://{}/metrics", args.metrics_addr);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let op = tokio::spawn(tiermq_operator::operator::run_with_client(
        client,
        args,
        async move {
            let _ = rx.await;
        },
    ));
    let result = tokio::time::timeout(Duration::from_secs(60), async {
        let start = std::time::Instant::now();
        while reqwest::get(format!("http://{probe}/readyz"))
            .await
            .is_err()
        {
            assert!(start.elapsed() < Duration::from_secs(20), "serving in time");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (code, body) = get(&metrics, Some(&scraper)).await;
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("# EOF"), "OpenMetrics text: {body}");
        let (code, body) = get(&metrics, Some(&stranger)).await;
        assert_eq!(code, 403, "{body}");
        assert!(
            body.contains("system:serviceaccount:default:stranger"),
            "{body}"
        );
        assert_eq!(get(&metrics, None).await.0, 401);
        // One character of the signed part changed: the signature no longer matches.
        let mut forged = scraper.clone().into_bytes();
        let mid = forged.len() / 2;
        forged[mid] = if forged[mid] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        assert_eq!(get(&metrics, Some(&forged)).await.0, 401);
        // Decisions are cached per token: asked again, the same answers.
        assert_eq!(get(&metrics, Some(&scraper)).await.0, 200);
        assert_eq!(get(&metrics, Some(&stranger)).await.0, 403);
        // The kubelet's probes carry no token.
        assert_eq!(get(&format!("http://{probe}/healthz"), None).await.0, 200);
    })
    .await;
    let _ = tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(15), op).await;
    cluster.shutdown().await;
    result.expect("test took too long");
}
