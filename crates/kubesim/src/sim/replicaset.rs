//! ReplicaSet controller: keeps `spec.replicas` pods of a ReplicaSet's template, like
//! kube-controller-manager's. The Deployment controller ([`super::deployment`]) owns one
//! ReplicaSet per pod template and scales them; this one makes their pods.
//!
//! Pods are named `<replicaset>-<5 random chars>` and owned by their ReplicaSet (controller
//! reference). Finished pods (Failed/Succeeded) are replaced; on scale down, pods that are not
//! Ready go first. Status carries replicas, fullyLabeledReplicas, readyReplicas,
//! availableReplicas and observedGeneration (no `minReadySeconds`: ready means available).

use std::sync::Arc;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::{Notify, watch};

use super::statefulset::pod_ready;
use super::{
    Result, SimConfig, SimError, is_not_found, key_of, selector_matches, spawn_trigger, wait_next,
};

pub(crate) async fn run(client: Client, cfg: SimConfig, mut stop: watch::Receiver<bool>) {
    let notify = Arc::new(Notify::new());
    let rec = super::recorder(&client, "replicaset-controller");
    let triggers = [
        spawn_trigger::<ReplicaSet>(client.clone(), notify.clone(), stop.clone()),
        spawn_trigger::<Pod>(client.clone(), notify.clone(), stop.clone()),
    ];
    loop {
        let started = std::time::Instant::now();
        if let Err(e) = reconcile_all(&client, &rec).await {
            tracing::warn!(error = %e, "replicaset controller pass failed");
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
    let sets = Api::<ReplicaSet>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| SimError::kube("list", "ReplicaSet", "all namespaces", e))?;
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| SimError::kube("list", "Pod", "all namespaces", e))?;
    for rs in &sets.items {
        if rs.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if let Err(e) = reconcile_one(client, rec, rs, &pods.items).await {
            tracing::warn!(replicaset = %key_of(rs), error = %e, "reconcile failed; retrying");
        }
    }
    Ok(())
}

/// Whether `pod` is controlled by the object with `uid`.
pub(crate) fn controlled_by(pod: &Pod, uid: &str) -> bool {
    pod.owner_references()
        .iter()
        .any(|o| o.uid == uid && o.controller == Some(true))
}

/// Whether a pod has finished (and is replaced rather than counted).
pub(crate) fn finished(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Failed") | Some("Succeeded")
    )
}

fn random_suffix() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn build_pod(rs: &ReplicaSet) -> Pod {
    let name = rs.name_any();
    let template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("{name}-{}", random_suffix())),
            namespace: rs.namespace(),
            labels: tmeta.labels,
            annotations: tmeta.annotations,
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "ReplicaSet".into(),
                name,
                uid: rs.uid().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: template.spec,
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
    rs: &ReplicaSet,
    all_pods: &[Pod],
) -> Result<()> {
    let ns = rs.namespace().unwrap_or_default();
    let uid = rs.uid().unwrap_or_default();
    let spec = rs.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1).max(0) as usize;
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let owned: Vec<&Pod> = all_pods
        .iter()
        .filter(|p| p.namespace().as_deref() == Some(ns.as_str()))
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| controlled_by(p, &uid))
        .collect();
    for p in owned.iter().filter(|p| finished(p)) {
        delete(&api, p).await?;
    }
    let mut live: Vec<&Pod> = owned.into_iter().filter(|p| !finished(p)).collect();
    if live.len() < replicas {
        for _ in live.len()..replicas {
            let pod = build_pod(rs);
            api.create(&PostParams::default(), &pod)
                .await
                .map_err(|e| {
                    SimError::kube("create", "Pod", format!("{ns}/{}", pod.name_any()), e)
                })?;
            let note = format!("Created pod: {}", pod.name_any());
            super::emit(rec, rs, false, "SuccessfulCreate", "Create", note).await;
        }
    } else if live.len() > replicas {
        // Not-ready pods go first, then the newest (as the real controller prefers).
        live.sort_by_key(|p| (pod_ready(p), std::cmp::Reverse(p.creation_timestamp())));
        let extra = live.len() - replicas;
        for p in live.drain(..extra) {
            delete(&api, p).await?;
            let note = format!("Deleted pod: {}", p.name_any());
            super::emit(rec, rs, false, "SuccessfulDelete", "Delete", note).await;
        }
    }

    let ready = live.iter().filter(|p| pod_ready(p)).count() as i32;
    let labelled = live
        .iter()
        .filter(|p| selector_matches(&spec.selector, p.labels()))
        .count() as i32;
    let status = json!({
        "observedGeneration": rs.metadata.generation,
        "replicas": live.len() as i32,
        "fullyLabeledReplicas": labelled,
        "readyReplicas": ready,
        "availableReplicas": ready,
    });
    let current = serde_json::to_value(rs.status.clone().unwrap_or_default()).unwrap_or_default();
    let changed = status
        .as_object()
        .expect("an object")
        .iter()
        .any(|(k, v)| current.get(k).cloned().unwrap_or(json!(0)) != *v);
    if changed {
        Api::<ReplicaSet>::namespaced(client.clone(), &ns)
            .patch_status(
                &rs.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&json!({ "status": status })),
            )
            .await
            .map_err(|e| SimError::kube("update status of", "ReplicaSet", key_of(rs), e))?;
    }
    Ok(())
}
