//! Response headers every client-facing response gets (spec §2.10): CORS, and the security
//! headers. A handler that sets its own `Content-Security-Policy` (docs, media) keeps it.

use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::{Config, CorsOrigins};
use crate::state::AppState;

pub const JSON_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

pub fn cors(config: &Config) -> CorsLayer {
    let origin = match &config.cors_origins {
        CorsOrigins::Any => AllowOrigin::any(),
        CorsOrigins::List(list) => AllowOrigin::list(list.iter().filter_map(|o| HeaderValue::from_str(o).ok())),
    };
    let names = |list: &[&'static str]| list.iter().map(|n| HeaderName::from_static(n)).collect::<Vec<_>>();
    CorsLayer::new()
        .allow_origin(origin)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers(names(&[
            "authorization",
            "content-type",
            "idempotency-key",
            "x-request-id",
        ]))
        .expose_headers(names(&[
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset-after",
            "x-ratelimit-bucket",
            "retry-after",
            "x-request-id",
        ]))
        .max_age(Duration::from_secs(3600))
}

pub async fn headers(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    if res.status() == StatusCode::SWITCHING_PROTOCOLS {
        return res;
    }
    let h = res.headers_mut();
    let mut set = |name: HeaderName, value: &'static str| {
        if !h.contains_key(&name) {
            h.insert(name, HeaderValue::from_static(value));
        }
    };
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::X_FRAME_OPTIONS, "DENY");
    set(header::REFERRER_POLICY, "strict-origin-when-cross-origin");
    set(header::CONTENT_SECURITY_POLICY, JSON_CSP);
    if state.config.is_production() {
        set(header::STRICT_TRANSPORT_SECURITY, "max-age=63072000");
    }
    res
}

/// Bounds every request's handling time. A request that takes longer gets a JSON 503 — or 408
/// `RequestTimeout` when its body had not fully arrived: then the client stalled, not the server.
/// Media uploads are exempt (see `functions::media::is_upload`).
pub async fn timeout(State(state): State<AppState>, req: Request, next: Next) -> Response {
    // Uploads may legitimately take longer; their handler bounds the time between chunks.
    if crate::functions::media::is_upload(&state.config.media_prefix, req.method().as_str(), req.uri().path()) {
        return next.run(req).await;
    }
    let has_body = req.headers().contains_key(header::TRANSFER_ENCODING)
        || req
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    let received = Arc::new(AtomicBool::new(!has_body));
    let req = if has_body {
        let flag = received.clone();
        req.map(|body| {
            use futures_util::StreamExt;
            let end = futures_util::stream::once(async move {
                flag.store(true, Ordering::SeqCst);
                None
            })
            .filter_map(|x: Option<Result<bytes::Bytes, axum::Error>>| async move { x });
            axum::body::Body::from_stream(body.into_data_stream().chain(end))
        })
    } else {
        req
    };
    match tokio::time::timeout(state.config.request_timeout, next.run(req)).await {
        Ok(res) => res,
        Err(_) if !received.load(Ordering::SeqCst) => {
            axum::response::IntoResponse::into_response(crate::error::Error::new(
                crate::error::ErrorCode::RequestTimeout,
                "The request body did not arrive in time",
            ))
        }
        Err(_) => axum::response::IntoResponse::into_response(crate::error::Error::unavailable(
            "The request took too long and was cancelled",
        )),
    }
}
