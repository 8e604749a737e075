//! The "kubelet" of the single simulated node.
//!
//! For every Pod it runs a worker that:
//! - assigns the pod an IP from the cluster's 127.x.y.0/24 (stable per pod name, see `ipam`);
//! - for a RabbitMQ container (image contains `rabbitmq`): materialises the pod's volumes,
//!   resolves its env, starts a real `rabbitmq-server` (`tiermq_testkit::RabbitNode`) bound to the
//!   pod IP, joins StatefulSet peers (see `rabbit`), evaluates readiness every second, restarts a
//!   crashed broker per `restartPolicy` (Always/OnFailure: with back-off 1 s, 2 s, 4 s .. 10 s;
//!   Never: the pod fails), and stops the broker when the pod is deleted;
//! - for any other image: reports the containers running and ready without starting a process
//!   (the operator Deployment of the Helm chart, test pods). `readinessGates` are honoured: such a
//!   pod is Ready only once every gate condition is True, which tests use to hold pods un-ready.
//! - writes phase, podIP(s), hostIP, startTime, conditions (PodScheduled, Initialized,
//!   PodReadyToStartContainers, ContainersReady, Ready) and containerStatuses through the status
//!   subresource, keeping conditions it does not own.
//!
//! A pod with `deletionTimestamp` has its broker stopped (SIGTERM, SIGKILL after 5 s) and is then
//! deleted with grace period 0, as a real kubelet confirms a graceful delete. A pod that simply
//! disappears has its broker stopped at once. A re-created pod with the same name starts only after
//! the previous incarnation's process is gone, since both use the same IP and data dir.
//!
//! At most `SimConfig::max_brokers` brokers run at once; further broker pods stay Pending with a
//! message saying so.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, ListParams, PostParams, Preconditions};
use kube::{Api, Client, ResourceExt};
use tiermq_testkit::RabbitNode;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinHandle;

use super::ipam::PodIpAllocator;
use super::rabbit::{self, broker_error};
use super::volumes;
use super::{
    Result, SimConfig, SimError, is_conflict, is_not_found, key_of, spawn_trigger, wait_next,
};

const OWNED_CONDITIONS: &[&str] = &[
    "PodScheduled",
    "Initialized",
    "PodReadyToStartContainers",
    "ContainersReady",
    "Ready",
];
const STOP_GRACE: Duration = Duration::from_secs(5);
const PROBE_PERIOD: Duration = Duration::from_secs(1);
const JOIN_RETRY: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ctl {
    Run,
    /// Pod gone from the API: stop the process.
    Stop,
    /// Pod has a deletionTimestamp: stop the process, then confirm the delete.
    StopAndDelete,
}

struct Worker {
    uid: String,
    pod_tx: watch::Sender<Pod>,
    ctl: watch::Sender<Ctl>,
    task: JoinHandle<()>,
}

pub struct Kubelet {
    client: Client,
    cfg: SimConfig,
    stop: watch::Receiver<bool>,
    ipam: Mutex<PodIpAllocator>,
    live: Mutex<BTreeSet<String>>,
    workers: Mutex<BTreeMap<String, Worker>>,
    /// Workers whose pod went away; a new pod of the same name waits for them.
    stopping: Mutex<BTreeMap<String, JoinHandle<()>>>,
    brokers: Mutex<BTreeMap<String, Arc<RabbitNode>>>,
    broker_slots: Arc<Semaphore>,
    cookies: Mutex<BTreeMap<String, String>>,
    events: super::Events,
}

pub(crate) async fn run(k: Arc<Kubelet>, mut stop: watch::Receiver<bool>) {
    let notify = Arc::new(Notify::new());
    let trigger = spawn_trigger::<Pod>(k.client.clone(), notify.clone(), stop.clone());
    loop {
        if let Err(e) = k.sync().await {
            tracing::warn!(error = %e, "kubelet pass failed");
        }
        if !wait_next(&notify, &mut stop, k.cfg.resync).await {
            break;
        }
    }
    trigger.abort();
}

