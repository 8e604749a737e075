//! The `RabbitMQInstance` reconciler, a pipeline:
//!
//! 1. finalizer: added on first sight; on delete the plan's deletion steps remove the broker
//!    state on every cluster (both sides of a running conversion), then the finalizer;
//! 2. credentials: the instance's Secret is created once (password generated once) and read back;
//! 3. placement: a new shared instance needs an existing SharedCluster with room (else a
//!    condition + one Warning Event, slow requeue);
//! 4. observe ([`super::observe`]) → [`plan`] → execute ([`super::execute`]) → status (written
//!    only when changed) → Events (the plan's, emitted only on transitions) → requeue (the plan's
//!    delay, at most `--drain-poll-seconds` while a source drains).
//!
//! Errors: permanent ones (invalid spec, unknown or full SharedCluster) set the `InvalidSpec`
//! condition, emit one Warning Event per distinct message and requeue slowly; transient ones
//! (API server, broker, not ready yet) return an error, and the controller retries with a
//! per-object exponential backoff.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tiermq_crd::conditions::{self, reasons};
use tiermq_crd::{
    ClusterKind, ClusterRef, MigrationPhase, RabbitMQInstance, RabbitMQInstanceStatus, Tier,
};

use crate::build::{self, InstanceTarget, credentials, generate_secret_value};
use crate::controller::apply::create_once;
use crate::controller::context::Context;
use crate::controller::execute::{self, FINALIZER, Target};
use crate::controller::observe;
use crate::controller::plan::{EventType, Plan, PlannedEvent, plan};
use crate::controller::status;
use crate::error::{Error, Result};
use crate::metrics::{InstanceLabels, PhaseLabels};

pub const CONTROLLER: &str = "instance";

/// Reasons of the operator's own conditions and Events (besides the planner's).
pub mod reasons_local {
    pub const SPEC_VALID: &str = "SpecValid";
}

/// Entry point for the kube-runtime Controller.
pub async fn reconcile(obj: Arc<RabbitMQInstance>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_timer(CONTROLLER);
    let span = tracing::info_span!(
        "reconcile",
        instance = %format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
    );
    let result = tracing::Instrument::instrument(reconcile_inner(&obj, &ctx), span).await;
    match result {
        Ok(action) => {
            ctx.succeeded(&ObjectRef::from_obj(&*obj));
            Ok(action)
        }
        Err(e) if e.is_permanent() => {
            ctx.metrics.reconcile_failed(CONTROLLER, e.category());
            tracing::warn!(
                instance = %format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any()),
                error = %e, "permanent error; reported on the object, retrying slowly"
            );
            report_permanent(&ctx, &obj, &e).await?;
            Ok(Action::requeue(e.retry_after()))
        }
        Err(e) => Err(e),
    }
}

/// Error policy for the controller: count, log, back off per object.
pub fn error_policy(obj: Arc<RabbitMQInstance>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed(CONTROLLER, err.category());
    let delay = ctx.backoff(&ObjectRef::from_obj(&*obj));
    tracing::warn!(
        instance = %format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any()),
        error = %err, retry_in = ?delay, "reconcile failed"
    );
    Action::requeue(delay)
}

/// Why a new shared instance cannot be placed, as (reason, message).
pub fn placement_problem(
    i: &RabbitMQInstance,
    shared: Option<&ClusterRef>,
    observed_shared: Option<&crate::controller::plan::ClusterObservation>,
) -> Option<(&'static str, String)> {
    let needs_shared = i
        .status
        .as_ref()
        .and_then(|s| s.tier)
        .unwrap_or(i.spec.tier)
        == Tier::Shared;
    if !needs_shared {
        return None;
    }
    let Some(r) = shared else {
        return Some((
            reasons::SHARED_CLUSTER_NOT_FOUND,
            "the instance names no SharedCluster (spec.shared.clusterRef) and the operator has \
             no --default-shared-cluster; set one of them"
                .into(),
        ));
    };
    let o = observed_shared?;
    // The observer fills `capacity` exactly when the SharedCluster object exists (its
    // StatefulSet may still be on its way: that is provisioning, not a placement problem).
    let Some(capacity) = o.capacity else {
        return Some((
            reasons::SHARED_CLUSTER_NOT_FOUND,
            format!(
                "SharedCluster {}/{} does not exist; create it or fix spec.shared.clusterRef",
                r.namespace, r.name
            ),
        ));
    };
    (!capacity.has_room()).then(|| {
        (
            reasons::NO_CAPACITY,
            format!(
                "SharedCluster {}/{} is full ({}/{} instances); raise spec.capacity.maxInstances or pick another SharedCluster",
                r.namespace, r.name, capacity.instance_count, capacity.max_instances
            ),
        )
    })
}

