//! The conversion scenario shared by the upgrade and downgrade tests: kubesim + the operator
//! binary + kubectl + real brokers, AMQP load through the instance Service during the whole
//! conversion, and every property the issue asks for checked from the outside.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use tiermq_crd::{MigrationPhase, Tier};
pub use tiermq_testkit::BrokerRuntime;
use tiermq_tests::harness::{CONVERSION_PHASES, Supervision, World};
use tiermq_tests::load::{
    Load, LoadConfig, LoadReport, Pattern, Role, Workload, WorkloadConfig, WorkloadReport,
};
use tiermq_tests::scenario::{self, Conversion, NAME, NS};

pub const TENANT: &str = "team-a.orders";

/// The load of every scenario: 2 publishers at ~25 msg/s each (confirms), 3 consumers (manual
/// acks), reconnecting with backoff up to 1 s; bounded by count and by 4 minutes.
pub fn load_config(world_target: tiermq_tests::load::AmqpTarget) -> LoadConfig {
    let mut cfg = LoadConfig::steady(world_target, "orders", 6000, 25.0);
    cfg.consumers = 3;
    cfg.confirm_window = 8;
    cfg.max_duration = Duration::from_secs(240);
    cfg.backoff_min = Duration::from_millis(100);
    cfg.backoff_max = Duration::from_secs(1);
    cfg
}

pub struct Outcome {
    pub world: World,
    pub conversion: Conversion,
    pub report: LoadReport,
    /// The other client patterns that ran through the same conversion.
    pub patterns: WorkloadReport,
    pub probe: ProbeResult,
}

/// The broker image whose RabbitMQ kubesim runs as `runtime`.
pub fn image_of(runtime: BrokerRuntime) -> &'static str {
    match runtime {
        BrokerRuntime::Host310 => tiermq_tests::harness::IMAGE_3_10,
        BrokerRuntime::Debian13V40 => tiermq_tests::harness::IMAGE_4_0,
    }
}

/// Runs one conversion `from` → `to` with `drain` ("Consume" or "Shovel") under load, both
/// clusters running RabbitMQ as `runtime`, and checks:
/// 0 lost, phases in order, source tenant gone, credentials unchanged. Besides the work queue
/// (whose clients the direction-specific checks look at), the client `patterns` run through the
/// same conversion and must lose nothing either (a subscriber: nothing published while it was
/// subscribed). Returns the rest for the direction-specific checks.
pub async fn convert_under_load(
    runtime: BrokerRuntime,
    scenario_name: &str,
    from: Tier,
    to: Tier,
    drain: &str,
    patterns: &[Pattern],
) -> Outcome {
    convert_under_load_with(runtime, scenario_name, from, to, drain, patterns, None).await
}

/// [`convert_under_load`], with the tenant's own shovel carrying `tenant_shovel` messages before
/// the flip when given (see [`TenantShovel`]).
pub async fn convert_under_load_with(
    runtime: BrokerRuntime,
    scenario_name: &str,
    from: Tier,
    to: Tier,
    drain: &str,
    patterns: &[Pattern],
    tenant_shovel: Option<u64>,
) -> Outcome {
    let opts = Opts {
        runtime,
        tenant_shovel,
        ..Opts::default()
    };
    convert_under_load_opts(scenario_name, from, to, drain, patterns, opts).await
}

/// What else a conversion scenario does.
pub struct Opts {
    /// The RabbitMQ both clusters run.
    pub runtime: BrokerRuntime,
    /// Messages the tenant's own shovel carries before the flip (see [`TenantShovel`]).
    pub tenant_shovel: Option<u64>,
    /// How the operator is treated from the flip on (crash hook, kills, restarts).
    pub supervision: Option<Supervision>,
    /// How long the conversion may take.
    pub timeout: Duration,
    /// The operator's API requests fail in turns while the conversion runs (see [`ApiChaos`]).
    pub api_faults: bool,
    /// A broker killed when the conversion reaches a phase (see [`BrokerKill`]).
    pub broker_kill: Option<BrokerKill>,
    /// The brokers' management API fails in turns while the conversion runs (see
    /// [`ManagementChaos`]).
    pub management_faults: bool,
}

/// Which cluster of a conversion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Source,
    Destination,
}