/// What the worker knows about its pod's containers; turned into a PodStatus by [`compute_status`].
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub pod_ip: Ipv4Addr,
    pub start_time: Time,
    pub phase: &'static str,
    /// The container whose state is tracked (the broker); other containers are reported running
    /// and ready. None: all containers share `state`.
    pub main: Option<String>,
    pub state: ContainerState,
    pub ready: bool,
    pub restarts: i32,
    pub last_state: Option<ContainerState>,
    pub message: Option<String>,
}

fn now() -> Time {
    // Whole seconds, as the API stores them, so unchanged status compares equal.
    let s = k8s_openapi::jiff::Timestamp::now().as_second();
    Time(
        k8s_openapi::jiff::Timestamp::from_second(s)
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message,
        }),
        ..Default::default()
    }
}

fn running(since: Time) -> ContainerState {
    ContainerState {
        running: Some(ContainerStateRunning {
            started_at: Some(since),
        }),
        ..Default::default()
    }
}

fn condition(
    existing: &[PodCondition],
    type_: &str,
    ok: bool,
    reason: Option<&str>,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let prev = existing.iter().find(|c| c.type_ == type_);
    let last_transition_time = match prev {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Some(now()),
    };
    PodCondition {
        type_: type_.into(),
        status: status.into(),
        last_transition_time,
        reason: if ok { None } else { reason.map(String::from) },
        ..Default::default()
    }
}

/// The pod status a worker reports (pure apart from transition timestamps).
pub fn compute_status(pod: &Pod, obs: &Observed) -> PodStatus {
    let old = pod.status.clone().unwrap_or_default();
    let existing = old.conditions.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let statuses: Vec<ContainerStatus> = spec
        .containers
        .iter()
        .map(|c: &Container| {
            let tracked = obs.main.as_deref().is_none_or(|m| m == c.name);
            let (state, ready, restarts, last) = if tracked {
                (
                    obs.state.clone(),
                    obs.ready,
                    obs.restarts,
                    obs.last_state.clone(),
                )
            } else {
                (running(obs.start_time.clone()), true, 0, None)
            };
            ContainerStatus {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                image_id: String::new(),
                container_id: Some(format!("kubesim://{}-{}", pod.name_any(), c.name)),
                ready,
                started: Some(state.running.is_some()),
                restart_count: restarts,
                state: Some(state),
                last_state: last,
                ..Default::default()
            }
        })
        .collect();
    let containers_ready = !statuses.is_empty() && statuses.iter().all(|s| s.ready);
    let gates_ok = spec.readiness_gates.iter().flatten().all(|g| {
        existing
            .iter()
            .any(|c| c.type_ == g.condition_type && c.status == "True")
    });
    let mut conditions: Vec<PodCondition> = existing
        .iter()
        .filter(|c| !OWNED_CONDITIONS.contains(&c.type_.as_str()))
        .cloned()
        .collect();
    let started = obs.phase != "Pending";
    conditions.push(condition(
        &existing,
        "PodReadyToStartContainers",
        true,
        None,
    ));
    conditions.push(condition(&existing, "Initialized", true, None));
    conditions.push(condition(
        &existing,
        "ContainersReady",
        containers_ready,
        Some("ContainersNotReady"),
    ));
    let ready_reason = if !containers_ready {
        "ContainersNotReady"
    } else {
        "ReadinessGatesNotReady"
    };
    conditions.push(condition(
        &existing,
        "Ready",
        containers_ready && gates_ok && started,
        Some(ready_reason),
    ));
    conditions.push(condition(&existing, "PodScheduled", true, None));
    let ip = obs.pod_ip.to_string();
    PodStatus {
        phase: Some(obs.phase.into()),
        message: obs.message.clone(),
        host_ip: Some("127.0.0.1".into()),
        host_ips: Some(vec![HostIP {
            ip: "127.0.0.1".into(),
        }]),
        pod_ip: Some(ip.clone()),
        pod_ips: Some(vec![PodIP { ip }]),
        start_time: Some(obs.start_time.clone()),
        conditions: Some(conditions),
        container_statuses: Some(statuses),
        qos_class: old.qos_class.clone().or_else(|| Some("BestEffort".into())),
        ..Default::default()
    }
}

