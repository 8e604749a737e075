//! The create-only review resources, answered at once and never stored:
//!
//! - SelfSubjectAccessReview (`kubectl auth can-i VERB RESOURCE`, with `--subresource`, a
//!   resource name, a non-resource URL, `--as`): RBAC's decision for the requesting user;
//! - SelfSubjectRulesReview (`kubectl auth can-i --list`): every rule bound to the user in a
//!   namespace;
//! - SubjectAccessReview: the decision for any user and groups given in the spec;
//! - SelfSubjectReview (`kubectl auth whoami`): who the request authenticated as;
//! - TokenReview: who a bearer token (one this server issued) authenticates as, as a workload
//!   that authenticates its own clients asks (e.g. the operator's `/metrics`). Only the API
//!   server's own audience is served: a review asking for other audiences is unauthenticated.
//!
//! kubectl sends these as protobuf (see `authproto`); JSON and YAML are read too.

use axum::body::Bytes;
use axum::response::Response;
use http::{HeaderMap, Method, StatusCode, header};
use k8s_openapi::api::{authentication::v1 as authn_api, authorization::v1 as authz_api};
use serde_json::{Value, json};

use super::{App, json_response, parse_body};
use crate::apiserver::authn::UserInfo;
use crate::apiserver::error::{ApiError, ApiResult};
use crate::apiserver::rbac::{self, Attributes};
use crate::apiserver::registry::ResourceType;
use crate::apiserver::{authproto, store, table};

const AUTHZ: &str = "authorization.k8s.io";
const AUTHN: &str = "authentication.k8s.io";

/// Is this one of the review resources?
pub(super) fn is_review(rt: &ResourceType) -> bool {
    matches!(
        (rt.group.as_str(), rt.plural.as_str()),
        (
            AUTHZ,
            "selfsubjectaccessreviews" | "selfsubjectrulesreviews" | "subjectaccessreviews"
        ) | (AUTHN, "selfsubjectreviews" | "tokenreviews")
    )
}

fn review_type(
    group: &str,
    plural: &str,
    kind: &str,
    schema: crate::apiserver::registry::SchemaFn,
) -> ResourceType {
    ResourceType {
        group: group.into(),
        version: "v1".into(),
        plural: plural.into(),
        singular: kind.to_lowercase(),
        kind: kind.into(),
        namespaced: false,
        short_names: vec![],
        categories: vec![],
        status_subresource: false,
        scale: None,
        columns: table::builtin_columns(group, plural),
        schema_fn: Some(schema),
        crd: None,
    }
}

fn schema_of<T: schemars::JsonSchema>(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    g.subschema_for::<T>()
}

/// The review resources served besides SelfSubjectAccessReview (a built-in of the registry).
pub(crate) fn review_types() -> Vec<ResourceType> {
    vec![
        review_type(
            AUTHZ,
            "selfsubjectrulesreviews",
            "SelfSubjectRulesReview",
            schema_of::<authz_api::SelfSubjectRulesReview>,
        ),
        review_type(
            AUTHZ,
            "subjectaccessreviews",
            "SubjectAccessReview",
            schema_of::<authz_api::SubjectAccessReview>,
        ),
        review_type(
            AUTHN,
            "selfsubjectreviews",
            "SelfSubjectReview",
            schema_of::<authn_api::SelfSubjectReview>,
        ),
        review_type(
            AUTHN,
            "tokenreviews",
            "TokenReview",
            schema_of::<authn_api::TokenReview>,
        ),
    ]
}

