//! Channel permission overrides as wire models (spec §3.4 ChannelOverride, §4.17).

use schemars::JsonSchema;
use serde::Serialize;
use sqlx::{FromRow, PgExecutor};
use uuid::Uuid;

use crate::error::{Error, ResultExt};
use crate::functions::ids::ChannelId;
use crate::functions::permissions::Permissions;

pub const MAX_PER_CHANNEL: i64 = 100;

crate::wire_enum!(
    OverrideTargetType {
        Role = "ROLE",
        Member = "MEMBER",
    }
);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelOverride {
    pub channel_id: ChannelId,
    pub target_type: OverrideTargetType,
    pub target_id: Uuid,
    /// Decimal u64 of override-capable bits.
    pub allow: String,
    pub deny: String,
}

#[derive(Debug, Clone, FromRow)]
pub struct OverrideRow {
    pub channel_id: ChannelId,
    pub target_type: OverrideTargetType,
    pub target_id: Uuid,
    pub allow: i64,
    pub deny: i64,
}

impl OverrideRow {
    pub fn wire(&self) -> ChannelOverride {
        ChannelOverride {
            channel_id: self.channel_id,
            target_type: self.target_type,
            target_id: self.target_id,
            allow: Permissions::from_stored(self.allow).to_decimal(),
            deny: Permissions::from_stored(self.deny).to_decimal(),
        }
    }
}

/// A channel's overrides: `ROLE` entries by role position (descending), then `MEMBER` by id.
pub async fn list(db: impl PgExecutor<'_>, channel: ChannelId) -> Result<Vec<OverrideRow>, Error> {
    Ok(sqlx::query_as(
        "SELECT o.channel_id, o.target_type, o.target_id, o.allow, o.deny FROM channel_overrides o \
         LEFT JOIN roles r ON o.target_type = 'ROLE' AND r.id = o.target_id \
         WHERE o.channel_id = $1 \
         ORDER BY (o.target_type = 'MEMBER'), r.position DESC NULLS LAST, o.target_id",
    )
    .bind(channel)
    .fetch_all(db)
    .await?)
}

pub async fn get(db: impl PgExecutor<'_>, channel: ChannelId, target: Uuid) -> Result<Option<OverrideRow>, Error> {
    Ok(sqlx::query_as(
        "SELECT channel_id, target_type, target_id, allow, deny FROM channel_overrides \
         WHERE channel_id = $1 AND target_id = $2",
    )
    .bind(channel)
    .bind(target)
    .fetch_optional(db)
    .await?)
}

pub async fn count(db: impl PgExecutor<'_>, channel: ChannelId) -> Result<i64, Error> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM channel_overrides WHERE channel_id = $1")
            .bind(channel)
            .fetch_one(db)
            .await?,
    )
}

/// Creates or replaces the override of a target (the target id identifies it).
/// Creates or replaces the override of a target. One `INSERT … ON CONFLICT` per row, so
/// concurrent writers of the same override all succeed (the last one wins) instead of one of
/// them failing on the primary key.
pub async fn upsert(conn: &mut sqlx::PgConnection, row: &OverrideRow) -> Result<(), Error> {
    // A target id is a role or a member, never both; a row of the other type cannot exist, but
    // is removed should it ever.
    sqlx::query("DELETE FROM channel_overrides WHERE channel_id = $1 AND target_id = $2 AND target_type <> $3")
        .bind(row.channel_id)
        .bind(row.target_id)
        .bind(row.target_type)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO channel_overrides (channel_id, target_type, target_id, allow, deny) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (channel_id, target_type, target_id) DO UPDATE SET allow = EXCLUDED.allow, deny = EXCLUDED.deny",
    )
    .bind(row.channel_id)
    .bind(row.target_type)
    .bind(row.target_id)
    .bind(row.allow)
    .bind(row.deny)
    .execute(conn)
    .await
    .on_constraint("channel_overrides_channel_id_fkey", |_| Error::not_found())?;
    Ok(())
}

pub async fn delete(db: impl PgExecutor<'_>, channel: ChannelId, target: Uuid) -> Result<bool, Error> {
    let res = sqlx::query("DELETE FROM channel_overrides WHERE channel_id = $1 AND target_id = $2")
        .bind(channel)
        .bind(target)
        .execute(db)
        .await?;
    Ok(res.rows_affected() > 0)
}

/// Copies a parent's overrides to a new child (spec §4.9).
pub async fn copy(db: impl PgExecutor<'_>, from: ChannelId, to: ChannelId) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO channel_overrides (channel_id, target_type, target_id, allow, deny) \
         SELECT $2, target_type, target_id, allow, deny FROM channel_overrides WHERE channel_id = $1",
    )
    .bind(from)
    .bind(to)
    .execute(db)
    .await?;
    Ok(())
}