/// How the worker waits: returns the control value when it is no longer `Run`.
async fn pause(
    d: Duration,
    ctl: &mut watch::Receiver<Ctl>,
    pod_rx: &mut watch::Receiver<Pod>,
) -> Option<Ctl> {
    let sleep = tokio::time::sleep(d);
    tokio::pin!(sleep);
    loop {
        let c = *ctl.borrow();
        if c != Ctl::Run {
            return Some(c);
        }
        tokio::select! {
            _ = &mut sleep => return None,
            r = ctl.changed() => if r.is_err() { return Some(Ctl::Stop) },
            r = pod_rx.changed() => if r.is_err() { return Some(Ctl::Stop) } else { return None },
        }
    }
}

impl Kubelet {
    pub(crate) fn new(client: Client, cfg: SimConfig, stop: watch::Receiver<bool>) -> Self {
        let slots = Arc::new(Semaphore::new(cfg.max_brokers));
        Kubelet {
            events: super::recorder(&client, "kubelet"),
            ipam: Mutex::new(PodIpAllocator::new(cfg.pod_ip_prefix)),
            client,
            cfg,
            stop,
            live: Mutex::new(BTreeSet::new()),
            workers: Mutex::new(BTreeMap::new()),
            stopping: Mutex::new(BTreeMap::new()),
            brokers: Mutex::new(BTreeMap::new()),
            broker_slots: slots,
            cookies: Mutex::new(BTreeMap::new()),
        }
    }

