//! The executor: runs a plan's steps in order, each idempotently, and stops at the first failure
//! (the caller then records nothing, so the next reconcile plans again from the same state).
//!
//! Every step maps to builders + apply (Kubernetes objects) or to a `tiermq_broker::steps`
//! function (broker state). A tenant step on a cluster where the tenant's vhost is absent
//! succeeds without doing anything, as the planner expects.
//!
//! Two enforcements beyond the broker steps, both needed for zero loss on RabbitMQ 3.10 (found
//! by the steady-load tests in `tests/rabbit_operator.rs`):
//! - `RevokeWrites` / `RevokeAll` also close the tenant's connections that keep publishing
//!   (channels cache permission checks until idle, so a busy publisher is not stopped by the
//!   revocation); idle connections and consumers stay open, as the connection policy says;
//! - retiring a source (`DeleteTenant` outside instance deletion) first closes the tenant's
//!   remaining connections on it, then lets `retire_tenant` prove the vhost empty once more.

use std::collections::BTreeSet;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tiermq_broker::ManagementClient;
use tiermq_broker::model::{ChannelInfo, VhostLimits};
use tiermq_broker::steps::{self, DrainCriteria, Tenant};
use tiermq_crd::{ClusterRef, RabbitMQInstance};

use crate::build::{self, BrokerCluster, LABEL_CLUSTER, Secret, endpoint_slice, instance_service};
use crate::controller::apply::{FIELD_MANAGER, apply, delete_if_exists};
use crate::controller::clusters;
use crate::controller::context::Context;
use crate::controller::plan::Step;
use crate::error::{Error, Result, kube_err};

/// The operator's finalizer on `RabbitMQInstance`: broker state (vhost, user) outlives the
/// object otherwise.
pub const FINALIZER: &str = "tiermq.io/cleanup";

/// What the steps of one plan act for.
pub struct Target<'a> {
    pub instance: &'a RabbitMQInstance,
    /// The tenant's vhost and user name.
    pub tenant: String,
    /// The tenant's password from the credentials Secret; `None` while the instance is being
    /// deleted and the Secret is already gone (no step then needs it).
    pub password: Option<Secret>,
    /// The instance is being deleted: tenants are removed without the drain check.
    pub deleting: bool,
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
    clusters::management_client(ctx, r).await?.ok_or_else(|| {
        Error::NotReady(format!(
            "the management API of {} has no admin Secret or address yet",
            clusters::label(r)
        ))
    })
}

/// The tenant's vhost exists on the broker.
async fn has_vhost(mc: &ManagementClient, tenant: &str) -> Result<bool> {
    Ok(mc.get_vhost(tenant).await?.is_some())
}

fn limits(i: &RabbitMQInstance) -> VhostLimits {
    let non_negative = |v: Option<i32>| v.and_then(|n| u32::try_from(n).ok());
    VhostLimits {
        max_connections: non_negative(i.spec.limits.max_connections),
        max_queues: non_negative(i.spec.limits.max_queues),
    }
}

