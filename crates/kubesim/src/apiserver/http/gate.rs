//! What every request passes before it is served, in the real API server's order:
//! authentication (401 for a bad token), the client's injected faults (see `client_faults`),
//! impersonation, then RBAC authorization (403); and after it is served: one line in the
//! request log, and for watches a stream that breaks when a fault for its client starts.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, Method, Uri, header};

use super::App;
use crate::apiserver::audit::RequestRecord;
use crate::apiserver::authn::{Impersonation, UserInfo};
use crate::apiserver::client_faults::{ClientFaultMode, error_status};
use crate::apiserver::rbac::{self, Attributes};
use crate::apiserver::selector::FieldSelector;
use crate::apiserver::store;
use crate::apiserver::tls::Connection;

/// The request as the authorizer sees it (the real server's `RequestInfo`): resource requests
/// are `/api/{v}/...` and `/apis/{g}/{v}/...` with a resource; everything else (discovery,
/// OpenAPI, health, version) is a non-resource request on its path.
pub(super) fn request_attributes(
    user: &UserInfo,
    method: &Method,
    path: &str,
    params: &HashMap<String, String>,
) -> Attributes {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let http_verb = method.as_str().to_lowercase();
    let non_resource =
        || Attributes::non_resource(user, &http_verb, if path.is_empty() { "/" } else { path });
    let (group, version, mut rest): (&str, &str, &[&str]) = match segs.as_slice() {
        ["api", v, rest @ ..] if !rest.is_empty() => ("", v, rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (g, v, rest),
        _ => return non_resource(),
    };
    let verb = match *method {
        Method::POST => "create",
        Method::GET | Method::HEAD => "get",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => return non_resource(),
    };
    let mut namespace = "";
    if rest[0] == "namespaces" && rest.len() > 1 {
        namespace = rest[1];
        // `/namespaces/{ns}` and its status/finalize are the namespace object itself
        if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
            rest = &rest[2..];
        }
    }
    let mut a = Attributes::resource(
        user,
        verb,
        group,
        rest[0],
        namespace,
        rest.get(1).copied().unwrap_or(""),
    )
    .with_subresource(rest.get(2).copied().unwrap_or(""));
    a.api_version = version.to_string();
    if a.name.is_empty() && a.verb == "get" {
        let watch = params.get("watch").is_some_and(|w| w == "true" || w == "1");
        a.verb = if watch { "watch" } else { "list" }.into();
        // a list or watch of one name (`fieldSelector=metadata.name=x`) is about that name
        if let Some(sel) = params.get("fieldSelector")
            && let Ok(sel) = FieldSelector::parse(sel)
            && let Some((_, _, n)) = sel.0.iter().find(|(f, eq, _)| f == "metadata.name" && *eq)
        {
            a.name = n.clone();
        }
    }
    if a.name.is_empty() && a.verb == "delete" {
        a.verb = "deletecollection".into();
    }
    a
}

/// A request that passed the gate.
pub(super) struct Admitted {
    /// Who the request acts as (after impersonation).
    pub user: UserInfo,
    requester: UserInfo,
    attrs: Attributes,
    received: DateTime<Utc>,
    uri: String,
    user_agent: String,
    conn: Option<Arc<Connection>>,
}

