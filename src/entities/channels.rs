//! Channels of spaces (spec §3.2 Channel, §4.9) and read markers (§12.5).

use schemars::JsonSchema;
use serde::Serialize;
use sqlx::{FromRow, PgExecutor};

use crate::error::{Error, ResultExt};
use crate::functions::ids::{ChannelId, SpaceId, UserId};
use crate::functions::time::Timestamp;

pub const MAX_DEPTH: usize = 8;
pub const MAX_PER_SPACE: i64 = 500;

crate::wire_enum!(
    ChannelType {
        Text = "TEXT",
        Voice = "VOICE",
        Document = "DOCUMENT",
        Application = "APPLICATION",
        Thread = "THREAD",
        Category = "CATEGORY",
    }
);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema, FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Channel {
    pub id: ChannelId,
    pub space_id: Option<SpaceId>,
    pub parent_id: Option<ChannelId>,
    pub order: i32,
    pub name: String,
    #[serde(rename = "type")]
    #[sqlx(rename = "type")]
    pub kind: ChannelType,
    pub last_updated: Option<Timestamp>,
}

/// A read marker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema, FromRow)]
#[serde(rename_all = "camelCase")]
pub struct ChannelUnread {
    pub channel_id: ChannelId,
    pub user_id: UserId,
    pub timestamp: Timestamp,
}

/// `lastUpdated`: the stored time (channel creation, document saves) or the newest message's
/// timestamp, whichever is later. Reading the newest message through the `(channel_id, id)`
/// index keeps message sends from updating one hot channel row in every transaction. The
/// `= ANY(ARRAY[..])` form keeps the planner on that index (see `messages::IN_CHANNEL`).
pub const LAST_UPDATED: &str = "GREATEST(c.last_updated, \
     (SELECT m.timestamp FROM messages m WHERE m.channel_id = ANY(ARRAY[c.id]) \
      ORDER BY m.channel_id DESC, m.id DESC LIMIT 1)) AS last_updated";

/// Every channel of a space, ordered by (`order`, id).
pub async fn list(db: impl PgExecutor<'_>, space: SpaceId) -> Result<Vec<Channel>, Error> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT c.id, c.space_id, c.parent_id, c.\"order\", c.name, c.type, {LAST_UPDATED} FROM channels c \
         WHERE c.space_id = $1 ORDER BY c.\"order\", c.id"
    )))
    .bind(space)
    .fetch_all(db)
    .await?)
}

/// A channel of this space (a channel of another space is not found).
pub async fn get(db: impl PgExecutor<'_>, space: SpaceId, id: ChannelId) -> Result<Option<Channel>, Error> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT c.id, c.space_id, c.parent_id, c.\"order\", c.name, c.type, {LAST_UPDATED} FROM channels c \
         WHERE c.space_id = $1 AND c.id = $2"
    )))
    .bind(space)
    .bind(id)
    .fetch_optional(db)
    .await?)
}

pub async fn count(db: impl PgExecutor<'_>, space: SpaceId) -> Result<i64, Error> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM channels WHERE space_id = $1")
        .bind(space)
        .fetch_one(db)
        .await?)
}

