//! The `RabbitMQInstance` reconciler, a pipeline:
//!
//! 1. finalizer: added on first sight; on delete the plan's deletion steps remove the broker
//!    state on every cluster (both sides of a running conversion), then the finalizer;
//! 2. credentials: the instance's Secret is created once (password generated once) and read back;
//! 3. observe ([`super::observe`]);
//! 4. placement: a new shared instance needs an existing SharedCluster with room
//!    ([`plan::new_instance_problem`]; else a condition + one Warning Event, slow requeue);
//! 5. [`plan()`] → execute ([`super::execute`]) → status (written only when changed) → Events (the
//!    plan's, emitted only on transitions) → requeue (the plan's delay, at most
//!    `--drain-poll-seconds` while a conversion runs).
//!
//! Errors carry the stage (and plan step) that failed ([`Stage`]); [`Error::retry`] decides:
//! errors that need a change by someone (invalid spec, unknown or full SharedCluster) set the
//! `InvalidSpec` condition, emit one Warning Event per distinct message and requeue slowly;
//! the others (API server, broker, not ready yet) return an error, and the controller retries with
//! a per-object exponential backoff.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tiermq_crd::conditions;
use tiermq_crd::{ClusterKind, ClusterRef, RabbitMQInstance, RabbitMQInstanceStatus};

use crate::build::{self, InstanceTarget, credentials, generate_secret};
use crate::controller::apply::create_once;
use crate::controller::conditions as cond;
use crate::controller::context::Context;
use crate::controller::execute::{self, FINALIZER, Target};
use crate::controller::observe;
use crate::controller::plan::{self, EventType, Plan, PlannedEvent, plan};
use crate::controller::status;
use crate::error::{Error, Result, Retry, Stage};
use crate::metrics::{InstanceLabels, PhaseLabels};

/// The controller's name in logs and metrics.
pub const CONTROLLER: &str = "instance";

/// Entry point for the kube-runtime Controller.
pub async fn reconcile(obj: Arc<RabbitMQInstance>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_timer(CONTROLLER);
    let span = tracing::info_span!(
        "reconcile",
        instance = %ObjectRef::from_obj(&*obj)
    );
    let result = tracing::Instrument::instrument(reconcile_inner(&obj, &ctx), span).await;
    match result {
        Ok(action) => {
            ctx.succeeded(&ObjectRef::from_obj(&*obj));
            Ok(action)
        }
        Err(e) => match e.retry() {
            Retry::Backoff => {
                // This failure is the (n+1)th in a row: from the second on it is reported on the
                // object (condition + Warning Event), not only logged.
                let failures = ctx.failures(&ObjectRef::from_obj(&*obj)) + 1;
                if failures >= conditions::DEGRADED_AFTER_FAILURES
                    && let Err(report) = report_degraded(&ctx, &obj, &e).await
                {
                    tracing::warn!(error = %report, "could not report the failure on the object");
                }
                Err(e)
            }
            Retry::Report(after) => {
                ctx.metrics.reconcile_failed(CONTROLLER, &e);
                tracing::warn!(
                    instance = %ObjectRef::from_obj(&*obj),
                    error = %e, "needs a change by someone; reported on the object, retrying slowly"
                );
                report_permanent(&ctx, &obj, &e).await?;
                Ok(Action::requeue(after))
            }
        },
    }
}

/// Error policy for the controller: count, log, back off per object.
pub fn error_policy(obj: Arc<RabbitMQInstance>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed(CONTROLLER, err);
    let delay = ctx.backoff(&ObjectRef::from_obj(&*obj));
    tracing::warn!(
        instance = %ObjectRef::from_obj(&*obj),
        error = %err, retry_in = ?delay, "reconcile failed"
    );
    Action::requeue(delay)
}

