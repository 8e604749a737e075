//! `kubesim up`: runs a simulated Kubernetes cluster until Ctrl-C or SIGTERM, then stops every
//! process it started.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "kubesim",
    about = "A small Kubernetes-like cluster on loopback for tiermq tests and demos"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the API server and simulated controllers; stop everything on Ctrl-C/SIGTERM.
    Up {
        /// State folder: kubeconfig, pod folders, PVC data, broker logs.
        #[arg(long, default_value = ".tiermq/kubesim")]
        dir: PathBuf,
        /// At most this many RabbitMQ broker processes at once.
        #[arg(long, default_value_t = 3)]
        max_brokers: usize,
        /// Append the API server's request log (one JSON line per request) to this file.
        #[arg(long, env = "KUBESIM_REQUEST_LOG")]
        request_log: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn")),
        )
        .init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Up {
            dir,
            max_brokers,
            request_log,
        } => {
            let dir = std::path::absolute(&dir)?;
            let mut cfg = kubesim::cluster::ClusterConfig::new(&dir);
            cfg.max_brokers = max_brokers;
            cfg.request_log = request_log.map(std::path::absolute).transpose()?;
            let cluster = kubesim::cluster::start(cfg).await?;
            let kc = cluster.kubeconfig_path().display().to_string();
            println!("kubesim is up (API server {})", cluster.api().url());
            println!("kubeconfig: {kc} (admin: kubernetes-admin, in system:masters)");
            if let Some(log) = cluster.api().request_log().path() {
                println!("request log: {}", log.display());
            }
            println!("  export KUBECONFIG={kc}");
            println!("  kubectl get pods,svc,statefulsets -A");
            println!(
                "pod IPs 127.30.{s}.x, Service ClusterIPs 127.20.{s}.x (reachable from this host)",
                s = cluster.slot()
            );
            println!("Ctrl-C stops the cluster and every broker it started.");
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate())?;
            // A closed terminal must not leave brokers behind either.
            let mut hup = signal(SignalKind::hangup())?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
                _ = hup.recv() => {}
            }
            println!("stopping kubesim ...");
            cluster.shutdown().await;
            println!("kubesim stopped");
        }
    }
    Ok(())
}
