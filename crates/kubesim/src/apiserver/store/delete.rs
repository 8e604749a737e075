//! DELETE: the propagation policy, finalizers and `deletionTimestamp`, graceful termination of
//! scheduled pods, marking a namespace Terminating, and removing an object for good (freeing its ClusterIP,
//! or taking a CRD's custom resources with it).

use serde_json::{Value, json};

use super::{Key, State, finalizers, meta_str, now_rfc3339, set_finalizers};
use crate::apiserver::error::{ApiError, ApiResult};
use crate::apiserver::registry::{self, ResourceType};

/// A deletion's `propagationPolicy`: what happens to the objects it owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// The owner goes now; the garbage collector deletes its dependents after it.
    Background,
    /// The owner stays (with the `foregroundDeletion` finalizer) until its dependents are gone.
    Foreground,
    /// The dependents stay, with the owner reference removed.
    Orphan,
}

/// The grace period a Pod deletion gets, for pods that terminate gracefully: scheduled
/// (`spec.nodeName` set) and not finished, as on the real server. None for anything else.
pub(super) fn graceful_pod_seconds(
    rt: &ResourceType,
    pod: &Value,
    requested: Option<i64>,
) -> Option<i64> {
    let scheduled = pod["spec"]["nodeName"]
        .as_str()
        .is_some_and(|n| !n.is_empty());
    let finished = matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    );
    let is_pod = rt.group.is_empty() && rt.plural == "pods";
    if !(is_pod && scheduled) || finished {
        return None;
    }
    Some(
        requested
            .or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_i64())
            .unwrap_or(30)
            .max(0),
    )
}

impl State {
    /// Drops an object from the store and tells watchers (rv already bumped by the caller).
    pub(super) fn remove(&mut self, key: &Key, mut last: Value) {
        self.objects.remove(key);
        if key.0.is_empty()
            && key.1 == "services"
            && let Some(ip) = last["spec"]["clusterIP"].as_str()
            && let Some(n) = self.ip_index(ip)
        {
            self.used_ips.remove(&n);
        }
        if key.0 == "apiextensions.k8s.io"
            && key.1 == "customresourcedefinitions"
            && let Ok(types) = registry::from_crd(&last)
        {
            let (g, p) = (types[0].group.clone(), types[0].plural.clone());
            // the custom resources go with their definition; watchers see them deleted
            let gone: Vec<Key> = self
                .objects
                .keys()
                .filter(|k| k.0 == g && k.1 == p)
                .cloned()
                .collect();
            for k in gone {
                if let Some(mut o) = self.objects.remove(&k) {
                    self.rv += 1;
                    o["metadata"]["resourceVersion"] = json!(self.rv.to_string());
                    self.emit("DELETED", &k.0, &k.1, &k.2, o);
                }
            }
            self.registry.remove_group_resource(&g, &p);
            self.rv += 1;
        }
        last["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.emit(
            "DELETED",
            &key.0.clone(),
            &key.1.clone(),
            &key.2.clone(),
            last,
        );
    }

    /// DELETE: starts or finishes deletion. Returns the object and whether it is gone.
    #[allow(clippy::too_many_arguments)]
    pub fn delete(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        policy: Propagation,
        precondition_uid: Option<&str>,
        dry_run: bool,
        grace: Option<i64>,
    ) -> ApiResult<(Value, bool)> {
        let mut obj = self.get(rt, ns, name)?;
        if rt.group.is_empty()
            && rt.plural == "namespaces"
            && matches!(name, "default" | "kube-system" | "kube-public")
        {
            return Err(ApiError::new(
                403,
                "Forbidden",
                format!("namespaces \"{name}\" is forbidden: this namespace may not be deleted"),
            ));
        }
        if let Some(uid) = precondition_uid
            && Some(uid) != meta_str(&obj, "uid")
        {
            return Err(ApiError::conflict(
                &rt.group,
                &rt.plural,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&obj, "uid").unwrap_or("")
                ),
            ));
        }
        if dry_run {
            return Ok((obj, false));
        }
        let key = Self::key(rt, ns, name);
        if rt.group.is_empty() && rt.plural == "namespaces" {
            // Its content goes a moment later (see `namespaces`).
            obj["status"]["phase"] = json!("Terminating");
        }
        let mut fins = finalizers(&obj);
        match policy {
            Propagation::Foreground if !fins.iter().any(|f| f == "foregroundDeletion") => {
                fins.push("foregroundDeletion".into())
            }
            Propagation::Orphan if !fins.iter().any(|f| f == "orphan") => {
                fins.push("orphan".into())
            }
            _ => {}
        }
        if let Some(secs) = graceful_pod_seconds(rt, &obj, grace) {
            if secs > 0 {
                // a scheduled pod terminates gracefully: it stays, marked, until its kubelet
                // confirms with grace period 0 (or a later delete shortens it to 0)
                if obj["metadata"]["deletionTimestamp"].is_null() {
                    let at = chrono::Utc::now() + chrono::Duration::seconds(secs);
                    obj["metadata"]["deletionTimestamp"] =
                        json!(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                    obj["metadata"]["deletionGracePeriodSeconds"] = json!(secs);
                }
                set_finalizers(&mut obj, &fins);
                if self.objects.get(&key) != Some(&obj) {
                    self.rv += 1;
                    obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
                    self.objects.insert(key.clone(), obj.clone());
                    self.emit("MODIFIED", &rt.group, &rt.plural, &key.2, obj.clone());
                }
                self.gc();
                return Ok((obj, false));
            }
            if obj["metadata"]["deletionTimestamp"].is_string() {
                obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            }
        }
        let namespace_busy = rt.group.is_empty()
            && rt.plural == "namespaces"
            && self.objects.keys().any(|k| k.2 == name);
        if fins.is_empty() && !namespace_busy {
            self.rv += 1;
            self.remove(&key, obj.clone());
            self.gc();
            return Ok((obj, true));
        }
        set_finalizers(&mut obj, &fins);
        if obj["metadata"]["deletionTimestamp"].is_null() {
            obj["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        }
        if self.objects.get(&key) != Some(&obj) {
            self.rv += 1;
            obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
            self.objects.insert(key.clone(), obj.clone());
            self.emit("MODIFIED", &rt.group, &rt.plural, &key.2, obj.clone());
        }
        self.gc();
        let gone = !self.objects.contains_key(&key);
        Ok((obj, gone))
    }
}