/// The status after a permanent problem: `InvalidSpec` and `Stalled` True with the message,
/// `Reconciling` False (nothing moves until someone changes something), and the Warning Event to
/// emit — only when the condition did not already say exactly this.
pub fn permanent_status(
    old: &RabbitMQInstanceStatus,
    generation: i64,
    reason: &'static str,
    message: &str,
    now: DateTime<Utc>,
) -> (RabbitMQInstanceStatus, Option<PlannedEvent>) {
    let mut st = old.clone();
    let event = (!cond::holds(
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
    let c =
        plan::conditions::invalid_spec(&old.conditions, generation, Some((reason, message)), now);
    cond::set(&mut st.conditions, c);
    let c = plan::conditions::stalled(&old.conditions, generation, Some((reason, message)), now);
    cond::set(&mut st.conditions, c);
    cond::update(
        &mut st.conditions,
        conditions::RECONCILING,
        false,
        reason,
        format!("stalled: {message}"),
        generation,
        now,
    );
    st.observed_generation = Some(generation);
    (st, event)
}

/// True when the annotation `tiermq.io/paused` asks the operator to leave the instance alone.
pub fn is_paused(i: &RabbitMQInstance) -> bool {
    conditions::paused_by(i.annotations())
}

/// The status of a paused instance: `Paused` True and `Reconciling` False (nothing moves), all
/// else as recorded — `observedGeneration` included, so a spec changed while paused does not
/// read as current. The Normal Event to emit when the pause is new.
pub fn paused_status(
    old: &RabbitMQInstanceStatus,
    generation: i64,
    now: DateTime<Utc>,
) -> (RabbitMQInstanceStatus, Option<PlannedEvent>) {
    let mut st = old.clone();
    let c = plan::conditions::paused(&old.conditions, generation, true, now);
    let event = (!cond::is_true(&old.conditions, conditions::PAUSED)).then(|| PlannedEvent {
        type_: EventType::Normal,
        reason: conditions::events::PAUSED,
        note: c.message.clone(),
    });
    cond::update(
        &mut st.conditions,
        conditions::RECONCILING,
        false,
        conditions::reasons::PAUSED_BY_ANNOTATION,
        c.message.clone(),
        generation,
        now,
    );
    cond::set(&mut st.conditions, c);
    (st, event)
}

/// A paused instance: record the pause (once), emit its Event, and wait for a change of the
/// annotation (or the spec) to look again.
async fn pause(ctx: &Context, i: &RabbitMQInstance) -> Result<Action> {
    let old = i.status.clone().unwrap_or_default();
    let (new, event) = paused_status(&old, i.metadata.generation.unwrap_or(0), Utc::now());
    let wrote = status::write(
        &ctx.client,
        i,
        i.status.as_ref(),
        &new,
        status::Precondition::Unchanged,
    )
    .await
    .map_err(Error::during(Stage::Status))?;
    if wrote {
        tracing::info!("reconciling paused by annotation");
        recount_instances(ctx, Some((i, &new)));
    }
    if let Some(ev) = event {
        status::emit(ctx, i, &[ev]).await;
    }
    Ok(Action::await_change())
}

/// The status after a pass failed again: `Degraded` True naming the stage, step and cause, and
/// the Warning Event to emit — only when the condition did not already say exactly this.
pub fn degraded_status(
    old: &RabbitMQInstanceStatus,
    generation: i64,
    e: &Error,
    now: DateTime<Utc>,
) -> (RabbitMQInstanceStatus, Option<PlannedEvent>) {
    let reason = e.degraded_reason();
    let message = e.to_string();
    let mut st = old.clone();
    let event = (!cond::holds(
        &old.conditions,
        conditions::DEGRADED,
        true,
        reason,
        &message,
    ))
    .then(|| PlannedEvent {
        type_: EventType::Warning,
        reason: conditions::events::RECONCILE_FAILING,
        note: message.clone(),
    });
    let c = plan::conditions::degraded(&old.conditions, generation, Some((reason, &message)), now);
    cond::set(&mut st.conditions, c);
    (st, event)
}

async fn report_degraded(ctx: &Context, cached: &RabbitMQInstance, e: &Error) -> Result<()> {
    // The cache may lag behind this operator's last status write: read what is stored, so the
    // condition is added to the current conditions, not to older ones.
    let api: kube::Api<RabbitMQInstance> =
        kube::Api::namespaced(ctx.client.clone(), &cached.namespace().unwrap_or_default());
    let Some(i) = api
        .get_opt(&cached.name_any())
        .await
        .map_err(crate::error::kube_err(
            "get",
            ObjectRef::from_obj(cached).to_string(),
        ))?
    else {
        return Ok(());
    };
    let i = &i;
    let old = i.status.clone().unwrap_or_default();
    let generation = i.metadata.generation.unwrap_or(0);
    let (new, event) = degraded_status(&old, generation, e, Utc::now());
    let wrote = status::write(
        &ctx.client,
        i,
        i.status.as_ref(),
        &new,
        status::Precondition::Unchanged,
    )
    .await?;
    if wrote {
        // Failing passes record no metrics otherwise: count the Degraded condition now.
        recount_instances(ctx, Some((i, &new)));
    }
    if let Some(ev) = event {
        status::emit(ctx, i, &[ev]).await;
    }
    Ok(())
}

async fn report_permanent(ctx: &Context, i: &RabbitMQInstance, e: &Error) -> Result<()> {
    let (reason, message) = match e.cause() {
        Error::Placement { reason, message } => (*reason, message.clone()),
        e @ Error::NotOwned { .. } => (conditions::reasons::NAME_CONFLICT, e.to_string()),
        Error::UnsupportedUpgrade(m) => (conditions::reasons::UNSUPPORTED_UPGRADE, m.clone()),
        other => (conditions::INVALID_SPEC, other.to_string()),
    };
    let old = i.status.clone().unwrap_or_default();
    let generation = i.metadata.generation.unwrap_or(0);
    let (new, event) = permanent_status(&old, generation, reason, &message, Utc::now());
    let wrote = status::write(
        &ctx.client,
        i,
        i.status.as_ref(),
        &new,
        status::Precondition::None,
    )
    .await?;
    if wrote {
        recount_instances(ctx, Some((i, &new)));
    }
    if let Some(ev) = event {
        status::emit(ctx, i, &[ev]).await;
    }
    Ok(())
}

async fn reconcile_inner(cached: &RabbitMQInstance, ctx: &Context) -> Result<Action> {
    // With the `planned` and `pass done` lines these time a pass (the bench reads them).
    tracing::debug!("pass started");
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
        ))
        .map_err(Error::during(Stage::Read))?
    else {
        return Ok(Action::await_change());
    };
    let deleting = fresh.meta().deletion_timestamp.is_some();
    if deleting && !fresh.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    // A pause stops everything but deletion: deleting is the user's explicit wish, and a paused
    // instance must not hold its namespace's deletion hostage.
    if !deleting && is_paused(&fresh) {
        return pause(ctx, &fresh).await;
    }
    InstanceTarget::of(&fresh)
        .map_err(Error::from)
        .map_err(Error::during(Stage::Validate))?;
    let fresh = match deleting {
        true => fresh,
        false => execute::add_finalizer(ctx, &fresh)
            .await
            .map_err(Error::during(Stage::Finalizer))?
            .unwrap_or(fresh),
    };
    let i = &fresh;
    let target = InstanceTarget::of(i)
        .map_err(Error::from)
        .map_err(Error::during(Stage::Validate))?;
    let password = credentials_password(ctx, i, deleting)
        .await
        .map_err(Error::during(Stage::Credentials))?;

    // No SharedCluster named and no default: observed as a nameless, absent cluster, which the
    // placement rule reports.
    let shared = observe::shared_ref(i, &ctx.config).unwrap_or_else(|| ClusterRef {
        kind: ClusterKind::Shared,
        name: String::new(),
        namespace: ctx.config.shared_namespace().to_string(),
    });
    let mut observed = observe::observe(ctx, i, &shared)
        .await
        .map_err(Error::during(Stage::Observe))?;
    if flip_waits_to_start(i) {
        observed.conversions = ctx
            .conversion_slots(i)
            .await
            .map_err(Error::during(Stage::Observe))?;
    }
    // A Service type the SharedCluster does not admit is refused when it is a change; one the
    // Service already has (admitted before the terms narrowed) stays, as placed tenants do.
    let tenancy = match plan::tenancy_problem(&observed) {
        Some(p) if !service_has_type(ctx, i).await? => Some(p),
        _ => None,
    };
    if let Some((reason, message)) = plan::new_instance_problem(&observed)
        .or(tenancy)
        .or_else(|| policy_problem(i, &ctx.config))
    {
        return Err(Error::during(Stage::Validate)(Error::Placement {
            reason,
            message,
        }));
    }

    let p = plan(&observed, Utc::now());
    reserve_placement(ctx, i, &observed, &p).await?;
    reserve_conversion(ctx, i, &observed, &p).await?;
    tracing::debug!(phase = ?p.phase, steps = ?p.steps.iter().map(|s| s.name()).collect::<Vec<_>>(), "planned");
    let t = Target {
        instance: i,
        tenant: target.tenant(),
        password,
        updated: Default::default(),
    };
    execute::run(ctx, &t, &p.steps).await?;
    // A step that changed the instance itself (auto-tiering's `SetTier`) moved its version on.
    let respecced = t.updated.into_inner().unwrap_or_else(|e| e.into_inner());
    let i = respecced.as_ref().unwrap_or(i);

    let was_converting = i.status.as_ref().is_some_and(|s| s.migration.is_some());
    if deleting {
        // The finalizer is gone (last step): the object may be gone too; nothing to record.
        if was_converting {
            ctx.conversion_ended(i).await;
        }
        status::emit(ctx, i, &p.events).await;
        forget_metrics(ctx, i);
        return Ok(Action::await_change());
    }
    crate::fault::before_status_write(
        &ObjectRef::from_obj(i).to_string(),
        i.status.as_ref().and_then(|s| s.migration_phase),
        p.phase,
    );
    let new = final_status(i, &p, Utc::now()).map_err(Error::during(Stage::Status))?;
    // Compare-and-swap on what this pass read: a status planned from an older state (another
    // replica wrote meanwhile) is never recorded; the conflict makes the next pass plan again.
    let wrote = status::write(
        &ctx.client,
        i,
        i.status.as_ref(),
        &new,
        status::Precondition::Unchanged,
    )
    .await
    .map_err(Error::during(Stage::Status))?;
    if wrote {
        tracing::info!(phase = ?p.phase, tier = ?new.tier, "status recorded");
        if was_converting && new.migration.is_none() {
            ctx.conversion_ended(i).await;
        }
        // Counted here, once: a conversion ends when its record is written (the write is a
        // compare-and-swap, so a rerun after a crash plans from the stored history).
        if let Some(record) = &p.finished {
            ctx.metrics.conversion_finished(record.outcome, record.to);
            tracing::info!(
                from = %record.from, to = %record.to, outcome = ?record.outcome,
                phases = ?record.phase_seconds, "conversion finished"
            );
        }
    }
    status::emit(ctx, i, &p.events).await;
    record_metrics(ctx, i, &new);
    let after = plan::requeue_after(
        &p,
        ctx.config.drain_poll_seconds,
        ctx.config.broker_stats_interval_ms,
    );
    tracing::debug!(phase = ?p.phase, requeue_ms = after.as_millis() as u64, "pass done");
    Ok(Action::requeue(after))
}

