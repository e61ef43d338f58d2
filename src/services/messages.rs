//! Sending, editing and deleting messages, shared by space channels and DMs (spec §4.6,
//! §4.10), and the paging and search parameters both use.

use crate::services::push::Pusher;
use crate::services::send_batch::SendBatcher;
use sqlx::pool::PoolConnection;
use sqlx::{Connection, PgConnection, PgPool, Postgres};
use uuid::Uuid;

use crate::entities::idempotency::{self, Claim};
use crate::entities::media;
use crate::entities::messages::{
    self, ATTACHMENTS_MAX, CONTENT_MAX, MessageAttachment, MessageAttachmentInput, MessageExt, MessageKey,
    MessageListQuery, MessageSendPayload, NewMessage, Page, SearchQuery,
};
use crate::error::{Error, ErrorCode, Result};
use crate::events::{Conversation, Event, Outbox};
use crate::functions::bus::Bus;
use crate::functions::ids::{ChannelId, UserId};
use crate::functions::media::{MediaStore, Store, content_type_for_extension};
use crate::functions::query::clamp_limit;
use crate::functions::time::Timestamp;

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
        // A Mikoto message id of imported history: its position is that of its new id.
        return match messages::imported_id(conn, channel, x).await? {
            Some(new) => Ok((page.at(new), clamp_limit(q.limit, 50, 100))),
            None => Err(Error::not_found()),
        };
    }
    Ok((page, clamp_limit(q.limit, 50, 100)))
}

