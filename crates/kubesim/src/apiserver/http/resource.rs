//! Serving one resource: the checks every request on it passes (namespace scope, known
//! subresource, injected write faults, `fieldValidation`), then one arm per verb (get, list,
//! create, update, patch, delete, deletecollection; watches go to `watch`) calling the store.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::response::Response;
use http::{HeaderMap, Method, StatusCode, header};
use serde_json::{Value, json};

use super::watch::watch_response;
use super::{App, View, json_response, not_found, ok, parse_body, partial, selectors};
use crate::apiserver::authn::UserInfo;
use crate::apiserver::error::{ApiError, ApiResult};
use crate::apiserver::rbac::{self, Attributes};
use crate::apiserver::registry::ResourceType;
use crate::apiserver::selector::{FieldSelector, LabelSelector};
use crate::apiserver::store::{self, Propagation, WriteOpts};
use crate::apiserver::{fields, merge, table};

/// Who asks, and the API group they addressed (a view such as events.k8s.io Events is
/// authorized in its own group, not in the one it is stored in).
pub(super) struct Caller<'a> {
    /// The requester (after impersonation).
    pub user: &'a UserInfo,
    /// The API group of the request's path.
    pub group: &'a str,
}

/// Serves a request on resource `rt` (collection when `name` is None), after the checks every
/// request on a resource passes; `Warning` headers carry `fieldValidation=Warn` findings.
#[allow(clippy::too_many_arguments)]
pub(super) fn serve(
    app: &App,
    caller: &Caller<'_>,
    method: &Method,
    path: &str,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
    rt: ResourceType,
    ns: Option<&str>,
    name: Option<&str>,
    sub: Option<&str>,
    body: Bytes,
) -> ApiResult<Response> {
    if ns.is_some() && !rt.namespaced {
        return Err(not_found());
    }
    if let Some(s) = sub
        && !((s == "status" && rt.status_subresource) || (s == "scale" && rt.scale.is_some()))
    {
        return Err(ApiError::new(
            404,
            "NotFound",
            format!(
                "the server could not find the requested resource ({}/{s})",
                rt.plural
            ),
        ));
    }
    let is_write = matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    // a create names its object in the body
    let body_name: Option<String> = if *method == Method::POST {
        serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|b| b["metadata"]["name"].as_str().map(str::to_string))
    } else {
        None
    };
    if is_write
        && let Some(err) =
            app.faults
                .take_fault(false, &rt.group, &rt.plural, name.or(body_name.as_deref()))
    {
        return Err(err);
    }
    if *method == Method::GET
        && name.is_some()
        && let Some(err) = app.faults.take_fault(true, &rt.group, &rt.plural, name)
    {
        return Err(err);
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let view = View::of(accept);
    let manager = field_manager(params, headers);
    let dry_run = params.get("dryRun").is_some_and(|d| d == "All");
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let ns_for_write = if rt.namespaced {
        Some(ns.unwrap_or("default"))
    } else {
        None
    };
    let warnings = check_fields(&rt, method, sub, &content_type, &body, params)?;
    if matches!(*method, Method::POST | Method::PUT | Method::PATCH)
        && sub.is_none()
        && !content_type.contains("json-patch")
        && let Ok(obj) = parse_body(&body, &content_type)
    {
        super::owner_refs::check(app, caller.user, &rt, ns_for_write, path, &obj)?;
    }
    if is_write && sub.is_none() {
        let target = name.or(body_name.as_deref());
        admit_policies(
            app,
            caller.user,
            method,
            &rt,
            ns_for_write,
            target,
            (&content_type, &manager),
            &body,
        )?;
    }
    let mut response = dispatch(
        app,
        caller,
        method,
        path,
        params,
        &rt,
        (ns, ns_for_write, name, sub),
        &content_type,
        &manager,
        dry_run,
        view,
        body,
    )?;
    for w in warnings {
        if let Ok(v) = http::HeaderValue::from_str(&format!("299 - \"{}\"", w.replace('"', "\\\"")))
        {
            response.headers_mut().append(header::WARNING, v);
        }
    }
    Ok(response)
}

