//! The management-API client against a real node: unusual names, limits, tenant isolation, and
//! bad input — each failure a clear typed error that changed nothing on the broker.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tiermq_broker::model::{Definitions, Permissions, ShovelSpec, VhostLimits};
use tiermq_broker::steps::ensure_tenant;
use tiermq_broker::{
    ClientOptions, ClusterEndpoint, ErrorKind, ManagementClient, RetryPolicy, Secret,
};
use tiermq_testkit::{BrokerRuntime, test_each_runtime};

test_each_runtime!(unusual_names_limits_and_health_round_trip);
async fn unusual_names_limits_and_health_round_trip(runtime: BrokerRuntime) {
    let _serial = SERIAL.lock().await;
    let node = tiermq_testkit::start_test_node_on(runtime).await.unwrap();
    let c = admin(&node, "test/one");

    let health = c.health().await.unwrap();
    assert!(health.healthy(), "{health:?}");
    let expected = match runtime {
        BrokerRuntime::Host310 => "3.10.8",
        BrokerRuntime::Debian13V40 => "4.0.5",
    };
    assert_eq!(health.version, expected, "{runtime}");
    assert_eq!(health.nodes, 1);

    // The default "/" vhost, a space, unicode with a slash, and URL metacharacters.
    for vhost in ["/", "my vhost", "ünïcødé/ümlaut", "100% ?#&+ odd"] {
        let mut t = tenant(vhost, &format!("user {vhost}"));
        t.limits = VhostLimits {
            max_connections: Some(7),
            max_queues: Some(3),
        };
        ensure_tenant(&c, &t)
            .await
            .unwrap_or_else(|e| panic!("{vhost:?}: {e}"));
        assert_eq!(c.get_vhost(vhost).await.unwrap().unwrap().name, vhost);
        assert_eq!(c.get_user(&t.user).await.unwrap().unwrap().name, t.user);
        assert_eq!(
            c.get_permissions(vhost, &t.user).await.unwrap(),
            Some(Permissions::full())
        );
        assert_eq!(c.get_vhost_limits(vhost).await.unwrap(), t.limits);

        // The tenant's credentials work over AMQP on exactly that vhost.
        let conn = connect(&tenant_uri(&node, &t), "names").await;
        let ch = conn.create_channel().await.unwrap();
        ch.queue_declare("q é/x".into(), Default::default(), Default::default())
            .await
            .unwrap();
        let q = c
            .get_queue(vhost, "q é/x")
            .await
            .unwrap()
            .expect("queue visible through the API");
        assert_eq!(q.vhost, vhost);
        conn.close(200, "bye".into()).await.unwrap();

        // Removing a limit (None) deletes it; doing it twice is fine.
        t.limits = VhostLimits {
            max_connections: None,
            max_queues: Some(3),
        };
        ensure_tenant(&c, &t).await.unwrap();
        ensure_tenant(&c, &t).await.unwrap();
        assert_eq!(c.get_vhost_limits(vhost).await.unwrap(), t.limits);

        // The stored hash says whether the password is the user's (so an unchanged tenant is
        // not rewritten), and a new password is set: it logs in, the old one no longer does.
        let user = c.get_user(&t.user).await.unwrap().unwrap();
        assert_eq!(
            user.password_is(t.password.expose()),
            Some(true),
            "{runtime}"
        );
        assert_eq!(user.password_is("not the password"), Some(false));
        let old = t.clone();
        t.password = tiermq_broker::generate_password();
        ensure_tenant(&c, &t).await.unwrap();
        connect(&tenant_uri(&node, &t), "new password").await;
        let refused = lapin::Connection::connect(
            &tenant_uri(&node, &old),
            lapin::ConnectionProperties::default(),
        )
        .await;
        assert!(refused.is_err(), "the old password still logs in");

        if vhost != "/" {
            assert!(c.delete_vhost(vhost).await.unwrap());
            assert!(
                !c.delete_vhost(vhost).await.unwrap(),
                "second delete finds nothing"
            );
            assert_eq!(c.get_vhost(vhost).await.unwrap(), None);
        }
        assert!(c.delete_user(&t.user).await.unwrap());
    }
}