pub async fn insert(conn: &mut sqlx::PgConnection, c: &Channel) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO channels (id, space_id, parent_id, \"order\", name, type, last_updated) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(c.id)
    .bind(c.space_id)
    .bind(c.parent_id)
    .bind(c.order)
    .bind(&c.name)
    .bind(c.kind)
    .bind(c.last_updated)
    .execute(&mut *conn)
    .await
    // The space or the parent was deleted meanwhile.
    .on_constraints(&[
        ("channels_space_id_fkey", Error::not_found),
        ("channels_parent_id_fkey", Error::not_found),
    ])?;
    if c.kind == ChannelType::Document {
        sqlx::query("INSERT INTO documents (channel_id) VALUES ($1)")
            .bind(c.id)
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// The `order` for a new child of `parent`: one past its siblings' maximum, or 0.
pub async fn next_order(db: impl PgExecutor<'_>, space: SpaceId, parent: Option<ChannelId>) -> Result<i32, Error> {
    let max: Option<i32> = sqlx::query_scalar(
        "SELECT max(\"order\") FROM channels WHERE space_id = $1 AND parent_id IS NOT DISTINCT FROM $2",
    )
    .bind(space)
    .bind(parent)
    .fetch_one(db)
    .await?;
    Ok(max.map(|m| m.saturating_add(1)).unwrap_or(0))
}

pub async fn update(db: impl PgExecutor<'_>, c: &Channel) -> Result<(), Error> {
    sqlx::query("UPDATE channels SET name = $2, \"order\" = $3, parent_id = $4 WHERE id = $1")
        .bind(c.id)
        .bind(&c.name)
        .bind(c.order)
        .bind(c.parent_id)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn delete(db: impl PgExecutor<'_>, id: ChannelId) -> Result<(), Error> {
    sqlx::query("DELETE FROM channels WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Depth of a channel in its tree (a top-level channel has depth 1).
pub fn depth(all: &[Channel], id: ChannelId) -> usize {
    let mut depth = 0;
    let mut cur = Some(id);
    while let Some(c) = cur.and_then(|id| all.iter().find(|c| c.id == id)) {
        depth += 1;
        if depth > all.len() {
            break; // a cycle cannot exist, but never loop forever
        }
        cur = c.parent_id;
    }
    depth
}

/// `id` and all its descendants, deepest first.
pub fn subtree_deepest_first(all: &[Channel], id: ChannelId) -> Vec<ChannelId> {
    let mut levels: Vec<Vec<ChannelId>> = vec![vec![id]];
    loop {
        let last = levels.last().cloned().unwrap_or_default();
        let next: Vec<ChannelId> = all
            .iter()
            .filter(|c| c.parent_id.is_some_and(|p| last.contains(&p)))
            .map(|c| c.id)
            .collect();
        if next.is_empty() || levels.len() > all.len() {
            break;
        }
        levels.push(next);
    }
    levels.into_iter().rev().flatten().collect()
}

/// Height of the subtree under `id` (a leaf has height 1).
pub fn height(all: &[Channel], id: ChannelId) -> usize {
    let children: Vec<ChannelId> = all.iter().filter(|c| c.parent_id == Some(id)).map(|c| c.id).collect();
    1 + children.iter().map(|c| height(all, *c)).max().unwrap_or(0)
}

/// My read markers in a space.
pub async fn unreads(db: impl PgExecutor<'_>, space: SpaceId, user: UserId) -> Result<Vec<ChannelUnread>, Error> {
    Ok(sqlx::query_as(
        "SELECT u.channel_id, u.user_id, u.timestamp FROM channel_unreads u \
         JOIN channels c ON c.id = u.channel_id WHERE c.space_id = $1 AND u.user_id = $2 ORDER BY u.channel_id",
    )
    .bind(space)
    .bind(user)
    .fetch_all(db)
    .await?)
}

pub async fn acknowledge(
    db: impl PgExecutor<'_>,
    channel: ChannelId,
    user: UserId,
    at: Timestamp,
) -> Result<ChannelUnread, Error> {
    sqlx::query_as(
        "INSERT INTO channel_unreads (channel_id, user_id, timestamp) VALUES ($1, $2, $3) \
         ON CONFLICT (user_id, channel_id) DO UPDATE SET timestamp = EXCLUDED.timestamp \
         RETURNING channel_id, user_id, timestamp",
    )
    .bind(channel)
    .bind(user)
    .bind(at)
    .fetch_one(db)
    .await
    .on_constraint("channel_unreads_channel_id_fkey", |_| Error::not_found())
}

/// The space (none for a DM channel) and type of a channel, by id alone.
pub async fn locate(db: impl PgExecutor<'_>, id: ChannelId) -> Result<Option<(Option<SpaceId>, ChannelType)>, Error> {
    Ok(sqlx::query_as("SELECT space_id, type FROM channels WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await?)
}

/// Marks the channel as updated now (a document save moves `lastUpdated`).
pub async fn touch(db: impl PgExecutor<'_>, id: ChannelId) -> Result<(), Error> {
    sqlx::query("UPDATE channels SET last_updated = now() WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(id: u128, parent: Option<u128>) -> Channel {
        Channel {
            id: ChannelId(uuid::Uuid::from_u128(id)),
            space_id: None,
            parent_id: parent.map(|p| ChannelId(uuid::Uuid::from_u128(p))),
            order: 0,
            name: "c".into(),
            kind: ChannelType::Text,
            last_updated: None,
        }
    }

    #[test]
    fn tree_helpers() {
        let all = vec![ch(1, None), ch(2, Some(1)), ch(3, Some(2)), ch(4, Some(1)), ch(5, None)];
        let id = |n| ChannelId(uuid::Uuid::from_u128(n));
        assert_eq!(depth(&all, id(3)), 3);
        assert_eq!(depth(&all, id(5)), 1);
        assert_eq!(height(&all, id(1)), 3);
        assert_eq!(height(&all, id(3)), 1);
        let sub = subtree_deepest_first(&all, id(1));
        assert_eq!(sub.first(), Some(&id(3)));
        assert_eq!(sub.last(), Some(&id(1)));
        assert_eq!(sub.len(), 4);
    }
}
