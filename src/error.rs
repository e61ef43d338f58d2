//! The one error type of the HTTP surface (spec §2.9): a stable `code`, an HTTP status and a
//! human-readable message. Every failure, including framework rejections, becomes this JSON body.

use std::borrow::Cow;

use aide::generate::GenContext;
use aide::openapi::{MediaType, Operation, Response as ApiResponse, SchemaObject, StatusCode as ApiStatus};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::Serialize;

/// Stable error codes. The wire string is the variant name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
pub enum ErrorCode {
    InvalidJson,
    InvalidPathParameter,
    InvalidQuery,
    ValidationFailed,
    PasswordTooShort,
    PasswordTooLong,
    InvalidHandle,
    CustomDomainRequiresVerification,
    InvalidMediaReference,
    WrongChannelType,
    LimitExceeded,
    CannotTargetSelf,
    DefaultRoleImmutable,
    CannotFriendSelf,
    CannotBlockSelf,
    CannotFriendBot,
    NotIncomingRequest,
    CannotRemove,
    NotBlocked,
    InvalidResetToken,
    Unauthorized,
    InvalidToken,
    TokenExpired,
    SessionRevoked,
    InvalidRefreshToken,
    RefreshTokenReused,
    WrongPassword,
    InsufficientPermissions,
    InsufficientRank,
    Forbidden,
    BotNotAllowed,
    Banned,
    RegistrationDisabled,
    NotFound,
    MethodNotAllowed,
    Conflict,
    EmailTaken,
    HandleTaken,
    AlreadyMember,
    AlreadyBanned,
    OwnerCannotLeave,
    PayloadTooLarge,
    UnsupportedMediaType,
    UnsupportedFileType,
    InvalidBody,
    RateLimited,
    RequestTimeout,
    InternalError,
    PushDisabled,
    VoiceUnavailable,
    ServiceUnavailable,
}

impl ErrorCode {
    pub fn status(self) -> StatusCode {
        use ErrorCode::*;
        match self {
            InvalidJson
            | InvalidPathParameter
            | InvalidQuery
            | ValidationFailed
            | PasswordTooShort
            | PasswordTooLong
            | InvalidHandle
            | CustomDomainRequiresVerification
            | InvalidMediaReference
            | WrongChannelType
            | LimitExceeded
            | CannotTargetSelf
            | DefaultRoleImmutable
            | CannotFriendSelf
            | CannotBlockSelf
            | CannotFriendBot
            | NotIncomingRequest
            | CannotRemove
            | NotBlocked
            | InvalidResetToken => StatusCode::BAD_REQUEST,
            Unauthorized | InvalidToken | TokenExpired | SessionRevoked | InvalidRefreshToken | RefreshTokenReused
            | WrongPassword => StatusCode::UNAUTHORIZED,
            InsufficientPermissions | InsufficientRank | Forbidden | BotNotAllowed | Banned | RegistrationDisabled => {
                StatusCode::FORBIDDEN
            }
            NotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Conflict | EmailTaken | HandleTaken | AlreadyMember | AlreadyBanned | OwnerCannotLeave => {
                StatusCode::CONFLICT
            }
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            UnsupportedMediaType | UnsupportedFileType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            InvalidBody => StatusCode::UNPROCESSABLE_ENTITY,
            RateLimited => StatusCode::TOO_MANY_REQUESTS,
            RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            PushDisabled | VoiceUnavailable | ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// The JSON error body. `field`, `retryAfter` and `requestId` appear only when they apply.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: Cow<'static, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// An error answered to the client.
#[derive(Debug, Clone)]
pub struct Error {
    pub body: ErrorBody,
}

/// Marks a response as an internal error so the request-id middleware can add `requestId`.
#[derive(Debug, Clone, Copy)]
pub struct InternalErrorMarker;

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Error {
            body: ErrorBody {
                code,
                message: message.into(),
                field: None,
                retry_after: None,
                request_id: None,
            },
        }
    }

    pub fn code(&self) -> ErrorCode {
        self.body.code
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.body.field = Some(field.into());
        self
    }

    pub fn validation(field: &str, message: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorCode::ValidationFailed, message).with_field(field)
    }

    pub fn not_found() -> Self {
        Error::new(ErrorCode::NotFound, "Not found")
    }

    pub fn unauthorized() -> Self {
        Error::new(ErrorCode::Unauthorized, "Authentication required")
    }

    pub fn rate_limited(retry_after_secs: f64) -> Self {
        let mut e = Error::new(ErrorCode::RateLimited, "You are being rate limited.");
        e.body.retry_after = Some((retry_after_secs * 1000.0).ceil() / 1000.0);
        e
    }