/// The instance's client Service exists with the type `spec.access.serviceType` asks for.
async fn service_has_type(ctx: &Context, i: &RabbitMQInstance) -> Result<bool> {
    let ns = i.namespace().unwrap_or_default();
    let name = build::instance_service_name(&i.name_any());
    let api: kube::Api<k8s_openapi::api::core::v1::Service> =
        kube::Api::namespaced(ctx.client.clone(), &ns);
    let svc = api
        .get_opt(&name)
        .await
        .map_err(crate::error::kube_err(
            "get",
            format!("Service {ns}/{name}"),
        ))
        .map_err(Error::during(Stage::Observe))?;
    let want = i.spec.access.service_type.as_str();
    Ok(svc
        .and_then(|s| s.spec)
        .and_then(|s| s.type_)
        .is_some_and(|t| t == want))
}

/// Why the instance's dedicated cluster is outside the operator's policy, if it is and the
/// instance is (or is to be) on the dedicated tier: nothing is applied until it is within.
fn policy_problem(
    i: &RabbitMQInstance,
    config: &crate::config::RunArgs,
) -> Option<(&'static str, String)> {
    if i.meta().deletion_timestamp.is_some() {
        return None;
    }
    let on_dedicated = i.spec.tier == tiermq_crd::Tier::Dedicated
        || i.status.as_ref().and_then(|s| s.tier) == Some(tiermq_crd::Tier::Dedicated);
    if !on_dedicated {
        return None;
    }
    let v = config.dedicated_bounds().violations(&i.spec.dedicated);
    (!v.is_empty()).then(|| {
        (
            conditions::reasons::OUTSIDE_OPERATOR_POLICY,
            format!(
                "the dedicated cluster is outside the operator's policy: {}",
                v.join("; ")
            ),
        )
    })
}

