//! An in-process Kubernetes API server for tests and the demo, served over HTTPS on loopback,
//! with authentication, RBAC and a request log. Real kubectl (1.32 and 1.37 are tested), Helm 4
//! and kube-rs 5 clients talk to it unmodified through the kubeconfig it writes.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use std::time::Duration;
//! use kubesim::apiserver::{start, ApiServerConfig, ClientFaultMode, ClientSelector};
//! let server = start(ApiServerConfig::default()).await?;
//! let admin = server.admin_client()?; // kubernetes-admin, in system:masters
//! server.write_kubeconfig(std::path::Path::new("/tmp/kubeconfig"))?; // kubectl --kubeconfig
//! // a ServiceAccount's identity (it must exist; RBAC decides what it may do)
//! let token = server.issue_token("tiermq", "operator", Duration::from_secs(3600))?;
//! let operator = kube::Client::try_from(server.token_config(&token.token))?;
//! // or a user of your choosing, by client certificate, e.g. for a second operator process
//! let kubeconfig_b = server.kubeconfig_for_user("operator-b", &["system:masters".into()])?;
//! server.faults().fail_writes("apps", "statefulsets", Some("web"), 2, 500);
//! server.faults().end_watches(); // every open watch ends; clients resume
//! // cut one client off for 20 s; everyone else keeps working
//! let cut = server.client_faults().start(
//!     ClientSelector::user("system:serviceaccount:tiermq:operator"),
//!     ClientFaultMode::Refuse,
//!     Some(Duration::from_secs(20)),
//! );
//! let log = server.request_log().records_of("system:serviceaccount:tiermq:operator");
//! server.shutdown().await;
//! # let _ = (admin, operator, kubeconfig_b, cut, log); Ok(()) }
//! ```
//!
//! # Security, as on a real API server
//!
//! - HTTPS only, with a CA generated at start ([`tls`]); the kubeconfig carries the CA
//!   (`certificate-authority-data`) and the admin's client certificate.
//! - Authentication ([`authn`]): X.509 client certificates (the admin `kubernetes-admin` in
//!   `system:masters`; [`ApiServerHandle::kubeconfig_for_user`] makes more), ServiceAccount
//!   tokens (TokenRequest `serviceaccounts/{name}/token`, `kubectl create token`,
//!   [`ApiServerHandle::issue_token`]), anonymous requests; 401 for a bad or expired token.
//!   Impersonation headers (`kubectl --as`, `--as-group`) need the `impersonate` verb.
//! - Authorization ([`rbac`]): RBAC over the stored Roles, ClusterRoles and bindings, 403 bodies
//!   worded like the real server's; `kubectl auth can-i` (SelfSubjectAccessReview, also
//!   `--list`), SubjectAccessReview and `kubectl auth whoami` (SelfSubjectReview) answer from it.
//! - Request log ([`audit`]): one JSON line per request (user, RBAC verb, group, resource,
//!   subresource, namespace, name, code) in memory ([`ApiServerHandle::request_log`]) and in
//!   the file [`ApiServerConfig::request_log`] names.
//! - Per-client faults ([`client_faults`]): refuse, hang or fail with a status code the
//!   requests (and open watches) of one user or one token for a time window;
//!   [`ApiServerHandle::client_faults`] in-process, `/kubesim/v1/client-faults` over HTTP.
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
//!   PodDisruptionBudget, NetworkPolicy (stored and served, not enforced: kubesim has no CNI),
//!   Lease, Role/RoleBinding/ClusterRole/ClusterRoleBinding,
//!   CustomResourceDefinition; the create-only reviews SelfSubjectAccessReview,
//!   SelfSubjectRulesReview, SubjectAccessReview, SelfSubjectReview and TokenReview, and the TokenRequest
//!   subresource `serviceaccounts/{name}/token`. Namespaces `default`, `kube-system`, `kube-public`,
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
//! - Services get a ClusterIP from `service_ip_prefix` and the nine /24s after it in the second
//!   octet, 2,540 addresses (`clusterIP: None` stays headless; a given IP in the range is
//!   reserved; the IP is immutable and freed on delete).
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
//! - HTTP/1.1 only (ALPN offers no h2), so one client connection carries one request at a time.
//! - No legacy ServiceAccount token Secrets, no LocalSubjectAccessReview, no
//!   OIDC or webhook authentication; tokens are HS256 JWTs only this server can verify.
//! - The default user-facing roles `admin`, `edit` and `view` are not created (see [`rbac`]).
//! - No admission webhooks and no conversion webhooks: several CRD versions are served from one
//!   stored object whose apiVersion is rewritten.
//! - No pagination: `limit` and `continue` are ignored, lists are complete.
//! - Pod logs (`kubectl logs`, also `--previous`, `--tail`) are read from the files the kubelet
//!   writes ([`ApiServerConfig::pod_logs`]); `--follow` prints what is there and ends. No exec,
//!   attach or port-forward.
//! - No built-in defaulting or validation beyond a few fields per kind.
//! - Watch timeouts default to 30 minutes.
//! - Strategic merge patch and server-side apply pick the merge keys of built-in kinds' lists by
//!   field name (see [`merge`]), not from each type's declared patch strategy.

