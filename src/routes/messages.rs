//! Messages in space channels (spec §4.10, §4.17 `messages.search`) and the sending, editing and
//! paging logic that DM messages share (§4.6).

use aide::axum::ApiRouter;
use aide::axum::routing::get_with;
use axum::extract::State;
use schemars::JsonSchema;
use serde::Deserialize;
use sqlx::pool::PoolConnection;
use sqlx::{Connection, PgConnection, Postgres};
use uuid::Uuid;

use crate::entities::channels::ChannelType;
use crate::entities::messages::{self, ATTACHMENTS_MAX, CONTENT_MAX, MessageAttachment, MessageExt, MessageKey, Page};
use crate::error::{Error, ErrorCode, Result};
use crate::functions::bus::{Outbox, Topic};
use crate::functions::ids::{ChannelId, SpaceId, UserId};
use crate::functions::permissions::Permissions;
use crate::functions::query::{clamp_limit, empty_as_none};
use crate::functions::time::Timestamp;
use crate::middlewares::auth::{Auth, PendingAuth};
use crate::middlewares::idempotency::IdempotencyKey;
use crate::middlewares::json::Json;
use crate::middlewares::path::{Path, Query};
use crate::routes::params::ChannelPath;
use crate::routes::{RouterExt, doc};
use crate::state::AppState;

