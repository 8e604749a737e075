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

/// Server-side apply `obj` (namespaced) and return what the server stored.
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
    if let Some(ours) = controller_uid(obj) {
        let existing = api
            .get_metadata_opt(&obj.name_any())
            .await
            .map_err(kube_err("get", describe(obj)))?;
        if let Some(existing) = existing {
            match controller(&existing) {
                Some(r) if r.uid == ours => {}
                theirs => return Err(not_owned(obj, theirs)),
            }
        }
    }
    api.patch(
        &obj.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map_err(kube_err("apply", describe(obj)))
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
