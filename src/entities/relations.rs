//! Relationships and DM channels (spec §3.2 RelationshipExt, §4.5, §4.6).

use schemars::JsonSchema;
use serde::Serialize;
use sqlx::{FromRow, PgExecutor};
use uuid::Uuid;

use crate::entities::channels::{Channel, LAST_UPDATED};
use crate::entities::users::{UserCategory, UserExt};
use crate::error::{Error, ResultExt};
use crate::functions::ids::{ChannelId, SpaceId, UserId};

pub const MAX_ROWS: i64 = 1000;
pub const MAX_PENDING_OUTGOING: i64 = 100;

crate::wire_enum!(
    RelationState {
        None = "NONE",
        Friend = "FRIEND",
        Blocked = "BLOCKED",
        IncomingRequest = "INCOMING_REQUEST",
        OutgoingRequest = "OUTGOING_REQUEST",
    }
);

/// Relationship with extended data including the related user
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RelationshipExt {
    pub id: Uuid,
    pub user_id: UserId,
    pub relation_id: UserId,
    pub state: RelationState,
    pub channel_id: Option<ChannelId>,
    pub user: UserExt,
}

/// A stored row.
#[derive(Debug, Clone, Copy, FromRow)]
pub struct Row {
    pub id: Uuid,
    pub user_id: UserId,
    pub relation_id: UserId,
    pub state: RelationState,
    pub channel_id: Option<ChannelId>,
}

#[derive(FromRow)]
struct ExtRow {
    id: Uuid,
    user_id: UserId,
    relation_id: UserId,
    state: RelationState,
    channel_id: Option<ChannelId>,
    name: String,
    avatar: Option<String>,
    description: Option<String>,
    category: Option<UserCategory>,
    handle: Option<String>,
}

impl From<ExtRow> for RelationshipExt {
    fn from(r: ExtRow) -> Self {
        RelationshipExt {
            id: r.id,
            user_id: r.user_id,
            relation_id: r.relation_id,
            state: r.state,
            channel_id: r.channel_id,
            user: UserExt {
                id: r.relation_id,
                name: r.name,
                avatar: r.avatar,
                description: r.description,
                category: r.category,
                handle: r.handle,
            },
        }
    }
}

const SELECT_EXT: &str = "SELECT r.id, r.user_id, r.relation_id, r.state, r.channel_id, u.name, u.avatar, u.description, \
     u.category, h.handle FROM relationships r JOIN users u ON u.id = r.relation_id LEFT JOIN handles h ON h.user_id = u.id";

pub async fn list(db: impl PgExecutor<'_>, user: UserId) -> Result<Vec<RelationshipExt>, Error> {
    let rows: Vec<ExtRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT_EXT} WHERE r.user_id = $1 ORDER BY r.id LIMIT {MAX_ROWS}"
    )))
    .bind(user)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(RelationshipExt::from).collect())
}

/// A user's spaces and relationship rows (at most [`MAX_ROWS`]) in one round trip: what the
/// gateway needs to route a newly connected user's events.
pub async fn spaces_and_rows(db: impl PgExecutor<'_>, user: UserId) -> Result<(Vec<SpaceId>, Vec<Row>), Error> {
    // Space rows carry only the space id; relationship rows never lack `relation_id`.
    #[derive(FromRow)]
    struct Either {
        id: Uuid,
        relation_id: Option<UserId>,
        state: Option<RelationState>,
        channel_id: Option<ChannelId>,
    }
    let rows: Vec<Either> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT space_id AS id, NULL::uuid AS relation_id, NULL::text AS state, NULL::uuid AS channel_id \
         FROM members WHERE user_id = $1 \
         UNION ALL (SELECT id, relation_id, state, channel_id FROM relationships \
                    WHERE user_id = $1 ORDER BY id LIMIT {MAX_ROWS})"
    )))
    .bind(user)
    .fetch_all(db)
    .await?;
    let mut spaces = Vec::new();
    let mut relations = Vec::new();
    for r in rows {
        match (r.relation_id, r.state) {
            (Some(relation_id), Some(state)) => relations.push(Row {
                id: r.id,
                user_id: user,
                relation_id,
                state,
                channel_id: r.channel_id,
            }),
            _ => spaces.push(SpaceId(r.id)),
        }
    }
    Ok((spaces, relations))
}

/// `user`'s row about `other`, as the wire model.
pub async fn get_ext(db: impl PgExecutor<'_>, user: UserId, other: UserId) -> Result<Option<RelationshipExt>, Error> {
    let row: Option<ExtRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{SELECT_EXT} WHERE r.user_id = $1 AND r.relation_id = $2"
    )))
    .bind(user)
    .bind(other)
    .fetch_optional(db)
    .await?;
    Ok(row.map(RelationshipExt::from))
}

/// `user`'s row about `other`, locked for the rest of the transaction.
pub async fn get_for_update(db: impl PgExecutor<'_>, user: UserId, other: UserId) -> Result<Option<Row>, Error> {
    Ok(sqlx::query_as(
        "SELECT id, user_id, relation_id, state, channel_id FROM relationships \
         WHERE user_id = $1 AND relation_id = $2 FOR UPDATE",
    )
    .bind(user)
    .bind(other)
    .fetch_optional(db)
    .await?)
}

