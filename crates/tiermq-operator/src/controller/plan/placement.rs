//! Placement on a SharedCluster, the one rule for both ways onto one: a new shared instance
//! ([`new_instance_problem`]) and a downgrade (the gate in `idle`). The SharedCluster must exist,
//! have room and admit the instance (`spec.tenants`: its namespace and Service type); an
//! instance already placed or migrating there counts as having room. While a SharedCluster
//! serves the instance or a conversion moves it to or from one, the Service type must stay one
//! the cluster admits ([`tenancy_problem`]).

use tiermq_crd::conditions::reasons;
use tiermq_crd::{ClusterKind, ClusterRef, Tier};

use super::observed::{ClusterObservation, Observed};
use super::roles::describe;

/// The SharedCluster `r` does not exist, as (reason, message).
pub(super) fn not_found(r: &ClusterRef) -> (&'static str, String) {
    (
        reasons::SHARED_CLUSTER_NOT_FOUND,
        format!(
            "{} does not exist; create it or set spec.shared.clusterRef",
            describe(r)
        ),
    )
}

/// Why the SharedCluster observed as `c` cannot take this instance (missing or full), if it
/// cannot. The observer fills `capacity` exactly when the SharedCluster object exists.
pub(super) fn room_problem(c: &ClusterObservation) -> Option<(&'static str, String)> {
    let capacity = match c.capacity {
        None => return Some(not_found(&c.cluster)),
        Some(capacity) => capacity,
    };
    (!capacity.has_room()).then(|| {
        (
            reasons::NO_CAPACITY,
            format!(
                "{} is full ({}/{} instances); raise spec.capacity.maxInstances or pick another SharedCluster",
                describe(&c.cluster),
                capacity.instance_count,
                capacity.max_instances
            ),
        )
    })
}

/// Why the SharedCluster observed as `c` does not admit this instance (its namespace or its
/// Service type), if it does not. Unknown terms (the SharedCluster was not read) admit.
pub(super) fn terms_problem(
    o: &Observed,
    c: &ClusterObservation,
) -> Option<(&'static str, String)> {
    let terms = c.tenancy.as_ref()?;
    let ns = o.namespace();
    if !terms.admits_namespace(ns) {
        return Some((
            reasons::NAMESPACE_NOT_ALLOWED,
            format!(
                "{} does not take instances of namespace {ns:?} (spec.tenants.namespaces: {}); \
                 add the namespace there or pick another SharedCluster",
                describe(&c.cluster),
                terms.namespaces.join(", ")
            ),
        ));
    }
    access_problem(o, c)
}

/// Why the instance's Service type is not one the SharedCluster observed as `c` admits.
fn access_problem(o: &Observed, c: &ClusterObservation) -> Option<(&'static str, String)> {
    let terms = c.tenancy.as_ref()?;
    let t = o.spec.access.service_type;
    (!terms.admits_access(t)).then(|| {
        let allowed: Vec<&str> = terms.access_types.iter().map(|a| a.as_str()).collect();
        (
            reasons::ACCESS_TYPE_NOT_ALLOWED,
            format!(
                "{} does not let its tenants expose it with a {} Service \
                 (spec.tenants.accessTypes: {}); set spec.access.serviceType to one of \
                 those, or convert to Dedicated first",
                describe(&c.cluster),
                t.as_str(),
                allowed.join(", ")
            ),
        )
    })
}

/// Why the instance cannot go on as it is while a SharedCluster serves it or a conversion moves
/// it to or from one: its Service type is not one that SharedCluster admits. The caller refuses
/// it only as a change (the Service does not have that type yet): nothing is applied until it
/// is fixed, so the Service keeps its current type. A type admitted before the terms narrowed
/// stays, as placed tenants do when the namespaces narrow.
pub fn tenancy_problem(o: &Observed) -> Option<(&'static str, String)> {
    if o.deletion_requested || o.shared.cluster.name.is_empty() {
        return None;
    }
    let involved = |r: &ClusterRef| r.kind == ClusterKind::Shared && *r == o.shared.cluster;
    let serving = o.status.serving.as_ref().is_some_and(involved);
    let moving = o
        .status
        .migration
        .as_ref()
        .is_some_and(|m| involved(&m.source) || involved(&m.destination));
    if !serving && !moving {
        return None;
    }
    access_problem(o, &o.shared)
}

/// Why a new instance (not yet served anywhere) cannot be placed, if it cannot: on the shared
/// tier it needs a named SharedCluster that exists and has room. A SharedCluster whose
/// StatefulSet is still being created is provisioning, not a placement problem.
pub fn new_instance_problem(o: &Observed) -> Option<(&'static str, String)> {
    if o.deletion_requested || o.status.serving.is_some() {
        return None;
    }
    let tier = o.status.tier.unwrap_or(o.spec.tier);
    if tier != Tier::Shared {
        return None;
    }
    if o.shared.cluster.name.is_empty() {
        return Some((
            reasons::SHARED_CLUSTER_NOT_FOUND,
            "the instance names no SharedCluster (spec.shared.clusterRef) and the operator has \
             no --default-shared-cluster; set one of them"
                .into(),
        ));
    }
    room_problem(&o.shared).or_else(|| terms_problem(o, &o.shared))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::plan::SharedCapacity;
    use tiermq_crd::ClusterKind;

    fn cluster(name: &str) -> ClusterRef {
        ClusterRef {
            kind: ClusterKind::Shared,
            name: name.into(),
            namespace: "ops".into(),
        }
    }

    fn observed(tier: &str, shared: ClusterObservation) -> Observed {
        let spec =
            serde_json::from_value(serde_json::json!({"series": "Subscription", "tier": tier}))
                .unwrap();
        Observed {
            generation: 4,
            deletion_requested: false,
            spec,
            status: Default::default(),
            shared,
            dedicated: ClusterObservation::absent(ClusterRef {
                kind: ClusterKind::Dedicated,
                name: "orders-dedicated".into(),
                namespace: "team-a".into(),
            }),
            service_routes: Vec::new(),
            conversions: Default::default(),
        }
    }

    #[test]
    fn a_new_shared_instance_needs_an_existing_cluster_with_room() {
        let unnamed = ClusterObservation::absent(cluster(""));
        assert_eq!(
            new_instance_problem(&observed("Shared", unnamed.clone()))
                .unwrap()
                .0,
            reasons::SHARED_CLUSTER_NOT_FOUND
        );
        let absent = ClusterObservation::absent(cluster("main"));
        assert_eq!(
            new_instance_problem(&observed("Shared", absent.clone()))
                .unwrap()
                .0,
            reasons::SHARED_CLUSTER_NOT_FOUND
        );
        let mut full = absent.clone();
        full.capacity = Some(SharedCapacity {
            instance_count: 2,
            max_instances: 2,
            counts_this_instance: false,
        });
        let (reason, msg) = new_instance_problem(&observed("Shared", full.clone())).unwrap();
        assert_eq!(reason, reasons::NO_CAPACITY);
        assert!(msg.contains("2/2"), "{msg}");
        let mut room = full.clone();
        room.capacity = Some(SharedCapacity {
            instance_count: 1,
            max_instances: 2,
            counts_this_instance: false,
        });
        assert_eq!(
            new_instance_problem(&observed("Shared", room.clone())),
            None
        );
        // The SharedCluster exists but its StatefulSet not yet: provisioning, no problem.
        assert!(!room.exists);
        assert_eq!(new_instance_problem(&observed("Dedicated", unnamed)), None);
    }
}
