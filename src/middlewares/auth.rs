//! Who is calling (spec §4.0, §6.1): extractors that verify the bearer token and, for user
//! tokens, that its auth session is still live — read from PostgreSQL on every request, so a
//! revocation takes effect at once on every instance.

use aide::generate::GenContext;
use aide::openapi::Operation;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::entities::sessions::{self, SessionState};
use crate::error::{Error, ErrorCode};
use crate::functions::ids::{SessionId, UserId};
use crate::functions::jwt::{Claims, TokenError};
use crate::state::AppState;

/// Name of the bearer security scheme in the OpenAPI document.
pub const SECURITY_SCHEME: &str = "bearer";

/// A caller with a valid user or bot token (auth mode `any`).
#[derive(Debug, Clone, Copy)]
pub struct Auth {
    pub user_id: UserId,
    /// The auth session of a user token; `None` for bots.
    pub session_id: Option<SessionId>,
    pub is_bot: bool,
}

/// A caller with a valid **user** token (auth mode `user`); bots get 403 `BotNotAllowed`.
#[derive(Debug, Clone, Copy)]
pub struct UserAuth {
    pub user_id: UserId,
    pub session_id: SessionId,
}

/// An optional caller (auth mode `opt`): a bad, expired or revoked token counts as none.
#[derive(Debug, Clone, Copy)]
pub struct OptionalAuth(pub Option<Auth>);

/// The token of an `Authorization: Bearer` header: case-insensitive scheme, one or more spaces.
pub fn bearer_token(parts: &Parts) -> Result<Option<&str>, Error> {
    let Some(value) = parts.headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| malformed())?;
    let (scheme, rest) = value.split_once(' ').ok_or_else(malformed)?;
    let token = rest.trim_start_matches(' ');
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(' ') {
        return Err(malformed());
    }
    Ok(Some(token))
}

fn malformed() -> Error {
    Error::new(
        ErrorCode::Unauthorized,
        "The Authorization header must be `Bearer <token>`",
    )
}

impl Auth {
    /// Verifies a token completely: signature and claims, then the session or bot generation.
    pub async fn verify(state: &AppState, token: &str) -> Result<Auth, Error> {
        PendingAuth::verify(state, token)?.check(state).await
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
    fn verify(state: &AppState, token: &str) -> Result<PendingAuth, Error> {
        let claims: Claims = state.jwt.verify(token).map_err(|e| match e {
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
    pub async fn check(self, state: &AppState) -> Result<Auth, Error> {
        self.resolve(sessions::state(&state.db, self.user_id, self.session_id).await?)
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

impl FromRequestParts<AppState> for Auth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(auth) = parts.extensions.get::<Auth>() {
            return Ok(*auth);
        }
        let token = bearer_token(parts)?.ok_or_else(Error::unauthorized)?;
        let auth = Auth::verify(state, token).await?;
        parts.extensions.insert(auth);
        Ok(auth)
    }
}

impl FromRequestParts<AppState> for PendingAuth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer_token(parts)?.ok_or_else(Error::unauthorized)?;
        PendingAuth::verify(state, token)
    }
}

impl FromRequestParts<AppState> for UserAuth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let auth = Auth::from_request_parts(parts, state).await?;
        match (auth.is_bot, auth.session_id) {
            (false, Some(session_id)) => Ok(UserAuth {
                user_id: auth.user_id,
                session_id,
            }),
            _ => Err(Error::new(ErrorCode::BotNotAllowed, "Bots may not use this operation")),
        }
    }
}

impl FromRequestParts<AppState> for OptionalAuth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        match Auth::from_request_parts(parts, state).await {
            Ok(auth) => Ok(OptionalAuth(Some(auth))),
            Err(e) if e.code() == ErrorCode::InternalError => Err(e),
            Err(_) => Ok(OptionalAuth(None)),
        }
    }
}

fn require_bearer(operation: &mut Operation) {
    let requirement: aide::openapi::SecurityRequirement =
        [(SECURITY_SCHEME.to_string(), Vec::new())].into_iter().collect();
    if !operation.security.contains(&requirement) {
        operation.security.push(requirement);
    }
}

impl aide::OperationInput for Auth {
    fn operation_input(_: &mut GenContext, operation: &mut Operation) {
        require_bearer(operation);
    }
}

impl aide::OperationInput for PendingAuth {
    fn operation_input(_: &mut GenContext, operation: &mut Operation) {
        require_bearer(operation);
    }
}

impl aide::OperationInput for UserAuth {
    fn operation_input(_: &mut GenContext, operation: &mut Operation) {
        require_bearer(operation);
    }
}

impl aide::OperationInput for OptionalAuth {
    fn operation_input(_: &mut GenContext, operation: &mut Operation) {
        // Optional: anonymous access is allowed too (an empty requirement).
        require_bearer(operation);
        operation.security.push(Default::default());
    }
}
