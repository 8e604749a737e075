//! The observe step: read the Kubernetes objects and each relevant broker's management API and
//! turn them into the planner's [`Observed`]. The mapping functions are pure (and unit-tested);
//! [`observe`] is the IO around them.
//!
//! Which clusters: the dedicated cluster is always `<instance>-dedicated` in the instance's
//! namespace. The SharedCluster is, in this order: the shared side of a recorded migration, the
//! shared cluster recorded as serving, `spec.shared.clusterRef` (namespace defaulting to
//! `--shared-cluster-namespace`, else the operator's namespace), `--default-shared-cluster`.
//!
//! Broker answers: an unreachable or failing management API gives `broker: None`, which the
//! planner never takes for an empty broker. Drain samples use the operator's clock minus the
//! brokers' statistics interval as their timestamp: counts in the management API may be that
//! old, so a sample only proves what was true that long before it was taken.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde_json::Value;
use tiermq_broker::model::{DENY_ALL, Definitions, Permissions, ShovelStatus};
use tiermq_broker::steps::{self, Backlog, DRAIN_SHOVEL_PREFIX, FEDERATION_UPSTREAM};
use tiermq_broker::{BrokerError, ManagementClient};
use tiermq_crd::{ClusterKind, ClusterRef, MigrationPhase, RabbitMQInstance};

use crate::build::{self, LABEL_CLUSTER, LABEL_TIERMQ_INSTANCE};
use crate::config::RunArgs;
use crate::controller::clusters::{self, Lookup};
use crate::controller::context::Context;
use crate::controller::plan::{
    Access, BacklogSample, BrokerObservation, ClusterObservation, Observed, QueueMessages,
    SharedCapacity, ShovelObservation, TenantObservation,
};
use crate::error::{Result, kube_err};

/// `--default-shared-cluster` as a reference: `name` or `namespace/name`.
pub fn default_shared(config: &RunArgs) -> Option<ClusterRef> {
    let raw = config.default_shared_cluster.as_deref()?.trim();
    if raw.is_empty() {
        return None;
    }
    let (ns, name) = match raw.split_once('/') {
        Some((ns, name)) => (ns.to_string(), name.to_string()),
        None => (config.shared_namespace().to_string(), raw.to_string()),
    };
    Some(ClusterRef {
        kind: ClusterKind::Shared,
        name,
        namespace: ns,
    })
}

/// The SharedCluster this instance is (or is to be) placed on; `None` when the instance names
/// none and no default is configured.
pub fn shared_ref(i: &RabbitMQInstance, config: &RunArgs) -> Option<ClusterRef> {
    let st = i.status.as_ref();
    let from_migration = st.and_then(|s| s.migration.as_ref()).and_then(|m| {
        [&m.source, &m.destination]
            .into_iter()
            .find(|r| r.kind == ClusterKind::Shared)
            .cloned()
    });
    let serving = st
        .and_then(|s| s.serving.clone())
        .filter(|r| r.kind == ClusterKind::Shared);
    let from_spec = i.spec.shared.cluster_ref.as_ref().map(|r| ClusterRef {
        kind: ClusterKind::Shared,
        name: r.name.clone(),
        namespace: r
            .namespace
            .clone()
            .unwrap_or_else(|| config.shared_namespace().to_string()),
    });
    from_migration
        .or(serving)
        .or(from_spec)
        .or_else(|| default_shared(config))
}

/// The instance's own dedicated cluster.
pub fn dedicated_ref(i: &RabbitMQInstance) -> ClusterRef {
    ClusterRef {
        kind: ClusterKind::Dedicated,
        name: tiermq_crd::names::dedicated_cluster_name(&i.name_any()),
        namespace: i.namespace().unwrap_or_default(),
    }
}

/// The instance is placed on `r`: served by it, or migrating onto or off it.
/// `ns/name` of an instance, the key of placement reservations.
pub fn instance_key(i: &RabbitMQInstance) -> String {
    format!("{}/{}", i.namespace().unwrap_or_default(), i.name_any())
}

/// `ns/name` of a cluster.
pub fn cluster_key(r: &ClusterRef) -> String {
    format!("{}/{}", r.namespace, r.name)
}

