//! The access log (docs/operations.md): one `info` event per request on the target
//! [`TARGET`], with the method, the matched route template, the status, the latency and the
//! request id. Never the raw path, the query string, headers or bodies: paths carry invite codes
//! and ids, query strings carry tokens (`/ws?token=`, `/collab/…?token=`).

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;

use crate::middlewares::request_id::RequestId;

/// The tracing target of access lines, so a filter can keep or drop them alone
/// (`RUST_LOG=info,alterego::access=off`).
pub const TARGET: &str = "alterego::access";

/// What requests that matched no route are logged and counted as.
pub const UNMATCHED: &str = "unmatched";

/// The route template the router matched (`/spaces/{spaceId}`), or [`UNMATCHED`].
pub fn route_of(req: &Request) -> &str {
    req.extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
        .unwrap_or(UNMATCHED)
}

pub async fn layer(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let route = route_of(&req).to_owned();
    // Set by the request-id layer, which runs outside this one.
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.to_string())
        .unwrap_or_default();
    let res = next.run(req).await;
    // Microsecond resolution is plenty and keeps the number short.
    let latency_ms = (start.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0;
    tracing::info!(
        target: TARGET,
        method = %method,
        route = %route,
        status = res.status().as_u16(),
        latency_ms,
        request_id = %request_id,
        "request"
    );
    res
}
