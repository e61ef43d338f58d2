//! Auth sessions and their refresh-token families (spec §6.2, §6.3).

use std::time::Duration;

use chrono::Utc;
use sqlx::{PgConnection, PgExecutor, PgPool};

use crate::error::Error;
use crate::functions::ids::{SessionId, UserId};
use crate::functions::tokens;

/// Opens a session with its first refresh token (returned in clear, stored as a digest).
pub async fn create(
    conn: &mut PgConnection,
    user: UserId,
    refresh_ttl: Duration,
) -> Result<(SessionId, String), Error> {
    let session = SessionId::new();
    sqlx::query("INSERT INTO auth_sessions (id, user_id) VALUES ($1, $2)")
        .bind(session)
        .bind(user)
        .execute(&mut *conn)
        .await?;
    let token = issue_token(conn, session, refresh_ttl).await?;
    Ok((session, token))
}

async fn issue_token(conn: &mut PgConnection, session: SessionId, ttl: Duration) -> Result<String, Error> {
    let token = tokens::generate();
    let expires = Utc::now() + chrono::Duration::from_std(ttl).map_err(Error::internal)?;
    sqlx::query("INSERT INTO refresh_tokens (digest, session_id, expires_at) VALUES ($1, $2, $3)")
        .bind(tokens::digest(&token))
        .bind(session)
        .bind(expires)
        .execute(conn)
        .await?;
    Ok(token)
}

/// What a refresh request resolved to.
#[derive(Debug)]
pub enum Refresh {
    /// The current token: a new one was issued.
    Rotated {
        user: UserId,
        session: SessionId,
        token: String,
    },
    /// The immediately previous token, inside the grace window: same session, keep your token.
    Grace { user: UserId, session: SessionId },
    /// An older token: the whole family has been revoked.
    Reused { user: UserId, session: SessionId },
    /// An unknown token, or one of a revoked session.
    Unknown,
    /// The current token, past its lifetime.
    Expired,
}

#[derive(sqlx::FromRow)]
struct PresentedToken {
    session_id: SessionId,
    user_id: UserId,
    revoked: bool,
    expired: bool,
    superseded_at: Option<chrono::DateTime<Utc>>,
    /// Superseded within the grace window, and no token of the family was superseded after it.
    in_grace: bool,
}

/// Resolves a refresh token atomically: the session row is locked, so of two concurrent
/// refreshes with the same current token exactly one rotates and the other gets grace.
pub async fn refresh(db: &PgPool, token: &str, ttl: Duration, grace: Duration) -> Result<Refresh, Error> {
    let digest = tokens::digest(token);
    let mut tx = db.begin().await?;
    // Lock the family first; the token is read afterwards, in a statement that sees whatever a
    // concurrent rotation committed while this one waited for the lock.
    let locked: Option<SessionId> = sqlx::query_scalar(
        "SELECT s.id FROM auth_sessions s \
         WHERE s.id = (SELECT session_id FROM refresh_tokens WHERE digest = $1) FOR UPDATE",
    )
    .bind(&digest)
    .fetch_optional(&mut *tx)
    .await?;
    if locked.is_none() {
        return Ok(Refresh::Unknown);
    }
    let presented: Option<PresentedToken> = sqlx::query_as(
        "SELECT t.session_id, s.user_id, s.revoked_at IS NOT NULL AS revoked, \
                t.expires_at <= now() AS expired, t.superseded_at, \
                (t.superseded_at IS NOT NULL AND t.superseded_at > now() - make_interval(secs => $2) \
                 AND NOT EXISTS (SELECT 1 FROM refresh_tokens o WHERE o.session_id = t.session_id \
                                 AND o.superseded_at > t.superseded_at)) AS in_grace \
         FROM refresh_tokens t JOIN auth_sessions s ON s.id = t.session_id \
         WHERE t.digest = $1",
    )
    .bind(&digest)
    .bind(grace.as_secs_f64())
    .fetch_optional(&mut *tx)
    .await?;
    let Some(p) = presented else {
        return Ok(Refresh::Unknown);
    };
    if p.revoked {
        return Ok(Refresh::Unknown);
    }
    let outcome = if p.superseded_at.is_none() {
        if p.expired {
            return Ok(Refresh::Expired);
        }
        sqlx::query("UPDATE refresh_tokens SET superseded_at = now() WHERE digest = $1")
            .bind(&digest)
            .execute(&mut *tx)
            .await?;
        let token = issue_token(&mut tx, p.session_id, ttl).await?;
        touch(&mut *tx, p.session_id).await?;
        Refresh::Rotated {
            user: p.user_id,
            session: p.session_id,
            token,
        }
    } else if p.in_grace && !grace.is_zero() {
        touch(&mut *tx, p.session_id).await?;
        Refresh::Grace {
            user: p.user_id,
            session: p.session_id,
        }
    } else {
        revoke_in(&mut *tx, p.session_id).await?;
        Refresh::Reused {
            user: p.user_id,
            session: p.session_id,
        }
    };
    tx.commit().await?;
    Ok(outcome)
}

