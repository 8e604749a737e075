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
        /// Run containers whose image's repository name is REPOSITORY as the local binary PATH
        /// (repeatable), e.g. `tiermq-operator=target/debug/tiermq-operator`: such pods get their
        /// ServiceAccount token, the CA and KUBERNETES_SERVICE_HOST/PORT, so in-cluster clients
        /// work unmodified. Needs root (a private mount namespace per container).
        #[arg(long = "image-binary", value_name = "REPOSITORY=PATH", value_parser = kubesim::sim::images::ImageBinaries::parse_entry)]
        image_binaries: Vec<(String, PathBuf)>,
        /// Give a pod that is deleted and created again a new IP, as a real cluster's CNI does
        /// (default: a pod name keeps its IP). Brokers keep their node name and data.
        #[arg(long)]
        fresh_pod_ips: bool,
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
            image_binaries,
            fresh_pod_ips,
        } => {
            let dir = std::path::absolute(&dir)?;
            let mut cfg = kubesim::cluster::ClusterConfig::new(&dir);
            cfg.max_brokers = max_brokers;
            cfg.fresh_pod_ips = fresh_pod_ips;
            for (repository, binary) in image_binaries {
                let binary = std::path::absolute(&binary)?;
                anyhow::ensure!(
                    binary.is_file(),
                    "--image-binary {repository}={}: no such file",
                    binary.display()
                );
                println!("images named {repository} run as {}", binary.display());
                cfg.image_binaries.insert(repository, binary);
            }
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
