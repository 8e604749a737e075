//! The simulated cluster: controllers that make a bare API server behave like a small Kubernetes
//! cluster on one machine.
//!
//! Every controller here is an ordinary kube-rs client of the API server over HTTPS (as the user
//! `system:kubesim-controllers`), exactly like
//! kube-controller-manager, kubelet and kube-proxy are clients of a real kube-apiserver. None of
//! them reaches into the API server's storage. Each controller is level-triggered: it lists what
//! it cares about, compares with what should exist, and writes the difference. Watches only wake it
//! early; a periodic resync (`SimConfig::resync`) makes it correct even when a watch is lost.
//!
//! - [`statefulset`]: StatefulSet → ordered Pods and PersistentVolumeClaims, status, rolling update.
//! - [`deployment`]: Deployment → one ReplicaSet per pod template, rollouts, revision history.
//! - [`replicaset`]: ReplicaSet → Pods.
//! - [`endpointslice`]: Service with a selector → EndpointSlices of its matching Pods.
//! - [`kubelet`]: Pod → pod IP, status and conditions; RabbitMQ images run as real
//!   `rabbitmq-server` processes ([`rabbit`]), other images are "running" without a process.
//! - [`kubeproxy`]: Service ClusterIP:port → TCP forwarders to the ready endpoints.
//!
//! ## Limits (on purpose, to stay small)
//!
//! - One node (`kubesim-node`); pods are never scheduled elsewhere and `spec.nodeName` stays
//!   unset (the API server has no binding subresource). No DaemonSets, Jobs, NetworkPolicies,
//!   NodePorts or DNS.
//! - StatefulSets: no `minReadySeconds`, no `ordinals.start`; scale down does not wait for the
//!   remaining pods to be Ready.
//! - Pods: only RabbitMQ images run a process; exec/httpGet probes are approximated (see
//!   [`rabbit`]); liveness probes are not run (a crashed process is restarted); the termination
//!   grace period is 5 s regardless of `terminationGracePeriodSeconds`; no `kubectl logs`/`exec`
//!   (broker logs are in the pod's data folder under `log/`).
//! - Objects live only in the API server's memory: a restarted kubesim starts empty.

pub mod deployment;
pub mod endpointslice;
pub mod error;
pub mod images;
pub mod init_steps;
pub mod ipam;
pub mod kubelet;
pub mod kubeproxy;
pub mod rabbit;
pub mod replicaset;
pub mod statefulset;
pub mod volumes;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::Resource;
use kube::runtime::watcher;
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

pub use error::{Result, SimError};

// Labels and values real Kubernetes uses; the operator and kubectl users rely on them.

/// StatefulSet pod label: the pod's name (what a per-pod Service selects).
pub const LABEL_POD_NAME: &str = "statefulset.kubernetes.io/pod-name";
/// StatefulSet pod label: the pod's ordinal.
pub const LABEL_POD_INDEX: &str = "apps.kubernetes.io/pod-index";
/// StatefulSet pod label: the revision of the pod template the pod was made from.
pub const LABEL_REVISION_HASH: &str = "controller-revision-hash";
/// EndpointSlice label: the Service the slice belongs to.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// EndpointSlice label: the controller that manages the slice.
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// The value of [`LABEL_MANAGED_BY`] on the slices the EndpointSlice controller writes.
pub const ENDPOINTSLICE_CONTROLLER: &str = "endpointslice-controller.k8s.io";
/// The node name every pod of the simulated cluster runs on.
pub const NODE_NAME: &str = "kubesim-node";

/// What the simulated controllers need to know about the cluster they run.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// State folder: pod folders (materialised volumes, broker logs) and PVC folders live here.
    pub dir: PathBuf,
    /// Pod IPs are `prefix.1..=254` (a /24 in 127.0.0.0/8 of its own per cluster).
    pub pod_ip_prefix: [u8; 3],
    /// At most this many `rabbitmq-server` processes run at once; further broker pods stay
    /// Pending with a message saying so.
    pub max_brokers: usize,
    /// Full relist interval of every controller (watch events wake them earlier).
    pub resync: Duration,
    /// Images that run as local programs (see [`images`]).
    pub image_binaries: images::ImageBinaries,
    /// The API server as pods see it (`KUBERNETES_SERVICE_HOST`/`PORT`, the ServiceAccount's
    /// `ca.crt`); `None`: container processes get no in-cluster configuration.
    pub api_server: Option<InClusterApi>,
    /// Feature flags a broker enables when it boots with an empty data folder (see
    /// `tiermq_testkit::NodeConfig::initial_feature_flags`); `None`: every stable flag, as
    /// RabbitMQ does. Lets a test run brokers like ones upgraded from an older release.
    pub initial_feature_flags: Option<String>,
    /// Give every new pod object a new IP, as a real cluster's CNI does (see `ipam`); `false`:
    /// a pod name keeps its IP for the life of the cluster. A broker keeps its node name either
    /// way (see `rabbit`).
    pub fresh_pod_ips: bool,
    /// Extra Erlang VM flags for every broker node (see
    /// `tiermq_testkit::NodeConfig::extra_erl_args`); `None`: RabbitMQ's defaults.
    pub broker_erl_args: Option<String>,
}

