//! The tiermq operator as a library: pure planning and building, plus the IO that applies them.
//!
//! - [`controller::plan`]: the tier-conversion state machine, a pure function of (observed, now).
//! - [`build`]: pure builders, one per Kubernetes object the operator owns.
//! - [`controller::apply`]: the one place that writes Kubernetes objects.
//! - [`controller`]: the reconcilers (RabbitMQInstance, SharedCluster) and their pipeline.
//! - [`rbac`]: the operator's RBAC rules, derived from what it manages (generated into the chart
//!   and `deploy/`).
//! - [`operator`]: `tiermq-operator run` — controllers under leader election, HTTP, shutdown.
//! - [`config`], [`telemetry`], [`metrics`], [`http`], [`leader`]: the process around them.
//! - [`policy`]: the admin's bounds on dedicated clusters (images, replicas, resources, storage).
//! - [`fault`]: the crash tests' hook (inert unless its environment variable is set).

#![warn(missing_docs)]

pub mod build;
pub mod config;
pub mod controller;
pub mod error;
pub mod fault;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod operator;
pub mod policy;
pub mod rbac;
pub mod telemetry;
