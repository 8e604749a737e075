//! HTTP layer: one fallback handler that parses Kubernetes API paths and dispatches to the
//! store, plus watch streaming.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State as AxState};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode, Uri, header};
use serde_json::{Value, json};

use super::discovery;
use super::error::{ApiError, ApiResult};
use super::faults::FaultInjector;
use super::openapi;
use super::registry::ResourceType;
use super::selector::{FieldSelector, LabelSelector};
use super::store::{self, Propagation, State, WatchEvent, WriteOpts};
use super::table;

#[derive(Clone)]
pub struct App {
    pub state: Arc<Mutex<State>>,
    pub faults: FaultInjector,
    pub addr: String,
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn ok(v: &Value) -> Response {
    json_response(StatusCode::OK, v)
}

pub async fn handle(
    AxState(app): AxState<App>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let delay = app.faults.delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let params: HashMap<String, String> = Query::<HashMap<String, String>>::try_from_uri(&uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let path = uri.path().trim_end_matches('/').to_string();
    let result = route(&app, &method, &path, &params, &headers, body).await;
    match result {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%method, %path, code = e.code, "request failed: {}", e.message);
            e.into_response()
        }
    }
}

async fn route(
    app: &App,
    method: &Method,
    path: &str,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["version"] => return Ok(ok(&discovery::version())),
        ["healthz"] | ["readyz"] | ["livez"] => return Ok((StatusCode::OK, "ok").into_response()),
        ["api"] | ["apis"] if discovery::wants_aggregated(accept_of(headers)) => {
            let st = store::lock(&app.state);
            let doc = discovery::aggregated(&st.registry, segs[0] == "api");
            return Ok((
                StatusCode::OK,
                [(header::CONTENT_TYPE, discovery::AGGREGATED_V2)],
                doc.to_string(),
            )
                .into_response());
        }
        ["api"] => return Ok(ok(&discovery::api_versions(&app.addr))),
        ["apis"] => {
            let st = store::lock(&app.state);
            return Ok(ok(&discovery::api_group_list(&st.registry)));
        }
        ["openapi", "v3"] => {
            let st = store::lock(&app.state);
            return Ok(ok(&openapi::index(&st.registry)));
        }
        ["openapi", "v3", "api", v] => return openapi_doc(app, "", v),
        ["openapi", "v3", "apis", g, v] => return openapi_doc(app, g, v),
        ["apis", g] => {
            let st = store::lock(&app.state);
            return discovery::api_group(&st.registry, g)
                .map(|v| ok(&v))
                .ok_or_else(|| {
                    ApiError::new(
                        404,
                        "NotFound",
                        "the server could not find the requested resource",
                    )
                });
        }
        ["api", v] => return resource_list(app, "", v),
        ["apis", g, v] => return resource_list(app, g, v),
        _ => {}
    }
    let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", v, rest),
        ["apis", g, v, rest @ ..] => (g, v, rest),
        _ => {
            return Err(ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ));
        }
    };
    let (ns, plural, name, sub) = match rest {
        ["namespaces", n, "status" | "finalize"] => (None, "namespaces", Some(*n), Some(rest[2])),
        ["namespaces", ns, plural, tail @ ..] => (
            Some(*ns),
            *plural,
            tail.first().copied(),
            tail.get(1).copied(),
        ),
        [plural, tail @ ..] => (None, *plural, tail.first().copied(), tail.get(1).copied()),
        [] => {
            return Err(ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ));
        }
    };
    let rt = {
        let st = store::lock(&app.state);
        st.registry.get(group, version, plural).cloned()
    }
    .ok_or_else(|| {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    })?;
    // There is no authorization: every review says allowed (kubectl auth can-i, tools that
    // check their permissions first).
    if rt.group == "authorization.k8s.io" && rt.plural == "selfsubjectaccessreviews" {
        if *method != Method::POST {
            return Err(ApiError::method_not_allowed(
                "selfsubjectaccessreviews only support create",
            ));
        }
        // kubectl sends the review as protobuf; only the answer matters to it
        let ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json");
        let mut review = parse_body(&body, ct).unwrap_or_else(|_| json!({"spec": {}}));
        review["apiVersion"] = json!("authorization.k8s.io/v1");
        review["kind"] = json!("SelfSubjectAccessReview");
        review["status"] = json!({"allowed": true, "reason": "kubesim has no authorization: every request is allowed"});
        return Ok(json_response(StatusCode::CREATED, &review));
    }
    // events.k8s.io/v1 Events are served from the core Events (see `events`).
    if rt.group == "events.k8s.io" && rt.plural == "events" {
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
                .map(|p| super::events::path_to_core(p, '.'))
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
        let resp = serve_resource(
            app, method, path, &params, headers, core, ns, name, sub, body,
        )?;
        let (parts, b) = resp.into_parts();
        let bytes = axum::body::to_bytes(b, usize::MAX)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let converted = match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) => Bytes::from(super::events::response_from_core(&v).to_string()),
            Err(_) => bytes,
        };
        return Ok(Response::from_parts(parts, Body::from(converted)));
    }
    serve_resource(app, method, path, params, headers, rt, ns, name, sub, body)
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
                        op[k] = Value::String(super::events::path_to_core(p, '/'));
                    }
                }
            }
        }
        ops
    } else {
        super::events::to_core(&parsed)
    };
    Ok(Bytes::from(converted.to_string()))
}

