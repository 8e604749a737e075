//! The load generator against a real broker: its clients survive what a tier conversion does to
//! them (connections closed with a reason, publishes refused after write revocation) and the
//! checker accounts for every confirmed message.

use std::time::{Duration, Instant};

use tiermq_broker::steps::{self, Tenant};
use tiermq_broker::{ClusterEndpoint, ManagementClient, Secret, generate_password};
use tiermq_testkit::RabbitNode;
use tiermq_tests::load::{AmqpTarget, Load, LoadConfig, Pattern, Role, Workload, WorkloadConfig};

fn admin(node: &RabbitNode) -> ManagementClient {
    let a = node.admin();
    ManagementClient::new(ClusterEndpoint {
        cluster: "load-test".into(),
        url: node.management_url(),
        username: a.username.clone(),
        password: Secret::new(a.password.clone()),
    })
    .unwrap()
}

async fn tenant(node: &RabbitNode, c: &ManagementClient) -> (Tenant, AmqpTarget) {
    let t = Tenant {
        vhost: "team-a.orders".into(),
        user: "team-a.orders".into(),
        password: generate_password(),
        limits: Default::default(),
    };
    steps::ensure_tenant(c, &t).await.unwrap();
    let addr = node.amqp_address();
    let (host, port) = addr.rsplit_once(':').unwrap();
    let target = AmqpTarget::from_parts(
        host,
        port.parse().unwrap(),
        &t.vhost,
        &t.user,
        t.password.expose(),
    )
    .unwrap();
    (t, target)
}