/// The instances the cache shows placed on `r`.
pub async fn placed_keys(ctx: &Context, r: &ClusterRef) -> Result<Vec<String>> {
    Ok(ctx
        .all_instances()
        .await?
        .iter()
        .filter(|o| placed_on(o, r))
        .map(|o| instance_key(o))
        .collect())
}

/// Instance `i` is placed on cluster `r`: it serves from it, or `r` is the source or the
/// destination of its running conversion.
pub fn placed_on(i: &RabbitMQInstance, r: &ClusterRef) -> bool {
    let Some(s) = &i.status else { return false };
    s.serving.as_ref() == Some(r)
        || s.migration
            .as_ref()
            .is_some_and(|m| &m.source == r || &m.destination == r)
}

/// Permissions of the tenant's user as the planner's [`Access`].
pub fn access_of(p: Option<&Permissions>) -> Access {
    match p {
        None => Access::None,
        Some(p) if p.write == DENY_ALL && p.read == DENY_ALL && p.configure == DENY_ALL => {
            Access::None
        }
        Some(p) if p.write == DENY_ALL => Access::ReadOnly,
        Some(_) => Access::ReadWrite,
    }
}

/// Stable names of a vhost's tenant topology (see `tiermq_broker::steps::tenant_topology`):
/// `exchange/<name>`, `queue/<name>`, `binding/<source>/<type>/<destination>/<key>`,
/// `policy/<name>`.
pub fn topology_names(defs: &Definitions) -> BTreeSet<String> {
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let mut out = BTreeSet::new();
    for e in &defs.exchanges {
        out.insert(format!("exchange/{}", s(e, "name")));
    }
    for q in &defs.queues {
        out.insert(format!("queue/{}", s(q, "name")));
    }
    for b in &defs.bindings {
        out.insert(format!(
            "binding/{}/{}/{}/{}",
            s(b, "source"),
            s(b, "destination_type"),
            s(b, "destination"),
            s(b, "routing_key")
        ));
    }
    // A policy of classic mirroring keys only is not copied onto RabbitMQ 4.x (nothing of it
    // would remain there): a destination in step need not hold it.
    for p in defs.policies.iter().filter(|p| !steps::mirroring_only(p)) {
        out.insert(format!("policy/{}", s(p, "name")));
    }
    out
}

/// The policies of a tenant topology with the definition keys each sets, by name.
pub fn policy_keys(defs: &Definitions) -> BTreeMap<String, Vec<String>> {
    defs.policies
        .iter()
        .filter_map(|p| {
            let name = p.get("name").and_then(Value::as_str)?;
            let keys = p
                .get("definition")
                .and_then(Value::as_object)
                .map(|d| d.keys().cloned().collect())
                .unwrap_or_default();
            Some((name.to_string(), keys))
        })
        .collect()
}

/// The policies of a tenant topology that set classic queue mirroring keys, as
/// `name (key, key)`.
pub fn mirroring_policies(defs: &Definitions) -> Vec<String> {
    defs.policies
        .iter()
        .filter_map(|p| {
            let keys = steps::mirroring_keys(p);
            let name = p.get("name").and_then(Value::as_str)?;
            (!keys.is_empty()).then(|| format!("{name} ({})", keys.join(", ")))
        })
        .collect()
}

/// Whether a broker configuration (`rabbitmq.conf` lines, the later line winning) does not
/// permit transient non-exclusive queues.
pub fn refuses_transient_queues(conf: &str) -> bool {
    conf.lines()
        .rev()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == "deprecated_features.permit.transient_nonexcl_queues")
        .is_some_and(|(_, v)| v.trim() == "false")
}

/// The RabbitMQ major version a StatefulSet's broker image names.
pub fn statefulset_major(sts: &k8s_openapi::api::apps::v1::StatefulSet) -> Option<u32> {
    sts.spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .iter()
        .filter_map(|c| c.image.as_deref())
        .find(|i| i.contains("rabbitmq"))
        .and_then(tiermq_crd::versions::image_version)
        .map(|v| v.major)
}

