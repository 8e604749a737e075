//! Reconcile concerns, one module each, and the three kube-runtime Controllers that drive them.
//!
//! - [`instance`]: the `RabbitMQInstance` pipeline (observe → plan → execute → status → Events).
//! - [`shared_cluster`]: the `SharedCluster` reconciler.
//! - [`routing`]: the router, which keeps the addresses in an instance's EndpointSlices current
//!   on its own, whatever the pipeline is waiting for.
//! - [`observe`], [`plan`], [`execute`], [`status`]: the pipeline's stages.
//! - [`clusters`]: broker clusters as Kubernetes objects and how to reach their brokers.
//! - [`apply`]: the one place that writes Kubernetes objects.
//! - [`scope`]: which namespaces the controllers watch (all, or a configured set).
//! - [`conditions`]: the one place that builds Kubernetes conditions.
//! - [`gate`]: the fair bound on passes at once (kube-runtime's own lets some objects starve).
//!
//! What triggers an instance reconcile: the instance itself; its owned objects (dedicated
//! StatefulSet, Services, EndpointSlices, Secrets, PDB, ConfigMap, NetworkPolicy); broker pods of
//! the clusters it is placed on (pod IPs and readiness feed its EndpointSlices; for an external
//! SharedCluster, every RabbitMQ cluster operator broker pod of its namespace); its
//! SharedCluster; and the requeue delay of the last plan.
//!
//! Every controller reports to [`crate::health::Health`]: its watch errors, and each reconcile
//! while it runs (`/healthz` fails when either stalls).

pub mod apply;
pub mod clusters;
pub mod conditions;
pub mod context;
pub mod execute;
pub mod gate;
pub mod instance;
pub mod observe;
pub mod plan;
pub mod routing;
pub mod scope;
pub mod shared_cluster;
pub mod slots;
pub mod status;

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
// Watches that only wake an owner (by owner reference, labels or name) ask for metadata only:
// at 1,000 instances the full objects' initial lists were most of a restarted operator's memory.
use kube::core::PartialObjectMeta as Meta;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{PredicateConfig, WatchStreamExt, watcher};
use tiermq_crd::{ClusterKind, RabbitMQInstance, SharedCluster};

use crate::build::{LABEL_CLUSTER, LABEL_MANAGED_BY, LABEL_TIERMQ_INSTANCE, MANAGED_BY};
use crate::config::RunArgs;
use crate::health::Health;
use crate::metrics::Metrics;
use context::Context;
use gate::{Gate, tracked};
use kube::runtime::controller::Action;
use scope::Scope;

/// Hash of what should trigger an instance reconcile: generation (spec), finalizers, deletion,
/// the pause annotation.
pub fn spec_or_lifecycle(i: &RabbitMQInstance) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    i.metadata.generation.hash(&mut h);
    i.finalizers().hash(&mut h);
    i.annotations()
        .get(tiermq_crd::conditions::PAUSED_ANNOTATION)
        .hash(&mut h);
    i.metadata
        .deletion_timestamp
        .as_ref()
        .map(|t| t.0.as_nanosecond())
        .hash(&mut h);
    Some(h.finish())
}

/// Cached objects keep no `managedFields`: nothing reads them, and with server-side apply they
/// can be as large as the rest of the object.
fn drop_managed_fields<K: kube::Resource>(o: &mut K) {
    o.meta_mut().managed_fields = None;
}

/// Instances placed on (or migrating onto/off) the cluster `name` in `ns`, plus the instance whose
/// dedicated cluster it is.
fn instances_on(
    store: &Store<RabbitMQInstance>,
    ns: &str,
    name: &str,
) -> Vec<ObjectRef<RabbitMQInstance>> {
    let mut out: Vec<ObjectRef<RabbitMQInstance>> = store
        .state()
        .iter()
        .filter(|i| {
            let Some(s) = &i.status else { return false };
            let on = |r: &tiermq_crd::ClusterRef| r.name == name && r.namespace == ns;
            s.serving.as_ref().is_some_and(on)
                || s.migration
                    .as_ref()
                    .is_some_and(|m| on(&m.source) || on(&m.destination))
        })
        .map(|i| ObjectRef::from_obj(i.as_ref()))
        .collect();
    if let Some(inst) = tiermq_crd::names::instance_of_dedicated_cluster(name) {
        out.push(ObjectRef::new(inst).within(ns));
    }
    out
}

