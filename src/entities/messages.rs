//! Messages and their attachments (spec §3.2 MessageExt, §4.10), keyset-paged by UUIDv7 id.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sqlx::{FromRow, PgExecutor};
use uuid::Uuid;

use crate::entities::users::{User, UserCategory};
use crate::error::{Error, ResultExt};
use crate::functions::ids::{ChannelId, UserId};
use crate::functions::query::empty_as_none;
use crate::functions::time::Timestamp;

pub const CONTENT_MAX: usize = 4000;
pub const ATTACHMENTS_MAX: usize = 10;
/// The longest search query, in characters (spec §13).
pub const QUERY_MAX: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, FromRow)]
#[serde(rename_all = "camelCase")]
pub struct MessageAttachment {
    pub id: Uuid,
    pub message_id: Uuid,
    /// Relative media reference `attachment/<name>`.
    pub url: String,
    pub filename: String,
    /// From the stored object.
    pub content_type: String,
    /// From the stored object, in bytes.
    pub size: i32,
    pub order: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageExt {
    pub id: Uuid,
    pub channel_id: ChannelId,
    pub author_id: Option<UserId>,
    /// Equals the id's embedded millisecond.
    pub timestamp: Timestamp,
    pub edited_timestamp: Option<Timestamp>,
    pub content: String,
    pub author: Option<User>,
    pub attachments: Vec<MessageAttachment>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageKey {
    pub channel_id: ChannelId,
    pub message_id: Uuid,
}

#[derive(FromRow)]
struct MessageRow {
    id: Uuid,
    channel_id: ChannelId,
    author_id: Option<UserId>,
    timestamp: Timestamp,
    edited_timestamp: Option<Timestamp>,
    content: String,
    name: Option<String>,
    avatar: Option<String>,
    description: Option<String>,
    category: Option<UserCategory>,
    /// In `order`; `None` when there are none (and in a new message's row).
    #[sqlx(default)]
    attachments: Option<sqlx::types::Json<Vec<MessageAttachment>>>,
}

impl MessageRow {
    fn into_ext(self) -> MessageExt {
        let attachments = self.attachments.map(|a| a.0).unwrap_or_default();
        let author = match (self.author_id, self.name) {
            (Some(id), Some(name)) => Some(User {
                id,
                name,
                avatar: self.avatar,
                description: self.description,
                category: self.category,
            }),
            _ => None,
        };
        MessageExt {
            id: self.id,
            channel_id: self.channel_id,
            author_id: self.author_id,
            timestamp: self.timestamp,
            edited_timestamp: self.edited_timestamp,
            content: self.content,
            author,
            attachments,
        }
    }
}

/// A message id's time: the millisecond embedded in a UUIDv7 (spec §2.2), `None` for other ids.
pub fn id_timestamp(id: Uuid) -> Option<Timestamp> {
    if id.get_version_num() != 7 {
        return None;
    }
    let (secs, nanos) = id.get_timestamp()?.to_unix();
    chrono::DateTime::from_timestamp(secs as i64, nanos).map(Timestamp::from)
}

/// A message with its author and its attachments: one statement per page rather than a second
/// one for the attachments. The per-row subquery (probing `message_attachments_message_id_idx`)
/// runs only for messages flagged `has_attachments` (kept by a trigger).
const SELECT: &str = "SELECT m.id, m.channel_id, m.author_id, m.timestamp, m.edited_timestamp, m.content, \
     u.name, u.avatar, u.description, u.category, \
     CASE WHEN m.has_attachments THEN (SELECT json_agg(json_build_object('id', a.id, 'messageId', a.message_id, 'url', a.url, \
             'filename', a.filename, 'contentType', a.content_type, 'size', a.size, 'order', a.\"order\") \
             ORDER BY a.\"order\") FROM message_attachments a WHERE a.message_id = m.id) END AS attachments \
     FROM messages m LEFT JOIN users u ON u.id = m.author_id";

/// One channel's messages, written so that PostgreSQL reads them in order from the
/// `(channel_id, id)` index. With `channel_id = $1` the planner drops `channel_id` from
/// `ORDER BY channel_id, id` and may walk the primary key instead, through every newer message
/// of every other channel (measured: 5–26 ms per query behind 30,000 newer messages elsewhere).
/// `= ANY(ARRAY[$1])` keeps the equality's row estimate (so a selective search still starts from
/// the full-text index) while only the `(channel_id, id)` index can serve the order.
const IN_CHANNEL: &str = "m.channel_id = ANY(ARRAY[$1::uuid])";

/// Which slice of a channel's history to read (spec §4.10 cursor semantics). Positions are
/// UUIDv7 ids, whose order is (timestamp, id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    Newest,
    Before(Uuid),
    After(Uuid),
    Around(Uuid),
}

impl Page {
    /// The same slice around another position.
    pub fn at(self, id: Uuid) -> Page {
        match self {
            Page::Newest => Page::Newest,
            Page::Before(_) => Page::Before(id),
            Page::After(_) => Page::After(id),
            Page::Around(_) => Page::Around(id),
        }
    }
}

/// The new id of a message imported from Mikoto (`legacy` is its Mikoto id), if it is in
/// `channel` (see `import::convert::message_id`).
pub async fn imported_id(db: impl PgExecutor<'_>, channel: ChannelId, legacy: Uuid) -> Result<Option<Uuid>, Error> {
    Ok(sqlx::query_scalar(
        "SELECT i.message_id FROM imported_message_ids i JOIN messages m ON m.id = i.message_id \
         WHERE i.legacy_id = $1 AND m.channel_id = $2",
    )
    .bind(legacy)
    .bind(channel)
    .fetch_optional(db)
    .await?)
}

/// A page of a channel's history, oldest first.
pub async fn list(
    conn: &mut sqlx::PgConnection,
    channel: ChannelId,
    page: Page,
    limit: i64,
) -> Result<Vec<MessageExt>, Error> {
    let rows: Vec<MessageRow> = match page {
        Page::Newest => newest_before(&mut *conn, channel, None, limit).await?,
        Page::Before(x) => newest_before(&mut *conn, channel, Some(x), limit).await?,
        Page::After(x) => oldest_after(&mut *conn, channel, x, false, limit).await?,
        Page::Around(x) => {
            let mut rows = newest_before(&mut *conn, channel, Some(x), limit / 2).await?;
            let rest = limit - rows.len() as i64;
            rows.extend(oldest_after(&mut *conn, channel, x, true, rest).await?);
            rows
        }
    };
    Ok(rows.into_iter().map(MessageRow::into_ext).collect())
}

// History statements are written once per page shape, with the page size as a literal
// (clamped to 1–100 by the caller): PostgreSQL then settles on one generic plan per statement,
// whose index condition holds both the channel and the cursor. With `($2 IS NULL OR id < $2)`
// or `LIMIT $n` it re-planned every execution (planning was 60 % of a page's database time).

async fn newest_before(
    db: impl PgExecutor<'_>,
    channel: ChannelId,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<MessageRow>, Error> {
    let limit = limit.clamp(0, 1000);
    let query = match before {
        Some(_) => {
            format!("{SELECT} WHERE {IN_CHANNEL} AND m.id < $2 ORDER BY m.channel_id DESC, m.id DESC LIMIT {limit}")
        }
        None => format!("{SELECT} WHERE {IN_CHANNEL} ORDER BY m.channel_id DESC, m.id DESC LIMIT {limit}"),
    };
    let mut q = sqlx::query_as::<_, MessageRow>(sqlx::AssertSqlSafe(query)).bind(channel);
    if let Some(before) = before {
        q = q.bind(before);
    }
    let mut rows = q.fetch_all(db).await?;
    rows.reverse();
    Ok(rows)
}

async fn oldest_after(
    db: impl PgExecutor<'_>,
    channel: ChannelId,
    after: Uuid,
    inclusive: bool,
    limit: i64,
) -> Result<Vec<MessageRow>, Error> {
    let limit = limit.clamp(0, 1000);
    let op = if inclusive { ">=" } else { ">" };
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE {IN_CHANNEL} AND m.id {op} $2 ORDER BY m.channel_id, m.id LIMIT {limit}"
    )))
    .bind(channel)
    .bind(after)
    .fetch_all(db)
    .await?)
}

