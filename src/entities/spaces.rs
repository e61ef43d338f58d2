//! Spaces (spec §3.2 SpaceExt, §4.8).

use schemars::JsonSchema;
use serde::Serialize;
use sqlx::{FromRow, PgExecutor};

use crate::entities::access::{self, visible_channels};
use crate::entities::channels::{self, Channel};
use crate::entities::roles::{self, Role};
use crate::error::Error;
use crate::functions::ids::{SpaceId, UserId};
use crate::functions::permissions::Standing;

/// Spaces a user may be a member of (owned ones included).
pub const MAX_PER_USER: i64 = 200;

crate::wire_enum!(
    SpaceType {
        None = "NONE",
        Dm = "DM",
        Group = "GROUP",
    }
);

crate::wire_enum!(
    SpaceVisibility {
        Private = "PRIVATE",
        Public = "PUBLIC",
    }
);

/// Represents a Mikoto Space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "SpaceExt")]
pub struct SpaceExt {
    pub id: SpaceId,
    pub name: String,
    pub icon: Option<String>,
    pub owner_id: Option<UserId>,
    #[serde(rename = "type")]
    pub kind: SpaceType,
    pub visibility: Option<SpaceVisibility>,
    /// The space's handle (if claimed)
    pub handle: Option<String>,
    pub roles: Vec<Role>,
    pub channels: Vec<Channel>,
    pub member_count: i64,
}

#[derive(Debug, Clone, FromRow)]
pub struct SpaceRow {
    pub id: SpaceId,
    pub name: String,
    pub icon: Option<String>,
    pub owner_id: UserId,
    #[sqlx(rename = "type")]
    pub kind: SpaceType,
    pub visibility: Option<SpaceVisibility>,
    pub handle: Option<String>,
}

/// Whose view of the space a `SpaceExt` shows.
#[derive(Clone, Copy)]
pub enum View<'a> {
    /// A member: only the channels they can view.
    Member(&'a Standing),
    /// Everything (internal use: events shaped per recipient later).
    Everything,
    /// Not a member (invite preview): no roles, no channels.
    Outsider,
}

pub async fn get(db: impl PgExecutor<'_>, id: SpaceId) -> Result<Option<SpaceRow>, Error> {
    Ok(sqlx::query_as(
        "SELECT s.id, s.name, s.icon, s.owner_id, s.type, s.visibility, h.handle \
         FROM spaces s LEFT JOIN handles h ON h.space_id = s.id WHERE s.id = $1",
    )
    .bind(id)
    .fetch_optional(db)
    .await?)
}

/// A user's spaces in join order.
pub async fn list_for_user(db: impl PgExecutor<'_>, user: UserId) -> Result<Vec<SpaceRow>, Error> {
    Ok(sqlx::query_as(
        "SELECT s.id, s.name, s.icon, s.owner_id, s.type, s.visibility, h.handle \
         FROM members m JOIN spaces s ON s.id = m.space_id LEFT JOIN handles h ON h.space_id = s.id \
         WHERE m.user_id = $1 ORDER BY m.id LIMIT $2",
    )
    .bind(user)
    .bind(MAX_PER_USER)
    .fetch_all(db)
    .await?)
}

pub async fn count_for_user(db: impl PgExecutor<'_>, user: UserId) -> Result<i64, Error> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM members WHERE user_id = $1")
        .bind(user)
        .fetch_one(db)
        .await?)
}

pub async fn member_count(db: impl PgExecutor<'_>, id: SpaceId) -> Result<i64, Error> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM members WHERE space_id = $1")
        .bind(id)
        .fetch_one(db)
        .await?)
}

/// Assembles the wire model.
pub async fn ext(conn: &mut sqlx::PgConnection, row: &SpaceRow, view: View<'_>) -> Result<SpaceExt, Error> {
    let (roles, channels) = match view {
        View::Outsider => (Vec::new(), Vec::new()),
        View::Everything => {
            let roles = roles::list(&mut *conn, row.id).await?;
            (roles, channels::list(&mut *conn, row.id).await?)
        }
        View::Member(standing) => {
            let roles = roles::list(&mut *conn, row.id).await?;
            let all = channels::list(&mut *conn, row.id).await?;
            let overrides = access::space_overrides(&mut *conn, row.id).await?;
            (roles, visible_channels(standing, &all, &overrides))
        }
    };
    Ok(SpaceExt {
        id: row.id,
        name: row.name.clone(),
        icon: row.icon.clone(),
        owner_id: Some(row.owner_id),
        kind: row.kind,
        visibility: row.visibility,
        handle: row.handle.clone(),
        roles: roles.iter().map(|r| r.wire()).collect(),
        channels,
        member_count: member_count(&mut *conn, row.id).await?,
    })
}

pub async fn insert(db: impl PgExecutor<'_>, row: &SpaceRow) -> Result<(), Error> {
    sqlx::query("INSERT INTO spaces (id, name, icon, owner_id, type, visibility) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(row.id)
        .bind(&row.name)
        .bind(&row.icon)
        .bind(row.owner_id)
        .bind(row.kind)
        .bind(row.visibility)
        .execute(db)
        .await?;
    Ok(())
}

/// Saves name, icon, visibility and owner.
pub async fn update(db: impl PgExecutor<'_>, row: &SpaceRow) -> Result<(), Error> {
    sqlx::query("UPDATE spaces SET name = $2, icon = $3, visibility = $4, owner_id = $5 WHERE id = $1")
        .bind(row.id)
        .bind(&row.name)
        .bind(&row.icon)
        .bind(row.visibility)
        .bind(row.owner_id)
        .execute(db)
        .await?;
    Ok(())
}

/// Deletes a space; channels, roles, members, invites, bans and handles cascade.
pub async fn delete(db: impl PgExecutor<'_>, id: SpaceId) -> Result<(), Error> {
    sqlx::query("DELETE FROM spaces WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Finds a space by its handle (case-insensitive).
pub async fn by_handle(db: impl PgExecutor<'_>, handle: &str) -> Result<Option<SpaceRow>, Error> {
    Ok(sqlx::query_as(
        "SELECT s.id, s.name, s.icon, s.owner_id, s.type, s.visibility, h.handle \
         FROM handles h JOIN spaces s ON s.id = h.space_id WHERE h.handle = lower($1)",
    )
    .bind(handle)
    .fetch_optional(db)
    .await?)
}
