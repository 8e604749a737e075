//! One EndpointSlice per cluster serving an instance: `<instance>.<cluster>`, labelled with the
//! instance's Service name so the Service routes to it. Rewiring the Service during a conversion
//! means writing or deleting these slices.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use kube::ResourceExt;
use tiermq_crd::RabbitMQInstance;

use super::{
    AMQP_PORT, AMQPS_PORT, BuildError, InstanceTarget, LABEL_CLUSTER, MANAGED_BY, PORT_NAME_AMQP,
    PORT_NAME_AMQPS, endpoint_slice_name, instance_service_name,
};

/// The label that binds a slice to its Service.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// The label that tells the EndpointSlice controller to leave a slice alone.
pub const LABEL_ENDPOINTSLICE_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";

/// A broker pod as observed: its IP and whether it is ready.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodEndpoint {
    /// The pod's name.
    pub pod_name: String,
    /// The pod's namespace (the cluster's; a shared cluster may live elsewhere than the instance).
    pub namespace: String,
    /// The pod's IPv4 address.
    pub ip: Ipv4Addr,
    /// The pod's `Ready` condition is `True`.
    pub ready: bool,
}

/// The endpoints of a cluster's pods as observed: pods with an IPv4 address that are not being
/// deleted, ready when their `Ready` condition is `True`.
pub fn pod_endpoints(pods: &[Pod]) -> Vec<PodEndpoint> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            let status = p.status.as_ref()?;
            let ip: Ipv4Addr = status.pod_ip.as_deref()?.parse().ok()?;
            let ready = status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            Some(PodEndpoint {
                pod_name: p.name_any(),
                namespace: p.namespace().unwrap_or_default(),
                ip,
                ready,
            })
        })
        .collect()
}

/// The slice that sends the instance's clients to `cluster`'s pods. An empty `pods` gives a slice
/// without endpoints (no new connections go there). A TLS cluster's slice (`tls`) also carries
/// the `amqps` port, so the Service's AMQPS port reaches only clusters that serve it.
pub fn build(
    instance: &RabbitMQInstance,
    cluster: &str,
    pods: &[PodEndpoint],
    tls: bool,
) -> Result<EndpointSlice, BuildError> {
    let port = |name: &str, port: i32| EndpointPort {
        name: Some(name.into()),
        port: Some(port),
        protocol: Some("TCP".into()),
        ..EndpointPort::default()
    };
    let mut ports = vec![port(PORT_NAME_AMQP, AMQP_PORT)];
    if tls {
        ports.push(port(PORT_NAME_AMQPS, AMQPS_PORT));
    }
    let target = InstanceTarget::of(instance)?;
    let service = instance_service_name(&target.name);
    let mut sorted: Vec<&PodEndpoint> = pods.iter().collect();
    // A stable order keeps the object unchanged between reconciles.
    sorted.sort_by(|a, b| a.pod_name.cmp(&b.pod_name));
    Ok(EndpointSlice {
        metadata: target.meta(
            endpoint_slice_name(&target.name, cluster),
            &[
                (LABEL_SERVICE_NAME, &service),
                (LABEL_ENDPOINTSLICE_MANAGED_BY, MANAGED_BY),
                (LABEL_CLUSTER, cluster),
            ],
        ),
        address_type: "IPv4".into(),
        endpoints: sorted
            .into_iter()
            .map(|p| Endpoint {
                addresses: vec![p.ip.to_string()],
                conditions: Some(EndpointConditions {
                    ready: Some(p.ready),
                    serving: Some(p.ready),
                    terminating: Some(false),
                }),
                target_ref: Some(ObjectReference {
                    kind: Some("Pod".into()),
                    name: Some(p.pod_name.clone()),
                    namespace: Some(p.namespace.clone()),
                    ..ObjectReference::default()
                }),
                ..Endpoint::default()
            })
            .collect(),
        ports: Some(ports),
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    fn pod(name: &str, ip: [u8; 4], ready: bool) -> PodEndpoint {
        PodEndpoint {
            pod_name: name.into(),
            namespace: "tiermq".into(),
            ip: Ipv4Addr::from(ip),
            ready,
        }
    }

    #[test]
    fn slice_routes_the_instance_service_to_the_cluster_pods() {
        let i = instance("orders", "team-a");
        let pods = [
            pod("main-1", [127, 30, 0, 2], false),
            pod("main-0", [127, 30, 0, 1], true),
        ];
        let s = build(&i, "main", &pods, false).unwrap();
        assert_eq!(s.metadata.name.as_deref(), Some("orders.main"));
        assert_eq!(s.metadata.namespace.as_deref(), Some("team-a"));
        assert_owned(&s.metadata, "RabbitMQInstance", "orders");
        let labels = s.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["kubernetes.io/service-name"], "orders");
        assert_eq!(
            labels["endpointslice.kubernetes.io/managed-by"],
            "tiermq-operator"
        );
        assert_eq!(labels["tiermq.io/cluster"], "main");
        assert_eq!(s.address_type, "IPv4");
        let got: Vec<(&str, Option<bool>, &str)> = s
            .endpoints
            .iter()
            .map(|e| {
                (
                    e.addresses[0].as_str(),
                    e.conditions.as_ref().unwrap().ready,
                    e.target_ref.as_ref().unwrap().name.as_deref().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("127.30.0.1", Some(true), "main-0"),
                ("127.30.0.2", Some(false), "main-1")
            ]
        );
        let port = &s.ports.as_ref().unwrap()[0];
        assert_eq!(
            (port.name.as_deref(), port.port),
            (Some("amqp"), Some(5672))
        );
    }

    fn observed_pod(name: &str, ip: Option<&str>, ready: &str, deleting: bool) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name, "namespace": "tiermq",
                "deletionTimestamp": if deleting { Some("2026-01-01T00:00:00Z") } else { None },
            },
            "status": {
                "podIP": ip,
                "conditions": [{"type": "Ready", "status": ready}],
            }
        }))
        .unwrap()
    }

    #[test]
    fn pod_endpoints_take_ip_and_readiness_and_skip_pods_without_either() {
        let pods = [
            observed_pod("main-0", Some("127.30.0.1"), "True", false),
            observed_pod("main-1", Some("127.30.0.2"), "False", false),
            observed_pod("main-2", None, "False", false),
            observed_pod("main-3", Some("127.30.0.4"), "True", true),
        ];
        assert_eq!(
            pod_endpoints(&pods),
            [
                pod("main-0", [127, 30, 0, 1], true),
                pod("main-1", [127, 30, 0, 2], false)
            ]
        );
    }

    #[test]
    fn slice_without_pods_has_no_endpoints() {
        let i = instance("orders", "team-a");
        let s = build(&i, "orders-dedicated", &[], false).unwrap();
        assert_eq!(s.metadata.name.as_deref(), Some("orders.orders-dedicated"));
        assert!(s.endpoints.is_empty());
    }

    #[test]
    fn a_tls_clusters_slice_also_carries_amqps() {
        let i = instance("orders", "team-a");
        let ports = |tls| {
            build(&i, "orders-dedicated", &[], tls)
                .unwrap()
                .ports
                .unwrap()
                .into_iter()
                .map(|p| (p.name.unwrap(), p.port.unwrap()))
                .collect::<Vec<_>>()
        };
        assert_eq!(ports(false), [("amqp".to_string(), 5672)]);
        assert_eq!(
            ports(true),
            [("amqp".to_string(), 5672), ("amqps".to_string(), 5671)]
        );
    }
}