fn config(target: AmqpTarget, messages: u64, rate: f64) -> LoadConfig {
    let mut cfg = LoadConfig::steady(target, "orders", messages, rate);
    cfg.max_duration = Duration::from_secs(60);
    cfg.backoff_min = Duration::from_millis(50);
    cfg.backoff_max = Duration::from_millis(500);
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_closed_with_a_reason_reconnect_and_nothing_is_lost() {
    let node = tiermq_testkit::start_test_node().await.unwrap();
    let c = admin(&node);
    let (t, target) = tenant(&node, &c).await;
    let load = Load::start(config(target, 400, 100.0)).await.unwrap();

    // Let every client connect and some messages flow, then close all of the tenant's
    // connections the way the operator does on a downgrade.
    let until = Instant::now() + Duration::from_secs(10);
    while load.stats().received < 100 {
        assert!(
            Instant::now() < until,
            "load did not start: {:?}",
            load.stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The management API lists connections from statistics, so they show up with a delay.
    while c.list_connections(&t.vhost).await.unwrap().len() < 4 {
        assert!(Instant::now() < until, "connections never listed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let closed =
        steps::close_connections(&c, &t.vhost, Some(&t.user), "tiermq test: tier conversion")
            .await
            .unwrap();
    assert!(
        closed >= 4,
        "two publishers and two consumers were connected, closed {closed}"
    );

    let report = load.finish(Duration::from_secs(20)).await;
    println!("load report: {report}");
    println!("interruptions: {:?}", report.reasons());
    assert_eq!(report.lost, 0, "lost messages: {:?}", report.lost_sample);
    assert_eq!(
        report.stats.confirmed, 800,
        "every message confirmed in the end"
    );
    assert!(report.stats.received >= 800);
    let forced: Vec<_> = report
        .interruptions
        .iter()
        .filter(|i| {
            i.reason.contains("CONNECTION_FORCED")
                && i.reason.contains("tiermq test: tier conversion")
        })
        .collect();
    assert!(
        forced.iter().any(|i| i.role == Role::Publisher),
        "publishers saw the reason: {:?}",
        report.interruptions
    );
    assert!(
        forced.iter().any(|i| i.role == Role::Consumer),
        "consumers saw the reason: {:?}",
        report.interruptions
    );
    assert!(
        report.connections["publisher"] >= 4 && report.connections["consumer"] >= 4,
        "{:?}",
        report.connections
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_publishes_are_retried_until_writes_return_and_nothing_is_lost() {
    let node = tiermq_testkit::start_test_node().await.unwrap();
    let c = admin(&node);
    let (t, target) = tenant(&node, &c).await;
    tiermq_tests::load::declare_queue(&target, "orders")
        .await
        .unwrap();
    steps::revoke_writes(&c, &t.vhost, &t.user).await.unwrap();
    let load = Load::start_without_declare(config(target, 200, 200.0));

    // New channels are refused at once (403); the publishers keep reconnecting.
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let refused = load
            .interruptions()
            .iter()
            .filter(|i| i.role == Role::Publisher && i.reason.contains("ACCESS_REFUSED"))
            .count();
        if refused >= 2 {
            break;
        }
        assert!(
            Instant::now() < until,
            "no 403 seen: {:?}",
            load.interruptions()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        load.stats().confirmed,
        0,
        "nothing is confirmed while writes are revoked"
    );
    steps::restore_writes(&c, &t.vhost, &t.user).await.unwrap();

    let report = load.finish(Duration::from_secs(20)).await;
    println!("load report: {report}");
    println!("interruptions: {:?}", report.reasons());
    assert_eq!(report.lost, 0, "lost messages: {:?}", report.lost_sample);
    assert_eq!(report.stats.confirmed, 400);
    assert_eq!(
        report.stats.received - report.duplicates,
        400,
        "each id consumed"
    );
    assert!(report.stats.refused >= 1, "{report}");
}

/// The matrix: `messages` per publisher at `rate` msg/s each, 2 publishers per pattern,
/// 2 consumers (subscribers) where the pattern takes a number.
fn matrix(target: AmqpTarget, patterns: &[Pattern], messages: u64, rate: f64) -> WorkloadConfig {
    WorkloadConfig::new(config(target, messages, rate), patterns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pattern_runs_at_once_without_loss_on_one_broker() {
    let node = tiermq_testkit::start_test_node().await.unwrap();
    let c = admin(&node);
    let (_t, target) = tenant(&node, &c).await;
    let started = Instant::now();
    let w = Workload::start(matrix(target.clone(), &Pattern::ALL, 60, 20.0))
        .await
        .unwrap();
    let report = w.finish(Duration::from_secs(20)).await;
    println!("{report}");
    println!(
        "{} patterns in {:.1}s; interruptions: {:?}",
        report.patterns.len(),
        started.elapsed().as_secs_f64(),
        report.reasons()
    );
    assert_eq!(report.patterns.len(), Pattern::ALL.len());
    for p in &report.patterns {
        assert_eq!(p.problems(), 0, "{}: {:?}", p.pattern, p);
        assert_eq!(p.duplicates, 0, "{}: {:?}", p.pattern, p.units);
        assert_eq!(
            p.refused, 0,
            "{}: nothing refused without a fault",
            p.pattern
        );
        match p.confirmed {
            Some(n) => assert_eq!(n, 120, "{}: every message confirmed", p.pattern),
            None => assert_eq!(p.unconfirmed_missing, 0, "no-confirm: everything arrived"),
        }
        for u in &p.units {
            assert_eq!(u.lost, 0, "{} {}: {:?}", p.pattern, u.name, u.lost_sample);
            assert_eq!(
                u.dead_lettered, 0,
                "{} {}: nothing dropped",
                p.pattern, u.name
            );
        }
    }
    let fanout = report.pattern(Pattern::FanoutPubSub).unwrap();
    assert_eq!(fanout.units.len(), 2);
    for s in &fanout.units {
        assert_eq!(s.subscriptions, 1, "{s:?}");
        assert!(s.expected > 0 && s.received >= s.expected, "{s:?}");
    }
    let topic = report.pattern(Pattern::TopicRouting).unwrap();
    let owed = |q: &str| topic.unit(q).map(|u| (u.expected, u.received));
    assert_eq!(
        owed(".eu"),
        Some((60, 60)),
        "orders.eu.* gets half the keys"
    );
    assert_eq!(owed(".created"), Some((60, 60)));
    assert_eq!(owed(".all"), Some((120, 120)), "orders.# gets everything");
    assert_eq!(owed(".audit"), Some((0, 0)), "audit.# matches nothing");
    let stream = report.pattern(Pattern::Stream).unwrap();
    let from_offset = stream.unit("from first+20").unwrap();
    assert_eq!(from_offset.expected, 100, "{from_offset:?}");
    assert_eq!(from_offset.first_offset, Some(20), "{from_offset:?}");
    assert_eq!(
        stream.unit("from first").unwrap().first_offset,
        Some(0),
        "a new stream starts at 0"
    );
    let max_length = report.pattern(Pattern::MaxLength).unwrap();
    assert_eq!(max_length.nacked, 0);

    // A second run on the same topology (as the demo does per conversion): the stream still
    // holds the first run's 120 messages, whose ids repeat; the readers set them aside.
    let again = [Pattern::WorkQueue, Pattern::Stream];
    let w = Workload::start(matrix(target, &again, 30, 30.0))
        .await
        .unwrap();
    let report = w.finish(Duration::from_secs(20)).await;
    println!("{report}");
    let stream = report.pattern(Pattern::Stream).unwrap();
    assert_eq!(stream.problems(), 0, "{:?}", stream.units);
    let first = stream.unit("from first").unwrap();
    assert_eq!((first.expected, first.received), (60, 60), "{first:?}");
    assert_eq!(first.other_runs, 120, "{first:?}");
    assert_eq!(first.first_offset, Some(120));
    let from_offset = stream.unit("from first+20").unwrap();
    assert_eq!(from_offset.first_offset, Some(140), "{from_offset:?}");
    assert_eq!(from_offset.expected, 40);
    assert_eq!(report.lost(), 0);
}

/// Waits (bounded) until `f` holds.
async fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_closed_by_the_server_is_excused_for_its_gap_and_owed_nothing_before_its_bind()
{
    let node = tiermq_testkit::start_test_node().await.unwrap();
    let c = admin(&node);
    let (t, target) = tenant(&node, &c).await;
    let patterns = [Pattern::FanoutPubSub, Pattern::SingleActiveConsumer];
    let mut cfg = matrix(target, &patterns, 100, 20.0);
    // A reconnect gap long enough to hold several messages (2 publishers x 20 msg/s).
    cfg.load.backoff_min = Duration::from_millis(300);
    cfg.load.backoff_max = Duration::from_millis(300);
    let mut w = Workload::start(cfg).await.unwrap();
    let confirmed = |w: &Workload| w.pattern_stats(Pattern::FanoutPubSub).unwrap().confirmed;
    wait_for(
        "40 fanout messages confirmed",
        Duration::from_secs(10),
        || confirmed(&w) >= 40,
    )
    .await;
    // A late subscriber: owed only what follows its bind.
    assert!(w.add_consumers(Pattern::FanoutPubSub, 1));
    let late_from = confirmed(&w);

    // Close subscriber 0 and every single-active consumer (so the active one too) from the
    // management API, the way the operator closes source connections.
    let victims = [
        "load-fanout-sub-0",
        "load-sac-con-0",
        "load-sac-con-1",
        "load-sac-con-2",
    ];
    let until = Instant::now() + Duration::from_secs(10);
    let mut names = Vec::new();
    while names.len() < victims.len() {
        assert!(
            Instant::now() < until,
            "connections never listed: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        names = c
            .list_connections(&t.vhost)
            .await
            .unwrap()
            .into_iter()
            .filter(|conn| conn.client_name().is_some_and(|n| victims.contains(&n)))
            .map(|conn| conn.name)
            .collect();
    }
    for name in &names {
        assert!(
            c.close_connection(name, "tiermq test: one subscriber closed")
                .await
                .unwrap()
        );
    }
    let report = w.finish(Duration::from_secs(20)).await;
    println!("{report}");
    println!("interruptions: {:?}", report.reasons());

    let fanout = report.pattern(Pattern::FanoutPubSub).unwrap();
    let total = fanout.confirmed.unwrap();
    assert_eq!(total, 200);
    let closed = fanout.unit("load-fanout-sub-0").unwrap();
    assert_eq!(closed.subscriptions, 2, "re-subscribed once: {closed:?}");
    assert!(closed.gap_time >= Duration::from_millis(300), "{closed:?}");
    assert!(
        closed.expected < total,
        "what was published during its gap is not owed: {closed:?}"
    );
    assert_eq!(
        closed.lost - closed.lost_near_close,
        0,
        "at most messages in flight at the close are missed: {closed:?}"
    );
    let steady = fanout.unit("load-fanout-sub-1").unwrap();
    assert_eq!((steady.subscriptions, steady.lost), (1, 0), "{steady:?}");
    assert!(steady.expected > closed.expected);
    let late = fanout.unit("load-fanout-sub-2").unwrap();
    assert_eq!((late.subscriptions, late.lost), (1, 0), "{late:?}");
    assert!(
        late.expected <= total - late_from,
        "messages confirmed before the late bind are not owed: {late:?}"
    );
    assert!(
        report
            .interruptions
            .iter()
            .any(|i| i.pattern == Pattern::FanoutPubSub
                && i.reason.contains("tiermq test: one subscriber closed")),
        "{:?}",
        report.interruptions
    );

    let sac = report.pattern(Pattern::SingleActiveConsumer).unwrap();
    assert_eq!(sac.lost, 0, "{:?}", sac.lost_sample);
    assert_eq!(sac.problems(), 0, "no overlap, order kept: {:?}", sac.units);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_a_closed_subscribers_backlog_and_overflows_show_in_their_own_rows() {
    let node = tiermq_testkit::start_test_node().await.unwrap();
    let c = admin(&node);
    let (t, target) = tenant(&node, &c).await;
    let patterns = [
        Pattern::WorkQueue,
        Pattern::TopicRouting,
        Pattern::FanoutPubSub,
        Pattern::MaxLength,
    ];
    let mut cfg = matrix(target, &patterns, 60, 60.0);
    // Slow consumers (~30 msg/s each) leave a backlog behind the publishers (120 msg/s), and
    // overflow max-length queues of 2.
    cfg.load.consumers = 1;
    cfg.load.prefetch = 1;
    cfg.load.consumer_delay = Duration::from_millis(30);
    cfg.knobs.max_length = 2;
    let w = Workload::start(cfg).await.unwrap();
    wait_for("publishers done", Duration::from_secs(15), || {
        w.publishing_done()
    })
    .await;

    // The subscriber's backlog goes down with its exclusive queue when its connection is closed.
    let subscriber = c
        .list_connections(&t.vhost)
        .await
        .unwrap()
        .into_iter()
        .find(|conn| conn.client_name() == Some("load-fanout-sub-0"))
        .expect("the subscriber's connection is listed");
    assert!(
        c.close_connection(&subscriber.name, "tiermq test: backlog dropped")
            .await
            .unwrap()
    );
    let uri = node.amqp_url(
        &tiermq_testkit::Credentials::new(t.user.clone(), t.password.expose().to_string()),
        &t.vhost,
    );
    let conn = lapin::Connection::connect(&uri, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut purged = Vec::new();
    for q in ["orders", "orders.topic.eu"] {
        let n = ch.queue_purge(q.into(), Default::default()).await.unwrap();
        purged.push(u64::from(n));
    }
    conn.close(200, "purged".into()).await.unwrap();
    println!("purged {purged:?}");
    assert!(
        purged.iter().all(|n| *n > 0),
        "a backlog to purge: {purged:?}"
    );

    let report = w.finish(Duration::from_secs(5)).await;
    println!("{report}");
    let wq = report.pattern(Pattern::WorkQueue).unwrap();
    assert_eq!(wq.lost, purged[0], "every purged message is lost");
    let topic = report.pattern(Pattern::TopicRouting).unwrap();
    assert_eq!(topic.unit(".eu").unwrap().lost, purged[1]);
    for q in [".created", ".all", ".audit"] {
        assert_eq!(topic.unit(q).unwrap().lost, 0, "{q} was not purged");
    }
    assert_eq!(topic.lost, purged[1]);
    let sub = report.pattern(Pattern::FanoutPubSub).unwrap().units[0].clone();
    assert_eq!(sub.subscriptions, 2, "it re-subscribed: {sub:?}");
    assert!(
        sub.lost > 10 && sub.lost - sub.lost_near_close > 10,
        "confirmed long before the close and never received: missed, not excused: {sub:?}"
    );

    // Overflow is reported as what it is: drops are dead-lettered, rejections are refused
    // publishes that were sent again; neither is lost.
    let max_length = report.pattern(Pattern::MaxLength).unwrap();
    assert_eq!(max_length.lost, 0, "{:?}", max_length.lost_sample);
    let mode = |m: &str| max_length.unit(&format!(".{m}")).unwrap();
    assert!(
        mode("drop-head").dead_lettered > 0,
        "{:?}",
        mode("drop-head")
    );
    assert_eq!(mode("drop-head").nacked, 0);
    assert!(
        mode("reject-publish").nacked > 0,
        "{:?}",
        mode("reject-publish")
    );
    assert_eq!(mode("reject-publish").dead_lettered, 0);
    let dlx = mode("reject-publish-dlx");
    assert!(dlx.nacked > 0 && dlx.rejected_copies > 0, "{dlx:?}");
    assert_eq!(
        dlx.dead_lettered, 0,
        "rejected copies are not drops: {dlx:?}"
    );
    assert_eq!(
        max_length.confirmed,
        Some(120),
        "every refused publish was sent again"
    );
}
