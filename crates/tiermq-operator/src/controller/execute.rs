//! The executor: runs a plan's steps in order, each idempotently, and stops at the first failure
//! (the caller then records nothing, so the next reconcile plans again from the same state).
//!
//! Every step maps to builders + apply (Kubernetes objects) or to a `tiermq_broker::steps`
//! function (broker state). A tenant step on a cluster where the tenant's vhost is absent
//! succeeds without doing anything, as the planner expects.
//!
//! Two enforcements beyond the broker steps, both needed for zero loss (found by the steady-load
//! tests in `tests/rabbit_operator/`):
//! - `FreezeSource` / `RevokeAll` also close the tenant's connections that keep publishing
//!   (channels cache permission checks until idle, so a busy publisher is not stopped by the
//!   revocation); idle connections and consumers stay open, as the connection policy says;
//! - retiring a source (`DeleteTenant` outside instance deletion) refuses while connections are
//!   open there (the planner closes them first and waits for a sample after that), then lets
//!   `retire_tenant` look at the vhost, its queues included, once more.

use kube::ResourceExt;
use kube::api::{Api, Patch};
use serde_json::json;
use tiermq_broker::ManagementClient;
use tiermq_broker::model::{Permissions, VhostLimits};
use tiermq_broker::steps::{self, DrainCriteria, Tenant};
use tiermq_crd::{ClusterKind, ClusterRef, Limits, RabbitMQInstance, SharedCluster, Tier};

use crate::build::{self, BrokerCluster, Secret};
use crate::controller::apply::merge_patch_params;
use crate::controller::clusters;
use crate::controller::context::Context;
use crate::controller::plan::Step;
use crate::controller::routing;
use crate::error::{Error, Result, kube_err};

/// The operator's finalizer on `RabbitMQInstance`: broker state (vhost, user) outlives the
/// object otherwise.
pub const FINALIZER: &str = "tiermq.io/cleanup";

/// What the steps of one plan act for.
pub struct Target<'a> {
    /// The instance whose plan runs.
    pub instance: &'a RabbitMQInstance,
    /// The tenant's vhost and user name.
    pub tenant: String,
    /// The tenant's password from the credentials Secret; `None` while the instance is being
    /// deleted and the Secret is already gone (no step then needs it).
    pub password: Option<Secret>,
    /// The instance as stored after a step changed it (`SetTier`): the status write that follows
    /// is a compare-and-swap against this version, not the one the plan was made from.
    pub updated: std::sync::Mutex<Option<RabbitMQInstance>>,
}

impl Target<'_> {
    fn password(&self) -> Result<&Secret> {
        self.password.as_ref().ok_or_else(|| Error::Secret {
            name: build::credentials_secret_name(&self.instance.name_any()),
            problem: "is missing; it is created once per instance, so it was deleted by hand: \
                      restore it or recreate the instance"
                .into(),
        })
    }
}

/// Runs `steps` in order; the first error stops the run and names the step that failed.
pub async fn run(ctx: &Context, t: &Target<'_>, steps: &[Step]) -> Result<()> {
    for step in steps {
        tracing::debug!(step = step.name(), "running step");
        if step.needs_leadership()
            && let Some(l) = &ctx.leadership
        {
            l.confirm()
                .await
                .map_err(|e| Error::NotLeader(e.to_string()))
                .map_err(Error::at(step.name()))?;
        }
        run_step(ctx, t, step)
            .await
            .map_err(Error::at(step.name()))
            .inspect_err(|e| {
                tracing::info!(error = %e, "step failed; nothing recorded, will retry");
            })?;
    }
    Ok(())
}

async fn broker(ctx: &Context, r: &ClusterRef) -> Result<ManagementClient> {
    clusters::management_client(ctx.lookup(), &ctx.config, r)
        .await?
        .ok_or_else(|| {
            Error::NotReady(format!(
                "the management API of {} has no admin Secret or address yet",
                clusters::label(r)
            ))
        })
}

/// The management client of `r` when the tenant's vhost exists there; `None` when it does not
/// (a tenant step on an absent vhost has nothing to do).
async fn tenant_broker(
    ctx: &Context,
    r: &ClusterRef,
    tenant: &str,
) -> Result<Option<ManagementClient>> {
    let mc = broker(ctx, r).await?;
    Ok(mc.get_vhost(tenant).await?.is_some().then_some(mc))
}

