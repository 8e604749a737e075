//! The one place that writes Kubernetes objects. Server-side apply with one field manager, forced
//! because the operator owns every field it sets on its children — but only on objects it
//! controls: an existing object of the same name whose controller is another resource (or none)
//! is never taken over ([`Error::NotOwned`]).

use std::fmt::Debug;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result, kube_err};

/// The field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "tiermq-operator";

/// Parameters of the operator's merge patches (finalizers, status, routing): its field manager.
pub fn merge_patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    }
}

fn describe<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{} {}/{}",
        K::kind(&()),
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

/// The annotation holding a digest of the configuration the operator last applied to an object.
pub const ANNOTATION_APPLIED: &str = "tiermq.io/applied-digest";

/// Server-side apply `obj` (namespaced) and return what the server stored.
///
/// Unchanged objects are not written: when the live object carries the digest of this very
/// configuration ([`ANNOTATION_APPLIED`]) and still holds every field of it, the apply is skipped
/// and the live object returned. So a steady reconcile sends GETs only, and what the operator
/// stops setting is still removed (the configuration, and with it the digest, changed), while a
/// field someone else changed is set back (it no longer matches).
pub async fn apply<K>(client: &kube::Client, obj: &K) -> Result<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), &ns);
    let mut obj = obj.clone();
    let digest = format!("{:016x}", fnv1a(&serde_json::to_vec(&obj)?));
    obj.annotations_mut()
        .insert(ANNOTATION_APPLIED.into(), digest.clone());
    let existing = api
        .get_opt(&obj.name_any())
        .await
        .map_err(kube_err("get", describe(&obj)))?;
    if let Some(existing) = existing {
        if let Some(ours) = controller_uid(&obj) {
            match controller(&existing) {
                Some(r) if r.uid == ours => {}
                theirs => return Err(not_owned(&obj, theirs)),
            }
        }
        if existing.annotations().get(ANNOTATION_APPLIED) == Some(&digest)
            && contained(
                &serde_json::to_value(&obj)?,
                &serde_json::to_value(&existing)?,
            )
        {
            return Ok(existing);
        }
    }
    api.patch(
        &obj.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&obj),
    )
    .await
    .map_err(kube_err("apply", describe(&obj)))
}

/// 64-bit FNV-1a: a stable digest (the same on every build and platform), enough to notice a
/// changed configuration; not a security measure.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Whether `have` holds every field `want` sets, with the same value. Fields the server adds
/// (defaults, status, metadata) do not matter; a list must have the same items in the same
/// order; a field `want` leaves empty (null, `{}`, `[]`) may be absent.
fn contained(want: &serde_json::Value, have: &serde_json::Value) -> bool {
    use serde_json::Value;
    fn empty(v: &Value) -> bool {
        match v {
            Value::Null => true,
            Value::Object(m) => m.values().all(empty),
            Value::Array(a) => a.is_empty(),
            _ => false,
        }
    }
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => w.iter().all(|(k, v)| match h.get(k) {
            Some(hv) => contained(v, hv),
            None => empty(v),
        }),
        (Value::Array(w), Value::Array(h)) => {
            w.len() == h.len() && w.iter().zip(h).all(|(a, b)| contained(a, b))
        }
        (Value::Null, _) => true,
        (w, h) => w == h,
    }
}

/// Create `obj` unless an object of that name exists; never overwrite. Used for Secrets holding
/// generated values (Erlang cookie, admin and tenant passwords) that must never be regenerated.
/// Returns the stored object (the existing one if there was one).
pub async fn create_once<K>(client: &kube::Client, obj: &K) -> Result<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), &ns);
    if let Some(existing) = api
        .get_opt(&obj.name_any())
        .await
        .map_err(kube_err("get", describe(obj)))?
    {
        // A Secret without a controller is taken as the user's (restored from a backup); one
        // controlled by another resource is not ours to use.
        if let Some(ours) = controller_uid(obj) {
            match controller(&existing) {
                Some(r) if r.uid != ours => return Err(not_owned(obj, Some(r))),
                _ => {}
            }
        }
        return Ok(existing);
    }
    match api
        .create(
            &PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            },
            obj,
        )
        .await
    {
        Ok(created) => Ok(created),
        // Lost a race with another writer (or our own earlier, crashed attempt): keep theirs.
        Err(kube::Error::Api(s)) if s.code == 409 => api
            .get(&obj.name_any())
            .await
            .map_err(kube_err("get", describe(obj))),
        Err(e) => Err(kube_err("create", describe(obj))(e)),
    }
}

/// The UID of `obj`'s controller owner, as the builders set it.
fn controller_uid<K: Resource>(obj: &K) -> Option<String> {
    controller(obj).map(|r| r.uid.clone())
}

/// `obj`'s controller owner reference (at most one may have `controller: true`).
pub fn controller<K: Resource>(obj: &K) -> Option<&OwnerReference> {
    obj.owner_references()
        .iter()
        .find(|r| r.controller == Some(true))
}

fn not_owned<K: Resource<DynamicType = ()>>(obj: &K, theirs: Option<&OwnerReference>) -> Error {
    Error::NotOwned {
        object: describe(obj),
        controller: theirs
            .map(|r| format!("{} {}", r.kind, r.name))
            .unwrap_or_else(|| "no tiermq resource (it was made by someone else)".into()),
    }
}

/// Delete a namespaced object if it exists; a missing object is success (idempotent).
pub async fn delete_if_exists<K>(client: &kube::Client, namespace: &str, name: &str) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(kube_err(
            "delete",
            format!("{} {namespace}/{name}", K::kind(&())),
        )(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_additions_do_not_count_but_changed_or_missing_fields_and_items_do() {
        let want = json!({"spec": {"ports": [{"port": 5672, "name": "amqp"}], "selector": null,
                          "extra": {}}, "metadata": {"labels": {"a": "1"}}});
        let live = json!({"spec": {"ports": [{"port": 5672, "name": "amqp", "protocol": "TCP"}],
                          "clusterIP": "10.0.0.1"}, "metadata": {"labels": {"a": "1"}, "uid": "u"}});
        assert!(contained(&want, &live));
        let changed = json!({"spec": {"ports": [{"port": 5673, "name": "amqp"}]},
                             "metadata": {"labels": {"a": "1"}}});
        assert!(!contained(&changed, &live));
        let more = json!({"spec": {"ports": [{"port": 5672}, {"port": 5671}]}});
        assert!(!contained(&more, &live));
        let label = json!({"metadata": {"labels": {"b": "2"}}});
        assert!(!contained(&label, &live));
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    }
}