pub fn router() -> ApiRouter<AppState> {
    let op = |id, summary| doc("Messages", id, summary);
    ApiRouter::new()
        .mikoto_route(
            "/spaces/{spaceId}/channels/{channelId}/messages/",
            get_with(list, op("messages.list", "List Messages"))
                .post_with(create, op("messages.create", "Create Message")),
        )
        .mikoto_route(
            "/spaces/{spaceId}/channels/{channelId}/messages/search",
            get_with(search, op("messages.search", "Search Messages")),
        )
        .mikoto_route(
            "/spaces/{spaceId}/channels/{channelId}/messages/{messageId}",
            get_with(get, op("messages.get", "Get Message"))
                .delete_with(delete, op("messages.delete", "Delete Message"))
                .patch_with(update, op("messages.update", "Update Message")),
        )
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessagePath {
    pub space_id: SpaceId,
    pub channel_id: ChannelId,
    pub message_id: Uuid,
}

/// `limit` and at most one of `cursor`, `before`, `after`, `around` (spec §2.7, §4.18).
#[derive(Deserialize, JsonSchema)]
pub struct MessageListQuery {
    #[serde(default, deserialize_with = "empty_as_none")]
    #[schemars(with = "Option<Uuid>")]
    pub cursor: Option<Uuid>,
    #[serde(default, deserialize_with = "empty_as_none")]
    #[schemars(with = "Option<Uuid>")]
    pub before: Option<Uuid>,
    #[serde(default, deserialize_with = "empty_as_none")]
    #[schemars(with = "Option<Uuid>")]
    pub after: Option<Uuid>,
    #[serde(default, deserialize_with = "empty_as_none")]
    #[schemars(with = "Option<Uuid>")]
    pub around: Option<Uuid>,
    #[serde(default, deserialize_with = "empty_as_none")]
    #[schemars(with = "Option<i64>")]
    pub limit: Option<i64>,
}

#[derive(Deserialize, JsonSchema)]
pub struct SearchQuery {
    #[serde(default)]
    pub q: Option<String>,
    #[serde(default, deserialize_with = "empty_as_none")]
    #[schemars(with = "Option<Uuid>")]
    pub before: Option<Uuid>,
    #[serde(default, deserialize_with = "empty_as_none")]
    #[schemars(with = "Option<i64>")]
    pub limit: Option<i64>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageAttachmentInput {
    pub url: String,
    #[serde(default)]
    pub filename: Option<String>,
    /// Ignored: the stored object's type is used.
    #[serde(default)]
    pub content_type: Option<String>,
    /// Ignored: the stored object's size is used.
    #[serde(default)]
    pub size: Option<i64>,
}

#[derive(Deserialize, JsonSchema)]
pub struct MessageSendPayload {
    pub content: String,
    #[serde(default)]
    pub attachments: Vec<MessageAttachmentInput>,
}

#[derive(Deserialize, JsonSchema)]
pub struct MessageEditPayload {
    pub content: String,
}

/// The body of `messages.create` (Mikoto names it apart from the DM body).
#[derive(Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct MessageSendPayload2(pub MessageSendPayload);

/// The body of `messages.update` (Mikoto names it apart from the DM body).
#[derive(Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct MessageEditPayload2(pub MessageEditPayload);

/// Where a conversation's events go: a space's topic (delivery filters by VIEW_CHANNEL) or
/// both DM participants.
#[derive(Debug, Clone, Copy)]
pub enum Audience {
    Space(SpaceId),
    Dm(UserId, UserId),
}

impl Audience {
    pub fn push<T: serde::Serialize>(&self, outbox: &mut Outbox, op: &str, data: &T) {
        match *self {
            Audience::Space(space) => outbox.push(Topic::space(space.0), op, data),
            Audience::Dm(a, b) => {
                outbox.push(Topic::user(a), op, data);
                outbox.push(Topic::user(b), op, data);
            }
        }
    }
}

/// Resolves the query into a page (spec §4.10 cursor semantics).
pub async fn page(conn: &mut sqlx::PgConnection, channel: ChannelId, q: &MessageListQuery) -> Result<(Page, i64)> {
    let given = [
        q.cursor.map(Page::Before),
        q.before.map(Page::Before),
        q.after.map(Page::After),
        q.around.map(Page::Around),
    ];
    let mut chosen = given.into_iter().flatten();
    let page = chosen.next().unwrap_or(Page::Newest);
    if chosen.next().is_some() {
        return Err(Error::new(
            ErrorCode::InvalidQuery,
            "Give at most one of `cursor`, `before`, `after` and `around`",
        ));
    }
    if let Page::Before(x) | Page::After(x) | Page::Around(x) = page
        && messages::id_timestamp(x).is_none()
        && messages::get(conn, channel, x).await?.is_none()
    {
        return Err(Error::not_found());
    }
    Ok((page, clamp_limit(q.limit, 50, 100)))
}

/// The search parameters (spec §4.17): `q` of 1–256 characters.
pub fn search_params(q: &SearchQuery) -> Result<(String, i64)> {
    let text = q.q.as_deref().unwrap_or("").trim();
    if text.is_empty() || text.chars().count() > 256 {
        return Err(Error::new(
            ErrorCode::InvalidQuery,
            "`q` must be 1 to 256 characters long",
        ));
    }
    Ok((text.to_string(), clamp_limit(q.limit, 25, 100)))
}

fn check_content(content: &str, has_attachments: bool) -> Result<()> {
    if content.chars().count() > CONTENT_MAX {
        return Err(Error::validation(
            "content",
            "`content` must be at most 4000 characters long",
        ));
    }
    if !has_attachments && content.trim().is_empty() {
        return Err(Error::validation("content", "A message needs text or an attachment"));
    }
    Ok(())
}

/// Path separators and control characters removed, at most 255 characters.
pub fn sanitize_filename(raw: &str) -> String {
    raw.chars()
        .filter(|c| !matches!(c, '/' | '\\') && !c.is_control())
        .take(255)
        .collect::<String>()
        .trim()
        .to_string()
}

/// Sends a message: validation, idempotency, one statement (or, with attachments or an
/// idempotency key, one transaction) for the message, then `messages.onCreate` to the audience.
/// Everything runs on `conn`, the connection the caller's access check used: each pool release
/// costs a round trip (sqlx pings a released connection), and a second acquire while holding
/// one could wait on a pool that every request holds half of.
pub async fn send(
    state: &AppState,
    mut conn: PoolConnection<Postgres>,
    author: UserId,
    channel: ChannelId,
    audience: Audience,
    payload: MessageSendPayload,
    key: IdempotencyKey,
) -> Result<MessageExt> {
    check_content(&payload.content, !payload.attachments.is_empty())?;
    if payload.attachments.len() > ATTACHMENTS_MAX {
        return Err(Error::validation("attachments", "A message has at most 10 attachments"));
    }
    let operation = match audience {
        Audience::Space(_) => "messages.create",
        Audience::Dm(..) => "dm.messages.create",
    };
    if let Some(key) = &key.0
        && let Some(original) = idempotency::claim(&mut conn, author, operation, key, channel).await?
    {
        return Ok(original);
    }
    let result = insert_message(state, &mut conn, author, channel, &payload, &key, operation).await;
    let message = match result {
        Ok(message) => message,
        Err(e) => {
            if let Some(k) = &key.0 {
                idempotency::release(&mut conn, author, operation, k).await;
            }
            return Err(e);
        }
    };
    // Committed: the connection goes back before the event is published.
    drop(conn);
    let mut outbox = Outbox::new();
    audience.push(&mut outbox, "messages.onCreate", &message);
    state.bus.publish_all(outbox).await;
    Ok(message)
}

async fn insert_message(
    state: &AppState,
    conn: &mut PgConnection,
    author: UserId,
    channel: ChannelId,
    payload: &MessageSendPayload,
    key: &IdempotencyKey,
    operation: &str,
) -> Result<MessageExt> {
    let id = Uuid::now_v7();
    let at = messages::id_timestamp(id).unwrap_or_else(Timestamp::now);
    if payload.attachments.is_empty() && key.0.is_none() {
        // A single statement is atomic: no explicit transaction.
        return messages::insert(&mut *conn, id, channel, author, at, &payload.content).await;
    }
    let mut tx = conn.begin().await?;
    let mut message = messages::insert(&mut *tx, id, channel, author, at, &payload.content).await?;
    for (i, input) in payload.attachments.iter().enumerate() {
        let attachment = attachment::resolve(state, &mut tx, id, i, input).await?;
        messages::insert_attachment(&mut *tx, &attachment).await?;
        message.attachments.push(attachment);
    }
    if let Some(k) = &key.0 {
        idempotency::complete(&mut tx, author, operation, k, id).await?;
    }
    tx.commit().await?;
    Ok(message)
}

/// Edits the caller's own message (spec §4.10): `Forbidden` for others' messages.
pub async fn edit(
    state: &AppState,
    author: UserId,
    channel: ChannelId,
    id: Uuid,
    audience: Audience,
    content: &str,
) -> Result<MessageExt> {
    let mut tx = state.db.begin().await?;
    let message = messages::get(&mut tx, channel, id)
        .await?
        .ok_or_else(Error::not_found)?;
    if message.author_id != Some(author) {
        return Err(Error::new(ErrorCode::Forbidden, "Only the author may edit a message"));
    }
    check_content(content, !message.attachments.is_empty())?;
    messages::edit(&mut *tx, id, content, Timestamp::now()).await?;
    let message = messages::get(&mut tx, channel, id)
        .await?
        .ok_or_else(Error::not_found)?;
    let mut outbox = Outbox::new();
    audience.push(&mut outbox, "messages.onUpdate", &message);
    outbox.commit(tx, &state.bus).await?;
    Ok(message)
}

/// Deletes a message when the caller wrote it or `may_moderate`.
pub async fn remove(
    state: &AppState,
    caller: UserId,
    channel: ChannelId,
    id: Uuid,
    audience: Audience,
    may_moderate: bool,
) -> Result<()> {
    let mut tx = state.db.begin().await?;
    let message = messages::get(&mut tx, channel, id)
        .await?
        .ok_or_else(Error::not_found)?;
    if message.author_id != Some(caller) && !may_moderate {
        return Err(match audience {
            Audience::Dm(..) => Error::new(ErrorCode::Forbidden, "Only the author may delete a direct message"),
            Audience::Space(_) => Error::new(
                ErrorCode::InsufficientPermissions,
                "Missing permission: MANAGE_MESSAGES",
            ),
        });
    }
    messages::delete(&mut *tx, id).await?;
    let mut outbox = Outbox::new();
    audience.push(
        &mut outbox,
        "messages.onDelete",
        &MessageKey {
            channel_id: channel,
            message_id: id,
        },
    );
    outbox.commit(tx, &state.bus).await?;
    Ok(())
}

/// The caller's view of a space channel for messaging: member, visible channel, permissions.
async fn channel_access(
    state: &AppState,
    space: SpaceId,
    channel: ChannelId,
    user: UserId,
) -> Result<(ChannelType, Permissions)> {
    crate::entities::access::channel_access(&state.db, space, channel, user).await
}

async fn list(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Path<ChannelPath>,
    Query(q): Query<MessageListQuery>,
) -> Result<axum::Json<Vec<MessageExt>>> {
    channel_access(&state, p.space_id, p.channel_id, auth.user_id).await?;
    let mut conn = state.db.acquire().await?;
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
    channel_access(&state, p.space_id, p.channel_id, auth.user_id).await?;
    let mut conn = state.db.acquire().await?;
    Ok(axum::Json(
        messages::search(&mut conn, p.channel_id, &text, q.before, limit).await?,
    ))
}

/// The session is checked before any other error is reported (as [`Auth`] does), in the same
/// round trip as the channel's access when the request is well-formed.
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
    let (session, access) = crate::entities::access::session_channel_access(
        &mut *conn,
        p.space_id,
        p.channel_id,
        auth.user_id,
        auth.session_id,
    )
    .await?;
    let auth = auth.resolve(session)?;
    let (kind, perms) = access?;
    crate::entities::access::require_bits(perms, Permissions::SEND_MESSAGES)?;
    if !body.attachments.is_empty() {
        crate::entities::access::require_bits(perms, Permissions::ATTACH_FILES)?;
    }
    if !matches!(kind, ChannelType::Text | ChannelType::Voice | ChannelType::Thread) {
        return Err(Error::new(
            ErrorCode::WrongChannelType,
            "Messages can only be sent in text, voice and thread channels",
        ));
    }
    let message = send(
        &state,
        conn,
        auth.user_id,
        p.channel_id,
        Audience::Space(p.space_id),
        body,
        key,
    )
    .await?;
    Ok(axum::Json(message))
}

async fn get(State(state): State<AppState>, auth: Auth, Path(p): Path<MessagePath>) -> Result<axum::Json<MessageExt>> {
    channel_access(&state, p.space_id, p.channel_id, auth.user_id).await?;
    let mut conn = state.db.acquire().await?;
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
    channel_access(&state, p.space_id, p.channel_id, auth.user_id).await?;
    let audience = Audience::Space(p.space_id);
    Ok(axum::Json(
        edit(
            &state,
            auth.user_id,
            p.channel_id,
            p.message_id,
            audience,
            &body.content,
        )
        .await?,
    ))
}

async fn delete(State(state): State<AppState>, auth: Auth, Path(p): Path<MessagePath>) -> Result<axum::Json<()>> {
    let (_, perms) = channel_access(&state, p.space_id, p.channel_id, auth.user_id).await?;
    let moderate = perms.contains(Permissions::MANAGE_MESSAGES);
    remove(
        &state,
        auth.user_id,
        p.channel_id,
        p.message_id,
        Audience::Space(p.space_id),
        moderate,
    )
    .await?;
    Ok(axum::Json(()))
}

/// Idempotent sends, remembered for 10 minutes in the database (shared by every instance).
mod idempotency {
    use super::*;

    /// Claims the key for a new send; returns the original message for a completed one, or
    /// 409 while the first request is still in flight.
    pub async fn claim(
        conn: &mut PgConnection,
        user: UserId,
        operation: &str,
        key: &str,
        channel: ChannelId,
    ) -> Result<Option<MessageExt>> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE user_id = $1 AND operation = $2 AND key = $3 \
             AND created_at < now() - interval '10 minutes'",
        )
        .bind(user)
        .bind(operation)
        .bind(key)
        .execute(&mut *conn)
        .await?;
        let fresh = sqlx::query(
            "INSERT INTO idempotency_keys (user_id, operation, key) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(user)
        .bind(operation)
        .bind(key)
        .execute(&mut *conn)
        .await?;
        if fresh.rows_affected() == 1 {
            return Ok(None);
        }
        let original: Option<Option<Uuid>> = sqlx::query_scalar(
            "SELECT message_id FROM idempotency_keys WHERE user_id = $1 AND operation = $2 AND key = $3",
        )
        .bind(user)
        .bind(operation)
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
        match original.flatten() {
            Some(id) => Ok(Some(messages::get(conn, channel, id).await?.ok_or_else(|| {
                Error::new(ErrorCode::Conflict, "This Idempotency-Key was used for another channel")
            })?)),
            None => Err(Error::new(
                ErrorCode::Conflict,
                "A request with this Idempotency-Key is still being processed",
            )),
        }
    }

    pub async fn complete(
        conn: &mut sqlx::PgConnection,
        user: UserId,
        operation: &str,
        key: &str,
        message: Uuid,
    ) -> Result<()> {
        sqlx::query("UPDATE idempotency_keys SET message_id = $4 WHERE user_id = $1 AND operation = $2 AND key = $3")
            .bind(user)
            .bind(operation)
            .bind(key)
            .bind(message)
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Frees a key whose send failed, so a corrected retry can use it.
    pub async fn release(conn: &mut PgConnection, user: UserId, operation: &str, key: &str) {
        let res = sqlx::query(
            "DELETE FROM idempotency_keys WHERE user_id = $1 AND operation = $2 AND key = $3 AND message_id IS NULL",
        )
        .bind(user)
        .bind(operation)
        .bind(key)
        .execute(conn)
        .await;
        if let Err(e) = res {
            tracing::warn!(error = %e, "idempotency key not released");
        }
    }
}

/// Attachment references (spec §4.10, §10.7): the upload must exist in the `attachment` store;
/// type and size come from the stored object, never from the client.
mod attachment {
    use super::*;
    use crate::entities::media;
    use crate::functions::media::{Store, content_type_for_extension};

    pub async fn resolve(
        state: &AppState,
        conn: &mut sqlx::PgConnection,
        message: Uuid,
        index: usize,
        input: &MessageAttachmentInput,
    ) -> Result<MessageAttachment> {
        let field = format!("attachments[{index}].url");
        let url = media::claim_reference(conn, &state.media, Store::Attachment, &input.url, &field).await?;
        let (content_type, size, original) = match media::find(&mut *conn, &url).await? {
            Some(object) => (object.content_type, object.size, object.filename),
            // An object that predates alterego: its size from the backend, its type from its name.
            None => {
                let size = state.media.size(&url).await.map_err(Error::internal)?.unwrap_or(0);
                (
                    content_type_for_extension(&url).to_string(),
                    i64::try_from(size).unwrap_or(i64::MAX),
                    String::new(),
                )
            }
        };
        let filename = [input.filename.as_deref().unwrap_or(""), original.as_str()]
            .into_iter()
            .map(sanitize_filename)
            .find(|f| !f.is_empty())
            .unwrap_or_else(|| url.rsplit('/').next().unwrap_or(&url).to_string());
        Ok(MessageAttachment {
            id: Uuid::now_v7(),
            message_id: message,
            url,
            filename,
            content_type,
            size: i32::try_from(size).unwrap_or(i32::MAX),
            order: i32::try_from(index).unwrap_or(i32::MAX),
        })
    }
}