/// Runs the bound ValidatingAdmissionPolicies (see `vap`) on a write of `rt` named `name` in
/// `ns`: the object it would store comes from the same store call in dry-run mode.
#[allow(clippy::too_many_arguments)]
fn admit_policies(
    app: &App,
    user: &UserInfo,
    method: &Method,
    rt: &ResourceType,
    ns: Option<&str>,
    name: Option<&str>,
    (content_type, manager): (&str, &str),
    body: &Bytes,
) -> ApiResult<()> {
    let mut st = store::lock(&app.state);
    if !super::vap::any_binding(&st) {
        return Ok(());
    }
    // A create may name no object (generateName); a deletecollection names none either, and
    // its deletes are not checked one by one here.
    let name = match (name, method) {
        (Some(n), _) => n,
        (None, &Method::POST) => "",
        (None, _) => return Ok(()),
    };
    let old = (!name.is_empty())
        .then(|| st.get(rt, ns, name).ok())
        .flatten();
    let opts = WriteOpts {
        field_manager: manager.to_string(),
        dry_run: true,
        subresource: None,
        force: false,
    };
    let object = match *method {
        Method::DELETE => None,
        Method::POST => Some(st.create(rt, ns, parse_body(body, content_type)?, &opts)?),
        Method::PUT => Some(st.update(rt, ns, name, parse_body(body, content_type)?, &opts)?),
        _ => Some(st.patch(rt, ns, name, content_type, body, &opts)?),
    };
    let operation = match (method, &old) {
        (&Method::DELETE, _) => "DELETE",
        (_, Some(_)) => "UPDATE",
        (_, None) => "CREATE",
    };
    super::vap::check(
        &st,
        &super::vap::Write {
            operation,
            rt,
            namespace: ns.unwrap_or(""),
            name,
            user,
            object: object.as_ref(),
            old: old.as_ref(),
        },
    )
}

/// `fieldValidation`: Strict refuses unknown fields, Warn (the default) answers with
/// `Warning` headers, Ignore skips the check.
fn check_fields(
    rt: &ResourceType,
    method: &Method,
    sub: Option<&str>,
    content_type: &str,
    body: &[u8],
    params: &HashMap<String, String>,
) -> ApiResult<Vec<String>> {
    let mode = params
        .get("fieldValidation")
        .map(String::as_str)
        .unwrap_or("Warn");
    if mode == "Ignore"
        || sub == Some("scale")
        || !matches!(*method, Method::POST | Method::PUT | Method::PATCH)
    {
        return Ok(vec![]);
    }
    if content_type.contains("json-patch") || content_type.contains("protobuf") {
        return Ok(vec![]);
    }
    let parsed: Option<Value> = if content_type.contains("yaml") {
        serde_yaml::from_slice(body).ok()
    } else {
        serde_json::from_slice(body).ok()
    };
    let Some(parsed) = parsed else {
        return Ok(vec![]);
    };
    let unknown: Vec<String> = fields::unknown_fields(rt, &parsed)
        .into_iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    if unknown.is_empty() {
        return Ok(vec![]);
    }
    if mode == "Strict" {
        return Err(ApiError::bad_request(format!(
            "{kind} in version \"{v}\" cannot be handled as a {kind}: strict decoding error: {}",
            unknown.join(", "),
            kind = rt.kind,
            v = rt.version
        )));
    }
    Ok(unknown)
}