/// The status after a permanent problem: `InvalidSpec` True with the message, and the Warning
/// Event to emit — only when the condition did not already say exactly this.
pub fn permanent_status(
    old: &RabbitMQInstanceStatus,
    generation: i64,
    reason: &'static str,
    message: &str,
) -> (RabbitMQInstanceStatus, Option<PlannedEvent>) {
    let mut st = old.clone();
    let event = (!status::condition_is(
        &old.conditions,
        conditions::INVALID_SPEC,
        true,
        reason,
        message,
    ))
    .then(|| PlannedEvent {
        type_: EventType::Warning,
        reason,
        note: message.to_string(),
    });
    status::set_condition(
        &mut st.conditions,
        status::condition(
            conditions::INVALID_SPEC,
            true,
            reason,
            message.to_string(),
            generation,
        ),
    );
    st.observed_generation = Some(generation);
    (st, event)
}

async fn report_permanent(ctx: &Context, i: &RabbitMQInstance, e: &Error) -> Result<()> {
    let (reason, message) = match e {
        Error::Placement { reason, message } => (*reason, message.clone()),
        other => (conditions::INVALID_SPEC, other.to_string()),
    };
    let old = i.status.clone().unwrap_or_default();
    let (new, event) = permanent_status(&old, i.metadata.generation.unwrap_or(0), reason, &message);
    status::write(&ctx.client, i, i.status.as_ref(), &new).await?;
    if let Some(ev) = event {
        status::emit(ctx, i, &[ev]).await;
    }
    Ok(())
}

async fn reconcile_inner(cached: &RabbitMQInstance, ctx: &Context) -> Result<Action> {
    // Plan from the latest stored state: the cache may not hold this operator's own last status
    // write yet, and planning from an older status would redo a transition.
    let api: kube::Api<RabbitMQInstance> =
        kube::Api::namespaced(ctx.client.clone(), &cached.namespace().unwrap_or_default());
    let Some(fresh) = api
        .get_opt(&cached.name_any())
        .await
        .map_err(crate::error::kube_err(
            "get",
            format!(
                "RabbitMQInstance {}/{}",
                cached.namespace().unwrap_or_default(),
                cached.name_any()
            ),
        ))?
    else {
        return Ok(Action::await_change());
    };
    let i = &fresh;
    let deleting = i.meta().deletion_timestamp.is_some();
    if deleting && !i.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let target = InstanceTarget::of(i)?;
    if !deleting {
        execute::add_finalizer(ctx, i).await?;
    }
    let password = credentials_password(ctx, i, deleting).await?;

    let shared_ref = observe::shared_ref(i, &ctx.config);
    let shared = shared_ref.clone().unwrap_or_else(|| ClusterRef {
        kind: ClusterKind::Shared,
        name: String::new(),
        namespace: ctx.config.shared_namespace().to_string(),
    });
    let observed = observe::observe(ctx, i, &shared).await?;
    if !deleting
        && i.status.as_ref().and_then(|s| s.serving.as_ref()).is_none()
        && let Some((reason, message)) =
            placement_problem(i, shared_ref.as_ref(), Some(&observed.shared))
    {
        return Err(Error::Placement { reason, message });
    }

    let p = plan(&observed, Utc::now());
    tracing::debug!(phase = ?p.phase, steps = ?p.steps.iter().map(|s| s.name()).collect::<Vec<_>>(), "planned");
    let t = Target {
        instance: i,
        tenant: target.tenant(),
        password,
        deleting,
    };
    execute::run(ctx, &t, &p.steps).await?;

    if deleting {
        // The finalizer is gone (last step): the object may be gone too; nothing to record.
        status::emit(ctx, i, &p.events).await;
        forget_metrics(ctx, i);
        return Ok(Action::await_change());
    }
    let new = final_status(i, &p)?;
    let wrote = status::write(&ctx.client, i, i.status.as_ref(), &new).await?;
    if wrote {
        tracing::info!(phase = ?p.phase, tier = ?new.tier, "status recorded");
    }
    status::emit(ctx, i, &p.events).await;
    record_metrics(ctx, i, &new);
    Ok(Action::requeue(requeue_after(
        &p,
        ctx.config.drain_poll_seconds,
    )))
}

