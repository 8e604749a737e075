//! The TokenRequest subresource `serviceaccounts/{name}/token` (`kubectl create token`): issues a
//! ServiceAccount token (see `authn`), validated like the real server: at least 10 minutes, at
//! most 2^32 seconds, default one hour; bound to a Pod or Secret of the same namespace if asked.

use axum::body::Bytes;
use axum::response::Response;
use http::{HeaderMap, Method, StatusCode, header};
use serde_json::{Value, json};

use super::{App, json_response};
use crate::apiserver::authn::{API_AUDIENCE, BoundObject, TokenSpec};
use crate::apiserver::error::{ApiError, ApiResult};
use crate::apiserver::registry::ResourceType;
use crate::apiserver::{authproto, store};

/// Is this a request on a ServiceAccount's `token` subresource?
pub(super) fn is_token_request(rt: &ResourceType, sub: Option<&str>) -> bool {
    rt.group.is_empty() && rt.plural == "serviceaccounts" && sub == Some("token")
}

/// Creates a token for ServiceAccount `ns/name`.
pub(super) fn create(
    app: &App,
    method: &Method,
    ns: &str,
    name: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<Response> {
    if *method != Method::POST {
        return Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        ));
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let req: Value = if ct.contains("protobuf") {
        authproto::decode(body).map_err(|why| ApiError::new(415, "UnsupportedMediaType", why))?
    } else {
        super::parse_body(body, ct)?
    };
    let spec = &req["spec"];
    let seconds = spec["expirationSeconds"].as_i64().unwrap_or(3600);
    let invalid = |msg: &str| {
        ApiError::invalid(
            "TokenRequest",
            name,
            "authentication.k8s.io",
            vec![(
                "spec.expirationSeconds".into(),
                format!("Invalid value: {seconds}: {msg}"),
            )],
        )
    };
    if seconds < 600 {
        return Err(invalid("may not specify a duration less than 10 minutes"));
    }
    if seconds > 1 << 32 {
        return Err(invalid(
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    let audiences: Vec<String> = spec["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let bound = spec["boundObjectRef"]
        .as_object()
        .filter(|b| !b.is_empty())
        .map(|b| BoundObject {
            kind: b.get("kind").and_then(Value::as_str).unwrap_or("").into(),
            name: b.get("name").and_then(Value::as_str).unwrap_or("").into(),
            uid: b.get("uid").and_then(Value::as_str).unwrap_or("").into(),
        });
    let token_spec = TokenSpec {
        audiences: audiences.clone(),
        lifetime: std::time::Duration::from_secs(seconds as u64),
        bound: bound.clone(),
    };
    let issued = {
        let st = store::lock(&app.state);
        app.auth.issue_token(&st, ns, name, &token_spec)?
    };
    let audiences = if audiences.is_empty() {
        vec![API_AUDIENCE.to_string()]
    } else {
        audiences
    };
    let bound_ref =
        bound.map(|b| json!({"kind": b.kind, "apiVersion": "v1", "name": b.name, "uid": b.uid}));
    Ok(json_response(
        StatusCode::CREATED,
        &json!({
            "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": null},
            "spec": {"audiences": audiences, "expirationSeconds": seconds, "boundObjectRef": bound_ref},
            "status": {"token": issued.token,
                "expirationTimestamp": issued.expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)},
        }),
    ))
}