/// How a pod's processes reach the API server: its address and the CA that signed its serving
/// certificate.
#[derive(Debug, Clone)]
pub struct InClusterApi {
    /// `KUBERNETES_SERVICE_HOST`:`KUBERNETES_SERVICE_PORT`.
    pub addr: SocketAddr,
    /// The cluster CA (PEM), written as `ca.crt` next to each pod's ServiceAccount token.
    pub ca_pem: String,
}

impl SimConfig {
    /// A configuration with at most 3 brokers, a 1 s resync, no image run as a local binary and
    /// no in-cluster API configuration for pods.
    pub fn new(dir: impl Into<PathBuf>, pod_ip_prefix: [u8; 3]) -> Self {
        SimConfig {
            dir: dir.into(),
            pod_ip_prefix,
            max_brokers: 3,
            resync: Duration::from_secs(1),
            image_binaries: images::ImageBinaries::new(),
            api_server: None,
            initial_feature_flags: None,
            fresh_pod_ips: false,
            broker_erl_args: None,
        }
    }
}

/// The running controllers. [`Sim::shutdown`] stops them and every broker process they started;
/// dropping it kills the brokers at once.
pub struct Sim {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    kubelet: Arc<kubelet::Kubelet>,
    proxy_faults: kubeproxy::ProxyFaults,
}

/// Starts the StatefulSet, Deployment, ReplicaSet, EndpointSlice, kubelet and kube-proxy
/// controllers against `client`.
pub async fn start(client: kube::Client, cfg: SimConfig) -> Result<Sim> {
    std::fs::create_dir_all(&cfg.dir).map_err(|e| SimError::io("create", &cfg.dir, e))?;
    let (stop, stop_rx) = watch::channel(false);
    let kubelet = Arc::new(kubelet::Kubelet::new(
        client.clone(),
        cfg.clone(),
        stop_rx.clone(),
    ));
    let proxy_faults = kubeproxy::ProxyFaults::default();
    let tasks = vec![
        tokio::spawn(statefulset::run(
            client.clone(),
            cfg.clone(),
            stop_rx.clone(),
        )),
        tokio::spawn(endpointslice::run(
            client.clone(),
            cfg.clone(),
            stop_rx.clone(),
        )),
        tokio::spawn(deployment::run(
            client.clone(),
            cfg.clone(),
            stop_rx.clone(),
        )),
        tokio::spawn(replicaset::run(
            client.clone(),
            cfg.clone(),
            stop_rx.clone(),
        )),
        tokio::spawn(kubelet::run(kubelet.clone(), stop_rx.clone())),
        tokio::spawn(kubeproxy::run(
            client.clone(),
            cfg.clone(),
            proxy_faults.clone(),
            stop_rx.clone(),
        )),
    ];
    Ok(Sim {
        stop,
        tasks,
        kubelet,
        proxy_faults,
    })
}

impl Sim {
    /// Stops every controller, stops broker processes (gracefully, then by force) and closes every
    /// forwarded connection.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        self.kubelet.stop_all().await;
        for t in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }

    /// `namespace/pod` → pid of the pod's running `rabbitmq-server` (leader of its process group).
    pub fn broker_pids(&self) -> BTreeMap<String, u32> {
        self.kubelet.broker_pids()
    }

    /// A handle that reads [`Sim::broker_pids`] from another task (a fault injector that must
    /// not borrow the cluster).
    pub fn broker_pids_handle(&self) -> BrokerPids {
        BrokerPids(self.kubelet.clone())
    }

    /// kube-proxy's fault switch (see [`kubeproxy::ProxyFaults`]).
    pub fn proxy_faults(&self) -> kubeproxy::ProxyFaults {
        self.proxy_faults.clone()
    }

    /// Number of `rabbitmq-server` processes currently running for this cluster.
    pub fn running_brokers(&self) -> usize {
        self.kubelet.running_brokers()
    }
}

/// Reads the kubelet's running broker processes; see [`Sim::broker_pids_handle`].
#[derive(Clone)]
pub struct BrokerPids(Arc<kubelet::Kubelet>);

