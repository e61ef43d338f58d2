//! Idempotent message sends (spec §4.10): keys remembered for 10 minutes in the database, so
//! every instance sees them.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::Error;
use crate::functions::ids::UserId;

/// What claiming a key found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The key is new: this request performs the send.
    Fresh,
    /// A send with this key completed: the message it created.
    Completed(Uuid),
    /// The first request with this key is still in flight.
    InFlight,
}

/// Claims the key for a new send (a key older than 10 minutes is forgotten first).
pub async fn claim(conn: &mut PgConnection, user: UserId, operation: &str, key: &str) -> Result<Claim, Error> {
    sqlx::query(
        "DELETE FROM idempotency_keys WHERE user_id = $1 AND operation = $2 AND key = $3 \
         AND created_at < now() - interval '10 minutes'",
    )
    .bind(user)
    .bind(operation)
    .bind(key)
    .execute(&mut *conn)
    .await?;
    let fresh = sqlx::query(
        "INSERT INTO idempotency_keys (user_id, operation, key) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(user)
    .bind(operation)
    .bind(key)
    .execute(&mut *conn)
    .await?;
    if fresh.rows_affected() == 1 {
        return Ok(Claim::Fresh);
    }
    let original: Option<Option<Uuid>> = sqlx::query_scalar(
        "SELECT message_id FROM idempotency_keys WHERE user_id = $1 AND operation = $2 AND key = $3",
    )
    .bind(user)
    .bind(operation)
    .bind(key)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(match original.flatten() {
        Some(id) => Claim::Completed(id),
        None => Claim::InFlight,
    })
}

/// Records the message a claimed key created.
pub async fn complete(
    conn: &mut PgConnection,
    user: UserId,
    operation: &str,
    key: &str,
    message: Uuid,
) -> Result<(), Error> {
    sqlx::query("UPDATE idempotency_keys SET message_id = $4 WHERE user_id = $1 AND operation = $2 AND key = $3")
        .bind(user)
        .bind(operation)
        .bind(key)
        .bind(message)
        .execute(conn)
        .await?;
    Ok(())
}

/// Frees a key whose send failed, so a corrected retry can use it.
pub async fn release(conn: &mut PgConnection, user: UserId, operation: &str, key: &str) {
    let res = sqlx::query(
        "DELETE FROM idempotency_keys WHERE user_id = $1 AND operation = $2 AND key = $3 AND message_id IS NULL",
    )
    .bind(user)
    .bind(operation)
    .bind(key)
    .execute(conn)
    .await;
    if let Err(e) = res {
        tracing::warn!(error = %e, "idempotency key not released");
    }
}