/// A plan that newly places the instance on a SharedCluster (a new instance, or a downgrade's
/// destination) first takes a slot there: the capacity check and the reservation are one step,
/// so two instances placed at once never both get the last slot. The one that loses plans
/// again, seeing the cluster full.
async fn reserve_placement(
    ctx: &Context,
    i: &RabbitMQInstance,
    o: &plan::Observed,
    p: &Plan,
) -> Result<()> {
    let onto = p
        .status
        .serving
        .iter()
        .chain(p.status.migration.as_ref().map(|m| &m.destination))
        .find(|r| r.kind == ClusterKind::Shared && **r == o.shared.cluster)
        .cloned();
    let (Some(c), Some(cap)) = (onto, o.shared.capacity.as_ref()) else {
        return Ok(());
    };
    if observe::placed_on(i, &c) {
        return Ok(());
    }
    let placed = observe::placed_keys(ctx, &c)
        .await
        .map_err(Error::during(Stage::Observe))?;
    let max = usize::try_from(cap.max_instances).unwrap_or(0);
    if ctx.reserve(
        &observe::cluster_key(&c),
        &observe::instance_key(i),
        &placed,
        max,
    ) {
        return Ok(());
    }
    Err(Error::during(Stage::Validate)(Error::NotReady(format!(
        "SharedCluster {}/{} has no free slot left: another instance took the last one; \
         planning again",
        c.namespace, c.name
    ))))
}

