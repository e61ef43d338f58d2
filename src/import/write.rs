//! Writing converted rows into alterego's tables, in batches, inside the import's one target
//! transaction. Every insert skips rows that collide with a unique key (`ON CONFLICT DO
//! NOTHING`) and returns how many it wrote, so the report can count the collisions.

use sqlx::postgres::Postgres;
use sqlx::query_builder::Separated;
use sqlx::{PgConnection, QueryBuilder};
use uuid::Uuid;

use crate::entities::messages::MessageAttachment;
use crate::functions::time::Timestamp;

/// PostgreSQL's limit of bind parameters per statement.
const MAX_PARAMS: usize = 65_535;

/// Inserts `rows` into `target` (`"table (col, …)"`, `columns` of them) with multi-row VALUES.
pub async fn rows<T>(
    conn: &mut PgConnection,
    target: &'static str,
    columns: usize,
    rows: &[T],
    mut bind: impl FnMut(&mut Separated<'_, Postgres, &'static str>, &T),
) -> Result<u64, sqlx::Error> {
    let mut written = 0;
    for chunk in rows.chunks((MAX_PARAMS / columns).max(1)) {
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new(format!("INSERT INTO {target} "));
        q.push_values(chunk, |mut b, row| bind(&mut b, row));
        q.push(" ON CONFLICT DO NOTHING");
        written += q.build().execute(&mut *conn).await?.rows_affected();
    }
    Ok(written)
}

/// Rows of a large table, inserted a batch at a time (columns through UNNEST: one statement of
/// one array parameter per column however large the batch).
pub trait Batch: Sized {
    /// Inserts `batch`; returns how many rows were written.
    fn write(conn: &mut PgConnection, batch: &[Self]) -> impl Future<Output = Result<u64, sqlx::Error>> + Send;
}

impl Batch for Message {
    fn write(conn: &mut PgConnection, batch: &[Self]) -> impl Future<Output = Result<u64, sqlx::Error>> + Send {
        messages(conn, batch)
    }
}

impl Batch for MessageAttachment {
    fn write(conn: &mut PgConnection, batch: &[Self]) -> impl Future<Output = Result<u64, sqlx::Error>> + Send {
        attachments(conn, batch)
    }
}

/// A converted message and the Mikoto id it replaces.
pub struct Message {
    pub id: Uuid,
    pub legacy_id: Uuid,
    pub channel_id: Uuid,
    pub author_id: Option<Uuid>,
    pub timestamp: Timestamp,
    pub edited_timestamp: Option<Timestamp>,
    pub content: String,
    pub has_attachments: bool,
}

/// Inserts a batch of messages and their old-id mappings.
pub async fn messages(conn: &mut PgConnection, batch: &[Message]) -> Result<u64, sqlx::Error> {
    let ids: Vec<Uuid> = batch.iter().map(|m| m.id).collect();
    let legacy: Vec<Uuid> = batch.iter().map(|m| m.legacy_id).collect();
    let channels: Vec<Uuid> = batch.iter().map(|m| m.channel_id).collect();
    let authors: Vec<Option<Uuid>> = batch.iter().map(|m| m.author_id).collect();
    let times: Vec<Timestamp> = batch.iter().map(|m| m.timestamp).collect();
    let edited: Vec<Option<Timestamp>> = batch.iter().map(|m| m.edited_timestamp).collect();
    let contents: Vec<&str> = batch.iter().map(|m| m.content.as_str()).collect();
    let flagged: Vec<bool> = batch.iter().map(|m| m.has_attachments).collect();
    let written = sqlx::query(
        "INSERT INTO messages (id, channel_id, author_id, timestamp, edited_timestamp, content, has_attachments) \
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::timestamptz[], $5::timestamptz[], $6::text[], \
         $7::bool[]) ON CONFLICT DO NOTHING",
    )
    .bind(&ids)
    .bind(&channels)
    .bind(&authors)
    .bind(&times)
    .bind(&edited)
    .bind(&contents)
    .bind(&flagged)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    // Only mappings whose message is now present (a colliding id was skipped above).
    sqlx::query(
        "INSERT INTO imported_message_ids (legacy_id, message_id) \
         SELECT l, n FROM UNNEST($1::uuid[], $2::uuid[]) AS t (l, n) \
         WHERE EXISTS (SELECT 1 FROM messages WHERE id = n) ON CONFLICT DO NOTHING",
    )
    .bind(&legacy)
    .bind(&ids)
    .execute(conn)
    .await?;
    Ok(written)
}

/// Inserts attachments whose message is present (the caller counts the others as skipped).
pub async fn attachments(conn: &mut PgConnection, batch: &[MessageAttachment]) -> Result<u64, sqlx::Error> {
    let ids: Vec<Uuid> = batch.iter().map(|a| a.id).collect();
    let messages: Vec<Uuid> = batch.iter().map(|a| a.message_id).collect();
    let urls: Vec<&str> = batch.iter().map(|a| a.url.as_str()).collect();
    let names: Vec<&str> = batch.iter().map(|a| a.filename.as_str()).collect();
    let types: Vec<&str> = batch.iter().map(|a| a.content_type.as_str()).collect();
    let sizes: Vec<i32> = batch.iter().map(|a| a.size).collect();
    let orders: Vec<i32> = batch.iter().map(|a| a.order).collect();
    Ok(sqlx::query(
        "INSERT INTO message_attachments (id, message_id, url, filename, content_type, size, \"order\") \
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::int4[], $7::int4[]) \
         AS t (id, message_id) WHERE EXISTS (SELECT 1 FROM messages m WHERE m.id = t.message_id) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&ids)
    .bind(&messages)
    .bind(&urls)
    .bind(&names)
    .bind(&types)
    .bind(&sizes)
    .bind(&orders)
    .execute(conn)
    .await?
    .rows_affected())
}