test_each_runtime!(tenant_credentials_are_refused_on_another_tenants_vhost);
async fn tenant_credentials_are_refused_on_another_tenants_vhost(runtime: BrokerRuntime) {
    let _serial = SERIAL.lock().await;
    let node = tiermq_testkit::start_test_node_on(runtime).await.unwrap();
    let c = admin(&node, "test/iso");
    let a = tenant("tenant-a", "user-a");
    let b = tenant("tenant-b", "user-b");
    ensure_tenant(&c, &a).await.unwrap();
    ensure_tenant(&c, &b).await.unwrap();

    let own = connect(&tenant_uri(&node, &a), "a-on-a").await;
    own.close(200, "ok".into()).await.unwrap();

    let mut a_on_b = a.clone();
    a_on_b.vhost = b.vhost.clone();
    let err = lapin::Connection::connect(&tenant_uri(&node, &a_on_b), Default::default())
        .await
        .expect_err("user-a must not open tenant-b");
    let text = err.to_string();
    assert!(
        text.contains("access") || text.contains("ACCESS") || text.contains("not allowed"),
        "{text}"
    );

    // And B's password does not log A in.
    let mut wrong = a.clone();
    wrong.password = b.password.clone();
    assert!(
        lapin::Connection::connect(&tenant_uri(&node, &wrong), Default::default())
            .await
            .is_err()
    );

    // Tenant users are not management users: the HTTP API refuses them.
    let as_tenant = ManagementClient::with_options(
        ClusterEndpoint {
            cluster: "test/iso".into(),
            url: node.management_url(),
            username: a.user.clone(),
            password: a.password.clone(),
        },
        quick_retry(),
    )
    .unwrap();
    let err = as_tenant.list_queues(&a.vhost).await.unwrap_err();
    assert!(matches!(err.kind, ErrorKind::Unauthorized { .. }), "{err}");
}