    /// `namespace/pod` → pid of its running `rabbitmq-server`.
    pub(crate) fn broker_pids(&self) -> BTreeMap<String, u32> {
        self.brokers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, n)| (k.clone(), n.pid()))
            .collect()
    }

    pub(crate) fn running_brokers(&self) -> usize {
        self.brokers.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Stops every worker and waits for their brokers to stop.
    pub(crate) async fn stop_all(&self) {
        let workers: Vec<Worker> =
            std::mem::take(&mut *self.workers.lock().unwrap_or_else(|e| e.into_inner()))
                .into_values()
                .collect();
        let mut handles: Vec<JoinHandle<()>> = Vec::new();
        for w in workers {
            let _ = w.ctl.send(Ctl::Stop);
            handles.push(w.task);
        }
        handles.extend(
            std::mem::take(&mut *self.stopping.lock().unwrap_or_else(|e| e.into_inner()))
                .into_values(),
        );
        for h in handles {
            let _ = tokio::time::timeout(STOP_GRACE + Duration::from_secs(5), h).await;
        }
        self.kill_all_now();
    }

    /// Kills every broker process group at once (used from `Drop`, also while panicking).
    pub(crate) fn kill_all_now(&self) {
        let nodes: Vec<Arc<RabbitNode>> =
            std::mem::take(&mut *self.brokers.lock().unwrap_or_else(|e| e.into_inner()))
                .into_values()
                .collect();
        for n in nodes {
            n.kill();
        }
        for w in self
            .workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            w.task.abort();
        }
    }

    async fn sync(self: &Arc<Self>) -> Result<()> {
        if *self.stop.borrow() {
            return Ok(());
        }
        let pods = Api::<Pod>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .map_err(|e| SimError::kube("list", "Pod", "all namespaces", e))?;
        let live: BTreeSet<String> = pods.items.iter().map(key_of).collect();
        self.release_claim_folders(&pods.items).await;
        *self.live.lock().unwrap_or_else(|e| e.into_inner()) = live.clone();
        let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        let mut stopping = self.stopping.lock().unwrap_or_else(|e| e.into_inner());
        stopping.retain(|_, h| !h.is_finished());
        // Pods that are gone.
        let gone: Vec<String> = workers
            .keys()
            .filter(|k| !live.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(w) = workers.remove(&key) {
                let _ = w.ctl.send(Ctl::Stop);
                stopping.insert(key, w.task);
            }
        }
        for pod in pods.items {
            let key = key_of(&pod);
            let uid = pod.uid().unwrap_or_default();
            let terminating = pod.metadata.deletion_timestamp.is_some();
            if let Some(w) = workers.get(&key) {
                if w.uid == uid {
                    if terminating {
                        let _ = w.ctl.send(Ctl::StopAndDelete);
                    } else {
                        w.pod_tx.send_replace(pod);
                    }
                    continue;
                }
                // Same name, new pod: retire the old worker first.
                if let Some(old) = workers.remove(&key) {
                    let _ = old.ctl.send(Ctl::Stop);
                    stopping.insert(key.clone(), old.task);
                }
            }
            if terminating {
                // Never started here (or already stopped): confirm the delete.
                if !stopping.contains_key(&key) {
                    let k = self.clone();
                    tokio::spawn(async move { k.confirm_delete(&pod).await });
                }
                continue;
            }
            let prev = stopping.remove(&key);
            let (pod_tx, pod_rx) = watch::channel(pod);
            let (ctl, ctl_rx) = watch::channel(Ctl::Run);
            let k = self.clone();
            let task = tokio::spawn(async move { k.worker(pod_rx, ctl_rx, prev).await });
            workers.insert(
                key,
                Worker {
                    uid,
                    pod_tx,
                    ctl,
                    task,
                },
            );
        }
        Ok(())
    }

    /// Removes the folders of PVCs that no longer exist, once no pod refers to them and no broker
    /// runs on them (a deleted PersistentVolume takes its data with it).
    async fn release_claim_folders(&self, pods: &[Pod]) {
        use k8s_openapi::api::core::v1::PersistentVolumeClaim;
        let root = self.cfg.dir.join("pvc");
        let Ok(namespaces) = std::fs::read_dir(&root) else {
            return;
        };
        let Ok(claims) = Api::<PersistentVolumeClaim>::all(self.client.clone())
            .list(&ListParams::default())
            .await
        else {
            return;
        };
        let existing: BTreeSet<String> = claims.items.iter().map(key_of).collect();
        let referenced: BTreeSet<String> = pods
            .iter()
            .flat_map(|p| {
                let ns = p.namespace().unwrap_or_default();
                p.spec
                    .iter()
                    .flat_map(|s| s.volumes.iter().flatten())
                    .filter_map(|v| v.persistent_volume_claim.as_ref())
                    .map(move |c| format!("{ns}/{}", c.claim_name))
                    .collect::<Vec<_>>()
            })
            .collect();
        let in_use: Vec<PathBuf> = self
            .brokers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|n| n.config().base_dir.clone())
            .collect();
        for ns_dir in namespaces.flatten() {
            let ns = ns_dir.file_name().to_string_lossy().into_owned();
            for claim_dir in std::fs::read_dir(ns_dir.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let key = format!("{ns}/{}", claim_dir.file_name().to_string_lossy());
                let path = claim_dir.path();
                if existing.contains(&key)
                    || referenced.contains(&key)
                    || in_use.iter().any(|b| b.starts_with(&path))
                {
                    continue;
                }
                match std::fs::remove_dir_all(&path) {
                    Ok(()) => tracing::info!(claim = %key, "PVC deleted; removed its data folder"),
                    Err(e) => {
                        tracing::warn!(claim = %key, error = %e, "could not remove the folder of a deleted PVC")
                    }
                }
            }
        }
    }

    async fn confirm_delete(&self, pod: &Pod) {
        let ns = pod.namespace().unwrap_or_default();
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match Api::<Pod>::namespaced(self.client.clone(), &ns)
            .delete(&pod.name_any(), &dp)
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) || is_conflict(&e) => {}
            Err(e) => {
                tracing::warn!(pod = %key_of(pod), error = %e, "could not confirm pod deletion")
            }
        }
    }

    fn pod_dir(&self, pod: &Pod) -> PathBuf {
        self.cfg
            .dir
            .join("pods")
            .join(pod.namespace().unwrap_or_default())
            .join(format!(
                "{}-{}",
                pod.name_any(),
                pod.uid().unwrap_or_default()
            ))
    }

    /// Writes the pod's status if it differs from what the API has.
    async fn publish(&self, pod_rx: &watch::Receiver<Pod>, obs: &Observed) {
        let mut pod = pod_rx.borrow().clone();
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        for _ in 0..3 {
            let status = compute_status(&pod, obs);
            if pod.status.as_ref() == Some(&status) {
                return;
            }
            let uid = pod.uid();
            let mut next = pod.clone();
            next.status = Some(status);
            match api
                .replace_status(&pod.name_any(), &PostParams::default(), &next)
                .await
            {
                Ok(_) => return,
                Err(e) if is_conflict(&e) => match api.get_opt(&pod.name_any()).await {
                    Ok(Some(fresh)) if fresh.uid() == uid => pod = fresh,
                    _ => return,
                },
                Err(e) if is_not_found(&e) => return,
                Err(e) => {
                    tracing::debug!(pod = %key_of(&pod), error = %e, "pod status update failed; retrying later");
                    return;
                }
            }
        }
    }

    fn assign_ip(&self, key: &str) -> Result<Ipv4Addr> {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner()).clone();
        self.ipam
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .assign(key, &live)
    }

    async fn worker(
        self: Arc<Self>,
        mut pod_rx: watch::Receiver<Pod>,
        mut ctl: watch::Receiver<Ctl>,
        prev: Option<JoinHandle<()>>,
    ) {
        if let Some(prev) = prev {
            let _ = prev.await;
        }
        let pod = pod_rx.borrow().clone();
        let key = key_of(&pod);
        let ip = loop {
            match self.assign_ip(&key) {
                Ok(ip) => break ip,
                Err(e) => {
                    tracing::warn!(pod = %key, error = %e, "cannot assign a pod IP");
                    if let Some(c) = pause(Duration::from_secs(2), &mut ctl, &mut pod_rx).await {
                        return self.finish(&pod, c).await;
                    }
                }
            }
        };
        let mut obs = Observed {
            pod_ip: ip,
            start_time: now(),
            phase: "Pending",
            main: None,
            state: waiting("ContainerCreating", None),
            ready: false,
            restarts: 0,
            last_state: None,
            message: None,
        };
        let end = match rabbit::rabbit_container(&pod).cloned() {
            Some(c) => self.run_broker(&mut pod_rx, &mut ctl, &mut obs, c).await,
            None => 'plain: {
                // No process, but volumes are set up as for any pod: a missing ConfigMap or
                // Secret keeps the pod waiting, like in Kubernetes.
                let pod_dir = self.pod_dir(&pod);
                loop {
                    let current = pod_rx.borrow().clone();
                    match volumes::materialise(&self.client, &self.cfg.dir, &current, &pod_dir)
                        .await
                    {
                        Ok(_) => break,
                        Err(e) => {
                            obs.state = waiting("CreateContainerConfigError", Some(e.to_string()));
                            self.publish(&pod_rx, &obs).await;
                            if let Some(c) =
                                pause(Duration::from_secs(2), &mut ctl, &mut pod_rx).await
                            {
                                break 'plain c;
                            }
                        }
                    }
                }
                obs.phase = "Running";
                obs.state = running(obs.start_time.clone());
                obs.ready = true;
                loop {
                    self.publish(&pod_rx, &obs).await;
                    if let Some(c) = pause(Duration::from_secs(30), &mut ctl, &mut pod_rx).await {
                        break c;
                    }
                }
            }
        };
        self.finish(&pod, end).await;
    }

    async fn event(
        &self,
        pod_rx: &watch::Receiver<Pod>,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        let pod = pod_rx.borrow().clone();
        super::emit(&self.events, &pod, warning, reason, reason, note).await;
    }

    /// The pod's containers have stopped: its folder (materialised Secrets, emptyDir data) goes
    /// too; PVC folders stay.
    async fn finish(&self, pod: &Pod, end: Ctl) {
        let dir = self.pod_dir(pod);
        if dir.exists()
            && let Err(e) = std::fs::remove_dir_all(&dir)
        {
            tracing::warn!(pod = %key_of(pod), error = %e, "could not remove the pod's folder");
        }
        if end == Ctl::StopAndDelete {
            self.confirm_delete(pod).await;
        }
    }

    fn cookie_for(&self, pod: &Pod) -> String {
        let owner = pod
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true))
            .map(|o| o.name.clone())
            .unwrap_or_else(|| pod.name_any());
        let key = format!("{}/{owner}", pod.namespace().unwrap_or_default());
        self.cookies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_insert_with(random_cookie)
            .clone()
    }

    async fn prepare_broker(
        &self,
        pod: &Pod,
        c: &Container,
        ip: Ipv4Addr,
    ) -> Result<tiermq_testkit::NodeConfig> {
        let pod_dir = self.pod_dir(pod);
        let vols = volumes::materialise(&self.client, &self.cfg.dir, pod, &pod_dir).await?;
        let env = volumes::resolve_env(&self.client, pod, c, &ip.to_string()).await?;
        let inputs = rabbit::gather_inputs(c, &vols, env);
        let base = rabbit::data_dir(pod, c, &vols, &pod_dir.join("data"));
        open_dirs(&self.cfg.dir, &base)?;
        rabbit::node_config(pod, c, &inputs, ip, base, &self.cookie_for(pod))
    }

    /// The readiness probe: a declared `tcpSocket` probe is run as is (against the pod IP); any
    /// other probe (exec `rabbitmq-diagnostics ...`, httpGet) or none is approximated by an
    /// authenticated management API request when the management plugin is on, else by a TCP
    /// connection to the AMQP port.
    async fn probe(node: &RabbitNode, container: &Container) -> std::result::Result<(), String> {
        let tcp_port = container
            .readiness_probe
            .as_ref()
            .and_then(|p| p.tcp_socket.as_ref())
            .and_then(|t| match &t.port {
                IntOrString::Int(p) => u16::try_from(*p).ok(),
                IntOrString::String(name) => container
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.as_deref() == Some(name.as_str()))
                    .and_then(|p| u16::try_from(p.container_port).ok()),
            });
        if tcp_port.is_none()
            && node
                .config()
                .plugins
                .iter()
                .any(|p| p == "rabbitmq_management")
        {
            return node.probe().await;
        }
        let addr = format!(
            "{}:{}",
            node.config().ip,
            tcp_port.unwrap_or(node.config().amqp_port)
        );
        match tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(&addr),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("tcp probe {addr}: {e}")),
            Err(_) => Err(format!("tcp probe {addr}: timeout")),
        }
    }

    /// Joins `peer` (the full node name of `<sts>-0`): the adapter for testkit's `join_cluster`,
    /// which wants the peer's `RabbitNode` handle, while here only its name is known.
    async fn join(node: &RabbitNode, peer: &str) -> std::result::Result<(), String> {
        let steps: [&[&str]; 4] = [
            &["stop_app"],
            &["reset"],
            &["join_cluster", peer],
            &["start_app"],
        ];
        for args in steps {
            if let Err(e) = node.rabbitmqctl(args).await {
                let _ = node.rabbitmqctl(&["start_app"]).await;
                return Err(e.to_string());
            }
        }
        Ok(())
    }

    async fn run_broker(
        &self,
        pod_rx: &mut watch::Receiver<Pod>,
        ctl: &mut watch::Receiver<Ctl>,
        obs: &mut Observed,
        container: Container,
    ) -> Ctl {
        obs.main = Some(container.name.clone());
        let key = key_of(&*pod_rx.borrow());
        let restart_policy = pod_rx
            .borrow()
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into());
        let mut crashes: u32 = 0;
        loop {
            // A broker slot.
            let permit: OwnedSemaphorePermit = loop {
                match self.broker_slots.clone().try_acquire_owned() {
                    Ok(p) => break p,
                    Err(_) => {
                        obs.message = Some(format!(
                            "kubesim runs at most {} RabbitMQ brokers at once; waiting for a slot",
                            self.cfg.max_brokers
                        ));
                        self.publish(pod_rx, obs).await;
                        if let Some(c) = pause(Duration::from_secs(1), ctl, pod_rx).await {
                            return c;
                        }
                    }
                }
            };
            obs.message = None;
            let pod = pod_rx.borrow().clone();
            let cfg = match self.prepare_broker(&pod, &container, obs.pod_ip).await {
                Ok(c) => c,
                Err(e) => {
                    drop(permit);
                    self.event(pod_rx, true, "Failed", format!("Error: {e}"))
                        .await;
                    obs.state = waiting("CreateContainerConfigError", Some(e.to_string()));
                    self.publish(pod_rx, obs).await;
                    if let Some(c) = pause(Duration::from_secs(2), ctl, pod_rx).await {
                        return c;
                    }
                    continue;
                }
            };
            let fresh = !rabbit::has_data(&cfg.base_dir, &cfg.full_node_name());
            let peer = match rabbit::statefulset_peer(&pod) {
                Some((peer_pod, ord)) if ord > 0 && fresh => {
                    let peer_key = format!("{}/{peer_pod}", pod.namespace().unwrap_or_default());
                    match self.assign_ip(&peer_key) {
                        Ok(ip) => Some(format!("{}@{ip}", rabbit::node_short_name(ip))),
                        Err(_) => None,
                    }
                }
                _ => None,
            };
            let node = match RabbitNode::start(cfg) {
                Ok(n) => Arc::new(n),
                Err(e) => {
                    drop(permit);
                    let err = broker_error(&pod, e);
                    obs.state = waiting("CreateContainerError", Some(err.to_string()));
                    self.publish(pod_rx, obs).await;
                    if let Some(c) = pause(Duration::from_secs(2), ctl, pod_rx).await {
                        return c;
                    }
                    continue;
                }
            };
            self.brokers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key.clone(), node.clone());
            obs.phase = "Running";
            obs.state = running(now());
            obs.ready = false;
            self.publish(pod_rx, obs).await;
            self.event(
                pod_rx,
                false,
                "Started",
                format!(
                    "Started container {} (rabbitmq-server pid {})",
                    container.name,
                    node.pid()
                ),
            )
            .await;

            let mut joined = peer.is_none();
            let mut next_probe = tokio::time::Instant::now();
            let mut next_join = tokio::time::Instant::now();
            let outcome = loop {
                if let Some(c) = pause(PROBE_PERIOD, ctl, pod_rx).await {
                    break Err(c);
                }
                if !node.is_running() {
                    break Ok(());
                }
                // Pod updates wake the loop too; probe at most once per period.
                let now = tokio::time::Instant::now();
                if now >= next_probe {
                    next_probe = now + PROBE_PERIOD;
                    let probe = Self::probe(&node, &container).await;
                    obs.ready = match (&probe, joined) {
                        (Ok(()), true) => true,
                        (Ok(()), false) if now >= next_join => {
                            let peer = peer.as_deref().unwrap_or_default();
                            match Self::join(&node, peer).await {
                                Ok(()) => {
                                    tracing::info!(pod = %key, peer, "broker joined its StatefulSet's cluster");
                                    joined = true;
                                    obs.message = None;
                                }
                                Err(e) => {
                                    // Each attempt runs rabbitmqctl (an Erlang VM): back off.
                                    next_join = tokio::time::Instant::now() + JOIN_RETRY;
                                    tracing::warn!(pod = %key, peer, error = %e, "joining the cluster failed; retrying");
                                    obs.message = Some(format!("joining {peer} failed: {e}"));
                                }
                            }
                            false
                        }
                        _ => false,
                    };
                }
                self.publish(pod_rx, obs).await;
            };
            self.brokers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
            match outcome {
                Err(c) => {
                    self.event(
                        pod_rx,
                        false,
                        "Killing",
                        format!("Stopping container {}", container.name),
                    )
                    .await;
                    node.stop(STOP_GRACE).await;
                    tracing::info!(pod = %key, "broker stopped with its pod");
                    return c;
                }
                Ok(()) => {
                    let tail = node.log_tail(5);
                    node.kill();
                    drop(permit);
                    crashes += 1;
                    tracing::warn!(pod = %key, crashes, "broker process exited; restart policy {restart_policy}");
                    obs.restarts += 1;
                    obs.ready = false;
                    obs.last_state = Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            exit_code: 1,
                            reason: Some("Error".into()),
                            message: Some(tail),
                            finished_at: Some(now()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    });
                    if restart_policy == "Never" {
                        obs.restarts -= 1;
                        obs.phase = "Failed";
                        obs.state = obs.last_state.take().unwrap_or_default();
                        self.publish(pod_rx, obs).await;
                        loop {
                            if let Some(c) = pause(Duration::from_secs(30), ctl, pod_rx).await {
                                return c;
                            }
                        }
                    }
                    let backoff = Duration::from_secs((1u64 << crashes.min(4)).min(10) / 2)
                        .max(Duration::from_secs(1));
                    let msg = format!(
                        "back-off {}s restarting failed container {}",
                        backoff.as_secs(),
                        container.name
                    );
                    self.event(pod_rx, true, "BackOff", msg.clone()).await;
                    obs.state = waiting("CrashLoopBackOff", Some(msg));
                    self.publish(pod_rx, obs).await;
                    if let Some(c) = pause(backoff, ctl, pod_rx).await {
                        return c;
                    }
                }
            }
        }
    }
}

