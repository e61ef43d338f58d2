//! The JSON body extractor of spec §2.5: every rejection is a JSON error (400 `InvalidJson`,
//! 413 `PayloadTooLarge`, 415 `UnsupportedMediaType`, 422 `InvalidBody` with `field`), and an
//! absent or empty body counts as `{}` so body-less POSTs work without a content type.

use aide::generate::GenContext;
use aide::openapi::Operation;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;

use crate::error::{Error, ErrorCode};

pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(is_json_content_type);
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Error::new(ErrorCode::PayloadTooLarge, "The request body is too large")
            } else {
                Error::new(ErrorCode::InvalidJson, "The request body could not be read")
            }
        })?;
        let body: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        if body != b"{}" && json_type != Some(true) {
            return Err(Error::new(
                ErrorCode::UnsupportedMediaType,
                "Expected a request body with `Content-Type: application/json`",
            ));
        }
        parse(body).map(Json)
    }
}

/// `application/json`, or any `+json` type, with or without parameters.
fn is_json_content_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Parses JSON, telling syntax errors (400) from shape errors (422, with the offending path).
/// The whole document is checked for syntax first, so a truncated body (`{"name": [`) is
/// `InvalidJson` even though the typed parse would stop earlier at a type mismatch; a string
/// holding U+0000 is 400 `ValidationFailed` with its path (PostgreSQL cannot store it).
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(body) {
        return Err(Error::new(
            ErrorCode::InvalidJson,
            format!("The request body is not valid JSON: {e}"),
        ));
    }
    if body.windows(6).any(|w| w == b"\\u0000")
        && let Ok(value) = serde_json::from_slice::<serde_json::Value>(body)
        && let Some(field) = nul_path(&value, String::new())
    {
        return Err(crate::middlewares::nul::refused(&field));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de);
    if value.is_ok()
        && let Err(e) = de.end()
    {
        return Err(Error::new(
            ErrorCode::InvalidJson,
            format!("The request body is not valid JSON: {e}"),
        ));
    }
    value.map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() || inner.is_io() {
            return Error::new(
                ErrorCode::InvalidJson,
                format!("The request body is not valid JSON: {inner}"),
            );
        }
        let field = if path == "." || path.is_empty() {
            missing_field(&inner.to_string())
        } else {
            Some(path)
        };
        let message = strip_position(&inner.to_string());
        let e = Error::new(
            ErrorCode::InvalidBody,
            format!("The request body does not match the schema: {message}"),
        );
        match field {
            Some(f) => e.with_field(f),
            None => e,
        }
    })
}

/// The path (`a.b[0]`) of the first string or key holding U+0000.
fn nul_path(value: &serde_json::Value, at: String) -> Option<String> {
    use serde_json::Value;
    match value {
        Value::String(s) if s.contains('\0') => Some(if at.is_empty() { "body".into() } else { at }),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| nul_path(v, format!("{at}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            let here = if at.is_empty() { k.clone() } else { format!("{at}.{k}") };
            if k.contains('\0') {
                Some(here)
            } else {
                nul_path(v, here)
            }
        }),
        _ => None,
    }
}

/// serde reports a missing field at the parent path; the field is named in the message.
fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_string())
}

/// Drops serde's " at line 1 column 9" suffix, which means nothing to a client.
fn strip_position(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

impl<T: JsonSchema> aide::OperationInput for Json<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        axum::Json::<T>::operation_input(ctx, operation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Payload {
        email: String,
        count: Option<u32>,
        nested: Option<Vec<Inner>>,
    }
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        url: String,
    }

    #[test]
    fn classifies_errors() {
        let e = parse::<Payload>(b"{not json").unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidJson);
        let e = parse::<Payload>(b"{}").unwrap_err();
        assert_eq!(
            (e.code(), e.body.field.as_deref()),
            (ErrorCode::InvalidBody, Some("email"))
        );
        let e = parse::<Payload>(br#"{"email":"a","count":"5"}"#).unwrap_err();
        assert_eq!(
            (e.code(), e.body.field.as_deref()),
            (ErrorCode::InvalidBody, Some("count"))
        );
        let e = parse::<Payload>(br#"{"email":"a","count":1.5}"#).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidBody);
        let e = parse::<Payload>(br#"{"email":"a","nested":[{"url":1}]}"#).unwrap_err();
        assert_eq!(e.body.field.as_deref(), Some("nested[0].url"));
        let e = parse::<Payload>(br#"{"email":"a"} trailing"#).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidJson);
        let e = parse::<Payload>(b"{\"email\":\"\xff\"}").unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidJson);
        assert!(parse::<Payload>(br#"{"email":"a","unknown":true}"#).is_ok());
        // Truncated or absurdly nested: syntax, not shape.
        let e = parse::<Payload>(br#"{"email": ["#).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidJson);
        let e = parse::<Payload>("[".repeat(100_000).as_bytes()).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidJson);
        // NUL anywhere: 400 with the field.
        let e = parse::<Payload>(br#"{"email":"a\u0000b"}"#).unwrap_err();
        assert_eq!(
            (e.code(), e.body.field.as_deref()),
            (ErrorCode::ValidationFailed, Some("email"))
        );
        let e = parse::<Payload>(br#"{"email":"a","nested":[{"url":"\u0000"}]}"#).unwrap_err();
        assert_eq!(e.body.field.as_deref(), Some("nested[0].url"));
        assert!(
            parse::<Payload>(br#"{"email":"a\\u0000"}"#).is_ok(),
            "an escaped backslash is not NUL"
        );
    }

    #[test]
    fn json_content_types() {
        assert!(is_json_content_type("application/json"));
        assert!(is_json_content_type("Application/JSON; charset=utf-8"));
        assert!(is_json_content_type("application/merge-patch+json"));
        assert!(!is_json_content_type("text/plain"));
        assert!(!is_json_content_type("multipart/form-data; boundary=x"));
    }
}
