#![warn(missing_docs)]
//! kubesim: a small Kubernetes-like cluster on loopback for tiermq's tests and demo. It is test
//! and demo infrastructure only and never a dependency of the operator (a test checks this).
//!
//! - [`apiserver`]: an in-process Kubernetes API server over HTTPS (kubectl and kube-rs talk to
//!   it unmodified through the kubeconfig it writes), with authentication (client certificates,
//!   ServiceAccount tokens), RBAC, a request log and per-client fault injection.
//! - [`sim`]: the simulated controllers, each an ordinary kube-rs client of that API server:
//!   StatefulSet, Deployment, ReplicaSet and EndpointSlice controllers, a kubelet that runs
//!   RabbitMQ pods as real `rabbitmq-server` processes on their own pod IPs, and a kube-proxy for
//!   Service ClusterIPs.
//! - [`cluster`]: both together on a free loopback slot ([`cluster::start`]); the `kubesim up`
//!   binary runs one until Ctrl-C.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let cluster = kubesim::cluster::start(kubesim::cluster::ClusterConfig::new("/tmp/kubesim")).await?;
//! let client = cluster.client(); // or KUBECONFIG=<dir>/kubeconfig for kubectl and other processes
//! # let _ = client;
//! cluster.shutdown().await; // dropping it also kills every broker it started
//! # Ok(()) }
//! ```
//!
//! ## How the operator reaches brokers
//!
//! The operator runs as a host process against kubesim, and reaches each broker cluster the same
//! way it would from inside a real cluster: through the broker Service's ClusterIP
//! (`spec.clusterIP`, ports 5672 and 15672). kubesim's ClusterIPs are `127.20.<slot>.x`, and its
//! kube-proxy listens on them on the host and forwards to the ready pod IPs (`127.30.<slot>.x`),
//! so no DNS and no port-forwarding are needed. Inside a real cluster, the same ClusterIP (or the
//! Service's DNS name, which resolves to it) works unchanged.
pub mod apiserver;
pub mod cluster;
pub mod sim;
