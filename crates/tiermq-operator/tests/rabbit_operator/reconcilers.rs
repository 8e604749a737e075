//! The real reconcilers, run in-process against the simulated cluster (kubesim: a real API server,
//! real `rabbitmq-server` brokers per pod, a kube-proxy forwarding ClusterIPs), checked with a
//! real AMQP client through the instance's Service.
//!
//! - A SharedCluster and a shared instance: the tenant exists on the real broker and the
//!   credentials Secret logs in over AMQP through the instance Service's ClusterIP.
//! - Upgrade shared → dedicated with messages waiting (drain by shovel): the phases pass in order,
//!   every message arrives on the dedicated broker, the source tenant is gone, the credentials
//!   Secret is unchanged.
//!
//! - A flip back before the cutover: the abort keeps every message; GitOps tools read the
//!   conversion as `Reconciling` and its end as `TierServed` (`kubectl wait` on it, for real);
//!   the `tiermq.io/paused` annotation stops reconciling until it is removed, and does not hold
//!   a deletion (instance deleted mid-conversion).
//!
//! At most 2 brokers run per test (shared + dedicated); tests in this binary run one at a time.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::json;
use tiermq_broker::{ClusterEndpoint, ManagementClient};
use tiermq_crd::{MigrationPhase, RabbitMQInstance, SharedCluster, Tier};
use tiermq_operator::build::{admin_secret, credentials};
use tiermq_operator::config::RunArgs;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const NS: &str = "default";
const BOOT: Duration = Duration::from_secs(180);
/// The broker image these tests run (RabbitMQ 3.10, the host's; named so a change of the default
/// image does not change what they run).
const IMAGE: &str = "rabbitmq:3.10-management";

/// A kubesim cluster with the CRDs and the operator running in-process; stops both on drop.
struct Env {
    cluster: Option<kubesim::cluster::Cluster>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// Where the operator serves /metrics, /healthz, /readyz.
    metrics_addr: std::net::SocketAddr,
    operator: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// The operator's client and settings, to start it again ([`Env::restart_operator`]).
    op_client: kube::Client,
    args: RunArgs,
    _dir: tempfile::TempDir,
}

impl Env {
    async fn start() -> Env {
        Self::start_in(false).await
    }

    /// With `private`, kubesim's folder sits inside a folder only root may enter (a `mktemp -d`
    /// folder, mode 0700), so no broker's user can reach its data folder.
    async fn start_in(private: bool) -> Env {
        Self::start_with(private, None).await
    }

    /// [`Env::start_in`]; with `flags`, brokers boot enabling only those feature flags (like
    /// brokers upgraded from an older release).
    async fn start_with(private: bool, flags: Option<&str>) -> Env {
        Self::start_configured(private, flags, |_| {}).await
    }

    /// [`Env::start_with`], the operator's settings changed by `configure` first.
    async fn start_configured(
        private: bool,
        flags: Option<&str>,
        configure: impl FnOnce(&mut RunArgs),
    ) -> Env {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info,kube=warn,kubesim=warn".into()),
            )
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().unwrap();
        let cluster_dir = if private {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
            dir.path().join("cluster")
        } else {
            dir.path().to_path_buf()
        };
        let mut cfg = kubesim::cluster::ClusterConfig::new(cluster_dir);
        if let Some(flags) = flags {
            cfg = cfg.with_initial_feature_flags(flags);
        }
        let cluster = kubesim::cluster::start(cfg).await.expect("kubesim starts");
        let client = cluster.client();
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        for (_, yaml) in tiermq_crd::crd_files() {
            let crd: CustomResourceDefinition = serde_yaml::from_str(&yaml).unwrap();
            crds.create(&PostParams::default(), &crd).await.unwrap();
        }
        let mut args = RunArgs::local(NS);
        args.metrics_addr = free_addr();
        let metrics_addr = args.metrics_addr;
        args.broker_stats_interval_ms = 500;
        args.drain_poll_seconds = 1;
        configure(&mut args);
        // Namespaced mode runs as a ServiceAccount with the operator's rules as Roles in the
        // watched namespaces only, so a request outside them is refused, not quietly allowed.
        let client = if args.watch_namespaces.is_empty() {
            client
        } else {
            namespaced_identity(&cluster, &args.watch_namespaces).await
        };
        let (tx, op) = spawn_operator(client.clone(), args.clone());
        Env {
            cluster: Some(cluster),
            stop: Some(tx),
            metrics_addr,
            operator: Some(op),
            op_client: client,
            args,
            _dir: dir,
        }
    }

    /// Stops the operator cleanly and starts a fresh one (new metrics, empty caches) with the
    /// same client and settings, serving /metrics on a new port.
    async fn restart_operator(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(op) = self.operator.take() {
            let r = tokio::time::timeout(Duration::from_secs(30), op).await;
            assert!(matches!(r, Ok(Ok(Ok(())))), "operator stops cleanly: {r:?}");
        }
        self.args.metrics_addr = free_addr();
        self.metrics_addr = self.args.metrics_addr;
        let (tx, op) = spawn_operator(self.op_client.clone(), self.args.clone());
        self.stop = Some(tx);
        self.operator = Some(op);
    }

    fn client(&self) -> kube::Client {
        self.cluster.as_ref().unwrap().client()
    }

    async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(op) = self.operator.take() {
            let r = tokio::time::timeout(Duration::from_secs(30), op).await;
            assert!(matches!(r, Ok(Ok(Ok(())))), "operator stops cleanly: {r:?}");
        }
        if let Some(c) = self.cluster.take() {
            c.shutdown().await;
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(op) = self.operator.take() {
            op.abort();
        }
        // Cluster's own Drop kills the brokers.
        drop(self.cluster.take());
    }
}

/// A loopback address with a free port.
fn free_addr() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

type OperatorTask = tokio::task::JoinHandle<anyhow::Result<()>>;

/// Runs the operator in-process until the returned sender fires (or is dropped).
fn spawn_operator(
    client: kube::Client,
    args: RunArgs,
) -> (tokio::sync::oneshot::Sender<()>, OperatorTask) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let op = tokio::spawn(tiermq_operator::operator::run_with_client(
        client,
        args,
        async move {
            let _ = rx.await;
        },
    ));
    (tx, op)
}

/// The ServiceAccount `default/tiermq-operator` bound to the operator's generated rules as a
/// Role in each of `namespaces` (created when missing); a client authenticated as it.
async fn namespaced_identity(
    cluster: &kubesim::cluster::Cluster,
    namespaces: &[String],
) -> kube::Client {
    use k8s_openapi::api::core::v1::Namespace;
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let admin = cluster.client();
    let pp = PostParams::default();
    let rules = crate::operator_identity(&admin, NS, OPERATOR_SA).await;
    for ns in namespaces {
        let n: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        let _ = Api::<Namespace>::all(admin.clone()).create(&pp, &n).await;
        let role: Role = serde_json::from_value(json!({
            "metadata": {"name": "tiermq-operator", "namespace": ns}, "rules": rules
        }))
        .unwrap();
        Api::<Role>::namespaced(admin.clone(), ns)
            .create(&pp, &role)
            .await
            .unwrap();
        let binding: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": "tiermq-operator", "namespace": ns},
            "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_SA, "namespace": NS}],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tiermq-operator"}
        }))
        .unwrap();
        Api::<RoleBinding>::namespaced(admin.clone(), ns)
            .create(&pp, &binding)
            .await
            .unwrap();
    }
    let token = cluster
        .api()
        .issue_token(NS, OPERATOR_SA, Duration::from_secs(3600))
        .unwrap();
    kube::Client::try_from(cluster.api().token_config(&token.token)).unwrap()
}

/// The ServiceAccount the namespaced-mode operator runs as.
const OPERATOR_SA: &str = "tiermq-operator";

async fn eventually<T, F, Fut>(what: &str, timeout: Duration, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    kubesim::cluster::wait_for(what, timeout, f)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Changes an annotation of SharedCluster `name` every second (each change is a reconcile, so
/// a test need not wait out a slow retry) until its `Degraded` condition has `status`; returns
/// that condition.
async fn poke_until_degraded_is(
    scs: &Api<SharedCluster>,
    name: &str,
    status: &str,
    what: &str,
    timeout: Duration,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    let pokes = std::sync::atomic::AtomicU32::new(0);
    eventually(what, timeout, || {
        let n = pokes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let scs = scs.clone();
        async move {
            let _ = scs
                .patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(
                        json!({"metadata": {"annotations": {"test/poke": n.to_string()}}}),
                    ),
                )
                .await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let st = scs.get(name).await.ok()?.status?;
            st.conditions
                .into_iter()
                .find(|c| c.type_ == tiermq_crd::conditions::DEGRADED && c.status == status)
        }
    })
    .await
}

async fn create_shared_cluster(c: &kube::Client, name: &str) {
    let sc: SharedCluster = serde_json::from_value(json!({
        "apiVersion": "tiermq.io/v1alpha1", "kind": "SharedCluster",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"replicas": 1, "image": IMAGE, "capacity": {"maxInstances": 5}}
    }))
    .unwrap();
    Api::<SharedCluster>::namespaced(c.clone(), NS)
        .create(&PostParams::default(), &sc)
        .await
        .unwrap();
}

async fn create_instance(c: &kube::Client, name: &str, shared: &str) {
    create_instance_draining_by(c, name, shared, "Shovel").await
}

async fn create_instance_draining_by(c: &kube::Client, name: &str, shared: &str, drain: &str) {
    create_instance_on(c, name, "Shared", shared, drain).await
}

async fn create_instance_on(c: &kube::Client, name: &str, tier: &str, shared: &str, drain: &str) {
    let i: RabbitMQInstance = serde_json::from_value(json!({
        "apiVersion": "tiermq.io/v1alpha1", "kind": "RabbitMQInstance",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "series": "Subscription", "tier": tier,
            "shared": {"clusterRef": {"name": shared}},
            "dedicated": {"replicas": 1, "image": IMAGE},
            "migration": {"drainStrategy": drain, "gracePeriodSeconds": 2}
        }
    }))
    .unwrap();
    Api::<RabbitMQInstance>::namespaced(c.clone(), NS)
        .create(&PostParams::default(), &i)
        .await
        .unwrap();
}

async fn instance(c: &kube::Client, name: &str) -> RabbitMQInstance {
    Api::<RabbitMQInstance>::namespaced(c.clone(), NS)
        .get(name)
        .await
        .unwrap()
}

async fn cluster_ip(c: &kube::Client, service: &str) -> Option<String> {
    let svc = Api::<Service>::namespaced(c.clone(), NS)
        .get_opt(service)
        .await
        .ok()??;
    svc.spec?
        .cluster_ip
        .filter(|ip| !ip.is_empty() && ip != "None")
}

/// The admin client of a cluster, through its Service's ClusterIP.
async fn admin_client(c: &kube::Client, cluster: &str) -> ManagementClient {
    let s = Api::<Secret>::namespaced(c.clone(), NS)
        .get(&format!("{cluster}-admin"))
        .await
        .unwrap();
    let creds = admin_secret::read_admin(&s).unwrap();
    let ip = cluster_ip(c, cluster).await.unwrap();
    ManagementClient::new(ClusterEndpoint {
        cluster: cluster.into(),
        url: format!("http://{ip}:15672"),
        username: creds.username,
        password: tiermq_broker::Secret::new(creds.password.expose()),
    })
    .unwrap()
}