/// A tier flip that has not started a conversion yet (what the conversion slots hold).
fn flip_waits_to_start(i: &RabbitMQInstance) -> bool {
    let Some(st) = &i.status else { return false };
    i.metadata.deletion_timestamp.is_none()
        && st.migration.is_none()
        && st.tier.is_some_and(|t| t != i.spec.tier)
}

/// A plan that starts a conversion first takes a conversion slot (with
/// `--max-concurrent-conversions`): the plan saw one free, and the check and the reservation
/// are one step, so two flips at once never both take the last. The one that loses plans again.
async fn reserve_conversion(
    ctx: &Context,
    i: &RabbitMQInstance,
    o: &plan::Observed,
    p: &Plan,
) -> Result<()> {
    if o.status.migration.is_some() {
        return Ok(());
    }
    if p.status.migration.is_none() || o.deletion_requested {
        // Read fresh, the instance converts neither now nor from this pass on: a slot it took
        // in an earlier pass whose status was never recorded (a conflict, a flip withdrawn
        // since) goes back at once instead of after the reservation's TTL.
        ctx.release_conversion(i);
        return Ok(());
    }
    if ctx
        .reserve_conversion(i)
        .await
        .map_err(Error::during(Stage::Observe))?
    {
        return Ok(());
    }
    Err(Error::during(Stage::Validate)(Error::NotReady(
        "another instance took the last conversion slot (--max-concurrent-conversions): \
         planning again"
            .into(),
    )))
}