/// The folders up to a node's base dir must be traversable by the `rabbitmq` user the broker
/// runs as (a test's temp dir is private by default).
fn open_dirs(root: &std::path::Path, base: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(base).map_err(|e| SimError::io("create", base, e))?;
    let mut p = base.parent();
    while let Some(dir) = p {
        if !dir.starts_with(root) {
            break;
        }
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
        p = dir.parent();
    }
    Ok(())
}

fn random_cookie() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut rng = rand::rng();
    (0..32)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_reports_ip_conditions_and_gates() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "t"},
            "spec": {"containers": [{"name": "app", "image": "busybox"}],
                     "readinessGates": [{"conditionType": "example.com/gate"}]},
            "status": {"conditions": [{"type": "example.com/gate", "status": "False"}]}
        }))
        .unwrap();
        let obs = Observed {
            pod_ip: Ipv4Addr::new(127, 30, 1, 5),
            start_time: now(),
            phase: "Running",
            main: None,
            state: running(now()),
            ready: true,
            restarts: 0,
            last_state: None,
            message: None,
        };
        let st = compute_status(&pod, &obs);
        assert_eq!(st.pod_ip.as_deref(), Some("127.30.1.5"));
        let cond = |st: &PodStatus, t: &str| {
            st.conditions
                .as_ref()
                .unwrap()
                .iter()
                .find(|c| c.type_ == t)
                .unwrap()
                .status
                .clone()
        };
        assert_eq!(cond(&st, "ContainersReady"), "True");
        assert_eq!(cond(&st, "Ready"), "False", "gate not yet true");
        assert_eq!(
            cond(&st, "example.com/gate"),
            "False",
            "foreign condition kept"
        );
        let mut pod2 = pod.clone();
        pod2.status = Some(st.clone());
        pod2.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "True".into();
        let st2 = compute_status(&pod2, &obs);
        assert_eq!(cond(&st2, "Ready"), "True");
        // Unchanged input gives an identical status: no write needed.
        let mut pod3 = pod2.clone();
        pod3.status = Some(st2.clone());
        assert_eq!(compute_status(&pod3, &obs), st2);
    }
}
