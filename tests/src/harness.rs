//! A whole test world in a few calls: a kubesim cluster with the CRDs applied by real kubectl, the
//! real `tiermq-operator` binary as a child process (killed with its process group on drop), and
//! helpers to read an instance's status, watch its migration phases and reach its Service.
//!
//! Object names follow the operator's naming contract (`crates/tiermq-operator/src/build/mod.rs`);
//! the tests check that contract from the outside, as a user would.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::Api;
use kube::runtime::watcher;
use tiermq_crd::{MigrationPhase, RabbitMQInstance, RabbitMQInstanceStatus};

use crate::load::AmqpTarget;

/// Phases of a complete conversion, in order.
pub const CONVERSION_PHASES: [MigrationPhase; 6] = [
    MigrationPhase::PreparingDestination,
    MigrationPhase::DualWriteDualRead,
    MigrationPhase::SingleWriteDualRead,
    MigrationPhase::DrainingSource,
    MigrationPhase::DestinationOnly,
    MigrationPhase::Completed,
];

/// The workspace root (parent of `tests/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_path_buf()
}

/// Newest modification time of the files under `dir`.
fn newest_mtime(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        let t = if p.is_dir() {
            newest_mtime(&p)
        } else {
            e.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(t);
    }
    newest
}

/// The operator binary: `$TIERMQ_OPERATOR_BIN`; else `target/debug/tiermq-operator` when it is
/// newer than the sources of the operator, CRD and broker crates; else built once per process with
/// `cargo build -p tiermq-operator` (which waits for cargo's build lock).
pub fn operator_binary() -> anyhow::Result<PathBuf> {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    if let Ok(p) = std::env::var("TIERMQ_OPERATOR_BIN") {
        return Ok(PathBuf::from(p));
    }
    BUILT
        .get_or_init(|| {
            let root = workspace_root();
            let target = std::env::var("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|_| root.join("target"));
            let bin = target.join("debug").join("tiermq-operator");
            let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
            let sources = ["tiermq-operator", "tiermq-crd", "tiermq-broker"]
                .iter()
                .filter_map(|c| newest_mtime(&root.join("crates").join(c)))
                .max();
            if let (Some(b), Some(s)) = (built, sources)
                && b > s
            {
                return Ok(bin);
            }
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "-q", "-p", "tiermq-operator", "--bin", "tiermq-operator"])
                .current_dir(&root)
                .status()
                .map_err(|e| format!("run cargo build -p tiermq-operator: {e}"))?;
            if !status.success() {
                return Err(format!(
                    "cargo build -p tiermq-operator failed ({status}); fix the build or set TIERMQ_OPERATOR_BIN"
                ));
            }
            let target = std::env::var("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|_| root.join("target"));
            Ok(target.join("debug").join("tiermq-operator"))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Runs kubectl against a kubeconfig.
#[derive(Clone, Debug)]
pub struct Kubectl {
    kubeconfig: PathBuf,
}

/// What one kubectl run printed.
#[derive(Debug)]
pub struct KubectlOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Kubectl {
    pub fn new(kubeconfig: impl Into<PathBuf>) -> Self {
        Kubectl {
            kubeconfig: kubeconfig.into(),
        }
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Runs `kubectl <args>` (with `stdin` if given) and returns what it printed.
    pub async fn run(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<KubectlOutput> {
        let kubeconfig = self.kubeconfig.clone();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let stdin = stdin.map(str::to_string);
        tokio::task::spawn_blocking(move || {
            let mut child = Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(&args)
                .stdin(if stdin.is_some() {
                    Stdio::piped()
                } else {
                    Stdio::null()
                })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .context("start kubectl (is it on PATH?)")?;
            if let Some(input) = stdin {
                child
                    .stdin
                    .take()
                    .expect("piped")
                    .write_all(input.as_bytes())
                    .context("write kubectl stdin")?;
            }
            let out = child.wait_with_output().context("wait for kubectl")?;
            Ok(KubectlOutput {
                success: out.status.success(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            })
        })
        .await
        .context("kubectl task")?
    }

    /// Runs kubectl and fails with its stderr when it fails.
    pub async fn ok(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
        let out = self.run(args, stdin).await?;
        if !out.success {
            bail!("kubectl {} failed: {}", args.join(" "), out.stderr.trim());
        }
        Ok(out.stdout)
    }

    /// `kubectl apply -f -` of a YAML document (or several).
    pub async fn apply(&self, yaml: &str) -> anyhow::Result<String> {
        self.ok(&["apply", "-f", "-"], Some(yaml)).await
    }
}

/// The operator binary running against a cluster. Killed (whole process group) on drop.
pub struct OperatorProcess {
    child: Option<Child>,
    log: PathBuf,
    pub metrics_addr: String,
}

impl OperatorProcess {
    /// Spawns `tiermq-operator run` with KUBECONFIG, no leader election, brokers addressed by
    /// ClusterIP, JSON logs into `<dir>/operator.log`, short drain polls and a short statistics
    /// interval. `extra` flags are appended.
    pub fn spawn(
        bin: &Path,
        kubeconfig: &Path,
        dir: &Path,
        metrics_addr: &str,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        if !bin.exists() {
            bail!(
                "operator binary {} is missing; run `cargo build -p tiermq-operator`",
                bin.display()
            );
        }
        let log = dir.join("operator.log");
        let file = std::fs::File::create(&log)
            .with_context(|| format!("create operator log {}", log.display()))?;
        let mut cmd = Command::new(bin);
        cmd.args([
            "run",
            "--leader-election",
            "false",
            "--broker-addressing",
            "cluster-ip",
            "--log-format",
            "json",
            "--namespace",
            "tiermq-system",
            "--default-shared-cluster",
            "main",
            "--drain-poll-seconds",
            "1",
            "--broker-stats-interval-ms",
            "500",
            "--metrics-addr",
            metrics_addr,
        ])
        .args(extra)
        .env("KUBECONFIG", kubeconfig)
        .env(
            "RUST_LOG",
            std::env::var("TIERMQ_OPERATOR_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(file.try_clone().context("clone log handle")?)
        .stderr(file)
        .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        Ok(OperatorProcess {
            child: Some(child),
            log,
            metrics_addr: metrics_addr.to_string(),
        })
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of the operator's log (for failure messages).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Fails when the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(c) = self.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            bail!(
                "the operator exited ({status}); last log lines:\n{}",
                self.log_tail(30)
            );
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pgid = child.id() as i32;
        // SAFETY: signalling a process group we created.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        let until = Instant::now() + grace;
        while Instant::now() < until {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: as above.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = child.wait();
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling the process group we created.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
        }
    }
}

/// A kubesim cluster with the CRDs and the operator.
pub struct World {
    // Field order = drop order: the operator stops before the cluster it talks to.
    pub operator: Option<OperatorProcess>,
    pub cluster: kubesim::cluster::Cluster,
    pub kubectl: Kubectl,
    pub dir: PathBuf,
    _tmp: Option<tempfile_dir::TempDir>,
}

/// A small self-cleaning temp folder (avoids a runtime dependency on `tempfile`).
mod tempfile_dir {
    use std::path::{Path, PathBuf};

    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new(prefix: &str) -> std::io::Result<Self> {
            let base = std::env::var("TIERMQ_E2E_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|_| std::env::temp_dir().join("tiermq-e2e"));
            let dir = base.join(format!(
                "{prefix}-{}-{}",
                std::process::id(),
                chrono::Utc::now().timestamp_millis()
            ));
            std::fs::create_dir_all(&dir)?;
            Ok(TempDir(dir))
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            if std::env::var_os("TIERMQ_KEEP_E2E_DIR").is_none() {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }
}

impl World {
    /// Starts kubesim in a fresh folder and applies the CRDs from `crd/` with kubectl. The
    /// operator is not started yet (see [`World::start_operator`]).
    pub async fn start(name: &str) -> anyhow::Result<World> {
        let tmp = tempfile_dir::TempDir::new(name).context("create the scenario folder")?;
        let dir = tmp.path().to_path_buf();
        let mut w = Self::start_in(&dir).await?;
        w._tmp = Some(tmp);
        Ok(w)
    }

    /// Like [`World::start`] in a given folder that is kept afterwards.
    pub async fn start_in(dir: &Path) -> anyhow::Result<World> {
        let cluster = kubesim::cluster::start(kubesim::cluster::ClusterConfig::new(dir))
            .await
            .context("start kubesim")?;
        let kubectl = Kubectl::new(cluster.kubeconfig_path());
        let crd_dir = workspace_root().join("crd");
        for f in [
            "sharedclusters.tiermq.io.yaml",
            "rabbitmqinstances.tiermq.io.yaml",
        ] {
            let path = crd_dir.join(f);
            kubectl
                .ok(&["apply", "-f", &path.display().to_string()], None)
                .await
                .with_context(|| format!("apply CRD {}", path.display()))?;
        }
        Ok(World {
            operator: None,
            cluster,
            kubectl,
            dir: dir.to_path_buf(),
            _tmp: None,
        })
    }

    /// Starts the operator binary found by [`operator_binary`] (metrics on the cluster's own
    /// loopback slot).
    pub fn start_operator(&mut self, extra: &[&str]) -> anyhow::Result<()> {
        let bin = operator_binary()?;
        self.start_operator_bin(&bin, extra)
    }

    /// Starts a given operator binary.
    pub fn start_operator_bin(&mut self, bin: &Path, extra: &[&str]) -> anyhow::Result<()> {
        let metrics = format!("127.19.{}.2:8080", self.cluster.slot());
        self.operator = Some(OperatorProcess::spawn(
            bin,
            self.cluster.kubeconfig_path(),
            &self.dir,
            &metrics,
            extra,
        )?);
        Ok(())
    }

    pub fn operator_log_tail(&self, lines: usize) -> String {
        self.operator
            .as_ref()
            .map(|o| o.log_tail(lines))
            .unwrap_or_default()
    }

    pub fn instances(&self, ns: &str) -> Api<RabbitMQInstance> {
        Api::namespaced(self.cluster.client(), ns)
    }

    pub async fn status(&self, ns: &str, name: &str) -> anyhow::Result<RabbitMQInstanceStatus> {
        let i = self
            .instances(ns)
            .get(name)
            .await
            .with_context(|| format!("get RabbitMQInstance {ns}/{name}"))?;
        Ok(i.status.unwrap_or_default())
    }

    /// Waits until `check` accepts the instance's status; fails with the last status and the
    /// operator's log tail.
    pub async fn wait_status<F>(
        &mut self,
        ns: &str,
        name: &str,
        what: &str,
        timeout: Duration,
        mut check: F,
    ) -> anyhow::Result<RabbitMQInstanceStatus>
    where
        F: FnMut(&RabbitMQInstanceStatus) -> bool,
    {
        let until = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Some(op) = self.operator.as_mut() {
                op.check_alive()?;
            }
            if let Ok(s) = self.status(ns, name).await {
                if check(&s) {
                    return Ok(s);
                }
                last = Some(s);
            }
            if Instant::now() >= until {
                bail!(
                    "timed out after {timeout:?} waiting for {ns}/{name}: {what}; last status: {}\noperator log tail:\n{}",
                    serde_json::to_string(&last).unwrap_or_default(),
                    self.operator_log_tail(25)
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until the instance is in service and not converting.
    pub async fn wait_ready(
        &mut self,
        ns: &str,
        name: &str,
        timeout: Duration,
    ) -> anyhow::Result<RabbitMQInstanceStatus> {
        self.wait_status(ns, name, "phase Ready, migration Stable", timeout, |s| {
            s.phase == Some(tiermq_crd::InstancePhase::Ready)
                && matches!(s.migration_phase, None | Some(MigrationPhase::Stable))
        })
        .await
    }

    /// The instance's AMQP endpoint as a host process reaches it: the client Service's ClusterIP
    /// and the tenant login from the credentials Secret.
    pub async fn instance_target(&self, ns: &str, name: &str) -> anyhow::Result<AmqpTarget> {
        let creds = self.credentials(ns, name).await?;
        let svc: Api<Service> = Api::namespaced(self.cluster.client(), ns);
        let s = svc
            .get(name)
            .await
            .with_context(|| format!("get client Service {ns}/{name}"))?;
        let ip = s
            .spec
            .and_then(|s| s.cluster_ip)
            .with_context(|| format!("Service {ns}/{name} has no ClusterIP"))?;
        let port: u16 = creds
            .get("port")
            .and_then(|p| p.parse().ok())
            .unwrap_or(5672);
        let get = |k: &str| {
            creds
                .get(k)
                .cloned()
                .with_context(|| format!("credentials Secret {ns}/{name}-credentials has no {k}"))
        };
        Ok(AmqpTarget::from_parts(
            &ip,
            port,
            &get("vhost")?,
            &get("username")?,
            &get("password")?,
        )?)
    }

    /// The decoded data of `<instance>-credentials`.
    pub async fn credentials(
        &self,
        ns: &str,
        name: &str,
    ) -> anyhow::Result<BTreeMap<String, String>> {
        let secrets: Api<Secret> = Api::namespaced(self.cluster.client(), ns);
        let s = secrets
            .get(&format!("{name}-credentials"))
            .await
            .with_context(|| format!("get Secret {ns}/{name}-credentials"))?;
        Ok(s.data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
            .collect())
    }

    pub async fn statefulset_exists(&self, ns: &str, name: &str) -> anyhow::Result<bool> {
        let api: Api<StatefulSet> = Api::namespaced(self.cluster.client(), ns);
        Ok(api.get_opt(name).await?.is_some())
    }

    /// A management-API client for cluster `cluster` in `ns` (see [`management_client`]).
    pub async fn management(
        &self,
        ns: &str,
        cluster: &str,
    ) -> anyhow::Result<tiermq_broker::ManagementClient> {
        management_client(&self.cluster.client(), ns, cluster).await
    }
}

/// A management-API client for broker cluster `cluster` in `ns`, through its Service's ClusterIP
/// with the admin login from `<cluster>-admin`.
pub async fn management_client(
    client: &kube::Client,
    ns: &str,
    cluster: &str,
) -> anyhow::Result<tiermq_broker::ManagementClient> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let s = secrets
        .get(&format!("{cluster}-admin"))
        .await
        .with_context(|| format!("get admin Secret {ns}/{cluster}-admin"))?;
    let data = s.data.unwrap_or_default();
    let val = |k: &str| {
        data.get(k)
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
            .with_context(|| format!("admin Secret {ns}/{cluster}-admin has no {k}"))
    };
    let svc: Api<Service> = Api::namespaced(client.clone(), ns);
    let ip = svc
        .get(cluster)
        .await
        .with_context(|| format!("get cluster Service {ns}/{cluster}"))?
        .spec
        .and_then(|s| s.cluster_ip)
        .with_context(|| format!("Service {ns}/{cluster} has no ClusterIP"))?;
    Ok(tiermq_broker::ManagementClient::new(
        tiermq_broker::ClusterEndpoint {
            cluster: format!("{ns}/{cluster}"),
            url: format!("http://{ip}:15672"),
            username: val("username")?,
            password: tiermq_broker::Secret::new(val("password")?),
        },
    )?)
}

/// One observed change of `status.migrationPhase`.
#[derive(Clone, Debug)]
pub struct PhaseChange {
    pub at: Instant,
    pub phase: MigrationPhase,
    pub remaining: Option<i64>,
}

/// Records every `status.migrationPhase` an instance passes through (from a watch, so no
/// intermediate write is missed) together with the latest status.
pub struct PhaseRecorder {
    changes: Arc<Mutex<Vec<PhaseChange>>>,
    latest: Arc<Mutex<Option<RabbitMQInstanceStatus>>>,
    task: tokio::task::JoinHandle<()>,
}

impl PhaseRecorder {
    pub fn start(api: Api<RabbitMQInstance>, name: &str) -> Self {
        let changes: Arc<Mutex<Vec<PhaseChange>>> = Arc::default();
        let latest: Arc<Mutex<Option<RabbitMQInstanceStatus>>> = Arc::default();
        let (c, l) = (changes.clone(), latest.clone());
        let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let task = tokio::spawn(async move {
            let mut stream = watcher::watcher(api, cfg).boxed();
            while let Some(ev) = stream.next().await {
                let objs = match ev {
                    Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::InitApply(o)) => vec![o],
                    _ => continue,
                };
                for o in objs {
                    let status = o.status.clone().unwrap_or_default();
                    let phase = status.migration_phase.unwrap_or(MigrationPhase::Stable);
                    let remaining = status.migration.as_ref().and_then(|m| m.remaining_messages);
                    {
                        let mut v = c.lock().unwrap();
                        if v.last().map(|p| p.phase) != Some(phase) {
                            v.push(PhaseChange {
                                at: Instant::now(),
                                phase,
                                remaining,
                            });
                        }
                    }
                    *l.lock().unwrap() = Some(status);
                }
            }
        });
        PhaseRecorder {
            changes,
            latest,
            task,
        }
    }

    pub fn changes(&self) -> Vec<PhaseChange> {
        self.changes.lock().unwrap().clone()
    }

    pub fn phases(&self) -> Vec<MigrationPhase> {
        self.changes().iter().map(|c| c.phase).collect()
    }

    pub fn latest(&self) -> Option<RabbitMQInstanceStatus> {
        self.latest.lock().unwrap().clone()
    }

    /// The phase now (as last seen).
    pub fn current(&self) -> Option<MigrationPhase> {
        self.changes.lock().unwrap().last().map(|c| c.phase)
    }

    /// When `phase` was first seen.
    pub fn first_seen(&self, phase: MigrationPhase) -> Option<Instant> {
        self.changes
            .lock()
            .unwrap()
            .iter()
            .find(|c| c.phase == phase)
            .map(|c| c.at)
    }

    /// Forget what was recorded (before the next conversion).
    pub fn reset(&self) {
        self.changes.lock().unwrap().clear();
    }
}

impl Drop for PhaseRecorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The phases of one conversion as seen: everything from the first non-Stable phase up to the
/// first Stable after it.
pub fn conversion_sequence(phases: &[MigrationPhase]) -> Vec<MigrationPhase> {
    phases
        .iter()
        .copied()
        .skip_while(|p| *p == MigrationPhase::Stable)
        .take_while(|p| *p != MigrationPhase::Stable)
        .collect()
}

/// `seq` with the one documented step back removed: from `DestinationOnly` the operator returns to
/// `DrainingSource` when a fresh sample finds messages on the source again (a publisher whose
/// channel still had write access cached), so `DrainingSource, DestinationOnly` may repeat.
pub fn collapse_drain_retries(seq: &[MigrationPhase]) -> Vec<MigrationPhase> {
    let mut out: Vec<MigrationPhase> = Vec::with_capacity(seq.len());
    for &p in seq {
        if p == MigrationPhase::DrainingSource
            && out.last() == Some(&MigrationPhase::DestinationOnly)
        {
            out.pop();
            continue;
        }
        if out.last() == Some(&p) {
            continue;
        }
        out.push(p);
    }
    out
}

/// YAML of a SharedCluster `main` in `tiermq-system` with one broker.
pub fn shared_cluster_yaml(max_instances: u32) -> String {
    [
        "apiVersion: v1",
        "kind: Namespace",
        "metadata:",
        "  name: tiermq-system",
        "---",
        "apiVersion: tiermq.io/v1alpha1",
        "kind: SharedCluster",
        "metadata:",
        "  name: main",
        "  namespace: tiermq-system",
        "spec:",
        "  replicas: 1",
        "  image: rabbitmq:3.10-management",
        "  capacity:",
        &format!("    maxInstances: {max_instances}"),
        "",
    ]
    .join("\n")
}

/// Knobs of a scenario instance.
#[derive(Clone, Debug)]
pub struct InstanceSpec<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub tier: &'a str,
    pub drain_strategy: &'a str,
    pub grace_period_seconds: u32,
    /// `None`: the direction's default.
    pub connection_policy: Option<&'a str>,
}

impl InstanceSpec<'_> {
    /// The instance YAML (with its namespace) for `kubectl apply`.
    pub fn yaml(&self) -> String {
        let policy = self
            .connection_policy
            .map(|p| format!("    connectionPolicy: {p}\n"))
            .unwrap_or_default();
        let lines = [
            "apiVersion: v1".to_string(),
            "kind: Namespace".into(),
            "metadata:".into(),
            format!("  name: {}", self.namespace),
            "---".into(),
            "apiVersion: tiermq.io/v1alpha1".into(),
            "kind: RabbitMQInstance".into(),
            "metadata:".into(),
            format!("  name: {}", self.name),
            format!("  namespace: {}", self.namespace),
            "spec:".into(),
            "  series: Subscription".into(),
            format!("  tier: {}", self.tier),
            "  dedicated:".into(),
            "    replicas: 1".into(),
            "    image: rabbitmq:3.10-management".into(),
            "  shared:".into(),
            "    clusterRef:".into(),
            "      name: main".into(),
            "      namespace: tiermq-system".into(),
            "  migration:".into(),
            format!("    drainStrategy: {}", self.drain_strategy),
            "    drainTimeoutSeconds: 120".into(),
            format!("    gracePeriodSeconds: {}", self.grace_period_seconds),
        ];
        format!("{}\n{policy}", lines.join("\n"))
    }
}
/// `kubectl patch` of `spec.tier`.
pub async fn flip_tier(kubectl: &Kubectl, ns: &str, name: &str, tier: &str) -> anyhow::Result<()> {
    kubectl
        .ok(
            &[
                "-n",
                ns,
                "patch",
                "rmqi",
                name,
                "--type",
                "merge",
                "-p",
                &format!("{{\"spec\":{{\"tier\":\"{tier}\"}}}}"),
            ],
            None,
        )
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use MigrationPhase::*;

    #[test]
    fn drain_retries_collapse_but_other_disorder_stays() {
        let seq = [
            PreparingDestination,
            DualWriteDualRead,
            SingleWriteDualRead,
            DrainingSource,
            DestinationOnly,
            DrainingSource,
            DestinationOnly,
            Completed,
        ];
        assert_eq!(collapse_drain_retries(&seq), CONVERSION_PHASES);
        let bad = [PreparingDestination, SingleWriteDualRead, DualWriteDualRead];
        assert_eq!(collapse_drain_retries(&bad), bad);
        assert_ne!(
            collapse_drain_retries(&[
                PreparingDestination,
                DrainingSource,
                DestinationOnly,
                Completed
            ]),
            CONVERSION_PHASES
        );
    }
}