test_each_runtime!(bad_input_is_a_typed_error_and_changes_nothing);
async fn bad_input_is_a_typed_error_and_changes_nothing(runtime: BrokerRuntime) {
    let _serial = SERIAL.lock().await;
    let node = tiermq_testkit::start_test_node_on(runtime).await.unwrap();
    let c = admin(&node, "test/bad");
    let t = tenant("orders", "orders-user");
    ensure_tenant(&c, &t).await.unwrap();
    let before_vhosts = c.list_vhosts().await.unwrap();

    // Wrong admin password: Unauthorized at once (not retried), nothing created.
    let wrong = ManagementClient::with_options(
        ClusterEndpoint {
            cluster: "test/bad".into(),
            url: node.management_url(),
            username: node.admin().username.clone(),
            password: Secret::new("definitely-not-the-password"),
        },
        ClientOptions {
            retry: RetryPolicy {
                max_attempts: 5,
                initial_backoff: Duration::from_secs(1),
                max_backoff: Duration::from_secs(1),
            },
            ..Default::default()
        },
    )
    .unwrap();
    let started = Instant::now();
    let err = wrong.put_vhost("should-not-exist").await.unwrap_err();
    assert!(
        matches!(err.kind, ErrorKind::Unauthorized { status: 401, .. }),
        "{err}"
    );
    assert!(!err.is_transient());
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a permanent error must not be retried"
    );
    assert!(
        err.to_string()
            .contains("cluster test/bad: create vhost \"should-not-exist\""),
        "{err}"
    );
    assert!(
        !err.to_string().contains("definitely-not-the-password"),
        "{err}"
    );

    // Unreachable: a loopback IP of our own with nothing listening. Retried, then typed.
    let lease = tiermq_testkit::IpLease::acquire().unwrap();
    let down = ManagementClient::with_options(
        ClusterEndpoint {
            cluster: "test/down".into(),
            url: format!("http://{}:15672", lease.ip()),
            username: "admin".into(),
            password: Secret::new("irrelevant-pw"),
        },
        ClientOptions {
            retry: RetryPolicy {
                max_attempts: 3,
                initial_backoff: Duration::from_millis(200),
                max_backoff: Duration::from_millis(200),
            },
            ..Default::default()
        },
    )
    .unwrap();
    let started = Instant::now();
    let err = down.list_vhosts().await.unwrap_err();
    assert!(matches!(err.kind, ErrorKind::Unreachable { .. }), "{err}");
    assert!(err.is_transient());
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "two pauses between three attempts"
    );
    assert!(
        err.to_string()
            .starts_with("cluster test/down: list vhosts: management API at http://127.3."),
        "{err}"
    );

    // Names that cannot be addressed: refused before sending.
    for name in [".", "..", "", "line\nbreak"] {
        let err = c.put_vhost(name).await.unwrap_err();
        assert!(
            matches!(err.kind, ErrorKind::InvalidInput { .. }),
            "{name:?}: {err}"
        );
    }
    // A vhost that does not exist: NotFound, as data where absence is an answer.
    assert_eq!(c.get_vhost("no-such-vhost").await.unwrap(), None);
    let err = c.export_definitions("no-such-vhost").await.unwrap_err();
    assert!(err.is_not_found(), "{err}");

    // A definitions document over the size limit: refused before sending.
    let mut big = Definitions::default();
    for i in 0..40_000 {
        big.queues.push(json!({"name": format!("bulk-queue-{i:06}-{}", "x".repeat(200)), "durable": true, "auto_delete": false, "arguments": {}}));
    }
    let err = c.import_definitions(&t.vhost, &big).await.unwrap_err();
    assert!(matches!(err.kind, ErrorKind::InvalidInput { .. }), "{err}");
    assert!(err.to_string().contains("over the limit"), "{err}");
    // A malformed one (a queue without a name): refused before sending.
    let mut nameless = Definitions::default();
    nameless
        .queues
        .push(json!({"name": "fine", "durable": true, "auto_delete": false, "arguments": {}}));
    nameless.queues.push(json!({"durable": true}));
    let err = c.import_definitions(&t.vhost, &nameless).await.unwrap_err();
    assert!(matches!(err.kind, ErrorKind::InvalidInput { .. }), "{err}");
    assert!(
        c.list_queues(&t.vhost).await.unwrap().is_empty(),
        "nothing imported"
    );

    // The broker's own refusal comes through typed: a policy with a malformed definition.
    let bad_policy = tiermq_broker::model::Policy {
        name: "ttl".into(),
        vhost: t.vhost.clone(),
        pattern: ".*".into(),
        apply_to: "queues".into(),
        definition: json!({"message-ttl": "soon"}).as_object().unwrap().clone(),
        priority: 0,
    };
    let err = c.put_policy(&t.vhost, &bad_policy).await.unwrap_err();
    assert!(
        matches!(err.kind, ErrorKind::Client { status: 400, .. }),
        "{err}"
    );
    assert!(c.list_policies(&t.vhost).await.unwrap().is_empty());

    // A topology copy onto a queue that exists with other arguments: RabbitMQ's import keeps the
    // existing queue without complaint; the copy's read-back reports the conflict.
    let copy = tenant("orders-copy", "orders-copy-user");
    ensure_tenant(&c, &copy).await.unwrap();
    for (tn, max_len) in [(&t, 99), (&copy, 10)] {
        let conn = connect(&tenant_uri(&node, tn), "clash").await;
        let ch = conn.create_channel().await.unwrap();
        let mut args = lapin::types::FieldTable::default();
        args.insert(
            "x-max-length".into(),
            lapin::types::AMQPValue::LongInt(max_len),
        );
        ch.queue_declare(
            "jobs".into(),
            lapin::options::QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .unwrap();
        conn.close(200, "ok".into()).await.unwrap();
    }
    let err = tiermq_broker::steps::copy_topology(&c, &t.vhost, &c, &copy.vhost)
        .await
        .unwrap_err();
    assert!(matches!(err.kind, ErrorKind::Conflict { .. }), "{err}");
    assert!(err.to_string().contains("queue \"jobs\""), "{err}");
    let jobs = c.get_queue(&copy.vhost, "jobs").await.unwrap().unwrap();
    assert_eq!(
        jobs.arguments["x-max-length"], 10,
        "the existing queue is unchanged"
    );
    c.delete_vhost(&copy.vhost).await.unwrap();
    c.delete_user(&copy.user).await.unwrap();

    // A refused shovel whose URI holds a password: the password is not in the error text.
    let spec = ShovelSpec {
        src_uri: Secret::new(format!(
            "amqp://{}:{}@127.0.0.1/orders",
            t.user,
            t.password.expose()
        )),
        src_queue: "jobs".into(),
        dest_uri: Secret::new(format!(
            "amqp://{}:{}@127.0.0.1/orders",
            t.user,
            t.password.expose()
        )),
        dest_queue: "jobs".into(),
        ack_mode: "not-a-mode".into(),
        src_delete_after: None,
        prefetch: None,
    };
    let err = c
        .put_shovel(&t.vhost, "bad-shovel", &spec)
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind, ErrorKind::Client { status: 400, .. }),
        "{err}"
    );
    assert!(!err.to_string().contains(t.password.expose()), "{err}");
    assert!(!format!("{err:?}").contains(t.password.expose()), "{err:?}");
    assert!(c.list_shovels(&t.vhost).await.unwrap().is_empty());

    assert_eq!(
        c.list_vhosts().await.unwrap(),
        before_vhosts,
        "no vhost appeared or vanished"
    );
}