/// SIGKILL every broker process of one side's cluster once the conversion first reaches
/// `phase`; the kubelet restarts them after its back-off, as a real one would.
#[derive(Clone, Copy, Debug)]
pub struct BrokerKill {
    pub side: Side,
    pub phase: MigrationPhase,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            runtime: BrokerRuntime::Host310,
            tenant_shovel: None,
            supervision: None,
            timeout: Duration::from_secs(150),
            api_faults: false,
            broker_kill: None,
            management_faults: false,
        }
    }
}

/// [`convert_under_load`] with [`Opts`].
pub async fn convert_under_load_opts(
    scenario_name: &str,
    from: Tier,
    to: Tier,
    drain: &str,
    patterns: &[Pattern],
    opts: Opts,
) -> Outcome {
    let tenant_shovel = opts.tenant_shovel;
    let runtime = opts.runtime;
    let started = Instant::now();
    let scenario_name = &format!("{scenario_name}-{}", runtime.series());
    let mut world =
        scenario::world_with_instance_on(scenario_name, from, drain, 3, image_of(runtime))
            .await
            .unwrap();
    println!(
        "{scenario_name}: instance ready on {from} ({runtime}) after {:.1}s",
        started.elapsed().as_secs_f64()
    );
    if patterns.contains(&Pattern::MaxLength) {
        // Its drop-head queue would hold the flip (QueueCannotMove); the test accepts drops by
        // the limit and then checks that none happened at this load.
        tiermq_tests::harness::patch_instance(
            &world.kubectl,
            NS,
            NAME,
            r#"{"spec":{"migration":{"allowLimitDrops":true}}}"#,
        )
        .await
        .unwrap();
    }
    let creds_before = world.credentials(NS, NAME).await.unwrap();
    let target = world.instance_target(NS, NAME).await.unwrap();
    let (src_ns, src_cluster) = cluster_of(from);
    let (dst_ns, dst_cluster) = cluster_of(to);
    let source = world.management(src_ns, &src_cluster).await.unwrap();
    assert!(
        source.get_vhost(TENANT).await.unwrap().is_some(),
        "tenant vhost on the source before the flip"
    );
    let version = source.overview().await.unwrap().rabbitmq_version;
    assert!(
        runtime.matches_version(&version),
        "the source runs {runtime}, reports {version}"
    );

    let shovel = match tenant_shovel {
        Some(n) => Some(tenant_shovel_before(&world, from, &target, n).await),
        None => None,
    };
    let load = Load::start(load_config(target.clone())).await.unwrap();
    let mut others = load_config(target.clone());
    others.name = "mix".into();
    others.messages_per_publisher = 4000;
    others.consumers = 2;
    let workload = Workload::start(WorkloadConfig::new(others, patterns))
        .await
        .unwrap();
    wait_for_flow(&load).await;

    // Probe: once the source has left the Service, a brand-new connection must land on the
    // destination.
    let probe = tokio::spawn(probe_after_cutover(
        world.cluster.client(),
        target.clone(),
        from,
        to,
    ));
    if let Some(sup) = opts.supervision {
        world
            .operator
            .as_mut()
            .expect("the scenario started the operator")
            .restart_with(sup)
            .unwrap();
    }
    let chaos = opts.api_faults.then(|| ApiChaos::start(&mut world));
    let management_chaos = opts
        .management_faults
        .then(|| ManagementChaos::start(&world));
    let killer = opts.broker_kill.map(|k| {
        let (ns, cluster) = match k.side {
            Side::Source => cluster_of(from),
            Side::Destination => cluster_of(to),
        };
        spawn_broker_kill(&world, k.phase, ns, cluster)
    });
    let conversion = scenario::convert(
        &mut world,
        NS,
        NAME,
        to,
        &load,
        opts.timeout,
        Some(&mut |l: &str| println!("{l}")),
    )
    .await
    .unwrap();
    if let Some(chaos) = chaos {
        chaos.stop(&world, scenario_name).await;
    }
    if let Some(chaos) = management_chaos {
        chaos.stop(scenario_name).await;
    }
    if let Some(killer) = killer {
        let kill = tokio::time::timeout(Duration::from_secs(60), killer)
            .await
            .expect("the broker-kill task ends with the conversion")
            .unwrap();
        let kill = kill.expect("the conversion reached the phase and its brokers were killed");
        println!("{scenario_name}: {kill}");
    }
    load.stop_publishing();
    workload.stop_publishing();
    let probe = tokio::time::timeout(Duration::from_secs(15), probe).await;
    let probe = match probe {
        Ok(Ok(p)) => p,
        other => ProbeResult::Nowhere(format!("{other:?}")),
    };
    println!("{scenario_name}: a connection opened in DestinationOnly landed on: {probe:?}");
    let destination = world.management(dst_ns, &dst_cluster).await.unwrap();
    let version = destination.overview().await.unwrap().rabbitmq_version;
    assert!(
        runtime.matches_version(&version),
        "the destination runs {runtime}, reports {version}"
    );
    // The clients go on on the destination: their reconnected connections are listed there.
    let clients_on_destination = wait_until(Duration::from_secs(15), || async {
        destination
            .list_connections(TENANT)
            .await
            .map(|cs| {
                cs.iter()
                    .any(|c| c.client_name().is_some_and(|n| n.starts_with("load-con-")))
            })
            .unwrap_or(false)
    })
    .await;
    let report = load.finish(Duration::from_secs(60)).await;
    let mix = workload.finish(Duration::from_secs(30)).await;

    println!("{scenario_name}: phases seen {:?}", conversion.phases);
    println!(
        "{scenario_name}: conversion took {:.1}s: {}",
        conversion.duration.as_secs_f64(),
        scenario::phase_table(&conversion)
    );
    println!("{scenario_name}: load {report}");
    println!(
        "{scenario_name}: duplicates {} (re-sent after a lost confirm or redelivered after a lost ack)",
        report.duplicates
    );
    println!(
        "{scenario_name}: interruption reasons {:?}",
        report.reasons()
    );

    println!("{scenario_name}: the other patterns through the same conversion:\n{mix}");
    assert_eq!(
        report.lost, 0,
        "confirmed but never consumed: {:?}",
        report.lost_sample
    );
    for p in &mix.patterns {
        assert!(
            p.confirmed.is_none() || p.lost == 0,
            "{scenario_name}: pattern {} lost {}:\n{mix}",
            p.pattern,
            p.lost
        );
        assert_eq!(
            p.problems(),
            0,
            "{scenario_name}: pattern {} reports problems:\n{mix}",
            p.pattern
        );
        assert!(
            p.received > 0,
            "{scenario_name}: pattern {} ran:\n{mix}",
            p.pattern
        );
    }
    assert!(
        report.stats.confirmed >= 200,
        "the load ran through the conversion: {report}"
    );
    // In order; the only step back allowed is the documented DestinationOnly -> DrainingSource
    // when the source got messages again. With API or management faults from the flip on, the
    // first pass may find the destination failing and hold the flip (`Blocked`) until it answers.
    let mut phases = tiermq_tests::harness::collapse_drain_retries(&conversion.phases);
    if (opts.api_faults || opts.management_faults)
        && phases.first() == Some(&MigrationPhase::Blocked)
    {
        phases.remove(0);
    }
    assert_eq!(
        phases, CONVERSION_PHASES,
        "phases in order: {:?}",
        conversion.phases
    );
    assert!(
        scenario::completed(&conversion),
        "history records a completed conversion: {:?}",
        conversion.record
    );
    assert_eq!(conversion.final_status.tier, Some(to));

    // Source tenant gone (the grace period is 3 s; retirement happens before Completed).
    if to == Tier::Dedicated {
        assert_eq!(
            source.get_vhost(TENANT).await.unwrap(),
            None,
            "source vhost deleted"
        );
        assert_eq!(
            source.get_user(TENANT).await.unwrap(),
            None,
            "source user deleted"
        );
    } else {
        // The dedicated cluster itself is removed.
        let gone = wait_until(Duration::from_secs(30), || async {
            !world.statefulset_exists(NS, &dedicated()).await.unwrap()
        })
        .await;
        assert!(gone, "dedicated StatefulSet deleted at the end");
    }
    assert!(
        destination.get_vhost(TENANT).await.unwrap().is_some(),
        "tenant vhost on the destination"
    );
    assert!(
        clients_on_destination,
        "consumers continue on the destination"
    );
    if let Some(shovel) = &shovel {
        shovel.check_after(&world, to, &target).await;
    }
    let creds_after = world.credentials(NS, NAME).await.unwrap();
    assert_eq!(
        creds_before, creds_after,
        "credentials Secret unchanged (host, port, vhost, user, password, uri)"
    );
    Outcome {
        world,
        conversion,
        report,
        patterns: mix,
        probe,
    }
}

