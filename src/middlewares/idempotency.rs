//! The `Idempotency-Key` header of message sends (spec §4.10): 1–64 printable ASCII characters.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::error::Error;

pub const HEADER: &str = "idempotency-key";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(raw) = parts.headers.get(HEADER) else {
            return Ok(IdempotencyKey(None));
        };
        let invalid = || {
            Error::validation(
                "Idempotency-Key",
                "`Idempotency-Key` must be 1 to 64 printable ASCII characters",
            )
        };
        let value = raw.to_str().map_err(|_| invalid())?;
        if value.is_empty() || value.len() > 64 || !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(invalid());
        }
        Ok(IdempotencyKey(Some(value.to_string())))
    }
}

impl aide::OperationInput for IdempotencyKey {}
