//! The media API (spec §10), served on the API's origin under `MEDIA_PREFIX`: plain axum routes
//! outside the OpenAPI document and outside the REST rate-limit layer. Uploads check the
//! `upload`/`upload-anonymous` buckets themselves (they are keyed by what the request carries and
//! charged in bytes); serving checks `media-resize` only when a new variant must be generated.

mod serve;
mod upload;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use serde::Serialize;

use crate::config::Config;
use crate::functions::media::{MULTIPART_OVERHEAD, Store};
use crate::state::AppState;

/// The media routes, mounted at `config.media_prefix`.
pub fn router(config: &Config) -> Router<AppState> {
    let prefix = config.media_prefix.trim_end_matches('/');
    let largest = Store::ALL
        .into_iter()
        .map(|s| s.max_bytes(config))
        .max()
        .unwrap_or(0)
        .saturating_add(MULTIPART_OVERHEAD);
    Router::new()
        .route(prefix, get(info))
        .route(&format!("{prefix}/default-avatar/{{id}}"), get(serve::default_avatar))
        .route(
            &format!("{prefix}/{{store}}"),
            post(upload::upload).get(upload::not_served),
        )
        .route(&format!("{prefix}/{{store}}/{{name}}"), get(serve::object))
        // The JSON limit of the rest of the API does not apply; the upload handler enforces
        // each store's own limit while it streams.
        .layer(DefaultBodyLimit::max(usize::try_from(largest).unwrap_or(usize::MAX)))
}

#[derive(Serialize)]
struct Info {
    name: &'static str,
    version: &'static str,
}

/// `GET {prefix}/`: parity with Mikoto's media server.
async fn info() -> axum::Json<Info> {
    axum::Json(Info {
        name: "media-server",
        version: env!("CARGO_PKG_VERSION"),
    })
}
