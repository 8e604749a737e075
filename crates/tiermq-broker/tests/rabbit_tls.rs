//! One TLS node, on each RabbitMQ release: AMQPS answers an AMQP handshake through TLS verified
//! against the test CA, and the management client speaks HTTPS only to a certificate that CA
//! signed for the name it expects — a foreign CA or another name is refused.

mod common;

use std::net::{IpAddr, SocketAddr};

use common::{SERIAL, quick_retry};
use tiermq_broker::{ClientOptions, ClusterEndpoint, ManagementClient, Secret, ServerTls};
use tiermq_testkit::tls::TestCa;
use tiermq_testkit::{BrokerRuntime, NodeTls, RabbitNode, test_each_runtime};

/// The name the broker's certificate is issued for, as a cluster Service's DNS name would be.
const SERVER_NAME: &str = "main.tiermq.svc";

fn https_client(node: &RabbitNode, ca_pem: &str, server_name: &str) -> ManagementClient {
    let tls = node.config().tls.as_ref().unwrap();
    let a = node.admin();
    ManagementClient::with_options(
        ClusterEndpoint {
            cluster: "tls/one".into(),
            url: format!("https://{}:{}", node.config().ip, tls.management_port),
            username: a.username.clone(),
            password: Secret::new(a.password.clone()),
        },
        ClientOptions {
            tls: Some(ServerTls {
                ca_pem: ca_pem.as_bytes().to_vec(),
                server_name: server_name.into(),
            }),
            ..quick_retry()
        },
    )
    .unwrap()
}

async fn amqps_handshake(node: &RabbitNode, ca_pem: &str) -> Result<u8, String> {
    let addr = SocketAddr::new(
        IpAddr::V4(node.config().ip),
        node.config().tls.as_ref().unwrap().amqps_port,
    );
    tiermq_testkit::tls::amqps_handshake(addr, ca_pem, SERVER_NAME).await
}

test_each_runtime!(a_tls_node_serves_amqps_and_https_only_to_clients_trusting_its_ca);
async fn a_tls_node_serves_amqps_and_https_only_to_clients_trusting_its_ca(runtime: BrokerRuntime) {
    let _serial = SERIAL.lock().await;
    let ca = TestCa::new("tiermq test CA").unwrap();
    let cert = ca.issue(&[SERVER_NAME], &[]).unwrap();
    let ca_pem = ca.ca_pem().to_string();
    let mut nodes = tiermq_testkit::start_nodes_with(runtime, 1, |_, c| {
        c.tls = Some(NodeTls {
            ca_pem: ca_pem.clone(),
            cert_pem: cert.cert_pem.clone(),
            key_pem: cert.key_pem.clone(),
            amqps_port: 5671,
            management_port: 15671,
            extra_lines: String::new(),
        });
    })
    .await
    .unwrap();
    let node = nodes.pop().unwrap();

    // HTTPS, verified against the CA, under the name the certificate carries.
    let health = https_client(&node, &ca_pem, SERVER_NAME)
        .health()
        .await
        .unwrap();
    assert!(health.healthy(), "{health:?}");
    assert_eq!(health.nodes, 1);

    // A client trusting another CA, or expecting another name, gets no answer.
    let other = TestCa::new("another CA").unwrap();
    let foreign = https_client(&node, other.ca_pem(), SERVER_NAME)
        .health()
        .await
        .unwrap_err();
    assert!(
        foreign.to_string().to_lowercase().contains("certificate"),
        "{foreign}"
    );
    let misnamed = https_client(&node, &ca_pem, "other.tiermq.svc")
        .health()
        .await
        .unwrap_err();
    assert!(
        misnamed.to_string().to_lowercase().contains("certificate"),
        "{misnamed}"
    );

    // AMQPS: the broker answers the protocol header with Connection.Start (a method frame).
    assert_eq!(amqps_handshake(&node, &ca_pem).await, Ok(1));
    let refused = amqps_handshake(&node, other.ca_pem()).await.unwrap_err();
    assert!(refused.starts_with("TLS:"), "{refused}");

    // The plain listeners stay on beside the TLS ones.
    let plain = common::admin(&node, "tls/plain").health().await.unwrap();
    assert!(plain.healthy());
}
