//! Operator configuration: flags, each with an environment variable (the chart sets those).

use std::net::SocketAddr;

use clap::{Args, ValueEnum};

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Address of the HTTP server for /metrics, /healthz and /readyz.
    #[arg(long, env = "TIERMQ_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,

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
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerAddressing {
    ServiceDns,
    ClusterIp,
}