/// Instances placed on (or migrating onto or off) any SharedCluster in namespace `ns`: those an
/// external cluster's broker pod there may serve. Which SharedCluster points at which external
/// cluster is not cached, so a pod of one wakes every shared instance of its namespace; the
/// router's pass for an unchanged slice writes nothing.
fn instances_on_shared_in(
    instances: &[Arc<RabbitMQInstance>],
    ns: &str,
) -> Vec<ObjectRef<RabbitMQInstance>> {
    instances
        .iter()
        .filter(|i| {
            let Some(s) = &i.status else { return false };
            let on =
                |r: &tiermq_crd::ClusterRef| r.kind == ClusterKind::Shared && r.namespace == ns;
            s.serving.as_ref().is_some_and(on)
                || s.migration
                    .as_ref()
                    .is_some_and(|m| on(&m.source) || on(&m.destination))
        })
        .map(|i| ObjectRef::from_obj(i.as_ref()))
        .collect()
}

/// Instances that name `sc` (placed on it, or asking for it in their spec or by default).
fn instances_for_shared(
    store: &Store<RabbitMQInstance>,
    config: &RunArgs,
    sc: &SharedCluster,
) -> Vec<ObjectRef<RabbitMQInstance>> {
    let ns = sc.namespace().unwrap_or_default();
    let name = sc.name_any();
    store
        .state()
        .iter()
        .filter(|i| {
            observe::shared_ref(i, config).is_some_and(|r| {
                r.kind == ClusterKind::Shared && r.name == name && r.namespace == ns
            })
        })
        .map(|i| ObjectRef::from_obj(i.as_ref()))
        .collect()
}

/// What of an instance a SharedCluster's reconcile depends on: the clusters it is recorded on.
fn placement(i: &RabbitMQInstance) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    if let Some(s) = &i.status {
        s.serving.hash(&mut h);
        s.migration
            .as_ref()
            .map(|m| (&m.source, &m.destination))
            .hash(&mut h);
    }
    h.finish()
}

/// The objects of `events` whose `inputs` hash differs from the last one seen of them (or that
/// were first seen, or deleted): a trigger that ignores changes nothing downstream reads.
/// kube-runtime's `predicate_filter` is not used for this because it drops deletions whose
/// object hashes as before.
fn changes_of<K>(
    events: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    inputs: fn(&K) -> u64,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: kube::Resource + Send + 'static,
{
    let seen = std::sync::Mutex::new(std::collections::HashMap::<String, u64>::new());
    events.flat_map(move |ev| {
        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        let key = |o: &K| o.uid().unwrap_or_else(|| o.name_any());
        let out: Vec<Result<K, watcher::Error>> = match ev {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                let h = inputs(&o);
                match seen.insert(key(&o), h) {
                    Some(old) if old == h => vec![],
                    _ => vec![Ok(o)],
                }
            }
            Ok(watcher::Event::Delete(o)) => {
                seen.remove(&key(&o));
                vec![Ok(o)]
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => vec![],
            Err(e) => vec![Err(e)],
        };
        futures::stream::iter(out)
    })
}

/// What of a SharedCluster its instances' passes depend on: its spec (generation), deletion,
/// readiness and conditions, and whether it is full. Not its instance count as such: that
/// changes with every placement, and each change woke every instance on the cluster (the scale
/// bench's 1,000 instances on three SharedClusters converged at about 16 passes each). Instances
/// count placements from their own cache; one held because the cluster was full is woken when
/// it no longer is.
fn shared_cluster_inputs(sc: &SharedCluster) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    sc.metadata.generation.hash(&mut h);
    sc.metadata
        .deletion_timestamp
        .as_ref()
        .map(|t| t.0.as_nanosecond())
        .hash(&mut h);
    if let Some(s) = &sc.status {
        (s.ready, s.ready_replicas, s.observed_generation).hash(&mut h);
        (s.instance_count >= sc.spec.capacity.max_instances).hash(&mut h);
        for c in &s.conditions {
            (&c.type_, &c.status, &c.reason).hash(&mut h);
        }
    }
    h.finish()
}

/// What of an instance its routing depends on: the clusters it is recorded on and its generation
/// (not the drain samples its status gets every few seconds).
fn routing_inputs(i: &RabbitMQInstance) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    placement(i).hash(&mut h);
    i.metadata.generation.hash(&mut h);
    Some(h.finish())
}

