//! `GET /ws`: the upgrade into the real-time gateway (spec §7). Everything after the upgrade is
//! the `gateway` module's; this route checks the connect limit and draining first.

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::error::{Error, ErrorCode};
use crate::functions::rate_limit::Bucket;
use crate::gateway::{self, protocol};
use crate::middlewares::client_ip::ClientIp;
use crate::state::AppState;

/// `GET /ws`: a plain route (not in the REST rate-limit layer: it checks `ws-connect` itself).
pub fn router() -> Router<AppState> {
    Router::new().route("/ws", get(upgrade))
}

#[derive(Deserialize)]
struct WsQuery {
    #[serde(default)]
    token: Option<String>,
}

async fn upgrade(State(state): State<AppState>, req: axum::extract::Request) -> Response {
    let (mut parts, _body) = req.into_parts();
    if state.is_draining() || state.gateway.is_draining() {
        return Error::unavailable("This instance is shutting down").into_response();
    }
    // `RATE_LIMITS=off` (benchmarks) lifts the connect limit with the REST ones.
    if state.config.rate_limits {
        let ip = ClientIp::of(&parts).0.to_string();
        let decision = state.limiter.check(Bucket::WsConnect, &ip, 1).await;
        if !decision.allowed {
            metrics::counter!("alterego_rate_limited_total", "bucket" => decision.bucket).increment(1);
            let mut res = Error::rate_limited(decision.retry_after.as_secs_f64()).into_response();
            crate::middlewares::rate_limit::set_headers(res.headers_mut(), &decision);
            return res;
        }
    }
    let token = Query::<WsQuery>::try_from_uri(&parts.uri)
        .ok()
        .and_then(|q| q.0.token)
        .filter(|t| !t.is_empty());
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(ws) => ws,
        Err(rejection) => {
            return Error::new(
                ErrorCode::ValidationFailed,
                format!("A WebSocket upgrade is required: {rejection}"),
            )
            .into_response();
        }
    };
    let gateway = state.gateway.clone();
    drop(state);
    ws.read_buffer_size(gateway::READ_BUFFER)
        .write_buffer_size(gateway::WRITE_BUFFER)
        .max_message_size(protocol::MAX_INBOUND_FRAME)
        .max_frame_size(protocol::MAX_INBOUND_FRAME)
        .on_upgrade(move |socket| gateway.serve(socket, token))
}
