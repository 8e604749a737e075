//! A SharedCluster's `spec.tenants`: which namespaces may place onto it, which Service types its
//! tenants may have, and which policy keys a downgrade copies onto it.

use std::collections::BTreeMap;

use tiermq_crd::conditions::{self, events, reasons};
use tiermq_crd::{MigrationPhase, ServiceType, TenantTerms, Tier};
use tiermq_operator::controller::plan::{
    EventType, Observed, Step, new_instance_problem, plan, tenancy_problem,
};

use crate::common::*;

fn terms(namespaces: &[&str], access: &[ServiceType]) -> TenantTerms {
    TenantTerms {
        namespaces: namespaces.iter().map(|n| n.to_string()).collect(),
        access_types: access.to_vec(),
        ..TenantTerms::default()
    }
}

/// A dedicated instance in service, flipped to Shared, the SharedCluster bound by `t`.
fn downgrade(t: TenantTerms) -> Observed {
    let mut o = stable_observed(Tier::Dedicated);
    o.spec.tier = Tier::Shared;
    o.shared.tenancy = Some(t);
    o
}

/// A new shared instance (nothing recorded yet) onto a SharedCluster bound by `t`.
fn new_shared(t: TenantTerms) -> Observed {
    let mut o = stable_observed(Tier::Shared);
    o.status = Default::default();
    o.service_routes.clear();
    o.shared.tenancy = Some(t);
    o
}

fn blocked(o: &Observed) -> (String, String) {
    let p = plan(o, t0());
    assert_eq!(p.phase, MigrationPhase::Blocked, "{:?}", step_names(&p));
    assert!(
        !step_names(&p).contains(&"CopyTopology"),
        "{:?}",
        step_names(&p)
    );
    let c = p.condition(conditions::CONVERSION_BLOCKED).unwrap();
    assert_eq!(c.status, "True");
    (c.reason.clone(), c.message.clone())
}

#[test]
fn the_default_terms_admit_every_namespace_and_cluster_ip_only() {
    let t = TenantTerms::default();
    assert!(t.admits_namespace(NS) && t.admits_namespace("anything"));
    assert!(t.admits_access(ServiceType::ClusterIP));
    assert!(!t.admits_access(ServiceType::LoadBalancer));
    assert!(!t.admits_access(ServiceType::NodePort));
    assert!(t.admits_policy_key("max-length") && !t.admits_policy_key("ha-mode"));
    // A downgrade under the default terms goes ahead.
    let p = plan(&downgrade(t), t0());
    assert_eq!(p.phase, MigrationPhase::PreparingDestination);
}

#[test]
fn a_downgrade_from_a_namespace_the_shared_cluster_does_not_take_is_held() {
    let (reason, msg) = blocked(&downgrade(terms(
        &["team-b", "team-c"],
        &[ServiceType::ClusterIP],
    )));
    assert_eq!(reason, reasons::NAMESPACE_NOT_ALLOWED);
    assert!(
        msg.contains("does not take instances of namespace \"team-a\"")
            && msg.contains("spec.tenants.namespaces: team-b, team-c"),
        "{msg}"
    );
    // Listing the namespace lets it go ahead.
    let p = plan(
        &downgrade(terms(&["team-b", NS], &[ServiceType::ClusterIP])),
        t0(),
    );
    assert_eq!(p.phase, MigrationPhase::PreparingDestination);
}

#[test]
fn a_load_balanced_dedicated_instance_cannot_downgrade_onto_brokers_that_forbid_it() {
    let mut o = downgrade(TenantTerms::default());
    o.spec.access.service_type = ServiceType::LoadBalancer;
    let (reason, msg) = blocked(&o);
    assert_eq!(reason, reasons::ACCESS_TYPE_NOT_ALLOWED);
    assert!(
        msg.contains("with a LoadBalancer Service (spec.tenants.accessTypes: ClusterIP)"),
        "{msg}"
    );
    o.shared.tenancy = Some(terms(
        &["*"],
        &[ServiceType::ClusterIP, ServiceType::LoadBalancer],
    ));
    assert_eq!(plan(&o, t0()).phase, MigrationPhase::PreparingDestination);
}

#[test]
fn a_new_instance_is_refused_placement_outside_the_terms() {
    let (reason, _) =
        new_instance_problem(&new_shared(terms(&["team-b"], &[ServiceType::ClusterIP])))
            .expect("namespace refused");
    assert_eq!(reason, reasons::NAMESPACE_NOT_ALLOWED);
    let mut o = new_shared(TenantTerms::default());
    o.spec.access.service_type = ServiceType::NodePort;
    let (reason, msg) = new_instance_problem(&o).expect("NodePort refused");
    assert_eq!(reason, reasons::ACCESS_TYPE_NOT_ALLOWED);
    assert!(msg.contains("NodePort"), "{msg}");
    o.spec.access.service_type = ServiceType::ClusterIP;
    assert_eq!(new_instance_problem(&o), None);
}