/// Answers a review for `user` (the request's user, after impersonation).
pub(super) fn answer(
    app: &App,
    user: &UserInfo,
    rt: &ResourceType,
    method: &Method,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<Response> {
    if *method != Method::POST {
        return Err(ApiError::method_not_allowed(format!(
            "{} only support create",
            rt.plural
        )));
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let mut review = if ct.contains("protobuf") {
        authproto::decode(body).map_err(|why| ApiError::new(415, "UnsupportedMediaType", why))?
    } else {
        parse_body(body, ct)?
    };
    review["apiVersion"] = json!(rt.api_version());
    review["kind"] = json!(rt.kind);
    let spec = review["spec"].clone();
    let st = store::lock(&app.state);
    review["status"] = match rt.plural.as_str() {
        "selfsubjectaccessreviews" => decide(&st, &attributes(user, &spec)?),
        "subjectaccessreviews" => {
            let subject = subject(&spec)?;
            decide(&st, &attributes(&subject, &spec)?)
        }
        "selfsubjectrulesreviews" => {
            let ns = spec["namespace"].as_str().unwrap_or("");
            if ns.is_empty() {
                return Err(ApiError::invalid(
                    "SelfSubjectRulesReview",
                    "",
                    AUTHZ,
                    vec![("spec.namespace".into(), "Required value".into())],
                ));
            }
            rules_status(&st, user, ns)
        }
        "tokenreviews" => token_review(app, &st, &spec),
        _ => json!({"userInfo": user.to_json()}),
    };
    Ok(json_response(StatusCode::CREATED, &review))
}

/// The attributes a review's spec asks about, for `user`.
fn attributes(user: &UserInfo, spec: &Value) -> ApiResult<Attributes> {
    let s = |v: &Value, k: &str| v[k].as_str().unwrap_or("").to_string();
    let r = &spec["resourceAttributes"];
    let n = &spec["nonResourceAttributes"];
    match (r.is_object(), n.is_object()) {
        (true, false) => {
            let mut a = Attributes::resource(
                user,
                &s(r, "verb"),
                &s(r, "group"),
                &s(r, "resource"),
                &s(r, "namespace"),
                &s(r, "name"),
            )
            .with_subresource(&s(r, "subresource"));
            a.api_version = s(r, "version");
            Ok(a)
        }
        (false, true) => Ok(Attributes::non_resource(user, &s(n, "verb"), &s(n, "path"))),
        _ => Err(ApiError::invalid(
            "SelfSubjectAccessReview",
            "",
            AUTHZ,
            vec![(
                "spec.resourceAttributes".into(),
                "Invalid value: exactly one of nonResourceAttributes or resourceAttributes must be specified".into(),
            )],
        )),
    }
}

/// The user a SubjectAccessReview asks about.
/// A TokenReview's status: the token's user, or unauthenticated (never an error answer, as the
/// API server does).
fn token_review(app: &App, st: &store::State, spec: &Value) -> Value {
    let audiences: Vec<&str> = spec["audiences"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let own = crate::apiserver::authn::API_AUDIENCE;
    if audiences.iter().any(|a| *a != own) {
        return json!({"authenticated": false, "error": "token audiences are not served"});
    }
    let token = spec["token"].as_str().unwrap_or("");
    match app.auth.review_token(st, token) {
        Some(user) => json!({"authenticated": true, "user": user.to_json(), "audiences": [own]}),
        None => json!({"authenticated": false, "error": "invalid bearer token"}),
    }
}

fn subject(spec: &Value) -> ApiResult<UserInfo> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let user = UserInfo {
        username: spec["user"].as_str().unwrap_or("").into(),
        uid: spec["uid"].as_str().unwrap_or("").into(),
        groups: strings(&spec["groups"]),
        extra: spec["extra"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), strings(v))).collect())
            .unwrap_or_default(),
    };
    if user.username.is_empty() && user.groups.is_empty() {
        return Err(ApiError::invalid(
            "SubjectAccessReview",
            "",
            AUTHZ,
            vec![(
                "spec.user".into(),
                "Invalid value: \"\": at least one of user or group must be specified".into(),
            )],
        ));
    }
    Ok(user)
}

fn decide(st: &store::State, a: &Attributes) -> Value {
    match rbac::authorize(st, a) {
        rbac::Decision::Allow(reason) if reason.is_empty() => json!({"allowed": true}),
        rbac::Decision::Allow(reason) => json!({"allowed": true, "reason": reason}),
        rbac::Decision::Deny(reason) if reason.is_empty() => json!({"allowed": false}),
        rbac::Decision::Deny(reason) => json!({"allowed": false, "reason": reason}),
    }
}

fn rules_status(st: &store::State, user: &UserInfo, ns: &str) -> Value {
    let (mut rules, errors) = rbac::rules_for(st, user, ns);
    if user
        .groups
        .iter()
        .any(|g| g == crate::apiserver::authn::MASTERS)
    {
        rules.push(
            serde_json::from_value(json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}))
                .expect("a valid rule"),
        );
        rules.push(
            serde_json::from_value(json!({"nonResourceURLs": ["*"], "verbs": ["*"]}))
                .expect("a valid rule"),
        );
    }
    let mut resource_rules = vec![];
    let mut non_resource_rules = vec![];
    for r in rules {
        if r.resources.as_ref().is_some_and(|v| !v.is_empty()) {
            let mut rr = json!({"verbs": r.verbs, "apiGroups": r.api_groups.clone().unwrap_or_default(),
                "resources": r.resources.clone().unwrap_or_default()});
            if let Some(n) = r.resource_names.as_ref().filter(|n| !n.is_empty()) {
                rr["resourceNames"] = json!(n);
            }
            resource_rules.push(rr);
        }
        if let Some(urls) = r.non_resource_urls.as_ref().filter(|u| !u.is_empty()) {
            non_resource_rules.push(json!({"verbs": r.verbs, "nonResourceURLs": urls}));
        }
    }
    let mut status = json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules,
        "incomplete": false});
    if !errors.is_empty() {
        status["evaluationError"] = json!(errors.join(", "));
    }
    status
}