#[allow(clippy::too_many_arguments)]
fn dispatch(
    app: &App,
    caller: &Caller<'_>,
    method: &Method,
    path: &str,
    params: &HashMap<String, String>,
    rt: &ResourceType,
    (ns, ns_for_write, name, sub): (Option<&str>, Option<&str>, Option<&str>, Option<&str>),
    content_type: &str,
    manager: &str,
    dry_run: bool,
    view: View,
    body: Bytes,
) -> ApiResult<Response> {
    let (content_type, manager) = (content_type.to_string(), manager.to_string());
    let rt = rt.clone();
    match (method.clone(), name) {
        (Method::GET, None) => {
            let watch = params.get("watch").is_some_and(|w| w == "true" || w == "1");
            if watch {
                return Ok(watch_response(
                    app,
                    rt,
                    ns.map(str::to_string),
                    params,
                    view,
                    None,
                ));
            }
            list(app, &rt, ns, params, view)
        }
        (Method::GET, Some(n)) => {
            let st = store::lock(&app.state);
            if sub == Some("scale") {
                return Ok(ok(&st.get_scale(&rt, ns_for_write, n)?));
            }
            let obj = st.get(&rt, ns_for_write, n)?;
            if view == View::Meta && sub.is_none() {
                return Ok(ok(&partial(&obj)));
            }
            if view == View::Table && sub.is_none() {
                let t = table::render(
                    &rt.columns,
                    std::slice::from_ref(&obj),
                    params
                        .get("includeObject")
                        .map(String::as_str)
                        .unwrap_or("Metadata"),
                    json!({"resourceVersion": obj["metadata"]["resourceVersion"]}),
                );
                return Ok(ok(&t));
            }
            Ok(ok(&obj))
        }
        (Method::POST, None) => {
            let obj = parse_body(&body, &content_type)?;
            let mut st = store::lock(&app.state);
            let created = st.create(
                &rt,
                ns_for_write,
                obj,
                &WriteOpts {
                    field_manager: manager,
                    dry_run,
                    subresource: None,
                    force: false,
                },
            )?;
            Ok(json_response(StatusCode::CREATED, &created))
        }
        (Method::PUT, Some(n)) => {
            let obj = parse_body(&body, &content_type)?;
            let mut st = store::lock(&app.state);
            if sub == Some("scale") {
                return Ok(ok(&st.set_scale(&rt, ns_for_write, n, &obj, &manager)?));
            }
            let opts = WriteOpts {
                field_manager: manager,
                dry_run,
                subresource: sub.map(str::to_string),
                force: false,
            };
            Ok(ok(&st.update(&rt, ns_for_write, n, obj, &opts)?))
        }
        (Method::PATCH, Some(n)) => {
            let mut st = store::lock(&app.state);
            if sub == Some("scale") {
                let mut scale = st.get_scale(&rt, ns_for_write, n)?;
                patch_value(&mut scale, &content_type, &body)?;
                return Ok(ok(&st.set_scale(&rt, ns_for_write, n, &scale, &manager)?));
            }
            let force = params.get("force").is_some_and(|f| f == "true");
            let opts = WriteOpts {
                field_manager: manager,
                dry_run,
                subresource: sub.map(str::to_string),
                force,
            };
            // An apply that creates its object needs `create` as well, as on a real server
            // (which answers 201 then).
            let apply = content_type.starts_with("application/apply-patch");
            let creates = apply
                && sub.is_none()
                && matches!(st.get(&rt, ns_for_write, n), Err(e) if e.code == 404);
            if creates {
                let mut a = Attributes::resource(
                    caller.user,
                    "create",
                    caller.group,
                    &rt.plural,
                    ns_for_write.unwrap_or(""),
                    n,
                );
                a.api_version = rt.version.clone();
                if let rbac::Decision::Deny(reason) = rbac::authorize(&st, &a) {
                    return Err(rbac::forbidden(&a, &reason));
                }
            }
            let obj = st.patch(&rt, ns_for_write, n, &content_type, &body, &opts)?;
            let code = if creates {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(json_response(code, &obj))
        }
        (Method::DELETE, Some(n)) => {
            let opts: Value = if body.is_empty() {
                json!({})
            } else {
                serde_json::from_slice(&body).unwrap_or(json!({}))
            };
            let policy = params
                .get("propagationPolicy")
                .map(String::as_str)
                .or(opts["propagationPolicy"].as_str())
                .map(parse_policy)
                .transpose()?
                .unwrap_or(if opts["orphanDependents"].as_bool() == Some(true) {
                    Propagation::Orphan
                } else {
                    Propagation::Background
                });
            let dry = dry_run
                || opts["dryRun"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|d| d == "All"));
            let mut st = store::lock(&app.state);
            let (obj, gone) = st.delete(
                &rt,
                ns_for_write,
                n,
                policy,
                opts["preconditions"]["uid"].as_str(),
                dry,
                params
                    .get("gracePeriodSeconds")
                    .and_then(|g| g.parse().ok())
                    .or(opts["gracePeriodSeconds"].as_i64()),
            )?;
            if gone {
                Ok(ok(
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                    "details": {"name": n, "group": rt.group, "kind": rt.plural, "uid": obj["metadata"]["uid"]}}),
                ))
            } else {
                Ok(json_response(StatusCode::ACCEPTED, &obj))
            }
        }
        (Method::DELETE, None) => {
            let labels = LabelSelector::parse(
                params
                    .get("labelSelector")
                    .map(String::as_str)
                    .unwrap_or(""),
            )
            .map_err(ApiError::bad_request)?;
            let fields = FieldSelector::parse(
                params
                    .get("fieldSelector")
                    .map(String::as_str)
                    .unwrap_or(""),
            )
            .map_err(ApiError::bad_request)?;
            let mut st = store::lock(&app.state);
            let items = st.list(&rt, ns, &labels, &fields);
            for o in &items {
                let n = o["metadata"]["name"].as_str().unwrap_or_default();
                let _ = st.delete(
                    &rt,
                    ns_for_write,
                    n,
                    Propagation::Background,
                    None,
                    dry_run,
                    None,
                )?;
            }
            Ok(ok(
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
            ))
        }
        _ => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method} {path})"
        ))),
    }
}

