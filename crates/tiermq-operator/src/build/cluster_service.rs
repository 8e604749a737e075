//! The cluster's ClusterIP Service `<cluster>`: selects the broker pods; the operator reaches the
//! cluster's management API through it (`http://<cluster>.<ns>.svc:15672`), and a broker
//! ServiceMonitor finds every broker's `/metrics` through its `prometheus` port.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    AMQP_PORT, AMQPS_PORT, BrokerCluster, MANAGEMENT_PORT, MANAGEMENT_TLS_PORT, PORT_NAME_AMQP,
    PORT_NAME_AMQPS, PORT_NAME_MANAGEMENT, PORT_NAME_MANAGEMENT_TLS, PORT_NAME_PROMETHEUS,
    PROMETHEUS_PORT, cluster_service_name,
};

/// The ClusterIP Service `<cluster>` with the AMQP and management ports (and their TLS twins on
/// a cluster with `spec.tls`).
pub fn build(c: &BrokerCluster) -> Service {
    let port = |name: &str, port: i32| ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    };
    let mut ports = vec![
        port(PORT_NAME_AMQP, AMQP_PORT),
        port(PORT_NAME_MANAGEMENT, MANAGEMENT_PORT),
        port(PORT_NAME_PROMETHEUS, PROMETHEUS_PORT),
    ];
    if c.tls_secret.is_some() {
        ports.push(port(PORT_NAME_AMQPS, AMQPS_PORT));
        ports.push(port(PORT_NAME_MANAGEMENT_TLS, MANAGEMENT_TLS_PORT));
    }
    Service {
        metadata: c.meta(cluster_service_name(&c.name)),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(c.selector_labels()),
            ports: Some(ports),
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
    fn cluster_service_exposes_amqp_management_and_prometheus_of_ready_pods() {
        let c = shared();
        let svc = build(&c);
        assert_eq!(svc.metadata.name.as_deref(), Some("main"));
        assert_eq!(svc.metadata.namespace.as_deref(), Some("tiermq"));
        assert_owned(&svc.metadata, "SharedCluster", "main");
        let spec = svc.spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        assert_eq!(
            spec.cluster_ip, None,
            "a ClusterIP is allocated, not headless"
        );
        assert_eq!(spec.selector, Some(c.selector_labels()));
        assert_eq!(spec.publish_not_ready_addresses, None);
        let ports = spec.ports.unwrap();
        assert_eq!(ports.len(), 3);
        assert_eq!(
            (ports[0].name.as_deref(), ports[0].port),
            (Some("amqp"), 5672)
        );
        assert_eq!(
            (ports[1].name.as_deref(), ports[1].port),
            (Some("management"), 15672)
        );
        assert_eq!(
            ports[1].target_port,
            Some(IntOrString::String("management".into()))
        );
        assert_eq!(
            (ports[2].name.as_deref(), ports[2].port),
            (Some("prometheus"), 15692)
        );
    }

    #[test]
    fn a_tls_cluster_service_adds_amqps_and_management_tls() {
        let mut c = shared();
        c.tls_secret = Some("main-tls".into());
        let ports = build(&c).spec.unwrap().ports.unwrap();
        let named: Vec<(&str, i32)> = ports
            .iter()
            .map(|p| (p.name.as_deref().unwrap(), p.port))
            .collect();
        assert_eq!(
            named,
            [
                ("amqp", 5672),
                ("management", 15672),
                ("prometheus", 15692),
                ("amqps", 5671),
                ("management-tls", 15671)
            ]
        );
    }
}
