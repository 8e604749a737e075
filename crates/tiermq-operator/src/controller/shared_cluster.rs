//! The `SharedCluster` reconciler: build and apply the cluster's broker objects (Secrets created
//! once), then record status: `ready` (every replica ready), `readyReplicas`, `instanceCount`
//! (instances placed on it, including ones migrating onto or off it), a `Ready` condition, the
//! kstatus conditions `Reconciling` (True until every broker is ready) and `Stalled` (True after a
//! failure only a person can clear, such as a name conflict), each with `observedGeneration`. Status is written only when it changed.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use tiermq_crd::conditions::{self, reasons};
use tiermq_crd::{ClusterKind, ClusterRef, RabbitMQInstance, SharedCluster, SharedClusterStatus};

use crate::build::BrokerCluster;
use crate::controller::clusters;
use crate::controller::conditions as cond;
use crate::controller::context::Context;
use crate::controller::observe::placed_on;
use crate::controller::status;
use crate::error::{Error, Result, Retry, Stage};

/// The controller's name in logs and metrics.
pub const CONTROLLER: &str = "sharedcluster";

/// Entry point for the kube-runtime Controller.
pub async fn reconcile(sc: Arc<SharedCluster>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_timer(CONTROLLER);
    let span = tracing::info_span!(
        "reconcile",
        shared_cluster = %ObjectRef::from_obj(&*sc)
    );
    let r = tracing::Instrument::instrument(reconcile_inner(&sc, &ctx), span).await;
    match &r {
        Ok(_) => ctx.succeeded(&ObjectRef::from_obj(&*sc)),
        // From the second failure in a row it shows on the object, not only in the log; a
        // failure only a person can clear (a name conflict, a bad spec) shows at once.
        Err(e)
            if matches!(e.retry(), Retry::Report(_))
                || ctx.failures(&ObjectRef::from_obj(&*sc)) + 1
                    >= conditions::DEGRADED_AFTER_FAILURES =>
        {
            if let Err(report) = report_degraded(&ctx, &sc, e).await {
                tracing::warn!(error = %report, "could not report the failure on the object");
            }
        }
        Err(_) => {}
    }
    r
}

async fn report_degraded(ctx: &Context, sc: &SharedCluster, e: &Error) -> Result<()> {
    let old = sc.status.clone().unwrap_or_default();
    let reason = e.degraded_reason();
    let message = e.to_string();
    let announce = !cond::holds(
        &old.conditions,
        conditions::DEGRADED,
        true,
        reason,
        &message,
    );
    let mut new = old.clone();
    let generation = sc.metadata.generation.unwrap_or(0);
    let now = Utc::now();
    let c = crate::controller::plan::conditions::degraded(
        &old.conditions,
        generation,
        Some((reason, &message)),
        now,
    );
    cond::set(&mut new.conditions, c);
    // A failure only a person can clear stalls the cluster (kstatus): Stalled True, Reconciling
    // False; the next pass that succeeds clears both.
    if matches!(e.retry(), Retry::Report(_)) {
        stall(&mut new.conditions, generation, reason, &message, now);
    }
    status::write(
        &ctx.client,
        sc,
        sc.status.as_ref(),
        &new,
        status::Precondition::None,
    )
    .await?;
    if announce {
        status::emit(
            ctx,
            sc,
            &[crate::controller::plan::PlannedEvent {
                type_: crate::controller::plan::EventType::Warning,
                reason: conditions::events::RECONCILE_FAILING,
                note: message,
            }],
        )
        .await;
    }
    Ok(())
}

/// Sets `Stalled` True and `Reconciling` False with `reason` and `message`.
fn stall(
    conds: &mut Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    generation: i64,
    reason: &str,
    message: &str,
    now: DateTime<Utc>,
) {
    let c = crate::controller::plan::conditions::stalled(
        conds,
        generation,
        Some((reason, message)),
        now,
    );
    cond::set(conds, c);
    cond::update(
        conds,
        conditions::RECONCILING,
        false,
        reason,
        format!("stalled: {message}"),
        generation,
        now,
    );
}