/// The plan's status plus what the executor knows: the endpoint, and `InvalidSpec` and
/// `Degraded` cleared (this pass succeeded).
pub fn final_status(
    i: &RabbitMQInstance,
    p: &Plan,
    now: DateTime<Utc>,
) -> Result<RabbitMQInstanceStatus> {
    let mut st = p.status.clone();
    st.endpoint = Some(credentials::endpoint_status(i)?);
    let generation = i.metadata.generation.unwrap_or(0);
    if cond::is_true(&st.conditions, conditions::INVALID_SPEC) {
        let c = plan::conditions::invalid_spec(&st.conditions, generation, None, now);
        cond::set(&mut st.conditions, c);
    }
    if cond::is_true(&st.conditions, conditions::DEGRADED) {
        let c = plan::conditions::degraded(&st.conditions, generation, None, now);
        cond::set(&mut st.conditions, c);
    }
    Ok(st)
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
) -> Result<Option<build::Secret>> {
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
            let value = generate_secret(&mut rand::rng());
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

/// Phase durations, the drain gauges and the fleet gauges (recounted from the cache).
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
    m.record_drain(&labels_of(i), Some(new));
    recount_instances(ctx, Some((i, new)));
}

fn forget_metrics(ctx: &Context, i: &RabbitMQInstance) {
    ctx.metrics.record_drain(&labels_of(i), None);
    recount_instances(ctx, None);
}