async fn run_step(ctx: &Context, t: &Target<'_>, step: &Step) -> Result<()> {
    let tenant = t.tenant.as_str();
    match step {
        Step::EnsureDedicatedCluster { cluster } => {
            let mut c = BrokerCluster::for_dedicated(t.instance)?;
            c.stats_interval_ms = ctx.config.broker_stats_interval_ms;
            debug_assert_eq!(c.name, cluster.name);
            clusters::ensure_cluster(&ctx.client, &c).await
        }
        Step::EnsureTenant { cluster } => {
            let mc = broker(ctx, cluster).await?;
            let tenant = Tenant {
                vhost: tenant.to_string(),
                user: tenant.to_string(),
                password: t.password()?.clone(),
                limits: limits(t.instance),
            };
            Ok(steps::ensure_tenant(&mc, &tenant).await?)
        }
        Step::CopyTopology { from, to } => {
            let src = broker(ctx, from).await?;
            let dst = broker(ctx, to).await?;
            steps::copy_topology(&src, tenant, &dst, tenant).await?;
            Ok(())
        }
        Step::RouteService { to } => route_service(ctx, t.instance, to).await,
        Step::EnableFederation {
            source,
            destination,
        } => {
            let pw = t.password()?.expose().to_string();
            for (down, up) in [(destination, source), (source, destination)] {
                let mc = broker(ctx, down).await?;
                if has_vhost(&mc, tenant).await? {
                    let uri = clusters::tenant_amqp_uri(ctx, up, tenant, &pw).await?;
                    steps::ensure_queue_federation(&mc, tenant, &uri).await?;
                }
            }
            Ok(())
        }
        Step::DisableFederation {
            source,
            destination,
        } => {
            for c in [source, destination] {
                let mc = broker(ctx, c).await?;
                if has_vhost(&mc, tenant).await? {
                    steps::remove_queue_federation(&mc, tenant).await?;
                }
            }
            Ok(())
        }
        Step::RevokeWrites { cluster } => {
            let mc = broker(ctx, cluster).await?;
            if has_vhost(&mc, tenant).await? {
                steps::revoke_writes(&mc, tenant, tenant).await?;
                close_publishers(&mc, tenant).await?;
            }
            Ok(())
        }
        Step::RestoreWrites { cluster } => {
            let mc = broker(ctx, cluster).await?;
            if has_vhost(&mc, tenant).await? {
                steps::restore_writes(&mc, tenant, tenant).await?;
            }
            Ok(())
        }
        Step::RevokeAll { cluster } => {
            let mc = broker(ctx, cluster).await?;
            if has_vhost(&mc, tenant).await? {
                steps::revoke_all(&mc, tenant, tenant).await?;
                close_publishers(&mc, tenant).await?;
            }
            Ok(())
        }
        Step::StartShovels { from, to } => {
            let src = broker(ctx, from).await?;
            if !has_vhost(&src, tenant).await? {
                return Ok(());
            }
            let backlog = steps::measure_backlog(&src, tenant).await?;
            let uri = clusters::tenant_amqp_uri(ctx, to, tenant, t.password()?.expose()).await?;
            steps::ensure_drain_shovels(&src, &backlog, &uri).await?;
            Ok(())
        }
        Step::StopShovels { from } => {
            let mc = broker(ctx, from).await?;
            if has_vhost(&mc, tenant).await? {
                steps::remove_drain_shovels(&mc, tenant).await?;
            }
            Ok(())
        }
        Step::CloseConnections { cluster, reason } => {
            let mc = broker(ctx, cluster).await?;
            if has_vhost(&mc, tenant).await? {
                steps::close_connections(&mc, tenant, Some(tenant), reason).await?;
            }
            Ok(())
        }
        Step::DeleteTenant { cluster } => {
            let mc = broker(ctx, cluster).await?;
            if t.deleting {
                // The instance is gone: its messages go with it.
                mc.delete_vhost(tenant).await?;
                mc.delete_user(tenant).await?;
            } else {
                // Retirement closes the source's connections anyway (the vhost goes); closing
                // them first makes the last check sound: nobody can publish any more, and
                // messages a consumer held unacked return to their queue, where the check
                // finds them.
                if has_vhost(&mc, tenant).await? {
                    steps::close_connections(&mc, tenant, Some(tenant), RETIRE_REASON).await?;
                }
                // The planner proved the vhost drained; the broker step checks once more and
                // refuses (changing nothing) should messages have appeared.
                let interval = std::time::Duration::from_millis(u64::from(
                    ctx.config.broker_stats_interval_ms,
                ));
                let criteria = DrainCriteria {
                    required_samples: steps::DRAINED_AFTER,
                    min_spacing: interval + std::time::Duration::from_secs(1),
                };
                steps::retire_tenant(&mc, tenant, tenant, &criteria).await?;
            }
            Ok(())
        }
        Step::DeleteDedicatedCluster { cluster } => {
            let c = BrokerCluster::for_dedicated(t.instance)?;
            debug_assert_eq!(c.name, cluster.name);
            let deleted = clusters::delete_cluster(&ctx.client, &c).await?;
            tracing::info!(cluster = %clusters::label(cluster), deleted, "dedicated cluster deleted");
            Ok(())
        }
        Step::RecordHistory { record } => {
            ctx.metrics
                .migrations_finished
                .get_or_create(&crate::metrics::PhaseLabels {
                    phase: format!("{:?}", record.outcome),
                })
                .inc();
            tracing::info!(
                from = %record.from, to = %record.to, outcome = ?record.outcome,
                phases = ?record.phase_seconds, "conversion finished"
            );
            Ok(())
        }
        Step::RemoveFinalizer => remove_finalizer(ctx, t.instance).await,
    }
}

/// Reason shown to clients whose connection is closed because they keep publishing to a cluster
/// whose writes were revoked.
pub const PUBLISHER_REASON: &str = "tiermq: this cluster no longer accepts writes for the instance; reconnect to the same endpoint";
/// Reason shown to clients still connected to a source when it is retired.
pub const RETIRE_REASON: &str =
    "tiermq: this cluster no longer serves the instance; reconnect to the same endpoint";

/// Connections of `user` that have a channel publishing: a publish rate above 0, or (before the
/// broker has computed rates, which takes a few sample intervals) publishes counted on a
/// channel that has not gone idle — an idle channel has dropped its cached permissions and will
/// be refused at its next publish anyway.
pub fn publishing_connections(channels: &[ChannelInfo], user: &str) -> BTreeSet<String> {
    channels
        .iter()
        .filter(|c| c.user.as_deref() == Some(user))
        .filter(|c| {
            let stats = c.message_stats.as_ref();
            let rate = stats
                .and_then(|m| m.pointer("/publish_details/rate"))
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(0.0);
            let count = stats
                .and_then(|m| m.get("publish"))
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0);
            rate > 0.0 || (count > 0 && c.idle_since.is_none())
        })
        .filter_map(|c| c.connection_details.as_ref().map(|d| d.name.clone()))
        .collect()
}

