//! Who a token belongs to (spec §4.0, §6.1): signature and claims, then the auth session read
//! from PostgreSQL, so a revocation takes effect at once on every instance. The REST extractors
//! and the `/ws` and `/collab` sockets share it.

use sqlx::PgPool;

use crate::entities::sessions::{self, SessionState};
use crate::error::{Error, ErrorCode};
use crate::functions::ids::{SessionId, UserId};
use crate::functions::jwt::{Claims, JwtKeys, TokenError};

/// A caller with a valid user or bot token (auth mode `any`).
#[derive(Debug, Clone, Copy)]
pub struct Auth {
    pub user_id: UserId,
    /// The auth session of a user token; `None` for bots.
    pub session_id: Option<SessionId>,
    pub is_bot: bool,
}

impl Auth {
    /// Verifies a token completely: signature and claims, then the session or bot generation.
    pub async fn verify(jwt: &JwtKeys, db: &PgPool, token: &str) -> Result<Auth, Error> {
        PendingAuth::verify(jwt, token)?.check(db).await
    }
}

/// A caller whose user token is verified (signature and claims) but whose session is not yet
/// known to be live. A handler taking it must, before it reports any other error, either
/// [`check`](Self::check) the session or read its state in the same round trip as its first
/// query and [`resolve`](Self::resolve) it: the answers and their order are then those of
/// [`Auth`], without a round trip of its own.
#[derive(Debug, Clone, Copy)]
pub struct PendingAuth {
    pub user_id: UserId,
    pub session_id: SessionId,
}

impl PendingAuth {
    pub fn verify(jwt: &JwtKeys, token: &str) -> Result<PendingAuth, Error> {
        let claims: Claims = jwt.verify(token).map_err(|e| match e {
            TokenError::Expired => Error::new(ErrorCode::TokenExpired, "The access token has expired"),
            TokenError::Invalid => invalid_token(),
        })?;
        match claims.sid {
            // Bot tokens are issued by `bots.login` only, which checks the bot's generation;
            // no bot can exist before the bots tables do, so none is valid yet.
            None => Err(invalid_token()),
            Some(sid) => Ok(PendingAuth {
                user_id: UserId(claims.sub),
                session_id: SessionId(sid),
            }),
        }
    }

    /// Reads the session's state on its own.
    pub async fn check(self, db: &PgPool) -> Result<Auth, Error> {
        self.resolve(sessions::state(db, self.user_id, self.session_id).await?)
    }

    /// The caller, given the session's state read along with other data.
    pub fn resolve(self, session: SessionState) -> Result<Auth, Error> {
        match session {
            SessionState::Live => Ok(Auth {
                user_id: self.user_id,
                session_id: Some(self.session_id),
                is_bot: false,
            }),
            SessionState::Revoked => Err(Error::new(ErrorCode::SessionRevoked, "This session has been revoked")),
            SessionState::Unknown => Err(invalid_token()),
        }
    }
}

fn invalid_token() -> Error {
    Error::new(ErrorCode::InvalidToken, "The access token is not valid")
}