/// A backlog reading as the planner's sample, timestamped `lag` before it was taken (the counts
/// may be that old). `None` when some queue has no statistics yet: its counts are unknown and
/// must not read as empty.
pub fn backlog_sample(
    b: &Backlog,
    lag: Duration,
    live_ready: Option<i64>,
    publish_rate: f64,
) -> Option<BacklogSample> {
    if !b.complete {
        return None;
    }
    let lag = chrono::Duration::from_std(lag).unwrap_or(chrono::Duration::zero());
    Some(BacklogSample {
        stats_at: b.sampled_at - lag,
        queues: b
            .queues
            .iter()
            .map(|q| {
                let delayed = if q.delay_ttl_ms.is_some() { q.ready } else { 0 };
                QueueMessages {
                    queue: q.name.clone(),
                    // Delayed messages are ready messages of a delay queue: count them once.
                    ready: (q.ready - delayed) as i64,
                    unacked: (q.unacked + q.dlx_pending) as i64,
                    delayed: delayed as i64,
                    subscriber: q.is_subscriber_queue(),
                    stream: q.queue_type == "stream",
                    ttl_ms: q.message_ttl_ms,
                    dead_letters: q.dead_letters,
                    drops_oldest: q.drops_oldest,
                    transient: q.transient && !q.exclusive,
                }
            })
            .collect(),
        drain_rate: (b.drain_rate > 0.0).then_some(b.drain_rate),
        publish_rate,
        live_ready,
    })
}

/// Drain shovels of the tenant by state: those whose status is `terminated` count as failed,
/// declared ones (starting, running, or not reported yet) as running.
pub fn shovel_observation(declared: &[String], statuses: &[ShovelStatus]) -> ShovelObservation {
    let mut o = ShovelObservation::default();
    for name in declared
        .iter()
        .filter(|n| n.starts_with(DRAIN_SHOVEL_PREFIX))
    {
        let state = statuses
            .iter()
            .find(|s| &s.name == name)
            .and_then(|s| s.state.as_deref());
        if state == Some("terminated") {
            o.failed += 1;
        } else {
            o.running += 1;
        }
    }
    o
}

