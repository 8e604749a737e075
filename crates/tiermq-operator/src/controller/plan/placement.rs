//! Placement on a SharedCluster, the one rule for both ways onto one: a new shared instance
//! ([`new_instance_problem`]) and a downgrade (the gate in `idle`). The SharedCluster must exist
//! and have room; an instance already placed or migrating there counts as having room.

use tiermq_crd::conditions::reasons;
use tiermq_crd::{ClusterRef, Tier};

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
    room_problem(&o.shared)
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