/// The plan's status plus what the executor knows: the endpoint and a cleared `InvalidSpec`.
pub fn final_status(i: &RabbitMQInstance, p: &Plan) -> Result<RabbitMQInstanceStatus> {
    let mut st = p.status.clone();
    st.endpoint = Some(credentials::endpoint_status(i)?);
    if st
        .conditions
        .iter()
        .any(|c| c.type_ == conditions::INVALID_SPEC && c.status == "True")
    {
        status::set_condition(
            &mut st.conditions,
            status::condition(
                conditions::INVALID_SPEC,
                false,
                reasons_local::SPEC_VALID,
                "the spec can be served".into(),
                i.metadata.generation.unwrap_or(0),
            ),
        );
    }
    Ok(st)
}

/// The plan's delay, but no longer than the drain poll while a conversion runs: the operator's own
/// status writes do not trigger reconciles, so the requeue is what moves a conversion along
/// (and samples a draining cluster).
pub fn requeue_after(p: &Plan, drain_poll_seconds: u64) -> Duration {
    let poll = Duration::from_secs(drain_poll_seconds.max(1));
    match p.phase {
        MigrationPhase::PreparingDestination
        | MigrationPhase::DualWriteDualRead
        | MigrationPhase::SingleWriteDualRead
        | MigrationPhase::DrainingSource
        | MigrationPhase::Aborting
        | MigrationPhase::DestinationOnly
        | MigrationPhase::Completed => p.requeue_after.min(poll),
        MigrationPhase::Stable | MigrationPhase::Blocked => p.requeue_after,
    }
}

/// Creates the credentials Secret once and returns its password. While deleting, a missing
/// Secret is fine (no step needs the password then).
///
/// Once the instance has been placed on a cluster its tenant exists on a broker with this
/// password, so a missing Secret is an error to report, never a reason to generate a new password:
/// that would silently lock out every client (and, mid-migration, give the two clusters different
/// passwords).
async fn credentials_password(
    ctx: &Context,
    i: &RabbitMQInstance,
    deleting: bool,
) -> Result<Option<build::SecretValue>> {
    let name = build::credentials_secret_name(&i.name_any());
    let ns = i.namespace().unwrap_or_default();
    let placed = i
        .status
        .as_ref()
        .is_some_and(|s| s.serving.is_some() || s.migration.is_some());
    let secret = if deleting || placed {
        let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
            kube::Api::namespaced(ctx.client.clone(), &ns);
        match api
            .get_opt(&name)
            .await
            .map_err(crate::error::kube_err("get", format!("Secret {ns}/{name}")))?
        {
            Some(s) => s,
            None if deleting => return Ok(None),
            None => {
                return Err(Error::Secret {
                    name: format!("{ns}/{name}"),
                    problem: "is missing; the tenant on the brokers still uses its password, so \
                              the operator will not generate a new one: restore the Secret"
                        .into(),
                });
            }
        }
    } else {
        let fresh = {
            let value = generate_secret_value(&mut rand::rng());
            credentials::build(i, &value)?
        };
        create_once(&ctx.client, &fresh).await?
    };
    match credentials::read_password(&secret) {
        Some(p) => Ok(Some(p)),
        None if deleting => Ok(None),
        None => Err(Error::Secret {
            name: format!("{ns}/{name}"),
            problem: "has no password; restore it (the tenant on the brokers uses it)".into(),
        }),
    }
}

