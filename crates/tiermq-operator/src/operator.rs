//! `tiermq-operator run`: the process around the controllers.
//!
//! - serves `/metrics` on `--metrics-addr`, `/healthz` and `/readyz` on `--probe-addr` (or on
//!   `--metrics-addr` too when that is unset); `/healthz` fails while the controllers are wedged
//!   (see [`crate::health`]);
//! - with `--leader-election` (default) takes part in the election on the Lease
//!   `--lease-name` in `--namespace` ([`crate::leader`]) and runs the controllers only while it
//!   leads; losing the lease (no renewal within the renew deadline) cancels in-flight reconciles
//!   and exits, so a restarted process stands by again; without it, runs them at once;
//! - stops gracefully on SIGTERM or Ctrl-C: in-flight reconciles finish, then the process exits.
//!
//! # Running it against the test cluster (kubesim)
//!
//! The operator runs as a host process; brokers are reached by their Services' ClusterIPs, which
//! kubesim's kube-proxy forwards (`--broker-addressing cluster-ip`):
//!
//! ```text
//! cargo build -p kubesim -p tiermq-operator --bins
//! ./target/debug/kubesim up --dir /tmp/ksim &            # writes /tmp/ksim/kubeconfig
//! export KUBECONFIG=/tmp/ksim/kubeconfig
//! ./target/debug/tiermq-operator crd | kubectl apply -f -
//! kubectl create namespace tiermq-system                 # the leader-election Lease lives here
//! ./target/debug/tiermq-operator run --broker-addressing cluster-ip --log-format pretty \
//!     --metrics-addr 127.0.0.1:18080 --broker-stats-interval-ms 1000
//! ```
//!
//! (`--leader-election false` skips the Lease.) Then apply a SharedCluster with `replicas: 1`
//! (kubesim runs at most 3 brokers) and an instance referring to it, and flip `spec.tier`;
//! `kubectl get rmqi -w` shows the phases, `kubectl describe rmqi <name>` the Events.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use tokio::sync::watch;

use crate::config::{MetricsAuth, RunArgs};
use crate::controller::run_controllers;
use crate::health::Health;
use crate::http::{self, HttpState};
use crate::leader::{Leadership, Timings};
use crate::metrics::Metrics;
use crate::metrics_auth::MetricsAuthenticator;

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C: shutting down"),
        _ = term => tracing::info!("SIGTERM: shutting down"),
    }
}

/// Runs the operator with a client from the environment (kubeconfig or in-cluster).
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("connect to the Kubernetes API (KUBECONFIG or in-cluster config)")?;
    run_with_client(client, args, shutdown_signal()).await
}

/// Runs the operator against `client` until `shutdown` resolves. Tests run it in-process.
pub async fn run_with_client(
    client: kube::Client,
    mut args: RunArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics = Metrics::default();
    args.broker_observer = Some(metrics.broker_observer());
    let ready = Arc::new(AtomicBool::new(false));
    let health = Health::new(std::time::Duration::from_secs(args.health_stall_seconds));
    let state = HttpState {
        metrics: metrics.clone(),
        ready: ready.clone(),
        health: health.clone(),
        metrics_auth: (args.metrics_auth == MetricsAuth::Kubernetes)
            .then(|| Arc::new(MetricsAuthenticator::new(client.clone()))),
    };
    let mut servers = Vec::new();
    let routes = match args.probe_addr {
        None => vec![(
            args.metrics_addr,
            http::router(state),
            "/metrics, /healthz, /readyz",
        )],
        Some(probe) => vec![
            (
                args.metrics_addr,
                http::metrics_router(state.clone()),
                "/metrics",
            ),
            (probe, http::probe_router(state), "/healthz, /readyz"),
        ],
    };
    for (at, router, what) in routes {
        let listener = tokio::net::TcpListener::bind(at)
            .await
            .with_context(|| format!("bind {at} for {what}"))?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "serving {what}");
        servers.push(tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "HTTP server for {what} stopped");
            }
        }));
    }
    let server = Servers(servers);

    // One shutdown signal, observable by every task.
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };

    if !args.leader_election {
        tracing::info!("leader election disabled: reconciling at once");
        ready.store(true, Ordering::Relaxed);
        metrics.leader.set(1);
        run_controllers(
            client,
            args,
            metrics.clone(),
            health.clone(),
            None,
            shared_future(stopped(stop_rx)),
        )
        .await;
        metrics.leader.set(0);
        server.abort();
        return Ok(());
    }

    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("tiermq-operator-{}", std::process::id()));
    let leadership = Leadership::new(
        client.clone(),
        &args.namespace,
        &args.lease_name,
        &identity,
        Timings::default(),
    );
    let mut leading = leadership.subscribe();
    let elector = tokio::spawn(leadership.clone().run(stop_rx.clone()));
    ready.store(true, Ordering::Relaxed);
    tracing::info!(%identity, lease = %args.lease_name, "standing by for leadership");
    {
        let mut stop = stop_rx.clone();
        tokio::select! {
            _ = leading.wait_for(|l| *l) => {}
            _ = stop.wait_for(|v| *v) => {
                server.abort();
                return Ok(());
            }
        }
    }
    tracing::info!(%identity, "leading: starting controllers");
    metrics.leader.set(1);
    let controllers = run_controllers(
        client.clone(),
        args.clone(),
        metrics.clone(),
        health.clone(),
        Some(leadership.clone()),
        shared_future(stopped(stop_rx.clone())),
    );
    // Losing leadership drops the controllers at once: reconciles in flight are cancelled, not
    // finished (a replica that may no longer lead must not take one more step). The process
    // then exits, and its restart stands by for the Lease like any other replica.
    let lost = tokio::select! {
        _ = controllers => false,
        _ = leading.wait_for(|l| !*l) => true,
    };
    metrics.leader.set(0);
    server.abort();
    if lost {
        anyhow::bail!(
            "lost leadership: stopped reconciling and exiting, to stand by again after a restart"
        );
    }
    leadership.release().await;
    elector.abort();
    Ok(())
}

/// The HTTP servers' tasks.
struct Servers(Vec<tokio::task::JoinHandle<()>>);

impl Servers {
    fn abort(&self) {
        for s in &self.0 {
            s.abort();
        }
    }
}

/// A future that many controllers can await (kube-runtime wants `Clone + Sync`).
fn shared_future(
    f: impl Future<Output = ()> + Send + 'static,
) -> impl Future<Output = ()> + Send + Sync + Clone + 'static {
    use futures::FutureExt;
    let boxed: futures::future::BoxFuture<'static, ()> = f.boxed();
    boxed.shared()
}
