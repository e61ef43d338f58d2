//! Invites (spec §3.2 Invite, §4.16).

use rand::Rng;
use schemars::JsonSchema;
use serde::Serialize;
use sqlx::{FromRow, PgExecutor};

use crate::error::{Error, ResultExt};
use crate::functions::ids::{SpaceId, UserId};
use crate::functions::time::Timestamp;

pub const MAX_USABLE_PER_SPACE: i64 = 1000;
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema, FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Invite {
    /// The 12-character code.
    pub id: String,
    pub space_id: SpaceId,
    pub created_at: Timestamp,
    pub creator_id: UserId,
    pub max_uses: Option<i32>,
    pub uses: i32,
    pub expires_at: Option<Timestamp>,
}

/// 12 characters from the URL-safe alphabet, uniformly, from the OS-seeded CSPRNG (72 bits).
pub fn new_code() -> String {
    let mut rng = rand::rng();
    (0..12)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

pub async fn insert(db: impl PgExecutor<'_>, invite: &Invite) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO invites (code, space_id, creator_id, created_at, max_uses, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&invite.id)
    .bind(invite.space_id)
    .bind(invite.creator_id)
    .bind(invite.created_at)
    .bind(invite.max_uses)
    .bind(invite.expires_at)
    .execute(db)
    .await
    .on_constraint("invites_space_id_fkey", |_| Error::not_found())?;
    Ok(())
}

/// Invites of a space in creation order, after the code `after`.
pub async fn list(
    db: impl PgExecutor<'_>,
    space: SpaceId,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<Invite>, Error> {
    Ok(sqlx::query_as(
        "SELECT code AS id, space_id, created_at, creator_id, max_uses, uses, expires_at FROM invites i \
         WHERE space_id = $1 AND ($2::text IS NULL OR (created_at, code) > \
               (SELECT created_at, code FROM invites WHERE code = $2)) \
         ORDER BY created_at, code LIMIT $3",
    )
    .bind(space)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await?)
}

/// Usable invites of a space (not expired, not exhausted).
pub async fn count_usable(db: impl PgExecutor<'_>, space: SpaceId) -> Result<i64, Error> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM invites WHERE space_id = $1 \
         AND (expires_at IS NULL OR expires_at > now()) AND (max_uses IS NULL OR uses < max_uses)",
    )
    .bind(space)
    .fetch_one(db)
    .await?)
}

/// A usable invite by code.
pub async fn get_usable(db: impl PgExecutor<'_>, code: &str) -> Result<Option<Invite>, Error> {
    Ok(sqlx::query_as(
        "SELECT code AS id, space_id, created_at, creator_id, max_uses, uses, expires_at FROM invites \
         WHERE code = $1 AND (expires_at IS NULL OR expires_at > now()) AND (max_uses IS NULL OR uses < max_uses)",
    )
    .bind(code)
    .fetch_optional(db)
    .await?)
}

/// Consumes one use atomically; false when the invite became unusable meanwhile.
pub async fn consume(db: impl PgExecutor<'_>, code: &str) -> Result<bool, Error> {
    let res = sqlx::query(
        "UPDATE invites SET uses = uses + 1, \
         exhausted_at = CASE WHEN max_uses IS NOT NULL AND uses + 1 >= max_uses THEN now() END WHERE code = $1 \
         AND (expires_at IS NULL OR expires_at > now()) AND (max_uses IS NULL OR uses < max_uses)",
    )
    .bind(code)
    .execute(db)
    .await?;
    Ok(res.rows_affected() == 1)
}

/// Deletes an invite of this space; an invite of another space is not found.
pub async fn delete(db: impl PgExecutor<'_>, space: SpaceId, code: &str) -> Result<bool, Error> {
    let res = sqlx::query("DELETE FROM invites WHERE space_id = $1 AND code = $2")
        .bind(space)
        .bind(code)
        .execute(db)
        .await?;
    Ok(res.rows_affected() == 1)
}

/// Purges invites 7 days after they expired or were exhausted.
pub async fn purge(db: impl PgExecutor<'_>) -> Result<u64, Error> {
    Ok(sqlx::query(
        "DELETE FROM invites WHERE expires_at < now() - interval '7 days' OR exhausted_at < now() - interval '7 days'",
    )
    .execute(db)
    .await?
    .rows_affected())
}

#[cfg(test)]
mod tests {
    #[test]
    fn codes_are_12_url_safe_chars() {
        let c = super::new_code();
        assert_eq!(c.len(), 12);
        assert!(c.bytes().all(|b| super::ALPHABET.contains(&b)));
        assert_ne!(c, super::new_code());
    }
}