/// Captures everything the client logs, at every level, on this thread.
#[derive(Clone, Default)]
struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;
    fn make_writer(&'a self) -> LogBuffer {
        self.clone()
    }
}

test_each_runtime!(
    passwords_never_reach_logs_errors_or_debug_output,
    flavor = "current_thread"
);
async fn passwords_never_reach_logs_errors_or_debug_output(runtime: BrokerRuntime) {
    let _serial = SERIAL.lock().await;
    let logs = LogBuffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let node = tiermq_testkit::start_test_node_on(runtime).await.unwrap();
    let c = admin(&node, "test/secrets");
    let t = tenant("secrets", "secrets-user");
    let mut texts = vec![format!("{t:?}"), format!("{c:?}")];
    ensure_tenant(&c, &t).await.unwrap();

    // A refused shovel carrying the tenant password in both URIs.
    let uri = Secret::new(tenant_uri(&node, &t));
    let spec = ShovelSpec {
        src_uri: uri.clone(),
        src_queue: "q".into(),
        dest_uri: uri.clone(),
        dest_queue: "q".into(),
        ack_mode: "bogus".into(),
        src_delete_after: None,
        prefetch: None,
    };
    let err = c.put_shovel(&t.vhost, "s", &spec).await.unwrap_err();
    texts.push(err.to_string());
    texts.push(format!("{err:?}"));
    texts.push(format!("{spec:?}"));

    // Retried failures are logged with their error text.
    let down_pw = "down-admin-password-123";
    let lease = tiermq_testkit::IpLease::acquire().unwrap();
    let down = ManagementClient::with_options(
        ClusterEndpoint {
            cluster: "down".into(),
            url: format!("http://{}:15672", lease.ip()),
            username: "admin".into(),
            password: Secret::new(down_pw),
        },
        quick_retry(),
    )
    .unwrap();
    let err = down.put_user("u", &t.password, &[]).await.unwrap_err();
    texts.push(err.to_string());
    texts.push(format!("{err:?}"));

    let captured = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        captured.contains("transient management-API failure"),
        "logs were captured: {captured}"
    );
    assert!(captured.contains("tenant ensured"), "{captured}");
    for secret in [t.password.expose(), node.admin().password.as_str(), down_pw] {
        assert!(!captured.contains(secret), "a password reached the logs");
        for text in &texts {
            assert!(
                !text.contains(secret),
                "a password reached an error or Debug text: {text}"
            );
        }
    }
}