fn labels_of(i: &RabbitMQInstance) -> InstanceLabels {
    InstanceLabels {
        namespace: i.namespace().unwrap_or_default(),
        instance: i.name_any(),
    }
}

/// Instances by tier and phase (recounted from the cache), drain backlog, phase durations.
fn record_metrics(ctx: &Context, i: &RabbitMQInstance, new: &RabbitMQInstanceStatus) {
    let m = &ctx.metrics;
    // Phase durations: a phase ended when the recorded phase list moved on or the migration ended.
    let old_m = i.status.as_ref().and_then(|s| s.migration.as_ref());
    if let Some(old_last) = old_m.and_then(|m| m.phases.last()) {
        let still = new
            .migration
            .as_ref()
            .and_then(|m| m.phases.last())
            .is_some_and(|p| p.phase == old_last.phase && p.started == old_last.started);
        if !still {
            let started = crate::controller::plan::from_time(&old_last.started);
            let secs = (Utc::now() - started).num_milliseconds().max(0) as f64 / 1000.0;
            m.phase_duration
                .get_or_create(&PhaseLabels {
                    phase: old_last.phase.as_str().to_string(),
                })
                .observe(secs);
        }
    }
    match new.migration.as_ref().and_then(|mg| mg.remaining_messages) {
        Some(n) => {
            m.drain_backlog.get_or_create(&labels_of(i)).set(n);
        }
        None => {
            m.drain_backlog.remove(&labels_of(i));
        }
    }
    recount_instances(ctx, Some((i, new)));
}

fn forget_metrics(ctx: &Context, i: &RabbitMQInstance) {
    ctx.metrics.drain_backlog.remove(&labels_of(i));
    recount_instances(ctx, None);
}

