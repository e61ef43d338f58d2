//! Documents (spec §4.12, §9.4): the Markdown snapshot of a DOCUMENT channel, and its
//! collaborative Y state — a compacted snapshot plus the updates appended since.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sqlx::{FromRow, PgExecutor};
use uuid::Uuid;

use crate::error::Error;
use crate::functions::ids::ChannelId;

/// The longest Markdown snapshot, in characters (spec §13).
pub const MAX_CONTENT: usize = 262_144;

#[derive(Debug, Clone, Serialize, JsonSchema, FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Document {
    pub id: Uuid,
    pub channel_id: ChannelId,
    /// The Markdown snapshot clients keep with `documents.update`.
    pub content: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct DocumentPatch {
    #[serde(default)]
    #[schemars(length(max = MAX_CONTENT))]
    pub content: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimBootstrapResponse {
    pub should_bootstrap: bool,
}

pub async fn get(db: impl PgExecutor<'_>, channel: ChannelId) -> Result<Option<Document>, Error> {
    Ok(
        sqlx::query_as("SELECT id, channel_id, content FROM documents WHERE channel_id = $1")
            .bind(channel)
            .fetch_optional(db)
            .await?,
    )
}

/// Replaces the Markdown snapshot (the row exists from the channel's creation; a missing one,
/// e.g. from imported data, is created).
pub async fn set_content(db: impl PgExecutor<'_>, channel: ChannelId, content: &str) -> Result<Document, Error> {
    Ok(sqlx::query_as(
        "INSERT INTO documents (channel_id, content) VALUES ($1, $2) \
         ON CONFLICT (channel_id) DO UPDATE SET content = EXCLUDED.content \
         RETURNING id, channel_id, content",
    )
    .bind(channel)
    .bind(content)
    .fetch_one(db)
    .await?)
}

/// The stored Y state: the compacted snapshot and the updates after it, in order.
#[derive(Debug, Default)]
pub struct StoredState {
    pub snapshot: Option<Vec<u8>>,
    pub updates: Vec<Vec<u8>>,
    /// The ids of the update rows read (compaction removes exactly these: a row committed
    /// after the read, even with a smaller id, is kept for the next compaction).
    pub ids: Vec<i64>,
}

impl StoredState {
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none() && self.updates.is_empty()
    }

    /// Bytes held: what the size limit and the compaction thresholds count.
    pub fn bytes(&self) -> usize {
        self.snapshot.as_ref().map_or(0, Vec::len) + self.updates.iter().map(Vec::len).sum::<usize>()
    }
}

/// Reads the snapshot and the later updates in one statement, so they come from one database
/// snapshot even while a compaction on another instance replaces rows.
pub async fn load(conn: &mut sqlx::PgConnection, channel: ChannelId) -> Result<StoredState, Error> {
    // The snapshot is row 0 (update ids start at 1).
    let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
        "SELECT 0::bigint AS id, y_state AS data FROM documents WHERE channel_id = $1 AND y_state IS NOT NULL \
         UNION ALL \
         SELECT id, data FROM document_updates WHERE channel_id = $1 \
         ORDER BY id",
    )
    .bind(channel)
    .fetch_all(&mut *conn)
    .await?;
    let mut state = StoredState::default();
    for (id, data) in rows {
        if id == 0 {
            state.snapshot = Some(data);
        } else {
            state.ids.push(id);
            state.updates.push(data);
        }
    }
    Ok(state)
}

/// Whether any Y state is persisted for the channel (claim-bootstrap, spec §9.5).
pub async fn has_state(db: impl PgExecutor<'_>, channel: ChannelId) -> Result<bool, Error> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM documents WHERE channel_id = $1 AND y_state IS NOT NULL) \
             OR EXISTS (SELECT 1 FROM document_updates WHERE channel_id = $1)",
    )
    .bind(channel)
    .fetch_one(db)
    .await?)
}

/// Appends updates of any channels in one statement (the collab writer batches them).
pub async fn append(db: impl PgExecutor<'_>, channels: &[ChannelId], data: &[Vec<u8>]) -> Result<(), Error> {
    sqlx::query("INSERT INTO document_updates (channel_id, data) SELECT * FROM UNNEST($1::uuid[], $2::bytea[])")
        .bind(channels)
        .bind(data)
        .execute(db)
        .await?;
    Ok(())
}

/// Folds the channel's stored updates into its snapshot, in one transaction under the channel's
/// advisory lock (one compaction at a time across instances). `fold` turns the stored state into
/// the new snapshot (one Y update). Returns the number of update rows folded and the snapshot's
/// size; `None` when there was nothing to fold.
pub async fn compact(
    db: &sqlx::PgPool,
    channel: ChannelId,
    fold: impl FnOnce(&StoredState) -> Option<Vec<u8>>,
) -> Result<Option<(usize, usize)>, Error> {
    let mut tx = db.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('collab:' || $1::text, 0))")
        .bind(channel)
        .execute(&mut *tx)
        .await?;
    let state = load(&mut tx, channel).await?;
    if state.ids.is_empty() {
        return Ok(None);
    }
    let Some(snapshot) = fold(&state) else {
        return Ok(None);
    };
    sqlx::query(
        "INSERT INTO documents (channel_id, y_state) VALUES ($1, $2) \
         ON CONFLICT (channel_id) DO UPDATE SET y_state = EXCLUDED.y_state",
    )
    .bind(channel)
    .bind(&snapshot)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM document_updates WHERE channel_id = $1 AND id = ANY($2)")
        .bind(channel)
        .bind(&state.ids)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Some((state.updates.len(), snapshot.len())))
}
