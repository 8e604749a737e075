//! R-delete: the finalizer's cleanup when the instance is deleted.

use tiermq_crd::{ClusterKind, ClusterRef, MigrationPhase};

use super::Decision;
use super::observed::{Observed, TenantState};
use super::output::Step;
use super::roles::exists;

/// R-delete: the finalizer's cleanup on every cluster the instance has state on.
pub(super) fn deletion(o: &Observed, recorded: MigrationPhase) -> Decision {
    let mut clusters: Vec<ClusterRef> = Vec::new();
    let mut add = |r: &ClusterRef| {
        if !clusters.contains(r) {
            clusters.push(r.clone());
        }
    };
    if let Some(m) = &o.status.migration {
        add(&m.source);
        add(&m.destination);
    }
    if let Some(t) = o.status.tier {
        add(&o.cluster(t.cluster_kind()).cluster);
    }
    if let Some(s) = &o.status.serving {
        add(s);
    }
    for c in [&o.shared, &o.dedicated] {
        if matches!(c.tenant_state(), TenantState::Present(_))
            || (c.exists && c.cluster.kind == ClusterKind::Dedicated)
        {
            add(&c.cluster);
        }
    }
    let mut steps = Vec::new();
    for c in clusters.iter().filter(|c| exists(o, c)) {
        match c.kind {
            ClusterKind::Shared => steps.push(Step::DiscardTenant { cluster: c.clone() }),
            ClusterKind::Dedicated => {
                steps.push(Step::DeleteDedicatedCluster { cluster: c.clone() })
            }
        }
    }
    steps.push(Step::RemoveFinalizer);
    let mut d = Decision::new(recorded, steps);
    d.migration = o.status.migration.clone();
    d.deleting = true;
    d.progress = "instance deleted: removing its broker state".to_string();
    d
}
