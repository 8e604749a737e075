//! Migration steps against real nodes: exact topology copy, idempotent and resumable tenant and
//! copy steps, write revocation, connections closed with a reason, federation.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ExchangeBindOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, ExchangeKind};
use serde_json::json;
use tiermq_broker::model::{Definitions, Permissions, Policy, ShovelSpec, VhostLimits};
use tiermq_broker::steps::{self, copy_topology, ensure_tenant, missing_objects, tenant_topology};
use tiermq_broker::{ManagementClient, Secret};
use tiermq_testkit::{BrokerRuntime, test_each_runtime};

fn policy(vhost: &str, name: &str, pattern: &str, def: serde_json::Value, priority: i64) -> Policy {
    Policy {
        name: name.into(),
        vhost: vhost.into(),
        pattern: pattern.into(),
        apply_to: "queues".into(),
        definition: def.as_object().unwrap().clone(),
        priority,
    }
}

/// Exchanges of several kinds and arguments, classic and quorum queues with arguments,
/// queue and exchange-to-exchange bindings with arguments, and policies.
async fn build_topology(
    node: &tiermq_testkit::RabbitNode,
    c: &ManagementClient,
    t: &steps::Tenant,
) {
    let conn = connect(&tenant_uri(node, t), "topology").await;
    let ch = conn.create_channel().await.unwrap();
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.exchange_declare(
        "events".into(),
        ExchangeKind::Topic,
        durable,
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.exchange_declare(
        "audit".into(),
        ExchangeKind::Fanout,
        durable,
        args(&[("alternate-exchange", AMQPValue::LongString("events".into()))]),
    )
    .await
    .unwrap();
    ch.exchange_declare(
        "by-header".into(),
        ExchangeKind::Headers,
        durable,
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.exchange_declare(
        "inner".into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions {
            durable: true,
            internal: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let q = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(
        "orders".into(),
        q,
        args(&[
            ("x-max-length", AMQPValue::LongInt(10_000)),
            ("x-message-ttl", AMQPValue::LongInt(3_600_000)),
            (
                "x-dead-letter-exchange",
                AMQPValue::LongString("audit".into()),
            ),
        ]),
    )
    .await
    .unwrap();
    ch.queue_declare(
        "payments".into(),
        q,
        args(&[
            ("x-queue-type", AMQPValue::LongString("quorum".into())),
            ("x-delivery-limit", AMQPValue::LongInt(5)),
        ]),
    )
    .await
    .unwrap();
    ch.queue_declare(
        "lazy log".into(),
        q,
        args(&[("x-queue-mode", AMQPValue::LongString("lazy".into()))]),
    )
    .await
    .unwrap();
    ch.queue_bind(
        "orders".into(),
        "events".into(),
        "order.*".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        "payments".into(),
        "events".into(),
        "payment.#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        "lazy log".into(),
        "audit".into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        "payments".into(),
        "by-header".into(),
        "".into(),
        QueueBindOptions::default(),
        args(&[
            ("x-match", AMQPValue::LongString("all".into())),
            ("kind", AMQPValue::LongString("refund".into())),
        ]),
    )
    .await
    .unwrap();
    ch.exchange_bind(
        "audit".into(),
        "events".into(),
        "#".into(),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    conn.close(200, "built".into()).await.unwrap();
    c.put_policy(
        &t.vhost,
        &policy(
            &t.vhost,
            "lazy-cap",
            "^lazy",
            json!({"max-length-bytes": 1_000_000}),
            3,
        ),
    )
    .await
    .unwrap();
    c.put_policy(
        &t.vhost,
        &policy(
            &t.vhost,
            "orders-limit",
            "^orders$",
            json!({"overflow": "reject-publish"}),
            1,
        ),
    )
    .await
    .unwrap();
}

test_each_runtime!(topology_copy_is_exact_idempotent_and_resumable);
async fn topology_copy_is_exact_idempotent_and_resumable(runtime: BrokerRuntime) {
    let _serial = SERIAL.lock().await;
    let nodes = tiermq_testkit::start_nodes_on(runtime, 2).await.unwrap();
    let (src, dst) = (
        admin(&nodes[0], "shared/test"),
        admin(&nodes[1], "dedicated/shop"),
    );
    let mut t = tenant("shop", "shop-user");
    t.limits = VhostLimits {
        max_connections: Some(50),
        max_queues: Some(20),
    };

    // ensure_tenant interrupted after its first call (only the vhost exists), then rerun, then
    // run again: the same complete end state.
    dst.put_vhost(&t.vhost).await.unwrap();
    ensure_tenant(&dst, &t).await.unwrap();
    let state = |c: ManagementClient, t: steps::Tenant| async move {
        (
            c.get_vhost(&t.vhost).await.unwrap(),
            c.get_user(&t.user).await.unwrap(),
            c.get_permissions(&t.vhost, &t.user).await.unwrap(),
            c.get_vhost_limits(&t.vhost).await.unwrap(),
        )
    };
    let first = state(dst.clone(), t.clone()).await;
    ensure_tenant(&dst, &t).await.unwrap();
    assert_eq!(state(dst.clone(), t.clone()).await, first);
    assert_eq!(first.2, Some(Permissions::full()));
    assert_eq!(first.3, t.limits);
    ensure_tenant(&src, &t).await.unwrap();

    build_topology(&nodes[0], &src, &t).await;
    // Things tiermq manages itself must not travel.
    src.put_policy(
        &t.vhost,
        &policy(
            &t.vhost,
            "tiermq-federation",
            "^none$",
            json!({"max-length": 1}),
            -5,
        ),
    )
    .await
    .unwrap();
    let shovel = ShovelSpec {
        src_uri: Secret::new(format!("amqp:///{}", t.vhost)),
        src_queue: "orders".into(),
        dest_uri: Secret::new(tenant_uri(&nodes[1], &t)),
        dest_queue: "orders".into(),
        ack_mode: "on-confirm".into(),
        src_delete_after: None,
        prefetch: None,
    };
    src.put_shovel(&t.vhost, "tiermq-drain-orders", &shovel)
        .await
        .unwrap();
    src.delete_shovel(&t.vhost, "tiermq-drain-orders")
        .await
        .unwrap();

    let want = tenant_topology(src.export_definitions(&t.vhost).await.unwrap());
    assert_eq!(
        (
            want.exchanges.len(),
            want.queues.len(),
            want.bindings.len(),
            want.policies.len()
        ),
        (4, 3, 5, 2)
    );

    // A copy that crashed halfway: half the queues and none of the bindings arrived.
    let partial = Definitions {
        exchanges: want.exchanges[..2].to_vec(),
        queues: want.queues[..1].to_vec(),
        ..Default::default()
    };
    dst.import_definitions(&t.vhost, &partial).await.unwrap();

    let copied = copy_topology(&src, &t.vhost, &dst, &t.vhost).await.unwrap();
    assert_eq!(
        (
            copied.exchanges,
            copied.queues,
            copied.bindings,
            copied.policies
        ),
        (4, 3, 5, 2)
    );
    let have = tenant_topology(dst.export_definitions(&t.vhost).await.unwrap());
    assert!(
        missing_objects(&want, &have).is_empty(),
        "{:?}",
        missing_objects(&want, &have)
    );
    assert!(
        missing_objects(&have, &want).is_empty(),
        "extra objects on the destination: {:?}",
        missing_objects(&have, &want)
    );
    assert!(
        !have
            .policies
            .iter()
            .any(|p| p["name"] == "tiermq-federation")
    );

    // Run again: nothing changes.
    copy_topology(&src, &t.vhost, &dst, &t.vhost).await.unwrap();
    assert_eq!(
        tenant_topology(dst.export_definitions(&t.vhost).await.unwrap()),
        have
    );

    // The copied queues are real: quorum stays quorum, arguments and policies apply.
    let payments = dst.get_queue(&t.vhost, "payments").await.unwrap().unwrap();
    assert_eq!(payments.queue_type.as_deref(), Some("quorum"));
    let orders = dst.get_queue(&t.vhost, "orders").await.unwrap().unwrap();
    assert_eq!(orders.arguments["x-dead-letter-exchange"], "audit");
    // The queue's policy shows with its next statistics emission.
    eventually(
        "the copied policy to apply",
        Duration::from_secs(10),
        || async {
            let q = dst.get_queue(&t.vhost, "orders").await.unwrap().unwrap();
            (q.policy.as_deref() == Some("orders-limit")).then_some(())
        },
    )
    .await;

    // A message published on the destination is routed by the copied bindings.
    let conn = connect(&tenant_uri(&nodes[1], &t), "route").await;
    let ch = confirm_channel(&conn).await;
    ch.basic_publish(
        "events".into(),
        "payment.card".into(),
        BasicPublishOptions::default(),
        b"7",
        BasicProperties::default(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let got = consume_ids(&conn, "payments", 1, Duration::from_secs(5)).await;
    assert_eq!(got.get(&7), Some(&1));
}

test_each_runtime!(
    revoked_writes_refuse_publishes_while_consumers_drain_and_closes_carry_the_reason
);
async fn revoked_writes_refuse_publishes_while_consumers_drain_and_closes_carry_the_reason(
    runtime: BrokerRuntime,
) {
    let _serial = SERIAL.lock().await;
    let node = tiermq_testkit::start_test_node_on(runtime).await.unwrap();
    let c = admin(&node, "shared/test");
    let t = tenant("billing", "billing-user");
    ensure_tenant(&c, &t).await.unwrap();
    let uri = tenant_uri(&node, &t);

    let publisher = connect(&uri, "publisher").await;
    let pub_ch = confirm_channel(&publisher).await;
    pub_ch
        .queue_declare(
            "invoices".into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    publish_confirmed(&pub_ch, "invoices", 0..200).await;
    let consumer = connect(&uri, "consumer").await;

    // A second publisher that keeps publishing across the revocation (every 100 ms).
    let busy = connect(&uri, "busy-publisher").await;
    let busy_ch = confirm_channel(&busy).await;
    let busy_task = tokio::spawn(async move {
        let mut acked_after_revoke = 0;
        for i in 0..15u64 {
            let r = async {
                busy_ch
                    .basic_publish(
                        "".into(),
                        "invoices".into(),
                        BasicPublishOptions::default(),
                        (5000 + i).to_string().as_bytes(),
                        BasicProperties::default(),
                    )
                    .await?
                    .await
            }
            .await;
            if i >= 5 && matches!(r, Ok(c) if c.is_ack()) {
                acked_after_revoke += 1;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        acked_after_revoke
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    let perms = steps::revoke_writes(&c, &t.vhost, &t.user).await.unwrap();
    // Read-only: no publishing and no topology changes, reads go on.
    assert_eq!(
        perms,
        Permissions {
            configure: "^$".into(),
            write: "^$".into(),
            read: ".*".into()
        }
    );
    assert_eq!(
        steps::revoke_writes(&c, &t.vhost, &t.user).await.unwrap(),
        perms,
        "second revoke: same state"
    );

    // RabbitMQ 3.10 fact the operator must know: a channel that never pauses keeps its cached
    // permission check, so its publishes still succeed after the revocation.
    let acked_after = busy_task.await.unwrap();
    assert_eq!(
        acked_after, 10,
        "a busy channel keeps publishing until it idles"
    );

    // The publisher channel that paused (it hibernates and drops its cache): its next publish
    // is refused with 403 ACCESS_REFUSED.
    let pub_conn_name = eventually(
        "the publisher connection in the API",
        Duration::from_secs(10),
        || async {
            c.list_connections(&t.vhost)
                .await
                .unwrap()
                .into_iter()
                .find(|x| x.client_name() == Some("publisher"))
                .map(|x| x.name)
        },
    )
    .await;
    eventually(
        "the publisher channel to go idle",
        Duration::from_secs(30),
        || async {
            c.list_channels(&t.vhost)
                .await
                .unwrap()
                .into_iter()
                .any(|ch| {
                    ch.connection_details
                        .as_ref()
                        .is_some_and(|d| d.name == pub_conn_name)
                        && ch.idle_since.is_some()
                })
                .then_some(())
        },
    )
    .await;
    let refused = async {
        pub_ch
            .basic_publish(
                "".into(),
                "invoices".into(),
                BasicPublishOptions::default(),
                b"200",
                BasicProperties::default(),
            )
            .await?
            .await
    }
    .await;
    let err = refused.expect_err("publish after revocation must fail");
    let text = err.to_string();
    assert!(text.contains("ACCESS_REFUSED"), "{text}");
    // A new channel is refused at once too.
    let fresh = confirm_channel(&consumer).await;
    let err = async {
        fresh
            .basic_publish(
                "".into(),
                "invoices".into(),
                BasicPublishOptions::default(),
                b"201",
                BasicProperties::default(),
            )
            .await?
            .await
    }
    .await
    .expect_err("a new channel cannot publish either");
    assert!(err.to_string().contains("ACCESS_REFUSED"), "{err}");

    // Consumers still drain the source: the 200 confirmed messages and the busy publisher's 15,
    // once each.
    let got = consume_ids(&consumer, "invoices", 215, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 215);
    assert!(got.values().all(|n| *n == 1));

    // Abort path: writes come back.
    steps::restore_writes(&c, &t.vhost, &t.user).await.unwrap();
    let ch = confirm_channel(&consumer).await;
    publish_confirmed(&ch, "invoices", 1000..1001).await;

    // Close every client connection of the tenant with a reason the clients receive.
    let watchers = [connect(&uri, "app-1").await, connect(&uri, "app-2").await];
    let mut events: Vec<_> = watchers
        .iter()
        .map(|w| Box::pin(w.events_listener()))
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await; // connections show up in the API with the stats
    let reason = "tiermq: instance moved to its dedicated cluster, reconnect";
    let mut closed = 0;
    for _ in 0..20 {
        closed += steps::close_connections(&c, &t.vhost, Some(&t.user), reason)
            .await
            .unwrap();
        if closed >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        closed >= 5,
        "closed {closed}: publisher, busy publisher, consumer, app-1, app-2"
    );
    for (i, ev) in events.iter_mut().enumerate() {
        let text = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match ev.next().await {
                    Some(lapin::Event::Error(e)) => return e.to_string(),
                    Some(_) => continue,
                    None => return String::from("<events ended without an error>"),
                }
            }
        })
        .await
        .expect("the client hears about the close");
        assert!(text.contains(reason), "client {i} got: {text}");
        assert!(text.contains("CONNECTION_FORCED"), "client {i} got: {text}");
    }
    // The connection list comes from the statistics, which can still show a connection that
    // is closing (seen once on 4.0 in CI): within a few emissions nothing is left to close.
    let mut left = usize::MAX;
    for _ in 0..10 {
        left = steps::close_connections(&c, &t.vhost, Some(&t.user), reason)
            .await
            .unwrap();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(left, 0, "nothing left to close");

    // Destination only: no reads either.
    steps::revoke_all(&c, &t.vhost, &t.user).await.unwrap();
    assert_eq!(
        c.get_permissions(&t.vhost, &t.user).await.unwrap(),
        Some(Permissions::none())
    );
    let late = connect(&uri, "late").await;
    let ch = late.create_channel().await.unwrap();
    let err = ch
        .basic_consume(
            "invoices".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect_err("reads are revoked");
    assert!(
        err.to_string().contains("ACCESS_REFUSED") || err.to_string().contains("access"),
        "{err}"
    );
}

test_each_runtime!(federation_lets_consumers_on_either_cluster_see_every_message);
async fn federation_lets_consumers_on_either_cluster_see_every_message(runtime: BrokerRuntime) {
    let _serial = SERIAL.lock().await;
    let nodes = tiermq_testkit::start_nodes_on(runtime, 2).await.unwrap();
    let (a, b) = (
        admin(&nodes[0], "shared/test"),
        admin(&nodes[1], "dedicated/fed"),
    );
    let t = tenant("fed", "fed-user");
    ensure_tenant(&a, &t).await.unwrap();
    ensure_tenant(&b, &t).await.unwrap();
    let (uri_a, uri_b) = (tenant_uri(&nodes[0], &t), tenant_uri(&nodes[1], &t));
    let conn_a = connect(&uri_a, "fed-a").await;
    let ch = conn_a.create_channel().await.unwrap();
    ch.queue_declare(
        "tasks".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    a.put_policy(
        &t.vhost,
        &policy(
            &t.vhost,
            "cap",
            "^tasks$",
            json!({"max-length": 100_000}),
            2,
        ),
    )
    .await
    .unwrap();
    copy_topology(&a, &t.vhost, &b, &t.vhost).await.unwrap();

    // Each cluster federates from the other.
    let on_b = steps::ensure_queue_federation(&b, &t.vhost, &Secret::new(uri_a.clone()))
        .await
        .unwrap();
    let on_b_again = steps::ensure_queue_federation(&b, &t.vhost, &Secret::new(uri_a.clone()))
        .await
        .unwrap();
    assert_eq!(on_b.policies, on_b_again.policies);
    assert_eq!(
        on_b.policies,
        ["tiermq-federation", "tiermq-federation-cap"]
    );
    steps::ensure_queue_federation(&a, &t.vhost, &Secret::new(uri_b.clone()))
        .await
        .unwrap();

    // The tenant's own policy still shapes the queue under federation.
    eventually(
        "the federated twin of the tenant policy to apply",
        Duration::from_secs(10),
        || async {
            let q = b.get_queue(&t.vhost, "tasks").await.unwrap().unwrap();
            (q.policy.as_deref() == Some("tiermq-federation-cap")).then_some(())
        },
    )
    .await;

    // Messages published on A reach a consumer on B, and the other way round.
    let pub_a = confirm_channel(&conn_a).await;
    publish_confirmed(&pub_a, "tasks", 0..300).await;
    let conn_b = connect(&uri_b, "fed-b").await;
    let pub_b = confirm_channel(&conn_b).await;
    publish_confirmed(&pub_b, "tasks", 300..400).await;
    let got_b = consume_ids(&conn_b, "tasks", 400, Duration::from_secs(15)).await;
    assert_eq!(
        got_b.len(),
        400,
        "a consumer on B sees messages published on both clusters"
    );
    publish_confirmed(&pub_b, "tasks", 400..450).await;
    let got_a = consume_ids(&conn_a, "tasks", 50, Duration::from_secs(15)).await;
    assert_eq!(
        got_a.len(),
        50,
        "a consumer on A sees messages published on B"
    );

    steps::remove_queue_federation(&b, &t.vhost).await.unwrap();
    steps::remove_queue_federation(&b, &t.vhost).await.unwrap();
    let names: Vec<String> = b
        .list_policies(&t.vhost)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["cap"]);
    assert!(
        b.list_federation_upstreams(&t.vhost)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A migration may cross releases (a 3.10 shared cluster, a dedicated cluster on a 4.0 image, or
/// the other way round): the topology copy must carry everything both ways and its read-back
/// must not mistake 4.0's explicit `x-queue-type: classic` for a different queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_copies_between_3_10_and_4_0_both_ways() {
    let _serial = SERIAL.lock().await;
    let (old, new) = tokio::join!(
        tiermq_testkit::start_test_node_on(BrokerRuntime::Host310),
        tiermq_testkit::start_test_node_on(BrokerRuntime::Debian13V40)
    );
    let (old, new) = (old.unwrap(), new.unwrap());
    let (c_old, c_new) = (admin(&old, "shared/v3.10"), admin(&new, "dedicated/v4.0"));
    for (src_node, src, dst, vhost) in
        [(&old, &c_old, &c_new, "up"), (&new, &c_new, &c_old, "down")]
    {
        let t = tenant(vhost, &format!("{vhost}-user"));
        ensure_tenant(src, &t).await.unwrap();
        ensure_tenant(dst, &t).await.unwrap();
        build_topology(src_node, src, &t).await;
        let copied = copy_topology(src, &t.vhost, dst, &t.vhost)
            .await
            .unwrap_or_else(|e| panic!("{} -> {}: {e}", src.cluster(), dst.cluster()));
        assert_eq!(
            (
                copied.exchanges,
                copied.queues,
                copied.bindings,
                copied.policies
            ),
            (4, 3, 5, 2)
        );
        // Queue types survive: quorum stays quorum, classic stays classic.
        for (name, kind) in [
            ("payments", "quorum"),
            ("orders", "classic"),
            ("lazy log", "classic"),
        ] {
            let q = dst.get_queue(&t.vhost, name).await.unwrap().unwrap();
            assert_eq!(
                q.queue_type.as_deref(),
                Some(kind),
                "{name} on {}",
                dst.cluster()
            );
        }
        // Copying again changes nothing and still verifies.
        copy_topology(src, &t.vhost, dst, &t.vhost).await.unwrap();
    }
}

/// A 3.10 tenant moving onto 4.0 (checked on the real brokers): 4.0 refuses classic mirroring
/// policy keys, so they leave the copied policies (a policy of nothing else is not copied) and
/// the copy says so; `x-queue-mode` and `x-queue-version: 1`, which 4.0 accepts, ignores and
/// still checks for equivalence, stay, so clients declaring them again are not refused; queues
/// keep their type although the destination vhost defaulted to quorum, and the vhost gets the
/// source's default queue type back, so a client declaring a queue without a type gets a classic
/// queue as on 3.10. A 4.0 destination that does not permit transient non-exclusive queues
/// skips them on import without an error: the copy fails and names them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_3_10_tenant_is_translated_for_4_0_and_refused_transient_queues_are_named() {
    let _serial = SERIAL.lock().await;
    let (old, new, strict) = tokio::join!(
        tiermq_testkit::start_test_node_on(BrokerRuntime::Host310),
        tiermq_testkit::start_test_node_on(BrokerRuntime::Debian13V40),
        tiermq_testkit::start_nodes_with(BrokerRuntime::Debian13V40, 1, |_, cfg| {
            cfg.config
                .push_str("deprecated_features.permit.transient_nonexcl_queues = false\n");
        })
    );
    let (old, new, strict) = (old.unwrap(), new.unwrap(), strict.unwrap().pop().unwrap());
    let (src, dst, refusing) = (
        admin(&old, "shared/v3.10"),
        admin(&new, "dedicated/v4.0"),
        admin(&strict, "shared/v4.0-strict"),
    );
    let t = tenant("move", "move-user");
    for c in [&src, &dst, &refusing] {
        ensure_tenant(c, &t).await.unwrap();
    }
    // The 4.0 cluster's vhost defaults to quorum queues (its operator's choice).
    dst.set_default_queue_type(&t.vhost, "quorum")
        .await
        .unwrap();

    let conn = connect(&tenant_uri(&old, &t), "v3").await;
    let ch = conn.create_channel().await.unwrap();
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let lazy_args = || {
        args(&[
            ("x-queue-mode", AMQPValue::LongString("lazy".into())),
            ("x-queue-version", AMQPValue::LongInt(1)),
        ])
    };
    ch.queue_declare("plain".into(), durable, FieldTable::default())
        .await
        .unwrap();
    ch.queue_declare("ha.lazy".into(), durable, lazy_args())
        .await
        .unwrap();
    ch.queue_declare(
        "votes".into(),
        durable,
        args(&[("x-queue-type", AMQPValue::LongString("quorum".into()))]),
    )
    .await
    .unwrap();
    for (name, pattern, def) in [
        (
            "ha-all",
            "^ha",
            json!({"ha-mode": "all", "ha-sync-mode": "automatic"}),
        ),
        (
            "capped",
            "^plain$",
            json!({"ha-mode": "exactly", "ha-params": 2, "max-length": 1000}),
        ),
    ] {
        src.put_policy(&t.vhost, &policy(&t.vhost, name, pattern, def, 1))
            .await
            .unwrap();
    }
    // The same policy is refused by 4.0 as it is.
    let refused = dst
        .put_policy(
            &t.vhost,
            &policy(&t.vhost, "ha-all", "^ha", json!({"ha-mode": "all"}), 1),
        )
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("not recognised policy settings"),
        "{refused}"
    );

    let copied = copy_topology(&src, &t.vhost, &dst, &t.vhost).await.unwrap();
    println!("3.10 -> 4.0 translated: {:#?}", copied.translated);
    assert_eq!((copied.queues, copied.policies), (3, 1));
    let said = copied.translated.join("\n");
    assert!(
        said.contains("default queue type of the vhost set to \"classic\""),
        "{said}"
    );
    assert!(said.contains("policy \"ha-all\" not copied"), "{said}");
    assert!(
        said.contains("policy \"capped\": ha-mode, ha-params dropped"),
        "{said}"
    );
    let policies = dst.list_policies(&t.vhost).await.unwrap();
    assert_eq!(policies.len(), 1);
    assert_eq!(policies[0].name, "capped");
    assert_eq!(
        serde_json::Value::Object(policies[0].definition.clone()),
        json!({"max-length": 1000})
    );
    for (name, kind) in [
        ("plain", "classic"),
        ("ha.lazy", "classic"),
        ("votes", "quorum"),
    ] {
        let q = dst.get_queue(&t.vhost, name).await.unwrap().unwrap();
        assert_eq!(q.queue_type.as_deref(), Some(kind), "{name}");
    }
    let lazy = dst.get_queue(&t.vhost, "ha.lazy").await.unwrap().unwrap();
    assert_eq!(lazy.arguments["x-queue-mode"], "lazy");
    assert_eq!(lazy.arguments["x-queue-version"], 1);
    assert_eq!(
        dst.get_vhost(&t.vhost)
            .await
            .unwrap()
            .unwrap()
            .default_queue_type
            .as_deref(),
        Some("classic")
    );

    // Clients on 4.0 declare as they did on 3.10: nothing is refused, a new untyped queue is
    // classic.
    let conn4 = connect(&tenant_uri(&new, &t), "v4").await;
    let ch4 = conn4.create_channel().await.unwrap();
    ch4.queue_declare("ha.lazy".into(), durable, lazy_args())
        .await
        .expect("x-queue-mode and x-queue-version as before");
    ch4.queue_declare("plain".into(), durable, FieldTable::default())
        .await
        .expect("an untyped declare of a classic queue");
    ch4.queue_declare("fresh".into(), durable, FieldTable::default())
        .await
        .unwrap();
    let fresh = dst.get_queue(&t.vhost, "fresh").await.unwrap().unwrap();
    assert_eq!(fresh.queue_type.as_deref(), Some("classic"));
    ch4.queue_delete("fresh".into(), Default::default())
        .await
        .unwrap();

    // Copying again changes nothing and says only what it dropped.
    let again = copy_topology(&src, &t.vhost, &dst, &t.vhost).await.unwrap();
    assert_eq!(again.translated.len(), 2, "{:?}", again.translated);

    // A transient non-exclusive queue: a 4.0 cluster that does not permit them takes the rest
    // of the import without an error and leaves it out; the copy names it and says why.
    ch.queue_declare(
        "scratch".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    copy_topology(&src, &t.vhost, &dst, &t.vhost)
        .await
        .expect("4.0 permits transient non-exclusive queues by default");
    let err = copy_topology(&src, &t.vhost, &refusing, &t.vhost)
        .await
        .unwrap_err()
        .to_string();
    println!("refusing destination: {err}");
    assert!(
        err.contains("transient")
            && err.contains("\"scratch\"")
            && err.contains("transient_nonexcl_queues"),
        "{err}"
    );
    assert!(
        refusing
            .get_queue(&t.vhost, "scratch")
            .await
            .unwrap()
            .is_none()
            && refusing
                .get_queue(&t.vhost, "plain")
                .await
                .unwrap()
                .is_some(),
        "the import skipped only the transient queue"
    );
    let _ = conn.close(200, "done".into()).await;
    let _ = conn4.close(200, "done".into()).await;
}

/// Definitions imported through one node of a two-node cluster are read back through the other
/// at once (the operator's management client reaches whichever node the Service picks): 20
/// rounds, each importing a fresh exchange, queue, binding and policy and exporting right after,
/// with no object missing on the other node, on 4.0 (Mnesia, 4.0's default metadata store;
/// Khepri is experimental and off in 4.0). Measured the same on 3.10 (2026-12: 20 rounds in
/// 0.4 s, none late); only 4.0 runs here, to keep `make test` short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_definitions_are_visible_on_the_other_4_0_node_at_once() {
    let runtime = BrokerRuntime::Debian13V40;
    const COOKIE: &str = "TIERMQVISIBILITYCOOKIE";
    let _serial = SERIAL.lock().await;
    let password = tiermq_broker::generate_password();
    let pw = password.expose().to_string();
    let nodes = tiermq_testkit::start_nodes_with(runtime, 2, |_, cfg| {
        cfg.erlang_cookie = COOKIE.into();
        cfg.config = cfg
            .config
            .lines()
            .map(|l| {
                if l.starts_with("default_pass") {
                    format!("default_pass = {pw}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        cfg.admin = tiermq_testkit::Credentials::new("admin", pw.clone());
    })
    .await
    .unwrap();
    nodes[1].join_cluster(&nodes[0]).await.unwrap();
    nodes[1]
        .wait_ready(tiermq_testkit::READY_TIMEOUT)
        .await
        .unwrap();
    let (a, b) = (admin(&nodes[0], "node-a"), admin(&nodes[1], "node-b"));
    let t = tenant("visible", "visible-user");
    ensure_tenant(&a, &t).await.unwrap();
    let mut late = Vec::new();
    let started = std::time::Instant::now();
    for i in 0..20 {
        let want: Definitions = serde_json::from_value(json!({
            "exchanges": [{"name": format!("x{i}"), "type": "topic", "durable": true,
                           "auto_delete": false, "internal": false, "arguments": {}}],
            "queues": [{"name": format!("q{i}"), "durable": true, "auto_delete": false,
                        "arguments": {"x-queue-type": "classic"}}],
            "bindings": [{"source": format!("x{i}"), "destination": format!("q{i}"),
                          "destination_type": "queue", "routing_key": "k", "arguments": {}}],
            "policies": [{"name": format!("p{i}"), "pattern": format!("^q{i}$"),
                          "apply-to": "queues", "definition": {"max-length": 10}, "priority": 0}]
        }))
        .unwrap();
        a.import_definitions(&t.vhost, &want).await.unwrap();
        let have = tenant_topology(b.export_definitions(&t.vhost).await.unwrap());
        let missing = missing_objects(&want, &have);
        if !missing.is_empty() {
            late.push((i, missing));
        }
    }
    println!(
        "[{runtime}] 20 imports on node a read back on node b at once in {:.1}s; late: {late:?}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        late.is_empty(),
        "{runtime}: objects not yet visible: {late:?}"
    );
}

/// Publishes one message (payload `id`) to `queue`; `Ok(())` once the broker confirmed it.
async fn publish_one(ch: &lapin::Channel, queue: &str, id: u64) -> Result<(), String> {
    let confirm = ch
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            id.to_string().as_bytes(),
            BasicProperties::default(),
        )
        .await
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    if confirm.is_ack() {
        Ok(())
    } else {
        Err("nacked".into())
    }
}

/// The operator revokes write permission at the cutover. A channel checks it once and caches the
/// answer; the cache goes when the channel process hibernates, after a pause in its work. This
/// measures, per release, how long busy channels go on publishing after the revocation and how
/// long a pause ends that.
async fn a_revoked_channel_publishes_on_its_cached_permission_until_it_pauses(
    runtime: BrokerRuntime,
) {
    const PAUSES_MS: [u64; 6] = [250, 1_000, 1_500, 2_000, 3_000, 11_000];
    const NEVER_PAUSING_FOR: Duration = Duration::from_secs(12);
    let _serial = SERIAL.lock().await;
    let node = tiermq_testkit::start_test_node_on(runtime).await.unwrap();
    let c = admin(&node, "shared/test");
    let t = tenant("cache", "cache-user");
    ensure_tenant(&c, &t).await.unwrap();
    let conn = connect(&tenant_uri(&node, &t), "cached").await;
    let setup = conn.create_channel().await.unwrap();
    setup
        .queue_declare(
            "cached".into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();

    // Every channel publishes every 50 ms from well before the revocation.
    let revoke_at = tokio::time::Instant::now() + Duration::from_millis(1500);
    let mut pausing = Vec::new();
    for (i, pause) in PAUSES_MS.iter().enumerate() {
        let ch = confirm_channel(&conn).await;
        let pause = Duration::from_millis(*pause);
        pausing.push(tokio::spawn(async move {
            let busy_until = revoke_at + Duration::from_secs(1);
            let mut id = i as u64 * 100_000;
            while tokio::time::Instant::now() < busy_until {
                if let Err(e) = publish_one(&ch, "cached", id).await {
                    return Err(format!("refused while busy: {e}"));
                }
                id += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(pause).await;
            Ok(publish_one(&ch, "cached", id).await)
        }));
    }
    let never = confirm_channel(&conn).await;
    let never_pausing = tokio::spawn(async move {
        let (mut acked_after, mut id) = (0u32, 900_000u64);
        let until = revoke_at + NEVER_PAUSING_FOR;
        while tokio::time::Instant::now() < until {
            let before = tokio::time::Instant::now();
            match publish_one(&never, "cached", id).await {
                Ok(()) if before > revoke_at => acked_after += 1,
                Ok(()) => {}
                Err(e) => return Err((acked_after, e)),
            }
            id += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(acked_after)
    });
    tokio::time::sleep_until(revoke_at).await;
    steps::revoke_writes(&c, &t.vhost, &t.user).await.unwrap();

    let mut after_pause = Vec::new();
    for (pause, task) in PAUSES_MS.iter().zip(pausing) {
        let result = task
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{runtime}: channel pausing {pause} ms: {e}"));
        println!(
            "[{runtime}] busy 1 s after the revocation, then a {pause} ms pause: next publish {}",
            match &result {
                Ok(()) => "confirmed".to_string(),
                Err(e) => format!("refused ({e})"),
            }
        );
        after_pause.push(result);
    }
    let never = never_pausing.await.unwrap();
    println!(
        "[{runtime}] a channel publishing every 50 ms for {NEVER_PAUSING_FOR:?} after the revocation: {never:?}"
    );
    // Both releases: a busy channel is never refused, however long after the revocation.
    let acked_after = never.unwrap_or_else(|(n, e)| {
        panic!("{runtime}: a busy channel was refused after {n} confirmed publishes: {e}")
    });
    assert!(
        acked_after >= 100,
        "{runtime}: only {acked_after} publishes"
    );
    // Measured the same on 3.10.8 and 4.0.5 (2026-12): pauses of 0.25 and 1 s keep the cache,
    // 1.5 s and longer end it (the channel hibernates after about a second of idleness, later
    // ones back off up to 10 s, so only the long pause is asserted).
    assert_eq!(
        after_pause[0],
        Ok(()),
        "{runtime}: a 250 ms pause keeps the cached permission"
    );
    let last = after_pause.last().unwrap();
    assert!(
        matches!(last, Err(e) if e.contains("ACCESS_REFUSED")),
        "{runtime}: after an 11 s pause: {last:?}"
    );
}
test_each_runtime!(a_revoked_channel_publishes_on_its_cached_permission_until_it_pauses);

/// Declares durable classic queues through `uri`.
async fn declare_durable(uri: &str, queues: &[&str]) {
    let conn = connect(uri, "declare").await;
    let ch = conn.create_channel().await.unwrap();
    for q in queues {
        ch.queue_declare(
            (*q).into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    let _ = conn.close(200, "done".into()).await;
}

/// Opens `name` and declares an exclusive server-named queue bound to fanout `events`, consuming
/// from it: a pub/sub subscriber.
async fn subscriber(uri: &str, name: &str) -> (lapin::Connection, String) {
    let conn = connect(uri, name).await;
    let ch = conn.create_channel().await.unwrap();
    ch.exchange_declare(
        "events".into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let qname = q.name().to_string();
    ch.queue_bind(
        qname.as_str().into(),
        "events".into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let consumer = ch
        .basic_consume(
            qname.as_str().into(),
            "sub".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    tokio::spawn(async move {
        let mut c = consumer;
        while c.next().await.is_some() {}
    });
    (conn, qname)
}

test_each_runtime!(connections_are_told_apart_as_publishers_subscribers_and_consumers);
async fn connections_are_told_apart_as_publishers_subscribers_and_consumers(
    runtime: BrokerRuntime,
) {
    let _serial = SERIAL.lock().await;
    let node = tiermq_testkit::start_test_node_on(runtime).await.unwrap();
    let c = admin(&node, "shared/clients");
    let t = tenant("clients", "clients-user");
    ensure_tenant(&c, &t).await.unwrap();
    let uri = tenant_uri(&node, &t);
    let (_sub, sub_queue) = subscriber(&uri, "sub").await;
    // A consumer of a durable queue.
    let worker = connect(&uri, "worker").await;
    let wch = worker.create_channel().await.unwrap();
    wch.queue_declare(
        "work".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let _wc = wch
        .basic_consume(
            "work".into(),
            "w".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    // A publisher that keeps publishing (bounded: 20 s at most).
    let publisher = connect(&uri, "publisher").await;
    let pch = publisher.create_channel().await.unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let pub_task = tokio::spawn(async move {
        let until = tokio::time::Instant::now() + Duration::from_secs(20);
        while !flag.load(std::sync::atomic::Ordering::Relaxed)
            && tokio::time::Instant::now() < until
        {
            let _ = pch
                .basic_publish(
                    "events".into(),
                    "".into(),
                    BasicPublishOptions::default(),
                    b"x",
                    BasicProperties::default(),
                )
                .await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let names = |c: &ManagementClient| {
        let c = c.clone();
        async move {
            let conns = c.list_connections("clients").await.unwrap();
            let by_name = |set: &std::collections::BTreeSet<String>| -> Vec<String> {
                let mut v: Vec<String> = conns
                    .iter()
                    .filter(|x| set.contains(&x.name))
                    .filter_map(|x| x.client_name().map(str::to_string))
                    .collect();
                v.sort();
                v
            };
            let cl = steps::list_clients(&c, "clients", "clients-user")
                .await
                .unwrap();
            (
                by_name(&cl.publishers),
                by_name(&cl.subscribers),
                by_name(&cl.consumers),
                cl.subscriber_queues,
            )
        }
    };
    let (publishers, subscribers, consumers, queues) = eventually(
        "the statistics to show every client",
        Duration::from_secs(20),
        || async {
            let got = names(&c).await;
            (got.0 == ["publisher"] && got.1 == ["sub"] && got.2.len() == 2).then_some(got)
        },
    )
    .await;
    assert_eq!(publishers, ["publisher"]);
    assert_eq!(subscribers, ["sub"]);
    assert_eq!(consumers, ["sub", "worker"]);
    assert!(queues.contains(&sub_queue), "{queues:?}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    pub_task.await.unwrap();
}

test_each_runtime!(the_queues_are_asked_directly_where_the_statistics_lag);
async fn the_queues_are_asked_directly_where_the_statistics_lag(runtime: BrokerRuntime) {
    let _serial = SERIAL.lock().await;
    // Statistics every 30 s: the management API's counts trail far behind.
    let nodes = tiermq_testkit::start_nodes_with(runtime, 1, |_, cfg| {
        cfg.config = cfg.config.replace(
            &format!(
                "collect_statistics_interval = {}",
                tiermq_testkit::TEST_STATS_INTERVAL_MS
            ),
            "collect_statistics_interval = 30000",
        );
    })
    .await
    .unwrap();
    let node = &nodes[0];
    let c = admin(node, "shared/live");
    let t = tenant("live", "live-user");
    ensure_tenant(&c, &t).await.unwrap();
    let conn = connect(&tenant_uri(node, &t), "producer").await;
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
    // Wait until the statistics know the queue, empty.
    eventually(
        "first statistics of the queue",
        Duration::from_secs(60),
        || async {
            let q = c.list_queues("live").await.unwrap();
            q.iter()
                .any(|q| q.name == "orders" && q.messages_ready == Some(0))
                .then_some(())
        },
    )
    .await;
    publish_confirmed(&ch, "orders", 0..25).await;
    let stale = c.list_queues("live").await.unwrap();
    let live = steps::live_counts(&c, "live", &["orders".into(), "gone".into()])
        .await
        .unwrap();
    println!(
        "{runtime:?}: statistics say {:?} ready, the queue says {:?}",
        stale[0].messages_ready, live[0].ready
    );
    assert_eq!(live.len(), 1, "a queue that does not exist is left out");
    assert_eq!(live[0].ready, Some(25));
    // Revoked writes, all connections closed, the statistics still show the queue empty: the
    // retirement asks the queues and refuses.
    steps::revoke_writes(&c, "live", "live-user").await.unwrap();
    drop(ch);
    let _ = conn.close(200, "done".into()).await;
    let lax = steps::DrainCriteria {
        required_samples: 1,
        min_spacing: Duration::ZERO,
    };
    let stats_now = c.list_queues("live").await.unwrap()[0].messages_ready;
    let refused = steps::retire_tenant(&c, "live", "live-user", &lax).await;
    match refused {
        Err(e) => assert!(
            e.to_string().contains("orders"),
            "names the queue: {e} (statistics showed {stats_now:?})"
        ),
        Ok(o) => panic!("retired a vhost holding 25 messages: {o:?}"),
    }
    assert!(
        c.get_vhost("live").await.unwrap().is_some(),
        "nothing deleted"
    );
}

test_each_runtime!(read_only_is_an_exact_triple_that_also_gives_reads_back);
async fn read_only_is_an_exact_triple_that_also_gives_reads_back(runtime: BrokerRuntime) {
    let _serial = SERIAL.lock().await;
    let node = tiermq_testkit::start_test_node_on(runtime).await.unwrap();
    let c = admin(&node, "shared/perms");
    let t = tenant("perms", "perms-user");
    ensure_tenant(&c, &t).await.unwrap();
    steps::revoke_all(&c, "perms", "perms-user").await.unwrap();
    let p = steps::revoke_writes(&c, "perms", "perms-user")
        .await
        .unwrap();
    assert_eq!(p, Permissions::read_only());
    assert_eq!(
        c.get_permissions("perms", "perms-user").await.unwrap(),
        Some(Permissions::read_only()),
        "reads are back after revoke_all"
    );
    // The read-only tenant consumes, but neither publishes nor declares.
    let conn = connect(&tenant_uri(&node, &t), "reader").await;
    let ch = conn.create_channel().await.unwrap();
    let declare = ch
        .queue_declare(
            "new".into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    assert!(
        declare
            .err()
            .is_some_and(|e| e.to_string().contains("ACCESS_REFUSED")),
        "topology is frozen"
    );
    let p = steps::restore_writes(&c, "perms", "perms-user")
        .await
        .unwrap();
    assert_eq!(p, Permissions::full());
    // A read-only tenant from the start (a conversion's destination before the cutover).
    let d = tenant("dest", "dest-user");
    steps::ensure_tenant_with(&c, &d, &Permissions::read_only())
        .await
        .unwrap();
    assert_eq!(
        c.get_permissions("dest", "dest-user").await.unwrap(),
        Some(Permissions::read_only())
    );
    let admin_user = c.endpoint().username.clone();
    assert_eq!(
        c.get_permissions("dest", &admin_user).await.unwrap(),
        Some(Permissions::full()),
        "the administrator can ask the queues there"
    );
}

test_each_runtime!(the_tenants_own_shovels_move_to_the_destination_and_stop_on_the_source);
async fn the_tenants_own_shovels_move_to_the_destination_and_stop_on_the_source(
    runtime: BrokerRuntime,
) {
    let _serial = SERIAL.lock().await;
    let nodes = tiermq_testkit::start_nodes_on(runtime, 2).await.unwrap();
    let (src, dst) = (
        admin(&nodes[0], "shared/a"),
        admin(&nodes[1], "dedicated/b"),
    );
    let t = tenant("ingest", "ingest-user");
    ensure_tenant(&src, &t).await.unwrap();
    ensure_tenant(&dst, &t).await.unwrap();
    for n in &nodes {
        declare_durable(&tenant_uri(n, &t), &["inbox", "work"]).await;
    }
    // The tenant's own shovel inside its vhost: inbox -> work (local URIs follow the cluster).
    src.put_shovel(
        "ingest",
        "tenant-ingest",
        &ShovelSpec {
            src_uri: Secret::new("amqp:///ingest"),
            src_queue: "inbox".into(),
            dest_uri: Secret::new("amqp:///ingest"),
            dest_queue: "work".into(),
            ack_mode: "on-confirm".into(),
            src_delete_after: None,
            prefetch: Some(100),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        steps::copy_transfers(&src, &dst, "ingest").await.unwrap(),
        1
    );
    // Idempotent.
    assert_eq!(
        steps::copy_transfers(&src, &dst, "ingest").await.unwrap(),
        1
    );
    let names = |c: &ManagementClient| {
        let c = c.clone();
        async move {
            c.list_shovels("ingest")
                .await
                .unwrap()
                .into_iter()
                .map(|p| p.name)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(names(&dst).await, ["tenant-ingest"]);
    assert_eq!(steps::stop_transfers(&src, "ingest").await.unwrap(), 1);
    assert!(names(&src).await.is_empty());
    assert_eq!(steps::stop_transfers(&src, "ingest").await.unwrap(), 0);
    // Ingestion goes on on the destination.
    let conn = connect(&tenant_uri(&nodes[1], &t), "feeder").await;
    let ch = confirm_channel(&conn).await;
    publish_confirmed(&ch, "inbox", 0..20).await;
    eventually(
        "the copied shovel to move",
        Duration::from_secs(30),
        || async { (ready_now(&conn, "work").await == 20).then_some(()) },
    )
    .await;
}

test_each_runtime!(a_drain_shovel_that_terminated_is_declared_again);
async fn a_drain_shovel_that_terminated_is_declared_again(runtime: BrokerRuntime) {
    let _serial = SERIAL.lock().await;
    let nodes = tiermq_testkit::start_nodes_on(runtime, 2).await.unwrap();
    let (src, dst) = (
        admin(&nodes[0], "shared/a"),
        admin(&nodes[1], "dedicated/b"),
    );
    let t = tenant("drain", "drain-user");
    ensure_tenant(&src, &t).await.unwrap();
    ensure_tenant(&dst, &t).await.unwrap();
    declare_durable(&tenant_uri(&nodes[1], &t), &["orders"]).await;
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
    // A shovel whose destination password is wrong (as after a password change): it cannot
    // log in, and RabbitMQ keeps restarting it with the same wrong URI.
    let mut stale = t.clone();
    stale.password = Secret::new("not-the-password");
    let bad_uri = Secret::new(tenant_uri(&nodes[1], &stale));
    let backlog = eventually(
        "statistics of the backlog",
        Duration::from_secs(20),
        || async {
            let b = steps::measure_backlog(&src, "drain").await.unwrap();
            (b.total_ready == 50).then_some(b)
        },
    )
    .await;
    steps::ensure_drain_shovels(&src, &backlog, &bad_uri)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!(
        "{runtime:?}: shovel with a stale password: {:?}",
        src.shovel_status("drain").await.unwrap()
    );
    assert_eq!(
        ready_now(&conn, "orders").await,
        50,
        "nothing moved with the stale password"
    );
    // Before the fix, a declared shovel was skipped whatever its state: nothing ever moved.
    let good_uri = Secret::new(tenant_uri(&nodes[1], &t));
    let again = steps::ensure_drain_shovels(&src, &backlog, &good_uri)
        .await
        .unwrap();
    assert_eq!(again.started, ["orders"], "{again:?}");
    let dconn = connect(&tenant_uri(&nodes[1], &t), "checker").await;
    eventually("the backlog to arrive", Duration::from_secs(60), || async {
        (ready_now(&dconn, "orders").await == 50).then_some(())
    })
    .await;
}