async fn touch(db: impl PgExecutor<'_>, session: SessionId) -> Result<(), Error> {
    sqlx::query("UPDATE auth_sessions SET last_used_at = now() WHERE id = $1")
        .bind(session)
        .execute(db)
        .await?;
    Ok(())
}

async fn revoke_in(db: impl PgExecutor<'_>, session: SessionId) -> Result<bool, Error> {
    let res = sqlx::query("UPDATE auth_sessions SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL")
        .bind(session)
        .execute(db)
        .await?;
    Ok(res.rows_affected() == 1)
}

/// Revokes one session of `user`; returns whether it was live.
pub async fn revoke(db: impl PgExecutor<'_>, user: UserId, session: SessionId) -> Result<bool, Error> {
    let res = sqlx::query(
        "UPDATE auth_sessions SET revoked_at = now() WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL",
    )
    .bind(session)
    .bind(user)
    .execute(db)
    .await?;
    Ok(res.rows_affected() == 1)
}

/// Revokes the live session that a refresh token (current or superseded) belongs to.
pub async fn revoke_by_refresh_token(
    db: impl PgExecutor<'_>,
    token: &str,
) -> Result<Option<(UserId, SessionId)>, Error> {
    Ok(sqlx::query_as(
        "UPDATE auth_sessions s SET revoked_at = now() FROM refresh_tokens t \
         WHERE t.digest = $1 AND s.id = t.session_id AND s.revoked_at IS NULL \
         RETURNING s.user_id, s.id",
    )
    .bind(tokens::digest(token))
    .fetch_optional(db)
    .await?)
}

/// Revokes every live session of a user; returns them.
pub async fn revoke_all(db: impl PgExecutor<'_>, user: UserId) -> Result<Vec<SessionId>, Error> {
    Ok(sqlx::query_scalar(
        "UPDATE auth_sessions SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL RETURNING id",
    )
    .bind(user)
    .fetch_all(db)
    .await?)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    Live,
    Revoked,
    /// No such session for this user (or no such user).
    Unknown,
}

pub async fn state(db: impl PgExecutor<'_>, user: UserId, session: SessionId) -> Result<SessionState, Error> {
    let revoked: Option<bool> =
        sqlx::query_scalar("SELECT revoked_at IS NOT NULL FROM auth_sessions WHERE id = $1 AND user_id = $2")
            .bind(session)
            .bind(user)
            .fetch_optional(db)
            .await?;
    Ok(SessionState::from_revoked(revoked))
}

impl SessionState {
    /// From `revoked_at IS NOT NULL` of the session's row, `None` when there is no such row.
    pub fn from_revoked(revoked: Option<bool>) -> Self {
        match revoked {
            None => SessionState::Unknown,
            Some(true) => SessionState::Revoked,
            Some(false) => SessionState::Live,
        }
    }
}

/// Deletes families that can no longer be used: revoked ones after `keep`, and those whose
/// current token expired more than `keep` ago. Returns how many sessions were purged.
pub async fn purge(db: impl PgExecutor<'_>, keep: Duration) -> Result<u64, Error> {
    let res = sqlx::query(
        "DELETE FROM auth_sessions s WHERE s.revoked_at < now() - make_interval(secs => $1) \
         OR NOT EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.session_id = s.id \
                        AND t.expires_at > now() - make_interval(secs => $1))",
    )
    .bind(keep.as_secs_f64())
    .execute(db)
    .await?;
    Ok(res.rows_affected())
}
