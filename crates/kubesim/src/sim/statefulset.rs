//! StatefulSet controller: ordered, stably named Pods and their PersistentVolumeClaims.
//!
//! What it does, kept close to Kubernetes and kept simple:
//! - Pods are `<sts>-0 .. <sts>-(replicas-1)`, labelled with the template's labels plus
//!   `statefulset.kubernetes.io/pod-name`, `apps.kubernetes.io/pod-index` and
//!   `controller-revision-hash`, owned by the StatefulSet (controller ownerReference, so deleting
//!   the StatefulSet garbage-collects them), with `hostname` = pod name and `subdomain` =
//!   `serviceName`.
//! - `podManagementPolicy: OrderedReady` (default): pod N is created only when pods 0..N-1 exist
//!   and are Ready; `Parallel` creates all missing pods at once.
//! - Scale down removes the highest ordinal first, one pod at a time (the next only after the
//!   previous pod object is gone).
//! - `volumeClaimTemplates` become PVCs `<claim>-<sts>-<ordinal>`, created once. The kubelet
//!   backs each with a folder that survives pod restarts and goes away with the PVC object.
//!   `persistentVolumeClaimRetentionPolicy` is honoured: `whenDeleted: Delete` makes the
//!   StatefulSet the PVCs' owner (garbage-collected with it), `whenScaled: Delete` deletes a
//!   scaled-away ordinal's PVCs after its pod; `Retain` (default) keeps them.
//! - A template change is a new revision (hash of the template). With `RollingUpdate` (default),
//!   when every pod is Ready the highest-ordinal pod (at or above `partition`) still on the old
//!   revision is deleted and re-created from the new template; one pod at a time. `OnDelete`
//!   leaves old pods until someone deletes them.
//! - Failed or Succeeded pods are deleted so they are re-created.
//! - Orphaned pods named and labelled like the set's are adopted, and with `whenDeleted: Delete`
//!   the set's claims are made its dependents when they are not (a set deleted with
//!   `propagationPolicy: Orphan` and created anew gets its pods and claims back).
//! - status: replicas, readyReplicas, availableReplicas (no minReadySeconds), currentReplicas,
//!   updatedReplicas, currentRevision, updateRevision, observedGeneration.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::{Notify, watch};

use super::{
    LABEL_POD_INDEX, LABEL_POD_NAME, LABEL_REVISION_HASH, Result, SimConfig, SimError, emit,
    is_not_found, key_of, recorder, spawn_trigger, wait_next,
};

pub(crate) async fn run(client: Client, cfg: SimConfig, mut stop: watch::Receiver<bool>) {
    let notify = Arc::new(Notify::new());
    let rec = recorder(&client, "statefulset-controller");
    let triggers = [
        spawn_trigger::<StatefulSet>(client.clone(), notify.clone(), stop.clone()),
        spawn_trigger::<Pod>(client.clone(), notify.clone(), stop.clone()),
    ];
    loop {
        let started = std::time::Instant::now();
        if let Err(e) = reconcile_all(&client, &rec).await {
            tracing::warn!(error = %e, "statefulset controller pass failed");
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
    let sets = Api::<StatefulSet>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| SimError::kube("list", "StatefulSet", "all namespaces", e))?;
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| SimError::kube("list", "Pod", "all namespaces", e))?;
    for sts in &sets.items {
        if sts.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if let Err(e) = reconcile_one(client, rec, sts, &pods.items).await {
            tracing::warn!(statefulset = %key_of(sts), error = %e, "reconcile failed; retrying");
        }
    }
    Ok(())
}

/// Stable FNV-1a hash of the pod template: the revision name of a template.
pub fn template_revision(sts_name: &str, sts: &StatefulSet) -> String {
    let tmpl = sts.spec.as_ref().map(|s| &s.template);
    let text = serde_json::to_string(&tmpl).unwrap_or_default();
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{sts_name}-{:010x}", h & 0xff_ffff_ffff)
}

pub(crate) fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn ordinal_of(sts_name: &str, pod_name: &str) -> Option<u32> {
    pod_name
        .strip_prefix(sts_name)?
        .strip_prefix('-')?
        .parse()
        .ok()
}

