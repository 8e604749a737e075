//! The HTTP front of the API server: one fallback handler that takes every request through the
//! same steps, in this order:
//!
//! 1. [`handle`]: the injected delay (see `faults`), query parameters and the path, then the
//!    `gate`: authentication, the client's faults (`client_faults`), impersonation and RBAC
//!    authorization before serving, the request log after;
//! 2. `route`: kubesim's own endpoints (`admin`, under `/kubesim/`); a path under `/api/{v}/` or `/apis/{g}/{v}/` is parsed into a [`ResourcePath`]
//!    and its resource looked up in the registry; any other path is a non-resource request
//!    (`nonresource`: version, health, discovery, OpenAPI);
//! 3. serving the resource: the reviews (`access_review`), ServiceAccount tokens (`token`) and
//!    events.k8s.io Events (`events_view`, a view of core Events) have their own handlers;
//!    everything else goes through `resource` (write faults, field validation, one arm per verb)
//!    and `watch` (streams).

mod access_review;
mod admin;
mod events_view;
mod gate;
mod nonresource;
mod owner_refs;
pub(crate) mod pod_log;
mod resource;
mod token;
mod vap;
mod watch;

pub(crate) use access_review::review_types;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Query, State as AxState};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode, Uri, header};
use serde_json::{Value, json};

use super::audit::RequestLog;
use super::authn::{Authenticator, UserInfo};
use super::client_faults::ClientFaults;
use super::error::{ApiError, ApiResult};
use super::faults::FaultInjector;
use super::selector::{FieldSelector, LabelSelector};
use super::store::{self, State};
use super::tls::Connection;

/// What every request handler shares: the store, the fault injector and the server's address.
#[derive(Clone)]
pub struct App {
    /// The object store.
    pub state: Arc<Mutex<State>>,
    /// Faults tests inject (delays, failing writes, ending watches).
    pub faults: FaultInjector,
    /// `host:port` the server listens on, announced in discovery.
    pub addr: String,
    /// Who requests come from (client certificates, tokens).
    pub auth: Arc<Authenticator>,
    /// The request log.
    pub requests: Arc<RequestLog>,
    /// Faults injected for one client at a time.
    pub client_faults: ClientFaults,
    /// Where the kubelet writes container logs (`pods/{name}/log`); `None`: no logs.
    pub pod_logs: Option<std::path::PathBuf>,
}

/// The handler of every request: applies the injected delay, lets the request through the gate
/// (authentication, client faults, authorization), serves it, turns an error into its `Status`
/// answer and logs it.
pub async fn handle(
    AxState(app): AxState<App>,
    conn: Option<Extension<Arc<Connection>>>,
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
    let admitted =
        match gate::admit(&app, conn.map(|c| c.0), &method, &uri, &headers, &params).await {
            Ok(a) => a,
            Err(denied) => return denied,
        };
    let result = route(
        &app,
        &admitted.user,
        &method,
        &path,
        &params,
        &headers,
        body,
    )
    .await;
    let response = match result {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%method, %path, code = e.code, "request failed: {}", e.message);
            e.into_response()
        }
    };
    gate::finish(&app, admitted, response)
}

/// Resource or non-resource request, which resource, and who serves it.
async fn route(
    app: &App,
    user: &UserInfo,
    method: &Method,
    path: &str,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segs.first() == Some(&"kubesim") {
        return admin::serve(app, method, &segs, &body);
    }
    let Some(target) = ResourcePath::parse(&segs) else {
        return nonresource::serve(app, &segs, headers);
    };
    let rt = {
        let st = store::lock(&app.state);
        st.registry
            .get(target.group, target.version, target.plural)
            .cloned()
    }
    .ok_or_else(not_found)?;
    if access_review::is_review(&rt) {
        return access_review::answer(app, user, &rt, method, headers, &body);
    }
    if token::is_token_request(&rt, target.subresource)
        && let (Some(ns), Some(name)) = (target.namespace, target.name)
    {
        return token::create(app, method, ns, name, headers, &body);
    }
    if pod_log::is_pod_log(&rt.group, &rt.plural, target.subresource)
        && *method == Method::GET
        && let (Some(ns), Some(name)) = (target.namespace, target.name)
    {
        return pod_log::serve(app, ns, name, params);
    }
    if events_view::is_events_view(&rt) {
        return events_view::serve(app, user, method, path, params, headers, rt, &target, body)
            .await;
    }
    let caller = resource::Caller {
        user,
        group: &rt.group.clone(),
    };
    resource::serve(
        app,
        &caller,
        method,
        path,
        params,
        headers,
        rt,
        target.namespace,
        target.name,
        target.subresource,
        body,
    )
}

/// The path of a resource request: `/api/{version}/...` (core group) or
/// `/apis/{group}/{version}/...`, then `[namespaces/{namespace}/]{plural}[/{name}[/{sub}]]`.
/// A namespace's own subresources (`/api/v1/namespaces/{name}/status|finalize`) are the
/// cluster-scoped `namespaces` resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ResourcePath<'a> {
    group: &'a str,
    version: &'a str,
    namespace: Option<&'a str>,
    plural: &'a str,
    name: Option<&'a str>,
    subresource: Option<&'a str>,
}

impl<'a> ResourcePath<'a> {
    /// None for every path that does not name a resource (discovery, OpenAPI, health, unknown).
    fn parse(segs: &[&'a str]) -> Option<Self> {
        let (group, version, rest): (&str, &str, &[&str]) = match segs {
            ["api", v, rest @ ..] => ("", v, rest),
            ["apis", g, v, rest @ ..] => (g, v, rest),
            _ => return None,
        };
        let (namespace, plural, name, subresource) = match rest {
            ["namespaces", n, "status" | "finalize"] => {
                (None, "namespaces", Some(*n), Some(rest[2]))
            }
            ["namespaces", ns, plural, tail @ ..] => (
                Some(*ns),
                *plural,
                tail.first().copied(),
                tail.get(1).copied(),
            ),
            [plural, tail @ ..] => (None, *plural, tail.first().copied(), tail.get(1).copied()),
            [] => return None,
        };
        Some(ResourcePath {
            group,
            version,
            namespace,
            plural,
            name,
            subresource,
        })
    }
}

/// The 404 of a path or resource this server does not serve.
fn not_found() -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_paths_parse_like_the_real_server() {
        let segs = |p: &'static str| -> Vec<&'static str> {
            p.split('/').filter(|s| !s.is_empty()).collect()
        };
        let p = ResourcePath::parse(&segs("/apis/apps/v1/namespaces/t/statefulsets/web/scale"))
            .unwrap();
        assert_eq!(
            (
                p.group,
                p.version,
                p.namespace,
                p.plural,
                p.name,
                p.subresource
            ),
            (
                "apps",
                "v1",
                Some("t"),
                "statefulsets",
                Some("web"),
                Some("scale")
            )
        );
        let p = ResourcePath::parse(&segs("/api/v1/namespaces/t/status")).unwrap();
        assert_eq!(
            (p.namespace, p.plural, p.name, p.subresource),
            (None, "namespaces", Some("t"), Some("status"))
        );
        let p = ResourcePath::parse(&segs("/api/v1/namespaces")).unwrap();
        assert_eq!((p.namespace, p.plural, p.name), (None, "namespaces", None));
        for other in [
            "/api",
            "/api/v1",
            "/apis/apps",
            "/apis/apps/v1",
            "/version",
            "/openapi/v3",
        ] {
            assert_eq!(ResourcePath::parse(&segs(other)), None, "{other}");
        }
    }
}
