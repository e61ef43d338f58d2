//! Web Push subscriptions (spec §4.7, §12.2).

use aide::axum::ApiRouter;
use aide::axum::routing::{get_with, post_with};
use axum::extract::State;
use schemars::JsonSchema;
use serde::Serialize;

use crate::entities::push_subscriptions::{self, SubscribePayload, SubscribeResponse, UnsubscribePayload};
use crate::error::{Error, ErrorCode, Result};
use crate::functions::webpush::Subscriber;
use crate::middlewares::auth::{OptionalAuth, UserAuth};
use crate::middlewares::json::Json;
use crate::middlewares::rate_limit::Limit;
use crate::routes::{RouterExt, doc};
use crate::services::push::Pusher;
use crate::state::AppState;

pub fn router() -> ApiRouter<AppState> {
    let op = |id, summary| doc("Push", id, summary, Limit::GENERAL);
    ApiRouter::new()
        .mikoto_route("/push/config", get_with(config, op("push.config", "Get Push Config")))
        .mikoto_route(
            "/push/subscribe",
            post_with(subscribe, op("push.subscribe", "Subscribe to Push")),
        )
        .mikoto_route(
            "/push/unsubscribe",
            post_with(unsubscribe, op("push.unsubscribe", "Unsubscribe from Push")),
        )
}

#[derive(Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PushConfig {
    /// Base64 URL-safe encoded VAPID public key for PushManager.subscribe(). Null when push is
    /// not configured on this server.
    pub public_key: Option<String>,
}

async fn config(State(state): State<AppState>, _: OptionalAuth) -> axum::Json<PushConfig> {
    axum::Json(PushConfig {
        public_key: state.push.as_ref().map(|p| p.public_key().to_string()),
    })
}

fn enabled(state: &AppState) -> Result<&Pusher> {
    state
        .push
        .as_ref()
        .ok_or_else(|| Error::new(ErrorCode::PushDisabled, "Web Push is not configured on this server"))
}

/// Keys are stored without padding, so the same subscription always compares equal.
fn canonical(key: &str) -> String {
    key.trim().trim_end_matches('=').to_string()
}

async fn subscribe(
    State(state): State<AppState>,
    auth: UserAuth,
    Json(body): Json<SubscribePayload>,
) -> Result<axum::Json<SubscribeResponse>> {
    let push = enabled(&state)?;
    Subscriber::decode(&body.p256dh, &body.auth).map_err(|e| Error::validation(e.field(), e.message()))?;
    push.network()
        .check(&body.endpoint)
        .await
        .map_err(|e| Error::validation("endpoint", e.to_string()))?;
    let mut tx = state.db.begin().await?;
    let id = push_subscriptions::subscribe(
        &mut tx,
        auth.user_id,
        &body.endpoint,
        &canonical(&body.p256dh),
        &canonical(&body.auth),
    )
    .await?;
    tx.commit().await?;
    Ok(axum::Json(SubscribeResponse { id }))
}

async fn unsubscribe(
    State(state): State<AppState>,
    auth: UserAuth,
    Json(body): Json<UnsubscribePayload>,
) -> Result<axum::Json<()>> {
    push_subscriptions::unsubscribe(&state.db, auth.user_id, &body.endpoint).await?;
    Ok(axum::Json(()))
}
