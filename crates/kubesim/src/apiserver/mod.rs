//! An in-process Kubernetes API server for tests and the demo, served over plain HTTP on
//! loopback. Real kubectl 1.32 and kube-rs 5 clients talk to it unmodified.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use kubesim::apiserver::{start, ApiServerConfig};
//! let server = start(ApiServerConfig::default()).await?;
//! let client = kube::Client::try_from(kube::Config::new(server.url().parse()?))?;
//! server.write_kubeconfig(std::path::Path::new("/tmp/kubeconfig"))?; // for kubectl --kubeconfig
//! server.faults().end_watches(); // every open watch ends; clients resume
//! server.shutdown().await;
//! # let _ = client; Ok(()) }
//! ```
//!
//! What it serves and its limits are described in `crates/kubesim/README-apiserver.md`
//! (also in the module docs of [`merge`] for patching and server-side apply).

pub mod crd;
pub mod discovery;
pub mod error;
pub mod events;
pub mod faults;
pub mod fields;
mod http;
pub mod merge;
pub mod openapi;
pub mod proto;
pub mod registry;
pub mod selector;
pub mod store;
pub mod table;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

pub use error::ApiError;
pub use faults::FaultInjector;

/// Where to listen and which addresses Services get.
#[derive(Debug, Clone)]
pub struct ApiServerConfig {
    /// Listen address; port 0 picks a free port. Default 127.0.0.1:0.
    pub bind: SocketAddr,
    /// ClusterIPs are allocated as `prefix.1` ..= `prefix.254`.
    pub service_ip_prefix: [u8; 3],
}

impl Default for ApiServerConfig {
    fn default() -> Self {
        ApiServerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            service_ip_prefix: [127, 20, 7],
        }
    }
}

/// A running server. Dropping it without [`ApiServerHandle::shutdown`] leaves the server task
/// running until the runtime ends.
pub struct ApiServerHandle {
    addr: SocketAddr,
    faults: FaultInjector,
    state: Arc<Mutex<store::State>>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl ApiServerHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`, usable as `kube::Config::new(url.parse()?)` and as the kubeconfig server.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig with cluster, user and context all named `kubesim` (no auth).
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kubesim\n  cluster:\n    server: {}\nusers:\n- name: kubesim\n  user: {{}}\ncontexts:\n- name: kubesim\n  context:\n    cluster: kubesim\n    user: kubesim\n    namespace: default\ncurrent-context: kubesim\npreferences: {{}}\n",
            self.url()
        )
    }

    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml())
    }

    /// Fault injection for tests (failing writes, delays, ending watches).
    pub fn faults(&self) -> FaultInjector {
        self.faults.clone()
    }

    /// The current global resourceVersion (how many writes happened).
    pub fn resource_version(&self) -> u64 {
        self.state.lock().expect("state lock").resource_version()
    }

    /// Drops the watch-event history, like etcd compaction: a watch that resumes from an
    /// older resourceVersion gets 410 Gone and must re-list.
    pub fn compact_watch_history(&self) {
        self.state.lock().expect("state lock").compact_history();
    }

    /// Stops accepting connections, ends open watches and waits for the server task.
    pub async fn shutdown(self) {
        self.faults.end_watches();
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Starts the server on `cfg.bind` and returns once it accepts connections.
pub async fn start(cfg: ApiServerConfig) -> anyhow::Result<ApiServerHandle> {
    let listener = tokio::net::TcpListener::bind(cfg.bind)
        .await
        .map_err(|e| anyhow::anyhow!("kubesim API server cannot listen on {}: {e}", cfg.bind))?;
    let addr = listener.local_addr()?;
    let state = Arc::new(Mutex::new(store::State::new(cfg.service_ip_prefix)));
    let faults = FaultInjector::new();
    let app = http::App {
        state: state.clone(),
        faults: faults.clone(),
        addr: addr.to_string(),
    };
    let router = axum::Router::new().fallback(http::handle).with_state(app);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
            let _ = stopped.await;
        });
        if let Err(e) = serve.await {
            tracing::error!("kubesim API server stopped with an error: {e}");
        }
    });
    tracing::info!(%addr, "kubesim API server listening");
    Ok(ApiServerHandle {
        addr,
        faults,
        state,
        stop,
        task,
    })
}
