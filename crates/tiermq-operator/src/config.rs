//! Operator configuration: flags, each with an environment variable (the chart sets those).

use std::net::SocketAddr;

use clap::{Args, ValueEnum};

use crate::policy::{Bound, DedicatedBounds};

/// The settings of `tiermq-operator run`.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Address of the HTTP server for /metrics (and /healthz, /readyz unless `--probe-addr`
    /// is set). `127.0.0.1:8080` keeps the metrics inside the pod (for a sidecar such as
    /// kube-rbac-proxy to serve them with authentication).
    #[arg(long, env = "TIERMQ_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,

    /// Who may read /metrics: `none` (anyone who reaches it) or `kubernetes` (a bearer token
    /// the API server accepts, whose user may `get` the non-resource URL `/metrics`; checked
    /// with TokenReview and SubjectAccessReview).
    #[arg(long, env = "TIERMQ_METRICS_AUTH", value_enum, default_value_t = MetricsAuth::None)]
    pub metrics_auth: MetricsAuth,

    /// Address of /healthz and /readyz on their own; unset: they are served on
    /// `--metrics-addr`.
    #[arg(long, env = "TIERMQ_PROBE_ADDR")]
    pub probe_addr: Option<SocketAddr>,

    /// Seconds the controllers' watches may keep failing, or one reconcile may run, before
    /// /healthz reports the operator wedged (and the liveness probe restarts it).
    #[arg(long, env = "TIERMQ_HEALTH_STALL_SECONDS", default_value_t = 300)]
    pub health_stall_seconds: u64,

    /// Log format: `json` for log collectors, `pretty` for people.
    #[arg(long, env = "TIERMQ_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,

    /// SharedCluster used by shared instances that name none (`name` or `namespace/name`).
    #[arg(long, env = "TIERMQ_DEFAULT_SHARED_CLUSTER")]
    pub default_shared_cluster: Option<String>,

    /// Namespace of SharedClusters referenced without one (defaults to the operator's namespace).
    #[arg(long, env = "TIERMQ_SHARED_CLUSTER_NAMESPACE")]
    pub shared_cluster_namespace: Option<String>,

    /// Namespace the operator runs in (leader-election Lease, default SharedCluster namespace).
    #[arg(long, env = "TIERMQ_NAMESPACE", default_value = "tiermq-system")]
    pub namespace: String,

    /// Take part in leader election on a Lease; only the leader reconciles.
    #[arg(long, env = "TIERMQ_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// Name of the leader-election Lease.
    #[arg(long, env = "TIERMQ_LEASE_NAME", default_value = "tiermq-operator")]
    pub lease_name: String,

    /// Identity in the Lease; defaults to the pod name (HOSTNAME).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// How the operator reaches a cluster's management API: `service-dns` (in-cluster:
    /// `<cluster>.<ns>.svc:15672`) or `cluster-ip` (the management Service's ClusterIP; works from
    /// outside the cluster network too, which is how the test cluster runs the operator).
    #[arg(long, env = "TIERMQ_BROKER_ADDRESSING", value_enum, default_value_t = BrokerAddressing::ServiceDns)]
    pub broker_addressing: BrokerAddressing,

    /// Seconds between drain-progress samples while a source drains.
    #[arg(long, env = "TIERMQ_DRAIN_POLL_SECONDS", default_value_t = 2)]
    pub drain_poll_seconds: u64,

    /// Instances reconciled at once (each instance is still reconciled by one pass at a time).
    /// Without a bound, a fleet that starts together (1,000 instances in the scale bench) opens
    /// a connection to the API server and the brokers per instance and holds every pass's
    /// memory at once. The router's short passes (EndpointSlices) may run four times as many.
    /// Passes waiting for a slot start in the order they fell due (see `controller::gate`).
    /// 0: unbounded.
    #[arg(long, env = "TIERMQ_MAX_CONCURRENT_RECONCILES", default_value_t = 16)]
    pub max_concurrent_reconciles: u16,

    /// Conversions running at once, across every instance. A conversion boots a broker
    /// (upgrade) or loads a SharedCluster (downgrade); flips beyond the bound are held
    /// (`ConversionBlocked`, reason `ConversionLimitReached`) and start in the order they were
    /// held as conversions end. Running conversions, aborts and deletions are never held.
    /// 0: unbounded.
    #[arg(long, env = "TIERMQ_MAX_CONCURRENT_CONVERSIONS", default_value_t = 0)]
    pub max_concurrent_conversions: u16,

    /// `collect_statistics_interval` of the brokers the operator creates, in milliseconds. Message
    /// counts lag by this much, so the drain check treats a sample as describing the state this
    /// long before it was taken. Lower it in tests for quick drains.
    #[arg(long, env = "TIERMQ_BROKER_STATS_INTERVAL_MS", default_value_t = crate::build::DEFAULT_STATS_INTERVAL_MS)]
    pub broker_stats_interval_ms: u32,

    /// Give every broker cluster a NetworkPolicy (management API from the operator only,
    /// inter-node ports from the cluster's own pods only). Turn off where the CNI does not
    /// enforce NetworkPolicy; policies made before are then deleted.
    #[arg(long, env = "TIERMQ_NETWORK_POLICIES", default_value_t = true, action = clap::ArgAction::Set)]
    pub network_policies: bool,

    /// Labels of the operator's pods (`k=v,k=v`), the only pods the NetworkPolicies let reach
    /// the management API (in `--namespace`).
    #[arg(long, env = "TIERMQ_OPERATOR_POD_LABELS", value_parser = parse_labels,
          default_value = "app.kubernetes.io/name=tiermq,app.kubernetes.io/component=operator")]
    pub operator_pod_labels: Labels,

    /// Namespaces whose pods may open AMQP connections to the brokers (comma-separated); empty:
    /// every namespace. The operator and other tiermq brokers (shovels) always may.
    #[arg(long, env = "TIERMQ_AMQP_ALLOWED_NAMESPACES", value_delimiter = ',')]
    pub amqp_allowed_namespaces: Vec<String>,

    /// Namespaces whose pods may scrape the brokers' Prometheus port (comma-separated); empty:
    /// every namespace.
    #[arg(
        long,
        env = "TIERMQ_PROMETHEUS_ALLOWED_NAMESPACES",
        value_delimiter = ','
    )]
    pub prometheus_allowed_namespaces: Vec<String>,

    /// Namespaces the operator watches, comma-separated (namespaced mode: it then needs Roles
    /// in those namespaces only); empty watches every namespace. The SharedClusters' namespace
    /// must be one of them.
    #[arg(long, env = "TIERMQ_WATCH_NAMESPACES", value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,

    /// Image prefixes a dedicated cluster may run, comma-separated (e.g. `rabbitmq:`); empty
    /// allows any image.
    #[arg(long, env = "TIERMQ_DEDICATED_IMAGES", value_delimiter = ',')]
    pub dedicated_images: Vec<String>,

    /// Most broker nodes a dedicated cluster may have (empty: no bound).
    #[arg(long, env = "TIERMQ_DEDICATED_MAX_REPLICAS", default_value = "", value_parser = optional_count)]
    pub dedicated_max_replicas: Optional<i32>,

    /// Most CPU per dedicated broker container (a quantity, e.g. `2`; empty: no bound);
    /// requires CPU limits.
    #[arg(long, env = "TIERMQ_DEDICATED_MAX_CPU", default_value = "", value_parser = optional_bound)]
    pub dedicated_max_cpu: Optional<Bound>,

    /// Most memory per dedicated broker container (e.g. `4Gi`; empty: no bound); requires
    /// memory limits.
    #[arg(long, env = "TIERMQ_DEDICATED_MAX_MEMORY", default_value = "", value_parser = optional_bound)]
    pub dedicated_max_memory: Optional<Bound>,

    /// Largest volume per dedicated broker node (e.g. `50Gi`; empty: no bound).
    #[arg(long, env = "TIERMQ_DEDICATED_MAX_STORAGE", default_value = "", value_parser = optional_bound)]
    pub dedicated_max_storage: Optional<Bound>,

    /// Not a setting: set at start so every management client counts its requests in the
    /// operator's metrics (the clients are made where only this configuration is at hand).
    #[arg(skip)]
    pub broker_observer: Option<tiermq_broker::RequestObserver>,
}