/// The instance's AMQP URI as the credentials Secret gives it, with the Service's DNS name
/// replaced by its ClusterIP (the test runs outside cluster DNS).
async fn instance_uri(c: &kube::Client, name: &str) -> (String, BTreeMap<String, Vec<u8>>) {
    let s = Api::<Secret>::namespaced(c.clone(), NS)
        .get(&format!("{name}-credentials"))
        .await
        .unwrap();
    let data: BTreeMap<String, Vec<u8>> = s
        .data
        .clone()
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    let text = |k: &str| String::from_utf8(data[k].clone()).unwrap();
    let ip = cluster_ip(c, name)
        .await
        .expect("instance Service has a ClusterIP");
    let uri = credentials::amqp_uri(
        &text(credentials::KEY_USERNAME),
        &text(credentials::KEY_PASSWORD),
        &ip,
        &text(credentials::KEY_VHOST),
    );
    (uri, data)
}

async fn connect(uri: &str) -> Connection {
    let mut last = None;
    for _ in 0..20 {
        match Connection::connect(uri, ConnectionProperties::default()).await {
            Ok(c) => return c,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("AMQP connect through the instance Service failed: {last:?}")
}

async fn publish(conn: &Connection, queue: &str, ids: std::ops::Range<u64>) {
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    for id in ids {
        let confirm = ch
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                id.to_string().as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap();
        assert!(confirm.await.unwrap().is_ack(), "message {id} confirmed");
    }
    let _ = ch.close(200, "done".into()).await;
}

/// Consumes with manual acks until `expected` ids arrived or `idle` passes without a delivery.
async fn consume(
    conn: &Connection,
    queue: &str,
    expected: usize,
    idle: Duration,
) -> BTreeMap<u64, u32> {
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(100, BasicQosOptions::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut seen = BTreeMap::new();
    while seen.len() < expected {
        match tokio::time::timeout(idle, consumer.next()).await {
            Ok(Some(Ok(d))) => {
                let id: u64 = std::str::from_utf8(&d.data).unwrap().parse().unwrap();
                *seen.entry(id).or_insert(0) += 1;
                d.ack(BasicAckOptions::default()).await.unwrap();
            }
            Ok(Some(Err(e))) => panic!("consumer failed: {e}"),
            Ok(None) | Err(_) => break,
        }
    }
    let _ = ch.close(200, "done".into()).await;
    seen
}

async fn wait_ready_shared(c: &kube::Client, name: &str) -> RabbitMQInstance {
    eventually(
        &format!("instance {name} Ready on the shared tier"),
        BOOT,
        || async {
            let i = instance(c, name).await;
            let st = i.status.clone()?;
            (st.tier == Some(Tier::Shared)
                && st.phase == Some(tiermq_crd::InstancePhase::Ready)
                && st.migration_phase == Some(MigrationPhase::Stable))
            .then_some(i)
        },
    )
    .await
}

/// The sum of the samples of `metric` in a Prometheus text page whose labels contain `labels`.
fn metric_sum(page: &str, metric: &str, labels: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(metric) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn scrape(env: &Env) -> String {
    let url = format!("http://{}/metrics", env.metrics_addr);
    for _ in 0..50 {
        if let Ok(r) = tiermq_testkit::tls::http_client().get(&url).send().await {
            return r.text().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no /metrics at {url}");
}

/// An operator restarted over a steady SharedCluster and instance reconciles both and changes
/// nothing: no write to the Kubernetes API, no write to the broker (issue 14's "0 writes while
/// idle"; a steady instance is also looked at again every 5 minutes, the same way).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_operator_reconciles_a_steady_instance_without_writing_anything() {
    let _serial = SERIAL.lock().await;
    // As its own ServiceAccount (namespaced mode), so its requests are told from the test's.
    let mut env =
        Env::start_configured(false, None, |a| a.watch_namespaces = vec![NS.into()]).await;
    let c = env.client();
    create_shared_cluster(&c, "main").await;
    create_instance(&c, "orders", "main").await;
    wait_ready_shared(&c, "orders").await;
    // Let the first reconciles' follow-ups (status, routing) settle.
    tokio::time::sleep(Duration::from_secs(5)).await;

    env.restart_operator().await;
    let user = format!("system:serviceaccount:{NS}:{OPERATOR_SA}");
    let log = env.cluster.as_ref().unwrap().api().request_log();
    let mark = log.records_of(&user).len();
    // Wait until the new operator reconciled the SharedCluster and the instance, then a while.
    eventually(
        "the restarted operator's first reconciles",
        Duration::from_secs(60),
        || async {
            let page = scrape(&env).await;
            let done = |c: &str| {
                metric_sum(
                    &page,
                    "tiermq_reconciles_total",
                    &format!("controller=\"{c}\""),
                ) >= 1.0
            };
            (done("instance") && done("sharedcluster")).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let page = scrape(&env).await;
    let after = log.records_of(&user);
    let writes: Vec<String> = after[mark..]
        .iter()
        .filter(|r| !matches!(r.verb.as_str(), "get" | "list" | "watch"))
        .map(|r| format!("{} {}/{} {}", r.verb, r.resource, r.name, r.code))
        .collect();
    let reads = after.len() - mark - writes.len();
    let broker = |m: &str| {
        metric_sum(
            &page,
            "tiermq_broker_requests_total",
            &format!("method=\"{m}\""),
        )
    };
    println!(
        "after restart: {reads} API reads, {} API writes; broker GET {}, PUT {}, POST {}, DELETE {}",
        writes.len(),
        broker("GET"),
        broker("PUT"),
        broker("POST"),
        broker("DELETE")
    );
    assert!(
        writes.is_empty(),
        "the operator wrote to the API: {writes:#?}"
    );
    assert!(broker("GET") > 0.0, "the operator looked at the broker");
    for m in ["PUT", "POST", "DELETE"] {
        assert_eq!(broker(m), 0.0, "{m} requests to the broker");
    }
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shared_instance_gets_a_tenant_and_working_credentials_through_its_service() {
    let _serial = SERIAL.lock().await;
    let env = Env::start().await;
    let c = env.client();
    create_shared_cluster(&c, "main").await;
    create_instance(&c, "orders", "main").await;

    let i = wait_ready_shared(&c, "orders").await;
    let st = i.status.as_ref().unwrap();
    assert_eq!(st.serving.as_ref().unwrap().name, "main");
    let ep = st.endpoint.as_ref().unwrap();
    assert_eq!(
        (ep.host.as_str(), ep.vhost.as_str()),
        ("orders.default.svc", "default.orders")
    );
    assert!(
        i.metadata
            .finalizers
            .as_ref()
            .is_some_and(|f| f.iter().any(|f| f == "tiermq.io/cleanup")),
        "finalizer set"
    );
    for cond in &st.conditions {
        assert_eq!(cond.observed_generation, i.metadata.generation, "{cond:?}");
    }

    // The tenant exists on the real broker.
    let admin = admin_client(&c, "main").await;
    assert!(admin.get_vhost("default.orders").await.unwrap().is_some());
    assert!(admin.get_user("default.orders").await.unwrap().is_some());

    // The credentials Secret logs in over AMQP through the instance Service's ClusterIP.
    let (uri, _) = instance_uri(&c, "orders").await;
    let conn = connect(&uri).await;
    publish(&conn, "hello", 0..5).await;
    let seen = consume(&conn, "hello", 5, Duration::from_secs(10)).await;
    assert_eq!(seen.len(), 5, "every published message consumed: {seen:?}");
    let _ = conn.close(200, "done".into()).await;

    // The process serves health, readiness and metrics that reflect the reconciles.
    let http = |path: &'static str| {
        let url = format!("http://{}{path}", env.metrics_addr);
        async move {
            let r = tiermq_testkit::tls::http_client()
                .get(&url)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(http("/healthz").await.0, 200);
    assert_eq!(http("/readyz").await.0, 200);
    let (code, text) = http("/metrics").await;
    assert_eq!(code, 200);
    for want in [
        "tiermq_reconciles_total{controller=\"instance\"}",
        "tiermq_reconciles_total{controller=\"sharedcluster\"}",
        "tiermq_instances{tier=\"Shared\",phase=\"Stable\"} 1",
        "tiermq_reconcile_duration_seconds_count{controller=\"instance\"}",
    ] {
        assert!(text.contains(want), "{want} in /metrics:\n{text}");
    }

    // The SharedCluster counts the instance and is ready.
    let sc = eventually(
        "SharedCluster status counts the instance",
        Duration::from_secs(30),
        || async {
            let sc = Api::<SharedCluster>::namespaced(c.clone(), NS)
                .get("main")
                .await
                .ok()?;
            sc.status
                .clone()
                .filter(|s| s.ready && s.instance_count == 1)
                .map(|_| sc)
        },
    )
    .await;
    assert_eq!(sc.status.unwrap().ready_replicas, 1);

    // A deleted credentials Secret is not regenerated with a new password (that would lock
    // clients out): the tenant keeps its password and the Secret stays absent until restored.
    let secrets = Api::<Secret>::namespaced(c.clone(), NS);
    let original = secrets.get("orders-credentials").await.unwrap();
    secrets
        .delete("orders-credentials", &Default::default())
        .await
        .unwrap();
    // Secrets are not watched (that would take list/watch on every Secret): a spec change
    // makes the next pass, which reports the missing Secret instead of replacing it.
    let instances = Api::<RabbitMQInstance>::namespaced(c.clone(), NS);
    instances
        .patch(
            "orders",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"limits": {"maxQueues": 500}}})),
        )
        .await
        .unwrap();
    let reported = eventually(
        "the missing Secret is reported",
        Duration::from_secs(60),
        || async {
            let st = instances.get("orders").await.ok()?.status?;
            st.conditions.into_iter().find(|c| {
                c.type_ == tiermq_crd::conditions::DEGRADED
                    && c.status == "True"
                    && c.reason == tiermq_crd::conditions::reasons::SECRET_PROBLEM
            })
        },
    )
    .await;
    assert!(
        reported.message.contains("restore the Secret"),
        "{}",
        reported.message
    );
    assert!(
        secrets
            .get_opt("orders-credentials")
            .await
            .unwrap()
            .is_none(),
        "the operator must not generate a new password for a placed instance"
    );
    let conn = connect(&uri).await;
    let _ = conn.close(200, "done".into()).await;
    let mut restored = original.clone();
    restored.metadata.resource_version = None;
    restored.metadata.uid = None;
    restored.metadata.creation_timestamp = None;
    restored.metadata.managed_fields = None;
    secrets
        .create(&PostParams::default(), &restored)
        .await
        .unwrap();
    assert_eq!(
        instance_uri(&c, "orders").await.0,
        uri,
        "restored as it was"
    );

    // Deleting the instance removes its tenant from the broker (finalizer), then the object.
    Api::<RabbitMQInstance>::namespaced(c.clone(), NS)
        .delete("orders", &Default::default())
        .await
        .unwrap();
    eventually("instance gone", Duration::from_secs(60), || async {
        Api::<RabbitMQInstance>::namespaced(c.clone(), NS)
            .get_opt("orders")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    assert!(admin.get_vhost("default.orders").await.unwrap().is_none());
    assert!(admin.get_user("default.orders").await.unwrap().is_none());
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_an_instance_mid_conversion_removes_its_state_on_both_clusters() {
    let _serial = SERIAL.lock().await;
    let env = Env::start().await;
    let c = env.client();
    create_shared_cluster(&c, "main").await;
    // Consume drain and nobody consuming: the conversion stays in DrainingSource, with the tenant
    // on both clusters, until the instance is deleted.
    create_instance_draining_by(&c, "orders", "main", "Consume").await;
    wait_ready_shared(&c, "orders").await;
    let (uri, _) = instance_uri(&c, "orders").await;
    let conn = connect(&uri).await;
    publish(&conn, "work", 0..10).await;
    let _ = conn.close(200, "done".into()).await;

    let api = Api::<RabbitMQInstance>::namespaced(c.clone(), NS);
    api.patch(
        "orders",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"tier": "Dedicated"}})),
    )
    .await
    .unwrap();
    eventually("the conversion waits in DrainingSource", BOOT, || async {
        let st = api.get("orders").await.ok()?.status?;
        (st.migration_phase == Some(MigrationPhase::DrainingSource)).then_some(())
    })
    .await;
    let shared = admin_client(&c, "main").await;
    let dedicated = admin_client(&c, "orders-dedicated").await;
    assert!(shared.get_vhost("default.orders").await.unwrap().is_some());
    assert!(
        dedicated
            .get_vhost("default.orders")
            .await
            .unwrap()
            .is_some()
    );

    // Paused mid-conversion, then deleted: the pause does not hold the deletion.
    api.patch(
        "orders",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"tiermq.io/paused": "true"}}})),
    )
    .await
    .unwrap();
    eventually("the pause is recorded", Duration::from_secs(30), || async {
        let st = api.get("orders").await.ok()?.status?;
        has(&st, "Paused", "True").then_some(())
    })
    .await;
    api.delete("orders", &Default::default()).await.unwrap();
    eventually("instance gone", Duration::from_secs(90), || async {
        api.get_opt("orders").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(
        shared.get_vhost("default.orders").await.unwrap().is_none(),
        "source tenant deleted"
    );
    assert!(shared.get_user("default.orders").await.unwrap().is_none());
    let sts: Api<k8s_openapi::api::apps::v1::StatefulSet> = Api::namespaced(c.clone(), NS);
    assert!(
        sts.get_opt("orders-dedicated").await.unwrap().is_none(),
        "dedicated cluster deleted"
    );
    assert!(
        Api::<Secret>::namespaced(c.clone(), NS)
            .get_opt("orders-dedicated-admin")
            .await
            .unwrap()
            .is_none()
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn downgrade_dedicated_to_shared_closes_source_connections_and_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let env = Env::start().await;
    let c = env.client();
    create_shared_cluster(&c, "main").await;
    create_instance_on(&c, "orders", "Dedicated", "main", "Shovel").await;
    let api = Api::<RabbitMQInstance>::namespaced(c.clone(), NS);
    eventually("instance Ready on its dedicated cluster", BOOT, || async {
        let st = api.get("orders").await.ok()?.status?;
        (st.tier == Some(Tier::Dedicated) && st.phase == Some(tiermq_crd::InstancePhase::Ready))
            .then_some(())
    })
    .await;
    let (uri, secret_before) = instance_uri(&c, "orders").await;
    const N: u64 = 150;
    let conn = connect(&uri).await;
    publish(&conn, "work", 0..N).await;
    // The dedicated cluster's deletion is cut short twice (its admin Secret goes last and
    // cannot be deleted at first): it must be finished later, not forgotten once the
    // StatefulSet is gone.
    env.cluster.as_ref().unwrap().api().faults().fail_writes(
        "",
        "secrets",
        Some("orders-dedicated-admin"),
        2,
        500,
    );
    // An idle client stays connected to the dedicated broker through the flip.
    let errors = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut events = conn.events_listener();
    let sink = errors.clone();
    tokio::spawn(async move {
        while let Some(e) = events.next().await {
            sink.lock().unwrap().push(format!("{e:?}"));
        }
    });

    api.patch(
        "orders",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"tier": "Shared"}})),
    )
    .await
    .unwrap();
    let done = eventually("the downgrade completes", BOOT, || async {
        let st = api.get("orders").await.ok()?.status?;
        (st.tier == Some(Tier::Shared)
            && st.migration_phase == Some(MigrationPhase::Stable)
            && !st.history.is_empty())
        .then_some(st)
    })
    .await;
    let record = done.history.last().unwrap();
    assert_eq!((record.from, record.to), (Tier::Dedicated, Tier::Shared));
    assert_eq!(done.serving.as_ref().unwrap().name, "main");

    // Downgrades close source connections (default policy), with a reason clients can read.
    eventually(
        "the source connection is closed by the broker",
        Duration::from_secs(30),
        || async { (!conn.status().connected()).then_some(()) },
    )
    .await;
    let seen = errors.lock().unwrap().clone();
    eprintln!("client saw: {seen:?}");
    assert!(
        seen.iter().any(|e| e.contains("moved to the Shared tier")),
        "the close reason reaches the client: {seen:?}"
    );

    // Zero loss through the same Service and credentials, now on the shared broker.
    let (uri_after, secret_after) = instance_uri(&c, "orders").await;
    assert_eq!(secret_before, secret_after, "credentials Secret unchanged");
    let conn = connect(&uri_after).await;
    let got = consume(&conn, "work", N as usize, Duration::from_secs(15)).await;
    let lost: Vec<u64> = (0..N).filter(|id| !got.contains_key(id)).collect();
    assert!(lost.is_empty(), "lost {} messages: {lost:?}", lost.len());
    let _ = conn.close(200, "done".into()).await;

    // The dedicated cluster is gone, every object of it.
    let sts: Api<k8s_openapi::api::apps::v1::StatefulSet> = Api::namespaced(c.clone(), NS);
    assert!(sts.get_opt("orders-dedicated").await.unwrap().is_none());
    let labelled = kube::api::ListParams::default().labels(&format!(
        "{}=orders-dedicated",
        tiermq_operator::build::LABEL_CLUSTER
    ));
    let secrets: Vec<String> = Api::<Secret>::namespaced(c.clone(), NS)
        .list(&labelled)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|s| s.metadata.name.unwrap_or_default())
        .collect();
    let services = Api::<Service>::namespaced(c.clone(), NS)
        .list(&labelled)
        .await
        .unwrap()
        .items
        .len();
    let maps = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(c.clone(), NS)
        .list(&labelled)
        .await
        .unwrap()
        .items
        .len();
    assert_eq!(
        (secrets.clone(), services, maps),
        (Vec::<String>::new(), 0, 0),
        "left behind by the dedicated cluster's deletion"
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flip_back_before_the_cutover_aborts_and_keeps_every_message() {
    let _serial = SERIAL.lock().await;
    let env = Env::start().await;
    let c = env.client();
    create_shared_cluster(&c, "main").await;
    create_instance(&c, "orders", "main").await;
    wait_ready_shared(&c, "orders").await;
    let (uri, _) = instance_uri(&c, "orders").await;
    const N: u64 = 50;
    let conn = connect(&uri).await;
    publish(&conn, "work", 0..N).await;
    let _ = conn.close(200, "done".into()).await;

    let api = Api::<RabbitMQInstance>::namespaced(c.clone(), NS);
    let flip = |tier: &'static str| {
        let api = api.clone();
        async move {
            api.patch(
                "orders",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"tier": tier}})),
            )
            .await
            .unwrap();
        }
    };
    flip("Dedicated").await;
    // The dedicated cluster takes a while to boot: flip back while it is being prepared.
    let during = eventually(
        "the conversion prepares the destination",
        Duration::from_secs(60),
        || async {
            let i = api.get("orders").await.ok()?;
            let st = i.status.as_ref()?;
            (st.migration_phase == Some(MigrationPhase::PreparingDestination)).then_some(i)
        },
    )
    .await;
    // GitOps tools read the conversion as under way: the spec is observed, Reconciling True,
    // TierServed False, not stalled.
    assert_gitops(&during, ("True", "Converting"), ("False", "Converting"));
    flip("Shared").await;
    // `kubectl wait` on TierServed returns only once the spec's tier serves with no conversion
    // left (kubectl also requires the condition's observedGeneration to be current).
    let kubeconfig = env
        .cluster
        .as_ref()
        .unwrap()
        .kubeconfig_path()
        .to_path_buf();
    let waited = kubectl_wait_tier_served(&kubeconfig, "180s").await;
    assert!(
        waited.status.success(),
        "kubectl wait: {}",
        String::from_utf8_lossy(&waited.stderr)
    );
    let done_i = api.get("orders").await.unwrap();
    let done = done_i.status.clone().unwrap();
    assert_eq!(done.migration_phase, Some(MigrationPhase::Stable));
    assert_gitops(&done_i, ("False", "UpToDate"), ("True", "SpecTierServed"));
    let record = done.history.last().expect("the abort is recorded");
    assert_eq!(format!("{:?}", record.outcome), "Aborted");
    assert_eq!(done.tier, Some(Tier::Shared));
    assert_eq!(done.serving.as_ref().unwrap().name, "main");
    let sts: Api<k8s_openapi::api::apps::v1::StatefulSet> = Api::namespaced(c.clone(), NS);
    eventually(
        "the dedicated cluster is removed",
        Duration::from_secs(30),
        || async {
            sts.get_opt("orders-dedicated")
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await;

    // Still served by the shared broker with every message, writes allowed.
    let conn = connect(&uri).await;
    let got = consume(&conn, "work", N as usize, Duration::from_secs(15)).await;
    assert_eq!(got.len(), N as usize, "every message kept: {got:?}");
    publish(&conn, "work", N..N + 1).await;
    let _ = conn.close(200, "done".into()).await;

    // Paused: a flip is not acted on (nor observed), the pause shows as a condition.
    let annotate = |v: serde_json::Value| {
        let api = api.clone();
        async move {
            api.patch(
                "orders",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"tiermq.io/paused": v}}})),
            )
            .await
            .unwrap();
        }
    };
    annotate(json!("true")).await;
    eventually("the pause is recorded", Duration::from_secs(30), || async {
        let st = api.get("orders").await.ok()?.status?;
        has(&st, "Paused", "True").then_some(())
    })
    .await;
    flip("Dedicated").await;
    // TierServed is still True, but for the generation before the flip: kubectl does not take
    // it for the new spec and times out.
    let waited = kubectl_wait_tier_served(&kubeconfig, "3s").await;
    let said = String::from_utf8_lossy(&waited.stderr);
    assert!(
        !waited.status.success() && said.contains("timed out"),
        "kubectl wait must time out, not return on the previous generation's TierServed: {said}"
    );
    let paused = api.get("orders").await.unwrap();
    let st = paused.status.as_ref().unwrap();
    assert_eq!(st.migration_phase, Some(MigrationPhase::Stable), "paused");
    assert!(
        st.observed_generation < paused.metadata.generation,
        "a paused instance does not observe its new spec"
    );
    assert!(has(st, "Reconciling", "False"));
    // Flipped back and resumed: nothing to convert, the pause clears.
    flip("Shared").await;
    annotate(serde_json::Value::Null).await;
    let resumed = eventually("reconciling resumes", Duration::from_secs(30), || async {
        let i = api.get("orders").await.ok()?;
        let st = i.status.as_ref()?;
        (has(st, "Paused", "False") && st.observed_generation == i.metadata.generation).then_some(i)
    })
    .await;
    assert_gitops(&resumed, ("False", "UpToDate"), ("True", "SpecTierServed"));
    env.shutdown().await;
}

