//! Deployment controller, kept minimal: enough for the Helm chart's operator Deployment and for
//! `kubectl rollout status` / `kubectl wait --for=condition=Available`.
//!
//! Simplification: there are no ReplicaSets. The Deployment owns its pods directly; each pod is
//! named `<deployment>-<template hash>-<5 random chars>` and labelled with the template's labels
//! plus `pod-template-hash`. A rollout (template change) creates new pods up to `replicas`, and
//! removes the old ones once every new pod is Ready (so `RollingUpdate` behaves like maxSurge =
//! 100 %). Failed/Succeeded pods are replaced. Status carries replicas, updatedReplicas,
//! readyReplicas, availableReplicas, unavailableReplicas, observedGeneration and the Available and
//! Progressing conditions.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::{Notify, watch};

use super::statefulset::pod_ready;
use super::{Result, SimConfig, SimError, is_not_found, key_of, spawn_trigger, wait_next};

/// Pod label: the hash of the Deployment's pod template the pod was made from.
pub const LABEL_POD_TEMPLATE_HASH: &str = "pod-template-hash";

pub(crate) async fn run(client: Client, cfg: SimConfig, mut stop: watch::Receiver<bool>) {
    let notify = Arc::new(Notify::new());
    let rec = super::recorder(&client, "deployment-controller");
    let triggers = [
        spawn_trigger::<Deployment>(client.clone(), notify.clone(), stop.clone()),
        spawn_trigger::<Pod>(client.clone(), notify.clone(), stop.clone()),
    ];
    loop {
        if let Err(e) = reconcile_all(&client, &rec).await {
            tracing::warn!(error = %e, "deployment controller pass failed");
        }
        if !wait_next(&notify, &mut stop, cfg.resync).await {
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
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| SimError::kube("list", "Pod", "all namespaces", e))?;
    for d in &deployments.items {
        if d.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if let Err(e) = reconcile_one(client, rec, d, &pods.items).await {
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

fn random_suffix() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn build_pod(d: &Deployment, hash: &str) -> Pod {
    let name = d.name_any();
    let spec = d.spec.clone().unwrap_or_default();
    let tmeta = spec.template.metadata.clone().unwrap_or_default();
    let mut labels = tmeta.labels.clone().unwrap_or_default();
    labels.insert(LABEL_POD_TEMPLATE_HASH.into(), hash.to_string());
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("{name}-{hash}-{}", random_suffix())),
            namespace: d.namespace(),
            labels: Some(labels),
            annotations: tmeta.annotations,
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
        spec: spec.template.spec,
        status: None,
    }
}

async fn delete(api: &Api<Pod>, pod: &Pod) -> Result<()> {
    match api.delete(&pod.name_any(), &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(SimError::kube("delete", "Pod", key_of(pod), e)),
    }
}

async fn reconcile_one(
    client: &Client,
    rec: &super::Events,
    d: &Deployment,
    all_pods: &[Pod],
) -> Result<()> {
    let ns = d.namespace().unwrap_or_default();
    let uid = d.uid().unwrap_or_default();
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0) as usize;
    let hash = template_hash(d);
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let owned: Vec<&Pod> = all_pods
        .iter()
        .filter(|p| p.namespace().as_deref() == Some(ns.as_str()))
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.owner_references()
                .iter()
                .any(|o| o.uid == uid && o.controller == Some(true))
        })
        .collect();
    let finished = |p: &Pod| {
        matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Failed") | Some("Succeeded")
        )
    };
    let is_new = |p: &Pod| p.labels().get(LABEL_POD_TEMPLATE_HASH) == Some(&hash);
    for p in owned.iter().filter(|p| finished(p)) {
        delete(&api, p).await?;
    }
    let live: Vec<&Pod> = owned.into_iter().filter(|p| !finished(p)).collect();
    let new: Vec<&Pod> = live.iter().copied().filter(|p| is_new(p)).collect();
    let old: Vec<&Pod> = live.iter().copied().filter(|p| !is_new(p)).collect();
    if new.len() < replicas {
        for _ in new.len()..replicas {
            let pod = build_pod(d, &hash);
            api.create(&PostParams::default(), &pod)
                .await
                .map_err(|e| {
                    SimError::kube("create", "Pod", format!("{ns}/{}", pod.name_any()), e)
                })?;
            let note = format!("Created pod: {}", pod.name_any());
            super::emit(rec, d, false, "SuccessfulCreate", "Create", note).await;
        }
    } else {
        for p in new.iter().skip(replicas) {
            delete(&api, p).await?;
        }
    }
    let new_ready = new.iter().filter(|p| pod_ready(p)).count();
    if new_ready >= replicas {
        for p in &old {
            delete(&api, p).await?;
        }
    }

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
