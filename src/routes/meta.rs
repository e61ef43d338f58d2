//! Meta and operational endpoints (spec §4.1, §4.19): index, health, readiness, metrics, the API
//! reference page.

use aide::axum::ApiRouter;
use aide::axum::routing::get_with;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use schemars::JsonSchema;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorCode, Result};
use crate::functions::process_stats::ProcessStats;
use crate::middlewares::rate_limit::Limit;
use crate::routes::{RouterExt, limited};
use crate::state::AppState;

/// Client-facing meta operations (rate-limited like the rest of the API).
pub fn api_router() -> ApiRouter<AppState> {
    ApiRouter::new().mikoto_route(
        "/",
        get_with(index, |o| limited(o.id("index").summary("Index"), Limit::GENERAL)),
    )
}

/// Operational endpoints: not rate limited, not in the client API document.
pub fn ops_router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(super::docs::page())
}

#[derive(Serialize, JsonSchema)]
pub struct IndexResponse {
    pub name: String,
    pub version: String,
}

async fn index() -> axum::Json<IndexResponse> {
    axum::Json(IndexResponse {
        name: "alterego".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

#[derive(Serialize)]
struct Status {
    status: &'static str,
}

async fn healthz() -> axum::Json<Status> {
    axum::Json(Status { status: "ok" })
}

async fn readyz(State(state): State<AppState>) -> Result<axum::Json<Status>> {
    if state.is_draining() {
        return Err(Error::unavailable("This instance is shutting down"));
    }
    if sqlx::query("SELECT 1").execute(&state.db).await.is_err() {
        return Err(Error::unavailable("The database does not answer"));
    }
    if !state.bus.ping().await {
        return Err(Error::unavailable("Redis does not answer"));
    }
    Ok(axum::Json(Status { status: "ok" }))
}

/// Prometheus text: the recorder's metrics, then the process's. With `METRICS_TOKEN` set, only
/// for `Authorization: Bearer <token>` (401 otherwise): the page names routes, buckets and load.
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(token) = &state.config.metrics_token
        && !bearer_matches(&headers, token)
    {
        let mut res = Error::new(ErrorCode::Unauthorized, "/metrics requires the metrics token").into_response();
        res.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return res;
    }
    metrics::gauge!("alterego_db_pool_connections").set(f64::from(state.db.size()));
    metrics::gauge!("alterego_db_pool_idle_connections").set(state.db.num_idle() as f64);
    state.metrics.run_upkeep();
    let mut body = state.metrics.render();
    // A handful of small /proc reads; kept off the async workers all the same.
    if let Ok(process) = tokio::task::spawn_blocking(|| ProcessStats::read().render()).await {
        body.push_str(&process);
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
        .into_response()
}

/// Whether the request carries `Authorization: Bearer <token>`. The digests are compared, in
/// constant time, so neither the content nor the length of the token leaks through timing.
fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or_default();
    let digest = |s: &str| Sha256::digest(s.as_bytes());
    aws_lc_rs::constant_time::verify_slices_are_equal(&digest(presented), &digest(token)).is_ok()
}
