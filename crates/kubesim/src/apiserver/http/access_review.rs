//! SelfSubjectAccessReview (`kubectl auth can-i`, and tools that check their permissions
//! first). kubesim does not authorize requests, so every review is answered "allowed".

use axum::body::Bytes;
use axum::response::Response;
use http::{HeaderMap, Method, StatusCode, header};
use serde_json::json;

use super::{json_response, parse_body};
use crate::apiserver::error::{ApiError, ApiResult};
use crate::apiserver::registry::ResourceType;

/// Is this the SelfSubjectAccessReview resource?
pub(super) fn is_review(rt: &ResourceType) -> bool {
    rt.group == "authorization.k8s.io" && rt.plural == "selfsubjectaccessreviews"
}

/// Answers a review: the request echoed back with `status.allowed: true`.
pub(super) fn answer(method: &Method, headers: &HeaderMap, body: &Bytes) -> ApiResult<Response> {
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
    let mut review = parse_body(body, ct).unwrap_or_else(|_| json!({"spec": {}}));
    review["apiVersion"] = json!("authorization.k8s.io/v1");
    review["kind"] = json!("SelfSubjectAccessReview");
    review["status"] = json!({"allowed": true, "reason": "kubesim has no authorization: every request is allowed"});
    Ok(json_response(StatusCode::CREATED, &review))
}