/// The search parameters (spec §4.17): `q` of 1–256 characters.
pub fn search_params(q: &SearchQuery) -> Result<(String, i64)> {
    let text = q.q.as_deref().unwrap_or("").trim();
    if text.is_empty() || text.chars().count() > messages::QUERY_MAX {
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
    if !has_attachments && content.chars().all(crate::functions::validation::is_invisible) {
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

/// Where a sent message goes besides the database: the bus, the media store (attachments),
/// Web Push, and the group-commit writers.
pub struct Outlets<'a> {
    pub bus: &'a Bus,
    pub store: &'a MediaStore,
    pub push: Option<&'a Pusher>,
    pub batch: &'a SendBatcher,
}

/// Sends a message: validation, idempotency, then the row — a plain message through the
/// group-commit writers (`services::send_batch`), one with attachments or an idempotency key
/// in one transaction on `conn`, the connection the caller's access check used (each pool
/// release costs a round trip: sqlx pings a released connection) — then `messages.onCreate`.
pub async fn send(
    out: Outlets<'_>,
    mut conn: PoolConnection<Postgres>,
    author: UserId,
    channel: ChannelId,
    conversation: Conversation,
    payload: &MessageSendPayload,
    key: Option<&str>,
) -> Result<MessageExt> {
    check_content(&payload.content, !payload.attachments.is_empty())?;
    if payload.attachments.len() > ATTACHMENTS_MAX {
        return Err(Error::validation("attachments", "A message has at most 10 attachments"));
    }
    let operation = match conversation {
        Conversation::Space(_) => "messages.create",
        Conversation::Dm(..) => "dm.messages.create",
    };
    if let Some(key) = key {
        match idempotency::claim(&mut conn, author, operation, key).await? {
            Claim::Fresh => {}
            Claim::Completed(id) => {
                return messages::get(&mut conn, channel, id).await?.ok_or_else(|| {
                    Error::new(ErrorCode::Conflict, "This Idempotency-Key was used for another channel")
                });
            }
            Claim::InFlight => {
                return Err(Error::new(
                    ErrorCode::Conflict,
                    "A request with this Idempotency-Key is still being processed",
                ));
            }
        }
    }
    let id = Uuid::now_v7();
    let message = NewMessage {
        id,
        channel,
        author,
        at: messages::id_timestamp(id).unwrap_or_else(Timestamp::now),
        content: payload.content.clone(),
    };
    if payload.attachments.is_empty() && key.is_none() {
        // Released before waiting for the batch: a writer needs a connection of its own.
        drop(conn);
        let message = out.batch.insert(message).await?;
        return Ok(published(&out, conversation, message).await);
    }
    let result = insert_message(out.store, &mut conn, message, payload, key, operation).await;
    let message = match result {
        Ok(message) => message,
        Err(e) => {
            if let Some(k) = key {
                idempotency::release(&mut conn, author, operation, k).await;
            }
            return Err(e);
        }
    };
    // Committed: the connection goes back before the event is published.
    drop(conn);
    Ok(published(&out, conversation, message).await)
}

/// `messages.onCreate` to the audience and Web Push, after the commit.
async fn published(out: &Outlets<'_>, conversation: Conversation, message: MessageExt) -> MessageExt {
    Event::MessageCreated(conversation, &message).publish(out.bus).await;
    if let Some(push) = out.push {
        push.message_created(conversation, &message);
    }
    message
}

/// A message with attachments or an idempotency key: one transaction.
async fn insert_message(
    store: &MediaStore,
    conn: &mut PgConnection,
    new: NewMessage,
    payload: &MessageSendPayload,
    key: Option<&str>,
    operation: &str,
) -> Result<MessageExt> {
    let (id, author) = (new.id, new.author);
    let mut tx = conn.begin().await?;
    let mut message = messages::insert(&mut *tx, &new).await?;
    for (i, input) in payload.attachments.iter().enumerate() {
        let attachment = resolve_attachment(store, &mut tx, id, i, input).await?;
        messages::insert_attachment(&mut *tx, &attachment).await?;
        message.attachments.push(attachment);
    }
    if let Some(k) = key {
        idempotency::complete(&mut tx, author, operation, k, id).await?;
    }
    tx.commit().await?;
    Ok(message)
}

/// Edits the caller's own message (spec §4.10): `Forbidden` for others' messages.
pub async fn edit(
    db: &PgPool,
    bus: &Bus,
    author: UserId,
    channel: ChannelId,
    id: Uuid,
    conversation: Conversation,
    content: &str,
) -> Result<MessageExt> {
    let mut tx = db.begin().await?;
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
    outbox.push(Event::MessageUpdated(conversation, &message));
    outbox.commit(tx, bus).await?;
    Ok(message)
}

/// Deletes a message when the caller wrote it or `may_moderate`.
pub async fn remove(
    db: &PgPool,
    bus: &Bus,
    caller: UserId,
    channel: ChannelId,
    id: Uuid,
    conversation: Conversation,
    may_moderate: bool,
) -> Result<()> {
    let mut tx = db.begin().await?;
    let message = messages::get(&mut tx, channel, id)
        .await?
        .ok_or_else(Error::not_found)?;
    if message.author_id != Some(caller) && !may_moderate {
        return Err(match conversation {
            Conversation::Dm(..) => Error::new(ErrorCode::Forbidden, "Only the author may delete a direct message"),
            Conversation::Space(_) => Error::new(
                ErrorCode::InsufficientPermissions,
                "Missing permission: MANAGE_MESSAGES",
            ),
        });
    }
    messages::delete(&mut *tx, id).await?;
    let key = MessageKey {
        channel_id: channel,
        message_id: id,
    };
    let mut outbox = Outbox::new();
    outbox.push(Event::MessageDeleted(conversation, &key));
    outbox.commit(tx, bus).await?;
    Ok(())
}

/// Attachment references (spec §4.10, §10.7): the upload must exist in the `attachment` store;
/// type and size come from the stored object, never from the client.
async fn resolve_attachment(
    store: &MediaStore,
    conn: &mut PgConnection,
    message: Uuid,
    index: usize,
    input: &MessageAttachmentInput,
) -> Result<MessageAttachment> {
    let field = format!("attachments[{index}].url");
    let url = media::claim_reference(conn, store, Store::Attachment, &input.url, &field).await?;
    let (content_type, size, original) = match media::find(&mut *conn, &url).await? {
        Some(object) => (object.content_type, object.size, object.filename),
        // An object that predates alterego: its size from the backend, its type from its name.
        None => {
            let size = store.size(&url).await.map_err(Error::internal)?.unwrap_or(0);
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