/// Creates or updates `user`'s row about `other` (the row keeps its id when it exists).
pub async fn upsert(db: impl PgExecutor<'_>, user: UserId, other: UserId, state: RelationState) -> Result<Uuid, Error> {
    sqlx::query_scalar(
        "INSERT INTO relationships (id, user_id, relation_id, state) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (user_id, relation_id) DO UPDATE SET state = EXCLUDED.state RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(user)
    .bind(other)
    .bind(state)
    .fetch_one(db)
    .await
    // The other user was deleted meanwhile.
    .on_constraint("relationships_relation_id_fkey", |_| Error::not_found())
}

/// Deletes `user`'s row about `other`; returns its id if there was one.
pub async fn delete(db: impl PgExecutor<'_>, user: UserId, other: UserId) -> Result<Option<Uuid>, Error> {
    Ok(
        sqlx::query_scalar("DELETE FROM relationships WHERE user_id = $1 AND relation_id = $2 RETURNING id")
            .bind(user)
            .bind(other)
            .fetch_optional(db)
            .await?,
    )
}

pub async fn count_rows(db: impl PgExecutor<'_>, user: UserId) -> Result<i64, Error> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM relationships WHERE user_id = $1")
            .bind(user)
            .fetch_one(db)
            .await?,
    )
}

pub async fn count_outgoing(db: impl PgExecutor<'_>, user: UserId) -> Result<i64, Error> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM relationships WHERE user_id = $1 AND state = 'OUTGOING_REQUEST'")
            .bind(user)
            .fetch_one(db)
            .await?,
    )
}

/// Creates a DM channel for a pair and links both rows to it.
pub async fn open_dm(conn: &mut sqlx::PgConnection, a: UserId, b: UserId) -> Result<ChannelId, Error> {
    let id = ChannelId::new();
    sqlx::query("INSERT INTO channels (id, space_id, \"order\", name, type) VALUES ($1, NULL, 0, '', 'TEXT')")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("UPDATE relationships SET channel_id = $3 WHERE (user_id, relation_id) IN (($1, $2), ($2, $1))")
        .bind(a)
        .bind(b)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(id)
}

/// The DM channel as `viewer` sees it: named after the other participant.
pub async fn dm_channel(db: impl PgExecutor<'_>, channel: ChannelId, viewer: UserId) -> Result<Option<Channel>, Error> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT c.id, c.space_id, c.parent_id, c.\"order\", u.name, c.type, {LAST_UPDATED} \
         FROM relationships r JOIN channels c ON c.id = r.channel_id JOIN users u ON u.id = r.relation_id \
         WHERE r.channel_id = $1 AND r.user_id = $2"
    )))
    .bind(channel)
    .bind(viewer)
    .fetch_optional(db)
    .await?)
}

/// The other participant, if `user` is a participant of DM `channel` (a `FRIEND` row with it).
pub async fn dm_partner(db: impl PgExecutor<'_>, channel: ChannelId, user: UserId) -> Result<Option<UserId>, Error> {
    Ok(sqlx::query_scalar(
        "SELECT relation_id FROM relationships WHERE channel_id = $1 AND user_id = $2 AND state = 'FRIEND'",
    )
    .bind(channel)
    .bind(user)
    .fetch_optional(db)
    .await?)
}

/// Deletes a DM channel (its messages cascade; the rows' `channel_id` becomes null).
pub async fn delete_dm(db: impl PgExecutor<'_>, channel: ChannelId) -> Result<(), Error> {
    sqlx::query("DELETE FROM channels WHERE id = $1 AND space_id IS NULL")
        .bind(channel)
        .execute(db)
        .await?;
    Ok(())
}

/// My read markers of DM channels I still participate in.
pub async fn dm_unreads(
    db: impl PgExecutor<'_>,
    user: UserId,
) -> Result<Vec<crate::entities::channels::ChannelUnread>, Error> {
    Ok(sqlx::query_as(
        "SELECT u.channel_id, u.user_id, u.timestamp FROM channel_unreads u \
         JOIN relationships r ON r.channel_id = u.channel_id AND r.user_id = u.user_id AND r.state = 'FRIEND' \
         WHERE u.user_id = $1 ORDER BY u.channel_id",
    )
    .bind(user)
    .fetch_all(db)
    .await?)
}

/// Whether `viewer` may see `target`'s profile (spec §4.17 `users.get`): self, a shared space,
/// or a relationship row in either direction.
pub async fn can_see_profile(db: impl PgExecutor<'_>, viewer: UserId, target: UserId) -> Result<bool, Error> {
    Ok(sqlx::query_scalar(
        "SELECT $1 = $2 \
         OR EXISTS (SELECT 1 FROM members a JOIN members b ON a.space_id = b.space_id WHERE a.user_id = $1 AND b.user_id = $2) \
         OR EXISTS (SELECT 1 FROM relationships WHERE (user_id, relation_id) IN (($1, $2), ($2, $1)))",
    )
    .bind(viewer)
    .bind(target)
    .fetch_one(db)
    .await?)
}

/// Which of `targets` are in `viewer`'s profile audience (spec §7.8): `viewer` themself, users
/// sharing a space with them, and users with a `FRIEND` or pending-request row in either
/// direction (a block removes the blocked side's row, so blocked pairs only count through a
/// shared space).
pub async fn profile_audience_of(
    db: impl PgExecutor<'_>,
    viewer: UserId,
    targets: &[UserId],
) -> Result<Vec<UserId>, Error> {
    let targets: Vec<Uuid> = targets.iter().map(|t| t.0).collect();
    Ok(sqlx::query_scalar(
        "SELECT t FROM unnest($2::uuid[]) AS t WHERE t = $1 \
         OR EXISTS (SELECT 1 FROM members a JOIN members b ON a.space_id = b.space_id WHERE a.user_id = $1 AND b.user_id = t) \
         OR EXISTS (SELECT 1 FROM relationships r WHERE ((r.user_id = $1 AND r.relation_id = t) OR (r.user_id = t AND r.relation_id = $1)) \
                    AND r.state IN ('FRIEND', 'INCOMING_REQUEST', 'OUTGOING_REQUEST'))",
    )
    .bind(viewer)
    .bind(targets)
    .fetch_all(db)
    .await?)
}