/// A setting that may be left empty (the chart and `deploy/` always set the variable, empty
/// when there is no bound).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Optional<T>(pub Option<T>);

fn optional_bound(s: &str) -> Result<Optional<Bound>, String> {
    match s.trim() {
        "" => Ok(Optional(None)),
        t => Bound::parse(t).map(|b| Optional(Some(b))),
    }
}

fn optional_count(s: &str) -> Result<Optional<i32>, String> {
    match s.trim() {
        "" | "0" => Ok(Optional(None)),
        t => match t.parse::<i32>() {
            Ok(n) if n > 0 => Ok(Optional(Some(n))),
            _ => Err(format!("{t:?} is not a positive whole number")),
        },
    }
}

/// Pod labels as a flag value.
pub type Labels = std::collections::BTreeMap<String, String>;

/// `k=v,k=v` → labels.
fn parse_labels(s: &str) -> Result<Labels, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| format!("{p:?} is not a `key=value` label"))
        })
        .collect()
}

impl RunArgs {
    /// Defaults for in-process runs (tests, the demo): no leader election, pretty logs, brokers
    /// addressed by ClusterIP.
    pub fn local(namespace: &str) -> Self {
        Self {
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            probe_addr: None,
            metrics_auth: MetricsAuth::None,
            health_stall_seconds: 300,
            log_format: LogFormat::Pretty,
            default_shared_cluster: None,
            shared_cluster_namespace: None,
            namespace: namespace.to_string(),
            leader_election: false,
            lease_name: "tiermq-operator".into(),
            identity: None,
            broker_addressing: BrokerAddressing::ClusterIp,
            drain_poll_seconds: 2,
            max_concurrent_reconciles: 16,
            max_concurrent_conversions: 0,
            broker_stats_interval_ms: crate::build::DEFAULT_STATS_INTERVAL_MS,
            network_policies: true,
            operator_pod_labels: crate::build::network_policy::default_operator_pod_labels(),
            amqp_allowed_namespaces: Vec::new(),
            prometheus_allowed_namespaces: Vec::new(),
            watch_namespaces: Vec::new(),
            dedicated_images: Vec::new(),
            dedicated_max_replicas: Optional(None),
            dedicated_max_cpu: Optional(None),
            dedicated_max_memory: Optional(None),
            dedicated_max_storage: Optional(None),
            broker_observer: None,
        }
    }

