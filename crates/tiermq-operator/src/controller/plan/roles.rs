//! Roles and small observation helpers the phase functions share: which cluster is the source and
//! which the destination, what the observation says about each, and how to name them in messages.

use chrono::{DateTime, Utc};
use tiermq_crd::{ClusterKind, ClusterRef, ConnectionPolicy, MigrationStatus, Tier};

use super::observed::{ClusterObservation, Observed, TenantObservation, TenantState};
use super::output::Step;
use super::time::to_time;

use tiermq_crd::MigrationPhase::*;

pub(super) fn other(t: Tier) -> Tier {
    match t {
        Tier::Shared => Tier::Dedicated,
        Tier::Dedicated => Tier::Shared,
    }
}

/// R-policy: the spec's connection policy, else the direction's default.
pub fn effective_policy(spec_policy: Option<ConnectionPolicy>, to: Tier) -> ConnectionPolicy {
    spec_policy.unwrap_or(ConnectionPolicy::default_for(to))
}

pub(super) fn new_migration(
    o: &Observed,
    from: Tier,
    to: Tier,
    now: DateTime<Utc>,
) -> MigrationStatus {
    MigrationStatus {
        from,
        to,
        source: serving_ref(o, from),
        destination: o.cluster(to.cluster_kind()).cluster.clone(),
        drain_strategy: o.spec.migration.drain_strategy,
        connection_policy: effective_policy(o.spec.migration.connection_policy, to),
        started: to_time(now),
        phases: Vec::new(),
        remaining_messages: None,
        drain_rate: None,
        eta_seconds: None,
        empty_samples: 0,
        last_sample: None,
        source_revoked_at: None,
        source_closed_at: None,
        reverse_requested: false,
        source_frozen_at: None,
        stats_behind_since: None,
        stats_lag_seconds: None,
    }
}

/// The running conversion as recorded, with the live spec settings (the spec wins at any time).
/// A migration phase without a recorded block (a hand-edited status) gets one rebuilt from
/// `status.tier`, so the planner never guesses roles from the spec alone.
pub(super) fn running(o: &Observed, now: DateTime<Utc>) -> MigrationStatus {
    let mut m = match &o.status.migration {
        Some(m) => m.clone(),
        None => {
            // status.tier names the destination once past the write cutover.
            let recorded = o.status.migration_phase.unwrap_or(Stable);
            let from = match o.status.tier {
                Some(t) if recorded.past_write_cutover() => other(t),
                Some(t) => t,
                None => other(o.spec.tier),
            };
            new_migration(o, from, other(from), now)
        }
    };
    m.drain_strategy = o.spec.migration.drain_strategy;
    m.connection_policy = effective_policy(o.spec.migration.connection_policy, m.to);
    m
}

pub(super) fn tenant_of<'a>(o: &'a Observed, r: &ClusterRef) -> TenantState<'a> {
    o.cluster_by_ref(r)
        .map_or(TenantState::Unknown, ClusterObservation::tenant_state)
}

pub(super) fn exists(o: &Observed, r: &ClusterRef) -> bool {
    // An unobserved ref counts as existing: cleanup steps are then emitted, never skipped.
    o.cluster_by_ref(r).is_none_or(|c| c.exists)
}

pub(super) fn in_service(o: &Observed, r: &ClusterRef) -> bool {
    o.cluster_by_ref(r)
        .is_some_and(ClusterObservation::in_service)
}

pub(super) fn reachable(o: &Observed, r: &ClusterRef) -> bool {
    o.cluster_by_ref(r)
        .is_some_and(|c| c.ready() && c.reachable())
}

pub(super) fn topology_synced(o: &Observed, m: &MigrationStatus) -> bool {
    holds_topology_of(o, &m.destination, &m.source)
}

/// `to`'s tenant holds every topology object `from`'s tenant holds (both observed), but for
/// policies `to` does not take at all (see [`admitted_policy_keys`]).
pub(super) fn holds_topology_of(o: &Observed, to: &ClusterRef, from: &ClusterRef) -> bool {
    match (tenant_of(o, from), tenant_of(o, to)) {
        (TenantState::Present(f), TenantState::Present(t)) => {
            let terms = o.cluster_by_ref(to).and_then(|c| c.tenancy.as_ref());
            f.topology.iter().all(|name| {
                t.topology.contains(name)
                    || name.strip_prefix("policy/").is_some_and(|p| {
                        let keys = f.policy_keys.get(p).map(Vec::as_slice).unwrap_or(&[]);
                        terms.is_some_and(|terms| {
                            !keys.is_empty() && keys.iter().all(|k| !terms.admits_policy_key(k))
                        })
                    })
            })
        }
        _ => false,
    }
}