#[allow(clippy::too_many_arguments)]
fn serve_resource(
    app: &App,
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
        return Err(ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ));
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
                .take_write_fault(&rt.group, &rt.plural, name.or(body_name.as_deref()))
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
    let mut response = dispatch(
        app,
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
    let unknown: Vec<String> = super::fields::unknown_fields(rt, &parsed)
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
            Ok(ok(&st.patch(
                &rt,
                ns_for_write,
                n,
                &content_type,
                &body,
                &opts,
            )?))
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

/// What a GET/list/watch answers with, from the Accept header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    Full,
    /// `meta.k8s.io/v1` Table (kubectl get).
    Table,
    /// PartialObjectMetadata(List) (kube-rs metadata_watcher, get_metadata).
    Meta,
}

impl View {
    fn of(accept: &str) -> View {
        if accept.contains("as=Table") {
            View::Table
        } else if accept.contains("as=PartialObjectMetadata") {
            View::Meta
        } else {
            View::Full
        }
    }
}

fn partial(o: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]})
}

fn accept_of(headers: &HeaderMap) -> &str {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
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

fn parse_body(body: &[u8], content_type: &str) -> ApiResult<Value> {
    if content_type.contains("protobuf") {
        return super::proto::decode(body)
            .map_err(|why| ApiError::new(415, "UnsupportedMediaType", why));
    }
    if content_type.contains("cbor") {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format ({content_type}) - accepted media types include: application/json, application/yaml"
            ),
        ));
    }
    if content_type.contains("yaml") {
        serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid YAML: {e}")))
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
    }
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
            super::merge::smp::strategic_merge(target, &p);
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

fn resource_list(app: &App, group: &str, version: &str) -> ApiResult<Response> {
    let st = store::lock(&app.state);
    discovery::resource_list(&st.registry, group, version)
        .map(|v| ok(&v))
        .ok_or_else(|| {
            ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
        })
}

fn openapi_doc(app: &App, group: &str, version: &str) -> ApiResult<Response> {
    let reg = store::lock(&app.state).registry.clone();
    openapi::document(&reg, group, version)
        .map(|v| ok(&v))
        .ok_or_else(|| {
            ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
        })
}

fn selectors(params: &HashMap<String, String>) -> ApiResult<(LabelSelector, FieldSelector)> {
    let labels = LabelSelector::parse(
        params
            .get("labelSelector")
            .map(String::as_str)
            .unwrap_or(""),
    )
    .map_err(|e| ApiError::bad_request(format!("invalid labelSelector: {e}")))?;
    let fields = FieldSelector::parse(
        params
            .get("fieldSelector")
            .map(String::as_str)
            .unwrap_or(""),
    )
    .map_err(|e| ApiError::bad_request(format!("invalid fieldSelector: {e}")))?;
    Ok((labels, fields))
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

fn event_line(type_: &str, object: Value) -> Bytes {
    let mut s = json!({"type": type_, "object": object}).to_string();
    s.push('\n');
    Bytes::from(s)
}

fn watch_response(
    app: &App,
    rt: ResourceType,
    ns: Option<String>,
    params: &HashMap<String, String>,
    view: View,
    alias: Option<ResourceType>,
) -> Response {
    let stream = watch_stream(app.clone(), rt, ns, params.clone(), view, alias);
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::TRANSFER_ENCODING, "chunked")
        .body(Body::from_stream(stream))
        .expect("static response parts are valid")
}