fn parse_policy(p: &str) -> ApiResult<Propagation> {
    match p {
        "Background" => Ok(Propagation::Background),
        "Foreground" => Ok(Propagation::Foreground),
        "Orphan" => Ok(Propagation::Orphan),
        other => Err(ApiError::bad_request(format!(
            "unknown propagationPolicy {other:?}: use Background, Foreground or Orphan"
        ))),
    }
}

/// The field manager: `?fieldManager=`, else the User-Agent's program name, like the real server.
fn field_manager(params: &HashMap<String, String>, headers: &HeaderMap) -> String {
    if let Some(m) = params.get("fieldManager").filter(|m| !m.is_empty()) {
        return m.clone();
    }
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|ua| ua.split('/').next())
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown")
        .to_string()
}

/// Patches a plain value (used for the Scale view).
fn patch_value(target: &mut Value, content_type: &str, body: &[u8]) -> ApiResult<()> {
    let ct = content_type.split(';').next().unwrap_or("").trim();
    match ct {
        "application/json-patch+json" => {
            let p: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(target, &p).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the JSON patch could not be applied: {e}"),
                )
            })
        }
        "application/strategic-merge-patch+json" => {
            let p: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid patch: {e}")))?;
            merge::smp::strategic_merge(target, &p);
            Ok(())
        }
        "application/apply-patch+yaml" => {
            let p: Value = serde_yaml::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid apply patch: {e}")))?;
            json_patch::merge(target, &p);
            Ok(())
        }
        _ => {
            let p: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid merge patch: {e}")))?;
            json_patch::merge(target, &p);
            Ok(())
        }
    }
}

fn list(
    app: &App,
    rt: &ResourceType,
    ns: Option<&str>,
    params: &HashMap<String, String>,
    view: View,
) -> ApiResult<Response> {
    let (labels, fields) = selectors(params)?;
    let st = store::lock(&app.state);
    let items = st.list(rt, ns, &labels, &fields);
    let meta = json!({"resourceVersion": st.resource_version().to_string()});
    if view == View::Meta {
        let items: Vec<Value> = items.iter().map(partial).collect();
        return Ok(ok(
            &json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
            "metadata": meta, "items": items}),
        ));
    }
    if view == View::Table {
        let t = table::render(
            &rt.columns,
            &items,
            params
                .get("includeObject")
                .map(String::as_str)
                .unwrap_or("Metadata"),
            meta,
        );
        return Ok(ok(&t));
    }
    Ok(ok(
        &json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(), "metadata": meta, "items": items}),
    ))
}
