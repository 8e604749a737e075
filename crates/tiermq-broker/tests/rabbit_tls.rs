//! One TLS node, on each RabbitMQ release: AMQPS answers an AMQP handshake through TLS verified
//! against the test CA, and the management client speaks HTTPS only to a certificate that CA
//! signed for the name it expects — a foreign CA or another name is refused.
//!
//! Two TLS nodes of one CA: a drain shovel moves a backlog over AMQPS with the URI the operator
//! declares (`cacertfile` where a pod mounts its TLS Secret, `verify_peer`, the peer's Service
//! name as SNI), and moves nothing while that name is not the one the peer's certificate
//! carries — the link verifies, not only encrypts.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::{
    SERIAL, admin, confirm_channel, connect, eventually, publish_confirmed, quick_retry, ready_now,
    tenant, tenant_uri,
};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use tiermq_broker::steps::{self, ensure_tenant};
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
            also_at: None,
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

/// Where the operator mounts a TLS cluster's Secret in its broker pods.
const POD_TLS_DIR: &str = "/etc/rabbitmq-tls";

test_each_runtime!(a_drain_shovel_crosses_to_another_tls_node_over_verified_amqps);
async fn a_drain_shovel_crosses_to_another_tls_node_over_verified_amqps(runtime: BrokerRuntime) {
    let _serial = SERIAL.lock().await;
    let ca = TestCa::new("tiermq test CA").unwrap();
    let names = ["a.tiermq.svc", "b.tiermq.svc"];
    let certs: Vec<_> = names.iter().map(|n| ca.issue(&[n], &[]).unwrap()).collect();
    let ca_pem = ca.ca_pem().to_string();
    // Each node sees its own TLS files at the pod path, as in a broker pod (its own mount).
    let nodes = tiermq_testkit::start_nodes_with(runtime, 2, |i, c| {
        c.tls = Some(NodeTls {
            ca_pem: ca_pem.clone(),
            cert_pem: certs[i].cert_pem.clone(),
            key_pem: certs[i].key_pem.clone(),
            amqps_port: 5671,
            management_port: 15671,
            extra_lines: String::new(),
            also_at: Some(POD_TLS_DIR.into()),
        });
    })
    .await
    .unwrap();
    let (src, dst) = (admin(&nodes[0], "tls/a"), admin(&nodes[1], "tls/b"));
    let t = tenant("drain", "drain-user");
    ensure_tenant(&src, &t).await.unwrap();
    ensure_tenant(&dst, &t).await.unwrap();
    // The queue exists on both sides, as after the operator's topology copy.
    let dconn = connect(&tenant_uri(&nodes[1], &t), "checker").await;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let dch = dconn.create_channel().await.unwrap();
    dch.queue_declare("orders".into(), durable, FieldTable::default())
        .await
        .unwrap();
    let conn = connect(&tenant_uri(&nodes[0], &t), "producer").await;
    let ch = confirm_channel(&conn).await;
    ch.queue_declare(
        "orders".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    publish_confirmed(&ch, "orders", 0..50).await;
    let backlog = eventually(
        "statistics of the backlog",
        Duration::from_secs(20),
        || async {
            let b = steps::measure_backlog(&src, "drain").await.unwrap();
            (b.total_ready == 50).then_some(b)
        },
    )
    .await;
    let amqps = |server_name: &str| {
        let query =
            steps::verified_tls_query(&format!("{POD_TLS_DIR}/ca.crt"), server_name).unwrap();
        Secret::new(format!(
            "amqps://{}:{}@{}:5671/{}?{query}",
            t.user,
            t.password.expose(),
            nodes[1].config().ip,
            t.vhost
        ))
    };

    // The peer's certificate names b.tiermq.svc: a link expecting another name moves nothing.
    steps::ensure_drain_shovels(&src, &backlog, &amqps("c.tiermq.svc"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = src.shovel_status("drain").await.unwrap();
    println!("{runtime:?}: shovel expecting another name: {status:?}");
    assert!(
        status.iter().all(|s| s.state.as_deref() != Some("running")),
        "{status:?}"
    );
    assert_eq!(
        ready_now(&conn, "orders").await,
        50,
        "nothing moved to a peer whose certificate names someone else"
    );
    assert_eq!(ready_now(&dconn, "orders").await, 0);

    // Under the right name (and the same CA file) the backlog crosses over AMQPS.
    let again = steps::ensure_drain_shovels(&src, &backlog, &amqps(names[1]))
        .await
        .unwrap();
    assert_eq!(again.started, ["orders"], "{again:?}");
    eventually("the backlog to arrive", Duration::from_secs(60), || async {
        (ready_now(&dconn, "orders").await == 50).then_some(())
    })
    .await;
    assert_eq!(ready_now(&conn, "orders").await, 0);
}
