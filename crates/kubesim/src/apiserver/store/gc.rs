//! Owner-reference garbage collection, as kube-controller-manager's garbage collector does it:
//! orphaning (the `orphan` finalizer), foreground deletion (`foregroundDeletion`), background
//! deletion of dependents whose owners are all gone, and the end of terminating namespaces that
//! became empty. Runs inside the write that caused it, until nothing changes.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::delete::{Propagation, graceful_pod_seconds};
use super::{Key, State, WriteOpts, finalizers, meta_str, now_rfc3339, set_finalizers};
use crate::apiserver::error::ApiResult;
use crate::apiserver::registry::ResourceType;

fn owner_uids(o: &Value) -> Vec<String> {
    o["metadata"]["ownerReferences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["uid"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

impl State {
    /// `obj` names owners and none of them exists: a dependent for the collector. Checked after
    /// a create or an owner change, since a delete is what otherwise starts a collection. Each
    /// owner is looked up by its reference (kind, name, the dependent's namespace for a namespaced
    /// kind) and matched by uid, so a write costs no scan of the store; an owner of a kind not
    /// served counts as present, as the real collector leaves such dependents alone.
    pub(super) fn all_owners_gone(&self, obj: &Value) -> bool {
        let Some(refs) = obj["metadata"]["ownerReferences"].as_array() else {
            return false;
        };
        let ns = meta_str(obj, "namespace").unwrap_or_default();
        !refs.is_empty()
            && refs.iter().all(|r| {
                let api_version = r["apiVersion"].as_str().unwrap_or_default();
                let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
                let kind = r["kind"].as_str().unwrap_or_default();
                let Some(rt) = self
                    .registry
                    .types
                    .values()
                    .find(|rt| rt.group == group && rt.kind == kind)
                else {
                    return false;
                };
                let key: Key = (
                    rt.group.clone(),
                    rt.plural.clone(),
                    if rt.namespaced {
                        ns.to_string()
                    } else {
                        String::new()
                    },
                    r["name"].as_str().unwrap_or_default().to_string(),
                );
                self.objects
                    .get(&key)
                    .is_none_or(|o| meta_str(o, "uid") != r["uid"].as_str())
            })
    }

    /// Garbage collection until nothing changes: orphaning, foreground deletion, dependents of
    /// deleted owners, and terminating namespaces that became empty.
    pub(super) fn gc(&mut self) {
        for _round in 0..1000 {
            let uids: BTreeSet<String> = self
                .objects
                .values()
                .filter_map(|o| meta_str(o, "uid").map(str::to_string))
                .collect();
            let mut action: Option<(Key, &'static str)> = None;
            for (k, o) in &self.objects {
                let deleting = o["metadata"]["deletionTimestamp"].is_string();
                let fins = finalizers(o);
                let uid = meta_str(o, "uid").unwrap_or_default();
                if deleting && fins.iter().any(|f| f == "orphan") {
                    action = Some((k.clone(), "orphan"));
                    break;
                }
                if deleting && fins.iter().any(|f| f == "foregroundDeletion") {
                    let dependents: Vec<&Value> = self
                        .objects
                        .values()
                        .filter(|d| owner_uids(d).iter().any(|u| u == uid))
                        .collect();
                    if dependents
                        .iter()
                        .any(|d| d["metadata"]["deletionTimestamp"].is_null())
                    {
                        action = Some((k.clone(), "cascade"));
                        break;
                    }
                    if dependents.is_empty() {
                        action = Some((k.clone(), "unblock"));
                        break;
                    }
                }
                let owners = owner_uids(o);
                if !deleting && !owners.is_empty() && owners.iter().all(|u| !uids.contains(u)) {
                    action = Some((k.clone(), "collect"));
                    break;
                }
                if deleting
                    && k.0.is_empty()
                    && k.1 == "namespaces"
                    && fins.is_empty()
                    && !self.objects.keys().any(|m| m.2 == k.3)
                {
                    action = Some((k.clone(), "namespace"));
                    break;
                }
            }
            let Some((k, what)) = action else { return };
            let Some(rt) = self.rt_of(&k) else { return };
            let obj = self.objects.get(&k).cloned().expect("found above");
            let uid = meta_str(&obj, "uid").unwrap_or_default().to_string();
            match what {
                "orphan" => {
                    let deps: Vec<Key> = self
                        .objects
                        .iter()
                        .filter(|(_, d)| owner_uids(d).contains(&uid))
                        .map(|(k, _)| k.clone())
                        .collect();
                    for dk in deps {
                        if let (Some(drt), Some(mut d)) =
                            (self.rt_of(&dk), self.objects.get(&dk).cloned())
                        {
                            let refs: Vec<Value> = d["metadata"]["ownerReferences"]
                                .as_array()
                                .cloned()
                                .unwrap_or_default()
                                .into_iter()
                                .filter(|r| r["uid"] != uid.as_str())
                                .collect();
                            d["metadata"]["ownerReferences"] = json!(refs);
                            let old = self.objects.get(&dk).cloned().expect("exists");
                            let _ = self.commit_update(
                                &drt,
                                Self::ns_opt(&dk),
                                &dk.3,
                                old,
                                d,
                                &WriteOpts::default(),
                            );
                        }
                    }
                    self.drop_finalizer(&rt, &k, obj, "orphan");
                }
                "unblock" => self.drop_finalizer(&rt, &k, obj, "foregroundDeletion"),
                "cascade" => {
                    let deps: Vec<Key> = self
                        .objects
                        .iter()
                        .filter(|(_, d)| {
                            owner_uids(d).contains(&uid)
                                && d["metadata"]["deletionTimestamp"].is_null()
                        })
                        .map(|(k, _)| k.clone())
                        .collect();
                    for dk in deps {
                        if let Some(drt) = self.rt_of(&dk) {
                            let _ = self.delete_no_gc(&drt, &dk, Propagation::Background);
                        }
                    }
                }
                "collect" => {
                    let _ = self.delete_no_gc(&rt, &k, Propagation::Background);
                }
                "namespace" => {
                    self.rv += 1;
                    self.remove(&k, obj);
                }
                _ => return,
            }
        }
    }

    fn drop_finalizer(&mut self, rt: &ResourceType, k: &Key, obj: Value, fin: &str) {
        let mut new = obj.clone();
        let fins: Vec<String> = finalizers(&obj).into_iter().filter(|f| f != fin).collect();
        set_finalizers(&mut new, &fins);
        self.rv += 1;
        let graceful = obj["metadata"]["deletionGracePeriodSeconds"]
            .as_i64()
            .unwrap_or(0)
            > 0;
        if fins.is_empty() && !(k.0.is_empty() && k.1 == "namespaces") && !graceful {
            self.remove(k, new);
        } else {
            new["metadata"]["resourceVersion"] = json!(self.rv.to_string());
            self.objects.insert(k.clone(), new.clone());
            self.emit("MODIFIED", &rt.group, &rt.plural, &k.2, new);
        }
    }

    /// Deletion of a dependent from inside `gc` (which keeps looping itself).
    fn delete_no_gc(&mut self, rt: &ResourceType, k: &Key, policy: Propagation) -> ApiResult<()> {
        let Some(mut obj) = self.objects.get(k).cloned() else {
            return Ok(());
        };
        let mut fins = finalizers(&obj);
        if policy == Propagation::Foreground && !fins.iter().any(|f| f == "foregroundDeletion") {
            fins.push("foregroundDeletion".into());
        }
        self.rv += 1;
        if let Some(secs) = graceful_pod_seconds(rt, &obj, None).filter(|s| *s > 0) {
            let at = chrono::Utc::now() + chrono::Duration::seconds(secs);
            obj["metadata"]["deletionTimestamp"] =
                json!(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
            obj["metadata"]["deletionGracePeriodSeconds"] = json!(secs);
            set_finalizers(&mut obj, &fins);
            obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
            self.objects.insert(k.clone(), obj.clone());
            self.emit("MODIFIED", &rt.group, &rt.plural, &k.2, obj);
            return Ok(());
        }
        if fins.is_empty() {
            self.remove(k, obj);
        } else {
            set_finalizers(&mut obj, &fins);
            if obj["metadata"]["deletionTimestamp"].is_null() {
                obj["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
                obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            }
            obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
            self.objects.insert(k.clone(), obj.clone());
            self.emit("MODIFIED", &rt.group, &rt.plural, &k.2, obj);
        }
        Ok(())
    }
}