/// The tenant's vhost limits: its own `spec.limits`, each unset one taken from `defaults` (a
/// SharedCluster's `spec.tenants.defaultLimits`).
fn limits(i: &RabbitMQInstance, defaults: &Limits) -> VhostLimits {
    let non_negative = |v: Option<i32>| v.and_then(|n| u32::try_from(n).ok());
    let own = &i.spec.limits;
    VhostLimits {
        max_connections: non_negative(own.max_connections.or(defaults.max_connections)),
        max_queues: non_negative(own.max_queues.or(defaults.max_queues)),
    }
}

/// The default tenant limits of the cluster `r`: a SharedCluster's `spec.tenants.defaultLimits`
/// (none when it is gone); none for a dedicated cluster.
async fn default_limits(ctx: &Context, r: &ClusterRef) -> Result<Limits> {
    if r.kind != ClusterKind::Shared {
        return Ok(Limits::default());
    }
    let api: Api<SharedCluster> = Api::namespaced(ctx.client.clone(), &r.namespace);
    let sc = api.get_opt(&r.name).await.map_err(kube_err(
        "get",
        format!("SharedCluster {}/{}", r.namespace, r.name),
    ))?;
    Ok(sc
        .map(|sc| sc.spec.tenants.default_limits)
        .unwrap_or_default())
}

