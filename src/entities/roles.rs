//! Roles (spec §3.2 Role, §4.14, §5.2).

use schemars::JsonSchema;
use serde::Serialize;
use sqlx::{FromRow, PgExecutor};

use crate::error::{Error, ResultExt};
use crate::functions::ids::{RoleId, SpaceId};
use crate::functions::permissions::Permissions;

pub const DEFAULT_NAME: &str = "@everyone";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Role {
    pub id: RoleId,
    pub space_id: SpaceId,
    pub name: String,
    pub color: Option<String>,
    /// Decimal u64 with only defined bits.
    pub permissions: String,
    pub position: i32,
}

/// A role as stored.
#[derive(Debug, Clone, FromRow)]
pub struct RoleRow {
    pub id: RoleId,
    pub space_id: SpaceId,
    pub name: String,
    pub color: Option<String>,
    pub permissions: i64,
    pub position: i32,
    pub is_default: bool,
}

impl RoleRow {
    pub fn perms(&self) -> Permissions {
        Permissions::from_stored(self.permissions)
    }

    pub fn wire(&self) -> Role {
        Role {
            id: self.id,
            space_id: self.space_id,
            name: self.name.clone(),
            color: self.color.clone(),
            permissions: self.perms().to_decimal(),
            position: self.position,
        }
    }
}

/// Every role of a space, as `SpaceExt.roles` orders them: position descending, then id.
pub async fn list(db: impl PgExecutor<'_>, space: SpaceId) -> Result<Vec<RoleRow>, Error> {
    Ok(sqlx::query_as(
        "SELECT id, space_id, name, color, permissions, position, is_default FROM roles \
         WHERE space_id = $1 ORDER BY position DESC, id",
    )
    .bind(space)
    .fetch_all(db)
    .await?)
}

pub async fn get(db: impl PgExecutor<'_>, space: SpaceId, role: RoleId) -> Result<Option<RoleRow>, Error> {
    Ok(sqlx::query_as(
        "SELECT id, space_id, name, color, permissions, position, is_default FROM roles \
         WHERE space_id = $1 AND id = $2",
    )
    .bind(space)
    .bind(role)
    .fetch_optional(db)
    .await?)
}

pub async fn count(db: impl PgExecutor<'_>, space: SpaceId) -> Result<i64, Error> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM roles WHERE space_id = $1")
        .bind(space)
        .fetch_one(db)
        .await?)
}

pub async fn insert(db: impl PgExecutor<'_>, row: &RoleRow) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO roles (id, space_id, name, color, permissions, position, is_default) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(row.id)
    .bind(row.space_id)
    .bind(&row.name)
    .bind(&row.color)
    .bind(row.permissions)
    .bind(row.position)
    .bind(row.is_default)
    .execute(db)
    .await
    .on_constraint("roles_space_id_fkey", |_| Error::not_found())?;
    Ok(())
}

pub async fn update(db: impl PgExecutor<'_>, row: &RoleRow) -> Result<(), Error> {
    sqlx::query("UPDATE roles SET name = $2, color = $3, permissions = $4, position = $5 WHERE id = $1")
        .bind(row.id)
        .bind(&row.name)
        .bind(&row.color)
        .bind(row.permissions)
        .bind(row.position)
        .execute(db)
        .await?;
    Ok(())
}

/// Deletes a role with its channel overrides (assignments cascade).
pub async fn delete(conn: &mut sqlx::PgConnection, role: RoleId) -> Result<(), Error> {
    sqlx::query("DELETE FROM channel_overrides WHERE target_type = 'ROLE' AND target_id = $1")
        .bind(role)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM roles WHERE id = $1")
        .bind(role)
        .execute(conn)
        .await?;
    Ok(())
}
