//! Deployment controller, kept small: enough for the Helm chart's operator Deployment,
//! `kubectl rollout status|history`, `kubectl wait --for=condition=Available` and the readiness
//! checks of `helm install --wait` (which also look at the Deployment's ReplicaSets).
//!
//! As in Kubernetes, a Deployment owns one ReplicaSet per pod template, named
//! `<deployment>-<template hash>` and labelled `pod-template-hash`, and the ReplicaSet
//! controller ([`super::replicaset`]) makes the pods. A rollout (template change) scales the new
//! ReplicaSet to `replicas` and the old ones to 0 once every new pod is Ready (so `RollingUpdate`
//! behaves like maxSurge = 100 %); old ReplicaSets stay at 0 as revision history
//! (`deployment.kubernetes.io/revision`, at most `revisionHistoryLimit` of them). Going back to an
//! earlier template reuses its ReplicaSet under a new revision. Status carries replicas,
//! updatedReplicas, readyReplicas, availableReplicas, unavailableReplicas, observedGeneration and
//! the Available and Progressing conditions.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::{Notify, watch};

use super::replicaset::{controlled_by, finished};
use super::statefulset::pod_ready;
use super::{Result, SimConfig, SimError, is_not_found, key_of, spawn_trigger, wait_next};

/// Pod and ReplicaSet label: the hash of the Deployment's pod template they were made from.
pub const LABEL_POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// ReplicaSet annotation: the Deployment revision the ReplicaSet's template is.
pub const ANNOTATION_REVISION: &str = "deployment.kubernetes.io/revision";

pub(crate) async fn run(client: Client, cfg: SimConfig, mut stop: watch::Receiver<bool>) {
    let notify = Arc::new(Notify::new());
    let rec = super::recorder(&client, "deployment-controller");
    let triggers = [
        spawn_trigger::<Deployment>(client.clone(), notify.clone(), stop.clone()),
        spawn_trigger::<ReplicaSet>(client.clone(), notify.clone(), stop.clone()),
        spawn_trigger::<Pod>(client.clone(), notify.clone(), stop.clone()),
    ];
    loop {
        let started = std::time::Instant::now();
        if let Err(e) = reconcile_all(&client, &rec).await {
            tracing::warn!(error = %e, "deployment controller pass failed");
        }
        if !wait_next(&notify, &mut stop, cfg.resync, started).await {
            break;
        }
    }
    for t in triggers {
        t.abort();
    }
}

async fn reconcile_all(client: &Client, rec: &super::Events) -> Result<()> {
    let deployments = Api::<Deployment>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| SimError::kube("list", "Deployment", "all namespaces", e))?;
    let sets = Api::<ReplicaSet>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| SimError::kube("list", "ReplicaSet", "all namespaces", e))?;
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| SimError::kube("list", "Pod", "all namespaces", e))?;
    for d in &deployments.items {
        if d.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if let Err(e) = reconcile_one(client, rec, d, &sets.items, &pods.items).await {
            tracing::warn!(deployment = %key_of(d), error = %e, "reconcile failed; retrying");
        }
    }
    Ok(())
}

fn template_hash(d: &Deployment) -> String {
    let text = serde_json::to_string(&d.spec.as_ref().map(|s| &s.template)).unwrap_or_default();
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    // Kubernetes uses a short alphanumeric hash; ten hex digits serve the same purpose.
    format!("{:010x}", h & 0xff_ffff_ffff)
}