/// `kubectl wait` for instance `orders`' `TierServed` condition, at most `timeout`.
async fn kubectl_wait_tier_served(
    kubeconfig: &std::path::Path,
    timeout: &str,
) -> std::process::Output {
    let kubeconfig = kubeconfig.to_path_buf();
    let timeout = format!("--timeout={timeout}");
    tokio::task::spawn_blocking(move || {
        std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args([
                "wait",
                "-n",
                NS,
                "rabbitmqinstance/orders",
                "--for=condition=TierServed",
                &timeout,
            ])
            .output()
            .expect("kubectl runs")
    })
    .await
    .unwrap()
}

/// True when `st` has condition `type_` with `status`.
fn has(st: &tiermq_crd::RabbitMQInstanceStatus, type_: &str, status: &str) -> bool {
    st.conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == status)
}

/// `i`'s status observes its spec, is not stalled, and has `Reconciling` and `TierServed` as
/// `(status, reason)`, every condition at the current generation.
fn assert_gitops(i: &RabbitMQInstance, reconciling: (&str, &str), tier_served: (&str, &str)) {
    let st = i.status.as_ref().unwrap();
    let generation = i.metadata.generation;
    assert_eq!(st.observed_generation, generation);
    let get = |t: &str| {
        let c = st
            .conditions
            .iter()
            .find(|c| c.type_ == t)
            .unwrap_or_else(|| panic!("{t} in {:?}", st.conditions));
        assert_eq!(c.observed_generation, generation, "{t}");
        (c.status.as_str(), c.reason.as_str())
    };
    assert_eq!(get("Reconciling"), reconciling);
    assert_eq!(get("TierServed"), tier_served);
    assert_eq!(get("Stalled"), ("False", "NotStalled"));
}

