//! The `Idempotency-Key` header of message sends (spec §4.10): 1–64 printable ASCII characters.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::error::Error;

pub const HEADER: &str = "idempotency-key";
/// The longest key, in bytes (all printable ASCII).
pub const MAX_LEN: usize = 64;

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
        if value.is_empty() || value.len() > MAX_LEN || !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(invalid());
        }
        Ok(IdempotencyKey(Some(value.to_string())))
    }
}

/// Documented as an optional header parameter of the operations that take it.
impl aide::OperationInput for IdempotencyKey {
    fn operation_input(_: &mut aide::generate::GenContext, operation: &mut aide::openapi::Operation) {
        let parameter = serde_json::json!({
            "in": "header",
            "name": "Idempotency-Key",
            "required": false,
            "description": "Makes a retried send safe: a key seen in the last 10 minutes returns the \
                message it created instead of sending again (409 `Conflict` while the first request \
                is still running, or when the key was used for another channel).",
            "schema": {"type": "string", "minLength": 1, "maxLength": MAX_LEN, "pattern": "^[\\x20-\\x7E]+$"},
        });
        if let Ok(parameter) = serde_json::from_value(parameter) {
            operation.parameters.push(aide::openapi::ReferenceOr::Item(parameter));
        }
    }
}
