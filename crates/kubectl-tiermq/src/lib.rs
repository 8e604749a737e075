//! `kubectl tiermq`: a kubectl plugin for tiermq's RabbitMQInstances.
//!
//! - [`status`]: the instance's tiers, the running conversion as a phase timeline with
//!   durations, backlog, drain rate and ETA, finished conversions, and every condition;
//! - [`preview`]: what flipping `spec.tier` would do, judged by the operator's own planner on an
//!   observation made the way the operator makes it; nothing is written;
//! - [`watch`]: one line per change of the instance's status.
//!
//! kubectl finds the binary `kubectl-tiermq` on `PATH` and runs it for `kubectl tiermq ...`; it
//! talks to the cluster of the current kubeconfig context (`KUBECONFIG`, `--context`), like
//! kubectl.

pub mod cli;
pub mod preview;
pub mod status;
pub mod watch;
