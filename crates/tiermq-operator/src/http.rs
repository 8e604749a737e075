//! `/metrics`; `/healthz` (the controllers are not wedged, see [`crate::health`]) and `/readyz`
//! (this replica is either the leader with its controllers running, or a healthy standby).
//!
//! The probes and the metrics can listen on different addresses (`--probe-addr`), so that
//! `/metrics` can be bound to localhost (read through a sidecar such as kube-rbac-proxy) while
//! the kubelet still reaches the probes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::health::Health;
use crate::metrics::Metrics;
use crate::metrics_auth::{Decision, MetricsAuthenticator};

/// What the handlers read; cloned into each request.
#[derive(Clone)]
pub struct HttpState {
    /// The registry `/metrics` encodes.
    pub metrics: Metrics,
    /// Set once the operator has connected to the API server and started (or stands by).
    pub ready: Arc<AtomicBool>,
    /// Whether the controllers are wedged.
    pub health: Health,
    /// With `--metrics-auth kubernetes`: who may read `/metrics`.
    pub metrics_auth: Option<Arc<MetricsAuthenticator>>,
}

/// Every route: [`metrics_router`] and [`probe_router`] on one address.
pub fn router(state: HttpState) -> Router {
    metrics_router(state.clone()).merge(probe_router(state))
}

/// `/metrics` (OpenMetrics text); with [`HttpState::metrics_auth`] only for callers whose
/// bearer token may `get /metrics` (401 without a valid token, 403 without the right).
pub fn metrics_router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// `/healthz` (200, or 503 with the reason while the controllers are wedged) and `/readyz`
/// (200 once `ready` is set, 503 before).
pub fn probe_router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(s): State<HttpState>, headers: HeaderMap) -> Response {
    if let Some(auth) = &s.metrics_auth {
        let header = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match auth.decide(header).await {
            Ok(Decision::Allowed) => {}
            Ok(Decision::Unauthenticated) => {
                return (StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
            }
            Ok(Decision::Forbidden(user)) => {
                return (
                    StatusCode::FORBIDDEN,
                    format!("{user} may not get /metrics"),
                )
                    .into_response();
            }
            Err(why) => {
                tracing::warn!(%why, "cannot check a /metrics caller");
                return (StatusCode::SERVICE_UNAVAILABLE, why).into_response();
            }
        }
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

async fn healthz(State(s): State<HttpState>) -> (StatusCode, String) {
    match s.health.check(Instant::now()) {
        Ok(()) => (StatusCode::OK, "ok".into()),
        Err(why) => {
            tracing::warn!(%why, "unhealthy");
            (StatusCode::SERVICE_UNAVAILABLE, why)
        }
    }
}

async fn readyz(State(s): State<HttpState>) -> (StatusCode, &'static str) {
    if s.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}