/// Authenticates, applies the client's faults, impersonates and authorizes. `Err` is the
/// answer to send instead (already logged); a refused or hung request never completes (its
/// connection is reset).
pub(super) async fn admit(
    app: &App,
    conn: Option<Arc<Connection>>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<Admitted, Response> {
    let received = Utc::now();
    let path = uri.path().trim_end_matches('/');
    let authenticated = {
        let st = store::lock(&app.state);
        app.auth.authenticate(
            &st,
            headers,
            conn.as_ref().and_then(|c| c.peer_cert.as_deref()),
        )
    };
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut adm = Admitted {
        user: UserInfo::anonymous(),
        requester: UserInfo::anonymous(),
        attrs: request_attributes(&UserInfo::anonymous(), method, path, params),
        received,
        uri: uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default(),
        user_agent,
        conn,
    };
    let requester = match authenticated {
        Ok(u) => u,
        Err(e) => {
            log(app, &adm, e.code, None);
            return Err(e.into_response());
        }
    };
    adm.requester = requester.clone();
    adm.user = requester.clone();
    adm.attrs.user = requester.clone();
    if let Some(f) = app.client_faults.matching(&requester) {
        match f.mode {
            ClientFaultMode::Error(code) => {
                log(app, &adm, code, Some(f.mode));
                let mut r = error_status(code).into_response();
                if code == 429 {
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                }
                return Err(r);
            }
            ClientFaultMode::Refuse | ClientFaultMode::Hang => {
                log(app, &adm, 0, Some(f.mode));
                if f.mode == ClientFaultMode::Hang {
                    app.client_faults.wait_over(f.id).await;
                }
                return Err(cut(adm.conn.as_deref()).await);
            }
        }
    }
    let impersonation = match Impersonation::from_headers(headers) {
        Ok(i) => i,
        Err(e) => {
            log(app, &adm, e.code, None);
            return Err(e.into_response());
        }
    };
    let st = store::lock(&app.state);
    if let Some(imp) = impersonation {
        for check in imp.checks(&requester) {
            if let rbac::Decision::Deny(reason) = rbac::authorize(&st, &check) {
                let e = rbac::forbidden(&check, &reason);
                drop(st);
                log(app, &adm, e.code, None);
                return Err(e.into_response());
            }
        }
        adm.user = imp.user();
        adm.attrs.user = adm.user.clone();
    }
    if let rbac::Decision::Deny(reason) = rbac::authorize(&st, &adm.attrs) {
        let e = rbac::forbidden(&adm.attrs, &reason);
        drop(st);
        log(app, &adm, e.code, None);
        return Err(e.into_response());
    }
    Ok(adm)
}

/// Resets the connection and never answers (a 503 when there is no connection to reset).
async fn cut(conn: Option<&Connection>) -> Response {
    match conn {
        Some(c) => {
            c.reset();
            std::future::pending().await
        }
        None => error_status(503).into_response(),
    }
}

/// Logs the answer; a watch's stream is made to break when a fault for its client starts.
pub(super) fn finish(app: &App, adm: Admitted, resp: Response) -> Response {
    let code = resp.status().as_u16();
    log(app, &adm, code, None);
    if adm.attrs.verb == "watch" && resp.status().is_success() {
        return breakable_watch(app, adm, resp);
    }
    resp
}

fn breakable_watch(app: &App, adm: Admitted, resp: Response) -> Response {
    let faults = app.client_faults.clone();
    let mut changes = faults.subscribe();
    changes.borrow_and_update();
    let (parts, body) = resp.into_parts();
    let mut events = body.into_data_stream();
    let (requester, conn) = (adm.requester, adm.conn);
    let stream = async_stream::stream! {
        loop {
            tokio::select! {
                item = events.next() => match item {
                    Some(chunk) => yield chunk,
                    None => break,
                },
                r = changes.changed() => {
                    if r.is_err() {
                        break;
                    }
                    let Some(f) = faults.matching(&requester) else { continue };
                    match f.mode {
                        // the server ends the watch; the re-watch gets the error
                        ClientFaultMode::Error(_) => break,
                        ClientFaultMode::Refuse => {}
                        // silent until the window ends
                        ClientFaultMode::Hang => faults.wait_over(f.id).await,
                    }
                    match &conn {
                        Some(c) => {
                            c.reset();
                            std::future::pending::<()>().await;
                        }
                        None => break,
                    }
                }
            }
        }
    };
    Response::from_parts(parts, Body::from_stream(stream))
}

fn log(app: &App, adm: &Admitted, code: u16, fault: Option<ClientFaultMode>) {
    let a = &adm.attrs;
    let r = &adm.requester;
    app.requests.record(RequestRecord {
        time: adm.received,
        user: r.username.clone(),
        groups: r.groups.clone(),
        credential_id: r.credential_id().map(str::to_string),
        impersonated_user: (adm.user.username != r.username).then(|| adm.user.username.clone()),
        verb: a.verb.clone(),
        api_group: a.api_group.clone(),
        api_version: a.api_version.clone(),
        resource: a.resource.clone(),
        subresource: a.subresource.clone(),
        namespace: a.namespace.clone(),
        name: a.name.clone(),
        path: if a.resource_request {
            String::new()
        } else {
            a.path.clone()
        },
        uri: adm.uri.clone(),
        code,
        fault: fault.map(|f| f.name().to_string()),
        user_agent: adm.user_agent.clone(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(method: Method, uri: &str) -> Attributes {
        let uri: Uri = uri.parse().unwrap();
        let params: HashMap<String, String> =
            axum::extract::Query::<HashMap<String, String>>::try_from_uri(&uri)
                .map(|q| q.0)
                .unwrap_or_default();
        request_attributes(
            &UserInfo::anonymous(),
            &method,
            uri.path().trim_end_matches('/'),
            &params,
        )
    }

    fn short(a: &Attributes) -> (String, String, String, String, String, String) {
        (
            a.verb.clone(),
            a.api_group.clone(),
            a.resource.clone(),
            a.subresource.clone(),
            a.namespace.clone(),
            a.name.clone(),
        )
    }

    fn t(
        v: &str,
        g: &str,
        r: &str,
        s: &str,
        ns: &str,
        n: &str,
    ) -> (String, String, String, String, String, String) {
        (v.into(), g.into(), r.into(), s.into(), ns.into(), n.into())
    }

    #[test]
    fn verbs_and_attributes_are_those_of_the_real_request_info() {
        assert_eq!(
            short(&attrs(Method::GET, "/api/v1/namespaces/t/pods/x")),
            t("get", "", "pods", "", "t", "x")
        );
        assert_eq!(
            short(&attrs(Method::GET, "/api/v1/namespaces/t/pods")),
            t("list", "", "pods", "", "t", "")
        );
        assert_eq!(
            short(&attrs(Method::GET, "/api/v1/pods?watch=true")),
            t("watch", "", "pods", "", "", "")
        );
        assert_eq!(
            short(&attrs(
                Method::GET,
                "/apis/coordination.k8s.io/v1/namespaces/t/leases?watch=1&fieldSelector=metadata.name%3Dlead"
            )),
            t("watch", "coordination.k8s.io", "leases", "", "t", "lead")
        );
        assert_eq!(
            short(&attrs(
                Method::POST,
                "/apis/apps/v1/namespaces/t/statefulsets"
            )),
            t("create", "apps", "statefulsets", "", "t", "")
        );
        assert_eq!(
            short(&attrs(
                Method::PUT,
                "/apis/apps/v1/namespaces/t/statefulsets/web/scale"
            )),
            t("update", "apps", "statefulsets", "scale", "t", "web")
        );
        assert_eq!(
            short(&attrs(
                Method::PATCH,
                "/apis/x.io/v1/namespaces/t/things/a/status"
            )),
            t("patch", "x.io", "things", "status", "t", "a")
        );
        assert_eq!(
            short(&attrs(Method::DELETE, "/api/v1/namespaces/t/secrets")),
            t("deletecollection", "", "secrets", "", "t", "")
        );
        assert_eq!(
            short(&attrs(Method::DELETE, "/api/v1/namespaces/t/secrets/s")),
            t("delete", "", "secrets", "", "t", "s")
        );
        // the namespace object is in its own namespace
        assert_eq!(
            short(&attrs(Method::GET, "/api/v1/namespaces/t")),
            t("get", "", "namespaces", "", "t", "t")
        );
        assert_eq!(
            short(&attrs(Method::PUT, "/api/v1/namespaces/t/finalize")),
            t("update", "", "namespaces", "finalize", "t", "t")
        );
        assert_eq!(
            short(&attrs(Method::GET, "/api/v1/namespaces")),
            t("list", "", "namespaces", "", "", "")
        );
        assert_eq!(
            short(&attrs(
                Method::POST,
                "/api/v1/namespaces/t/serviceaccounts/op/token"
            )),
            t("create", "", "serviceaccounts", "token", "t", "op")
        );
        // discovery and the like are non-resource requests
        for p in [
            "/api",
            "/api/v1",
            "/apis/apps/v1",
            "/version",
            "/openapi/v3",
            "/healthz",
        ] {
            let a = attrs(Method::GET, p);
            assert!(!a.resource_request, "{p}");
            assert_eq!((a.verb.as_str(), a.path.as_str()), ("get", p));
        }
        assert_eq!(
            attrs(Method::POST, "/kubesim/v1/client-faults").verb,
            "post"
        );
    }
}