/// The Pod the controller creates for `ordinal` (pure; unit-tested).
pub fn build_pod(sts: &StatefulSet, ordinal: u32, revision: &str) -> Pod {
    let name = sts.name_any();
    let spec = sts.spec.clone().unwrap_or_default();
    let pod_name = format!("{name}-{ordinal}");
    let tmeta = spec.template.metadata.clone().unwrap_or_default();
    let mut labels = tmeta.labels.clone().unwrap_or_default();
    labels.insert(LABEL_POD_NAME.into(), pod_name.clone());
    labels.insert(LABEL_POD_INDEX.into(), ordinal.to_string());
    labels.insert(LABEL_REVISION_HASH.into(), revision.to_string());
    let mut pspec = spec.template.spec.clone().unwrap_or_default();
    pspec.hostname = Some(pod_name.clone());
    if !spec.service_name.as_deref().unwrap_or_default().is_empty() {
        pspec.subdomain = spec.service_name.clone();
    }
    let mut volumes = pspec.volumes.take().unwrap_or_default();
    for claim in spec.volume_claim_templates.iter().flatten() {
        let claim_name = claim.name_any();
        volumes.retain(|v| v.name != claim_name);
        volumes.push(Volume {
            name: claim_name.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: format!("{claim_name}-{name}-{ordinal}"),
                read_only: None,
            }),
            ..Default::default()
        });
    }
    pspec.volumes = Some(volumes);
    Pod {
        metadata: ObjectMeta {
            name: Some(pod_name),
            namespace: sts.namespace(),
            labels: Some(labels),
            annotations: tmeta.annotations.clone(),
            owner_references: Some(vec![owner_ref(sts)]),
            ..Default::default()
        },
        spec: Some(pspec),
        status: None,
    }
}

fn owner_ref(sts: &StatefulSet) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: "StatefulSet".into(),
        name: sts.name_any(),
        uid: sts.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

async fn ensure_claims(client: &Client, sts: &StatefulSet, ordinal: u32) -> Result<()> {
    let ns = sts.namespace().unwrap_or_default();
    let name = sts.name_any();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let spec = sts.spec.as_ref();
    let match_labels = spec
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default();
    for claim in spec
        .and_then(|s| s.volume_claim_templates.as_ref())
        .into_iter()
        .flatten()
    {
        let claim_name = format!("{}-{name}-{ordinal}", claim.name_any());
        if api
            .get_opt(&claim_name)
            .await
            .map_err(|e| {
                SimError::kube(
                    "get",
                    "PersistentVolumeClaim",
                    format!("{ns}/{claim_name}"),
                    e,
                )
            })?
            .is_some()
        {
            continue;
        }
        let mut labels = claim.metadata.labels.clone().unwrap_or_default();
        labels.extend(match_labels.clone());
        let owned_by_set = spec
            .and_then(|s| s.persistent_volume_claim_retention_policy.as_ref())
            .and_then(|p| p.when_deleted.as_deref())
            == Some("Delete");
        let pvc = PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(claim_name.clone()),
                namespace: Some(ns.clone()),
                labels: Some(labels),
                annotations: claim.metadata.annotations.clone(),
                owner_references: owned_by_set.then(|| vec![owner_ref(sts)]),
                ..Default::default()
            },
            spec: claim.spec.clone(),
            status: None,
        };
        match api.create(&PostParams::default(), &pvc).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => {
                return Err(SimError::kube(
                    "create",
                    "PersistentVolumeClaim",
                    format!("{ns}/{claim_name}"),
                    e,
                ));
            }
        }
        // Bound at once: the kubelet provisions a folder for it when a pod mounts it.
        let capacity = claim
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage").cloned());
        let status = json!({"status": {"phase": "Bound", "accessModes": claim.spec.as_ref().and_then(|s| s.access_modes.clone()), "capacity": capacity.map(|c| json!({"storage": c}))}});
        if let Err(e) = api
            .patch_status(&claim_name, &PatchParams::default(), &Patch::Merge(&status))
            .await
        {
            tracing::debug!(pvc = %claim_name, error = %e, "could not mark PVC Bound");
        }
    }
    Ok(())
}