/// Publishes ids with confirms through the instance Service every `every`, reconnecting on any
/// error, until `stop` is set; returns the confirmed ids.
async fn steady_publisher(
    uri: String,
    queue: &'static str,
    every: Duration,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::collections::BTreeSet<u64> {
    use std::sync::atomic::Ordering;
    let mut confirmed = std::collections::BTreeSet::new();
    let mut next = 0u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    'outer: while !stop.load(Ordering::Relaxed) && tokio::time::Instant::now() < deadline {
        let Ok(conn) = Connection::connect(&uri, ConnectionProperties::default()).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let Ok(ch) = conn.create_channel().await else {
            continue;
        };
        if ch
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .is_err()
            || ch
                .queue_declare(
                    queue.into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .is_err()
        {
            continue;
        }
        while !stop.load(Ordering::Relaxed) && tokio::time::Instant::now() < deadline {
            let id = next;
            next += 1;
            let r = async {
                ch.basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    id.to_string().as_bytes(),
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await?
                .await
            }
            .await;
            match r {
                Ok(c) if c.is_ack() => {
                    confirmed.insert(id);
                }
                Ok(_) => {}
                Err(_) => continue 'outer,
            }
            tokio::time::sleep(every).await;
        }
        let _ = conn.close(200, "done".into()).await;
    }
    confirmed
}

/// Consumes (manual acks) through the instance Service, reconnecting on any error, until `stop`
/// is set and nothing arrived for `idle`; returns how often each id arrived.
async fn steady_consumer(
    uri: String,
    queue: &'static str,
    idle: Duration,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> BTreeMap<u64, u32> {
    use std::sync::atomic::Ordering;
    let mut seen: BTreeMap<u64, u32> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while tokio::time::Instant::now() < deadline {
        let Ok(conn) = Connection::connect(&uri, ConnectionProperties::default()).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let Ok(ch) = conn.create_channel().await else {
            continue;
        };
        let _ = ch.basic_qos(50, BasicQosOptions::default()).await;
        let _ = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        let Ok(mut consumer) = ch
            .basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
        else {
            continue;
        };
        loop {
            match tokio::time::timeout(idle, consumer.next()).await {
                Ok(Some(Ok(d))) => {
                    let id: u64 = std::str::from_utf8(&d.data).unwrap().parse().unwrap();
                    *seen.entry(id).or_insert(0) += 1;
                    if d.ack(BasicAckOptions::default()).await.is_err() {
                        break;
                    }
                }
                Ok(Some(Err(_))) | Ok(None) => break,
                Err(_) if stop.load(Ordering::Relaxed) => return seen,
                Err(_) => {}
            }
        }
        let _ = conn.close(200, "reconnect".into()).await;
    }
    seen
}

/// Converts `orders` from `from` to `to` (draining by `drain`) while a publisher (every 20 ms,
/// confirms) and a consumer (manual acks) keep running through the instance Service, both opened
/// before the flip and reconnecting when closed. Asserts the conversion completes while the
/// publisher still publishes and every confirmed message is received.
async fn conversion_under_steady_load(from: &str, to: Tier, drain: &str) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let env = Env::start().await;
    let c = env.client();
    create_shared_cluster(&c, "main").await;
    create_instance_on(&c, "orders", from, "main", drain).await;
    let api = Api::<RabbitMQInstance>::namespaced(c.clone(), NS);
    eventually("instance Ready", BOOT, || async {
        let st = api.get("orders").await.ok()?.status?;
        (st.phase == Some(tiermq_crd::InstancePhase::Ready)).then_some(())
    })
    .await;
    let (uri, secret_before) = instance_uri(&c, "orders").await;

    let stop_pub = Arc::new(AtomicBool::new(false));
    let stop_con = Arc::new(AtomicBool::new(false));
    let publisher = tokio::spawn(steady_publisher(
        uri.clone(),
        "load",
        Duration::from_millis(20),
        stop_pub.clone(),
    ));
    let consumer = tokio::spawn(steady_consumer(
        uri.clone(),
        "load",
        Duration::from_secs(10),
        stop_con.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;

    api.patch(
        "orders",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"tier": to}})),
    )
    .await
    .unwrap();
    let done = kubesim::cluster::wait_for(
        "the conversion completes while the publisher keeps publishing",
        Duration::from_secs(240),
        || async {
            let st = api.get("orders").await.ok()?.status?;
            (st.tier == Some(to)
                && st.migration_phase == Some(MigrationPhase::Stable)
                && !st.history.is_empty())
            .then_some(st)
        },
    )
    .await;
    stop_pub.store(true, Ordering::Relaxed);
    let confirmed = publisher.await.unwrap();
    stop_con.store(true, Ordering::Relaxed);
    let seen = consumer.await.unwrap();
    let lost: Vec<u64> = confirmed
        .iter()
        .filter(|id| !seen.contains_key(id))
        .copied()
        .collect();
    let dups: u32 = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "steady {from} -> {to} ({drain}): {} confirmed, {} received, {} lost, {dups} duplicates, completed: {}",
        confirmed.len(),
        seen.len(),
        lost.len(),
        done.is_ok()
    );
    let st = done.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        lost.is_empty(),
        "lost {} confirmed messages: {lost:?}",
        lost.len()
    );
    assert!(confirmed.len() > 100, "the load ran: {}", confirmed.len());
    let (_, secret_after) = instance_uri(&c, "orders").await;
    assert_eq!(secret_before, secret_after, "credentials Secret unchanged");
    let want = match to {
        Tier::Dedicated => "orders-dedicated",
        Tier::Shared => "main",
    };
    assert_eq!(st.serving.as_ref().unwrap().name, want);
    env.shutdown().await;
}

/// The steady-load combinations (the end-to-end tests in `tests/` run the conversions under
/// load through the binary in `make test`); opt-in with `make test-faults` / the `full` nextest
/// profile.
mod matrix {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn upgrade_shared_to_dedicated_passes_the_phases_in_order_and_loses_nothing() {
        let _serial = SERIAL.lock().await;
        let env = Env::start().await;
        let c = env.client();
        create_shared_cluster(&c, "main").await;
        create_instance(&c, "orders", "main").await;
        wait_ready_shared(&c, "orders").await;
        let (uri, secret_before) = instance_uri(&c, "orders").await;

        // Messages waiting on the shared broker before the flip.
        const N: u64 = 200;
        let conn = connect(&uri).await;
        publish(&conn, "work", 0..N).await;
        let _ = conn.close(200, "done".into()).await;

