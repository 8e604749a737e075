//! The migration steps. Each is an idempotent async function: running it again after a crash at
//! any point — before, during or after its effect — converges on the same end state, and a step
//! that would lose messages refuses instead ([`crate::ErrorKind::Refused`]).
//!
//! Objects tiermq creates on a broker for its own use (drain shovels, federation upstreams and
//! policies) are named with [`MANAGED_PREFIX`] and are never copied between clusters.

mod access;
mod backlog;
mod clients;
mod connections;
mod federation;
mod live;
mod retire;
mod shovel;
mod tenant;
mod topology;
mod transfers;

pub use access::{restore_writes, revoke_all, revoke_writes};
pub use backlog::{
    Backlog, DRAINED_AFTER, DrainCriteria, DrainProgress, QueueBacklog, measure_backlog,
};
pub use clients::{Clients, classify, close_named, list_clients};
pub use connections::close_connections;
pub use federation::{
    FEDERATION_POLICY_PREFIX, FEDERATION_UPSTREAM, FederationSetup, ensure_queue_federation,
    remove_queue_federation,
};
pub use live::{LiveQueue, live_counts};
pub use retire::{RetireOutcome, retire_tenant};
pub use shovel::{
    DRAIN_SHOVEL_PREFIX, ShovelDrain, drain_shovel_name, ensure_drain_shovels,
    remove_drain_shovels, verified_tls_query,
};
pub use tenant::{Tenant, ensure_tenant, ensure_tenant_with};
pub use topology::{
    MIRRORING_POLICY_KEYS, TopologyCopy, copy_topology, copy_topology_with, filter_policy_keys,
    for_destination, mirroring_keys, mirroring_only, missing_objects, tenant_topology,
};
pub use transfers::{TRANSFER_COMPONENTS, copy_transfers, stop_transfers, tenant_transfers};

/// Prefix of every broker object tiermq itself manages.
pub const MANAGED_PREFIX: &str = "tiermq-";
