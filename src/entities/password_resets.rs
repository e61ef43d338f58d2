//! Password-reset tokens: digests only, single use, one live token per account (spec §6.5).

use std::time::Duration;

use sqlx::PgExecutor;

use crate::error::Error;
use crate::functions::ids::UserId;
use crate::functions::tokens;

pub const TTL: Duration = Duration::from_secs(3600);

/// Replaces the user's earlier reset tokens with a new one; returns it in clear.
pub async fn create(conn: &mut sqlx::PgConnection, user: UserId) -> Result<String, Error> {
    sqlx::query("DELETE FROM password_reset_tokens WHERE user_id = $1")
        .bind(user)
        .execute(&mut *conn)
        .await?;
    let token = tokens::generate();
    sqlx::query(
        "INSERT INTO password_reset_tokens (digest, user_id, expires_at) \
         VALUES ($1, $2, now() + make_interval(secs => $3))",
    )
    .bind(tokens::digest(&token))
    .bind(user)
    .bind(TTL.as_secs_f64())
    .execute(conn)
    .await?;
    Ok(token)
}

/// Consumes a live token: deletes every reset token of its user and returns the user.
pub async fn consume(conn: &mut sqlx::PgConnection, token: &str) -> Result<Option<UserId>, Error> {
    let user: Option<UserId> = sqlx::query_scalar(
        "DELETE FROM password_reset_tokens WHERE digest = $1 AND expires_at > now() RETURNING user_id",
    )
    .bind(tokens::digest(token))
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(user) = user {
        sqlx::query("DELETE FROM password_reset_tokens WHERE user_id = $1")
            .bind(user)
            .execute(conn)
            .await?;
    }
    Ok(user)
}

pub async fn purge_expired(db: impl PgExecutor<'_>) -> Result<u64, Error> {
    Ok(
        sqlx::query("DELETE FROM password_reset_tokens WHERE expires_at <= now()")
            .execute(db)
            .await?
            .rows_affected(),
    )
}