pub fn dedicated() -> String {
    format!("{NAME}-dedicated")
}

/// Namespace and name of the cluster serving `tier`.
pub fn cluster_of(tier: Tier) -> (&'static str, String) {
    match tier {
        Tier::Shared => ("tiermq-system", "main".to_string()),
        Tier::Dedicated => (NS, dedicated()),
    }
}

pub async fn wait_for_flow(load: &Load) {
    let until = Instant::now() + Duration::from_secs(30);
    while load.stats().received < 50 {
        assert!(
            Instant::now() < until,
            "the load did not get going: {:?} {:?}",
            load.stats(),
            load.interruptions()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn wait_until<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

pub const PROBE: &str = "probe-after-cutover";

/// Where the probe connection landed.
#[derive(Debug, PartialEq, Eq)]
pub enum ProbeResult {
    Destination,
    Source,
    Nowhere(String),
}

/// Once the source has been out of the Service for a moment (DestinationOnly, plus 1 s for the
/// proxy to follow the EndpointSlice change, as a real kube-proxy also needs), opens one
/// connection through the Service and asks both clusters' management APIs where it is.
async fn probe_after_cutover(
    kube: kube::Client,
    target: tiermq_tests::load::AmqpTarget,
    from: Tier,
    to: Tier,
) -> ProbeResult {
    let api: kube::Api<tiermq_crd::RabbitMQInstance> = kube::Api::namespaced(kube.clone(), NS);
    let until = Instant::now() + Duration::from_secs(150);
    loop {
        if Instant::now() > until {
            return ProbeResult::Nowhere("DestinationOnly never seen".into());
        }
        let phase = api
            .get(NAME)
            .await
            .ok()
            .and_then(|i| i.status)
            .and_then(|s| s.migration_phase);
        if phase == Some(MigrationPhase::DestinationOnly) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let conn =
        match tiermq_tests::load::probe_connection(&target, PROBE, Duration::from_secs(10)).await {
            Ok(c) => c,
            Err(e) => return ProbeResult::Nowhere(format!("connect: {e}")),
        };
    let (sns, scl) = cluster_of(from);
    let (dns, dcl) = cluster_of(to);
    let (Ok(src), Ok(dst)) = (
        tiermq_tests::harness::management_client(&kube, sns, &scl).await,
        tiermq_tests::harness::management_client(&kube, dns, &dcl).await,
    ) else {
        return ProbeResult::Nowhere("no management client".into());
    };
    let until = Instant::now() + Duration::from_secs(10);
    let listed = |cs: Result<Vec<tiermq_broker::model::ConnectionInfo>, _>| {
        cs.map(|cs: Vec<tiermq_broker::model::ConnectionInfo>| {
            cs.iter().any(|c| c.client_name() == Some(PROBE))
        })
        .unwrap_or(false)
    };
    while Instant::now() < until {
        if listed(dst.list_connections(TENANT).await) {
            drop(conn);
            return ProbeResult::Destination;
        }
        if listed(src.list_connections(TENANT).await) {
            drop(conn);
            return ProbeResult::Source;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(conn);
    ProbeResult::Nowhere("not listed on either cluster".into())
}

/// Interruptions of clients whose connection was open before `t`, that happened before `until`.
pub fn closed_between(
    report: &LoadReport,
    opened_before: Duration,
    until: Duration,
    role: Option<Role>,
) -> Vec<String> {
    report
        .interruptions
        .iter()
        .filter(|i| {
            i.connection_opened < opened_before
                && i.after < until
                && role.is_none_or(|r| r == i.role)
        })
        .map(|i| {
            format!(
                "{} at {:.1}s: {}",
                i.client,
                i.after.as_secs_f64(),
                i.reason
            )
        })
        .collect()
}

pub fn phase_at(c: &Conversion, p: MigrationPhase) -> Duration {
    c.seen_at(p).unwrap_or_else(|| panic!("{p} was not seen"))
}

/// The tenant's own shovel `ingest` (`inbox` → `ingested`, inside its vhost), defined on the
/// source cluster before a conversion, with messages it already moved there.
pub struct TenantShovel {
    pub before: u64,
}

/// Declares `inbox` and `ingested`, defines the tenant's shovel on the source (as the tenant's
/// administrator would) and feeds `n` messages through it.
pub async fn tenant_shovel_before(
    world: &World,
    from: Tier,
    target: &tiermq_tests::load::AmqpTarget,
    n: u64,
) -> TenantShovel {
    use lapin::options::QueueDeclareOptions;
    let (ns, cluster) = cluster_of(from);
    let source = world.management(ns, &cluster).await.unwrap();
    let conn =
        tiermq_tests::load::probe_connection(target, "ingest-setup", Duration::from_secs(10))
            .await
            .unwrap();
    let ch = conn.create_channel().await.unwrap();
    for q in ["inbox", "ingested"] {
        ch.queue_declare(
            q.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    }
    source
        .put_shovel(
            TENANT,
            "ingest",
            &tiermq_broker::model::ShovelSpec {
                src_uri: tiermq_broker::Secret::new(format!("amqp:///{TENANT}")),
                src_queue: "inbox".into(),
                dest_uri: tiermq_broker::Secret::new(format!("amqp:///{TENANT}")),
                dest_queue: "ingested".into(),
                ack_mode: "on-confirm".into(),
                src_delete_after: None,
                prefetch: Some(100),
            },
        )
        .await
        .unwrap();
    publish_to(&conn, "inbox", n).await;
    let moved = wait_until(Duration::from_secs(30), || async {
        ready_in(&conn, "ingested").await == n
    })
    .await;
    assert!(moved, "the tenant's shovel moves on the source");
    let _ = conn.close(200, "done".into()).await;
    TenantShovel { before: n }
}

impl TenantShovel {
    /// After the conversion: the shovel runs on the destination, ingestion goes on there, and
    /// `ingested` holds exactly what went in (nothing left behind, nothing twice).
    pub async fn check_after(
        &self,
        world: &World,
        to: Tier,
        target: &tiermq_tests::load::AmqpTarget,
    ) {
        let (ns, cluster) = cluster_of(to);
        let destination = world.management(ns, &cluster).await.unwrap();
        let shovels: Vec<String> = destination
            .list_shovels(TENANT)
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert!(
            shovels.iter().any(|s| s == "ingest"),
            "the tenant's shovel moved to the destination: {shovels:?}"
        );
        let conn =
            tiermq_tests::load::probe_connection(target, "ingest-after", Duration::from_secs(10))
                .await
                .unwrap();
        publish_to(&conn, "inbox", 20).await;
        let want = self.before + 20;
        let all = wait_until(Duration::from_secs(30), || async {
            ready_in(&conn, "ingested").await == want
        })
        .await;
        let got = ready_in(&conn, "ingested").await;
        assert!(all, "ingested holds {got} messages, expected {want}");
        let _ = conn.close(200, "done".into()).await;
    }
}

/// Publishes `n` persistent messages to `queue` through `conn`, each confirmed.
pub async fn publish_to(conn: &lapin::Connection, queue: &str, n: u64) {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for i in 0..n {
        let c = ch
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                format!("ingest-{i}").as_bytes(),
                lapin::BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap();
        assert!(c.await.unwrap().is_ack());
    }
}

async fn ready_in(conn: &lapin::Connection, queue: &str) -> u64 {
    let Ok(ch) = conn.create_channel().await else {
        return 0;
    };
    let passive = lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    match ch
        .queue_declare(queue.into(), passive, lapin::types::FieldTable::default())
        .await
    {
        Ok(q) => u64::from(q.message_count()),
        Err(_) => 0,
    }
}

/// The pause before fault window `n` (counted from 0): the first comes 1 s after the flip, the
/// next 2 s after each 3 s window, so a conversion of about 10 s (a downgrade with a small backlog)
/// still runs through two windows.
fn chaos_gap(n: u32) -> Duration {
    if n == 0 {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(2)
    }
}

/// Kubernetes API faults aimed at the operator alone: it runs as its own user, and while the
/// conversion runs its requests fail in turns for 3 s each with 2 s between — answered 500,
/// 409, 503 and 429, refused (connection reset), and left hanging until the window ends — and
/// its open watches break at the start of each window. The test's own clients are unaffected.
pub struct ApiChaos {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<u32>,
}

/// The user the operator runs as under [`ApiChaos`].
const CHAOS_USER: &str = "tiermq-operator-under-faults";

impl ApiChaos {
    fn start(world: &mut World) -> ApiChaos {
        use kubesim::apiserver::{ClientFaultMode, ClientSelector};
        let kubeconfig = world.dir.join("operator-under-faults.kubeconfig");
        world
            .cluster
            .api()
            .write_kubeconfig_for_user(&kubeconfig, CHAOS_USER, &["system:masters".to_string()])
            .unwrap();
        world
            .operator
            .as_mut()
            .expect("the scenario started the operator")
            .restart_with(Supervision {
                restart: true,
                kill_every: None,
                env: vec![("KUBECONFIG".into(), kubeconfig.display().to_string())],
            })
            .unwrap();
        let faults = world.cluster.api().client_faults();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let modes = [
                    ClientFaultMode::Error(500),
                    ClientFaultMode::Error(409),
                    ClientFaultMode::Refuse,
                    ClientFaultMode::Error(503),
                    ClientFaultMode::Hang,
                    ClientFaultMode::Error(429),
                ];
                let mut windows = 0;
                // Bounded: at most 60 windows (5 minutes), fewer when the conversion ends.
                for mode in modes.iter().cycle().take(60) {
                    tokio::time::sleep(chaos_gap(windows)).await;
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    faults.start(
                        ClientSelector::user(CHAOS_USER),
                        *mode,
                        Some(Duration::from_secs(3)),
                    );
                    windows += 1;
                    tokio::time::sleep(Duration::from_secs(3)).await;
                }
                faults.clear();
                windows
            }
        });
        ApiChaos { stop, task }
    }

    /// Ends the faults and checks they hit the operator.
    async fn stop(self, world: &World, scenario_name: &str) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let windows = self.task.await.unwrap();
        world.cluster.api().client_faults().clear();
        let records = world.cluster.api().request_log().records_of(CHAOS_USER);
        let failed = records.iter().filter(|r| r.fault.is_some()).count();
        println!(
            "{scenario_name}: {windows} fault windows; the operator sent {} requests, {failed} of them failed by a fault",
            records.len()
        );
        assert!(windows >= 2, "the conversion ran through fault windows");
        assert!(failed > 0, "the faults hit the operator's requests");
    }
}

/// Every broker's management API (Service port 15672, through kubesim's kube-proxy) fails in
/// turns while the conversion runs: for 3 s with 2 s between, new connections are answered
/// `500`, left hanging until the window ends, or reset, and the connections open at the start of
/// a window are closed. AMQP is untouched.
pub struct ManagementChaos {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<u32>,
    faults: kubesim::sim::kubeproxy::ProxyFaults,
}

const MANAGEMENT_PORT: u16 = 15672;

impl ManagementChaos {
    fn start(world: &World) -> ManagementChaos {
        use kubesim::sim::kubeproxy::ProxyFaultMode;
        let faults = world
            .cluster
            .proxy_faults()
            .expect("kubesim runs its controllers");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = stop.clone();
            let faults = faults.clone();
            async move {
                let modes = [
                    ProxyFaultMode::Http500,
                    ProxyFaultMode::Hang,
                    ProxyFaultMode::Reset,
                ];
                let mut windows = 0;
                // Bounded: at most 60 windows (5 minutes), fewer when the conversion ends.
                for mode in modes.iter().cycle().take(60) {
                    tokio::time::sleep(chaos_gap(windows)).await;
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    faults.set(MANAGEMENT_PORT, *mode);
                    windows += 1;
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    faults.clear(MANAGEMENT_PORT);
                }
                windows
            }
        });
        ManagementChaos { stop, task, faults }
    }

    /// Ends the faults and checks they hit the operator.
    async fn stop(self, scenario_name: &str) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let windows = self.task.await.unwrap();
        self.faults.clear(MANAGEMENT_PORT);
        let hits = self.faults.hits();
        println!(
            "{scenario_name}: {windows} management fault windows; {hits} management connections failed by a fault"
        );
        assert!(windows >= 2, "the conversion ran through fault windows");
        assert!(hits > 0, "the faults hit the operator's management calls");
    }
}