test_each_runtime!(enabling_stable_feature_flags_leaves_none_disabled);
/// A node that booted with one feature flag (like one upgraded from an older release, whose
/// newer flags stay disabled) has disabled stable flags; after
/// `enable_stable_feature_flags` none is left, and a second call has nothing to do. This is the
/// step an in-place upgrade runs before the new image starts.
async fn enabling_stable_feature_flags_leaves_none_disabled(runtime: BrokerRuntime) {
    let _serial = SERIAL.lock().await;
    let node = tiermq_testkit::start_nodes_with(runtime, 1, |_, c| {
        c.initial_feature_flags = Some("quorum_queue".into());
    })
    .await
    .unwrap()
    .pop()
    .unwrap();
    let c = admin(&node, "test/flags");
    let disabled = |flags: &[tiermq_broker::model::FeatureFlag]| -> Vec<String> {
        flags
            .iter()
            .filter(|f| f.is_stable() && f.state != "enabled")
            .map(|f| f.name.clone())
            .collect()
    };
    let before = c.list_feature_flags().await.unwrap();
    assert!(
        before
            .iter()
            .any(|f| f.name == "quorum_queue" && f.state == "enabled"),
        "{before:?}"
    );
    let was_disabled = disabled(&before);
    assert!(
        !was_disabled.is_empty(),
        "a node booted with one flag has disabled stable flags: {before:?}"
    );
    let mut enabled = c.enable_stable_feature_flags().await.unwrap();
    enabled.sort();
    let mut expected = was_disabled.clone();
    expected.sort();
    assert_eq!(enabled, expected);
    let after = c.list_feature_flags().await.unwrap();
    assert_eq!(disabled(&after), Vec::<String>::new(), "{after:?}");
    assert_eq!(
        c.enable_stable_feature_flags().await.unwrap(),
        Vec::<String>::new()
    );
    eprintln!(
        "{runtime:?}: enabled {} stable flags: {enabled:?}",
        enabled.len()
    );
}

test_each_runtime!(a_vhost_reports_the_rate_its_clients_publish_at);
/// Auto-tiering compares the tenant's publish rate from `GET /api/vhosts/{vhost}`: a steady
/// publisher shows there (0 before it starts), whether or not the messages are routed to a queue.
async fn a_vhost_reports_the_rate_its_clients_publish_at(runtime: BrokerRuntime) {
    let _serial = SERIAL.lock().await;
    let node = tiermq_testkit::start_test_node_on(runtime).await.unwrap();
    let c = admin(&node, "test/rate");
    let t = tenant("rate", "rate-user");
    ensure_tenant(&c, &t).await.unwrap();
    let idle = c.get_vhost(&t.vhost).await.unwrap().unwrap();
    assert_eq!(idle.publish_rate(), 0.0, "{idle:?}");
    let conn = connect(&tenant_uri(&node, &t), "rate-publisher").await;
    let ch = confirm_channel(&conn).await;
    ch.queue_declare(
        "rated".into(),
        lapin::options::QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .unwrap();
    // ~100 msg/s for up to 30 s, in 10-message batches: the statistics need a few emissions.
    let mut next = 0u64;
    let rate = eventually(
        "a publish rate on the vhost",
        Duration::from_secs(30),
        || {
            let (ch, c, vhost) = (&ch, &c, t.vhost.clone());
            let from = next;
            next += 10;
            async move {
                publish_confirmed(ch, "rated", from..from + 10).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                let v = c.get_vhost(&vhost).await.ok()??;
                (v.publish_rate() > 20.0).then_some(v.publish_rate())
            }
        },
    )
    .await;
    println!("vhost publish rate under ~100 msg/s: {rate:.1}");
    conn.close(200, "done".into()).await.unwrap();
}