fn watch_stream(
    app: App,
    rt: ResourceType,
    ns: Option<String>,
    params: HashMap<String, String>,
    view: View,
    alias: Option<ResourceType>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    async_stream::stream! {
        let (labels, fields) = match selectors(&params) {
            Ok(s) => s,
            Err(e) => { yield Ok(event_line("ERROR", e.status_object())); return; }
        };
        let include = params.get("includeObject").cloned().unwrap_or_else(|| "Metadata".into());
        let bookmarks = params.get("allowWatchBookmarks").is_some_and(|b| b == "true");
        let send_initial = params.get("sendInitialEvents").is_some_and(|b| b == "true");
        let timeout = params.get("timeoutSeconds").and_then(|t| t.parse::<u64>().ok()).unwrap_or(1800);
        let since: Option<u64> = params.get("resourceVersion").filter(|r| !r.is_empty() && *r != "0").and_then(|r| r.parse().ok());
        let mut ender = app.faults.watch_ender();
        ender.borrow_and_update();
        // what the client asked for: the resource itself or the view it is served through
        let shown_as = alias.clone().unwrap_or_else(|| rt.clone());
        let shape = |o: &Value| -> Value {
            let mut o = o.clone();
            o["apiVersion"] = json!(shown_as.api_version());
            o["kind"] = json!(shown_as.kind);
            if alias.is_some() {
                o = super::events::from_core(&o);
            }
            if view == View::Meta {
                partial(&o)
            } else if view == View::Table {
                table::render(&shown_as.columns, &[o], &include, json!({}))
            } else { o }
        };
        let selected = |o: &Value| labels.matches(&o["metadata"]["labels"]) && fields.matches(o);
        // The event type this watch sees: objects entering or leaving the selection appear as
        // ADDED or DELETED, like on the real server.
        let seen_as = |ev: &WatchEvent| -> Option<&'static str> {
            if ev.group != rt.group || ev.plural != rt.plural || ns.as_deref().is_some_and(|n| ev.namespace != n) {
                return None;
            }
            let now = selected(&ev.object);
            let before = ev.old.as_ref().map(&selected).unwrap_or(now);
            match (ev.type_, before, now) {
                ("MODIFIED", false, true) => Some("ADDED"),
                ("MODIFIED", true, false) => Some("DELETED"),
                (t, _, true) => Some(t),
                _ => None,
            }
        };
        let subscribed = {
            let st = store::lock(&app.state);
            let rv = st.resource_version();
            match since {
                Some(s) if !send_initial => st.subscribe(s).map(|(past, rx)| (vec![], past, rx, rv)),
                _ => {
                    let initial = if since.is_none() || send_initial { st.list(&rt, ns.as_deref(), &labels, &fields) } else { vec![] };
                    st.subscribe(rv).map(|(past, rx)| (initial, past, rx, rv))
                }
            }
        };
        let (initial, past, mut rx, start_rv) = match subscribed {
            Ok(s) => s,
            Err(e) => { yield Ok(event_line("ERROR", e.status_object())); return; }
        };
        let mut last_rv = since.unwrap_or(start_rv);
        for o in initial {
            yield Ok(event_line("ADDED", shape(&o)));
        }
        if send_initial {
            yield Ok(event_line("BOOKMARK", json!({"kind": shown_as.kind, "apiVersion": shown_as.api_version(),
                "metadata": {"resourceVersion": start_rv.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}}})));
        }
        for ev in past {
            last_rv = ev.rv;
            if let Some(t) = seen_as(&ev) { yield Ok(event_line(t, shape(&ev.object))); }
        }
        let deadline = tokio::time::sleep(Duration::from_secs(timeout));
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        tick.tick().await;
        loop {
            tokio::select! {
                r = rx.recv() => match r {
                    Ok(ev) => {
                        if ev.rv <= last_rv { continue; }
                        last_rv = ev.rv;
                        if let Some(t) = seen_as(&ev) { yield Ok(event_line(t, shape(&ev.object))); }
                    }
                    // A lagging watcher is cut off; clients resume from their last version.
                    Err(_) => break,
                },
                _ = ender.changed() => break,
                _ = &mut deadline => break,
                _ = tick.tick(), if bookmarks => {
                    yield Ok(event_line("BOOKMARK", json!({"kind": shown_as.kind, "apiVersion": shown_as.api_version(),
                        "metadata": {"resourceVersion": last_rv.to_string()}})));
                }
            }
        }
    }
}
