//! The `SharedCluster` reconciler: build and apply the cluster's broker objects (Secrets created
//! once), then record status: `ready` (every replica ready), `readyReplicas`, `instanceCount`
//! (instances placed on it, including ones migrating onto or off it) and a `Ready` condition with
//! `observedGeneration`. Status is written only when it changed.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::StatefulSet;
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
    if r.is_ok() {
        ctx.succeeded(&ObjectRef::from_obj(&*sc));
    }
    r
}

/// Error policy for the controller: count, log, retry per [`Error::retry`].
pub fn error_policy(sc: Arc<SharedCluster>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed(CONTROLLER, err);
    let delay = match err.retry() {
        Retry::Report(after) => after,
        Retry::Backoff => ctx.backoff(&ObjectRef::from_obj(&*sc)),
    };
    tracing::warn!(
        shared_cluster = %ObjectRef::from_obj(&*sc),
        error = %err, retry_in = ?delay, "reconcile failed"
    );
    Action::requeue(delay)
}

async fn reconcile_inner(sc: &SharedCluster, ctx: &Context) -> Result<Action> {
    if sc.metadata.deletion_timestamp.is_some() {
        // Owner references cascade the broker objects.
        return Ok(Action::await_change());
    }
    let mut cluster = BrokerCluster::for_shared_cluster(sc)
        .map_err(Error::from)
        .map_err(Error::during(Stage::Validate))?;
    cluster.stats_interval_ms = ctx.config.broker_stats_interval_ms;
    clusters::ensure_cluster(&ctx.client, &cluster)
        .await
        .map_err(Error::during(Stage::Apply))?;
    let me = ClusterRef {
        kind: ClusterKind::Shared,
        name: cluster.name.clone(),
        namespace: cluster.namespace.clone(),
    };
    let sts = clusters::statefulset(&ctx.client, &me)
        .await
        .map_err(Error::during(Stage::Observe))?;
    let instances = ctx
        .all_instances()
        .await
        .map_err(Error::during(Stage::Observe))?;
    let new = desired_status(
        sc,
        sts.as_ref(),
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

/// The status the SharedCluster should have (pure).
pub fn desired_status<'a>(
    sc: &SharedCluster,
    sts: Option<&StatefulSet>,
    instances: impl Iterator<Item = &'a RabbitMQInstance>,
    me: &ClusterRef,
    now: DateTime<Utc>,
) -> SharedClusterStatus {
    let generation = sc.metadata.generation.unwrap_or(0);
    let ready_replicas = sts
        .and_then(|s| s.status.as_ref())
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let want = sc.spec.replicas;
    let ready = want > 0 && ready_replicas >= want;
    let instance_count = instances.filter(|i| placed_on(i, me)).count() as i32;
    let old = sc.status.clone().unwrap_or_default();
    let mut conds = old.conditions.clone();
    let reason = if ready {
        reasons::IN_SERVICE
    } else {
        reasons::PROVISIONING
    };
    cond::update(
        &mut conds,
        conditions::READY,
        ready,
        reason,
        format!("{ready_replicas}/{want} brokers ready"),
        generation,
        now,
    );
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
        let s = desired_status(&sc(3), Some(&sts(2)), all.iter(), &me(), Utc::now());
        assert_eq!((s.ready, s.ready_replicas, s.instance_count), (false, 2, 2));
        assert_eq!(s.observed_generation, Some(2));
        assert_eq!(s.conditions[0].status, "False");
        assert_eq!(s.conditions[0].observed_generation, Some(2));
        let s = desired_status(&sc(3), Some(&sts(3)), all.iter(), &me(), Utc::now());
        assert!(s.ready);
        assert_eq!(s.conditions[0].status, "True");
        let s = desired_status(&sc(1), None, std::iter::empty(), &me(), Utc::now());
        assert_eq!((s.ready, s.ready_replicas, s.instance_count), (false, 0, 0));
    }

    #[test]
    fn an_unchanged_cluster_gives_an_unchanged_status() {
        let mut c = sc(1);
        let first = desired_status(&c, Some(&sts(1)), std::iter::empty(), &me(), Utc::now());
        c.status = Some(first.clone());
        let again = desired_status(&c, Some(&sts(1)), std::iter::empty(), &me(), Utc::now());
        assert_eq!(first, again, "no status write when nothing changed");
        assert_eq!(status::status_patch(Some(&first), &again).unwrap(), None);
    }
}