        let api = Api::<RabbitMQInstance>::namespaced(c.clone(), NS);
        api.patch(
            "orders",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"tier": "Dedicated"}})),
        )
        .await
        .unwrap();

        // Watch the phases as they are recorded.
        let seen_log = std::sync::Arc::new(std::sync::Mutex::new(Vec::<MigrationPhase>::new()));
        let done = eventually(
            "the upgrade completes",
            BOOT + Duration::from_secs(120),
            || {
                let api = api.clone();
                let seen = seen_log.clone();
                async move {
                    let i = api.get("orders").await.ok()?;
                    let st = i.status?;
                    if let Some(p) = st.migration_phase {
                        let mut seen = seen.lock().unwrap();
                        if seen.last() != Some(&p) {
                            seen.push(p);
                        }
                    }
                    (st.tier == Some(Tier::Dedicated)
                        && st.migration_phase == Some(MigrationPhase::Stable)
                        && !st.history.is_empty())
                    .then_some(st)
                }
            },
        )
        .await;
        let expected = [
            MigrationPhase::Stable,
            MigrationPhase::PreparingDestination,
            MigrationPhase::DualWriteDualRead,
            MigrationPhase::SingleWriteDualRead,
            MigrationPhase::DrainingSource,
            MigrationPhase::DestinationOnly,
            MigrationPhase::Completed,
            MigrationPhase::Stable,
        ];
        let seen = seen_log.lock().unwrap().clone();
        // Polling may miss short phases, but what it saw must follow the expected order.
        let mut rest = expected.iter();
        assert!(
            seen.iter().all(|p| rest.any(|e| e == p)),
            "phases observed in order: {seen:?}"
        );
        let record = done.history.last().unwrap();
        assert_eq!(
            (record.from, record.to, format!("{:?}", record.outcome)),
            (Tier::Shared, Tier::Dedicated, "Completed".to_string())
        );
        let recorded: Vec<MigrationPhase> = record.phase_seconds.iter().map(|p| p.phase).collect();
        assert_eq!(
            recorded,
            expected[1..7].to_vec(),
            "every phase recorded in order"
        );
        assert_eq!(done.serving.as_ref().unwrap().name, "orders-dedicated");

        // Zero loss: every message is on the dedicated broker, reached through the same Service.
        let (uri_after, secret_after) = instance_uri(&c, "orders").await;
        assert_eq!(secret_before, secret_after, "credentials Secret unchanged");
        let conn = connect(&uri_after).await;
        let got = consume(&conn, "work", N as usize, Duration::from_secs(15)).await;
        let lost: Vec<u64> = (0..N).filter(|id| !got.contains_key(id)).collect();
        let dups: u32 = got.values().map(|n| n - 1).sum();
        assert!(lost.is_empty(), "lost {} messages: {lost:?}", lost.len());
        eprintln!(
            "upgrade: {N} sent, {} received, 0 lost, {dups} duplicates; phases {seen:?}",
            got.len()
        );
        let _ = conn.close(200, "done".into()).await;

        // The source tenant is gone from the shared broker; the dedicated one serves it.
        let shared = admin_client(&c, "main").await;
        assert!(shared.get_vhost("default.orders").await.unwrap().is_none());
        let dedicated = admin_client(&c, "orders-dedicated").await;
        assert!(
            dedicated
                .get_vhost("default.orders")
                .await
                .unwrap()
                .is_some()
        );

        // The transitions were announced as Events (once each).
        let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(c.clone(), NS);
        let list = events.list(&Default::default()).await.unwrap();
        let reasons: Vec<String> = list
            .items
            .iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("orders"))
            .filter_map(|e| e.reason.clone())
            .collect();
        for want in [
            "ConversionStarted",
            "WriteCutover",
            "SourceDrained",
            "ConversionCompleted",
        ] {
            assert_eq!(
                reasons.iter().filter(|r| *r == want).count(),
                1,
                "{want} emitted once: {reasons:?}"
            );
        }
        env.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn upgrade_under_steady_load_completes_while_publishing_and_loses_nothing() {
        let _serial = SERIAL.lock().await;
        conversion_under_steady_load("Shared", Tier::Dedicated, "Shovel").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn downgrade_under_steady_load_with_consume_drain_loses_nothing() {
        let _serial = SERIAL.lock().await;
        conversion_under_steady_load("Dedicated", Tier::Shared, "Consume").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn upgrade_under_steady_load_with_consume_drain_loses_nothing() {
        let _serial = SERIAL.lock().await;
        conversion_under_steady_load("Shared", Tier::Dedicated, "Consume").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn downgrade_under_steady_load_with_shovel_drain_loses_nothing() {
        let _serial = SERIAL.lock().await;
        conversion_under_steady_load("Dedicated", Tier::Shared, "Shovel").await;
    }

    /// A flip outside `spec.migration.window` waits with the window's start in status and
    /// nothing created on the destination; the operator looks again when the window opens
    /// (its requeue, not a periodic resync) and the conversion runs to the end. The window opens
    /// at the first full minute at least 40 s away, on that day only (~1-2 min of waiting).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_flip_outside_the_maintenance_window_waits_for_it_then_converts() {
        use chrono::{Datelike, DurationRound, TimeDelta, Utc};
        use k8s_openapi::api::apps::v1::StatefulSet;
        use tiermq_operator::controller::plan::from_time;

        let _serial = SERIAL.lock().await;
        let env = Env::start().await;
        let c = env.client();
        create_shared_cluster(&c, "main").await;
        create_instance(&c, "orders", "main").await;
        wait_ready_shared(&c, "orders").await;

        let opens = (Utc::now() + TimeDelta::seconds(40 + 59))
            .duration_trunc(TimeDelta::minutes(1))
            .unwrap();
        let closes = opens + TimeDelta::minutes(10);
        let day = tiermq_crd::Weekday::from(opens.weekday());
        let api = Api::<RabbitMQInstance>::namespaced(c.clone(), NS);
        api.patch(
            "orders",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {
                "tier": "Dedicated",
                "migration": {"window": {
                    "days": [day],
                    "startTime": opens.format("%H:%M").to_string(),
                    "endTime": closes.format("%H:%M").to_string(),
                }},
            }})),
        )
        .await
        .unwrap();
        let st = eventually(
            "the flip waits for the window",
            Duration::from_secs(30),
            || async {
                let st = api.get("orders").await.ok()?.status?;
                (st.migration_phase == Some(MigrationPhase::Blocked)).then_some(st)
            },
        )
        .await;
        assert!(Utc::now() < opens, "seen waiting before the window opens");
        let held = st
            .conditions
            .iter()
            .find(|c| c.type_ == "ConversionBlocked")
            .unwrap();
        assert_eq!(
            (held.status.as_str(), held.reason.as_str()),
            ("True", "OutsideMaintenanceWindow")
        );
        let start = opens.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        assert!(held.message.contains(&start), "{}", held.message);
        assert_eq!(
            st.next_maintenance_window.as_ref().map(from_time),
            Some(opens)
        );
        assert!(has(&st, "Reconciling", "True"));

        // Until the window opens: still waiting, no dedicated cluster.
        let sets: Api<StatefulSet> = Api::namespaced(c.clone(), NS);
        while Utc::now() < opens - TimeDelta::seconds(3) {
            let st = api.get("orders").await.unwrap().status.unwrap();
            assert_eq!(st.migration_phase, Some(MigrationPhase::Blocked));
            assert!(sets.get_opt("orders-dedicated").await.unwrap().is_none());
            tokio::time::sleep(Duration::from_secs(5)).await;
        }

        let wait = (opens - Utc::now()).to_std().unwrap_or_default();
        let done = eventually(
            "the conversion runs once the window opens",
            wait + BOOT,
            || async {
                let st = api.get("orders").await.ok()?.status?;
                (st.migration_phase == Some(MigrationPhase::Stable)
                    && st.tier == Some(Tier::Dedicated))
                .then_some(st)
            },
        )
        .await;
        assert_eq!(done.next_maintenance_window, None);
        let record = done.history.last().expect("the conversion is in history");
        let started = from_time(&record.started);
        assert!(
            started >= opens && started < opens + TimeDelta::seconds(15),
            "started at {started}, the window opened at {opens}"
        );
        assert!(has(&done, "ConversionBlocked", "False"));

        let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(c.clone(), NS);
        let reasons: Vec<String> = events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("orders"))
            .filter_map(|e| e.reason)
            .collect();
        assert_eq!(
            reasons
                .iter()
                .filter(|r| *r == "WaitingForMaintenanceWindow")
                .count(),
            1,
            "{reasons:?}"
        );
        eprintln!("window opened {opens}, conversion started {started}");
        env.shutdown().await;
    }

    /// Namespaced mode: the operator watches `default` and `team-b` with Roles there only
    /// (no ClusterRole). An instance in `team-b` on the SharedCluster in `default` is served
    /// and upgraded; an instance in `team-c` is left alone; the API server refused none of the
    /// operator's requests and it made none outside those namespaces.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_namespaced_operator_serves_its_namespaces_with_roles_only() {
        let _serial = SERIAL.lock().await;
        let env = Env::start_configured(false, None, |a| {
            a.watch_namespaces = vec![NS.to_string(), "team-b".to_string()];
        })
        .await;
        let c = env.client();
        create_shared_cluster(&c, "main").await;
        let ns = |name: &str| {
            serde_json::from_value::<k8s_openapi::api::core::v1::Namespace>(
                json!({"metadata": {"name": name}}),
            )
            .unwrap()
        };
        let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(c.clone());
        let _ = namespaces
            .create(&PostParams::default(), &ns("team-c"))
            .await;
        for (name, in_ns) in [("orders", "team-b"), ("ignored", "team-c")] {
            let i: RabbitMQInstance = serde_json::from_value(json!({
                "apiVersion": "tiermq.io/v1alpha1", "kind": "RabbitMQInstance",
                "metadata": {"name": name, "namespace": in_ns},
                "spec": {
                    "series": "Subscription", "tier": "Shared",
                    "shared": {"clusterRef": {"name": "main", "namespace": NS}},
                    "dedicated": {"replicas": 1, "image": IMAGE},
                    "migration": {"drainStrategy": "Shovel", "gracePeriodSeconds": 2}
                }
            }))
            .unwrap();
            Api::<RabbitMQInstance>::namespaced(c.clone(), in_ns)
                .create(&PostParams::default(), &i)
                .await
                .unwrap();
        }
        let team_b = Api::<RabbitMQInstance>::namespaced(c.clone(), "team-b");
        eventually("orders Ready on the shared tier", BOOT, || async {
            let st = team_b.get("orders").await.ok()?.status?;
            (st.tier == Some(Tier::Shared) && st.phase == Some(tiermq_crd::InstancePhase::Ready))
                .then_some(())
        })
        .await;
        team_b
            .patch(
                "orders",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"tier": "Dedicated"}})),
            )
            .await
            .unwrap();
        eventually("the upgrade completes", BOOT, || async {
            let st = team_b.get("orders").await.ok()?.status?;
            (st.tier == Some(Tier::Dedicated)
                && st.migration_phase == Some(MigrationPhase::Stable)
                && !st.history.is_empty())
            .then_some(())
        })
        .await;
        let ignored = Api::<RabbitMQInstance>::namespaced(c.clone(), "team-c")
            .get("ignored")
            .await
            .unwrap();
        assert!(
            ignored.status.is_none(),
            "team-c is not watched: {:?}",
            ignored.status
        );
        assert!(ignored.finalizers().is_empty());

        let user = format!("system:serviceaccount:{NS}:{OPERATOR_SA}");
        let records = env
            .cluster
            .as_ref()
            .unwrap()
            .api()
            .request_log()
            .records_of(&user);
        assert!(
            records.len() > 50,
            "the operator's requests are logged: {}",
            records.len()
        );
        let refused: Vec<String> = records
            .iter()
            .filter(|r| r.code == 403)
            .map(|r| format!("{} {} {}/{}", r.verb, r.resource, r.namespace, r.name))
            .collect();
        assert!(refused.is_empty(), "refused: {refused:?}");
        let outside: Vec<String> = records
            .iter()
            .filter(|r| r.namespace != NS && r.namespace != "team-b")
            .map(|r| {
                format!(
                    "{} {} {:?}/{} ({})",
                    r.verb, r.resource, r.namespace, r.name, r.uri
                )
            })
            .collect();
        assert!(
            outside.is_empty(),
            "requests outside the watched namespaces: {outside:?}"
        );
        env.shutdown().await;
    }

    /// The bounds on tenants, with real brokers: the operator's policy refuses a dedicated
    /// cluster larger than allowed (nothing applied); a SharedCluster that does not take the
    /// instance's namespace holds its downgrade with the dedicated cluster serving; once it
    /// does, the downgrade runs, the tenant gets the SharedCluster's default vhost limits, its
    /// policies arrive without the keys the SharedCluster does not admit, and every message
    /// arrives.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn tenant_terms_and_operator_policy_bound_what_an_instance_gets() {
        use tiermq_broker::model::Policy;
        use tiermq_crd::conditions::{INVALID_SPEC, reasons};

        let _serial = SERIAL.lock().await;
        let env = Env::start_configured(false, None, |a| {
            a.dedicated_images = vec![IMAGE.to_string()];
        })
        .await;
        let c = env.client();
        let sc: SharedCluster = serde_json::from_value(json!({
            "apiVersion": "tiermq.io/v1alpha1", "kind": "SharedCluster",
            "metadata": {"name": "main", "namespace": NS},
            "spec": {"replicas": 1, "image": IMAGE, "tenants": {
                "namespaces": ["team-b"],
                "defaultLimits": {"maxConnections": 7, "maxQueues": 11}
            }}
        }))
        .unwrap();
        let scs = Api::<SharedCluster>::namespaced(c.clone(), NS);
        scs.create(&PostParams::default(), &sc).await.unwrap();
        create_instance_on(&c, "orders", "Dedicated", "main", "Shovel").await;
        let api = Api::<RabbitMQInstance>::namespaced(c.clone(), NS);
        eventually("instance Ready on its dedicated cluster", BOOT, || async {
            let st = api.get("orders").await.ok()?.status?;
            (st.tier == Some(Tier::Dedicated) && st.phase == Some(tiermq_crd::InstancePhase::Ready))
                .then_some(())
        })
        .await;

        // Operator policy: another image is refused; nothing of it reaches the StatefulSet.
        let sets: Api<k8s_openapi::api::apps::v1::StatefulSet> = Api::namespaced(c.clone(), NS);
        api.patch(
            "orders",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"dedicated": {"image": "rabbitmq:4.0-management"}}})),
        )
        .await
        .unwrap();
        let refused = eventually(
            "the policy refusal is reported",
            Duration::from_secs(60),
            || async {
                let st = api.get("orders").await.ok()?.status?;
                st.conditions
                    .into_iter()
                    .find(|c| c.type_ == INVALID_SPEC && c.status == "True")
            },
        )
        .await;
        assert_eq!(refused.reason, reasons::OUTSIDE_OPERATOR_POLICY);
        assert!(
            refused
                .message
                .contains("\"rabbitmq:4.0-management\" does not start with an allowed prefix"),
            "{}",
            refused.message
        );
        let replicas = sets
            .get("orders-dedicated")
            .await
            .unwrap()
            .spec
            .unwrap()
            .replicas;
        assert_eq!(replicas, Some(1));
        api.patch(
            "orders",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"dedicated": {"image": IMAGE}}})),
        )
        .await
        .unwrap();
        eventually("the refusal clears", Duration::from_secs(60), || async {
            let st = api.get("orders").await.ok()?.status?;
            has(&st, INVALID_SPEC, "False").then_some(())
        })
        .await;

        // A policy with a key shared brokers do not admit, and a backlog.
        let ded = admin_client(&c, "orders-dedicated").await;
        let (uri, secret) = instance_uri(&c, "orders").await;
        let vhost = String::from_utf8(secret[credentials::KEY_VHOST].clone()).unwrap();
        for (name, def) in [
            (
                "bounded",
                json!({"max-length": 1000, "queue-master-locator": "min-masters"}),
            ),
            ("pinned", json!({"queue-master-locator": "client-local"})),
        ] {
            let p: Policy = serde_json::from_value(json!({
                "name": name, "pattern": "^work$", "apply-to": "queues", "priority": 0,
                "definition": def
            }))
            .unwrap();
            ded.put_policy(&vhost, &p).await.unwrap();
        }
        const N: u64 = 120;
        let conn = connect(&uri).await;
        publish(&conn, "work", 0..N).await;
        let _ = conn.close(200, "published".into()).await;

        // The SharedCluster does not take namespace `default`: the downgrade is held.
        api.patch(
            "orders",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"tier": "Shared"}})),
        )
        .await
        .unwrap();
        let held = eventually("the downgrade is held", Duration::from_secs(60), || async {
            let st = api.get("orders").await.ok()?.status?;
            (st.migration_phase == Some(MigrationPhase::Blocked)).then_some(st)
        })
        .await;
        let c0 = held
            .conditions
            .iter()
            .find(|c| c.type_ == "ConversionBlocked")
            .unwrap();
        assert_eq!(c0.reason, reasons::NAMESPACE_NOT_ALLOWED, "{}", c0.message);
        assert_eq!(held.tier, Some(Tier::Dedicated));

        scs.patch(
            "main",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"tenants": {"namespaces": ["team-b", NS]}}})),
        )
        .await
        .unwrap();
        let done = eventually("the downgrade completes", BOOT, || async {
            let st = api.get("orders").await.ok()?.status?;
            (st.tier == Some(Tier::Shared)
                && st.migration_phase == Some(MigrationPhase::Stable)
                && !st.history.is_empty())
            .then_some(st)
        })
        .await;
        assert_eq!(done.serving.as_ref().unwrap().name, "main");

        let shared = admin_client(&c, "main").await;
        let limits = shared.get_vhost_limits(&vhost).await.unwrap();
        assert_eq!(
            (limits.max_connections, limits.max_queues),
            (Some(7), Some(11)),
            "the SharedCluster's default limits"
        );
        let policies = shared.list_policies(&vhost).await.unwrap();
        let mine: BTreeMap<String, serde_json::Map<String, serde_json::Value>> = policies
            .into_iter()
            .filter(|p| !p.name.starts_with("tiermq"))
            .map(|p| (p.name, p.definition))
            .collect();
        assert_eq!(
            mine,
            BTreeMap::from([(
                "bounded".to_string(),
                json!({"max-length": 1000}).as_object().unwrap().clone()
            )]),
            "only admitted keys arrive"
        );
        let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(c.clone(), NS);
        let notes: Vec<String> = events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("TranslatedForDestination"))
            .filter_map(|e| e.note)
            .collect();
        assert!(
            notes.iter().any(
                |n| n.contains("bounded (queue-master-locator), pinned (queue-master-locator)")
            ),
            "{notes:?}"
        );

        let (uri, _) = instance_uri(&c, "orders").await;
        let conn = connect(&uri).await;
        let got = consume(&conn, "work", N as usize, Duration::from_secs(15)).await;
        let lost: Vec<u64> = (0..N).filter(|id| !got.contains_key(id)).collect();
        assert!(lost.is_empty(), "lost {} messages: {lost:?}", lost.len());
        let _ = conn.close(200, "done".into()).await;

        // Service types: NodePort once admitted is kept when the terms narrow; a change to a
        // type they do not admit is refused and the Service keeps its type.
        let services = Api::<Service>::namespaced(c.clone(), NS);
        let svc_type = || async {
            services
                .get("orders")
                .await
                .unwrap()
                .spec
                .unwrap()
                .type_
                .unwrap()
        };
        let set_types = |types: serde_json::Value| {
            let scs = scs.clone();
            async move {
                scs.patch(
                    "main",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"tenants": {"accessTypes": types}}})),
                )
                .await
                .unwrap();
            }
        };
        let set_access = |t: &'static str| {
            let api = api.clone();
            async move {
                api.patch(
                    "orders",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"access": {"serviceType": t}}})),
                )
                .await
                .unwrap();
            }
        };
        set_types(json!(["ClusterIP", "NodePort"])).await;
        set_access("NodePort").await;
        eventually(
            "the Service turns NodePort",
            Duration::from_secs(60),
            || async { (svc_type().await == "NodePort").then_some(()) },
        )
        .await;
        set_types(json!(["ClusterIP"])).await;
        api.patch(
            "orders",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"limits": {"maxQueues": 12}}})),
        )
        .await
        .unwrap();
        eventually(
            "the pass after narrowing succeeds",
            Duration::from_secs(60),
            || async {
                let i = api.get("orders").await.ok()?;
                let st = i.status?;
                (st.observed_generation == i.metadata.generation && has(&st, INVALID_SPEC, "False"))
                    .then_some(())
            },
        )
        .await;
        assert_eq!(
            svc_type().await,
            "NodePort",
            "kept after the terms narrowed"
        );
        set_access("LoadBalancer").await;
        let refused = eventually(
            "the LoadBalancer is refused",
            Duration::from_secs(60),
            || async {
                let st = api.get("orders").await.ok()?.status?;
                st.conditions
                    .into_iter()
                    .find(|c| c.type_ == INVALID_SPEC && c.status == "True")
            },
        )
        .await;
        assert_eq!(
            refused.reason,
            reasons::ACCESS_TYPE_NOT_ALLOWED,
            "{}",
            refused.message
        );
        assert_eq!(svc_type().await, "NodePort", "the Service keeps its type");
        env.shutdown().await;
    }

    /// The drain proof rests on what the queues hold, not on the statistics: the SharedCluster's
    /// brokers emit statistics every 15 s while the operator believes 500 ms, the grace period is 0,
    /// and messages are published right before the cutover. Nothing is deleted while a message
    /// exists: every one of them arrives on the dedicated cluster. (Before the drain asked the
    /// queues, stale statistics showed the source empty and it was retired with its messages.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn stale_statistics_and_no_grace_period_never_delete_a_message() {
        let _serial = SERIAL.lock().await;
        let env = Env::start().await;
        let c = env.client();
        let sc: SharedCluster = serde_json::from_value(json!({
            "apiVersion": "tiermq.io/v1alpha1", "kind": "SharedCluster",
            "metadata": {"name": "main", "namespace": NS},
            "spec": {"replicas": 1, "image": IMAGE, "capacity": {"maxInstances": 5},
                     "additionalConfig": "collect_statistics_interval = 15000\n"}
        }))
        .unwrap();
        Api::<SharedCluster>::namespaced(c.clone(), NS)
            .create(&PostParams::default(), &sc)
            .await
            .unwrap();
        let i: RabbitMQInstance = serde_json::from_value(json!({
            "apiVersion": "tiermq.io/v1alpha1", "kind": "RabbitMQInstance",
            "metadata": {"name": "orders", "namespace": NS},
            "spec": {
                "series": "Subscription", "tier": "Shared",
                "shared": {"clusterRef": {"name": "main"}},
                "dedicated": {"image": IMAGE},
                "migration": {"drainStrategy": "Shovel", "gracePeriodSeconds": 0}
            }
        }))
        .unwrap();
        let api = Api::<RabbitMQInstance>::namespaced(c.clone(), NS);
        api.create(&PostParams::default(), &i).await.unwrap();
        wait_ready_shared(&c, "orders").await;
        let (uri, _) = instance_uri(&c, "orders").await;
        let conn = connect(&uri).await;
        publish(&conn, "work", 0..100).await;
        api.patch(
            "orders",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"tier": "Dedicated"}})),
        )
        .await
        .unwrap();
        // Right before the cutover: more messages, which the 15 s statistics do not show for a
        // while.
        publish(&conn, "work", 100..200).await;
        let _ = conn.close(200, "done".into()).await;
        eventually(
            "the upgrade completes",
            BOOT + Duration::from_secs(180),
            || {
                let api = api.clone();
                async move {
                    let st = api.get("orders").await.ok()?.status?;
                    (st.tier == Some(Tier::Dedicated)
                        && st.migration_phase == Some(MigrationPhase::Stable)
                        && !st.history.is_empty())
                    .then_some(())
                }
            },
        )
        .await;
        let (uri_after, _) = instance_uri(&c, "orders").await;
        let conn = connect(&uri_after).await;
        let got = consume(&conn, "work", 200, Duration::from_secs(15)).await;
        let lost: Vec<u64> = (0..200).filter(|id| !got.contains_key(id)).collect();
        assert!(lost.is_empty(), "lost {} messages: {lost:?}", lost.len());
        let _ = conn.close(200, "done".into()).await;
        env.shutdown().await;
    }

    /// A step that keeps failing is reported on the instance (condition `Degraded` naming the step
    /// and the cause, one Warning Event), not only logged; the conversion goes on once the fault is
    /// gone, and the condition turns False.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_step_that_keeps_failing_is_reported_on_the_instance_and_cleared_after() {
        use k8s_openapi::api::core::v1::Event;
        let _serial = SERIAL.lock().await;
        let env = Env::start().await;
        let c = env.client();
        create_shared_cluster(&c, "main").await;
        create_instance(&c, "orders", "main").await;
        wait_ready_shared(&c, "orders").await;
        // The dedicated StatefulSet cannot be written for the next three tries.
        env.cluster.as_ref().unwrap().api().faults().fail_writes(
            "apps",
            "statefulsets",
            Some("orders-dedicated"),
            3,
            500,
        );
        let api = Api::<RabbitMQInstance>::namespaced(c.clone(), NS);
        api.patch(
            "orders",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"tier": "Dedicated"}})),
        )
        .await
        .unwrap();
        let degraded = eventually("Degraded True", Duration::from_secs(60), || {
            let api = api.clone();
            async move {
                let st = api.get("orders").await.ok()?.status?;
                st.conditions
                    .into_iter()
                    .find(|c| c.type_ == tiermq_crd::conditions::DEGRADED && c.status == "True")
            }
        })
        .await;
        println!("degraded: {} — {}", degraded.reason, degraded.message);
        assert_eq!(
            degraded.reason,
            tiermq_crd::conditions::reasons::KUBERNETES_API_ERROR
        );
        assert!(
            degraded.message.contains("EnsureDedicatedCluster")
                && degraded.message.contains("orders-dedicated"),
            "{}",
            degraded.message
        );
        let warnings = Api::<Event>::namespaced(c.clone(), NS)
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| {
                e.reason.as_deref() == Some(tiermq_crd::conditions::events::RECONCILE_FAILING)
            })
            .count();
        assert!(warnings >= 1, "a Warning Event says it too");
        let done = eventually(
            "the upgrade completes once writes go through",
            BOOT + Duration::from_secs(120),
            || {
                let api = api.clone();
                async move {
                    let st = api.get("orders").await.ok()?.status?;
                    (st.tier == Some(Tier::Dedicated)
                        && st.migration_phase == Some(MigrationPhase::Stable))
                    .then_some(st)
                }
            },
        )
        .await;
        let c = done
            .conditions
            .iter()
            .find(|c| c.type_ == tiermq_crd::conditions::DEGRADED)
            .unwrap();
        assert_eq!(c.status, "False", "{c:?}");
        env.shutdown().await;
    }

    /// An image change of a running SharedCluster is an in-place upgrade. A jump RabbitMQ cannot
    /// take in place (3.10 → 4.0) leaves the StatefulSet's image alone and is reported on the
    /// SharedCluster (`Degraded`, UnsupportedUpgrade, the way there in the message) with a Warning
    /// Event; an allowed change (a 3.10 patch tag, which kubesim runs with the same 3.10) first
    /// enables the stable feature flags the brokers booted without (the Normal Event names them),
    /// then rolls the brokers, and a
    /// persistent message published before the roll is still on the tenant's durable queue after.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_shared_cluster_image_change_is_refused_or_rolled_with_feature_flags_first() {
        use k8s_openapi::api::core::v1::{Event, Pod};
        let _serial = SERIAL.lock().await;
        // The brokers boot like ones upgraded from an older release: some stable flags disabled.
        let env = Env::start_with(
            false,
            Some("quorum_queue,virtual_host_metadata,user_limits,implicit_default_bindings"),
        )
        .await;
        let c = env.client();
        create_shared_cluster(&c, "main").await;
        create_instance(&c, "orders", "main").await;
        wait_ready_shared(&c, "orders").await;
        let disabled_before: Vec<String> = admin_client(&c, "main")
            .await
            .list_feature_flags()
            .await
            .unwrap()
            .into_iter()
            .filter(|f| f.is_stable() && f.state == "disabled")
            .map(|f| f.name)
            .collect();
        assert!(
            disabled_before.iter().any(|f| f == "stream_queue"),
            "{disabled_before:?}"
        );
        let (uri, _) = instance_uri(&c, "orders").await;
        let conn = connect(&uri).await;
        publish(&conn, "kept", 0..3).await;
        let _ = conn.close(200, "done".into()).await;
        let pods: Api<Pod> = Api::namespaced(c.clone(), NS);
        let first_pod = pods.get("main-0").await.unwrap().metadata.uid;
        let scs = Api::<SharedCluster>::namespaced(c.clone(), NS);
        let set_image = |image: &'static str| {
            let scs = scs.clone();
            async move {
                scs.patch(
                    "main",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"image": image}})),
                )
                .await
                .unwrap();
            }
        };

        // Refused: 3.10 → 4.0 skips 3.11 … 3.13.
        set_image("rabbitmq:4.0-management").await;
        let degraded = poke_until_degraded_is(
            &scs,
            "main",
            "True",
            "Degraded UnsupportedUpgrade",
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(
            degraded.reason,
            tiermq_crd::conditions::reasons::UNSUPPORTED_UPGRADE,
            "{degraded:?}"
        );
        assert!(
            degraded.message.contains("upgrade to 3.13 first")
                && degraded.message.contains("tier conversion per instance"),
            "{}",
            degraded.message
        );
        assert_eq!(statefulset_image(&c, "main").await.as_deref(), Some(IMAGE));
        let events = || async {
            Api::<Event>::namespaced(c.clone(), NS)
                .list(&Default::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .filter(|e| e.involved_object.name.as_deref() == Some("main"))
                .map(|e| {
                    (
                        e.type_.unwrap_or_default(),
                        e.reason.unwrap_or_default(),
                        e.message.unwrap_or_default(),
                    )
                })
                .collect::<Vec<_>>()
        };
        let warned = events().await;
        assert!(
            warned
                .iter()
                .any(|(t, _, m)| t == "Warning" && m.contains("upgrade to 3.13 first")),
            "{warned:?}"
        );
        assert_eq!(pods.get("main-0").await.unwrap().metadata.uid, first_pod);

        // Allowed: a patch tag of the same release; feature flags first, then the roll.
        const PATCH: &str = "rabbitmq:3.10.7-management";
        set_image(PATCH).await;
        eventually("the StatefulSet rolled to the patch tag", BOOT, || async {
            (statefulset_image(&c, "main").await.as_deref() == Some(PATCH)).then_some(())
        })
        .await;
        let upgrading = eventually(
            "the UpgradingImage Event",
            Duration::from_secs(30),
            || async {
                events().await.into_iter().find(|(t, r, _)| {
                    t == "Normal" && r == tiermq_crd::conditions::events::UPGRADING_IMAGE
                })
            },
        )
        .await;
        assert!(
            upgrading.2.contains(&format!(
                "enabled {} stable feature flag(s)",
                disabled_before.len()
            )) && upgrading.2.contains("stream_queue")
                && upgrading.2.contains(PATCH),
            "{upgrading:?}"
        );
        eventually("a new broker pod ready on the patch tag", BOOT, || async {
            let p = pods.get("main-0").await.ok()?;
            let image = p.spec.as_ref()?.containers.first()?.image.clone();
            let ready = p
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            (p.metadata.uid != first_pod && image.as_deref() == Some(PATCH) && ready).then_some(())
        })
        .await;
        poke_until_degraded_is(
            &scs,
            "main",
            "False",
            "Degraded cleared after the roll",
            Duration::from_secs(60),
        )
        .await;
        let admin = admin_client(&c, "main").await;
        let flags = eventually("the broker answers after the roll", BOOT, || async {
            admin.list_feature_flags().await.ok()
        })
        .await;
        let disabled: Vec<_> = flags
            .iter()
            .filter(|f| f.is_stable() && f.state != "enabled")
            .collect();
        assert!(disabled.is_empty(), "{disabled:?}");
        let conn = connect(&uri).await;
        let seen = consume(&conn, "kept", 3, Duration::from_secs(10)).await;
        assert_eq!(
            seen.keys().copied().collect::<Vec<_>>(),
            vec![0, 1, 2],
            "the persistent messages survived the roll"
        );
        let _ = conn.close(200, "done".into()).await;
        env.shutdown().await;
    }
}