async fn run_step(ctx: &Context, t: &Target<'_>, step: &Step) -> Result<()> {
    let tenant = t.tenant.as_str();
    match step {
        Step::EnsureDedicatedCluster { cluster } => {
            let mut c = BrokerCluster::for_dedicated(t.instance)?;
            c.stats_interval_ms = ctx.config.broker_stats_interval_ms;
            c.network = ctx.config.network_access();
            debug_assert_eq!(c.name, cluster.name);
            clusters::ensure_cluster(&ctx.client, &ctx.config, &c)
                .await
                .map(drop)
        }
        Step::EnsureTenant { cluster, writable } => {
            let mc = broker(ctx, cluster).await?;
            let defaults = default_limits(ctx, cluster).await?;
            let tenant = Tenant {
                vhost: tenant.to_string(),
                user: tenant.to_string(),
                password: t.password()?.clone(),
                limits: limits(t.instance, &defaults),
            };
            let perms = if *writable {
                Permissions::full()
            } else {
                Permissions::read_only()
            };
            Ok(steps::ensure_tenant_with(&mc, &tenant, &perms).await?)
        }
        Step::CopyTopology {
            from,
            to,
            policy_keys,
        } => {
            let src = broker(ctx, from).await?;
            let dst = broker(ctx, to).await?;
            let admits = |k: &str| {
                policy_keys
                    .as_ref()
                    .is_none_or(|keys| keys.iter().any(|a| a == "*" || a == k))
            };
            let copied =
                steps::copy_topology_with(&src, tenant, &dst, tenant, Some(&admits)).await?;
            if !copied.translated.is_empty() {
                tracing::info!(changes = ?copied.translated, "topology adapted for the destination");
            }
            Ok(())
        }
        Step::CopyTransfers { from, to } => {
            let Some(src) = tenant_broker(ctx, from, tenant).await? else {
                return Ok(());
            };
            let dst = broker(ctx, to).await?;
            steps::copy_transfers(&src, &dst, tenant).await?;
            Ok(())
        }
        Step::RouteService { to } => routing::route_service(ctx, t.instance, to).await,
        Step::DisableFederation {
            source,
            destination,
        } => {
            for c in [source, destination] {
                if let Some(mc) = tenant_broker(ctx, c, tenant).await? {
                    steps::remove_queue_federation(&mc, tenant).await?;
                }
            }
            Ok(())
        }
        Step::FreezeSource { cluster } => {
            if let Some(mc) = tenant_broker(ctx, cluster, tenant).await? {
                steps::revoke_writes(&mc, tenant, tenant).await?;
                close_publishers(&mc, tenant).await?;
            }
            Ok(())
        }
        Step::RestoreWrites { cluster } => {
            if let Some(mc) = tenant_broker(ctx, cluster, tenant).await? {
                steps::restore_writes(&mc, tenant, tenant).await?;
            }
            Ok(())
        }
        Step::RevokeAll { cluster } => {
            if let Some(mc) = tenant_broker(ctx, cluster, tenant).await? {
                steps::revoke_all(&mc, tenant, tenant).await?;
                close_publishers(&mc, tenant).await?;
            }
            Ok(())
        }
        Step::StartShovels { from, to } => {
            let Some(src) = tenant_broker(ctx, from, tenant).await? else {
                return Ok(());
            };
            let mut backlog = steps::measure_backlog(&src, tenant).await?;
            // The statistics may not show messages the queues already hold: shovel what the
            // queues themselves say they have.
            let names: Vec<String> = backlog.queues.iter().map(|q| q.name.clone()).collect();
            for live in steps::live_counts(&src, tenant, &names).await? {
                if let Some(q) = backlog.queues.iter_mut().find(|q| q.name == live.name) {
                    q.ready = q.ready.max(u64::from(live.ready.unwrap_or(0)));
                }
            }
            let uri =
                clusters::tenant_amqp_uri(ctx, from, to, tenant, t.password()?.expose()).await?;
            steps::ensure_drain_shovels(&src, &backlog, &uri).await?;
            Ok(())
        }
        Step::StopShovels { from } => {
            if let Some(mc) = tenant_broker(ctx, from, tenant).await? {
                steps::remove_drain_shovels(&mc, tenant).await?;
            }
            Ok(())
        }
        Step::StopTransfers { cluster } => {
            if let Some(mc) = tenant_broker(ctx, cluster, tenant).await? {
                steps::stop_transfers(&mc, tenant).await?;
            }
            Ok(())
        }
        Step::CloseSubscribers { cluster, reason } => {
            if let Some(mc) = tenant_broker(ctx, cluster, tenant).await? {
                let clients = steps::list_clients(&mc, tenant, tenant).await?;
                let n = steps::close_named(&mc, &clients.subscribers, reason).await?;
                if n > 0 {
                    tracing::info!(cluster = mc.cluster(), closed = n, "subscribers moved");
                }
            }
            Ok(())
        }
        Step::CloseConsumers { cluster, reason } => {
            if let Some(mc) = tenant_broker(ctx, cluster, tenant).await? {
                let clients = steps::list_clients(&mc, tenant, tenant).await?;
                steps::close_named(&mc, &clients.consumers, reason).await?;
            }
            Ok(())
        }
        Step::CloseConnections { cluster, reason } => {
            if let Some(mc) = tenant_broker(ctx, cluster, tenant).await? {
                steps::close_connections(&mc, tenant, Some(tenant), reason).await?;
            }
            Ok(())
        }
        Step::DeleteTenant { cluster } => {
            let mc = broker(ctx, cluster).await?;
            // The planner closed the source's connections and saw a sample taken after that
            // empty. A connection open now could hold messages unacknowledged, which asking the
            // queues would not show: refuse, and the next pass closes it.
            // (No vhost: a rerun after the delete, which then only removes the user.)
            let open = match mc.get_vhost(tenant).await? {
                Some(_) => mc.list_connections(tenant).await?.len(),
                None => 0,
            };
            if open > 0 {
                return Err(Error::NotReady(format!(
                    "{open} connections are open on the tenant being retired on {}; it is \
                     retired once they are closed",
                    cluster.name
                )));
            }
            // One more look, the queues themselves included, right before the delete; it
            // refuses (changing nothing) should messages have appeared. A single reading: the
            // proof across samples is the planner's, recorded in status, so that no pass needs
            // seconds of uninterrupted work.
            let criteria = DrainCriteria {
                required_samples: 1,
                min_spacing: std::time::Duration::ZERO,
            };
            steps::retire_tenant(&mc, tenant, tenant, &criteria).await?;
            Ok(())
        }
        Step::DiscardTenant { cluster } => {
            let mc = broker(ctx, cluster).await?;
            mc.delete_vhost(tenant).await?;
            mc.delete_user(tenant).await?;
            Ok(())
        }
        Step::DeleteDedicatedCluster { cluster } => {
            let c = BrokerCluster::for_dedicated(t.instance)?;
            debug_assert_eq!(c.name, cluster.name);
            let deleted = clusters::delete_cluster(&ctx.client, &c).await?;
            tracing::info!(cluster = %clusters::label(cluster), deleted, "dedicated cluster deleted");
            Ok(())
        }
        Step::RemoveFinalizer => remove_finalizer(ctx, t.instance).await,
        Step::SetTier { tier } => {
            if let Some(stored) = set_tier(ctx, t.instance, *tier).await? {
                *t.updated.lock().unwrap_or_else(|e| e.into_inner()) = Some(stored);
            }
            Ok(())
        }
    }
}

