//! Web Push subscriptions (spec §4.7, §12.2): one row per browser subscription.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sqlx::{FromRow, PgExecutor};
use uuid::Uuid;

use crate::error::{Error, ErrorCode};
use crate::functions::ids::UserId;

/// Subscriptions a user may hold; a new one evicts the oldest.
pub const MAX_PER_USER: i64 = 20;

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SubscribePayload {
    #[schemars(length(max = crate::functions::push_transport::MAX_ENDPOINT_LEN))]
    pub endpoint: String,
    pub p256dh: String,
    pub auth: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SubscribeResponse {
    pub id: Uuid,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct UnsubscribePayload {
    pub endpoint: String,
}

#[derive(Debug, Clone, FromRow)]
pub struct Subscription {
    pub id: Uuid,
    pub user_id: UserId,
    pub endpoint: String,
    pub p256dh: String,
    pub auth: String,
}

/// Stores `user`'s subscription (keys in canonical base64url). An endpoint held by another user
/// moves to `user` only when the keys are the same (the same browser subscription); otherwise
/// 409 `Conflict`. Keeps the user's newest [`MAX_PER_USER`]. Returns the row's id.
pub async fn subscribe(
    conn: &mut sqlx::PgConnection,
    user: UserId,
    endpoint: &str,
    p256dh: &str,
    auth: &str,
) -> Result<Uuid, Error> {
    // One writer per endpoint at a time: the check and the write below are then atomic.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))")
        .bind(endpoint)
        .execute(&mut *conn)
        .await?;
    let existing: Option<Subscription> =
        sqlx::query_as("SELECT id, user_id, endpoint, p256dh, auth FROM push_subscriptions WHERE endpoint = $1")
            .bind(endpoint)
            .fetch_optional(&mut *conn)
            .await?;
    let id = match existing {
        Some(row) if row.user_id != user && (row.p256dh != p256dh || row.auth != auth) => {
            return Err(Error::new(
                ErrorCode::Conflict,
                "This endpoint belongs to another subscription",
            ));
        }
        Some(row) => {
            sqlx::query(
                "UPDATE push_subscriptions SET user_id = $2, p256dh = $3, auth = $4, created_at = now() WHERE id = $1",
            )
            .bind(row.id)
            .bind(user)
            .bind(p256dh)
            .bind(auth)
            .execute(&mut *conn)
            .await?;
            row.id
        }
        None => {
            let id = Uuid::now_v7();
            sqlx::query(
                "INSERT INTO push_subscriptions (id, user_id, endpoint, p256dh, auth) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id)
            .bind(user)
            .bind(endpoint)
            .bind(p256dh)
            .bind(auth)
            .execute(&mut *conn)
            .await?;
            id
        }
    };
    sqlx::query(
        "DELETE FROM push_subscriptions WHERE id IN (SELECT id FROM push_subscriptions WHERE user_id = $1 \
         ORDER BY created_at DESC, id DESC OFFSET $2)",
    )
    .bind(user)
    .bind(MAX_PER_USER)
    .execute(&mut *conn)
    .await?;
    Ok(id)
}

pub async fn unsubscribe(db: impl PgExecutor<'_>, user: UserId, endpoint: &str) -> Result<(), Error> {
    sqlx::query("DELETE FROM push_subscriptions WHERE user_id = $1 AND endpoint = $2")
        .bind(user)
        .bind(endpoint)
        .execute(db)
        .await?;
    Ok(())
}

/// The subscriptions of `users`.
pub async fn of_users(db: impl PgExecutor<'_>, users: &[UserId]) -> Result<Vec<Subscription>, Error> {
    Ok(sqlx::query_as(
        "SELECT id, user_id, endpoint, p256dh, auth FROM push_subscriptions WHERE user_id = ANY($1) ORDER BY id",
    )
    .bind(users)
    .fetch_all(db)
    .await?)
}

/// Removes a subscription the push service said is gone (404/410).
pub async fn prune(db: impl PgExecutor<'_>, id: Uuid) -> Result<(), Error> {
    sqlx::query("DELETE FROM push_subscriptions WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Of `space`'s members, those with at least one subscription (the only ones a push can reach).
pub async fn subscribed_members(
    db: impl PgExecutor<'_>,
    space: crate::functions::ids::SpaceId,
) -> Result<Vec<UserId>, Error> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT m.user_id FROM members m JOIN push_subscriptions p ON p.user_id = m.user_id \
         WHERE m.space_id = $1",
    )
    .bind(space)
    .fetch_all(db)
    .await?)
}

/// Of `candidates`, those a push about `author`'s message in `space` may reach: people (not
/// bots) with a subscription who have not blocked the author and have not set the space's
/// preference to `NOTHING`.
pub async fn reachable(
    db: impl PgExecutor<'_>,
    space: Option<crate::functions::ids::SpaceId>,
    author: UserId,
    candidates: &[UserId],
) -> Result<Vec<UserId>, Error> {
    Ok(sqlx::query_scalar(
        "SELECT u.id FROM users u WHERE u.id = ANY($3) AND u.category IS DISTINCT FROM 'BOT' \
         AND EXISTS (SELECT 1 FROM push_subscriptions s WHERE s.user_id = u.id) \
         AND NOT EXISTS (SELECT 1 FROM relationships r WHERE r.user_id = u.id AND r.relation_id = $2 \
                         AND r.state = 'BLOCKED') \
         AND NOT EXISTS (SELECT 1 FROM notification_preferences p WHERE p.user_id = u.id AND p.space_id = $1 \
                         AND p.level = 'NOTHING')",
    )
    .bind(space)
    .bind(author)
    .bind(candidates)
    .fetch_all(db)
    .await?)
}