/// A Controller of instances, triggered by the instance changes `predicate` tells apart and by
/// the broker pods of the clusters an instance is on (their IPs and readiness); with the store of
/// instances it keeps.
fn instance_controller(
    client: &kube::Client,
    scope: &Scope,
    predicate: fn(&RabbitMQInstance) -> Option<u64>,
) -> (Controller<RabbitMQInstance>, Store<RabbitMQInstance>) {
    let (store, writer) = reflector::store::<RabbitMQInstance>();
    let trigger = scope
        .events::<RabbitMQInstance>(client, watcher::Config::default())
        .modify(drop_managed_fields)
        .reflect(writer)
        .applied_objects()
        .predicate_filter(predicate, PredicateConfig::default());
    let pod_store = store.clone();
    let external_store = store.clone();
    // Unbounded here: the bound is the pass's [`Gate`].
    let ctrl = Controller::for_stream(trigger, store.clone())
        .watches_stream(
            scope.touched::<Meta<Pod>>(client, watcher::Config::default().labels(LABEL_CLUSTER)),
            move |pod: Meta<Pod>| {
                let ns = pod.namespace().unwrap_or_default();
                match pod.labels().get(LABEL_CLUSTER) {
                    Some(c) => instances_on(&pod_store, &ns, c),
                    None => Vec::new(),
                }
            },
        )
        // Broker pods of external clusters (`SharedCluster.spec.external`) carry none of the
        // operator's labels, only the RabbitMQ cluster operator's.
        .watches_stream(
            scope.touched::<Meta<Pod>>(
                client,
                watcher::Config::default().labels(clusters::RABBITMQ_CLUSTER_PODS),
            ),
            move |pod: Meta<Pod>| {
                let ns = pod.namespace().unwrap_or_default();
                instances_on_shared_in(&external_store.state(), &ns)
            },
        );
    (ctrl, store)
}