impl BrokerPids {
    /// `namespace/pod` → pid of the pod's running `rabbitmq-server` (leader of its process
    /// group), as of now.
    pub fn get(&self) -> BTreeMap<String, u32> {
        self.0.broker_pids()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.kubelet.kill_all_now();
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Wakes `notify` on every change of `K` anywhere in the cluster; retries with a pause on errors
/// (the periodic resync keeps the controller correct meanwhile).
pub(crate) fn spawn_trigger<K>(
    client: kube::Client,
    notify: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    use futures::StreamExt;
    tokio::spawn(async move {
        let api: kube::Api<K> = kube::Api::all(client);
        let stream = watcher(api, watcher::Config::default());
        futures::pin_mut!(stream);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                ev = stream.next() => match ev {
                    Some(Ok(_)) => notify.notify_one(),
                    Some(Err(e)) => {
                        tracing::debug!(kind = K::kind(&()).as_ref(), error = %e, "watch failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    None => return,
                },
            }
        }
    })
}

/// The longest a controller coalesces events after a slow pass (see [`wait_next`]).
const MAX_COALESCE: Duration = Duration::from_secs(1);

/// Waits until a trigger fires or `resync` passes; returns false when the controller must stop.
///
/// `pass_started` is when the pass that just ended began. A burst of events is coalesced for
/// 30 ms, or for as long as that pass took (at most [`MAX_COALESCE`]): the controllers relist
/// every object each pass, so with many objects (the scale bench's 1,000 Services) passes run
/// back to back on every event and take a core; this keeps each to at most about half.
pub(crate) async fn wait_next(
    notify: &Notify,
    stop: &mut watch::Receiver<bool>,
    resync: Duration,
    pass_started: std::time::Instant,
) -> bool {
    if *stop.borrow() {
        return false;
    }
    let coalesce = pass_started
        .elapsed()
        .clamp(Duration::from_millis(30), MAX_COALESCE);
    tokio::select! {
        _ = stop.changed() => false,
        _ = notify.notified() => {
            // Coalesce bursts of events into one pass.
            tokio::time::sleep(coalesce).await;
            !*stop.borrow()
        }
        _ = tokio::time::sleep(resync) => !*stop.borrow(),
    }
}

/// Where a controller records Kubernetes Events.
pub(crate) struct Events {
    client: kube::Client,
    controller: String,
}

pub(crate) fn recorder(client: &kube::Client, controller: &str) -> Events {
    Events {
        client: client.clone(),
        controller: controller.into(),
    }
}

/// Records a Kubernetes Event about `obj` (best effort, as in Kubernetes: a failed event write
/// never fails the controller). `kubectl describe` shows them. Each call writes its own Event: the
/// kube-rs recorder would fold events with the same reason but different notes into one series.
pub(crate) async fn emit<K: Resource<DynamicType = ()>>(
    events: &Events,
    obj: &K,
    warning: bool,
    reason: &str,
    action: &str,
    note: String,
) {
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let recorder = Recorder::new(
        events.client.clone(),
        Reporter {
            controller: events.controller.clone(),
            instance: Some(NODE_NAME.into()),
        },
    );
    let ev = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&ev, &obj.object_ref(&())).await {
        tracing::debug!(object = %key_of(obj), reason, error = %e, "could not record event");
    }
}

/// Does a Kubernetes label selector match these labels? (`matchLabels` and `matchExpressions`;
/// an empty selector matches everything, like in Kubernetes.)
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    if let Some(ml) = &sel.match_labels
        && !map_selector_matches(ml, labels)
    {
        return false;
    }
    for expr in sel.match_expressions.iter().flatten() {
        let value = labels.get(&expr.key);
        let values = expr.values.as_deref().unwrap_or_default();
        let ok = match expr.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// Equality-based selector (Service `spec.selector`).
pub fn map_selector_matches(
    sel: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

pub(crate) fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

pub(crate) fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// `namespace/name` of an object, for logs, errors and map keys.
pub(crate) fn key_of<K: Resource>(obj: &K) -> String {
    format!(
        "{}/{}",
        obj.meta().namespace.as_deref().unwrap_or(""),
        obj.meta().name.as_deref().unwrap_or("")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selector_semantics() {
        let l = labels(&[("app", "rmq"), ("tier", "dedicated")]);
        assert!(selector_matches(&LabelSelector::default(), &l));
        let sel = LabelSelector {
            match_labels: Some(labels(&[("app", "rmq")])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "In".into(),
                values: Some(vec!["dedicated".into(), "shared".into()]),
            }]),
        };
        assert!(selector_matches(&sel, &l));
        let l2 = labels(&[("app", "rmq"), ("tier", "other")]);
        assert!(!selector_matches(&sel, &l2));
        let sel = LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "gone".into(),
                operator: "DoesNotExist".into(),
                values: None,
            }]),
        };
        assert!(selector_matches(&sel, &l));
        assert!(!map_selector_matches(&labels(&[("app", "x")]), &l));
    }
}