/// One message of a channel.
pub async fn get(conn: &mut sqlx::PgConnection, channel: ChannelId, id: Uuid) -> Result<Option<MessageExt>, Error> {
    let row: Option<MessageRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE m.channel_id = $1 AND m.id = $2"
    )))
    .bind(channel)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(MessageRow::into_ext))
}

/// Messages of a channel whose content matches a web-search query, newest first (spec §12.7).
pub async fn search(
    conn: &mut sqlx::PgConnection,
    channel: ChannelId,
    query: &str,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<MessageExt>, Error> {
    let rows: Vec<MessageRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT} WHERE {IN_CHANNEL} AND m.search @@ websearch_to_tsquery('simple', $2) \
         AND ($3::uuid IS NULL OR m.id < $3) ORDER BY m.channel_id DESC, m.id DESC LIMIT $4"
    )))
    .bind(channel)
    .bind(query)
    .bind(before)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(MessageRow::into_ext).collect())
}

/// A message to store: validated, with its UUIDv7 id and the time within it.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: Uuid,
    pub channel: ChannelId,
    pub author: UserId,
    pub at: Timestamp,
    pub content: String,
}

/// The stored rows, with their authors' profiles (no attachments yet). The authors are looked
/// up by `authors` (the statement's author parameter) rather than joined on the returned rows:
/// PostgreSQL cannot estimate a data-modifying CTE and hashed the whole `users` table for every
/// multi-row insert.
macro_rules! return_stored {
    ($authors:literal) => {
        concat!(
            "RETURNING id, channel_id, author_id, timestamp, edited_timestamp, content) \
             SELECT m.id, m.channel_id, m.author_id, m.timestamp, m.edited_timestamp, m.content, \
                    u.name, u.avatar, u.description, u.category FROM m \
             LEFT JOIN (SELECT id, name, avatar, description, category FROM users WHERE ",
            $authors,
            ") u ON u.id = m.author_id"
        )
    };
}

