//! The `OwnerReferencesPermissionEnforcement` admission plugin, which real clusters enable: a
//! write that sets `blockOwnerDeletion: true` on an owner reference must come from a user who may
//! `update` the owner's `finalizers` subresource (otherwise that user could hold up the owner's
//! deletion). Refused writes get the real server's 403 wording.
//!
//! Each check is written to the request log as a record of its own (verb `update`, the owner's
//! resource, subresource `finalizers`, `uri` naming the plugin and the request), so tests that
//! compare granted RBAC rules with what was used see the permission being used.
//!
//! Simplification: the real plugin checks only references that are new or changed relative to
//! the stored object; kubesim checks every reference with `blockOwnerDeletion: true` in the
//! body, which is stricter for re-applies of unchanged references, never looser.

use chrono::Utc;
use serde_json::Value;

use super::App;
use crate::apiserver::audit::RequestRecord;
use crate::apiserver::authn::UserInfo;
use crate::apiserver::error::{ApiError, ApiResult};
use crate::apiserver::rbac::{self, Attributes};
use crate::apiserver::registry::ResourceType;
use crate::apiserver::store;

/// Checks the owner references of a create, update or patch body `obj` of resource `rt` in
/// namespace `ns` written by `user` (see the module docs).
pub(super) fn check(
    app: &App,
    user: &UserInfo,
    rt: &ResourceType,
    ns: Option<&str>,
    uri: &str,
    obj: &Value,
) -> ApiResult<()> {
    let Some(refs) = obj["metadata"]["ownerReferences"].as_array() else {
        return Ok(());
    };
    for r in refs {
        if r["blockOwnerDeletion"].as_bool() != Some(true) {
            continue;
        }
        let api_version = r["apiVersion"].as_str().unwrap_or("");
        let kind = r["kind"].as_str().unwrap_or("");
        let owner_name = r["name"].as_str().unwrap_or("");
        let group = api_version
            .split_once('/')
            .map_or("", |(g, _)| g)
            .to_string();
        let st = store::lock(&app.state);
        let owner = st
            .registry
            .types
            .values()
            .find(|t| t.group == group && t.kind == kind)
            .map(|t| (t.plural.clone(), t.namespaced));
        let Some((plural, namespaced)) = owner else {
            // The real plugin refuses references to kinds it cannot map to a resource.
            drop(st);
            return Err(refusal(rt, obj, "no mapping for the owner's kind"));
        };
        let owner_ns = if namespaced { ns.unwrap_or("") } else { "" };
        let attrs = Attributes::resource(user, "update", &group, &plural, owner_ns, owner_name)
            .with_subresource("finalizers");
        let decision = rbac::authorize(&st, &attrs);
        drop(st);
        let allowed = decision.allowed();
        app.requests.record(RequestRecord {
            time: Utc::now(),
            user: user.username.clone(),
            groups: user.groups.clone(),
            credential_id: user.credential_id().map(str::to_string),
            impersonated_user: None,
            verb: "update".into(),
            api_group: group.clone(),
            api_version: api_version
                .split_once('/')
                .map_or(api_version, |(_, v)| v)
                .into(),
            resource: plural,
            subresource: "finalizers".into(),
            namespace: owner_ns.into(),
            name: owner_name.into(),
            path: String::new(),
            uri: format!("admission OwnerReferencesPermissionEnforcement: {uri}"),
            code: if allowed { 200 } else { 403 },
            fault: None,
            user_agent: String::new(),
        });
        if !allowed {
            return Err(refusal(
                rt,
                obj,
                "cannot set blockOwnerDeletion if an ownerReference refers to a resource you \
                 can't set finalizers on: , <nil>",
            ));
        }
    }
    Ok(())
}

fn refusal(rt: &ResourceType, obj: &Value, why: &str) -> ApiError {
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    let qualified = if rt.group.is_empty() {
        rt.plural.clone()
    } else {
        format!("{}.{}", rt.plural, rt.group)
    };
    ApiError::new(
        403,
        "Forbidden",
        format!("{qualified} {name:?} is forbidden: {why}"),
    )
}