/// SharedCluster lifecycle: a deleted admin Secret is not generated anew against brokers that
/// keep the old password (Degraded, SecretProblem, saying what to do; restoring it clears that);
/// a SharedCluster with an instance placed on it is not deleted (Ready False, DeletionBlocked,
/// naming the instance) until the instance is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shared_cluster_keeps_its_secrets_and_is_not_deleted_under_its_instances() {
    let _serial = SERIAL.lock().await;
    let env = Env::start().await;
    let c = env.client();
    create_shared_cluster(&c, "main").await;
    create_instance(&c, "orders", "main").await;
    wait_ready_shared(&c, "orders").await;
    let scs = Api::<SharedCluster>::namespaced(c.clone(), NS);
    let secrets = Api::<Secret>::namespaced(c.clone(), NS);
    let kept = secrets.get("main-admin").await.unwrap();
    secrets
        .delete("main-admin", &Default::default())
        .await
        .unwrap();
    let degraded = poke_until_degraded_is(
        &scs,
        "main",
        "True",
        "the SharedCluster reports the missing Secret",
        Duration::from_secs(60),
    )
    .await;
    println!("degraded: {}", degraded.message);
    assert_eq!(
        degraded.reason,
        tiermq_crd::conditions::reasons::SECRET_PROBLEM
    );
    assert!(
        degraded.message.contains("restore the Secret"),
        "{}",
        degraded.message
    );
    assert!(
        secrets.get_opt("main-admin").await.unwrap().is_none(),
        "no new admin password generated against the running brokers"
    );
    // Restored from the backup: the next pass is clean.
    let mut restored = kept.clone();
    restored.metadata.resource_version = None;
    restored.metadata.uid = None;
    restored.metadata.creation_timestamp = None;
    restored.metadata.managed_fields = None;
    secrets
        .create(&PostParams::default(), &restored)
        .await
        .unwrap();
    poke_until_degraded_is(
        &scs,
        "main",
        "False",
        "Degraded clears",
        Duration::from_secs(60),
    )
    .await;

    // Deleting the SharedCluster waits for the instance placed on it.
    scs.delete("main", &Default::default()).await.unwrap();
    let blocked = eventually("deletion is held", Duration::from_secs(30), || async {
        let sc = scs.get_opt("main").await.ok()??;
        let st = sc.status?;
        st.conditions.into_iter().find(|c| {
            c.type_ == tiermq_crd::conditions::READY
                && c.reason == tiermq_crd::conditions::reasons::DELETION_BLOCKED
        })
    })
    .await;
    assert!(
        blocked.message.contains("default/orders"),
        "{}",
        blocked.message
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(scs.get_opt("main").await.unwrap().is_some(), "still there");
    Api::<RabbitMQInstance>::namespaced(c.clone(), NS)
        .delete("orders", &Default::default())
        .await
        .unwrap();
    eventually(
        "the SharedCluster goes once its instance is gone",
        Duration::from_secs(90),
        || async { scs.get_opt("main").await.ok()?.is_none().then_some(()) },
    )
    .await;
    env.shutdown().await;
}

