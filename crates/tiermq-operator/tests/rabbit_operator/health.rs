//! `/healthz` against kubesim (no broker): healthy while the controllers run, even idle for
//! longer than the stall threshold; unhealthy once the API server is gone and the watches keep
//! failing for that long. The probes listen apart from `/metrics` (`--probe-addr`).

use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use tiermq_operator::config::RunArgs;

fn free_addr() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

async fn get(url: &str) -> Option<(u16, String)> {
    let r = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    let code = r.status().as_u16();
    Some((code, r.text().await.unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn healthz_fails_once_the_watches_stay_dead_for_the_threshold() {
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
    let mut args = RunArgs::local("tiermq-system");
    args.metrics_addr = free_addr();
    let probe = free_addr();
    args.probe_addr = Some(probe);
    args.health_stall_seconds = 2;
    let metrics = args.metrics_addr;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let op = tokio::spawn(tiermq_operator::operator::run_with_client(
        client,
        args,
        async move {
            let _ = rx.await;
        },
    ));
    let result = tokio::time::timeout(Duration::from_secs(60), async {
        let healthz = format!("http://{probe}/healthz");
        let start = Instant::now();
        while get(&format!("http://{probe}/readyz")).await.map(|r| r.0) != Some(200) {
            assert!(start.elapsed() < Duration::from_secs(20), "ready in time");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The probes and the metrics answer on their own addresses only.
        assert_eq!(
            get(&format!("http://{metrics}/metrics")).await.unwrap().0,
            200
        );
        assert_eq!(
            get(&format!("http://{metrics}/healthz")).await.unwrap().0,
            404
        );
        assert_eq!(
            get(&format!("http://{probe}/metrics")).await.unwrap().0,
            404
        );
        // Idle for twice the threshold: still healthy (no work is not a stall).
        let idle = Instant::now();
        while idle.elapsed() < Duration::from_secs(4) {
            let (code, body) = get(&healthz).await.unwrap();
            assert_eq!(code, 200, "{body}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // The API server goes away: the watches fail, and keep failing.
        cluster.shutdown().await;
        let gone = Instant::now();
        let body = loop {
            let (code, body) = get(&healthz).await.unwrap();
            if code == 503 {
                break body;
            }
            assert_eq!(code, 200, "{body}");
            assert!(
                gone.elapsed() < Duration::from_secs(30),
                "unhealthy in time"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        println!(
            "unhealthy {:?} after the API server stopped: {body}",
            gone.elapsed()
        );
        assert!(body.contains("watches failing"), "{body}");
        // Readiness keeps its meaning: the replica still runs its controllers.
        assert_eq!(get(&format!("http://{probe}/readyz")).await.unwrap().0, 200);
    })
    .await;
    let _ = tx.send(());
    if tokio::time::timeout(Duration::from_secs(15), op)
        .await
        .is_err()
    {
        println!("operator did not stop within 15 s of the signal (its API server is gone)");
    }
    result.expect("test took too long");
}
