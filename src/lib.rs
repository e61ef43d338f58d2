//! alterego: a wire-compatible, hardened Mikoto chat server in one binary.
//!
//! [`app`] is the whole HTTP surface; `main` and the integration tests both serve it.

pub mod collab;
pub mod config;
pub mod db;
pub mod embedded_postgres;
pub mod entities;
pub mod error;
pub mod events;
pub mod functions;
pub mod gateway;
pub mod import;
pub mod middlewares;
pub mod routes;
pub mod server;
pub mod services;
pub mod state;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::{from_fn, from_fn_with_state};
use tower::{Layer, ServiceBuilder};
use tower_http::normalize_path::{NormalizePath, NormalizePathLayer};
use tower_http::trace::TraceLayer;

use crate::middlewares::rate_limit::{Limiting, RouteLimits};
use crate::middlewares::request_id::RequestId;
use crate::middlewares::{access_log, client_ip, metrics, nul, rate_limit, request_id, security};
use crate::state::AppState;

/// The largest JSON body accepted (spec §2.5).
pub const JSON_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// The router with every layer, before trailing-slash normalisation.
pub fn router(state: AppState) -> Result<Router, RouterError> {
    let (api, doc) = routes::openapi();
    let mut doc = serde_json::to_value(&doc)?;
    // Every operation declares its rate limit; an operation without one stops the start here.
    let limits = Arc::new(RouteLimits::from_document(&doc)?);
    // Then the reference is finished (descriptions, errors, the routes served elsewhere).
    routes::reference::finish(&mut doc);
    let api = api.merge(routes::docs::api_json(serde_json::to_vec(&doc)?));
    let api = api.route_layer(from_fn_with_state(
        Limiting {
            state: state.clone(),
            routes: limits,
        },
        rate_limit::layer,
    ));

    Ok(Router::new()
        .merge(api)
        .merge(routes::meta::ops_router())
        .merge(routes::media::router(&state.config))
        .merge(routes::ws::router())
        .merge(routes::collab::router())
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(
            ServiceBuilder::new()
                .layer(from_fn(request_id::layer))
                .layer(from_fn_with_state(state.clone(), client_ip::layer))
                .layer(from_fn(access_log::layer))
                .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
                    // The route template, as in the access log: raw paths carry invite codes and
                    // query strings tokens (`/ws?token=`); neither is logged.
                    let id = req
                        .extensions()
                        .get::<RequestId>()
                        .map(|r| r.0.to_string())
                        .unwrap_or_default();
                    let route = access_log::route_of(req);
                    tracing::info_span!("request", method = %req.method(), route = %route, request_id = %id)
                }))
                .layer(from_fn_with_state(state.clone(), security::headers))
                .layer(security::cors(&state.config))
                .layer(from_fn(metrics::layer))
                .layer(from_fn(nul::layer))
                .layer(from_fn_with_state(state.clone(), security::timeout))
                .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT)),
        )
        .with_state(state))
}

/// Why the router could not be built (a bug in a route's declaration).
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("OpenAPI document: {0}")]
    Document(#[from] serde_json::Error),
    #[error(transparent)]
    RateLimit(#[from] rate_limit::DeclarationError),
}

/// The complete service: trailing slashes are trimmed before routing (spec §2.1).
pub fn app(state: AppState) -> Result<NormalizePath<Router>, RouterError> {
    Ok(NormalizePathLayer::trim_trailing_slash().layer(router(state)?))
}

/// Serves `app` on a bound listener until `shutdown` resolves, then drains (spec §8.6): the
/// instance turns unready, its sockets close and their sessions wait to be taken over, and only
/// then does the listener close and in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    spawn_janitor(state.clone());
    spawn_media_gc(state.clone());
    // Before the first request: events published from then on reach the adopted sessions.
    state.gateway.adopt_parked().await;
    let limits = connection_limits(&state.config);
    let draining = state.clone();
    let park = state.clone();
    let app = app(state).map_err(std::io::Error::other)?;
    let drained = async move {
        shutdown.await;
        draining.start_draining();
        // The listener stays open during the drain, so a load balancer's probe gets `/readyz`
        // 503 rather than a refused connection; `/ws` and `/collab` refuse new upgrades. Upgraded
        // connections are not held by the accept loop's graceful stop: the subsystems close them.
        tokio::join!(draining.collab.shutdown(), draining.gateway.shutdown());
    };
    server::run(listener, app, limits, drained).await;
    // Served nothing more from here on: what the drain left is parked for the next instance.
    park.gateway.park().await;
    Ok(())
}

/// The configured connection limits; without `MAX_CONNECTIONS`, the descriptor limit less what
/// the pool, Redis, S3, media files and logs need.
fn connection_limits(config: &config::Config) -> server::ConnectionLimits {
    let total = config.max_connections.unwrap_or_else(|| {
        let reserve = config.database_max_connections as u64 + 256;
        functions::process_stats::max_open_files()
            .map(|max| max.saturating_sub(reserve).max(64))
            .unwrap_or(65_536) as usize
    });
    server::ConnectionLimits {
        idle_timeout: config.http_idle_timeout,
        per_ip: config.max_connections_per_ip,
        total,
    }
}

/// Periodic clean-up of rows that can never be used again.
fn spawn_janitor(state: AppState) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tick.tick().await;
            let keep = Duration::from_secs(7 * 86_400);
            match entities::sessions::purge(&state.db, keep).await {
                Ok(n) if n > 0 => tracing::info!(sessions = n, "purged dead auth sessions"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "session purge failed"),
            }
            if let Err(e) = entities::password_resets::purge_expired(&state.db).await {
                tracing::warn!(error = %e, "reset-token purge failed");
            }
            if let Err(e) = entities::handles::purge_expired_challenges(&state.db).await {
                tracing::warn!(error = %e, "handle-challenge purge failed");
            }
        }
    });
}

/// Hourly garbage collection of uploads still unclaimed `MEDIA_GC_GRACE` after upload (spec §10.8).
fn spawn_media_gc(state: AppState) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tick.tick().await;
            match entities::media::collect_garbage(&state.db, &state.media, state.config.media_gc_grace).await {
                Ok(r) if r.deleted > 0 || r.failed > 0 => {
                    tracing::info!(deleted = r.deleted, failed = r.failed, "media garbage collected")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "media garbage collection failed"),
            }
        }
    });
}