/// The router (see [`routing`]): its own watches, so it runs whatever the instance controller is
/// doing. Broker pods' addresses, the EndpointSlices of instance Services (the operator's and
/// Kubernetes') and the instances' placement trigger it.
fn routing_controller(
    client: &kube::Client,
    scope: &Scope,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> (Controller<RabbitMQInstance>, Store<RabbitMQInstance>) {
    let (ctrl, store) = instance_controller(client, scope, routing_inputs);
    let ctrl = ctrl
        .watches_stream(
            // Only instances' slices: the operator's carry the instance label, and Kubernetes'
            // copy it from the instance Service (other Services' slices are never cached).
            scope.touched::<Meta<EndpointSlice>>(
                client,
                watcher::Config::default().labels(LABEL_TIERMQ_INSTANCE),
            ),
            |s: Meta<EndpointSlice>| {
                let ns = s.namespace().unwrap_or_default();
                s.labels()
                    .get(LABEL_TIERMQ_INSTANCE)
                    .map(|name| ObjectRef::new(name).within(&ns))
            },
        )
        .graceful_shutdown_on(shutdown);
    (ctrl, store)
}

/// Runs the controllers until `shutdown` resolves (then they finish in-flight reconciles).
/// Each controller's outcomes go to `health`: watch errors, and every reconcile while it runs.
pub async fn run_controllers(
    client: kube::Client,
    config: RunArgs,
    metrics: Metrics,
    health: Health,
    leadership: Option<crate::leader::Leadership>,
    shutdown: impl Future<Output = ()> + Send + Sync + Clone + 'static,
) {
    let managed = watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}"));
    // The cache sees every change (placement counts need fresh statuses), but only changes of
    // spec, finalizers or deletion trigger a reconcile: the operator's own status writes must
    // not, or a draining instance (whose status changes with every sample) would loop hot
    // instead of sampling at the requeue interval.
    let scope = Scope::new(&config.watch_namespaces);
    if !scope.namespaces.is_empty() {
        tracing::info!(namespaces = ?scope.namespaces, "watching these namespaces only");
        if !scope.covers(config.shared_namespace()) {
            tracing::warn!(
                namespace = config.shared_namespace(),
                "the SharedClusters' namespace is not watched: SharedClusters there are not \
                 reconciled and instances cannot use them; add it to --watch-namespaces"
            );
        }
    }
    let (instance_ctrl, store) = instance_controller(&client, &scope, spec_or_lifecycle);
    let instance_gate = Gate::new(config.max_concurrent_reconciles, store.clone())
        .metered(&metrics, instance::CONTROLLER);
    // The instance controller's SharedCluster watch fills the cache passes read SharedClusters
    // from (see `clusters::Lookup`): an instance it wakes finds that SharedCluster there.
    let (shared_cache, shared_cache_writer) = reflector::store::<SharedCluster>();
    // Held flips woken when a conversion slot frees (`--max-concurrent-conversions`).
    let (wake_tx, wake_rx) = tokio::sync::mpsc::unbounded_channel::<RabbitMQInstance>();
    let ctx: Arc<Context> = Context::new(
        client.clone(),
        config.clone(),
        metrics,
        store.clone(),
        shared_cache,
        leadership,
        wake_tx,
    );

    let sc_store = store.clone();
    let sc_config = config.clone();
    let instances = instance_ctrl
        .owns_stream(scope.touched::<Meta<StatefulSet>>(&client, managed.clone()))
        .owns_stream(scope.touched::<Meta<Service>>(&client, managed.clone()))
        .owns_stream(scope.touched::<Meta<EndpointSlice>>(&client, managed.clone()))
        // Secrets are not watched: that would need list/watch on every Secret of the cluster.
        // The operator never rewrites them; a deleted one is reported on the next pass.
        .owns_stream(scope.touched::<Meta<PodDisruptionBudget>>(&client, managed.clone()))
        .owns_stream(scope.touched::<Meta<ConfigMap>>(&client, managed.clone()))
        .owns_stream(scope.touched::<Meta<NetworkPolicy>>(&client, managed.clone()))
        .watches_stream(
            // What wakes instances: their SharedCluster's inputs changed (not its count).
            changes_of(
                scope
                    .events::<SharedCluster>(&client, watcher::Config::default())
                    .modify(drop_managed_fields)
                    .reflect(shared_cache_writer),
                shared_cluster_inputs,
            ),
            move |sc: SharedCluster| instances_for_shared(&sc_store, &sc_config, &sc),
        )
        .watches_stream(
            futures::stream::unfold(wake_rx, |mut rx| async move {
                rx.recv().await.map(|i| (Ok(i), rx))
            }),
            |i: RabbitMQInstance| Some(ObjectRef::from_obj(&i)),
        )
        .graceful_shutdown_on(shutdown.clone())
        .run(
            tracked(&health, instance_gate, instance::reconcile),
            instance::error_policy,
            ctx.clone(),
        )
        .for_each(outcomes(&health, "instance"));

    let (sc_reader, sc_writer) = reflector::store::<SharedCluster>();
    let sc_trigger = scope
        .events::<SharedCluster>(&client, watcher::Config::default())
        .reflect(sc_writer)
        .applied_objects();
    // Few objects, short passes: unbounded (the gate only reads the object again).
    let shared_gate = Gate::new(0, sc_reader.clone());
    let shared = Controller::for_stream(sc_trigger, sc_reader)
        .owns_stream(scope.touched::<Meta<StatefulSet>>(&client, managed.clone()))
        .watches_stream(
            // Instances whose placement changed (first seen, moved, deleted): status writes that
            // change nothing else (every drain sample) do not reconcile the SharedCluster.
            changes_of(
                scope.events::<RabbitMQInstance>(&client, watcher::Config::default()),
                placement,
            ),
            |i: RabbitMQInstance| {
                // Placement counts change with the instance's recorded clusters.
                let Some(s) = i.status else { return Vec::new() };
                let mut refs: Vec<_> = s.serving.into_iter().collect();
                if let Some(m) = s.migration {
                    refs.push(m.source);
                    refs.push(m.destination);
                }
                refs.into_iter()
                    .filter(|r| r.kind == ClusterKind::Shared)
                    .map(|r| ObjectRef::<SharedCluster>::new(&r.name).within(&r.namespace))
                    .collect()
            },
        )
        .graceful_shutdown_on(shutdown.clone())
        .run(
            tracked(&health, shared_gate, shared_cluster::reconcile),
            shared_cluster::error_policy,
            ctx.clone(),
        )
        .for_each(outcomes(&health, "shared-cluster"));
    // A routing pass only compares and writes EndpointSlices and pods that moved must be routed
    // again at once, whatever else runs: four times the instances' bound. Unbounded, a restart
    // over 1,000 instances ran 1,000 passes at once (the scale bench's operator peaked at
    // 158 MiB against 49 MiB after converging the same fleet).
    let (router, routing_cache) = routing_controller(&client, &scope, shutdown);
    let routing_gate = Gate::new(
        config.max_concurrent_reconciles.saturating_mul(4),
        routing_cache,
    )
    .metered(&ctx.metrics, routing::CONTROLLER);
    let router = router
        .run(
            tracked(&health, routing_gate, routing::reconcile),
            routing::error_policy,
            ctx,
        )
        .for_each(outcomes(&health, "routing"));
    tracing::info!("controllers started");
    futures::join!(instances, shared, router);
    tracing::info!("controllers stopped");
}

/// One item of a controller's output stream.
type Outcome<K, E> =
    Result<(ObjectRef<K>, Action), kube::runtime::controller::Error<E, watcher::Error>>;