/// Error policy for the controller: count, log, retry per [`Error::retry`].
pub fn error_policy(sc: Arc<SharedCluster>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed(CONTROLLER, err);
    // Every failure counts towards `Degraded`, whichever way it is retried.
    let backoff = ctx.backoff(&ObjectRef::from_obj(&*sc));
    let delay = match err.retry() {
        Retry::Report(after) => after,
        Retry::Backoff => backoff,
    };
    tracing::warn!(
        shared_cluster = %ObjectRef::from_obj(&*sc),
        error = %err, retry_in = ?delay, "reconcile failed"
    );
    Action::requeue(delay)
}

/// The SharedCluster's finalizer: it is not deleted while instances are placed on it.
pub const FINALIZER: &str = "tiermq.io/instances";

/// Instances placed on `me` (serving, or source or destination of a running conversion), as
/// `namespace/name`, sorted.
fn placed_instances<'a>(
    instances: impl Iterator<Item = &'a RabbitMQInstance>,
    me: &ClusterRef,
) -> Vec<String> {
    let mut v: Vec<String> = instances
        .filter(|i| placed_on(i, me))
        .map(|i| format!("{}/{}", i.namespace().unwrap_or_default(), i.name_any()))
        .collect();
    v.sort();
    v
}

async fn set_finalizers(ctx: &Context, sc: &SharedCluster, list: Vec<String>) -> Result<()> {
    let api: kube::Api<SharedCluster> =
        kube::Api::namespaced(ctx.client.clone(), &sc.namespace().unwrap_or_default());
    // Compare-and-swap: a concurrent change gives a 409 and a retry.
    let patch = serde_json::json!({"metadata": {
        "finalizers": list,
        "resourceVersion": sc.resource_version(),
    }});
    match api
        .patch(
            &sc.name_any(),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(crate::error::kube_err(
            "update finalizers of",
            ObjectRef::from_obj(sc).to_string(),
        )(e)),
    }
}

/// Deleting: wait while instances are placed here (condition + one Warning Event naming them),
/// then let the deletion go on (owner references cascade the broker objects; an external
/// cluster's brokers carry none of the SharedCluster's, so they stay).
async fn deleting(sc: &SharedCluster, ctx: &Context, me: &ClusterRef) -> Result<Action> {
    if !sc.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let instances = ctx.all_instances().await?;
    let placed = placed_instances(instances.iter().map(|a| a.as_ref()), me);
    if placed.is_empty() {
        let rest = sc
            .finalizers()
            .iter()
            .filter(|f| *f != FINALIZER)
            .cloned()
            .collect();
        set_finalizers(ctx, sc, rest).await?;
        return Ok(Action::await_change());
    }
    let shown: Vec<&str> = placed.iter().take(10).map(String::as_str).collect();
    let message = format!(
        "deletion waits: {} instances are placed on this cluster ({}{}); convert them to \
         Dedicated or to another SharedCluster, or delete them",
        placed.len(),
        shown.join(", "),
        if placed.len() > shown.len() {
            ", ..."
        } else {
            ""
        }
    );
    let old = sc.status.clone().unwrap_or_default();
    let announce = !cond::holds(
        &old.conditions,
        conditions::READY,
        false,
        reasons::DELETION_BLOCKED,
        &message,
    );
    let mut new = old.clone();
    cond::update(
        &mut new.conditions,
        conditions::READY,
        false,
        reasons::DELETION_BLOCKED,
        message.clone(),
        sc.metadata.generation.unwrap_or(0),
        Utc::now(),
    );
    status::write(
        &ctx.client,
        sc,
        sc.status.as_ref(),
        &new,
        status::Precondition::None,
    )
    .await?;
    if announce {
        status::emit(
            ctx,
            sc,
            &[crate::controller::plan::PlannedEvent {
                type_: crate::controller::plan::EventType::Warning,
                reason: conditions::events::DELETION_BLOCKED,
                note: message,
            }],
        )
        .await;
    }
    Ok(Action::requeue(Duration::from_secs(30)))
}

