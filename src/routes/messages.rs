//! Messages in space channels (spec §4.10, §4.17 `messages.search`) and the sending, editing and
//! paging logic that DM messages share (§4.6).

use aide::axum::ApiRouter;
use aide::axum::routing::get_with;
use axum::extract::State;
use schemars::JsonSchema;
use serde::Deserialize;
use uuid::Uuid;

use crate::entities;
use crate::entities::channels::ChannelType;
use crate::entities::messages::{
    self, MessageEditPayload, MessageExt, MessageListQuery, MessageSendPayload, SearchQuery,
};
use crate::error::{Error, ErrorCode, Result};
use crate::events::Conversation;
use crate::functions::ids::{ChannelId, SpaceId};
use crate::functions::permissions::Permissions;
use crate::middlewares::auth::{Auth, PendingAuth};
use crate::middlewares::idempotency::IdempotencyKey;
use crate::middlewares::json::Json;
use crate::middlewares::path::{Path, Query};
use crate::middlewares::rate_limit::Limit;
use crate::routes::{ChannelPath, RouterExt, doc};
use crate::services::access;
use crate::services::messages::{self as service, page, search_params};
use crate::state::AppState;

pub fn router() -> ApiRouter<AppState> {
    let op = |id, summary, limit| doc("Messages", id, summary, limit);
    ApiRouter::new()
        .mikoto_route(
            "/spaces/{spaceId}/channels/{channelId}/messages/",
            get_with(list, op("messages.list", "List Messages", Limit::GENERAL))
                .post_with(create, op("messages.create", "Create Message", Limit::MESSAGES)),
        )
        .mikoto_route(
            "/spaces/{spaceId}/channels/{channelId}/messages/search",
            get_with(search, op("messages.search", "Search Messages", Limit::GENERAL)),
        )
        .mikoto_route(
            "/spaces/{spaceId}/channels/{channelId}/messages/{messageId}",
            get_with(get, op("messages.get", "Get Message", Limit::GENERAL))
                .delete_with(delete, op("messages.delete", "Delete Message", Limit::GENERAL))
                .patch_with(update, op("messages.update", "Update Message", Limit::GENERAL)),
        )
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessagePath {
    pub space_id: SpaceId,
    pub channel_id: ChannelId,
    pub message_id: Uuid,
}

/// The body of `messages.create` (Mikoto names it apart from the DM body).
#[derive(Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct MessageSendPayload2(pub MessageSendPayload);

/// The body of `messages.update` (Mikoto names it apart from the DM body).
#[derive(Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct MessageEditPayload2(pub MessageEditPayload);

async fn list(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Path<ChannelPath>,
    Query(q): Query<MessageListQuery>,
) -> Result<axum::Json<Vec<MessageExt>>> {
    // One connection for the whole request: each release costs sqlx a round trip.
    let mut conn = state.db.acquire().await?;
    access::channel(&mut *conn, p.space_id, p.channel_id, auth.user_id).await?;
    let (page, limit) = page(&mut conn, p.channel_id, &q).await?;
    Ok(axum::Json(messages::list(&mut conn, p.channel_id, page, limit).await?))
}

async fn search(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Path<ChannelPath>,
    Query(q): Query<SearchQuery>,
) -> Result<axum::Json<Vec<MessageExt>>> {
    let (text, limit) = search_params(&q)?;
    let mut conn = state.db.acquire().await?;
    access::channel(&mut *conn, p.space_id, p.channel_id, auth.user_id).await?;
    Ok(axum::Json(
        messages::search(&mut conn, p.channel_id, &text, q.before, limit).await?,
    ))
}

/// The session is checked before any other error is reported (as [`Auth`] does): from the
/// session cache, or in the same round trip as the channel's access when the request is
/// well-formed.
async fn create(
    State(state): State<AppState>,
    auth: PendingAuth,
    path: Result<Path<ChannelPath>, Error>,
    key: Result<IdempotencyKey, Error>,
    body: Result<Json<MessageSendPayload2>, Error>,
) -> Result<axum::Json<MessageExt>> {
    let parsed = (|| Ok::<_, Error>((path?.0, key?, body?.0.0)))();
    let (p, key, body) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            auth.check(&state.db).await?;
            return Err(e);
        }
    };
    let mut conn = state.db.acquire().await?;
    let (auth, found) = match (auth.cached(&state.sessions), auth.session_id()) {
        // A session not known live here: its state and the channel's access in one query.
        (None, Some(session)) => {
            let ticket = state.sessions.ticket();
            let (session_state, found) =
                entities::access::session_channel_access(&mut *conn, p.space_id, p.channel_id, auth.user_id, session)
                    .await?;
            let auth = auth.resolve(session_state)?;
            state.sessions.remember(ticket, &auth);
            (auth, found)
        }
        // A cached session, or a bot (its generation first), then the channel.
        (cached, _) => {
            let auth = match cached {
                Some(auth) => auth,
                None => auth.check_and_remember(&mut *conn, &state.sessions).await?,
            };
            let found = entities::access::channel_access(&mut *conn, p.space_id, p.channel_id, auth.user_id).await?;
            (auth, found)
        }
    };
    let (kind, perms) = access::visible(found)?;
    access::require_bits(perms, Permissions::SEND_MESSAGES)?;
    if !body.attachments.is_empty() {
        access::require_bits(perms, Permissions::ATTACH_FILES)?;
    }
    if !matches!(kind, ChannelType::Text | ChannelType::Voice | ChannelType::Thread) {
        return Err(Error::new(
            ErrorCode::WrongChannelType,
            "Messages can only be sent in text, voice and thread channels",
        ));
    }
    let message = service::send(
        state.outlets(),
        conn,
        auth.user_id,
        p.channel_id,
        Conversation::Space(p.space_id),
        &body,
        key.0.as_deref(),
    )
    .await?;
    Ok(axum::Json(message))
}

async fn get(State(state): State<AppState>, auth: Auth, Path(p): Path<MessagePath>) -> Result<axum::Json<MessageExt>> {
    let mut conn = state.db.acquire().await?;
    access::channel(&mut *conn, p.space_id, p.channel_id, auth.user_id).await?;
    Ok(axum::Json(
        messages::get(&mut conn, p.channel_id, p.message_id)
            .await?
            .ok_or_else(Error::not_found)?,
    ))
}

async fn update(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Path<MessagePath>,
    Json(MessageEditPayload2(body)): Json<MessageEditPayload2>,
) -> Result<axum::Json<MessageExt>> {
    access::channel(&state.db, p.space_id, p.channel_id, auth.user_id).await?;
    Ok(axum::Json(
        service::edit(
            &state.db,
            &state.bus,
            auth.user_id,
            p.channel_id,
            p.message_id,
            Conversation::Space(p.space_id),
            &body.content,
        )
        .await?,
    ))
}

async fn delete(State(state): State<AppState>, auth: Auth, Path(p): Path<MessagePath>) -> Result<axum::Json<()>> {
    let (_, perms) = access::channel(&state.db, p.space_id, p.channel_id, auth.user_id).await?;
    let moderate = perms.contains(Permissions::MANAGE_MESSAGES);
    service::remove(
        &state.db,
        &state.bus,
        auth.user_id,
        p.channel_id,
        p.message_id,
        Conversation::Space(p.space_id),
        moderate,
    )
    .await?;
    Ok(axum::Json(()))
}
