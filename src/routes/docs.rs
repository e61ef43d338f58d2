//! The API reference: `/api.json` (the finished OpenAPI document) and `/docs` (Scalar, with its
//! JavaScript embedded in the binary). Both are built once, compressed (gzip/br) when the client
//! accepts it, and served with an `ETag` so a reload revalidates with a 304 instead of
//! re-downloading ~2.7 MB.

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tower_http::compression::CompressionLayer;

use crate::state::AppState;

/// The page's own CSP: its inline script and styles; it talks only to this origin.
const DOCS_CSP: &str = "default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; \
     connect-src 'self'; img-src 'self' data:; font-src 'self' data:; frame-ancestors 'none'";

/// A static body with its validator.
#[derive(Clone)]
struct Asset {
    body: Bytes,
    etag: HeaderValue,
    content_type: &'static str,
}

impl Asset {
    fn new(body: Vec<u8>, content_type: &'static str) -> Asset {
        let digest = Sha256::digest(&body);
        let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        Asset {
            etag: HeaderValue::from_str(&format!("\"{hex}\"")).unwrap_or(HeaderValue::from_static("\"0\"")),
            body: Bytes::from(body),
            content_type,
        }
    }

    fn serve(&self, headers: &HeaderMap, extra: &[(header::HeaderName, &'static str)]) -> Response {
        let fresh = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|t| t.trim() == self.etag.to_str().unwrap_or_default() || t.trim() == "*")
            });
        let mut res = if fresh {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            let mut res = self.body.clone().into_response();
            res.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(self.content_type));
            res
        };
        let h = res.headers_mut();
        h.insert(header::ETAG, self.etag.clone());
        // Cached, but revalidated on every use: a new deployment shows at once.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        for (name, value) in extra {
            h.insert(name.clone(), HeaderValue::from_static(value));
        }
        res
    }
}

/// `GET /api.json` (rate limited like other anonymous requests: merge it before that layer).
pub fn api_json(document: Vec<u8>) -> Router<AppState> {
    let asset = Arc::new(Asset::new(document, "application/json"));
    Router::new()
        .route(
            "/api.json",
            get(move |headers: HeaderMap| {
                let asset = asset.clone();
                async move { asset.serve(&headers, &[]) }
            }),
        )
        .layer(CompressionLayer::new())
}

/// `GET /docs` (and `/scalar`): the reference page. Scalar's default web fonts come from another
/// host, which the page's CSP forbids (14 console errors); they are turned off.
pub fn page() -> Router<AppState> {
    let html = aide::scalar::Scalar::new("/api.json")
        .with_title("alterego API")
        .html()
        .replacen("theme: 'purple',", "theme: 'purple', withDefaultFonts: false,", 1);
    let asset = Arc::new(Asset::new(html.into_bytes(), "text/html; charset=utf-8"));
    let handler = move |headers: HeaderMap| {
        let asset = asset.clone();
        async move { asset.serve(&headers, &[(header::CONTENT_SECURITY_POLICY, DOCS_CSP)]) }
    };
    Router::new()
        .route("/docs", get(handler.clone()))
        .route("/scalar", get(handler))
        .layer(CompressionLayer::new())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_page_loads_no_fonts_from_elsewhere() {
        let html = aide::scalar::Scalar::new("/api.json").html();
        assert!(
            html.contains("theme: 'purple',"),
            "the Scalar template changed: update page()"
        );
    }
}
