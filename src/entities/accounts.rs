//! Credentials of human users: email and bcrypt hash.

use sqlx::{PgConnection, PgExecutor};

use crate::error::{Error, ErrorCode, ResultExt};
use crate::functions::ids::UserId;

pub async fn insert(conn: &mut PgConnection, user: UserId, email: &str, password_hash: &str) -> Result<(), Error> {
    sqlx::query("INSERT INTO accounts (user_id, email, password_hash) VALUES ($1, $2, $3)")
        .bind(user)
        .bind(email)
        .bind(password_hash)
        .execute(conn)
        .await
        .on_constraint("accounts_email_key", |_| {
            Error::new(ErrorCode::EmailTaken, "An account with this email already exists").with_field("email")
        })?;
    Ok(())
}

/// The account behind an email: its user and password hash.
pub async fn find_by_email(db: impl PgExecutor<'_>, email: &str) -> Result<Option<(UserId, String)>, Error> {
    Ok(
        sqlx::query_as("SELECT user_id, password_hash FROM accounts WHERE email = $1")
            .bind(email)
            .fetch_optional(db)
            .await?,
    )
}

pub async fn password_hash(db: impl PgExecutor<'_>, user: UserId) -> Result<Option<String>, Error> {
    Ok(
        sqlx::query_scalar("SELECT password_hash FROM accounts WHERE user_id = $1")
            .bind(user)
            .fetch_optional(db)
            .await?,
    )
}

pub async fn set_password(db: impl PgExecutor<'_>, user: UserId, password_hash: &str) -> Result<(), Error> {
    sqlx::query("UPDATE accounts SET password_hash = $2 WHERE user_id = $1")
        .bind(user)
        .bind(password_hash)
        .execute(db)
        .await?;
    Ok(())
}
