//! A whole simulated cluster in one call: API server + StatefulSet, Deployment, ReplicaSet,
//! EndpointSlice, kubelet and kube-proxy controllers, isolated from other clusters running at the
//! same time on the machine.
//!
//! Addresses of cluster slot `s` (1..=250), all in 127.0.0.0/8:
//!
//! | what | address |
//! |---|---|
//! | API server | `https://127.19.s.1:6443` |
//! | Service ClusterIPs | `127.20.s.1..254` (allocated by the API server) |
//! | pod IPs | `127.30.s.1..254` (allocated by the kubelet; per pod name, or per pod object with [`ClusterConfig::with_fresh_pod_ips`]) |
//!
//! A slot is free when its API server address and the first pod IP's AMQP port can be bound; the
//! API server's own listener then holds the slot, so parallel test processes never share one.
//!
//! State lives under `ClusterConfig::dir`: `kubeconfig` (the admin's: the cluster CA and the
//! client certificate of `kubernetes-admin`, in `system:masters`), `pods/<ns>/<pod>-<uid>/` (materialised
//! volumes; broker data and logs for pods without a PVC) and `pvc/<ns>/<claim>/` (PVC data, kept
//! across pod restarts). The `pods/` and `pvc/` folders are emptied at start: the API server
//! keeps objects in memory only, so nothing outlives a cluster.
//!
//! The simulated controllers act as their own user, `system:kubesim-controllers` (in
//! `system:masters`), so the request log tells their requests from the admin's and a client fault
//! on the admin does not stop them.
//!
//! [`Cluster::shutdown`] stops every broker process gracefully; dropping a `Cluster` (also while a
//! test panics) kills them at once, by process group.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::apiserver::{self, ApiServerConfig, ApiServerHandle};
use crate::sim::{self, Sim, SimConfig};

// The second octets of the three per-cluster /24s in 127.0.0.0/8 (the slot is the third).

/// API server address: `127.19.<slot>.1`.
pub const API_OCTET: u8 = 19;
/// Service ClusterIPs: `127.20.<slot>.x`, then `127.21.<slot>.x` ... `127.29.<slot>.x`.
pub const SERVICE_OCTET: u8 = 20;
/// Pod IPs: `127.30.<slot>.x`.
pub const POD_OCTET: u8 = 30;
/// The API server's port, as on a real control plane.
pub const API_PORT: u16 = 6443;

/// What a cluster is started with.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// State folder (created if missing): kubeconfig, pod folders, PVC folders, broker logs.
    pub dir: PathBuf,
    /// At most this many `rabbitmq-server` processes at once (further broker pods stay Pending).
    pub max_brokers: usize,
    /// Controllers' full resync interval.
    pub resync: Duration,
    /// Append the API server's request log to this file (see `apiserver::audit`).
    pub request_log: Option<PathBuf>,
    /// Images the kubelet runs as local binaries, by repository name (see `sim::images`); the
    /// pods get their ServiceAccount token, the CA and `KUBERNETES_SERVICE_HOST`/`PORT`.
    pub image_binaries: sim::images::ImageBinaries,
    /// Feature flags fresh brokers enable at first boot (see
    /// [`ClusterConfig::with_initial_feature_flags`]); `None`: every stable flag.
    pub initial_feature_flags: Option<String>,
    /// Re-created pods get new IPs (see [`ClusterConfig::with_fresh_pod_ips`]); `false`: a pod
    /// name keeps its IP for the life of the cluster.
    pub fresh_pod_ips: bool,
    /// Extra Erlang VM flags of every broker node (see
    /// [`ClusterConfig::with_broker_erl_args`]); `None`: RabbitMQ's defaults.
    pub broker_erl_args: Option<String>,
}