/// The channel (or the author) was deleted after the caller's access was checked.
const VANISHED: &[crate::error::ConstraintError] = &[
    ("messages_channel_id_fkey", Error::not_found),
    ("messages_author_id_fkey", Error::not_found),
];

/// A new message row (its attachments are inserted with [`insert_attachment`]), returned as the
/// same statement stored it, with its author's profile and no attachments.
pub async fn insert(db: impl PgExecutor<'_>, m: &NewMessage) -> Result<MessageExt, Error> {
    let row: MessageRow = sqlx::query_as(concat!(
        "WITH m AS (INSERT INTO messages (id, channel_id, author_id, timestamp, content) \
         VALUES ($1, $2, $3, $4, $5) ",
        return_stored!("id = $3")
    ))
    .bind(m.id)
    .bind(m.channel)
    .bind(m.author)
    .bind(m.at)
    .bind(&m.content)
    .fetch_one(db)
    .await
    .on_constraints(VANISHED)?;
    Ok(row.into_ext())
}

/// Several new message rows in one statement (all or none), returned as stored, in any order.
pub async fn insert_many(db: impl PgExecutor<'_>, rows: &[NewMessage]) -> Result<Vec<MessageExt>, Error> {
    let ids: Vec<Uuid> = rows.iter().map(|m| m.id).collect();
    let channels: Vec<Uuid> = rows.iter().map(|m| m.channel.0).collect();
    let authors: Vec<Uuid> = rows.iter().map(|m| m.author.0).collect();
    let times: Vec<chrono::DateTime<chrono::Utc>> = rows.iter().map(|m| m.at.0).collect();
    let contents: Vec<&str> = rows.iter().map(|m| m.content.as_str()).collect();
    let stored: Vec<MessageRow> = sqlx::query_as(concat!(
        "WITH m AS (INSERT INTO messages (id, channel_id, author_id, timestamp, content) \
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::timestamptz[], $5::text[]) ",
        return_stored!("id = ANY($3::uuid[])")
    ))
    .bind(ids)
    .bind(channels)
    .bind(authors)
    .bind(times)
    .bind(contents)
    .fetch_all(db)
    .await
    .on_constraints(VANISHED)?;
    Ok(stored.into_iter().map(MessageRow::into_ext).collect())
}

pub async fn insert_attachment(db: impl PgExecutor<'_>, a: &MessageAttachment) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO message_attachments (id, message_id, url, filename, content_type, size, \"order\") \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(a.id)
    .bind(a.message_id)
    .bind(&a.url)
    .bind(&a.filename)
    .bind(&a.content_type)
    .bind(a.size)
    .bind(a.order)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn edit(db: impl PgExecutor<'_>, id: Uuid, content: &str, at: Timestamp) -> Result<(), Error> {
    sqlx::query("UPDATE messages SET content = $2, edited_timestamp = $3 WHERE id = $1")
        .bind(id)
        .bind(content)
        .bind(at)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn delete(db: impl PgExecutor<'_>, id: Uuid) -> Result<(), Error> {
    sqlx::query("DELETE FROM messages WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v7_ids_carry_their_millisecond() {
        let id = Uuid::now_v7();
        let ts = id_timestamp(id).unwrap();
        let now = Timestamp::now();
        assert!((now.0 - ts.0).num_milliseconds().abs() < 1000);
        assert_eq!(ts, Timestamp::from(ts.0), "already at millisecond precision");
        assert_eq!(id_timestamp(Uuid::new_v4()), None);
    }
}

// ----- request bodies and queries shared by space and DM messages -------------------------

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
    #[schemars(length(min = 1, max = QUERY_MAX))]
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
    #[schemars(length(max = CONTENT_MAX))]
    pub content: String,
    #[serde(default)]
    #[schemars(length(max = ATTACHMENTS_MAX))]
    pub attachments: Vec<MessageAttachmentInput>,
}

#[derive(Deserialize, JsonSchema)]
pub struct MessageEditPayload {
    #[schemars(length(max = CONTENT_MAX))]
    pub content: String,
}
