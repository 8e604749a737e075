//! `kubesim-testpod`: a small program for kubesim's own tests to run as a pod's container (map
//! an image to it, see `kubesim::sim::images`), in the spirit of Kubernetes' e2e test image
//! `agnhost`.
//!
//! - `serve --addr ADDR [--healthy-for SECS]`: prints who it is (pid, uid, gid, the ServiceAccount
//!   files it sees) and connects to the API server with kube-rs' default configuration (which
//!   falls back to the in-cluster one), asks who it is (SelfSubjectReview) and reads its own Pod;
//!   serves `/healthz` (200 for `--healthy-for` seconds, then 500), `/readyz` (200 once the API
//!   server answered) and `/whoami` (what it found, as JSON) on ADDR.
//! - `fail --code N --message TEXT`: prints TEXT on stderr and exits with code N.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use clap::{Parser, Subcommand};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::sync::RwLock;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Talk to the API server in-cluster and serve health endpoints.
    Serve {
        /// Where to serve /healthz, /readyz and /whoami.
        #[arg(long)]
        addr: std::net::SocketAddr,
        /// Seconds /healthz answers 200 before it answers 500 (default: always 200).
        #[arg(long)]
        healthy_for: Option<u64>,
    },
    /// Exit at once with a code, after a message on stderr.
    Fail {
        /// The exit code.
        #[arg(long)]
        code: i32,
        /// The last line printed.
        #[arg(long)]
        message: String,
    },
}

const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

async fn whoami() -> anyhow::Result<Value> {
    let client = Client::try_default().await?;
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await?;
    let user = review.status.and_then(|s| s.user_info).unwrap_or_default();
    let ns = std::fs::read_to_string(format!("{SA_DIR}/namespace"))?;
    let pod_name = std::env::var("POD_NAME").unwrap_or_default();
    let pod = Api::<Pod>::namespaced(client, &ns).get(&pod_name).await?;
    Ok(json!({
        "username": user.username,
        "extra": user.extra,
        "namespace": ns,
        "podUid": pod.metadata.uid,
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Fail { code, message } => {
            println!("kubesim-testpod: failing on purpose");
            eprintln!("{message}");
            std::process::exit(code);
        }
        Cmd::Serve { addr, healthy_for } => {
            // SAFETY: plain syscalls without arguments.
            let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
            let files: Vec<String> = std::fs::read_dir(SA_DIR)
                .map(|d| {
                    d.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| !n.starts_with(".."))
                        .collect()
                })
                .unwrap_or_default();
            println!(
                "kubesim-testpod: pid {} uid {uid} gid {gid} hostname {} api {}:{} serviceaccount files {files:?}",
                std::process::id(),
                std::env::var("HOSTNAME").unwrap_or_default(),
                std::env::var("KUBERNETES_SERVICE_HOST").unwrap_or_default(),
                std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_default(),
            );
            let found: Arc<RwLock<Option<Value>>> = Arc::default();
            {
                let found = found.clone();
                tokio::spawn(async move {
                    loop {
                        match whoami().await {
                            Ok(v) => {
                                println!("kubesim-testpod: whoami {v}");
                                *found.write().await = Some(v);
                                return;
                            }
                            Err(e) => {
                                println!("kubesim-testpod: the API server did not answer: {e}")
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                });
            }
            let start = Instant::now();
            let limit = healthy_for.map(Duration::from_secs);
            let app = axum::Router::new()
                .route(
                    "/healthz",
                    get(move || async move {
                        if limit.is_some_and(|l| start.elapsed() >= l) {
                            (http::StatusCode::INTERNAL_SERVER_ERROR, "unhealthy")
                        } else {
                            (http::StatusCode::OK, "ok")
                        }
                    }),
                )
                .route(
                    "/readyz",
                    get({
                        let found = found.clone();
                        move || async move {
                            if found.read().await.is_some() {
                                (http::StatusCode::OK, "ready")
                            } else {
                                (http::StatusCode::SERVICE_UNAVAILABLE, "not yet")
                            }
                        }
                    }),
                )
                .route(
                    "/whoami",
                    get(move || async move {
                        axum::Json(found.read().await.clone().unwrap_or(Value::Null))
                    }),
                );
            let listener = tokio::net::TcpListener::bind(addr).await?;
            println!("kubesim-testpod: serving on {addr}");
            axum::serve(listener, app).await?;
        }
    }
    Ok(())
}
