//! Shared helpers of the broker integration tests: real nodes from the testkit, admin clients,
//! and a real AMQP client (lapin) with publisher confirms and manual acks.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tiermq_broker::steps::{DrainCriteria, Tenant};
use tiermq_broker::{
    ClientOptions, ClusterEndpoint, ManagementClient, RetryPolicy, Secret, generate_password,
    model::VhostLimits,
};
use tiermq_testkit::{Credentials, RabbitNode};

/// An AMQP argument table.
pub fn args(pairs: &[(&str, lapin::types::AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

/// Tests in one binary run one at a time: each starts real nodes on a 2-core machine.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// For the test nodes' 500 ms statistics interval and 1 s sample buckets: readings 2.5 s apart.
pub fn criteria() -> DrainCriteria {
    DrainCriteria::for_broker(
        Duration::from_millis(tiermq_testkit::TEST_STATS_INTERVAL_MS),
        Duration::from_secs(tiermq_testkit::TEST_SAMPLE_INCREMENT_SECS),
    )
}

pub fn quick_retry() -> ClientOptions {
    ClientOptions {
        retry: RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
        },
        ..ClientOptions::default()
    }
}

pub fn admin(node: &RabbitNode, cluster: &str) -> ManagementClient {
    let a = node.admin();
    ManagementClient::with_options(
        ClusterEndpoint {
            cluster: cluster.into(),
            url: node.management_url(),
            username: a.username.clone(),
            password: Secret::new(a.password.clone()),
        },
        quick_retry(),
    )
    .unwrap()
}

pub fn tenant(vhost: &str, user: &str) -> Tenant {
    Tenant {
        vhost: vhost.into(),
        user: user.into(),
        password: generate_password(),
        limits: VhostLimits::default(),
    }
}

pub fn tenant_uri(node: &RabbitNode, t: &Tenant) -> String {
    node.amqp_url(
        &Credentials::new(t.user.clone(), t.password.expose()),
        &t.vhost,
    )
}

pub async fn connect(uri: &str, name: &str) -> Connection {
    Connection::connect(
        uri,
        ConnectionProperties::default().with_connection_name(name.into()),
    )
    .await
    .unwrap_or_else(|e| panic!("AMQP connect {name}: {e}"))
}

pub async fn confirm_channel(conn: &Connection) -> Channel {
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch
}

/// Publishes persistent messages `ids` (payload = id as decimal) to `queue` through the default
/// exchange, in batches, and checks that the broker confirmed every one.
pub async fn publish_confirmed(ch: &Channel, queue: &str, ids: std::ops::Range<u64>) {
    let props = BasicProperties::default().with_delivery_mode(2);
    let mut pending = Vec::with_capacity(1000);
    for id in ids {
        let confirm = ch
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                id.to_string().as_bytes(),
                props.clone(),
            )
            .await
            .expect("publish");
        pending.push(confirm);
        if pending.len() == 1000 {
            for c in pending.drain(..) {
                assert!(
                    c.await.expect("confirm").is_ack(),
                    "broker nacked a message"
                );
            }
        }
    }
    for c in pending {
        assert!(
            c.await.expect("confirm").is_ack(),
            "broker nacked a message"
        );
    }
}

/// Consumes from `queue` with manual acks until `expected` distinct ids arrived or `idle` passes
/// without a delivery. Returns how often each id was seen.
pub async fn consume_ids(
    conn: &Connection,
    queue: &str,
    expected: usize,
    idle: Duration,
) -> HashMap<u64, u32> {
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(500, BasicQosOptions::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let mut seen: HashMap<u64, u32> = HashMap::new();
    while seen.len() < expected {
        match tokio::time::timeout(idle, consumer.next()).await {
            Ok(Some(Ok(d))) => {
                let id: u64 = std::str::from_utf8(&d.data).unwrap().parse().unwrap();
                *seen.entry(id).or_default() += 1;
                d.ack(BasicAckOptions::default()).await.expect("ack");
            }
            Ok(Some(Err(e))) => panic!("consumer failed: {e}"),
            Ok(None) | Err(_) => break,
        }
    }
    let _ = ch.close(200, "done".into()).await;
    seen
}

/// Sum of the queues' message counts as the broker's AMQP side sees them right now (passive
/// declare: exact, not from statistics). Ready messages only.
pub async fn ready_now(conn: &Connection, queue: &str) -> u32 {
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("passive declare");
    let _ = ch.close(200, "done".into()).await;
    q.message_count()
}

/// Polls `check` every 200 ms until it returns `Some`, or panics with `what` after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