/// The policy keys the cluster `to` admits from a tenant: a SharedCluster's
/// `spec.tenants.policyKeys`; `None` (everything) for a dedicated cluster or unknown terms.
pub(super) fn admitted_policy_keys(o: &Observed, to: &ClusterRef) -> Option<Vec<String>> {
    o.cluster_by_ref(to)
        .filter(|c| c.cluster.kind == ClusterKind::Shared)
        .and_then(|c| c.tenancy.as_ref())
        .map(|t| t.policy_keys.clone())
}

/// The step that copies `from`'s topology onto `to`, within what `to` admits.
pub(super) fn copy_topology(o: &Observed, from: &ClusterRef, to: &ClusterRef) -> Step {
    Step::CopyTopology {
        from: from.clone(),
        to: to.clone(),
        policy_keys: admitted_policy_keys(o, to),
    }
}

/// The tenant's policy keys on `from` that `to` does not admit, one line per policy
/// (`name (key, key)`); empty when all are admitted or nothing is known.
pub(super) fn refused_policy_keys(o: &Observed, from: &ClusterRef, to: &ClusterRef) -> Vec<String> {
    let (Some(t), Some(terms)) = (
        tenant(o, from),
        o.cluster_by_ref(to).and_then(|c| c.tenancy.as_ref()),
    ) else {
        return Vec::new();
    };
    t.policy_keys
        .iter()
        .filter_map(|(name, keys)| {
            let refused: Vec<&str> = keys
                .iter()
                .filter(|k| !terms.admits_policy_key(k))
                .map(String::as_str)
                .collect();
            (!refused.is_empty()).then(|| format!("{name} ({})", refused.join(", ")))
        })
        .collect()
}

/// The tenant on `r`, when it is observed present.
pub(super) fn tenant<'a>(o: &'a Observed, r: &ClusterRef) -> Option<&'a TenantObservation> {
    match tenant_of(o, r) {
        TenantState::Present(t) => Some(t),
        TenantState::Absent | TenantState::Unknown => None,
    }
}

/// Whether the tenant on `r` may publish; `None` when its tenant is not observed.
pub(super) fn writable(o: &Observed, r: &ClusterRef) -> Option<bool> {
    tenant(o, r).map(|t| t.access.writable())
}

/// Removes queue federation an older operator version may have left between the two clusters
/// (it would move messages onto a cluster being drained).
pub(super) fn federation_left(o: &Observed, m: &MigrationStatus) -> Option<Step> {
    let federated = |r: &ClusterRef| tenant(o, r).is_some_and(|t| t.federated);
    (federated(&m.source) || federated(&m.destination)).then(|| Step::DisableFederation {
        source: m.source.clone(),
        destination: m.destination.clone(),
    })
}

pub(super) fn flipped_back(o: &Observed, m: &MigrationStatus) -> bool {
    o.spec.tier == m.from
}

/// How messages name a cluster: `SharedCluster <ns>/<name>` or `dedicated cluster <ns>/<name>`.
pub fn describe(c: &ClusterRef) -> String {
    let kind = match c.kind {
        ClusterKind::Shared => "SharedCluster",
        ClusterKind::Dedicated => "dedicated cluster",
    };
    format!("{kind} {}/{}", c.namespace, c.name)
}

pub(super) fn backlog_note(m: &MigrationStatus) -> String {
    match (m.remaining_messages, m.eta_seconds) {
        (Some(n), Some(eta)) => format!("{n} messages remain, ETA {eta}s"),
        (Some(n), None) => format!("{n} messages remain, no drain rate yet"),
        _ => "backlog not sampled yet".to_string(),
    }
}

/// The cluster serving an instance on `tier`: `status.serving` when it is of that tier (the
/// instance stays where it is even if `spec.shared.clusterRef` changes: moving between
/// SharedClusters is not a tier conversion), else the observed cluster of that kind.
pub(super) fn serving_ref(o: &Observed, tier: Tier) -> ClusterRef {
    match &o.status.serving {
        Some(r) if r.kind == tier.cluster_kind() => r.clone(),
        _ => o.cluster(tier.cluster_kind()).cluster.clone(),
    }
}
