//! Who is calling (spec §4.0, §6.1): extractors over `services::auth`, which verifies the bearer
//! token and, for user tokens, that its auth session is still live.

use aide::generate::GenContext;
use aide::openapi::Operation;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::error::{Error, ErrorCode};
use crate::functions::ids::{SessionId, UserId};
pub use crate::services::auth::{Auth, Grant, PendingAuth};
use crate::state::AppState;

/// Name of the bearer security scheme in the OpenAPI document.
pub const SECURITY_SCHEME: &str = "bearer";

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

impl FromRequestParts<AppState> for Auth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(auth) = parts.extensions.get::<Auth>() {
            return Ok(*auth);
        }
        let token = bearer_token(parts)?.ok_or_else(Error::unauthorized)?;
        let auth = Auth::verify(&state.jwt, &state.db, &state.sessions, token).await?;
        parts.extensions.insert(auth);
        Ok(auth)
    }
}

impl FromRequestParts<AppState> for PendingAuth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer_token(parts)?.ok_or_else(Error::unauthorized)?;
        PendingAuth::verify(&state.jwt, token)
    }
}

impl FromRequestParts<AppState> for UserAuth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let auth = Auth::from_request_parts(parts, state).await?;
        match auth.grant {
            Grant::Session(session_id) => Ok(UserAuth {
                user_id: auth.user_id,
                session_id,
            }),
            Grant::Bot { .. } => Err(Error::new(ErrorCode::BotNotAllowed, "Bots may not use this operation")),
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
