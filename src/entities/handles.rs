//! Handles held by users and spaces, and the stored custom-domain challenges (spec §12.4).
//!
//! Handles are stored trimmed and lowercased, so equality is case-insensitive equality. A user or
//! a space holds at most one handle (partial unique indexes); a handle has exactly one holder.

use schemars::JsonSchema;
use serde::Serialize;
use sqlx::{FromRow, PgConnection, PgExecutor};

use crate::error::{Error, ErrorCode};
use crate::functions::handles::{self, SettableHandle, classify, default_candidates};
use crate::functions::ids::{SpaceId, UserId};
use crate::functions::time::Timestamp;

/// Who holds a handle; serialises as Mikoto's `HandleOwner` (`{"type": "user"|"space", "id"}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum HandleOwner {
    User { id: UserId },
    Space { id: SpaceId },
}

impl HandleOwner {
    /// `user` or `space`, as in challenges and attestations.
    pub fn entity_type(&self) -> &'static str {
        match self {
            HandleOwner::User { .. } => "user",
            HandleOwner::Space { .. } => "space",
        }
    }

    pub fn entity_id(&self) -> uuid::Uuid {
        match self {
            HandleOwner::User { id } => id.0,
            HandleOwner::Space { id } => id.0,
        }
    }

    /// The (user_id, space_id) columns; exactly one is set.
    fn columns(&self) -> (Option<UserId>, Option<SpaceId>) {
        match self {
            HandleOwner::User { id } => (Some(*id), None),
            HandleOwner::Space { id } => (None, Some(*id)),
        }
    }

    fn from_columns(user: Option<UserId>, space: Option<SpaceId>) -> Option<HandleOwner> {
        match (user, space) {
            (Some(id), _) => Some(HandleOwner::User { id }),
            (None, Some(id)) => Some(HandleOwner::Space { id }),
            (None, None) => None,
        }
    }
}

/// Response for handle resolution.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HandleResolution {
    pub handle: String,
    pub owner: HandleOwner,
    /// Set only for verified custom domains.
    pub verified_at: Option<Timestamp>,
    pub created_at: Timestamp,
}

#[derive(FromRow)]
struct HandleRow {
    handle: String,
    user_id: Option<UserId>,
    space_id: Option<SpaceId>,
    verified_at: Option<Timestamp>,
    created_at: Timestamp,
}