/// The clusters the instance's EndpointSlices route to (by their cluster label), as refs.
pub fn routes_from_slices(
    slices: &[EndpointSlice],
    shared: &ClusterRef,
    dedicated: &ClusterRef,
) -> Vec<ClusterRef> {
    let mut out: Vec<ClusterRef> = Vec::new();
    for s in slices {
        let Some(cluster) = s.labels().get(LABEL_CLUSTER) else {
            continue;
        };
        let r = if *cluster == dedicated.name {
            dedicated.clone()
        } else if *cluster == shared.name {
            shared.clone()
        } else {
            ClusterRef {
                kind: ClusterKind::Shared,
                name: cluster.clone(),
                namespace: s.namespace().unwrap_or_default(),
            }
        };
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

/// The slice is one the operator writes (not Kubernetes' EndpointSlice controller's, which copies
/// the Service's labels, the instance label among them, onto the slices of a selector).
pub fn is_operator_slice(s: &EndpointSlice) -> bool {
    s.labels()
        .get(build::endpoint_slice::LABEL_ENDPOINTSLICE_MANAGED_BY)
        .is_some_and(|m| m == build::MANAGED_BY)
}

/// The instance's EndpointSlices that the operator writes.
pub async fn instance_slices(
    client: &kube::Client,
    i: &RabbitMQInstance,
) -> Result<Vec<EndpointSlice>> {
    let ns = i.namespace().unwrap_or_default();
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
    let lp = ListParams::default().labels(&format!("{LABEL_TIERMQ_INSTANCE}={}", i.name_any()));
    Ok(api
        .list(&lp)
        .await
        .map_err(kube_err(
            "list",
            format!("EndpointSlices of instance {ns}/{}", i.name_any()),
        ))?
        .items
        .into_iter()
        .filter(is_operator_slice)
        .collect())
}

/// What the management API says about the tenant (`vhost` = `user` = the tenant name). With
/// `live`, every queue is also asked for its ready messages directly (a draining source).
pub async fn observe_tenant(
    mc: &ManagementClient,
    tenant: &str,
    stats_lag: Duration,
    live: bool,
) -> Result<BrokerObservation, BrokerError> {
    let Some(vhost) = mc.get_vhost(tenant).await? else {
        return Ok(BrokerObservation { tenant: None });
    };
    let perms = mc.get_permissions(tenant, tenant).await?;
    let exported = mc.export_definitions(tenant).await?;
    let transfers = steps::tenant_transfers(&exported).len() as u32;
    let param_names = |component: &str| -> Vec<String> {
        exported
            .parameters
            .iter()
            .filter(|p| p.get("component").and_then(Value::as_str) == Some(component))
            .filter_map(|p| p.get("name").and_then(Value::as_str).map(str::to_string))
            .collect()
    };
    let declared = param_names("shovel");
    let federated = param_names("federation-upstream")
        .iter()
        .any(|n| n == FEDERATION_UPSTREAM);
    let defs = steps::tenant_topology(exported);
    let connections = mc
        .list_connections(tenant)
        .await?
        .iter()
        .filter(|c| c.user.as_deref() == Some(tenant))
        .count() as u32;
    let statuses = if declared.iter().any(|n| n.starts_with(DRAIN_SHOVEL_PREFIX)) {
        mc.shovel_status(tenant).await?
    } else {
        Vec::new()
    };
    let queues = mc.list_queues(tenant).await?;
    let clients = steps::classify(
        &mc.list_channels(tenant).await?,
        &mc.list_consumers(tenant).await?,
        &queues,
        tenant,
    );
    let backlog = Backlog::from_queues(mc.cluster(), tenant, Utc::now(), &queues);
    let live_ready = if live {
        let names: Vec<String> = queues.iter().map(|q| q.name.clone()).collect();
        let counts = steps::live_counts(mc, tenant, &names).await?;
        counts
            .iter()
            .map(|q| q.ready.map(i64::from))
            .sum::<Option<i64>>()
    } else {
        None
    };
    Ok(BrokerObservation {
        tenant: Some(TenantObservation {
            access: access_of(perms.as_ref()),
            topology: topology_names(&defs),
            connections,
            subscribers: clients.subscribers.len() as u32,
            consumers: clients.consumers.len() as u32,
            transfers,
            shovels: shovel_observation(&declared, &statuses),
            federated,
            backlog: backlog_sample(&backlog, stats_lag, live_ready, vhost.publish_rate()),
            mirroring_policies: mirroring_policies(&defs),
            policy_keys: policy_keys(&defs),
        }),
    })
}

/// One cluster: its StatefulSet, and (when a pod is ready) its broker. `parent_exists` is false
/// for a SharedCluster whose object is gone (its StatefulSet is then being deleted too).
pub async fn observe_cluster(
    lookup: Lookup<'_>,
    config: &RunArgs,
    r: &ClusterRef,
    parent_exists: bool,
    tenant: &str,
    live: bool,
) -> Result<ClusterObservation> {
    let sts = if parent_exists && !r.name.is_empty() {
        clusters::statefulset(lookup, r).await?
    } else {
        None
    };
    let Some(sts) = sts else {
        return Ok(ClusterObservation::absent(r.clone()));
    };
    let desired = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let ready = sts
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let mut obs = ClusterObservation {
        cluster: r.clone(),
        exists: true,
        desired_replicas: desired,
        ready_replicas: ready,
        capacity: None,
        tenancy: None,
        broker: None,
        rabbitmq_major: statefulset_major(&sts),
        refuses_transient_queues: false,
        pod_problems: Vec::new(),
    };
    if ready < desired {
        obs.pod_problems = broker_pod_problems(lookup.client, &sts).await;
    }
    if ready > 0
        && let Some(mc) = clusters::management_client(lookup, config, r).await?
    {
        let lag = Duration::from_millis(u64::from(config.broker_stats_interval_ms));
        match observe_tenant(&mc, tenant, lag, live).await {
            Ok(b) => obs.broker = Some(b),
            Err(e) => {
                tracing::info!(cluster = %clusters::label(r), error = %e, "broker not observable; planning with it unknown")
            }
        }
    }
    Ok(obs)
}

/// Everything the planner needs about instance `i`.
pub async fn observe(ctx: &Context, i: &RabbitMQInstance, shared: &ClusterRef) -> Result<Observed> {
    let placement = || async {
        let placed = placed_keys(ctx, shared).await?;
        let key = cluster_key(shared);
        Ok(Placement {
            count: ctx.placed_count(&key, &placed),
            reserved: ctx.holds_reservation(&key, &instance_key(i)),
        })
    };
    observe_with(ctx.lookup(), &ctx.config, i, shared, placement).await
}

/// How full the SharedCluster being observed is, as the planner's capacity check counts it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// Instances placed on it, plus slots reserved there and not placed yet.
    pub count: usize,
    /// The observed instance holds one of those reservations.
    pub reserved: bool,
}

/// [`observe`] outside the operator (the kubectl plugin's preview): the API client, the
/// operator's settings, and how full the SharedCluster is (asked only when it exists; outside
/// the operator there are no reservations, only placed instances).
pub async fn observe_with<F, Fut>(
    lookup: Lookup<'_>,
    config: &RunArgs,
    i: &RabbitMQInstance,
    shared: &ClusterRef,
    placement: F,
) -> Result<Observed>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<Placement>>,
{
    let tenant = build::tenant_name(&i.namespace().unwrap_or_default(), &i.name_any());
    let dedicated = dedicated_ref(i);
    let sc = if shared.name.is_empty() {
        None
    } else {
        lookup
            .shared_cluster(&shared.namespace, &shared.name)
            .await?
    };
    // The queues of a draining source are also asked directly (see the planner's drain rule).
    let draining = |r: &ClusterRef| {
        let st = i.status.as_ref();
        let phase = st.and_then(|s| s.migration_phase);
        let source = st.and_then(|s| s.migration.as_ref()).map(|m| &m.source);
        source == Some(r)
            && phase.is_some_and(|p| {
                matches!(
                    p,
                    MigrationPhase::SingleWriteDualRead
                        | MigrationPhase::DrainingSource
                        | MigrationPhase::DestinationOnly
                )
            })
    };
    let mut shared_obs = observe_cluster(
        lookup,
        config,
        shared,
        sc.is_some(),
        &tenant,
        draining(shared),
    )
    .await?;
    if let Some(sc) = &sc {
        shared_obs.refuses_transient_queues = sc
            .spec
            .additional_config
            .as_deref()
            .is_some_and(refuses_transient_queues);
        let placement = placement().await?;
        let count = placement.count as i32;
        shared_obs.tenancy = Some(sc.spec.tenants.clone());
        shared_obs.capacity = Some(SharedCapacity {
            instance_count: count,
            max_instances: sc.spec.capacity.max_instances,
            // Placed, or holding a reservation there (counted above either way).
            counts_this_instance: placed_on(i, shared) || placement.reserved,
        });
    }
    let dedicated_obs = observe_cluster(
        lookup,
        config,
        &dedicated,
        true,
        &tenant,
        draining(&dedicated),
    )
    .await?;
    let slices = instance_slices(lookup.client, i).await?;
    Ok(Observed {
        generation: i.metadata.generation.unwrap_or(0),
        deletion_requested: i.metadata.deletion_timestamp.is_some(),
        spec: i.spec.clone(),
        status: i.status.clone().unwrap_or_default(),
        shared: shared_obs,
        dedicated: dedicated_obs,
        service_routes: routes_from_slices(&slices, shared, &dedicated),
        // Filled in by the pass when a flip waits to start (see `Context::conversion_slots`).
        conversions: Default::default(),
    })
}

/// Why the StatefulSet's pods are not ready, per [`pod_problems`]; a failed list only loses the
/// detail (it is logged), never the observation.
async fn broker_pod_problems(client: &kube::Client, sts: &StatefulSet) -> Vec<String> {
    let selector = sts
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.as_ref())
        .map(|l| {
            l.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    if selector.is_empty() {
        return Vec::new();
    }
    let ns = sts.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    match pods.list(&ListParams::default().labels(&selector)).await {
        Ok(list) => pod_problems(&list.items),
        Err(e) => {
            tracing::info!(statefulset = %sts.name_any(), error = %e, "broker pods not listed; their problems stay unknown");
            Vec::new()
        }
    }
}

/// Waiting reasons that only say a container is on its way, not that something is wrong.
const ON_ITS_WAY: &[&str] = &["ContainerCreating", "PodInitializing"];

/// One line per pod whose container the kubelet reports failing: waiting for a reason other
/// than being on its way (`CrashLoopBackOff`, `CreateContainerConfigError`, ...) or terminated
/// with a non-zero exit code, with the last exit code, the restarts and the last line of the
/// termination message (with `FallbackToLogsOnError`, the end of the container's log).
pub(crate) fn pod_problems(pods: &[Pod]) -> Vec<String> {
    let mut out = Vec::new();
    for pod in pods {
        for cs in pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .into_iter()
            .flatten()
            .filter(|cs| !cs.ready)
        {
            let state = cs.state.clone().unwrap_or_default();
            let waiting = state
                .waiting
                .filter(|w| !ON_ITS_WAY.contains(&w.reason.as_deref().unwrap_or_default()));
            let failed = state.terminated.filter(|t| t.exit_code != 0);
            let last = cs
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.clone())
                .filter(|t| t.exit_code != 0);
            let mut what = match (&waiting, &failed) {
                (Some(w), _) => w.reason.clone().unwrap_or_else(|| "Waiting".into()),
                (None, Some(t)) => t.reason.clone().unwrap_or_else(|| "Terminated".into()),
                (None, None) => continue,
            };
            let ended = failed.or(last);
            if let Some(t) = &ended {
                what.push_str(&format!(", last exit code {}", t.exit_code));
            }
            if cs.restart_count > 0 {
                what.push_str(&format!(", {} restarts", cs.restart_count));
            }
            // The waiting message says what a configuration error is; a crash is told by the
            // end of the run.
            let detail = ended
                .and_then(|t| t.message)
                .or_else(|| waiting.and_then(|w| w.message));
            let detail = detail
                .as_deref()
                .and_then(|m| m.lines().rev().find(|l| !l.trim().is_empty()))
                .map(|l| {
                    let l = l.trim();
                    let cut = l.char_indices().nth(200).map_or(l.len(), |(i, _)| i);
                    format!(": {}", &l[..cut])
                })
                .unwrap_or_default();
            out.push(format!(
                "pod {} container {}: {what}{detail}",
                pod.name_any(),
                cs.name
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn pod_problems_tell_a_crash_loop_and_a_config_error_but_not_a_start() {
        let pod = |name: &str, status: serde_json::Value| -> k8s_openapi::api::core::v1::Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name},
                "status": {"containerStatuses": [status]}
            }))
            .unwrap()
        };
        let cs = |ready: bool, state: serde_json::Value, last: serde_json::Value, restarts: i32| {
            serde_json::json!({"name": "rabbitmq", "image": "rabbitmq", "imageID": "", "ready": ready,
                "restartCount": restarts, "state": state, "lastState": last})
        };
        let pods = [
            pod(
                "crash-0",
                cs(
                    false,
                    serde_json::json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 4s"}}),
                    serde_json::json!({"terminated": {"exitCode": 1, "reason": "Error",
                        "message": "starting\nerl: cannot open /var/lib/rabbitmq: Permission denied\n"}}),
                    3,
                ),
            ),
            pod(
                "config-0",
                cs(
                    false,
                    serde_json::json!({"waiting": {"reason": "CreateContainerConfigError",
                        "message": "secret \"x\" not found"}}),
                    serde_json::json!({}),
                    0,
                ),
            ),
            pod(
                "starting-0",
                cs(
                    false,
                    serde_json::json!({"waiting": {"reason": "ContainerCreating"}}),
                    serde_json::json!({}),
                    0,
                ),
            ),
            pod(
                "running-0",
                cs(
                    true,
                    serde_json::json!({"running": {}}),
                    serde_json::json!({"terminated": {"exitCode": 1}}),
                    1,
                ),
            ),
        ];
        assert_eq!(
            pod_problems(&pods),
            [
                "pod crash-0 container rabbitmq: CrashLoopBackOff, last exit code 1, 3 restarts: erl: cannot open /var/lib/rabbitmq: Permission denied",
                "pod config-0 container rabbitmq: CreateContainerConfigError: secret \"x\" not found",
            ]
        );
    }
    use super::*;
    use chrono::{DateTime, Utc};
    use serde_json::json;
    use tiermq_broker::steps::QueueBacklog as BrokerQueue;

    fn perms(c: &str, w: &str, r: &str) -> Permissions {
        serde_json::from_value(json!({"configure": c, "write": w, "read": r})).unwrap()
    }

    #[test]
    fn permissions_map_to_access() {
        assert_eq!(access_of(Some(&perms(".*", ".*", ".*"))), Access::ReadWrite);
        assert_eq!(access_of(Some(&perms(".*", "^$", ".*"))), Access::ReadOnly);
        assert_eq!(access_of(Some(&perms("^$", "^$", "^$"))), Access::None);
        assert_eq!(access_of(None), Access::None);
    }

    fn queue(name: &str, ready: u64, unacked: u64, delay: Option<u64>) -> BrokerQueue {
        BrokerQueue {
            name: name.into(),
            queue_type: "classic".into(),
            exclusive: false,
            auto_delete: false,
            transient: false,
            stats_known: true,
            ready,
            unacked,
            dlx_pending: 0,
            consumers: 0,
            drain_rate: 0.0,
            publish_rate: 0.0,
            delay_ttl_ms: delay,
            message_ttl_ms: delay,
            dead_letters: delay.is_some(),
            drops_oldest: false,
        }
    }

    fn backlog(queues: Vec<BrokerQueue>, complete: bool, rate: f64) -> Backlog {
        let at = DateTime::parse_from_rfc3339("2026-01-01T00:00:10Z")
            .unwrap()
            .with_timezone(&Utc);
        Backlog {
            cluster: "c".into(),
            vhost: "v".into(),
            sampled_at: at,
            total_ready: queues.iter().map(|q| q.ready).sum(),
            total_unacked: queues.iter().map(|q| q.unacked).sum(),
            total_dlx_pending: 0,
            delayed: 0,
            consumers: 0,
            drain_rate: rate,
            publish_rate: 0.0,
            eta_seconds: None,
            complete,
            queues,
        }
    }

    #[test]
    fn a_backlog_sample_is_dated_back_by_the_statistics_lag_and_counts_delayed_once() {
        let b = backlog(
            vec![
                queue("orders", 3, 2, None),
                queue("delay", 4, 0, Some(60_000)),
            ],
            true,
            1.5,
        );
        let s = backlog_sample(&b, Duration::from_secs(5), Some(7), 0.0).unwrap();
        assert_eq!(s.stats_at.to_rfc3339(), "2026-01-01T00:00:05+00:00");
        assert_eq!(s.total(), 9);
        assert_eq!(s.queues[1].delayed, 4);
        assert_eq!(s.queues[1].ready, 0);
        assert_eq!(s.drain_rate, Some(1.5));
        assert_eq!(s.live_ready, Some(7));
        assert!(!s.is_empty());
    }

    #[test]
    fn a_backlog_with_unknown_counts_is_no_sample() {
        let b = backlog(vec![queue("orders", 0, 0, None)], false, 0.0);
        assert_eq!(backlog_sample(&b, Duration::ZERO, None, 0.0), None);
        let empty = backlog_sample(&backlog(vec![], true, 0.0), Duration::ZERO, None, 0.0).unwrap();
        assert!(empty.is_empty());
        assert_eq!(empty.drain_rate, None);
    }

    #[test]
    fn topology_names_cover_every_kind() {
        let defs: Definitions = serde_json::from_value(json!({
            "exchanges": [{"name": "ex", "type": "direct"}],
            "queues": [{"name": "q1"}],
            "bindings": [{"source": "ex", "destination": "q1", "destination_type": "queue", "routing_key": "k"}],
            "policies": [{"name": "p"}]
        }))
        .unwrap();
        let names: Vec<String> = topology_names(&defs).into_iter().collect();
        assert_eq!(
            names,
            [
                "binding/ex/queue/q1/k",
                "exchange/ex",
                "policy/p",
                "queue/q1"
            ]
        );
    }

    #[test]
    fn mirroring_policies_are_named_and_not_expected_on_the_destination() {
        let defs: Definitions = serde_json::from_value(json!({
            "policies": [
                {"name": "ha-all", "definition": {"ha-mode": "all", "ha-sync-mode": "automatic"}},
                {"name": "capped", "definition": {"ha-mode": "exactly", "ha-params": 2, "max-length": 9}},
                {"name": "ttl", "definition": {"message-ttl": 5}}
            ]
        }))
        .unwrap();
        let names: Vec<String> = topology_names(&defs).into_iter().collect();
        assert_eq!(names, ["policy/capped", "policy/ttl"]);
        assert_eq!(
            mirroring_policies(&defs),
            [
                "ha-all (ha-mode, ha-sync-mode)",
                "capped (ha-mode, ha-params)"
            ]
        );
    }

    #[test]
    fn the_last_permit_line_decides_and_images_name_their_major() {
        let key = "deprecated_features.permit.transient_nonexcl_queues";
        assert!(!refuses_transient_queues(""));
        assert!(refuses_transient_queues(&format!("{key} = false\n")));
        assert!(!refuses_transient_queues(&format!(
            "{key} = false\n{key}=true\n"
        )));
        let sts = |image: &str| -> k8s_openapi::api::apps::v1::StatefulSet {
            serde_json::from_value(json!({"spec": {"selector": {}, "serviceName": "x",
                "template": {"spec": {"containers": [{"name": "rabbitmq", "image": image}]}}}}))
            .unwrap()
        };
        assert_eq!(statefulset_major(&sts("rabbitmq:4.0-management")), Some(4));
        assert_eq!(statefulset_major(&sts("rabbitmq:3.10-management")), Some(3));
        assert_eq!(statefulset_major(&sts("rabbitmq:latest")), None);
    }

    #[test]
    fn only_drain_shovels_count_and_terminated_ones_fail() {
        let declared = vec![
            "tiermq-drain-a".to_string(),
            "tiermq-drain-b".to_string(),
            "users-own".to_string(),
        ];
        let statuses: Vec<ShovelStatus> = serde_json::from_value(json!([
            {"name": "tiermq-drain-a", "state": "running"},
            {"name": "tiermq-drain-b", "state": "terminated"},
            {"name": "users-own", "state": "terminated"}
        ]))
        .unwrap();
        assert_eq!(
            shovel_observation(&declared, &statuses),
            ShovelObservation {
                running: 1,
                failed: 1
            }
        );
    }

    fn instance(status: serde_json::Value) -> RabbitMQInstance {
        serde_json::from_value(json!({
            "apiVersion": "tiermq.io/v1alpha1", "kind": "RabbitMQInstance",
            "metadata": {"name": "orders", "namespace": "team-a"},
            "spec": {"series": "Subscription", "tier": "Shared",
                     "shared": {"clusterRef": {"name": "from-spec"}}},
            "status": status
        }))
        .unwrap()
    }

    fn shared(ns: &str, name: &str) -> ClusterRef {
        ClusterRef {
            kind: ClusterKind::Shared,
            name: name.into(),
            namespace: ns.into(),
        }
    }

    #[test]
    fn the_shared_cluster_comes_from_migration_then_serving_then_spec_then_default() {
        let mut cfg = RunArgs::local("ops");
        cfg.default_shared_cluster = Some("other/default".into());
        let i = instance(json!({}));
        assert_eq!(shared_ref(&i, &cfg), Some(shared("ops", "from-spec")));
        cfg.shared_cluster_namespace = Some("shared-ns".into());
        assert_eq!(shared_ref(&i, &cfg), Some(shared("shared-ns", "from-spec")));
        let i =
            instance(json!({"serving": {"kind": "Shared", "name": "serving", "namespace": "x"}}));
        assert_eq!(shared_ref(&i, &cfg), Some(shared("x", "serving")));
        let mut i = instance(json!({}));
        i.spec.shared.cluster_ref = None;
        assert_eq!(shared_ref(&i, &cfg), Some(shared("other", "default")));
        cfg.default_shared_cluster = Some("plain".into());
        assert_eq!(shared_ref(&i, &cfg), Some(shared("shared-ns", "plain")));
        cfg.default_shared_cluster = None;
        assert_eq!(shared_ref(&i, &cfg), None);
    }

    #[test]
    fn placement_counts_serving_and_both_migration_sides() {
        let a = shared("ns", "a");
        let i = instance(json!({"serving": {"kind": "Shared", "name": "a", "namespace": "ns"}}));
        assert!(placed_on(&i, &a));
        assert!(!placed_on(&i, &shared("ns", "b")));
        assert!(!placed_on(&instance(json!({})), &a));
    }

    #[test]
    fn routes_are_read_from_the_slices_cluster_labels() {
        let slice = |cluster: &str| -> EndpointSlice {
            serde_json::from_value(json!({
                "metadata": {"name": format!("orders-{cluster}"), "namespace": "team-a",
                             "labels": {"tiermq.io/cluster": cluster}},
                "addressType": "IPv4", "endpoints": []
            }))
            .unwrap()
        };
        let sh = shared("shared-ns", "main");
        let de = ClusterRef {
            kind: ClusterKind::Dedicated,
            name: "orders-dedicated".into(),
            namespace: "team-a".into(),
        };
        let routes = routes_from_slices(&[slice("main"), slice("orders-dedicated")], &sh, &de);
        assert_eq!(routes, vec![sh.clone(), de.clone()]);
        assert!(routes_from_slices(&[], &sh, &de).is_empty());
    }
}