impl ClusterConfig {
    /// A cluster in `dir` with at most 3 brokers and a 1 s resync.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ClusterConfig {
            dir: dir.into(),
            max_brokers: 3,
            resync: Duration::from_secs(1),
            request_log: None,
            image_binaries: sim::images::ImageBinaries::new(),
            initial_feature_flags: None,
            fresh_pod_ips: false,
            broker_erl_args: None,
        }
    }

    /// Brokers booting with an empty data folder enable only `flags` (comma-separated, plus
    /// what their release requires), like a cluster upgraded from an older release whose newer
    /// flags were never enabled.
    pub fn with_initial_feature_flags(mut self, flags: impl Into<String>) -> Self {
        self.initial_feature_flags = Some(flags.into());
        self
    }

    /// Every new pod object gets a new IP, as a real cluster's CNI does: a pod deleted and
    /// created again under the same name (`kubectl delete pod` on a StatefulSet's pod) comes back
    /// on an address different from its previous one, while a container restart inside the same
    /// pod keeps it. Released addresses are reused only once the cluster's /24 wraps. A broker
    /// pod keeps its Erlang node name, distribution listener and data (the name was made from
    /// its first IP and is recorded in its data folder); AMQP, management and Prometheus listen
    /// on the current pod IP. Without this a pod name keeps its IP for the life of the cluster.
    pub fn with_fresh_pod_ips(mut self) -> Self {
        self.fresh_pod_ips = true;
        self
    }

    /// Starts every broker node with these extra Erlang VM flags (appended to
    /// `RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS`), e.g. `+S 1:1 +sbwt none +sbwtdcpu none +sbwtdio
    /// none`: one scheduler that does not busy-wait, so many idle nodes fit on a small machine.
    /// Opt-in (the scale bench uses it); brokers otherwise run with RabbitMQ's defaults.
    pub fn with_broker_erl_args(mut self, args: impl Into<String>) -> Self {
        self.broker_erl_args = Some(args.into());
        self
    }

    /// At most `n` broker processes at once (default 3; further broker pods stay Pending).
    pub fn with_max_brokers(mut self, n: usize) -> Self {
        self.max_brokers = n;
        self
    }

    /// Runs images whose repository name is `repository` as `binary` (see `sim::images`).
    pub fn with_image_binary(
        mut self,
        repository: impl Into<String>,
        binary: impl Into<PathBuf>,
    ) -> Self {
        self.image_binaries.insert(repository, binary);
        self
    }
}

/// A running simulated cluster.
pub struct Cluster {
    slot: u8,
    dir: PathBuf,
    kubeconfig: PathBuf,
    client: kube::Client,
    sim: Option<Sim>,
    api: Option<ApiServerHandle>,
}

fn slot_looks_free(slot: u8) -> bool {
    let api = SocketAddrV4::new(Ipv4Addr::new(127, API_OCTET, slot, 1), API_PORT);
    // A broker left over from a killed process would still hold the first pod IP's port.
    let pod = SocketAddrV4::new(
        Ipv4Addr::new(127, POD_OCTET, slot, 1),
        sim::rabbit::DEFAULT_AMQP_PORT,
    );
    TcpListener::bind(api).is_ok() && TcpListener::bind(pod).is_ok()
}

/// Starts a cluster in the first free slot and writes `<dir>/kubeconfig`.
pub async fn start(cfg: ClusterConfig) -> anyhow::Result<Cluster> {
    std::fs::create_dir_all(&cfg.dir)
        .with_context(|| format!("create kubesim dir {}", cfg.dir.display()))?;
    // Broker processes run as the `rabbitmq` user and must be able to reach their folders.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cfg.dir, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod kubesim dir {}", cfg.dir.display()))?;
    }
    // The API server keeps its objects in memory, so pod and PVC folders of an earlier run
    // belong to objects that no longer exist.
    for stale in ["pods", "pvc"] {
        let p = cfg.dir.join(stale);
        if p.exists() {
            std::fs::remove_dir_all(&p).with_context(|| format!("remove stale {}", p.display()))?;
        }
    }
    // Spread parallel processes over the slots so they rarely race for the same one.
    let first = (std::process::id() % 250) as u8;
    let mut last_err = None;
    let mut started = None;
    for i in 0..250u16 {
        let slot = ((u16::from(first) + i) % 250 + 1) as u8;
        if !slot_looks_free(slot) {
            continue;
        }
        let bind = SocketAddr::from((Ipv4Addr::new(127, API_OCTET, slot, 1), API_PORT));
        match apiserver::start(ApiServerConfig {
            bind,
            service_ip_prefix: [127, SERVICE_OCTET, slot],
            request_log: cfg.request_log.clone(),
            pod_logs: Some(cfg.dir.join("pods")),
        })
        .await
        {
            Ok(h) => {
                started = Some((slot, h));
                break;
            }
            // Most likely another process took the slot between the probe and the bind.
            Err(e) => last_err = Some(e),
        }
    }
    let (slot, api) = match (started, last_err) {
        (Some(s), _) => s,
        (None, Some(e)) => return Err(e.context("no kubesim slot could start an API server")),
        (None, None) => {
            anyhow::bail!("all 250 kubesim slots are in use on this machine; stop other clusters")
        }
    };
    let kubeconfig = cfg.dir.join("kubeconfig");
    api.write_kubeconfig(&kubeconfig)
        .with_context(|| format!("write {}", kubeconfig.display()))?;
    let client = api
        .admin_client()
        .context("build kube client for the kubesim API server")?;
    let controllers = kube::Client::try_from(api.user_config(
        apiserver::authn::CONTROLLERS_USER,
        &[apiserver::authn::MASTERS.to_string()],
    )?)
    .context("build the simulated controllers' kube client")?;
    let sim = sim::start(
        controllers,
        SimConfig {
            dir: cfg.dir.clone(),
            pod_ip_prefix: [127, POD_OCTET, slot],
            max_brokers: cfg.max_brokers,
            resync: cfg.resync,
            image_binaries: cfg.image_binaries.clone(),
            initial_feature_flags: cfg.initial_feature_flags.clone(),
            fresh_pod_ips: cfg.fresh_pod_ips,
            broker_erl_args: cfg.broker_erl_args.clone(),
            api_server: Some(sim::InClusterApi {
                addr: api.addr(),
                ca_pem: api.ca_pem().to_string(),
            }),
        },
    )
    .await
    .context("start the simulated controllers")?;
    tracing::info!(slot, url = %api.url(), kubeconfig = %kubeconfig.display(), "kubesim cluster up");
    Ok(Cluster {
        slot,
        dir: cfg.dir,
        kubeconfig,
        client,
        sim: Some(sim),
        api: Some(api),
    })
}