/// Deletes the PVCs of one ordinal (`whenScaled: Delete`); the kubelet removes their folders
/// once no broker uses them any more.
async fn delete_claims_of(client: &Client, sts: &StatefulSet, ordinal: u32) -> Result<()> {
    let ns = sts.namespace().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    for claim in sts
        .spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.as_ref())
        .into_iter()
        .flatten()
    {
        let claim_name = format!("{}-{}-{ordinal}", claim.name_any(), sts.name_any());
        match api.delete(&claim_name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                return Err(SimError::kube(
                    "delete",
                    "PersistentVolumeClaim",
                    format!("{ns}/{claim_name}"),
                    e,
                ));
            }
        }
    }
    Ok(())
}

async fn delete_pod(
    client: &Client,
    rec: &super::Events,
    sts: &StatefulSet,
    pod: &Pod,
    why: &str,
) -> Result<()> {
    let ns = pod.namespace().unwrap_or_default();
    tracing::info!(pod = %key_of(pod), why, "statefulset controller deletes pod");
    match Api::<Pod>::namespaced(client.clone(), &ns)
        .delete(&pod.name_any(), &DeleteParams::default())
        .await
    {
        Ok(_) => {
            let note = format!(
                "delete Pod {} in StatefulSet {} successful ({why})",
                pod.name_any(),
                sts.name_any()
            );
            emit(rec, sts, false, "SuccessfulDelete", "Delete", note).await;
            Ok(())
        }
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(SimError::kube("delete", "Pod", key_of(pod), e)),
    }
}

/// As the real controller does: pods named like this set's and matching its selector that no
/// controller owns (left by a StatefulSet deleted with `propagationPolicy: Orphan`) are adopted,
/// and with `whenDeleted: Delete` the set's claims that lack it get the set as owner (the real
/// controller keeps claims matching the retention policy). Adopted pods are seen on the next pass.
async fn adopt_orphans(client: &Client, sts: &StatefulSet, all_pods: &[Pod]) -> Result<()> {
    let name = sts.name_any();
    let ns = sts.namespace().unwrap_or_default();
    let uid = sts.uid().unwrap_or_default();
    let spec = sts.spec.clone().unwrap_or_default();
    let selector = spec.selector.match_labels.clone().unwrap_or_default();
    let matches = |labels: &BTreeMap<String, String>| {
        !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    };
    let no_controller = |refs: &[OwnerReference]| !refs.iter().any(|o| o.controller == Some(true));
    let adopt = json!({"metadata": {"ownerReferences": [owner_ref(sts)]}});
    for p in all_pods {
        if p.namespace().as_deref() != Some(ns.as_str())
            || ordinal_of(&name, &p.name_any()).is_none()
            || !no_controller(p.owner_references())
            || !matches(p.labels())
            || p.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        Api::<Pod>::namespaced(client.clone(), &ns)
            .patch(
                &p.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&adopt),
            )
            .await
            .map_err(|e| SimError::kube("adopt", "Pod", key_of(p), e))?;
        tracing::info!(pod = %key_of(p), statefulset = %name, "adopted orphaned pod");
    }
    let delete_with_set = spec
        .persistent_volume_claim_retention_policy
        .as_ref()
        .and_then(|p| p.when_deleted.as_deref())
        == Some("Delete");
    let templates: Vec<String> = spec
        .volume_claim_templates
        .iter()
        .flatten()
        .map(|c| c.name_any())
        .collect();
    if !delete_with_set || templates.is_empty() {
        return Ok(());
    }
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let listed = claims
        .list(&ListParams::default())
        .await
        .map_err(|e| SimError::kube("list", "PersistentVolumeClaim", ns.clone(), e))?;
    for c in listed.items {
        let cname = c.name_any();
        let ours = templates.iter().any(|t| {
            cname
                .strip_prefix(&format!("{t}-"))
                .and_then(|rest| ordinal_of(&name, rest))
                .is_some()
        });
        if !ours
            || c.owner_references().iter().any(|o| o.uid == uid)
            || !no_controller(c.owner_references())
        {
            continue;
        }
        claims
            .patch(&cname, &PatchParams::default(), &Patch::Merge(&adopt))
            .await
            .map_err(|e| {
                SimError::kube("adopt", "PersistentVolumeClaim", format!("{ns}/{cname}"), e)
            })?;
        tracing::info!(pvc = %format!("{ns}/{cname}"), statefulset = %name, "claim now owned by its StatefulSet (whenDeleted: Delete)");
    }
    Ok(())
}

