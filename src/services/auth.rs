//! Who a token belongs to (spec §4.0, §6.1): signature and claims, then the auth session read
//! from PostgreSQL, so a revocation takes effect at once on every instance. The REST extractors
//! and the `/ws` and `/collab` sockets share it.

use sqlx::{PgExecutor, PgPool};

use crate::entities::bots;
use crate::entities::sessions::{self, SessionState};
use crate::error::{Error, ErrorCode};
use crate::functions::ids::{SessionId, UserId};
use crate::functions::jwt::{Claims, JwtKeys, TokenError};
use crate::services::session_cache::SessionCache;

/// What a verified token is bound to: a user's auth session, or a bot's token generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    Session(SessionId),
    Bot { generation: i64 },
}

impl Grant {
    /// The auth session of a user token; `None` for bots.
    pub fn session_id(self) -> Option<SessionId> {
        match self {
            Grant::Session(s) => Some(s),
            Grant::Bot { .. } => None,
        }
    }
}

/// A caller with a valid user or bot token (auth mode `any`).
#[derive(Debug, Clone, Copy)]
pub struct Auth {
    pub user_id: UserId,
    pub grant: Grant,
}

impl Auth {
    /// Verifies a token completely: signature and claims, then the session or bot generation
    /// (from the session cache when it knows the grant is live).
    pub async fn verify(jwt: &JwtKeys, db: &PgPool, cache: &SessionCache, token: &str) -> Result<Auth, Error> {
        PendingAuth::verify(jwt, token)?.check_cached(db, cache).await
    }

    /// The auth session of a user token; `None` for bots.
    pub fn session_id(&self) -> Option<SessionId> {
        self.grant.session_id()
    }

    pub fn is_bot(&self) -> bool {
        matches!(self.grant, Grant::Bot { .. })
    }

    /// The key whose revocation closes this caller's sockets: the auth session, or for a bot
    /// its user id (regenerating the secret or deleting the bot revokes every bot socket).
    pub fn revocation_key(&self) -> SessionId {
        match self.grant {
            Grant::Session(s) => s,
            Grant::Bot { .. } => SessionId(self.user_id.0),
        }
    }

    /// Whether the grant is still live (read again after a socket subscribed to revocations).
    pub async fn is_live(&self, db: impl PgExecutor<'_>) -> bool {
        grant_state(db, self.user_id, self.grant).await.ok() == Some(SessionState::Live)
    }
}

async fn grant_state(db: impl PgExecutor<'_>, user: UserId, grant: Grant) -> Result<SessionState, Error> {
    match grant {
        Grant::Session(s) => sessions::state(db, user, s).await,
        Grant::Bot { generation } => Ok(match bots::generation_is_current(db, user, generation).await? {
            Some(true) => SessionState::Live,
            Some(false) => SessionState::Revoked,
            None => SessionState::Unknown,
        }),
    }
}

/// A caller whose token is verified (signature and claims) but whose session is not yet known
/// to be live. A handler taking it must, before it reports any other error, either
/// [`check`](Self::check) the grant or, for a user token, read its session's state in the same
/// round trip as its first query and [`resolve`](Self::resolve) it: the answers and their
/// order are then those of [`Auth`], without a round trip of its own.
#[derive(Debug, Clone, Copy)]
pub struct PendingAuth {
    pub user_id: UserId,
    pub grant: Grant,
}

impl PendingAuth {
    pub fn verify(jwt: &JwtKeys, token: &str) -> Result<PendingAuth, Error> {
        let claims: Claims = jwt.verify(token).map_err(|e| match e {
            TokenError::Expired => Error::new(ErrorCode::TokenExpired, "The access token has expired"),
            TokenError::Invalid => invalid_token(),
        })?;
        let grant = match (claims.sid, claims.r#gen) {
            (_, Some(generation)) if claims.is_bot() => Grant::Bot { generation },
            (Some(sid), _) => Grant::Session(SessionId(sid)),
            _ => return Err(invalid_token()),
        };
        Ok(PendingAuth {
            user_id: UserId(claims.sub),
            grant,
        })
    }

    /// The user token's session, to read along with other data; `None` for bots.
    pub fn session_id(&self) -> Option<SessionId> {
        self.grant.session_id()
    }

    /// Reads the grant's state on its own.
    pub async fn check(self, db: impl PgExecutor<'_>) -> Result<Auth, Error> {
        self.resolve(grant_state(db, self.user_id, self.grant).await?)
    }

    /// Reads the grant's state unless `cache` knows it is live.
    pub async fn check_cached(self, db: impl PgExecutor<'_>, cache: &SessionCache) -> Result<Auth, Error> {
        match self.cached(cache) {
            Some(auth) => Ok(auth),
            None => self.check_and_remember(db, cache).await,
        }
    }

    /// Reads the grant's state and lets `cache` remember it when live.
    pub async fn check_and_remember(self, db: impl PgExecutor<'_>, cache: &SessionCache) -> Result<Auth, Error> {
        let ticket = cache.ticket();
        let auth = self.check(db).await?;
        cache.remember(ticket, &auth);
        Ok(auth)
    }

    /// The caller, when `cache` knows the grant is live.
    pub fn cached(self, cache: &SessionCache) -> Option<Auth> {
        cache.is_live(self.user_id, self.grant).then_some(Auth {
            user_id: self.user_id,
            grant: self.grant,
        })
    }

    /// The caller, given the grant's state read along with other data.
    pub fn resolve(self, state: SessionState) -> Result<Auth, Error> {
        match state {
            SessionState::Live => Ok(Auth {
                user_id: self.user_id,
                grant: self.grant,
            }),
            SessionState::Revoked => Err(Error::new(ErrorCode::SessionRevoked, "This session has been revoked")),
            SessionState::Unknown => Err(invalid_token()),
        }
    }
}

fn invalid_token() -> Error {
    Error::new(ErrorCode::InvalidToken, "The access token is not valid")
}
