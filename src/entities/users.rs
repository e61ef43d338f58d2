//! Users: the `User`/`UserExt` wire models and their SQL.

use schemars::JsonSchema;
use serde::Serialize;
use sqlx::{FromRow, PgExecutor, Row};

use crate::entities::sessions::SessionState;
use crate::error::Error;
use crate::functions::ids::{SessionId, UserId};

crate::wire_enum!(
    UserCategory {
        Bot = "BOT",
        Unverified = "UNVERIFIED",
    }
);

/// A user's public profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: UserId,
    pub name: String,
    pub avatar: Option<String>,
    pub description: Option<String>,
    pub category: Option<UserCategory>,
}

/// User with extended data including handle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserExt {
    pub id: UserId,
    pub name: String,
    pub avatar: Option<String>,
    pub description: Option<String>,
    pub category: Option<UserCategory>,
    /// The user's handle (if claimed)
    pub handle: Option<String>,
}

#[derive(FromRow)]
struct UserExtRow {
    id: UserId,
    name: String,
    avatar: Option<String>,
    description: Option<String>,
    category: Option<UserCategory>,
    handle: Option<String>,
}

impl From<UserExtRow> for UserExt {
    fn from(r: UserExtRow) -> Self {
        UserExt {
            id: r.id,
            name: r.name,
            avatar: r.avatar,
            description: r.description,
            category: r.category,
            handle: r.handle,
        }
    }
}

impl From<UserExt> for User {
    fn from(u: UserExt) -> Self {
        User {
            id: u.id,
            name: u.name,
            avatar: u.avatar,
            description: u.description,
            category: u.category,
        }
    }
}

/// A `UserExt` row's columns (`u` the user, `h` its handle).
const EXT_COLUMNS: &str = "u.id, u.name, u.avatar, u.description, u.category, h.handle";

pub async fn get_ext(db: impl PgExecutor<'_>, id: UserId) -> Result<Option<UserExt>, Error> {
    let row = sqlx::query_as::<_, UserExtRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {EXT_COLUMNS} FROM users u LEFT JOIN handles h ON h.user_id = u.id WHERE u.id = $1"
    )))
    .bind(id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(UserExt::from))
}

/// The state of `user`'s auth session and the user, in one round trip (a socket's
/// `authenticate`); the user is `None` when it does not exist.
pub async fn get_ext_with_session(
    db: impl PgExecutor<'_>,
    id: UserId,
    session: SessionId,
) -> Result<(SessionState, Option<UserExt>), Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT (SELECT revoked_at IS NOT NULL FROM auth_sessions WHERE id = $2 AND user_id = $1) \
         AS session_revoked, {EXT_COLUMNS} \
         FROM (SELECT) one LEFT JOIN users u ON u.id = $1 LEFT JOIN handles h ON h.user_id = u.id"
    )))
    .bind(id)
    .bind(session)
    .fetch_one(db)
    .await?;
    let state = SessionState::from_revoked(row.try_get("session_revoked")?);
    let user = match row.try_get::<Option<UserId>, _>("id")? {
        Some(_) => Some(UserExt::from(UserExtRow::from_row(&row)?)),
        None => None,
    };
    Ok((state, user))
}

pub async fn insert(db: impl PgExecutor<'_>, id: UserId, name: &str) -> Result<(), Error> {
    sqlx::query("INSERT INTO users (id, name) VALUES ($1, $2)")
        .bind(id)
        .bind(name)
        .execute(db)
        .await?;
    Ok(())
}

/// A validated profile change: `None` leaves a field unchanged, `Some(None)` clears it.
#[derive(Debug, Default)]
pub struct ProfileChange {
    pub name: Option<String>,
    pub avatar: Option<Option<String>>,
    pub description: Option<Option<String>>,
}

impl ProfileChange {
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.avatar.is_none() && self.description.is_none()
    }
}

/// Applies a profile change; returns whether the user exists.
pub async fn update_profile(db: impl PgExecutor<'_>, id: UserId, change: &ProfileChange) -> Result<bool, Error> {
    let res = sqlx::query(
        "UPDATE users SET \
           name = COALESCE($2, name), \
           avatar = CASE WHEN $3 THEN $4 ELSE avatar END, \
           description = CASE WHEN $5 THEN $6 ELSE description END \
         WHERE id = $1",
    )
    .bind(id)
    .bind(change.name.as_deref())
    .bind(change.avatar.is_some())
    .bind(change.avatar.clone().flatten())
    .bind(change.description.is_some())
    .bind(change.description.clone().flatten())
    .execute(db)
    .await?;
    Ok(res.rows_affected() == 1)
}