/// Makes a write revocation hold for busy publishers too. RabbitMQ 3.10 channels cache their
/// permission checks until they go idle, so a client that publishes without pause keeps
/// publishing into a cluster whose writes were revoked — it would hold up the drain forever,
/// and a message it publishes after the drain was proven could be deleted with the retired
/// tenant. Closing exactly those connections sends them (reconnecting through the Service) to
/// the cluster that now takes writes; idle connections and consumers are left alone, as the
/// connection policy says.
async fn close_publishers(mc: &ManagementClient, tenant: &str) -> Result<()> {
    let channels = mc.list_channels(tenant).await?;
    for name in publishing_connections(&channels, tenant) {
        if mc.close_connection(&name, PUBLISHER_REASON).await? {
            tracing::info!(cluster = mc.cluster(), connection = %name, "closed a connection that kept publishing after writes were revoked");
        }
    }
    Ok(())
}

/// The instance Service exists (selector-less) and its EndpointSlices route to exactly `to`:
/// one slice per cluster with that cluster's pod IPs; slices of other clusters are deleted.
async fn route_service(ctx: &Context, i: &RabbitMQInstance, to: &[ClusterRef]) -> Result<()> {
    apply(&ctx.client, &instance_service::build(i)?).await?;
    for c in to {
        let pods = clusters::pods(&ctx.client, c).await?;
        let endpoints = endpoint_slice::pod_endpoints(&pods);
        apply(&ctx.client, &endpoint_slice::build(i, &c.name, &endpoints)?).await?;
    }
    let keep: BTreeSet<&str> = to.iter().map(|c| c.name.as_str()).collect();
    let ns = i.namespace().unwrap_or_default();
    for s in crate::controller::observe::instance_slices(&ctx.client, i).await? {
        let cluster = s.labels().get(LABEL_CLUSTER).cloned().unwrap_or_default();
        if !keep.contains(cluster.as_str()) {
            delete_if_exists::<EndpointSlice>(&ctx.client, &ns, &s.name_any()).await?;
        }
    }
    Ok(())
}

/// Adds [`FINALIZER`] unless present (JSON merge patch of the whole list).
pub async fn add_finalizer(ctx: &Context, i: &RabbitMQInstance) -> Result<()> {
    if i.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(());
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
    patch_finalizers(ctx, i, list).await
}

async fn patch_finalizers(ctx: &Context, i: &RabbitMQInstance, list: Vec<String>) -> Result<()> {
    let ns = i.namespace().unwrap_or_default();
    let api: Api<RabbitMQInstance> = Api::namespaced(ctx.client.clone(), &ns);
    // The resourceVersion makes this a compare-and-swap: a concurrent change gives a 409 and a
    // retry instead of a lost finalizer.
    let patch = json!({"metadata": {
        "finalizers": list,
        "resourceVersion": i.resource_version(),
    }});
    match api
        .patch(
            &i.name_any(),
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PatchParams::default()
            },
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(kube_err(
            "update finalizers of",
            format!("RabbitMQInstance {ns}/{}", i.name_any()),
        )(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_connections_of_the_tenant_that_publish_are_picked() {
        let channels: Vec<ChannelInfo> = serde_json::from_value(json!([
            {"name": "p1", "user": "ns.i", "connection_details": {"name": "conn-pub"},
             "message_stats": {"publish": 10, "publish_details": {"rate": 12.5}}},
            {"name": "c1", "user": "ns.i", "connection_details": {"name": "conn-consume"},
             "message_stats": {"deliver_get": 10, "deliver_get_details": {"rate": 9.0}}},
            {"name": "p0", "user": "ns.i", "connection_details": {"name": "conn-stopped"},
             "idle_since": "2026-01-01 00:00:00",
             "message_stats": {"publish": 10, "publish_details": {"rate": 0.0}}},
            {"name": "p2", "user": "ns.i", "connection_details": {"name": "conn-no-rate-yet"},
             "message_stats": {"publish": 3}},
            {"name": "x", "user": "other", "connection_details": {"name": "conn-other"},
             "message_stats": {"publish_details": {"rate": 3.0}}},
            {"name": "n", "user": "ns.i", "connection_details": {"name": "conn-new"}}
        ]))
        .unwrap();
        let picked: Vec<String> = publishing_connections(&channels, "ns.i")
            .into_iter()
            .collect();
        assert_eq!(picked, ["conn-no-rate-yet", "conn-pub"]);
    }
}
