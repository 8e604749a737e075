//! An in-process Kubernetes API server for tests and the demo, served over plain HTTP on
//! loopback. Real kubectl (1.32 and 1.37 are tested), Helm 4 and kube-rs 5 clients talk to it
//! unmodified.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use kubesim::apiserver::{start, ApiServerConfig};
//! let server = start(ApiServerConfig::default()).await?;
//! let client = kube::Client::try_from(kube::Config::new(server.url().parse()?))?;
//! server.write_kubeconfig(std::path::Path::new("/tmp/kubeconfig"))?; // kubectl --kubeconfig
//! server.faults().fail_writes("apps", "statefulsets", Some("web"), 2, 500);
//! server.faults().end_watches(); // every open watch ends; clients resume
//! server.shutdown().await;
//! # let _ = client; Ok(()) }
//! ```
//!
//! # What is served
//!
//! - `/version`, `/healthz`, `/readyz`, `/livez`; discovery `/api`, `/apis`, `/apis/{g}`,
//!   `/api/v1`, `/apis/{g}/{v}` with verbs, short names, categories (`all`) and the `status` /
//!   `scale` subresources; aggregated discovery v2 (`APIGroupDiscoveryList`) when the Accept
//!   header asks for it, as kubectl and kube-rs' `Discovery::run_aggregated` do.
//! - OpenAPI v3: `/openapi/v3` and one document per group-version (built-in schemas from
//!   k8s-openapi via schemars, CRD `openAPIV3Schema`s), enough for `kubectl apply` validation
//!   and `kubectl explain`. `/openapi/v2` is 404; kubectl does not need it once v3 is there.
//! - Built-in kinds: Namespace, Pod, Service, Endpoints, ConfigMap, Secret, ServiceAccount,
//!   Event (core; events.k8s.io/v1 is a converted view of the same objects),
//!   PersistentVolumeClaim, StatefulSet, Deployment and ReplicaSet (with `scale`), EndpointSlice,
//!   PodDisruptionBudget, Lease, Role/RoleBinding/ClusterRole/ClusterRoleBinding,
//!   CustomResourceDefinition. Namespaces `default`, `kube-system`, `kube-public`,
//!   `kube-node-lease` exist from the start (the first three cannot be deleted).
//! - CRDs are served as soon as they are created (Established/NamesAccepted conditions set):
//!   structural pruning, schema defaults, OpenAPI validation (jsonschema crate),
//!   `x-kubernetes-validations` CEL rules incl. transition rules with `oldSelf` (cel crate;
//!   `message`, `messageExpression`, `fieldPath`), printer columns, short names, categories,
//!   status and scale subresources.
//! - Verbs: create (generateName, uid, creationTimestamp, one global resourceVersion counter),
//!   get, list (label selectors incl. set-based, field selectors on any dotted path), watch
//!   (resume from a resourceVersion, bookmarks, `sendInitialEvents`, 410 Gone from a compacted
//!   history of [`store::HISTORY_LEN`] events, objects entering/leaving a filtered watch show as
//!   ADDED/DELETED), update (409 on a stale resourceVersion), patch (JSON merge, JSON patch,
//!   strategic merge and server-side apply — see [`merge`]), delete (Background, Foreground,
//!   Orphan; finalizers and deletionTimestamp; owner-reference garbage collection, cascading;
//!   a deleted namespace stays `Terminating` and is emptied [`store::CONTENT_DELAY`] later, as the
//!   namespace controller does), deletecollection, `dryRun=All`.
//! - Pods with `spec.nodeName` terminate gracefully: DELETE marks them (deletionTimestamp,
//!   deletionGracePeriodSeconds from the request, `terminationGracePeriodSeconds` or 30) and
//!   they stay until a delete with grace period 0 (the kubelet's confirmation); unscheduled
//!   pods go at once.
//! - `metadata.generation` moves on changes outside metadata and status only; the main resource
//!   ignores status when a status subresource exists, `/status` ignores everything but status.
//! - Services get a ClusterIP from `service_ip_prefix` (`clusterIP: None` stays headless; a
//!   given IP in the range is reserved; the IP is immutable and freed on delete).
//! - Built-in validation of what operators most often get wrong (see [`validate`]): names per
//!   kind, label keys/values, workload selectors that must match template labels, containers,
//!   Service ports, data keys, EndpointSlice addresses; Secret `stringData` is merged into `data`.
//! - `fieldValidation=Strict|Warn|Ignore` on writes (unknown fields refused / `Warning`
//!   headers / nothing; Warn is the default when the parameter is absent, Strict is kubectl's).
//! - Table output (`Accept: ...;as=Table;g=meta.k8s.io;v=v1`) for get, list and watch: CRD
//!   printer columns, and NAME/AGE plus a few columns per built-in kind; metadata-only answers
//!   (`as=PartialObjectMetadata[List]`) for kube-rs `Api<PartialObjectMeta<K>>`.
//! - Protobuf request bodies only for what `kubectl create namespace|configmap|secret|
//!   serviceaccount` sends (see [`proto`]); other protobuf bodies get 415 (use `kubectl apply`).
//!   Responses are always JSON.
//! - Errors are `Status` objects with reason, code and details (causes with field paths), so
//!   kubectl prints e.g. `The Broker "x" is invalid: spec: Invalid value: "object": ...`.
//!
//! # Not served / limits
//!
//! - Plain HTTP only, no TLS.
//! - No authentication or authorization: every request is allowed and a
//!   SelfSubjectAccessReview says so; RBAC objects are stored, not evaluated.
//! - No admission webhooks and no conversion webhooks: several CRD versions are served from one
//!   stored object whose apiVersion is rewritten.
//! - No pagination: `limit` and `continue` are ignored, lists are complete.
//! - No pod logs, exec or port-forward.
//! - No built-in defaulting or validation beyond a few fields per kind.
//! - Watch timeouts default to 30 minutes.
//! - Strategic merge patch and server-side apply pick the merge keys of built-in kinds' lists by
//!   field name (see [`merge`]), not from each type's declared patch strategy.

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
pub mod validate;

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
    /// The address the server listens on.
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

    /// Writes [`ApiServerHandle::kubeconfig_yaml`] to `path`.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml())
    }

    /// Fault injection for tests (failing writes, delays, ending watches).
    pub fn faults(&self) -> FaultInjector {
        self.faults.clone()
    }

    /// The current global resourceVersion (how many writes happened).
    pub fn resource_version(&self) -> u64 {
        store::lock(&self.state).resource_version()
    }

    /// Drops the watch-event history, like etcd compaction: a watch that resumes from an
    /// older resourceVersion gets 410 Gone and must re-list.
    pub fn compact_watch_history(&self) {
        store::lock(&self.state).compact_history();
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
    store::spawn_namespace_controller(Arc::downgrade(&state));
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
