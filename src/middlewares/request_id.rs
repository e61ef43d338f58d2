//! Request ids (spec §2.6): every response carries `X-Request-Id` — the caller's if it is a UUID,
//! otherwise a new one — and a 500 body names it so a report can be matched to the logs.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use crate::error::{Error, ErrorCode, InternalErrorMarker};

pub const HEADER: &str = "x-request-id";

#[derive(Debug, Clone, Copy)]
pub struct RequestId(pub Uuid);

pub async fn layer(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Uuid::parse_str(v.trim()).ok())
        .unwrap_or_else(Uuid::now_v7);
    req.extensions_mut().insert(RequestId(id));
    let mut res = next.run(req).await;
    if res.extensions().get::<InternalErrorMarker>().is_some() {
        let mut e = Error::new(
            ErrorCode::InternalError,
            format!("Internal server error (request {id})"),
        );
        e.body.request_id = Some(id.to_string());
        let mut fresh = e.into_response();
        fresh.extensions_mut().remove::<InternalErrorMarker>();
        res = fresh;
    }
    if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
        res.headers_mut().insert(HEADER, v);
    }
    res
}
