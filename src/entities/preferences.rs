//! Notification preferences (spec §4.8, §12.3).

use schemars::JsonSchema;
use serde::Serialize;
use sqlx::{FromRow, PgExecutor};

use crate::error::{Error, ResultExt};
use crate::functions::ids::{SpaceId, UserId};

crate::wire_enum!(
    NotificationLevel {
        All = "ALL",
        Mentions = "MENTIONS",
        Nothing = "NOTHING",
    }
);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema, FromRow)]
#[serde(rename_all = "camelCase")]
pub struct NotificationPreference {
    pub user_id: UserId,
    pub space_id: SpaceId,
    pub level: NotificationLevel,
}

/// Explicitly set preferences of a user.
pub async fn list(db: impl PgExecutor<'_>, user: UserId) -> Result<Vec<NotificationPreference>, Error> {
    Ok(sqlx::query_as(
        "SELECT user_id, space_id, level FROM notification_preferences WHERE user_id = $1 ORDER BY space_id",
    )
    .bind(user)
    .fetch_all(db)
    .await?)
}

/// The preference for one space; `ALL` when never set.
pub async fn get(db: impl PgExecutor<'_>, user: UserId, space: SpaceId) -> Result<NotificationPreference, Error> {
    let level: Option<NotificationLevel> =
        sqlx::query_scalar("SELECT level FROM notification_preferences WHERE user_id = $1 AND space_id = $2")
            .bind(user)
            .bind(space)
            .fetch_optional(db)
            .await?;
    Ok(NotificationPreference {
        user_id: user,
        space_id: space,
        level: level.unwrap_or(NotificationLevel::All),
    })
}

pub async fn set(
    db: impl PgExecutor<'_>,
    user: UserId,
    space: SpaceId,
    level: NotificationLevel,
) -> Result<NotificationPreference, Error> {
    sqlx::query_as(
        "INSERT INTO notification_preferences (user_id, space_id, level) VALUES ($1, $2, $3) \
         ON CONFLICT (user_id, space_id) DO UPDATE SET level = EXCLUDED.level RETURNING user_id, space_id, level",
    )
    .bind(user)
    .bind(space)
    .bind(level)
    .fetch_one(db)
    .await
    .on_constraint("notification_preferences_space_id_fkey", |_| Error::not_found())
}