/// Two instances created at the same moment for the last free slot of a SharedCluster: exactly
/// one is placed, the other is held with SharedClusterFull, and the cluster never holds more than
/// its capacity.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_placed_at_once_onto_the_last_slot_get_exactly_one_placement() {
    let _serial = SERIAL.lock().await;
    let env = Env::start().await;
    let c = env.client();
    let sc: SharedCluster = serde_json::from_value(json!({
        "apiVersion": "tiermq.io/v1alpha1", "kind": "SharedCluster",
        "metadata": {"name": "small", "namespace": NS},
        "spec": {"replicas": 1, "image": IMAGE, "capacity": {"maxInstances": 1}}
    }))
    .unwrap();
    Api::<SharedCluster>::namespaced(c.clone(), NS)
        .create(&PostParams::default(), &sc)
        .await
        .unwrap();
    let (a, b) = tokio::join!(
        create_instance(&c, "first", "small"),
        create_instance(&c, "second", "small")
    );
    let _ = (a, b);
    let api = Api::<RabbitMQInstance>::namespaced(c.clone(), NS);
    let outcome = eventually("one placed, one held", BOOT, || {
        let api = api.clone();
        async move {
            let mut placed = 0;
            let mut held = 0;
            for n in ["first", "second"] {
                let st = api.get(n).await.ok()?.status?;
                if st.serving.is_some() {
                    placed += 1;
                }
                if st.conditions.iter().any(|c| {
                    c.status == "True" && c.reason == tiermq_crd::conditions::reasons::NO_CAPACITY
                }) {
                    held += 1;
                }
            }
            (placed + held == 2).then_some((placed, held))
        }
    })
    .await;
    assert_eq!(outcome, (1, 1), "(placed, held)");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let count = Api::<SharedCluster>::namespaced(c.clone(), NS)
        .get("small")
        .await
        .unwrap()
        .status
        .map(|s| s.instance_count);
    assert_eq!(count, Some(1));

    // The slot freed by deleting the placed one goes to the held one, without a change of its
    // own (the SharedCluster no longer being full wakes it; its 30 s retry would too).
    let mut placed = None;
    for n in ["first", "second"] {
        if api
            .get(n)
            .await
            .unwrap()
            .status
            .and_then(|s| s.serving)
            .is_some()
        {
            placed = Some(n);
        }
    }
    let placed = placed.expect("one was placed");
    let held = if placed == "first" { "second" } else { "first" };
    api.delete(placed, &Default::default()).await.unwrap();
    eventually("the held instance takes the freed slot", BOOT, || {
        let api = api.clone();
        async move {
            let st = api.get(held).await.ok()?.status?;
            (st.serving.is_some() && st.phase == Some(tiermq_crd::InstancePhase::Ready))
                .then_some(())
        }
    })
    .await;
    env.shutdown().await;
}