async fn reconcile_one(
    client: &Client,
    rec: &super::Events,
    sts: &StatefulSet,
    all_pods: &[Pod],
) -> Result<()> {
    let name = sts.name_any();
    let ns = sts.namespace().unwrap_or_default();
    let uid = sts.uid().unwrap_or_default();
    let spec = sts.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1).max(0) as u32;
    let ordered = spec.pod_management_policy.as_deref() != Some("Parallel");
    let revision = template_revision(&name, sts);

    adopt_orphans(client, sts, all_pods).await?;
    let mut pods: BTreeMap<u32, &Pod> = BTreeMap::new();
    for p in all_pods {
        if p.namespace().as_deref() != Some(ns.as_str()) {
            continue;
        }
        let owned = p
            .owner_references()
            .iter()
            .any(|o| o.uid == uid && o.controller == Some(true));
        if let (true, Some(ord)) = (owned, ordinal_of(&name, &p.name_any())) {
            pods.insert(ord, p);
        }
    }
    let terminating = |p: &Pod| p.metadata.deletion_timestamp.is_some();
    let pod_revision = |p: &Pod| {
        p.labels()
            .get(LABEL_REVISION_HASH)
            .cloned()
            .unwrap_or_default()
    };

    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    'act: {
        // Failed/Succeeded pods are replaced.
        if let Some(p) = pods.values().find(|p| {
            !terminating(p)
                && matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Failed") | Some("Succeeded")
                )
        }) {
            delete_pod(client, rec, sts, p, "pod finished; it will be re-created").await?;
            break 'act;
        }
        // Scale down: highest ordinal first, one at a time.
        let extra: Vec<&&Pod> = pods.range(replicas..).map(|(_, p)| p).collect();
        if !extra.is_empty() {
            if extra.iter().any(|p| terminating(p)) {
                break 'act;
            }
            if let Some(p) = extra.last() {
                delete_pod(client, rec, sts, p, "scale down").await?;
                let delete_claims = spec
                    .persistent_volume_claim_retention_policy
                    .as_ref()
                    .and_then(|p| p.when_scaled.as_deref())
                    == Some("Delete");
                if let (true, Some(ord)) = (delete_claims, ordinal_of(&name, &p.name_any())) {
                    delete_claims_of(client, sts, ord).await?;
                }
            }
            break 'act;
        }
        // Scale up / re-create missing pods.
        let mut all_ready = true;
        for ord in 0..replicas {
            match pods.get(&ord) {
                None => {
                    ensure_claims(client, sts, ord).await?;
                    let pod = build_pod(sts, ord, &revision);
                    match api.create(&PostParams::default(), &pod).await {
                        Ok(_) => {
                            tracing::info!(pod = %format!("{ns}/{name}-{ord}"), "created pod");
                            let note =
                                format!("create Pod {name}-{ord} in StatefulSet {name} successful");
                            emit(rec, sts, false, "SuccessfulCreate", "Create", note).await;
                        }
                        Err(kube::Error::Api(s)) if s.code == 409 => {}
                        Err(e) => {
                            return Err(SimError::kube(
                                "create",
                                "Pod",
                                format!("{ns}/{name}-{ord}"),
                                e,
                            ));
                        }
                    }
                    all_ready = false;
                    if ordered {
                        break;
                    }
                }
                Some(p) if terminating(p) || !pod_ready(p) => {
                    all_ready = false;
                    if ordered {
                        break;
                    }
                }
                Some(_) => {}
            }
        }
        // Rolling update, one pod at a time, only when everything is Ready.
        let rolling = spec
            .update_strategy
            .as_ref()
            .and_then(|u| u.type_.as_deref())
            .unwrap_or("RollingUpdate")
            == "RollingUpdate";
        if all_ready && rolling {
            let partition = spec
                .update_strategy
                .as_ref()
                .and_then(|u| u.rolling_update.as_ref())
                .and_then(|r| r.partition)
                .unwrap_or(0)
                .max(0) as u32;
            if let Some((_, p)) = pods
                .range(partition..replicas)
                .rev()
                .find(|(_, p)| pod_revision(p) != revision)
            {
                delete_pod(client, rec, sts, p, "rolling update to new template").await?;
            }
        }
    }

    // Status, from the pods seen at the start of this pass (the next pass catches up).
    let live: Vec<&&Pod> = pods.values().filter(|p| !terminating(p)).collect();
    let ready = live.iter().filter(|p| pod_ready(p)).count() as i32;
    let updated = live.iter().filter(|p| pod_revision(p) == revision).count() as i32;
    let old_status = sts.status.clone().unwrap_or_default();
    let current_revision = if updated == replicas as i32 && live.len() == replicas as usize {
        revision.clone()
    } else {
        old_status
            .current_revision
            .clone()
            .unwrap_or_else(|| revision.clone())
    };
    let current = live
        .iter()
        .filter(|p| pod_revision(p) == current_revision)
        .count() as i32;
    let new_status = json!({
        "observedGeneration": sts.metadata.generation,
        "replicas": live.len() as i32,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "currentReplicas": current,
        "updatedReplicas": updated,
        "currentRevision": current_revision,
        "updateRevision": revision,
    });
    let old = json!({
        "observedGeneration": old_status.observed_generation,
        "replicas": old_status.replicas,
        "readyReplicas": old_status.ready_replicas.unwrap_or(0),
        "availableReplicas": old_status.available_replicas.unwrap_or(0),
        "currentReplicas": old_status.current_replicas.unwrap_or(0),
        "updatedReplicas": old_status.updated_replicas.unwrap_or(0),
        "currentRevision": old_status.current_revision,
        "updateRevision": old_status.update_revision,
    });
    if new_status != old {
        Api::<StatefulSet>::namespaced(client.clone(), &ns)
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({ "status": new_status })),
            )
            .await
            .map_err(|e| SimError::kube("update status of", "StatefulSet", key_of(sts), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sts() -> StatefulSet {
        serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "rmq", "namespace": "t", "uid": "u-1"},
            "spec": {
                "replicas": 2, "serviceName": "rmq-nodes",
                "selector": {"matchLabels": {"app": "rmq"}},
                "template": {"metadata": {"labels": {"app": "rmq"}},
                    "spec": {"containers": [{"name": "rabbitmq", "image": "rabbitmq:3.10"}],
                             "volumes": [{"name": "conf", "configMap": {"name": "rmq-conf"}}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "persistence"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]
            }
        }))
        .unwrap()
    }

    #[test]
    fn pod_gets_stable_name_labels_owner_and_claim() {
        let s = sts();
        let rev = template_revision("rmq", &s);
        let pod = build_pod(&s, 1, &rev);
        assert_eq!(pod.metadata.name.as_deref(), Some("rmq-1"));
        let labels = pod.metadata.labels.unwrap();
        assert_eq!(labels["app"], "rmq");
        assert_eq!(labels[LABEL_POD_NAME], "rmq-1");
        assert_eq!(labels[LABEL_REVISION_HASH], rev);
        let owner = &pod.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("StatefulSet", "u-1", Some(true))
        );
        let spec = pod.spec.unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("rmq-1"));
        assert_eq!(spec.subdomain.as_deref(), Some("rmq-nodes"));
        let vols = spec.volumes.unwrap();
        let claim = vols.iter().find(|v| v.name == "persistence").unwrap();
        assert_eq!(
            claim.persistent_volume_claim.as_ref().unwrap().claim_name,
            "persistence-rmq-1"
        );
        assert!(vols.iter().any(|v| v.name == "conf"));
    }

    #[test]
    fn revision_changes_with_template_only() {
        let a = sts();
        let mut b = sts();
        b.spec.as_mut().unwrap().replicas = Some(5);
        assert_eq!(template_revision("rmq", &a), template_revision("rmq", &b));
        b.spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .containers[0]
            .image = Some("rabbitmq:3.11".into());
        assert_ne!(template_revision("rmq", &a), template_revision("rmq", &b));
        assert_eq!(ordinal_of("rmq", "rmq-12"), Some(12));
        assert_eq!(ordinal_of("rmq", "rmq-x"), None);
        assert_eq!(ordinal_of("rmq", "rmqa-1"), None);
    }
}