async fn reconcile_inner(sc: &SharedCluster, ctx: &Context) -> Result<Action> {
    let me = ClusterRef {
        kind: ClusterKind::Shared,
        name: sc.name_any(),
        namespace: sc.namespace().unwrap_or_default(),
    };
    if sc.metadata.deletion_timestamp.is_some() {
        return deleting(sc, ctx, &me)
            .await
            .map_err(Error::during(Stage::Finalizer));
    }
    if !sc.finalizers().iter().any(|f| f == FINALIZER) {
        let mut list = sc.finalizers().to_vec();
        list.push(FINALIZER.to_string());
        set_finalizers(ctx, sc, list)
            .await
            .map_err(Error::during(Stage::Finalizer))?;
    }
    // An external cluster's brokers are someone else's: nothing is built or applied.
    let upgrade = if sc.spec.external.is_some() {
        None
    } else {
        let mut cluster = BrokerCluster::for_shared_cluster(sc)
            .map_err(Error::from)
            .map_err(Error::during(Stage::Validate))?;
        cluster.stats_interval_ms = ctx.config.broker_stats_interval_ms;
        cluster.network = ctx.config.network_access();
        clusters::ensure_cluster(&ctx.client, &ctx.config, &cluster)
            .await
            .map_err(Error::during(Stage::Apply))?
    };
    if let Some(note) = upgrade {
        status::emit(
            ctx,
            sc,
            &[crate::controller::plan::PlannedEvent {
                type_: crate::controller::plan::EventType::Normal,
                reason: conditions::events::UPGRADING_IMAGE,
                note,
            }],
        )
        .await;
    }
    let sts = clusters::statefulset(ctx.lookup(), &me)
        .await
        .map_err(Error::during(Stage::Observe))?;
    let unreachable = if sc.spec.external.is_some() {
        management_problem(ctx, &me)
            .await
            .map_err(Error::during(Stage::Observe))?
    } else {
        None
    };
    let instances = ctx
        .all_instances()
        .await
        .map_err(Error::during(Stage::Observe))?;
    let new = desired_status(
        sc,
        sts.as_ref(),
        unreachable.as_deref(),
        instances.iter().map(|a| a.as_ref()),
        &me,
        Utc::now(),
    );
    status::write(
        &ctx.client,
        sc,
        sc.status.as_ref(),
        &new,
        status::Precondition::None,
    )
    .await
    .map_err(Error::during(Stage::Status))?;
    // Not ready: look again soon; ready: the StatefulSet watch and instance changes trigger us.
    Ok(Action::requeue(if new.ready {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(5)
    }))
}

/// Why the management API of external cluster `me` cannot be used (no admin Secret or address
/// yet, or it does not answer with those credentials); `None` when it answers.
async fn management_problem(ctx: &Context, me: &ClusterRef) -> Result<Option<String>> {
    let Some(mc) = clusters::management_client(ctx.lookup(), &ctx.config, me).await? else {
        let names = clusters::names(ctx.lookup(), me).await?;
        return Ok(Some(format!(
            "no management address yet: Secret {} or Service {} is missing (or the Service has \
             no ClusterIP)",
            names.admin_secret, names.service
        )));
    };
    Ok(mc
        .overview()
        .await
        .err()
        .map(|e| format!("the management API does not answer: {e}")))
}