/// Names that would make two resources share objects: a SharedCluster named like an instance's
/// dedicated cluster is refused at admission; a SharedCluster named like an instance in its
/// namespace is reported (`Degraded`, NameConflict, naming the object) and never takes over the
/// instance's Service — the instance that came first keeps serving its clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn names_that_would_collide_are_refused_and_the_first_owner_keeps_serving() {
    let _serial = SERIAL.lock().await;
    let env = Env::start().await;
    let c = env.client();
    create_shared_cluster(&c, "main").await;
    create_instance(&c, "orders", "main").await;
    let i = wait_ready_shared(&c, "orders").await;
    let uid = i.metadata.uid.clone().unwrap();
    let scs = Api::<SharedCluster>::namespaced(c.clone(), NS);
    let sc_named = |name: &str| -> SharedCluster {
        serde_json::from_value(json!({
            "apiVersion": "tiermq.io/v1alpha1", "kind": "SharedCluster",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"replicas": 1, "image": IMAGE, "capacity": {"maxInstances": 5}}
        }))
        .unwrap()
    };

    // `orders-dedicated` is instance orders' dedicated cluster: refused with the reason.
    let err = scs
        .create(&PostParams::default(), &sc_named("orders-dedicated"))
        .await
        .expect_err("a SharedCluster named <instance>-dedicated is refused");
    assert!(
        err.to_string().contains("must not end in -dedicated"),
        "{err}"
    );

    // A SharedCluster named like the instance wants a Service of the instance's Service's name.
    scs.create(&PostParams::default(), &sc_named("orders"))
        .await
        .unwrap();
    let degraded = poke_until_degraded_is(
        &scs,
        "orders",
        "True",
        "the later SharedCluster reports the name conflict",
        Duration::from_secs(150),
    )
    .await;
    println!("degraded: {}", degraded.message);
    assert_eq!(
        degraded.reason,
        tiermq_crd::conditions::reasons::NAME_CONFLICT
    );
    assert!(
        degraded.message.contains("Service default/orders")
            && degraded.message.contains("RabbitMQInstance orders"),
        "{}",
        degraded.message
    );
    // Only a person can clear it: kstatus reads it as stalled, not as still reconciling.
    let st = scs.get("orders").await.unwrap().status.unwrap();
    let of = |t: &str| {
        st.conditions
            .iter()
            .find(|c| c.type_ == t)
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    let conflict = tiermq_crd::conditions::reasons::NAME_CONFLICT.to_string();
    assert_eq!(of("Stalled"), Some(("True".into(), conflict.clone())));
    assert_eq!(of("Reconciling"), Some(("False".into(), conflict)));

    // The instance's Service is untouched: one controller (the instance), and it selects the
    // pods of the cluster the instance is on (`main`, in the same namespace), not the
    // SharedCluster `orders`'.
    let svc = Api::<Service>::namespaced(c.clone(), NS)
        .get("orders")
        .await
        .unwrap();
    let controllers: Vec<_> = svc
        .owner_references()
        .iter()
        .filter(|r| r.controller == Some(true))
        .map(|r| (r.kind.clone(), r.uid.clone()))
        .collect();
    assert_eq!(controllers, [("RabbitMQInstance".to_string(), uid)]);
    let selector = svc
        .spec
        .as_ref()
        .unwrap()
        .selector
        .clone()
        .unwrap_or_default();
    assert_eq!(
        selector.get("tiermq.io/cluster").map(String::as_str),
        Some("main"),
        "the instance Service still routes to main: {selector:?}"
    );
    // ... and its clients still reach their tenant through it.
    let (uri, _) = instance_uri(&c, "orders").await;
    let conn = connect(&uri).await;
    publish(&conn, "still-here", 0..5).await;
    let seen = consume(&conn, "still-here", 5, Duration::from_secs(10)).await;
    assert_eq!(seen.len(), 5, "{seen:?}");
    let _ = conn.close(200, "done".into()).await;

    scs.delete("orders", &Default::default()).await.unwrap();
    eventually(
        "the conflicting SharedCluster goes (nothing is placed on it)",
        Duration::from_secs(60),
        || async { scs.get_opt("orders").await.ok()?.is_none().then_some(()) },
    )
    .await;
    assert!(
        Api::<Service>::namespaced(c.clone(), NS)
            .get_opt("orders")
            .await
            .unwrap()
            .is_some(),
        "deleting the other SharedCluster leaves the instance's Service"
    );
    env.shutdown().await;
}

/// A broker that cannot start (its data folder lies in a folder its user cannot enter, as with
/// `kubesim up --dir` inside a `mktemp -d` folder) is reported as a real kubelet reports it — the
/// pod's container waits in `CrashLoopBackOff` with the start error as its last termination,
/// restarts counted, Warning Events `Failed` and `BackOff` — and the instance's Ready condition
/// carries that, so `kubectl describe rmqi` says why it stays Provisioning.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_that_cannot_start_is_reported_on_its_pod_and_on_the_instance() {
    use k8s_openapi::api::core::v1::{Event, Pod};
    let _serial = SERIAL.lock().await;
    let env = Env::start_in(true).await;
    let c = env.client();
    create_shared_cluster(&c, "main").await;
    create_instance(&c, "orders", "main").await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), NS);
    let st = eventually(
        "the broker pod in CrashLoopBackOff after two restarts",
        Duration::from_secs(60),
        || {
            let pods = pods.clone();
            async move {
                let p = pods.get("main-0").await.ok()?;
                let cs = p.status?.container_statuses?.into_iter().next()?;
                let waiting = cs.state.as_ref()?.waiting.as_ref()?.reason.clone();
                (waiting.as_deref() == Some("CrashLoopBackOff") && cs.restart_count >= 2)
                    .then_some(cs)
            }
        },
    )
    .await;
    let last = st.last_state.unwrap().terminated.unwrap();
    assert_eq!(
        (last.exit_code, last.reason.as_deref()),
        (128, Some("StartError")),
        "{last:?}"
    );
    let why = last.message.unwrap_or_default();
    assert!(why.contains("not reachable by its user"), "{why}");
    let reasons: Vec<(String, String)> = Api::<Event>::namespaced(c.clone(), NS)
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some("main-0"))
        .map(|e| (e.type_.unwrap_or_default(), e.reason.unwrap_or_default()))
        .collect();
    for reason in ["Failed", "BackOff"] {
        assert!(
            reasons.contains(&("Warning".into(), reason.into())),
            "no Warning {reason} on the pod: {reasons:?}"
        );
    }
    let api = Api::<RabbitMQInstance>::namespaced(c.clone(), NS);
    let ready = eventually(
        "the instance's Ready condition naming the crash loop",
        Duration::from_secs(60),
        || {
            let api = api.clone();
            async move {
                let st = api.get("orders").await.ok()?.status?;
                st.conditions.into_iter().find(|c| {
                    c.type_ == tiermq_crd::conditions::READY
                        && c.message.contains("CrashLoopBackOff")
                })
            }
        },
    )
    .await;
    println!("Ready: {} — {}", ready.reason, ready.message);
    assert_eq!(ready.status, "False");
    assert!(
        ready.message.contains("pod main-0 container")
            && ready.message.contains("last exit code 128")
            && ready.message.contains("not reachable by its user"),
        "{}",
        ready.message
    );
    env.shutdown().await;
}

/// The broker image of StatefulSet `name`.
async fn statefulset_image(c: &kube::Client, name: &str) -> Option<String> {
    let sts = Api::<k8s_openapi::api::apps::v1::StatefulSet>::namespaced(c.clone(), NS)
        .get(name)
        .await
        .ok()?;
    tiermq_operator::controller::clusters::running_image(&sts).map(str::to_string)
}

/// A dedicated instance's image change goes by the same rule: 3.10 → 4.0 leaves its
/// StatefulSet's image alone and is reported on the instance (`InvalidSpec`, UnsupportedUpgrade,
/// the way there in the message); setting the running image back clears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dedicated_cluster_image_jump_is_refused_on_the_instance() {
    let _serial = SERIAL.lock().await;
    let env = Env::start().await;
    let c = env.client();
    create_instance_on(&c, "billing", "Dedicated", "main", "Shovel").await;
    let api = Api::<RabbitMQInstance>::namespaced(c.clone(), NS);
    eventually(
        "instance billing Ready on the dedicated tier",
        BOOT,
        || async {
            let st = api.get("billing").await.ok()?.status?;
            (st.tier == Some(Tier::Dedicated) && st.phase == Some(tiermq_crd::InstancePhase::Ready))
                .then_some(())
        },
    )
    .await;
    let set_image = |image: &'static str| {
        let api = api.clone();
        async move {
            api.patch(
                "billing",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"dedicated": {"image": image}}})),
            )
            .await
            .unwrap();
        }
    };
    set_image("rabbitmq:4.0-management").await;
    let refused = eventually(
        "InvalidSpec UnsupportedUpgrade on the instance",
        Duration::from_secs(30),
        || async {
            let st = api.get("billing").await.ok()?.status?;
            st.conditions.into_iter().find(|c| {
                c.type_ == tiermq_crd::conditions::INVALID_SPEC
                    && c.status == "True"
                    && c.reason == tiermq_crd::conditions::reasons::UNSUPPORTED_UPGRADE
            })
        },
    )
    .await;
    assert!(
        refused.message.contains("upgrade to 3.13 first"),
        "{}",
        refused.message
    );
    assert_eq!(
        statefulset_image(&c, "billing-dedicated").await.as_deref(),
        Some(IMAGE)
    );
    set_image(IMAGE).await;
    eventually("InvalidSpec cleared", Duration::from_secs(60), || async {
        let st = api.get("billing").await.ok()?.status?;
        st.conditions
            .iter()
            .any(|c| c.type_ == tiermq_crd::conditions::INVALID_SPEC && c.status == "False")
            .then_some(())
    })
    .await;
    env.shutdown().await;
}