    /// Who may reach the brokers, for the clusters' NetworkPolicies.
    pub fn network_access(&self) -> crate::build::network_policy::NetworkAccess {
        let nonempty = |v: &[String]| v.iter().filter(|n| !n.is_empty()).cloned().collect();
        crate::build::network_policy::NetworkAccess {
            enabled: self.network_policies,
            operator_namespace: self.namespace.clone(),
            operator_pod_labels: self.operator_pod_labels.clone(),
            amqp_namespaces: nonempty(&self.amqp_allowed_namespaces),
            prometheus_namespaces: nonempty(&self.prometheus_allowed_namespaces),
        }
    }

    /// The operator's bounds on dedicated clusters.
    pub fn dedicated_bounds(&self) -> DedicatedBounds {
        DedicatedBounds {
            images: self
                .dedicated_images
                .iter()
                .filter(|p| !p.is_empty())
                .cloned()
                .collect(),
            max_replicas: self.dedicated_max_replicas.0,
            max_cpu: self.dedicated_max_cpu.0.clone(),
            max_memory: self.dedicated_max_memory.0.clone(),
            max_storage: self.dedicated_max_storage.0.clone(),
        }
    }

    /// The SharedCluster namespace used when a reference names none.
    pub fn shared_namespace(&self) -> &str {
        self.shared_cluster_namespace
            .as_deref()
            .unwrap_or(&self.namespace)
    }
}

/// Who may read `/metrics`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsAuth {
    /// Anyone who reaches it.
    None,
    /// Bearer tokens reviewed by the API server (TokenReview, SubjectAccessReview).
    Kubernetes,
}

/// How the operator writes its logs.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, for log collectors.
    Json,
    /// Human-readable lines, for people.
    Pretty,
}

/// How the operator reaches a cluster's management API.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerAddressing {
    /// The management Service's DNS name, `<cluster>.<ns>.svc:15672` (in-cluster).
    ServiceDns,
    /// The management Service's ClusterIP (also from outside the cluster network).
    ClusterIp,
}