pub mod audit;
pub mod authn;
pub mod authproto;
pub mod client_faults;
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
pub mod rbac;
pub mod registry;
pub mod selector;
pub mod store;
pub mod table;
pub mod tls;
pub mod validate;

mod identities;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use audit::{RequestLog, RequestRecord};
pub use authn::{IssuedToken, UserInfo};
pub use client_faults::{ClientFaultMode, ClientFaults, ClientSelector};
pub use error::ApiError;
pub use faults::FaultInjector;
pub use http::pod_log::log_file as container_log_file;

/// Where to listen, which addresses Services get, where the request log goes.
#[derive(Debug, Clone)]
pub struct ApiServerConfig {
    /// Listen address; port 0 picks a free port. Default 127.0.0.1:0.
    pub bind: SocketAddr,
    /// ClusterIPs are allocated from `prefix.1` ..= `prefix.254`, then the same in the next nine
    /// second octets (2,540 addresses).
    pub service_ip_prefix: [u8; 3],
    /// Append the request log to this file (JSON lines, see [`audit`]); it is always kept in
    /// memory too.
    pub request_log: Option<PathBuf>,
    /// The folder under which the kubelet writes container logs
    /// (`<ns>/<pod>-<uid>/logs/<container>/<restartCount>.log`), served as `pods/{name}/log`
    /// (`kubectl logs`); `None`: no logs are served.
    pub pod_logs: Option<PathBuf>,
}

impl Default for ApiServerConfig {
    fn default() -> Self {
        ApiServerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            service_ip_prefix: [127, 20, 7],
            request_log: None,
            pod_logs: None,
        }
    }
}

/// A running server. Dropping it without [`ApiServerHandle::shutdown`] stops it too, without
/// waiting.
pub struct ApiServerHandle {
    addr: SocketAddr,
    faults: FaultInjector,
    state: Arc<Mutex<store::State>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    pki: Arc<tls::Pki>,
    /// The admin's client certificate (`kubernetes-admin` in `system:masters`).
    admin: tls::ClientCert,
    app: http::App,
}

impl ApiServerHandle {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://<addr>`, the kubeconfig's server (clients must trust [`Self::ca_pem`]).
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The admin kubeconfig: cluster, user and context all named `kubesim`, the CA and the
    /// client certificate of `kubernetes-admin` (in `system:masters`).
    pub fn kubeconfig_yaml(&self) -> String {
        self.kubeconfig_with_user(identities::cert_user(&self.admin))
    }

    /// Writes [`ApiServerHandle::kubeconfig_yaml`] to `path`, readable by its owner only (it
    /// holds the admin's private key).
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        identities::write_private(path, &self.kubeconfig_yaml())
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
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Starts the server on `cfg.bind` and returns once it accepts connections.
pub async fn start(cfg: ApiServerConfig) -> anyhow::Result<ApiServerHandle> {
    let listener = tokio::net::TcpListener::bind(cfg.bind)
        .await
        .map_err(|e| anyhow::anyhow!("kubesim API server cannot listen on {}: {e}", cfg.bind))?;
    let addr = listener.local_addr()?;
    let mut ips = vec![addr.ip()];
    if addr.ip() != std::net::IpAddr::from([127, 0, 0, 1]) {
        ips.push([127, 0, 0, 1].into());
    }
    let pki = tls::Pki::generate(&ips)?;
    let tls_config = pki.server_config()?;
    let requests = Arc::new(
        RequestLog::new(cfg.request_log.as_deref())
            .map_err(|e| anyhow::anyhow!("kubesim request log {:?}: {e}", cfg.request_log))?,
    );
    let mut st = store::State::new(cfg.service_ip_prefix);
    for rt in http::review_types() {
        st.registry.insert(rt);
    }
    rbac::bootstrap(&mut st);
    let state = Arc::new(Mutex::new(st));
    store::spawn_namespace_controller(Arc::downgrade(&state));
    let faults = FaultInjector::new();
    let app = http::App {
        state: state.clone(),
        faults: faults.clone(),
        addr: addr.to_string(),
        auth: Arc::new(authn::Authenticator::new()),
        requests,
        client_faults: ClientFaults::new(),
        pod_logs: cfg.pod_logs.clone(),
    };
    let router = axum::Router::new()
        .fallback(http::handle)
        .with_state(app.clone());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(tls::serve(listener, tls_config, router, stopped));
    tracing::info!(%addr, "kubesim API server listening (HTTPS)");
    let admin =
        app.auth
            .register_user_cert(&pki, authn::ADMIN_USER, &[authn::MASTERS.to_string()])?;
    Ok(ApiServerHandle {
        addr,
        faults,
        state,
        stop,
        task,
        pki: Arc::new(pki),
        admin,
        app,
    })
}
