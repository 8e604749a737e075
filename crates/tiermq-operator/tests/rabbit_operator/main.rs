//! The operator against real brokers, one test binary (its name starts with `rabbit_`, so
//! nextest runs its tests one at a time, see `.config/nextest.toml`):
//!
//! - [`admission`]: day-two changes refused at admission (CEL, no broker);
//! - [`broker_config`]: the builders' broker configuration boots a real RabbitMQ;
//! - [`reconcilers`]: the real reconcilers in-process against kubesim and real brokers;
//! - [`leader`]: leader election against kubesim (no broker);
//! - [`health`]: `/healthz` when the watches die (kubesim, no broker);
//! - [`network_policy`]: a broker cluster's NetworkPolicy in kubesim (no broker);
//! - [`metrics_auth`]: `/metrics` behind TokenReview and SubjectAccessReview (kubesim, no broker).

mod admission;
mod broker_config;
mod health;
mod leader;
mod metrics_auth;
mod network_policy;
mod reconcilers;
