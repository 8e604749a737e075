//! events.k8s.io/v1 Events, served from the core v1 Events they are a view of (see
//! `apiserver::events` for the field mapping): request bodies, field selectors and JSON-patch
//! paths are turned into core form, the core resource is served, and answers are turned back.

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::response::Response;
use http::{HeaderMap, Method, header};
use serde_json::Value;

use super::watch::watch_response;
use super::{App, ResourcePath, View, resource};
use crate::apiserver::authn::UserInfo;
use crate::apiserver::error::{ApiError, ApiResult};
use crate::apiserver::events;
use crate::apiserver::registry::ResourceType;
use crate::apiserver::store;

/// Is this the events.k8s.io Event resource?
pub(super) fn is_events_view(rt: &ResourceType) -> bool {
    rt.group == "events.k8s.io" && rt.plural == "events"
}

/// Serves a request on events.k8s.io Events (`rt`) through the core Events.
#[allow(clippy::too_many_arguments)]
pub(super) async fn serve(
    app: &App,
    user: &UserInfo,
    method: &Method,
    path: &str,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
    rt: ResourceType,
    target: &ResourcePath<'_>,
    body: Bytes,
) -> ApiResult<Response> {
    let (ns, name, sub) = (target.namespace, target.name, target.subresource);
    let core = {
        let st = store::lock(&app.state);
        st.registry.get("", "v1", "events").cloned()
    }
    .ok_or_else(|| ApiError::internal("core events are not registered"))?;
    let body = events_body_to_core(headers, body)?;
    let mut params = params.clone();
    if let Some(fs) = params.get_mut("fieldSelector") {
        *fs = fs
            .split(',')
            .map(|p| events::path_to_core(p, '.'))
            .collect::<Vec<_>>()
            .join(",");
    }
    let watch = params.get("watch").is_some_and(|w| w == "true" || w == "1");
    if watch && *method == Method::GET {
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        return Ok(watch_response(
            app,
            core,
            ns.map(str::to_string),
            &params,
            View::of(accept),
            Some(rt),
        ));
    }
    let caller = resource::Caller {
        user,
        group: &rt.group,
    };
    let resp = resource::serve(
        app, &caller, method, path, &params, headers, core, ns, name, sub, body,
    )?;
    let (parts, b) = resp.into_parts();
    let bytes = axum::body::to_bytes(b, usize::MAX)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let converted = match serde_json::from_slice::<Value>(&bytes) {
        Ok(v) => Bytes::from(events::response_from_core(&v).to_string()),
        Err(_) => bytes,
    };
    Ok(Response::from_parts(parts, Body::from(converted)))
}

/// Request bodies for events.k8s.io in core form (objects and merge/apply patches have their
/// fields renamed, JSON patches their paths).
fn events_body_to_core(headers: &HeaderMap, body: Bytes) -> ApiResult<Bytes> {
    if body.is_empty() {
        return Ok(body);
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let parsed: Value = if ct.contains("yaml") {
        serde_yaml::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid YAML body: {e}")))?
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?
    };
    let converted = if ct.contains("json-patch") {
        let mut ops = parsed;
        if let Some(list) = ops.as_array_mut() {
            for op in list {
                for k in ["path", "from"] {
                    if let Some(p) = op[k].as_str() {
                        op[k] = Value::String(events::path_to_core(p, '/'));
                    }
                }
            }
        }
        ops
    } else {
        events::to_core(&parsed)
    };
    Ok(Bytes::from(converted.to_string()))
}
