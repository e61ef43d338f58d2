//! Bans (spec §3.2 BanInfo, §4.15).

use schemars::JsonSchema;
use serde::Serialize;
use sqlx::{FromRow, PgExecutor};

use crate::entities::users::{User, UserCategory};
use crate::error::{Error, ErrorCode, ResultExt};
use crate::functions::ids::{BanId, SpaceId, UserId};

pub const REASON_MAX: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BanInfo {
    pub id: BanId,
    pub user_id: UserId,
    pub space_id: SpaceId,
    pub reason: Option<String>,
    pub user: Option<User>,
}

#[derive(FromRow)]
struct BanRow {
    id: BanId,
    user_id: UserId,
    space_id: SpaceId,
    reason: Option<String>,
    name: String,
    avatar: Option<String>,
    description: Option<String>,
    category: Option<UserCategory>,
}

impl From<BanRow> for BanInfo {
    fn from(r: BanRow) -> Self {
        BanInfo {
            id: r.id,
            user_id: r.user_id,
            space_id: r.space_id,
            reason: r.reason,
            user: Some(User {
                id: r.user_id,
                name: r.name,
                avatar: r.avatar,
                description: r.description,
                category: r.category,
            }),
        }
    }
}

/// Bans of a space in creation order, after the ban id `after`.
pub async fn list(
    db: impl PgExecutor<'_>,
    space: SpaceId,
    after: Option<BanId>,
    limit: i64,
) -> Result<Vec<BanInfo>, Error> {
    let rows: Vec<BanRow> = sqlx::query_as(
        "SELECT b.id, b.user_id, b.space_id, b.reason, u.name, u.avatar, u.description, u.category \
         FROM bans b JOIN users u ON u.id = b.user_id \
         WHERE b.space_id = $1 AND ($2::uuid IS NULL OR b.id > $2) ORDER BY b.id LIMIT $3",
    )
    .bind(space)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(BanInfo::from).collect())
}

pub async fn is_banned(db: impl PgExecutor<'_>, space: SpaceId, user: UserId) -> Result<bool, Error> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM bans WHERE space_id = $1 AND user_id = $2)")
            .bind(space)
            .bind(user)
            .fetch_one(db)
            .await?,
    )
}

/// Records a ban; 409 `AlreadyBanned` when one exists.
pub async fn insert(
    conn: &mut sqlx::PgConnection,
    space: SpaceId,
    user: UserId,
    reason: Option<&str>,
) -> Result<BanInfo, Error> {
    let id = BanId::new();
    sqlx::query("INSERT INTO bans (id, space_id, user_id, reason) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(space)
        .bind(user)
        .bind(reason)
        .execute(&mut *conn)
        .await
        .on_constraints(&[
            ("bans_space_user_key", || {
                Error::new(ErrorCode::AlreadyBanned, "This user is already banned")
            }),
            // The space or the user was deleted meanwhile.
            ("bans_space_id_fkey", Error::not_found),
            ("bans_user_id_fkey", Error::not_found),
        ])?;
    let row: BanRow = sqlx::query_as(
        "SELECT b.id, b.user_id, b.space_id, b.reason, u.name, u.avatar, u.description, u.category \
         FROM bans b JOIN users u ON u.id = b.user_id WHERE b.id = $1",
    )
    .bind(id)
    .fetch_one(conn)
    .await?;
    Ok(row.into())
}

pub async fn delete(db: impl PgExecutor<'_>, space: SpaceId, user: UserId) -> Result<(), Error> {
    sqlx::query("DELETE FROM bans WHERE space_id = $1 AND user_id = $2")
        .bind(space)
        .bind(user)
        .execute(db)
        .await?;
    Ok(())
}
