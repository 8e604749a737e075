//! The cluster's headless Service: stable DNS names `<pod>.<cluster>-nodes.<ns>.svc` that the
//! Erlang node names and classic peer discovery rely on.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};

use super::{
    AMQP_PORT, BrokerCluster, DIST_PORT, EPMD_PORT, PORT_NAME_AMQP, PORT_NAME_DIST, PORT_NAME_EPMD,
    headless_service_name,
};

/// The headless Service `<cluster>-nodes` with the epmd, distribution and AMQP ports, publishing
/// not-ready pods so peers resolve each other while they start.
pub fn build(c: &BrokerCluster) -> Service {
    let port = |name: &str, port: i32| ServicePort {
        name: Some(name.into()),
        port,
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    };
    Service {
        metadata: c.meta(headless_service_name(&c.name)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(c.selector_labels()),
            // Peers must resolve each other while they start, before they are ready.
            publish_not_ready_addresses: Some(true),
            ports: Some(vec![
                port(PORT_NAME_EPMD, EPMD_PORT),
                port(PORT_NAME_DIST, DIST_PORT),
                port(PORT_NAME_AMQP, AMQP_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn headless_service_selects_the_pods_and_publishes_unready_peers() {
        let c = dedicated();
        let svc = build(&c);
        assert_eq!(svc.metadata.name.as_deref(), Some("orders-dedicated-nodes"));
        assert_owned(&svc.metadata, "RabbitMQInstance", "orders");
        let spec = svc.spec.unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.selector, Some(c.selector_labels()));
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        let ports: Vec<(String, i32)> = spec
            .ports
            .unwrap()
            .into_iter()
            .map(|p| (p.name.unwrap(), p.port))
            .collect();
        assert_eq!(
            ports,
            [
                ("epmd".into(), 4369),
                ("dist".into(), 25672),
                ("amqp".into(), 5672)
            ]
        );
    }
}
