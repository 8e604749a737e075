//! The instance's client Service `<instance>`: the one endpoint clients use on either tier.
//!
//! The operator routes it by writing EndpointSlices (see [`super::endpoint_slice`]), to one
//! serving cluster or, during the dual phases, to both. While it routes to exactly one cluster in
//! the instance's own namespace (always the case on the dedicated tier), the Service also selects
//! that cluster's pods, so Kubernetes' EndpointSlice controller keeps the addresses current even
//! while the operator is not running (a broker pod that comes back with a new IP stays
//! reachable). A Service cannot select pods in another namespace: a SharedCluster elsewhere is
//! reached through the operator's slices only.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tiermq_crd::RabbitMQInstance;

use super::{
    AMQP_PORT, AMQPS_PORT, BuildError, InstanceTarget, PORT_NAME_AMQP, PORT_NAME_AMQPS,
    instance_service_name,
};

/// The client Service `<instance>` with the AMQP port and the spec's Service type; it selects the
/// pods of cluster `select` when given (see the module docs), else it has no selector. With
/// `tls` (a cluster it routes to has `spec.tls`) it also has the AMQPS port 5671, on the same
/// host: clients move to TLS without a new endpoint.
pub fn build(
    instance: &RabbitMQInstance,
    select: Option<&str>,
    tls: bool,
) -> Result<Service, BuildError> {
    let target = InstanceTarget::of(instance)?;
    // The names tie these ports to the EndpointSlices' ports.
    let port = |name: &str, port: i32| ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    };
    let mut ports = vec![port(PORT_NAME_AMQP, AMQP_PORT)];
    if tls {
        ports.push(port(PORT_NAME_AMQPS, AMQPS_PORT));
    }
    Ok(Service {
        metadata: target.meta(instance_service_name(&target.name), &[]),
        spec: Some(ServiceSpec {
            type_: Some(instance.spec.access.service_type.as_str().into()),
            selector: select.map(super::pod_selector),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use tiermq_crd::ServiceType;

    #[test]
    fn client_service_has_no_selector_and_the_requested_type() {
        let mut i = instance("orders", "team-a");
        let svc = build(&i, None, false).unwrap();
        assert_eq!(svc.metadata.name.as_deref(), Some("orders"));
        assert_eq!(svc.metadata.namespace.as_deref(), Some("team-a"));
        assert_owned(&svc.metadata, "RabbitMQInstance", "orders");
        assert_eq!(
            svc.metadata.labels.as_ref().unwrap()["tiermq.io/instance"],
            "orders"
        );
        let spec = svc.spec.unwrap();
        assert_eq!(spec.selector, None);
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        let port = &spec.ports.unwrap()[0];
        assert_eq!((port.name.as_deref(), port.port), (Some("amqp"), 5672));
        assert_eq!(port.target_port, Some(IntOrString::Int(5672)));

        i.spec.access.service_type = ServiceType::LoadBalancer;
        let spec = build(&i, None, false).unwrap().spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
    }

    #[test]
    fn a_service_routing_to_one_local_cluster_selects_exactly_its_pods() {
        let i = instance("orders", "team-a");
        let spec = build(&i, Some("orders-dedicated"), false)
            .unwrap()
            .spec
            .unwrap();
        let selector = spec.selector.unwrap();
        assert_eq!(selector, super::super::pod_selector("orders-dedicated"));
        assert_eq!(selector["tiermq.io/cluster"], "orders-dedicated");
        // The port is the same either way: slices and selector resolve to the broker's 5672.
        let port = &spec.ports.unwrap()[0];
        assert_eq!(port.target_port, Some(IntOrString::Int(5672)));
    }

    #[test]
    fn a_service_routing_to_a_tls_cluster_also_offers_amqps_on_the_same_host() {
        let i = instance("orders", "team-a");
        let ports = build(&i, Some("orders-dedicated"), true)
            .unwrap()
            .spec
            .unwrap()
            .ports
            .unwrap();
        let named: Vec<(&str, i32)> = ports
            .iter()
            .map(|p| (p.name.as_deref().unwrap(), p.port))
            .collect();
        assert_eq!(named, [("amqp", 5672), ("amqps", 5671)]);
        assert_eq!(ports[1].target_port, Some(IntOrString::Int(5671)));
    }
}
