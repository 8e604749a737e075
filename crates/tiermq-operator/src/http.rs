//! `/metrics`, `/healthz` (the process is alive) and `/readyz` (this replica is either the leader
//! with its controllers running, or a healthy standby).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::metrics::Metrics;

/// What the handlers read; cloned into each request.
#[derive(Clone)]
pub struct HttpState {
    /// The registry `/metrics` encodes.
    pub metrics: Metrics,
    /// Set once the operator has connected to the API server and started (or stands by).
    pub ready: Arc<AtomicBool>,
}

/// The routes: `/metrics` (OpenMetrics text), `/healthz` (always 200) and `/readyz` (200 once
/// `ready` is set, 503 before).
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(
    State(s): State<HttpState>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

async fn readyz(State(s): State<HttpState>) -> (StatusCode, &'static str) {
    if s.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}