impl Cluster {
    /// The slot number `s` of the cluster's addresses (see the module docs).
    pub fn slot(&self) -> u8 {
        self.slot
    }

    /// A kube-rs client for this cluster's API server, acting as the admin (`kubernetes-admin`
    /// in `system:masters`).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// `<dir>/kubeconfig`, for kubectl (`KUBECONFIG=...`) and other processes.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The state folder (`ClusterConfig::dir`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The API server (its URL, identities, request log and fault injection).
    pub fn api(&self) -> &ApiServerHandle {
        self.api.as_ref().expect("API server runs until shutdown")
    }

    /// `[127, 30, s]`: pod IPs are `127.30.s.1..254`.
    pub fn pod_ip_prefix(&self) -> [u8; 3] {
        [127, POD_OCTET, self.slot]
    }

    /// `[127, 20, s]`: Service ClusterIPs are `127.20.s.1..254`.
    pub fn service_ip_prefix(&self) -> [u8; 3] {
        [127, SERVICE_OCTET, self.slot]
    }

    /// How many `rabbitmq-server` processes run for this cluster right now.
    pub fn running_brokers(&self) -> usize {
        self.sim.as_ref().map_or(0, |s| s.running_brokers())
    }

    /// `namespace/pod` → pid of each running `rabbitmq-server`.
    pub fn broker_pids(&self) -> std::collections::BTreeMap<String, u32> {
        self.sim
            .as_ref()
            .map(|s| s.broker_pids())
            .unwrap_or_default()
    }

    /// A handle that reads [`Cluster::broker_pids`] from another task; `None` without the
    /// simulated controllers.
    pub fn broker_pids_handle(&self) -> Option<sim::BrokerPids> {
        self.sim.as_ref().map(|s| s.broker_pids_handle())
    }

    /// kube-proxy's fault switch for Service ports (see [`sim::kubeproxy::ProxyFaults`]);
    /// `None` without the simulated controllers.
    pub fn proxy_faults(&self) -> Option<sim::kubeproxy::ProxyFaults> {
        self.sim.as_ref().map(|s| s.proxy_faults())
    }

    /// Stops brokers gracefully, then the controllers and the API server.
    pub async fn shutdown(mut self) {
        if let Some(sim) = self.sim.take() {
            sim.shutdown().await;
        }
        if let Some(api) = self.api.take() {
            api.shutdown().await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Sim's Drop kills every broker process group synchronously.
        drop(self.sim.take());
        drop(self.api.take());
    }
}

/// Polls `check` every 200 ms until it returns `Some`, failing after `timeout` with `what` in the
/// message (for tests and scripts waiting on the cluster).
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