    pub fn unavailable(message: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorCode::ServiceUnavailable, message)
    }

    /// An unexpected failure: logged in full, answered generically.
    pub fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "internal error");
        Error::new(ErrorCode::InternalError, "Internal server error")
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.body.code, self.body.message)
    }
}

impl std::error::Error for Error {}

impl From<sqlx::Error> for Error {
    /// Database failures never leak their text. A constraint violation that the caller did not
    /// map by name ([`ResultExt::on_constraint`]) is a bug: logged with its constraint, 500.
    fn from(err: sqlx::Error) -> Self {
        if database_unavailable(&err) {
            tracing::warn!(error = %err, "database unavailable");
            let mut e = Error::unavailable("The database is unavailable; retry shortly.");
            e.body.retry_after = Some(1.0);
            return e;
        }
        if let sqlx::Error::Database(db) = &err
            && let Some(constraint) = db.constraint()
        {
            tracing::error!(constraint, error = %db, "unmapped constraint violation");
            return Error::new(ErrorCode::InternalError, "Internal server error");
        }
        Error::internal(err)
    }
}

/// A failure of the database rather than of the request — a lost or refused connection, a pool
/// with no connection to give, a server shutting down or starting, a transaction aborted to break
/// a deadlock or a serialisation conflict: the same request can succeed a moment later, so it is a
/// 503 with `Retry-After`, not a 500.
fn database_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // Class 08: connection exceptions; 57P01–03: admin/crash shutdown, cannot connect now;
            // 53300: too many connections; 40001/40P01: serialisation failure, deadlock.
            code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "53300" | "40001" | "40P01")
        }),
        _ => false,
    }
}

/// A constraint's name and the client error its violation means.
pub type ConstraintError<'a> = (&'a str, fn() -> Error);

/// Maps the violation of a named constraint to a client error (the pattern of the sqlx
/// authors' realworld example): `insert(..).await.on_constraint("members_space_user_key", |_|
/// Error::new(ErrorCode::AlreadyMember, ..))`. Every other database error converts as usual.
pub trait ResultExt<T> {
    fn on_constraint(self, name: &str, map: impl FnOnce(&dyn sqlx::error::DatabaseError) -> Error) -> Result<T>;

    /// Several constraints, each with its error.
    fn on_constraints(self, table: &[ConstraintError]) -> Result<T>;
}

impl<T> ResultExt<T> for std::result::Result<T, sqlx::Error> {
    fn on_constraint(self, name: &str, map: impl FnOnce(&dyn sqlx::error::DatabaseError) -> Error) -> Result<T> {
        self.map_err(|err| match &err {
            sqlx::Error::Database(db) if db.constraint() == Some(name) => map(db.as_ref()),
            _ => Error::from(err),
        })
    }

    fn on_constraints(self, table: &[ConstraintError]) -> Result<T> {
        self.map_err(|err| {
            if let sqlx::Error::Database(db) = &err
                && let Some((_, map)) = table.iter().find(|(name, _)| db.constraint() == Some(*name))
            {
                return map();
            }
            Error::from(err)
        })
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.body.code.status();
        let retry_after = self.body.retry_after;
        let internal = self.body.code == ErrorCode::InternalError;
        let mut res = (status, axum::Json(self.body)).into_response();
        if let Some(secs) = retry_after {
            let whole = secs.ceil().max(1.0) as u64;
            if let Ok(v) = HeaderValue::from_str(&whole.to_string()) {
                res.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        if internal {
            res.extensions_mut().insert(InternalErrorMarker);
        }
        res
    }
}

impl aide::OperationOutput for Error {
    type Inner = ErrorBody;

    fn operation_response(ctx: &mut GenContext, _op: &mut Operation) -> Option<ApiResponse> {
        let schema = ctx.schema.subschema_for::<ErrorBody>();
        Some(ApiResponse {
            description: "An error: `code` is stable and meant for programs, `message` is for display".into(),
            content: [(
                "application/json".to_string(),
                MediaType {
                    schema: Some(SchemaObject {
                        json_schema: schema,
                        example: None,
                        external_docs: None,
                    }),
                    ..Default::default()
                },
            )]
            .into_iter()
            .collect(),
            ..Default::default()
        })
    }

    fn inferred_responses(ctx: &mut GenContext, op: &mut Operation) -> Vec<(Option<ApiStatus>, ApiResponse)> {
        Self::operation_response(ctx, op)
            .map(|r| vec![(None, r)])
            .unwrap_or_default()
    }
}
