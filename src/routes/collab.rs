//! `GET /collab/{channelId}?token=`: the upgrade into a document's collab room (spec §9.1).
//! Everything is checked before the upgrade and refused with a JSON error: the token, the
//! channel (a DOCUMENT channel of a space the caller can view), the `ws-connect` limit.

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::collab::connection::{self, Ticket};
use crate::entities::channels::{self, ChannelType};
use crate::error::{Error, ErrorCode};
use crate::functions::ids::ChannelId;
use crate::functions::permissions::Permissions;
use crate::functions::rate_limit::Bucket;
use crate::middlewares::client_ip::ClientIp;
use crate::services::access;
use crate::services::auth::Auth;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/collab/{channelId}", get(upgrade))
}

#[derive(Deserialize)]
struct CollabQuery {
    #[serde(default)]
    token: Option<String>,
}

async fn upgrade(
    State(state): State<AppState>,
    axum::extract::Path(raw): axum::extract::Path<String>,
    req: axum::extract::Request,
) -> Response {
    match authorize(&state, &raw, req).await {
        Ok((ws, ticket)) => {
            let collab = state.collab.clone();
            drop(state);
            ws.max_message_size(connection::MAX_FRAME)
                .max_frame_size(connection::MAX_FRAME)
                .on_upgrade(move |socket| connection::run(collab, socket, ticket))
        }
        Err(e) => e.into_response(),
    }
}

async fn authorize(
    state: &AppState,
    raw: &str,
    req: axum::extract::Request,
) -> Result<(WebSocketUpgrade, Ticket), Error> {
    let (mut parts, _body) = req.into_parts();
    if state.is_draining() || state.collab.is_draining() {
        return Err(Error::unavailable("This instance is shutting down"));
    }
    if state.config.rate_limits {
        let ip = ClientIp::of(&parts).0.to_string();
        let decision = state.limiter.check(Bucket::WsConnect, &ip, 1).await;
        if !decision.allowed {
            metrics::counter!("alterego_rate_limited_total", "bucket" => decision.bucket).increment(1);
            return Err(Error::rate_limited(decision.retry_after.as_secs_f64()));
        }
    }
    let token = Query::<CollabQuery>::try_from_uri(&parts.uri)
        .ok()
        .and_then(|q| q.0.token)
        .filter(|t| !t.is_empty())
        .ok_or_else(Error::unauthorized)?;
    let auth = Auth::verify(&state.jwt, &state.db, &state.sessions, &token).await?;
    let channel: ChannelId = raw
        .parse()
        .map_err(|_| Error::new(ErrorCode::InvalidPathParameter, "`channelId` must be a UUID"))?;
    let (space, kind) = channels::locate(&state.db, channel)
        .await?
        .and_then(|(space, kind)| space.map(|s| (s, kind)))
        .ok_or_else(Error::not_found)?;
    if kind != ChannelType::Document {
        return Err(Error::not_found());
    }
    let (_, perms) = access::channel(&state.db, space, channel, auth.user_id).await?;
    let ws = WebSocketUpgrade::from_request_parts(&mut parts, state)
        .await
        .map_err(|rejection| {
            Error::new(
                ErrorCode::ValidationFailed,
                format!("A WebSocket upgrade is required: {rejection}"),
            )
        })?;
    Ok((
        ws,
        Ticket {
            auth,
            space,
            channel,
            writer: perms.contains(Permissions::SEND_MESSAGES),
        },
    ))
}
