//! Direct messages (spec §4.6, §4.17 `dm.messages.search`). A non-participant, an unknown
//! channel or a space channel is 404; bots are refused by `UserAuth`.

use aide::axum::ApiRouter;
use aide::axum::routing::{get_with, patch_with, post_with};
use axum::extract::State;
use schemars::JsonSchema;
use serde::Deserialize;
use uuid::Uuid;

use crate::entities::channels::{self, ChannelUnread};
use crate::entities::messages::{
    self, MessageEditPayload, MessageExt, MessageListQuery, MessageSendPayload, SearchQuery,
};
use crate::entities::relations;
use crate::error::{Error, Result};
use crate::events::{Conversation, Event};
use crate::functions::ids::{ChannelId, UserId};
use crate::functions::time::Timestamp;
use crate::middlewares::auth::UserAuth;
use crate::middlewares::idempotency::IdempotencyKey;
use crate::middlewares::json::Json;
use crate::middlewares::path::{Path, Query};
use crate::middlewares::rate_limit::Limit;
use crate::routes::{RouterExt, doc};
use crate::services::messages as service;
use crate::state::AppState;

pub fn router() -> ApiRouter<AppState> {
    let op = |id, summary, limit| doc("DM", id, summary, limit);
    ApiRouter::new()
        .mikoto_route(
            "/dm/{channelId}/messages/",
            get_with(list, op("dm.messages.list", "List DM Messages", Limit::GENERAL))
                .post_with(create, op("dm.messages.create", "Send DM Message", Limit::MESSAGES)),
        )
        .mikoto_route(
            "/dm/{channelId}/messages/search",
            get_with(search, op("dm.messages.search", "Search DM Messages", Limit::GENERAL)),
        )
        .mikoto_route(
            "/dm/{channelId}/messages/{messageId}",
            patch_with(update, op("dm.messages.update", "Edit DM Message", Limit::GENERAL))
                .delete_with(delete, op("dm.messages.delete", "Delete DM Message", Limit::GENERAL)),
        )
        .mikoto_route(
            "/dm/unreads",
            get_with(unreads, op("dm.unreads", "List DM Unreads", Limit::GENERAL)),
        )
        .mikoto_route(
            "/dm/{channelId}/ack",
            post_with(acknowledge, op("dm.acknowledge", "Acknowledge DM", Limit::GENERAL)),
        )
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DmPath {
    pub channel_id: ChannelId,
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DmMessagePath {
    pub channel_id: ChannelId,
    pub message_id: Uuid,
}

/// The audience of a DM the caller participates in; 404 otherwise.
async fn participant(state: &AppState, channel: ChannelId, user: UserId) -> Result<Conversation> {
    let partner = relations::dm_partner(&state.db, channel, user)
        .await?
        .ok_or_else(Error::not_found)?;
    Ok(Conversation::Dm(user, partner))
}

async fn list(
    State(state): State<AppState>,
    auth: UserAuth,
    Path(p): Path<DmPath>,
    Query(q): Query<MessageListQuery>,
) -> Result<axum::Json<Vec<MessageExt>>> {
    participant(&state, p.channel_id, auth.user_id).await?;
    let mut conn = state.db.acquire().await?;
    let (page, limit) = service::page(&mut conn, p.channel_id, &q).await?;
    Ok(axum::Json(messages::list(&mut conn, p.channel_id, page, limit).await?))
}

async fn search(
    State(state): State<AppState>,
    auth: UserAuth,
    Path(p): Path<DmPath>,
    Query(q): Query<SearchQuery>,
) -> Result<axum::Json<Vec<MessageExt>>> {
    let (text, limit) = service::search_params(&q)?;
    participant(&state, p.channel_id, auth.user_id).await?;
    let mut conn = state.db.acquire().await?;
    Ok(axum::Json(
        messages::search(&mut conn, p.channel_id, &text, q.before, limit).await?,
    ))
}

async fn create(
    State(state): State<AppState>,
    auth: UserAuth,
    Path(p): Path<DmPath>,
    key: IdempotencyKey,
    Json(body): Json<MessageSendPayload>,
) -> Result<axum::Json<MessageExt>> {
    let audience = participant(&state, p.channel_id, auth.user_id).await?;
    Ok(axum::Json(
        service::send(
            state.outlets(),
            state.db.acquire().await?,
            auth.user_id,
            p.channel_id,
            audience,
            &body,
            key.0.as_deref(),
        )
        .await?,
    ))
}

async fn update(
    State(state): State<AppState>,
    auth: UserAuth,
    Path(p): Path<DmMessagePath>,
    Json(body): Json<MessageEditPayload>,
) -> Result<axum::Json<MessageExt>> {
    let audience = participant(&state, p.channel_id, auth.user_id).await?;
    Ok(axum::Json(
        service::edit(
            &state.db,
            &state.bus,
            auth.user_id,
            p.channel_id,
            p.message_id,
            audience,
            &body.content,
        )
        .await?,
    ))
}

async fn delete(State(state): State<AppState>, auth: UserAuth, Path(p): Path<DmMessagePath>) -> Result<axum::Json<()>> {
    let audience = participant(&state, p.channel_id, auth.user_id).await?;
    // Only the author may delete a DM message.
    service::remove(
        &state.db,
        &state.bus,
        auth.user_id,
        p.channel_id,
        p.message_id,
        audience,
        false,
    )
    .await?;
    Ok(axum::Json(()))
}

async fn unreads(State(state): State<AppState>, auth: UserAuth) -> Result<axum::Json<Vec<ChannelUnread>>> {
    Ok(axum::Json(relations::dm_unreads(&state.db, auth.user_id).await?))
}

async fn acknowledge(State(state): State<AppState>, auth: UserAuth, Path(p): Path<DmPath>) -> Result<axum::Json<()>> {
    participant(&state, p.channel_id, auth.user_id).await?;
    let marker = channels::acknowledge(&state.db, p.channel_id, auth.user_id, Timestamp::now()).await?;
    Event::UnreadUpdated(auth.user_id, &marker).publish(&state.bus).await;
    Ok(axum::Json(()))
}
