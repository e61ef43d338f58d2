//! Meta and operational endpoints (spec §4.1, §4.19): index, health, readiness, metrics, the API
//! reference page.

use aide::axum::ApiRouter;
use aide::axum::routing::get_with;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use schemars::JsonSchema;
use serde::Serialize;

use crate::error::{Error, Result};
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

async fn metrics(State(state): State<AppState>) -> Response {
    metrics::gauge!("alterego_db_pool_connections").set(f64::from(state.db.size()));
    metrics::gauge!("alterego_db_pool_idle_connections").set(state.db.num_idle() as f64);
    state.metrics.run_upkeep();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(),
    )
        .into_response()
}