/// What a controller's output stream tells: watch errors go to `health`, the rest is logged.
fn outcomes<K, E>(
    health: &Health,
    controller: &'static str,
) -> impl FnMut(Outcome<K, E>) -> futures::future::Ready<()>
where
    K: kube::Resource,
    E: std::error::Error + 'static,
{
    let health = health.clone();
    move |r| {
        match r {
            Err(kube::runtime::controller::Error::QueueError(e)) => {
                tracing::warn!(error = %e, controller, "watch failed");
                health.watch_error(std::time::Instant::now(), &e.to_string());
            }
            Err(e) => tracing::debug!(error = %e, controller, "controller event"),
            Ok(_) => {}
        }
        futures::future::ready(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A SharedCluster's placement count changes with every instance placed on it: that alone
    /// wakes none of its instances; the cluster filling up or no longer being full does, and so
    /// does a spec change or a readiness change.
    #[test]
    fn only_what_instances_read_of_a_shared_cluster_wakes_them() {
        let sc = |generation: i64, ready: bool, count: i32| -> SharedCluster {
            serde_json::from_value(json!({
                "apiVersion": "tiermq.io/v1alpha1", "kind": "SharedCluster",
                "metadata": {"name": "main", "namespace": "ops", "generation": generation},
                "spec": {"capacity": {"maxInstances": 3}},
                "status": {"ready": ready, "readyReplicas": 1, "instanceCount": count}
            }))
            .unwrap()
        };
        let h = |s: SharedCluster| shared_cluster_inputs(&s);
        assert_eq!(
            h(sc(1, true, 0)),
            h(sc(1, true, 2)),
            "a count below capacity"
        );
        assert_ne!(h(sc(1, true, 2)), h(sc(1, true, 3)), "full");
        assert_eq!(h(sc(1, true, 3)), h(sc(1, true, 4)), "still full");
        assert_ne!(h(sc(1, true, 1)), h(sc(2, true, 1)), "a spec change");
        assert_ne!(h(sc(1, true, 1)), h(sc(1, false, 1)), "readiness");
    }

    #[test]
    fn an_external_broker_pod_wakes_the_instances_on_shared_clusters_of_its_namespace() {
        let on = |name: &str, status: serde_json::Value| -> Arc<RabbitMQInstance> {
            Arc::new(
                serde_json::from_value(json!({
                    "apiVersion": "tiermq.io/v1alpha1", "kind": "RabbitMQInstance",
                    "metadata": {"name": name, "namespace": "team"},
                    "spec": {"series": "Subscription", "tier": "Shared"},
                    "status": status
                }))
                .unwrap(),
            )
        };
        let cref = |kind: &str, ns: &str| json!({"kind": kind, "name": "c", "namespace": ns});
        let all = [
            on("placed", json!({"serving": cref("Shared", "ops")})),
            on("elsewhere", json!({"serving": cref("Shared", "other")})),
            on("dedicated", json!({"serving": cref("Dedicated", "ops")})),
            on(
                "arriving",
                json!({"serving": cref("Dedicated", "team"), "migration": {
                    "from": "Dedicated", "to": "Shared",
                    "source": cref("Dedicated", "team"), "destination": cref("Shared", "ops"),
                    "drainStrategy": "Consume", "connectionPolicy": "Close",
                    "started": "2026-01-01T00:00:00Z"}}),
            ),
            on("new", json!({})),
        ];
        let woken: Vec<String> = instances_on_shared_in(&all, "ops")
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(woken, ["placed", "arriving"]);
    }

    fn inst(generation: i64, status: serde_json::Value) -> RabbitMQInstance {
        serde_json::from_value(json!({
            "apiVersion": "tiermq.io/v1alpha1", "kind": "RabbitMQInstance",
            "metadata": {"name": "a", "namespace": "n", "generation": generation},
            "spec": {"series": "Subscription", "tier": "Shared"},
            "status": status
        }))
        .unwrap()
    }

    #[test]
    fn own_status_writes_do_not_trigger_but_spec_finalizers_and_deletion_do() {
        let base = spec_or_lifecycle(&inst(1, json!({})));
        assert_eq!(base, spec_or_lifecycle(&inst(1, json!({"tier": "Shared"}))));
        assert_ne!(base, spec_or_lifecycle(&inst(2, json!({}))));
        let mut fin = inst(1, json!({}));
        fin.metadata.finalizers = Some(vec!["tiermq.io/cleanup".into()]);
        assert_ne!(base, spec_or_lifecycle(&fin));
        let mut del = fin.clone();
        del.metadata.deletion_timestamp =
            Some(crate::controller::plan::to_time(chrono::Utc::now()));
        assert_ne!(spec_or_lifecycle(&fin), spec_or_lifecycle(&del));
    }
}