/// What [`spawn_broker_kill`] did.
pub struct KilledBrokers {
    pub phase: MigrationPhase,
    pub pods: Vec<String>,
    /// From the kill to the last of the pods' brokers running again (a new process).
    pub back_after: Option<Duration>,
}

impl std::fmt::Display for KilledBrokers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SIGKILLed the brokers of {:?} in {:?}; running again after {}",
            self.pods,
            self.phase,
            self.back_after
                .map_or("(not seen)".to_string(), |d| format!(
                    "{:.1}s",
                    d.as_secs_f64()
                ))
        )
    }
}

/// Watches the instance and, the first time it is in `phase`, SIGKILLs the broker process
/// groups of `cluster`'s pods in `ns`; then waits (bounded) for the kubelet to run them again.
/// Ends with `None` when the phase never came within 5 minutes.
pub fn spawn_broker_kill(
    world: &World,
    phase: MigrationPhase,
    ns: &'static str,
    cluster: String,
) -> tokio::task::JoinHandle<Option<KilledBrokers>> {
    let pids = world
        .cluster
        .broker_pids_handle()
        .expect("kubesim runs its controllers");
    let instances = world.instances(NS);
    tokio::spawn(async move {
        let reached = tokio::time::timeout(
            Duration::from_secs(300),
            tiermq_tests::harness::reached_phase(instances, NAME, &[phase]),
        )
        .await;
        if reached != Ok(true) {
            return None;
        }
        let prefix = format!("{ns}/{cluster}-");
        let victims: Vec<(String, u32)> = pids
            .get()
            .into_iter()
            .filter(|(pod, _)| pod.starts_with(&prefix))
            .collect();
        assert!(!victims.is_empty(), "no running broker matches {prefix}");
        let killed = Instant::now();
        for (_, pid) in &victims {
            // The broker's whole process group (rabbitmq-server and its Erlang VM).
            unsafe { libc::kill(-(*pid as i32), libc::SIGKILL) };
        }
        let mut back_after = None;
        while killed.elapsed() < Duration::from_secs(60) {
            let now = pids.get();
            if victims
                .iter()
                .all(|(pod, old)| now.get(pod).is_some_and(|new| new != old))
            {
                back_after = Some(killed.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some(KilledBrokers {
            phase,
            pods: victims.into_iter().map(|(p, _)| p).collect(),
            back_after,
        })
    })
}

/// The IP of pod `ns/name` once it is Ready.
pub async fn ready_ip(c: &kube::Client, ns: &str, name: &str) -> Option<String> {
    let pod = kube::Api::<k8s_openapi::api::core::v1::Pod>::namespaced(c.clone(), ns)
        .get_opt(name)
        .await
        .ok()??;
    let st = pod.status?;
    let ready = st
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    (ready && pod.metadata.deletion_timestamp.is_none())
        .then_some(st.pod_ip)
        .flatten()
}

/// Deletes broker pod `ns/name` and waits for its replacement to be Ready with a new IP, as a
/// real cluster's network would give it; returns (old IP, new IP).
pub async fn move_broker_pod(world: &World, ns: &str, name: &str) -> (String, String) {
    let c = world.cluster.client();
    let old = ready_ip(&c, ns, name).await.expect("the pod is ready");
    world
        .kubectl
        .ok(&["-n", ns, "delete", "pod", name, "--wait=false"], None)
        .await
        .unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(new) = ready_ip(&c, ns, name).await.filter(|ip| *ip != old) {
            return (old, new);
        }
        assert!(
            std::time::Instant::now() < until,
            "{ns}/{name} came back Ready with a new IP"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until the load has confirmed and consumed `more` messages beyond `since`; the time it
/// took, or `None` after `timeout`.
pub async fn flowing_again(
    load: &tiermq_tests::load::Load,
    since: tiermq_tests::load::LoadStats,
    more: u64,
    timeout: Duration,
) -> Option<Duration> {
    let t = std::time::Instant::now();
    wait_until(timeout, || async {
        let now = load.stats();
        now.confirmed >= since.confirmed + more && now.received >= since.received + more
    })
    .await
    .then(|| t.elapsed())
}
