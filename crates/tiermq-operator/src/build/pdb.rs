//! The cluster's PodDisruptionBudget: voluntary disruptions (node drains) take one broker at a
//! time. It exists for every replica count: with one replica `maxUnavailable: 1` still lets a
//! drain proceed, and apply never has to create or delete it when the cluster is resized.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{BrokerCluster, pdb_name};

/// The PodDisruptionBudget `<cluster>` allowing one broker pod down at a time.
pub fn build(c: &BrokerCluster) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: c.meta(pdb_name(&c.name)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(c.selector_labels()),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn pdb_allows_one_broker_down_for_any_size() {
        for replicas in [1, 3] {
            let mut c = dedicated();
            c.replicas = replicas;
            let pdb = build(&c);
            assert_eq!(pdb.metadata.name.as_deref(), Some("orders-dedicated"));
            assert_owned(&pdb.metadata, "RabbitMQInstance", "orders");
            let spec = pdb.spec.unwrap();
            assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
            assert_eq!(spec.min_available, None);
            assert_eq!(
                spec.selector.unwrap().match_labels,
                Some(c.selector_labels())
            );
        }
    }
}