/// Sets the fleet gauges from the cache, with `fresh` overriding the cached status of the
/// instance just reconciled (the cache may not have its write yet).
fn recount_instances(ctx: &Context, fresh: Option<(&RabbitMQInstance, &RabbitMQInstanceStatus)>) {
    let cached = ctx.instances.state();
    let empty = RabbitMQInstanceStatus::default();
    let statuses = cached
        .iter()
        .filter(|o| o.meta().deletion_timestamp.is_none())
        .map(|o| match fresh {
            Some((f, st)) if f.uid() == o.uid() => st,
            _ => o.status.as_ref().unwrap_or(&empty),
        });
    ctx.metrics.record_fleet(statuses);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;
    use tiermq_crd::MigrationPhase;
    use tiermq_crd::conditions::reasons;

    fn instance(tier: &str) -> RabbitMQInstance {
        serde_json::from_value(json!({
            "apiVersion": "tiermq.io/v1alpha1", "kind": "RabbitMQInstance",
            "metadata": {"name": "orders", "namespace": "team-a", "uid": "u1", "generation": 4},
            "spec": {"series": "Subscription", "tier": tier}
        }))
        .unwrap()
    }

    #[test]
    fn a_failing_step_is_reported_once_per_cause_and_cleared_by_a_good_pass() {
        let broker_down = Error::at("CopyTopology")(Error::Broker(tiermq_broker::BrokerError {
            cluster: "dedicated/team-a/orders-dedicated".into(),
            operation: "list queues".into(),
            kind: tiermq_broker::ErrorKind::Unreachable {
                url: "http://10.0.0.1:15672".into(),
                detail: "connection refused".into(),
            },
        }));
        let (st, ev) = degraded_status(
            &RabbitMQInstanceStatus::default(),
            4,
            &broker_down,
            Utc::now(),
        );
        let ev = ev.expect("the first report emits a Warning");
        assert_eq!(
            (ev.type_, ev.reason),
            (EventType::Warning, conditions::events::RECONCILE_FAILING)
        );
        let c = st
            .conditions
            .iter()
            .find(|c| c.type_ == conditions::DEGRADED)
            .unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", reasons::BROKER_UNREACHABLE)
        );
        assert!(
            c.message.contains("CopyTopology") && c.message.contains("connection refused"),
            "{}",
            c.message
        );
        // The same failure again: no second Event.
        let (again, ev) = degraded_status(&st, 4, &broker_down, Utc::now());
        assert!(ev.is_none());
        // A pass that succeeds clears it.
        let p = Plan {
            phase: MigrationPhase::Stable,
            steps: vec![],
            status: again,
            events: vec![],
            requeue_after: Duration::from_secs(1),
            finished: None,
        };
        let ok = final_status(&instance("Shared"), &p, Utc::now()).unwrap();
        let c = ok
            .conditions
            .iter()
            .find(|c| c.type_ == conditions::DEGRADED)
            .unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", reasons::RECONCILED)
        );
    }

    #[test]
    fn the_first_permanent_problem_emits_one_warning_and_a_repeat_emits_none() {
        let (st, ev) = permanent_status(
            &RabbitMQInstanceStatus::default(),
            4,
            reasons::SHARED_CLUSTER_NOT_FOUND,
            "SharedCluster ops/main does not exist",
            Utc::now(),
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
            Utc::now(),
        );
        assert!(ev2.is_none(), "same problem again: no second Event");
        assert_eq!(again, st);
        let (_, ev3) = permanent_status(&st, 5, reasons::NO_CAPACITY, "full", Utc::now());
        assert!(ev3.is_some(), "a different problem is a transition");
    }

    fn cond_of<'a>(st: &'a RabbitMQInstanceStatus, type_: &str) -> (&'a str, &'a str) {
        let c = st.conditions.iter().find(|c| c.type_ == type_).unwrap();
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn a_permanent_problem_stalls_the_instance_and_stops_it_reading_as_reconciling() {
        let (st, _) = permanent_status(
            &RabbitMQInstanceStatus::default(),
            4,
            reasons::NAME_CONFLICT,
            "taken",
            Utc::now(),
        );
        assert_eq!(
            cond_of(&st, conditions::STALLED),
            ("True", reasons::NAME_CONFLICT)
        );
        assert_eq!(
            cond_of(&st, conditions::RECONCILING),
            ("False", reasons::NAME_CONFLICT)
        );
        assert_eq!(st.observed_generation, Some(4));
    }

    #[test]
    fn the_pause_annotation_is_read_and_recorded_once() {
        let mut i = instance("Shared");
        assert!(!is_paused(&i));
        i.metadata.annotations = Some(
            [(conditions::PAUSED_ANNOTATION.to_string(), "false".into())]
                .into_iter()
                .collect(),
        );
        assert!(!is_paused(&i));
        i.metadata.annotations = Some(
            [(conditions::PAUSED_ANNOTATION.to_string(), "True".into())]
                .into_iter()
                .collect(),
        );
        assert!(is_paused(&i));
        let old = RabbitMQInstanceStatus {
            observed_generation: Some(3),
            ..Default::default()
        };
        let (st, ev) = paused_status(&old, 4, Utc::now());
        let ev = ev.expect("a new pause is announced");
        assert_eq!(
            (ev.type_, ev.reason),
            (EventType::Normal, conditions::events::PAUSED)
        );
        assert_eq!(
            cond_of(&st, conditions::PAUSED),
            ("True", reasons::PAUSED_BY_ANNOTATION)
        );
        assert_eq!(
            cond_of(&st, conditions::RECONCILING),
            ("False", reasons::PAUSED_BY_ANNOTATION)
        );
        // A spec changed while paused is not observed: kstatus must not read it as current.
        assert_eq!(st.observed_generation, Some(3));
        let (again, ev) = paused_status(&st, 4, Utc::now());
        assert!(ev.is_none(), "one Event per pause");
        assert_eq!(status::status_patch(Some(&st), &again).unwrap(), None);
    }

    #[test]
    fn the_final_status_carries_the_endpoint_and_clears_invalid_spec() {
        let i = instance("Shared");
        let (bad, _) =
            permanent_status(&RabbitMQInstanceStatus::default(), 4, "X", "y", Utc::now());
        let p = Plan {
            phase: MigrationPhase::Stable,
            steps: vec![],
            status: bad,
            events: vec![],
            requeue_after: Duration::from_secs(1),
            finished: None,
        };
        let st = final_status(&i, &p, Utc::now()).unwrap();
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
