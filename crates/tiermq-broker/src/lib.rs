//! The broker data plane: tiermq changes RabbitMQ brokers only through this crate, and this crate
//! only through RabbitMQ's management HTTP API.
//!
//! - [`ManagementClient`]: a typed async client of one cluster's management API — health, vhosts,
//!   users, permissions, vhost limits, per-vhost definitions, queues with counts and rates,
//!   connections, dynamic shovels, federation upstreams, policies. Names are percent-encoded;
//!   errors ([`BrokerError`]) name the cluster and the operation and say whether a retry may help;
//!   transient failures are retried with bounded backoff; passwords never appear in errors, logs
//!   or `Debug` output ([`Secret`]).
//! - [`steps`]: each migration step as an idempotent function, safe to rerun after a crash at any
//!   point — ensure a tenant, copy a vhost's topology, revoke/restore writes, measure the backlog
//!   and decide "drained" from fresh readings, drain with shovels, federate queues, close
//!   connections with a reason, retire a tenant (refused while messages remain).
//!
//! The data types the steps return ([`steps::Backlog`], [`steps::DrainProgress`], …) are plain
//! data; the operator maps them into its planner's own observation types, and shares the drain
//! threshold ([`steps::DRAINED_AFTER`]) and the secret type ([`Secret`]) with this crate.

#![warn(missing_docs)]

mod client;
mod encode;
mod error;
pub mod model;
mod secret;
pub mod steps;

pub use client::{
    ClientOptions, ClusterEndpoint, ManagementClient, RequestObserver, RetryPolicy, ServerTls,
};
pub use error::{BrokerError, ErrorKind, NotFoundExt};
pub use secret::{GENERATED_LEN, Secret, generate_password, generate_secret, redact};
