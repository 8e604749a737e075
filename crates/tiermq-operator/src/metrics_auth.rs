//! Authentication and authorization of `/metrics` requests (`--metrics-auth kubernetes`): the
//! caller's bearer token is checked with a TokenReview, and its user's right to `get` the
//! non-resource URL `/metrics` with a SubjectAccessReview — what kube-rbac-proxy and
//! controller-runtime's metrics filter do. A scraper's ServiceAccount then needs a ClusterRole
//! with `nonResourceURLs: ["/metrics"]`, `verbs: ["get"]`; the operator needs `create` on
//! `tokenreviews` and `subjectaccessreviews` (the chart grants both only with this setting).
//!
//! Decisions are kept for [`CACHE_FOR`] per token, so a scrape every few seconds does not cost
//! two API requests each time. Tokens are held only in that cache and never logged.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

/// How long a decision about a token is reused.
pub const CACHE_FOR: Duration = Duration::from_secs(60);
/// Most tokens remembered; the cache is emptied when full.
const CACHE_MAX: usize = 1000;

/// What a request to `/metrics` gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Served.
    Allowed,
    /// 401: no bearer token, or one the API server does not accept.
    Unauthenticated,
    /// 403: the token's user may not `get /metrics`; the user's name.
    Forbidden(String),
}

/// Asks the API server about the bearer tokens of `/metrics` requests.
pub struct MetricsAuthenticator {
    client: kube::Client,
    cache: Mutex<HashMap<String, (Decision, Instant)>>,
}

impl MetricsAuthenticator {
    /// Reviews tokens through `client` (the operator's own identity).
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The decision for a request with this `Authorization` header; `Err` when the API server
    /// could not be asked (the request is then refused with 503, not cached).
    pub async fn decide(&self, authorization: Option<&str>) -> Result<Decision, String> {
        let Some(token) = authorization
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
        else {
            return Ok(Decision::Unauthenticated);
        };
        let now = Instant::now();
        if let Some((d, at)) = self.lock().get(token)
            && now.saturating_duration_since(*at) < CACHE_FOR
        {
            return Ok(d.clone());
        }
        let decision = self.ask(token).await?;
        let mut cache = self.lock();
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(token.to_string(), (decision.clone(), now));
        Ok(decision)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Decision, Instant)>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn ask(&self, token: &str) -> Result<Decision, String> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                ..TokenReviewSpec::default()
            },
            ..TokenReview::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| format!("TokenReview failed: {e}"))?;
        let status = reviewed.status.unwrap_or_default();
        let Some(user) = status.user.filter(|_| status.authenticated == Some(true)) else {
            return Ok(Decision::Unauthenticated);
        };
        let name = user.username.clone().unwrap_or_default();
        let sar = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username,
                groups: user.groups,
                uid: user.uid,
                extra: user.extra,
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some("/metrics".into()),
                    verb: Some("get".into()),
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let decided = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &sar)
            .await
            .map_err(|e| format!("SubjectAccessReview failed: {e}"))?;
        Ok(if decided.status.is_some_and(|s| s.allowed) {
            Decision::Allowed
        } else {
            Decision::Forbidden(name)
        })
    }
}
