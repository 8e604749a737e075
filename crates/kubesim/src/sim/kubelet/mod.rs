//! The "kubelet" of the single simulated node.
//!
//! For every Pod it runs a worker that:
//! - assigns the pod an IP from the cluster's 127.x.y.0/24 (stable per pod name, or with
//!   `SimConfig::fresh_pod_ips` a new one per pod object as a CNI would; see `ipam`);
//! - for a RabbitMQ container (image contains `rabbitmq`): picks RabbitMQ 3.10 or 4.0 from the
//!   image's tag (3.x or 4.x; any other tag waits with `ErrImagePull`, see `rabbit`), materialises
//!   the pod's volumes, runs its init containers' file steps (see `init_steps`), resolves its
//!   env, starts a real `rabbitmq-server`
//!   (`tiermq_testkit::RabbitNode`) bound to the pod IP, joins StatefulSet peers (see `rabbit`), evaluates readiness every second, restarts a
//!   crashed broker per `restartPolicy` (Always/OnFailure: with back-off 1 s, 2 s, 4 s, then 5 s;
//!   Never: the pod fails), and stops the broker when the pod is deleted; a broker that cannot
//!   start or exits is reported as a real kubelet reports it (`lastState.terminated` with exit
//!   code and reason, `CrashLoopBackOff`, restarts, Warning Events `Failed`/`BackOff`);
//! - for an image mapped to a local binary (see `sim::images`, e.g. the operator's image →
//!   `target/debug/tiermq-operator`): runs that binary as the container (see `container`) with
//!   the pod's args and env, its ServiceAccount token, CA and namespace at
//!   `/var/run/secrets/kubernetes.io/serviceaccount` in a private mount namespace,
//!   `KUBERNETES_SERVICE_HOST`/`PORT` pointing at kubesim, and its probes evaluated;
//! - for any other image: reports the containers running and ready without starting a process
//!   (test pods). `readinessGates` are honoured: such a
//!   pod is Ready only once every gate condition is True, which tests use to hold pods un-ready.
//! - writes phase, podIP(s), hostIP, startTime, conditions (PodScheduled, Initialized,
//!   PodReadyToStartContainers, ContainersReady, Ready) and containerStatuses through the status
//!   subresource, keeping conditions it does not own.
//!
//! A pod with `deletionTimestamp` has its broker stopped (SIGTERM, SIGKILL after 5 s) and is then
//! deleted with grace period 0, as a real kubelet confirms a graceful delete. A pod that simply
//! disappears has its broker stopped at once. A re-created pod with the same name starts only after
//! the previous incarnation's process is gone, since both use the same data dir (and, with sticky
//! IPs, the same IP).
//!
//! At most `SimConfig::max_brokers` brokers run at once; further broker pods stay Pending with a
//! message saying so.
//!
//! Where that lives: this module keeps the node's pod list in step with the API
//! (one worker per pod, confirming deletes, releasing PVC folders); `worker` is one pod's life
//! (IP, volumes, status writes, the end); `broker` runs a RabbitMQ container; `container` runs a
//! mapped image's binary through `process` (namespaces, user, process group), `probe` (probes)
//! and `serviceaccount` (the projected credentials); `status` turns
//! what a worker observed into the PodStatus it writes.

mod broker;
mod container;
pub mod probe;
pub mod process;
mod serviceaccount;
mod status;
mod worker;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, Preconditions};
use kube::{Api, Client, ResourceExt};
use tiermq_testkit::RabbitNode;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinHandle;

use super::ipam::PodIpAllocator;
use super::{
    Result, SimConfig, SimError, is_conflict, is_not_found, key_of, spawn_trigger, wait_next,
};

pub use status::{Observed, compute_status, crash_backoff};

const STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ctl {
    Run,
    /// Pod gone from the API: stop the process.
    Stop,
    /// Pod has a deletionTimestamp: stop the process, then confirm the delete.
    StopAndDelete,
}

/// The worker of one pod, by `namespace/name` in [`Kubelet`]'s map.
struct Worker {
    /// The uid of the pod it runs: a new pod of the same name gets a new worker.
    uid: String,
    /// The latest version of the pod, for the worker.
    pod_tx: watch::Sender<Pod>,
    ctl: watch::Sender<Ctl>,
    task: JoinHandle<()>,
}

/// The kubelet of the one node: its pods' workers, their IPs and broker processes.
pub struct Kubelet {
    client: Client,
    cfg: SimConfig,
    stop: watch::Receiver<bool>,
    ipam: Mutex<PodIpAllocator>,
    /// `namespace/name` of every pod at the last pass (whose IPs must not be reused).
    live: Mutex<BTreeSet<String>>,
    workers: Mutex<BTreeMap<String, Worker>>,
    /// Workers whose pod went away; a new pod of the same name waits for them.
    stopping: Mutex<BTreeMap<String, JoinHandle<()>>>,
    /// The running broker processes, by pod.
    brokers: Mutex<BTreeMap<String, Arc<RabbitNode>>>,
    /// The process group of each running container process (images mapped to binaries), by pod.
    processes: Mutex<BTreeMap<String, u32>>,
    /// One permit per broker that may run (`SimConfig::max_brokers`).
    broker_slots: Arc<Semaphore>,
    /// The Erlang cookie of each StatefulSet (or bare pod) without one of its own.
    cookies: Mutex<BTreeMap<String, String>>,
    events: super::Events,
}

/// The kubelet's loop: a pass over every pod on each Pod change and every resync.
pub(crate) async fn run(k: Arc<Kubelet>, mut stop: watch::Receiver<bool>) {
    let notify = Arc::new(Notify::new());
    let trigger = spawn_trigger::<Pod>(k.client.clone(), notify.clone(), stop.clone());
    loop {
        let started = std::time::Instant::now();
        if let Err(e) = k.sync().await {
            tracing::warn!(error = %e, "kubelet pass failed");
        }
        if !wait_next(&notify, &mut stop, k.cfg.resync, started).await {
            break;
        }
    }
    trigger.abort();
}

impl Kubelet {
    pub(crate) fn new(client: Client, cfg: SimConfig, stop: watch::Receiver<bool>) -> Self {
        let slots = Arc::new(Semaphore::new(cfg.max_brokers));
        Kubelet {
            events: super::recorder(&client, "kubelet"),
            ipam: Mutex::new(if cfg.fresh_pod_ips {
                PodIpAllocator::fresh(cfg.pod_ip_prefix)
            } else {
                PodIpAllocator::new(cfg.pod_ip_prefix)
            }),
            client,
            cfg,
            stop,
            live: Mutex::new(BTreeSet::new()),
            workers: Mutex::new(BTreeMap::new()),
            stopping: Mutex::new(BTreeMap::new()),
            brokers: Mutex::new(BTreeMap::new()),
            processes: Mutex::new(BTreeMap::new()),
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
        let groups: Vec<u32> =
            std::mem::take(&mut *self.processes.lock().unwrap_or_else(|e| e.into_inner()))
                .into_values()
                .collect();
        for g in groups {
            process::kill_group(g);
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

    pub(super) async fn confirm_delete(&self, pod: &Pod) {
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
}