/// The revision a ReplicaSet carries (0 when it has none).
fn revision_of(rs: &ReplicaSet) -> u64 {
    rs.annotations()
        .get(ANNOTATION_REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// The ReplicaSet for the Deployment's current template: its template gets the
/// `pod-template-hash` label, its selector selects it too, so ReplicaSets of one Deployment never
/// share pods.
fn build_replicaset(d: &Deployment, hash: &str, replicas: i32, revision: u64) -> ReplicaSet {
    let name = d.name_any();
    let spec = d.spec.clone().unwrap_or_default();
    let mut template = spec.template.clone();
    let tmeta = template.metadata.get_or_insert_with(Default::default);
    tmeta
        .labels
        .get_or_insert_with(Default::default)
        .insert(LABEL_POD_TEMPLATE_HASH.into(), hash.to_string());
    let labels = tmeta.labels.clone();
    let mut selector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(Default::default)
        .insert(LABEL_POD_TEMPLATE_HASH.into(), hash.to_string());
    serde_json::from_value(json!({
        "metadata": ObjectMeta {
            name: Some(format!("{name}-{hash}")),
            namespace: d.namespace(),
            labels,
            annotations: Some([(ANNOTATION_REVISION.to_string(), revision.to_string())].into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name,
                uid: d.uid().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        "spec": {"replicas": replicas, "selector": selector, "template": template},
    }))
    .expect("a ReplicaSet from its parts")
}

/// Sets a ReplicaSet's replicas and, when given, its revision.
async fn scale(
    client: &Client,
    rec: &super::Events,
    d: &Deployment,
    rs: &ReplicaSet,
    replicas: i32,
    revision: Option<u64>,
) -> Result<()> {
    let from = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let mut patch = json!({"spec": {"replicas": replicas}});
    if let Some(r) = revision {
        patch["metadata"] = json!({"annotations": {ANNOTATION_REVISION: r.to_string()}});
    }
    Api::<ReplicaSet>::namespaced(client.clone(), &rs.namespace().unwrap_or_default())
        .patch(
            &rs.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|e| SimError::kube("scale", "ReplicaSet", key_of(rs), e))?;
    if from != replicas {
        let how = if replicas > from { "up" } else { "down" };
        let note = format!(
            "Scaled {how} replica set {} from {from} to {replicas}",
            rs.name_any()
        );
        super::emit(rec, d, false, "ScalingReplicaSet", "Scale", note).await;
    }
    Ok(())
}

async fn reconcile_one(
    client: &Client,
    rec: &super::Events,
    d: &Deployment,
    all_sets: &[ReplicaSet],
    all_pods: &[Pod],
) -> Result<()> {
    let ns = d.namespace().unwrap_or_default();
    let uid = d.uid().unwrap_or_default();
    let spec = d.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let hash = template_hash(d);
    let sets_api: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
    let owned: Vec<&ReplicaSet> = all_sets
        .iter()
        .filter(|rs| rs.namespace().as_deref() == Some(ns.as_str()))
        .filter(|rs| rs.metadata.deletion_timestamp.is_none())
        .filter(|rs| {
            rs.owner_references()
                .iter()
                .any(|o| o.uid == uid && o.controller == Some(true))
        })
        .collect();
    let is_new = |rs: &ReplicaSet| rs.labels().get(LABEL_POD_TEMPLATE_HASH) == Some(&hash);
    let newest = owned.iter().map(|rs| revision_of(rs)).max().unwrap_or(0);
    let new = owned.iter().copied().find(|rs| is_new(rs));
    let old: Vec<&ReplicaSet> = owned.iter().copied().filter(|rs| !is_new(rs)).collect();
    let new_uid = match new {
        None => {
            let rs = build_replicaset(d, &hash, replicas, newest + 1);
            let created = sets_api
                .create(&PostParams::default(), &rs)
                .await
                .map_err(|e| {
                    SimError::kube("create", "ReplicaSet", format!("{ns}/{}", rs.name_any()), e)
                })?;
            let note = format!(
                "Scaled up replica set {} from 0 to {replicas}",
                rs.name_any()
            );
            super::emit(rec, d, false, "ScalingReplicaSet", "Scale", note).await;
            created.uid().unwrap_or_default()
        }
        Some(rs) => {
            // An earlier template coming back (a rollback) becomes the newest revision again.
            let revision = (revision_of(rs) < newest).then_some(newest + 1);
            if rs.spec.as_ref().and_then(|s| s.replicas) != Some(replicas) || revision.is_some() {
                scale(client, rec, d, rs, replicas, revision).await?;
            }
            rs.uid().unwrap_or_default()
        }
    };

    let pods_of = |rs_uid: &str| -> Vec<&Pod> {
        all_pods
            .iter()
            .filter(|p| p.namespace().as_deref() == Some(ns.as_str()))
            .filter(|p| p.metadata.deletion_timestamp.is_none() && !finished(p))
            .filter(|p| controlled_by(p, rs_uid))
            .collect()
    };
    let new_pods = pods_of(&new_uid);
    let old_pods: Vec<&Pod> = old
        .iter()
        .flat_map(|rs| pods_of(&rs.uid().unwrap_or_default()))
        .collect();
    let new_ready = new_pods.iter().filter(|p| pod_ready(p)).count();
    if new_ready >= replicas as usize {
        for rs in old
            .iter()
            .filter(|rs| rs.spec.as_ref().and_then(|s| s.replicas) != Some(0))
        {
            scale(client, rec, d, rs, 0, None).await?;
        }
        // Revision history: the newest scaled-down ReplicaSets stay, up to the limit.
        let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
        let mut idle: Vec<&ReplicaSet> = old
            .iter()
            .copied()
            .filter(|rs| pods_of(&rs.uid().unwrap_or_default()).is_empty())
            .collect();
        idle.sort_by_key(|rs| std::cmp::Reverse(revision_of(rs)));
        for rs in idle.into_iter().skip(limit) {
            match sets_api
                .delete(&rs.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(SimError::kube("delete", "ReplicaSet", key_of(rs), e)),
            }
        }
    }
    let replicas = replicas as usize;
    let new = new_pods;
    let live: Vec<&Pod> = new.iter().chain(old_pods.iter()).copied().collect();
    let old = old_pods;

    let ready = live.iter().filter(|p| pod_ready(p)).count() as i32;
    let available = ready >= replicas as i32;
    let complete = new_ready >= replicas && old.is_empty() && new.len() == replicas;
    let old_status = d.status.clone().unwrap_or_default();
    let cond = |type_: &str, ok: bool, reason: &str, message: &str| {
        let status = if ok { "True" } else { "False" };
        let prev = old_status.conditions.iter().flatten().find(|c| {
            c.type_ == type_ && c.status == status && c.reason.as_deref() == Some(reason)
        });
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        let ts = prev
            .and_then(|c| c.last_transition_time.clone())
            .map(|t| json!(t))
            .unwrap_or_else(|| json!(k8s_openapi::jiff::Timestamp::from_second(now).ok()));
        json!({"type": type_, "status": status, "reason": reason, "message": message,
               "lastTransitionTime": ts, "lastUpdateTime": ts})
    };
    let status = json!({
        "observedGeneration": d.metadata.generation,
        "replicas": live.len() as i32,
        "updatedReplicas": new.len() as i32,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "unavailableReplicas": (replicas as i32 - ready).max(0),
        "conditions": [
            cond("Available", available,
                 if available { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
                 if available { "Deployment has minimum availability." } else { "Deployment does not have minimum availability." }),
            cond("Progressing", true,
                 if complete { "NewReplicaSetAvailable" } else { "ReplicaSetUpdated" },
                 if complete { "Deployment has successfully progressed." } else { "Deployment is progressing." }),
        ],
    });
    let current = serde_json::to_value(&old_status).unwrap_or_default();
    let changed = [
        "observedGeneration",
        "replicas",
        "updatedReplicas",
        "readyReplicas",
        "availableReplicas",
        "unavailableReplicas",
    ]
    .iter()
    .any(|k| current.get(*k).cloned().unwrap_or(json!(0)) != status[*k].clone())
        || {
            let summary = |v: &serde_json::Value| -> Vec<(String, String, String)> {
                v.as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| {
                        (
                            c["type"].as_str().unwrap_or_default().to_string(),
                            c["status"].as_str().unwrap_or_default().to_string(),
                            c["reason"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            };
            summary(&current["conditions"]) != summary(&status["conditions"])
        };
    if changed {
        Api::<Deployment>::namespaced(client.clone(), &ns)
            .patch_status(
                &d.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&json!({ "status": status })),
            )
            .await
            .map_err(|e| SimError::kube("update status of", "Deployment", key_of(d), e))?;
    }
    Ok(())
}