/// Auto-tiering's flip: `spec.tier` patched against the version the plan was made from, so a
/// concurrent edit (a user's own flip, a GitOps sync) gets a 409 and is never overwritten.
async fn set_tier(
    ctx: &Context,
    i: &RabbitMQInstance,
    tier: Tier,
) -> Result<Option<RabbitMQInstance>> {
    if i.spec.tier == tier {
        return Ok(None);
    }
    let ns = i.namespace().unwrap_or_default();
    let api: Api<RabbitMQInstance> = Api::namespaced(ctx.client.clone(), &ns);
    let patch = json!({
        "metadata": {"resourceVersion": i.resource_version()},
        "spec": {"tier": tier},
    });
    api.patch(&i.name_any(), &merge_patch_params(), &Patch::Merge(&patch))
        .await
        .map(Some)
        .map_err(kube_err(
            "patch spec.tier of",
            format!("RabbitMQInstance {ns}/{}", i.name_any()),
        ))
}

/// Reason shown to clients whose connection is closed because they keep publishing to a cluster
/// whose writes were revoked.
pub const PUBLISHER_REASON: &str = "tiermq: this cluster no longer accepts writes for the instance; reconnect to the same endpoint";
/// Makes a write revocation hold for busy publishers too. RabbitMQ 3.10 channels cache their
/// permission checks until they go idle, so a client that publishes without pause keeps
/// publishing into a cluster whose writes were revoked — it would hold up the drain forever,
/// and a message it publishes after the drain was proven could be deleted with the retired
/// tenant. Closing exactly those connections sends them (reconnecting through the Service) to
/// the cluster that now takes writes. Subscribers are left to `CloseSubscribers`, which runs
/// only once nothing can still be routed to their queues (closing one drops its queue).
async fn close_publishers(mc: &ManagementClient, tenant: &str) -> Result<()> {
    let clients = steps::list_clients(mc, tenant, tenant).await?;
    for name in clients.publishers_only() {
        if mc.close_connection(name, PUBLISHER_REASON).await? {
            tracing::info!(cluster = mc.cluster(), connection = %name, "closed a connection that kept publishing after writes were revoked");
        }
    }
    Ok(())
}

/// Adds [`FINALIZER`] unless present (JSON merge patch of the whole list).
/// Adds the finalizer when missing; returns the object as stored after the change (its new
/// resourceVersion is what later writes of this reconcile compare against).
pub async fn add_finalizer(
    ctx: &Context,
    i: &RabbitMQInstance,
) -> Result<Option<RabbitMQInstance>> {
    if i.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(None);
    }
    let mut list = i.finalizers().to_vec();
    list.push(FINALIZER.to_string());
    patch_finalizers(ctx, i, list).await
}

async fn remove_finalizer(ctx: &Context, i: &RabbitMQInstance) -> Result<()> {
    if !i.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let list: Vec<String> = i
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    patch_finalizers(ctx, i, list).await.map(|_| ())
}

async fn patch_finalizers(
    ctx: &Context,
    i: &RabbitMQInstance,
    list: Vec<String>,
) -> Result<Option<RabbitMQInstance>> {
    let ns = i.namespace().unwrap_or_default();
    let api: Api<RabbitMQInstance> = Api::namespaced(ctx.client.clone(), &ns);
    // The resourceVersion makes this a compare-and-swap: a concurrent change gives a 409 and a
    // retry instead of a lost finalizer.
    let patch = json!({"metadata": {
        "finalizers": list,
        "resourceVersion": i.resource_version(),
    }});
    match api
        .patch(&i.name_any(), &merge_patch_params(), &Patch::Merge(&patch))
        .await
    {
        Ok(stored) => Ok(Some(stored)),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(kube_err(
            "update finalizers of",
            format!("RabbitMQInstance {ns}/{}", i.name_any()),
        )(e)),
    }
}