#[test]
fn a_shared_tenant_switching_to_a_load_balancer_is_refused_and_a_dedicated_one_is_not() {
    let mut o = stable_observed(Tier::Shared);
    o.shared.tenancy = Some(TenantTerms::default());
    assert_eq!(tenancy_problem(&o), None);
    o.spec.access.service_type = ServiceType::LoadBalancer;
    let (reason, _) = tenancy_problem(&o).expect("refused while shared brokers serve it");
    assert_eq!(reason, reasons::ACCESS_TYPE_NOT_ALLOWED);

    // Also while a conversion moves it off the shared brokers: they still serve it.
    let mut w = World::new(Tier::Shared);
    w.set_tier(Tier::Dedicated);
    for _ in 0..3 {
        w.reconcile();
    }
    let mut o = w.observe();
    assert!(
        o.status.migration.is_some(),
        "{:?}",
        o.status.migration_phase
    );
    o.shared.tenancy = Some(TenantTerms::default());
    o.spec.access.service_type = ServiceType::LoadBalancer;
    assert!(tenancy_problem(&o).is_some());

    // A dedicated instance may have any type: the shared brokers are not involved.
    let mut o = stable_observed(Tier::Dedicated);
    o.shared.tenancy = Some(TenantTerms::default());
    o.spec.access.service_type = ServiceType::LoadBalancer;
    assert_eq!(tenancy_problem(&o), None);
}

#[test]
fn namespaces_narrowed_later_do_not_evict_a_placed_tenant() {
    let mut o = stable_observed(Tier::Shared);
    o.shared.tenancy = Some(terms(&["team-b"], &[ServiceType::ClusterIP]));
    assert_eq!(tenancy_problem(&o), None);
    assert_eq!(new_instance_problem(&o), None);
    assert_eq!(plan(&o, t0()).phase, MigrationPhase::Stable);
}

#[test]
fn a_downgrade_copies_only_admitted_policy_keys_and_says_which_it_drops() {
    let mut o = downgrade(TenantTerms::default());
    let keys = BTreeMap::from([
        (
            "bounded".to_string(),
            vec!["ha-mode".to_string(), "max-length".to_string()],
        ),
        (
            "pinned".to_string(),
            vec!["queue-master-locator".to_string()],
        ),
    ]);
    if let Some(b) = o.dedicated.broker.as_mut()
        && let Some(t) = b.tenant.as_mut()
    {
        t.policy_keys = keys.clone();
        t.topology.insert("policy/bounded".into());
        t.topology.insert("policy/pinned".into());
    }
    let p = plan(&o, t0());
    assert_eq!(p.phase, MigrationPhase::PreparingDestination);
    let note = p
        .events
        .iter()
        .find(|e| e.reason == events::TRANSLATED_FOR_DESTINATION && e.type_ == EventType::Warning)
        .map(|e| e.note.clone())
        .expect("a Warning naming the dropped keys");
    assert!(
        note.contains("drops bounded (ha-mode), pinned (queue-master-locator)"),
        "{note}"
    );

    // Next pass: the destination tenant exists; the copy carries the allow-list.
    o.status = p.status.clone();
    let mut dst = tenant(tiermq_operator::controller::plan::Access::ReadOnly, None);
    dst.topology.insert("policy/bounded".into());
    o.shared.broker =
        Some(tiermq_operator::controller::plan::BrokerObservation { tenant: Some(dst) });
    let p = plan(&o, t0());
    let copy = p.steps.iter().find_map(|s| match s {
        Step::CopyTopology { policy_keys, .. } => Some(policy_keys.clone()),
        _ => None,
    });
    // The destination holds everything but `pinned`, which it never takes: in step, so the
    // conversion moves on to dual write without another copy.
    assert_eq!(copy, None, "{:?}", step_names(&p));
    assert_eq!(p.phase, MigrationPhase::DualWriteDualRead);

    // Without `bounded` it is out of step and the copy says what the destination admits.
    if let Some(b) = o.shared.broker.as_mut()
        && let Some(t) = b.tenant.as_mut()
    {
        t.topology.remove("policy/bounded");
    }
    let p = plan(&o, t0());
    assert_eq!(p.phase, MigrationPhase::PreparingDestination);
    let copy = p.steps.iter().find_map(|s| match s {
        Step::CopyTopology { policy_keys, .. } => Some(policy_keys.clone()),
        _ => None,
    });
    assert_eq!(copy, Some(Some(TenantTerms::default().policy_keys)));
}