/// Gives a new user the first free default handle (spec §12.4); `None` when all are taken.
pub async fn assign_default(
    conn: &mut PgConnection,
    user: UserId,
    display_name: &str,
    handle_domain: &str,
) -> Result<Option<String>, Error> {
    for candidate in default_candidates(display_name, user.0, handle_domain) {
        let inserted = sqlx::query("INSERT INTO handles (handle, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(&candidate)
            .bind(user)
            .execute(&mut *conn)
            .await?;
        if inserted.rows_affected() == 1 {
            return Ok(Some(candidate));
        }
    }
    Ok(None)
}

/// `handles.resolve`: the holder of a handle, case-insensitively.
pub async fn resolve(
    db: impl PgExecutor<'_>,
    handle: &str,
    handle_domain: &str,
) -> Result<Option<HandleResolution>, Error> {
    let row: Option<HandleRow> =
        sqlx::query_as("SELECT handle, user_id, space_id, verified_at, created_at FROM handles WHERE handle = $1")
            .bind(handles::normalize(handle))
            .fetch_optional(db)
            .await?;
    let Some(row) = row else { return Ok(None) };
    let Some(owner) = HandleOwner::from_columns(row.user_id, row.space_id) else {
        return Ok(None);
    };
    // Default handles are never "verified", whatever an imported row says.
    let custom = !row.handle.ends_with(&format!(".{handle_domain}"));
    Ok(Some(HandleResolution {
        verified_at: row.verified_at.filter(|_| custom),
        handle: row.handle,
        owner,
        created_at: row.created_at,
    }))
}

/// The handle an owner holds.
pub async fn current(db: impl PgExecutor<'_>, owner: HandleOwner) -> Result<Option<String>, Error> {
    let (user, space) = owner.columns();
    Ok(
        sqlx::query_scalar("SELECT handle FROM handles WHERE user_id = $1 OR space_id = $2")
            .bind(user)
            .bind(space)
            .fetch_optional(db)
            .await?,
    )
}

/// Sets or releases (`None`) an owner's handle with the rules of `user.setHandle` (spec §12.4):
/// a plain username or a full default handle is stored as a default handle; a custom domain
/// needs verification (400), unless it is the verified domain the owner already holds; a handle
/// held by anyone else is 409 `HandleTaken`. The previous handle is released. Returns whether
/// anything changed.
pub async fn set_requested(
    conn: &mut PgConnection,
    owner: HandleOwner,
    requested: Option<&str>,
    handle_domain: &str,
) -> Result<bool, Error> {
    let current = current(&mut *conn, owner).await?;
    let wanted = match requested {
        None => None,
        Some(h) => match classify(h, handle_domain) {
            SettableHandle::Default(h) => Some(h),
            SettableHandle::CustomDomain(d) if current.as_deref() == Some(d.as_str()) => return Ok(false),
            SettableHandle::CustomDomain(_) => return Err(handles::requires_verification()),
            SettableHandle::Invalid => return Err(handles::invalid_handle("This handle is not valid")),
        },
    };
    if current == wanted {
        return Ok(false);
    }
    let (user, space) = owner.columns();
    sqlx::query("DELETE FROM handles WHERE user_id = $1 OR space_id = $2")
        .bind(user)
        .bind(space)
        .execute(&mut *conn)
        .await?;
    if let Some(h) = wanted {
        let inserted = sqlx::query(
            "INSERT INTO handles (handle, user_id, space_id, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&h)
        .bind(user)
        .bind(space)
        .bind(Timestamp::now())
        .execute(&mut *conn)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(handles::taken());
        }
    }
    Ok(true)
}

/// Gives a verified custom domain to `owner` (spec §12.4): the owner's previous handle is
/// released and, if another entity held the domain, it moves. Returns that previous holder.
pub async fn assign_verified(
    conn: &mut PgConnection,
    owner: HandleOwner,
    domain: &str,
    verified_at: Timestamp,
    attestation: Option<&str>,
) -> Result<Option<HandleOwner>, Error> {
    let (user, space) = owner.columns();
    sqlx::query("DELETE FROM handles WHERE (user_id = $1 OR space_id = $2) AND handle <> $3")
        .bind(user)
        .bind(space)
        .bind(domain)
        .execute(&mut *conn)
        .await?;
    // Twice at most: a holder that appears between the look-up and the insert is taken over.
    for _ in 0..2 {
        let holder: Option<(Option<UserId>, Option<SpaceId>)> =
            sqlx::query_as("SELECT user_id, space_id FROM handles WHERE handle = $1 FOR UPDATE")
                .bind(domain)
                .fetch_optional(&mut *conn)
                .await?;
        match holder {
            Some((u, s)) => {
                let previous = HandleOwner::from_columns(u, s).filter(|p| *p != owner);
                sqlx::query(
                    "UPDATE handles SET user_id = $2, space_id = $3, verified_at = $4, attestation = $5, \
                     created_at = CASE WHEN $6 THEN $4 ELSE created_at END WHERE handle = $1",
                )
                .bind(domain)
                .bind(user)
                .bind(space)
                .bind(verified_at)
                .bind(attestation)
                .bind(previous.is_some())
                .execute(&mut *conn)
                .await?;
                return Ok(previous);
            }
            None => {
                let inserted = sqlx::query(
                    "INSERT INTO handles (handle, user_id, space_id, verified_at, attestation, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $4) ON CONFLICT DO NOTHING",
                )
                .bind(domain)
                .bind(user)
                .bind(space)
                .bind(verified_at)
                .bind(attestation)
                .execute(&mut *conn)
                .await?;
                if inserted.rows_affected() == 1 {
                    return Ok(None);
                }
            }
        }
    }
    Err(Error::new(
        ErrorCode::Conflict,
        "The handle changed concurrently; try again",
    ))
}

/// A stored verification challenge (spec §12.4).
#[derive(Debug, Clone, FromRow)]
pub struct Challenge {
    pub domain: String,
    pub nonce: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// Stores an owner's challenge, replacing every earlier challenge of that owner.
pub async fn put_challenge(db: impl PgExecutor<'_>, owner: HandleOwner, challenge: &Challenge) -> Result<(), Error> {
    // One statement per owner kind: the upsert names the owner's partial unique index.
    let sql = match owner {
        HandleOwner::User { .. } => {
            "INSERT INTO handle_challenges (user_id, space_id, domain, nonce, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id) WHERE user_id IS NOT NULL DO UPDATE SET \
             domain = EXCLUDED.domain, nonce = EXCLUDED.nonce, created_at = EXCLUDED.created_at, \
             expires_at = EXCLUDED.expires_at"
        }
        HandleOwner::Space { .. } => {
            "INSERT INTO handle_challenges (user_id, space_id, domain, nonce, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (space_id) WHERE space_id IS NOT NULL DO UPDATE SET \
             domain = EXCLUDED.domain, nonce = EXCLUDED.nonce, created_at = EXCLUDED.created_at, \
             expires_at = EXCLUDED.expires_at"
        }
    };
    let (user, space) = owner.columns();
    sqlx::query(sql)
        .bind(user)
        .bind(space)
        .bind(&challenge.domain)
        .bind(&challenge.nonce)
        .bind(challenge.created_at)
        .bind(challenge.expires_at)
        .execute(db)
        .await?;
    Ok(())
}

/// The owner's challenge for `domain`, expired or not.
pub async fn challenge(db: impl PgExecutor<'_>, owner: HandleOwner, domain: &str) -> Result<Option<Challenge>, Error> {
    let (user, space) = owner.columns();
    Ok(sqlx::query_as(
        "SELECT domain, nonce, created_at, expires_at FROM handle_challenges \
         WHERE (user_id = $1 OR space_id = $2) AND domain = $3",
    )
    .bind(user)
    .bind(space)
    .bind(domain)
    .fetch_optional(db)
    .await?)
}

/// Deletes the challenge that was checked; false when it was replaced, consumed or expired
/// meanwhile.
pub async fn consume_challenge(
    db: impl PgExecutor<'_>,
    owner: HandleOwner,
    domain: &str,
    nonce: &str,
) -> Result<bool, Error> {
    let (user, space) = owner.columns();
    let res = sqlx::query(
        "DELETE FROM handle_challenges WHERE (user_id = $1 OR space_id = $2) AND domain = $3 AND nonce = $4 \
         AND expires_at > now()",
    )
    .bind(user)
    .bind(space)
    .bind(domain)
    .bind(nonce)
    .execute(db)
    .await?;
    Ok(res.rows_affected() == 1)
}

/// Deletes expired challenges (janitor).
pub async fn purge_expired_challenges(db: impl PgExecutor<'_>) -> Result<u64, Error> {
    Ok(sqlx::query("DELETE FROM handle_challenges WHERE expires_at <= now()")
        .execute(db)
        .await?
        .rows_affected())
}

/// The users holding any of `handles` (lowercase), for mentions.
pub async fn users_holding(db: impl PgExecutor<'_>, handles: &[String]) -> Result<Vec<UserId>, Error> {
    Ok(
        sqlx::query_scalar("SELECT user_id FROM handles WHERE handle = ANY($1) AND user_id IS NOT NULL")
            .bind(handles)
            .fetch_all(db)
            .await?,
    )
}
