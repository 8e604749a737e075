//! The planner's tests, one test binary (one link on a 2-core machine instead of four):
//!
//! - [`table`]: every phase × every kind of observation, both directions, exhaustive by `match`;
//! - [`scenarios`]: named conversions told as stories against a simulated world;
//! - [`windows`]: a flip outside `spec.migration.window` waits for it (injected clock);
//! - [`slots`]: a flip waits for a conversion slot (`--max-concurrent-conversions`);
//! - [`tenancy`]: a SharedCluster's tenant terms (namespaces, Service types, policy keys);
//! - [`properties`]: random observation sequences against that world, checking the safety rules;
//! - [`argocd`]: the chart's Argo CD health checks run by `lua5.4` against recorded statuses.
//!
//! [`common`] holds the fixtures and the simulated world.

mod argocd;
mod autotier;
mod common;
mod properties;
mod scenarios;
mod slots;
mod table;
mod tenancy;
mod windows;