/// The status the SharedCluster should have (pure). `unreachable`: why an external cluster's
/// management API cannot be used, if it cannot.
pub fn desired_status<'a>(
    sc: &SharedCluster,
    sts: Option<&StatefulSet>,
    unreachable: Option<&str>,
    instances: impl Iterator<Item = &'a RabbitMQInstance>,
    me: &ClusterRef,
    now: DateTime<Utc>,
) -> SharedClusterStatus {
    let generation = sc.metadata.generation.unwrap_or(0);
    let ready_replicas = sts
        .and_then(|s| s.status.as_ref())
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    // An external cluster is as large as its owner made it.
    let want = if sc.spec.external.is_some() {
        sts.and_then(|s| s.spec.as_ref())
            .and_then(|s| s.replicas)
            .unwrap_or(1)
    } else {
        sc.spec.replicas
    };
    let ready = want > 0 && ready_replicas >= want && unreachable.is_none();
    let instance_count = instances.filter(|i| placed_on(i, me)).count() as i32;
    let old = sc.status.clone().unwrap_or_default();
    let mut conds = old.conditions.clone();
    let reason = if ready {
        reasons::IN_SERVICE
    } else {
        reasons::PROVISIONING
    };
    let message = match unreachable {
        Some(why) => format!("{ready_replicas}/{want} brokers ready; {why}"),
        None => format!("{ready_replicas}/{want} brokers ready"),
    };
    cond::update(
        &mut conds,
        conditions::READY,
        ready,
        reason,
        message.clone(),
        generation,
        now,
    );
    // kstatus: reconciling until every broker is ready; a pass that got here is not stalled.
    let (reason, message) = if ready {
        (reasons::UP_TO_DATE, "every broker is ready".to_string())
    } else {
        (reasons::PROVISIONING, message)
    };
    cond::update(
        &mut conds,
        conditions::RECONCILING,
        !ready,
        reason,
        message,
        generation,
        now,
    );
    let c = crate::controller::plan::conditions::stalled(&conds, generation, None, now);
    cond::set(&mut conds, c);
    if cond::is_true(&conds, conditions::DEGRADED) {
        let c = crate::controller::plan::conditions::degraded(&conds, generation, None, now);
        cond::set(&mut conds, c);
    }
    SharedClusterStatus {
        ready,
        ready_replicas,
        instance_count,
        conditions: conds,
        observed_generation: Some(generation),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sc(replicas: i32) -> SharedCluster {
        serde_json::from_value(json!({
            "apiVersion": "tiermq.io/v1alpha1", "kind": "SharedCluster",
            "metadata": {"name": "main", "namespace": "ops", "uid": "u", "generation": 2},
            "spec": {"replicas": replicas}
        }))
        .unwrap()
    }

    fn sts(ready: i32) -> StatefulSet {
        serde_json::from_value(json!({"metadata": {"name": "main"}, "status": {"replicas": ready, "readyReplicas": ready}}))
            .unwrap()
    }

    fn inst(name: &str, status: serde_json::Value) -> RabbitMQInstance {
        serde_json::from_value(json!({
            "apiVersion": "tiermq.io/v1alpha1", "kind": "RabbitMQInstance",
            "metadata": {"name": name, "namespace": "a"},
            "spec": {"series": "Subscription", "tier": "Shared"},
            "status": status
        }))
        .unwrap()
    }

    fn me() -> ClusterRef {
        ClusterRef {
            kind: ClusterKind::Shared,
            name: "main".into(),
            namespace: "ops".into(),
        }
    }

    #[test]
    fn status_counts_placed_and_migrating_instances_and_readiness() {
        let placed = inst(
            "a",
            json!({"serving": {"kind": "Shared", "name": "main", "namespace": "ops"}}),
        );
        let elsewhere = inst(
            "b",
            json!({"serving": {"kind": "Shared", "name": "other", "namespace": "ops"}}),
        );
        let migrating = inst(
            "c",
            json!({
                "serving": {"kind": "Dedicated", "name": "c-dedicated", "namespace": "a"},
                "migration": {"from": "Dedicated", "to": "Shared",
                    "source": {"kind": "Dedicated", "name": "c-dedicated", "namespace": "a"},
                    "destination": {"kind": "Shared", "name": "main", "namespace": "ops"},
                    "drainStrategy": "Consume", "connectionPolicy": "Close",
                    "started": "2026-01-01T00:00:00Z"}
            }),
        );
        let all = [placed, elsewhere, migrating];
        let s = desired_status(&sc(3), Some(&sts(2)), None, all.iter(), &me(), Utc::now());
        assert_eq!((s.ready, s.ready_replicas, s.instance_count), (false, 2, 2));
        assert_eq!(s.observed_generation, Some(2));
        assert_eq!(s.conditions[0].status, "False");
        assert_eq!(s.conditions[0].observed_generation, Some(2));
        let s = desired_status(&sc(3), Some(&sts(3)), None, all.iter(), &me(), Utc::now());
        assert!(s.ready);
        assert_eq!(s.conditions[0].status, "True");
        let s = desired_status(&sc(1), None, None, std::iter::empty(), &me(), Utc::now());
        assert_eq!((s.ready, s.ready_replicas, s.instance_count), (false, 0, 0));
    }

    fn status_of<'a>(s: &'a SharedClusterStatus, type_: &str) -> (&'a str, &'a str) {
        let c = s.conditions.iter().find(|c| c.type_ == type_).unwrap();
        assert_eq!(c.observed_generation, Some(2), "{type_}");
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn the_cluster_reconciles_until_ready_and_a_good_pass_clears_a_stall() {
        let mut c = sc(3);
        let s = desired_status(
            &c,
            Some(&sts(1)),
            None,
            std::iter::empty(),
            &me(),
            Utc::now(),
        );
        assert_eq!(
            status_of(&s, conditions::RECONCILING),
            ("True", reasons::PROVISIONING)
        );
        assert_eq!(
            status_of(&s, conditions::STALLED),
            ("False", reasons::NOT_STALLED)
        );
        let mut stalled = s.clone();
        stall(
            &mut stalled.conditions,
            2,
            reasons::NAME_CONFLICT,
            "taken",
            Utc::now(),
        );
        assert_eq!(
            status_of(&stalled, conditions::STALLED),
            ("True", reasons::NAME_CONFLICT)
        );
        assert_eq!(
            status_of(&stalled, conditions::RECONCILING),
            ("False", reasons::NAME_CONFLICT)
        );
        c.status = Some(stalled);
        let s = desired_status(
            &c,
            Some(&sts(3)),
            None,
            std::iter::empty(),
            &me(),
            Utc::now(),
        );
        assert_eq!(
            status_of(&s, conditions::RECONCILING),
            ("False", reasons::UP_TO_DATE)
        );
        assert_eq!(
            status_of(&s, conditions::STALLED),
            ("False", reasons::NOT_STALLED)
        );
    }

    #[test]
    fn an_external_cluster_is_ready_by_its_own_statefulset_and_a_reachable_management_api() {
        let c: SharedCluster = serde_json::from_value(json!({
            "apiVersion": "tiermq.io/v1alpha1", "kind": "SharedCluster",
            "metadata": {"name": "main", "namespace": "ops", "uid": "u", "generation": 2},
            "spec": {"replicas": 1, "external": {"rabbitmqClusterRef": {"name": "prod"}}}
        }))
        .unwrap();
        let three: StatefulSet =
            serde_json::from_value(json!({"metadata": {"name": "prod-server"},
            "spec": {"replicas": 3, "selector": {}, "template": {}, "serviceName": "prod-nodes"},
            "status": {"replicas": 3, "readyReplicas": 2}}))
            .unwrap();
        // spec.replicas (1) is ignored: 2 of the StatefulSet's 3 are not enough.
        let s = desired_status(
            &c,
            Some(&three),
            None,
            std::iter::empty(),
            &me(),
            Utc::now(),
        );
        assert_eq!((s.ready, s.ready_replicas), (false, 2));
        assert_eq!(s.conditions[0].message, "2/3 brokers ready");
        let mut all_ready = three.clone();
        all_ready.status.as_mut().unwrap().ready_replicas = Some(3);
        let s = desired_status(
            &c,
            Some(&all_ready),
            None,
            std::iter::empty(),
            &me(),
            Utc::now(),
        );
        assert!(s.ready);
        let s = desired_status(
            &c,
            Some(&all_ready),
            Some("the management API does not answer: 401"),
            std::iter::empty(),
            &me(),
            Utc::now(),
        );
        assert!(!s.ready);
        assert!(s.conditions[0].message.ends_with("does not answer: 401"));
    }

    #[test]
    fn an_unchanged_cluster_gives_an_unchanged_status() {
        let mut c = sc(1);
        let first = desired_status(
            &c,
            Some(&sts(1)),
            None,
            std::iter::empty(),
            &me(),
            Utc::now(),
        );
        c.status = Some(first.clone());
        let again = desired_status(
            &c,
            Some(&sts(1)),
            None,
            std::iter::empty(),
            &me(),
            Utc::now(),
        );
        assert_eq!(first, again, "no status write when nothing changed");
        assert_eq!(status::status_patch(Some(&first), &again).unwrap(), None);
    }
}