/// Sets the instances-by-tier-and-phase gauge from the cache, with `fresh` overriding the cached
/// status of the instance just reconciled.
fn recount_instances(ctx: &Context, fresh: Option<(&RabbitMQInstance, &RabbitMQInstanceStatus)>) {
    use std::collections::BTreeMap;
    let mut counts: BTreeMap<(String, String), i64> = BTreeMap::new();
    for o in ctx.instances.state() {
        if o.meta().deletion_timestamp.is_some() {
            continue;
        }
        let status = match fresh {
            Some((f, st)) if f.uid() == o.uid() => Some(st.clone()),
            _ => o.status.clone(),
        };
        let tier = status
            .as_ref()
            .and_then(|s| s.tier)
            .map_or("Unknown".to_string(), |t| t.to_string());
        let phase = status
            .as_ref()
            .and_then(|s| s.migration_phase)
            .unwrap_or(MigrationPhase::Stable)
            .as_str()
            .to_string();
        *counts.entry((tier, phase)).or_default() += 1;
    }
    ctx.metrics.instances.clear();
    for ((tier, phase), n) in counts {
        ctx.metrics
            .instances
            .get_or_create(&crate::metrics::TierPhaseLabels { tier, phase })
            .set(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::plan::{ClusterObservation, SharedCapacity};
    use serde_json::json;

    fn instance(tier: &str) -> RabbitMQInstance {
        serde_json::from_value(json!({
            "apiVersion": "tiermq.io/v1alpha1", "kind": "RabbitMQInstance",
            "metadata": {"name": "orders", "namespace": "team-a", "uid": "u1", "generation": 4},
            "spec": {"series": "Subscription", "tier": tier}
        }))
        .unwrap()
    }

    fn shared() -> ClusterRef {
        ClusterRef {
            kind: ClusterKind::Shared,
            name: "main".into(),
            namespace: "ops".into(),
        }
    }

    #[test]
    fn the_first_permanent_problem_emits_one_warning_and_a_repeat_emits_none() {
        let (st, ev) = permanent_status(
            &RabbitMQInstanceStatus::default(),
            4,
            reasons::SHARED_CLUSTER_NOT_FOUND,
            "SharedCluster ops/main does not exist",
        );
        let ev = ev.expect("first report emits an Event");
        assert_eq!(ev.type_, EventType::Warning);
        assert_eq!(ev.reason, reasons::SHARED_CLUSTER_NOT_FOUND);
        let c = st
            .conditions
            .iter()
            .find(|c| c.type_ == conditions::INVALID_SPEC)
            .unwrap();
        assert_eq!(
            (c.status.as_str(), c.observed_generation),
            ("True", Some(4))
        );
        let (again, ev2) = permanent_status(
            &st,
            4,
            reasons::SHARED_CLUSTER_NOT_FOUND,
            "SharedCluster ops/main does not exist",
        );
        assert!(ev2.is_none(), "same problem again: no second Event");
        assert_eq!(again, st);
        let (_, ev3) = permanent_status(&st, 5, reasons::NO_CAPACITY, "full");
        assert!(ev3.is_some(), "a different problem is a transition");
    }

    #[test]
    fn a_new_shared_instance_needs_an_existing_cluster_with_room() {
        let i = instance("Shared");
        assert_eq!(
            placement_problem(&i, None, None).unwrap().0,
            reasons::SHARED_CLUSTER_NOT_FOUND
        );
        let absent = ClusterObservation::absent(shared());
        assert_eq!(
            placement_problem(&i, Some(&shared()), Some(&absent))
                .unwrap()
                .0,
            reasons::SHARED_CLUSTER_NOT_FOUND
        );
        let mut full = absent.clone();
        full.capacity = Some(SharedCapacity {
            instance_count: 2,
            max_instances: 2,
            counts_this_instance: false,
        });
        let (reason, msg) = placement_problem(&i, Some(&shared()), Some(&full)).unwrap();
        assert_eq!(reason, reasons::NO_CAPACITY);
        assert!(msg.contains("2/2"), "{msg}");
        let mut room = full.clone();
        room.capacity = Some(SharedCapacity {
            instance_count: 1,
            max_instances: 2,
            counts_this_instance: false,
        });
        assert_eq!(placement_problem(&i, Some(&shared()), Some(&room)), None);
        // The SharedCluster exists but its StatefulSet not yet: provisioning, no problem.
        assert!(!room.exists);
        assert_eq!(placement_problem(&instance("Dedicated"), None, None), None);
    }

    #[test]
    fn draining_requeues_at_the_drain_poll() {
        let p = |phase, secs| Plan {
            phase,
            steps: vec![],
            status: RabbitMQInstanceStatus::default(),
            events: vec![],
            requeue_after: Duration::from_secs(secs),
        };
        assert_eq!(
            requeue_after(&p(MigrationPhase::DrainingSource, 5), 2),
            Duration::from_secs(2)
        );
        assert_eq!(
            requeue_after(&p(MigrationPhase::Stable, 300), 2),
            Duration::from_secs(300)
        );
    }

    #[test]
    fn the_final_status_carries_the_endpoint_and_clears_invalid_spec() {
        let i = instance("Shared");
        let (bad, _) = permanent_status(&RabbitMQInstanceStatus::default(), 4, "X", "y");
        let p = Plan {
            phase: MigrationPhase::Stable,
            steps: vec![],
            status: bad,
            events: vec![],
            requeue_after: Duration::from_secs(1),
        };
        let st = final_status(&i, &p).unwrap();
        let ep = st.endpoint.as_ref().unwrap();
        assert_eq!(ep.host, "orders.team-a.svc");
        assert_eq!(ep.vhost, "team-a.orders");
        assert_eq!(ep.secret_name, "orders-credentials");
        let c = st
            .conditions
            .iter()
            .find(|c| c.type_ == conditions::INVALID_SPEC)
            .unwrap();
        assert_eq!(c.status, "False");
    }
}
