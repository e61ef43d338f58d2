//! Account: registration, login, token refresh, passwords, logout (spec §4.2, §4.17, §6).

use aide::axum::ApiRouter;
use aide::axum::routing::post_with;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::entities::{accounts, handles, password_resets, sessions, users};
use crate::error::{Error, ErrorCode, Result};
use crate::events::{Event, Revoked};
use crate::functions::ids::{SessionId, UserId};
use crate::functions::mail::Mail;
use crate::functions::rate_limit::Bucket;
use crate::functions::{passwords, validation};
use crate::middlewares::auth::{OptionalAuth, UserAuth};
use crate::middlewares::json::Json;
use crate::middlewares::rate_limit::{Limit, Limits};
use crate::routes::{RouterExt, doc};
use crate::state::AppState;

pub fn router() -> ApiRouter<AppState> {
    let op = |id, summary, limit| doc("Account", id, summary, limit);
    ApiRouter::new()
        .mikoto_route(
            "/account/register",
            post_with(register, op("account.register", "User Registration", Limit::REGISTER)),
        )
        .mikoto_route(
            "/account/login",
            post_with(login, op("account.login", "User Login", Limit::AUTH)),
        )
        .mikoto_route(
            "/account/refresh",
            post_with(refresh, op("account.refresh", "Refresh Access Token", Limit::REFRESH)),
        )
        .mikoto_route(
            "/account/change_password",
            post_with(
                change_password,
                op("account.change_password", "Change Password", Limit::GENERAL),
            ),
        )
        .mikoto_route(
            "/account/reset_password",
            post_with(
                reset_password,
                op("account.reset_password", "Reset Password", Limit::AUTH),
            ),
        )
        .mikoto_route(
            "/account/reset_password/submit",
            post_with(
                reset_password_confirm,
                op("account.reset_password.confirm", "Confirm Password Reset", Limit::AUTH),
            ),
        )
        .mikoto_route(
            "/account/logout",
            post_with(logout, op("account.logout", "Log Out", Limit::REFRESH)),
        )
        .mikoto_route(
            "/account/logout_all",
            post_with(
                logout_all,
                op("account.logout_all", "Log Out Everywhere", Limit::GENERAL),
            ),
        )
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenPair {
    pub access_token: String,
    /// If the refresh token is not provided, you can continue using the same refresh token.
    pub refresh_token: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
pub struct RegisterPayload {
    #[schemars(length(max = validation::EMAIL_MAX))]
    pub email: String,
    #[schemars(length(min = 1, max = validation::NAME_MAX))]
    pub name: String,
    #[schemars(length(min = passwords::MIN_CHARS))]
    pub password: String,
}

#[derive(Deserialize, JsonSchema)]
pub struct LoginPayload {
    pub email: String,
    pub password: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefreshPayload {
    pub refresh_token: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangePasswordPayload {
    pub old_password: String,
    #[schemars(length(min = passwords::MIN_CHARS))]
    pub new_password: String,
}

#[derive(Deserialize, JsonSchema)]
pub struct ResetPasswordPayload {
    pub email: String,
}

#[derive(Deserialize, JsonSchema)]
pub struct ResetPasswordConfirmData {
    pub token: String,
    #[schemars(length(min = passwords::MIN_CHARS))]
    pub password: String,
}

#[derive(Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct LogoutPayload {
    pub refresh_token: Option<String>,
}

/// Refuses registration when it is closed — before the body is even read (spec §2.9 order).
pub struct RegistrationOpen;

impl FromRequestParts<AppState> for RegistrationOpen {
    type Rejection = Error;

    async fn from_request_parts(_: &mut Parts, state: &AppState) -> Result<Self> {
        if state.config.registration_enabled {
            Ok(RegistrationOpen)
        } else {
            Err(Error::new(
                ErrorCode::RegistrationDisabled,
                "Registration is closed on this server",
            ))
        }
    }
}

impl aide::OperationInput for RegistrationOpen {}

fn token_pair(state: &AppState, user: UserId, session: SessionId, refresh: Option<String>) -> Result<TokenPair> {
    let access_token = state
        .jwt
        .user_token(user.0, session.0, state.config.access_token_ttl)
        .map_err(Error::internal)?;
    Ok(TokenPair {
        access_token,
        refresh_token: refresh,
    })
}

/// Opens an auth session inside `tx` and signs its pair; the caller commits.
async fn open_session(state: &AppState, tx: &mut sqlx::PgConnection, user: UserId) -> Result<TokenPair> {
    let (session, refresh) = sessions::create(tx, user, state.config.refresh_token_ttl).await?;
    token_pair(state, user, session, Some(refresh))
}

/// Tells every instance that sessions are gone, so their sockets close with 4006 (spec §6.2).
async fn announce_revoked(state: &AppState, user: UserId, revoked: &[SessionId]) {
    state.sessions.announce(revoked).await;
    for session in revoked {
        Event::SessionRevoked(*session, &Revoked { user_id: user })
            .publish(&state.bus)
            .await;
    }
}

async fn register(
    _open: RegistrationOpen,
    State(state): State<AppState>,
    Json(p): Json<RegisterPayload>,
) -> Result<axum::Json<TokenPair>> {
    let email = validation::email(&p.email)?;
    let name = validation::display_name("name", &p.name)?;
    passwords::validate_new(&p.password)?;
    let hash = state.hasher.hash(&p.password).await?;

    let user = UserId::new();
    let mut tx = state.db.begin().await?;
    users::insert(&mut *tx, user, &name).await?;
    accounts::insert(&mut tx, user, &email, &hash).await?;
    handles::assign_default(&mut tx, user, &name, &state.config.handle_domain).await?;
    let pair = open_session(&state, &mut tx, user).await?;
    tx.commit().await?;
    Ok(axum::Json(pair))
}

fn wrong_password() -> Error {
    Error::new(ErrorCode::WrongPassword, "Invalid email or password")
}

async fn login(
    State(state): State<AppState>,
    limits: Limits,
    Json(p): Json<LoginPayload>,
) -> Result<axum::Json<TokenPair>> {
    let email = p.email.trim().to_lowercase();
    limits.check(Bucket::AuthAccount, &email).await?;
    let account = accounts::find_by_email(&state.db, &email).await?;
    // Unknown emails verify against a dummy hash: same answer, same time.
    let ok = state
        .hasher
        .verify(&p.password, account.as_ref().map(|(_, h)| h.as_str()))
        .await?;
    let Some((user, hash)) = account.filter(|_| ok) else {
        return Err(wrong_password());
    };
    if state.hasher.needs_rehash(&hash) {
        let rehashed = state.hasher.hash(&p.password).await?;
        accounts::set_password(&state.db, user, &rehashed).await?;
    }
    let mut tx = state.db.begin().await?;
    let pair = open_session(&state, &mut tx, user).await?;
    tx.commit().await?;
    Ok(axum::Json(pair))
}

async fn refresh(State(state): State<AppState>, Json(p): Json<RefreshPayload>) -> Result<axum::Json<TokenPair>> {
    let cfg = &state.config;
    match sessions::refresh(
        &state.db,
        &p.refresh_token,
        cfg.refresh_token_ttl,
        cfg.refresh_reuse_grace,
    )
    .await?
    {
        sessions::Refresh::Rotated { user, session, token } => {
            Ok(axum::Json(token_pair(&state, user, session, Some(token))?))
        }
        sessions::Refresh::Grace { user, session } => Ok(axum::Json(token_pair(&state, user, session, None)?)),
        sessions::Refresh::Reused { user, session } => {
            tracing::warn!(%user, %session, "refresh token reuse detected; session revoked");
            announce_revoked(&state, user, &[session]).await;
            Err(Error::new(
                ErrorCode::RefreshTokenReused,
                "This refresh token was already used; the session has been revoked",
            ))
        }
        sessions::Refresh::Unknown => Err(Error::new(
            ErrorCode::InvalidRefreshToken,
            "The refresh token is not valid",
        )),
        sessions::Refresh::Expired => Err(Error::new(ErrorCode::TokenExpired, "The refresh token has expired")),
    }
}

async fn change_password(
    State(state): State<AppState>,
    auth: UserAuth,
    Json(p): Json<ChangePasswordPayload>,
) -> Result<axum::Json<TokenPair>> {
    let current = accounts::password_hash(&state.db, auth.user_id).await?;
    if !state.hasher.verify(&p.old_password, current.as_deref()).await? {
        return Err(wrong_password());
    }
    passwords::validate_new(&p.new_password).map_err(|e| e.with_field("newPassword"))?;
    let hash = state.hasher.hash(&p.new_password).await?;
    let mut tx = state.db.begin().await?;
    accounts::set_password(&mut *tx, auth.user_id, &hash).await?;
    let revoked = sessions::revoke_all(&mut *tx, auth.user_id).await?;
    let pair = open_session(&state, &mut tx, auth.user_id).await?;
    tx.commit().await?;
    announce_revoked(&state, auth.user_id, &revoked).await;
    Ok(axum::Json(pair))
}

async fn reset_password(
    State(state): State<AppState>,
    limits: Limits,
    Json(p): Json<ResetPasswordPayload>,
) -> Result<axum::Json<()>> {
    let email = p.email.trim().to_lowercase();
    // Everything after this point happens in the background: the answer and its timing are the
    // same whether or not the account exists, and whether or not the mail limit was hit.
    if limits.check_silently(Bucket::AuthMail, &email).await {
        tokio::spawn(async move {
            if let Err(e) = send_reset_mail(&state, &email).await {
                tracing::warn!(error = %e, "password reset mail not sent");
            }
        });
    }
    Ok(axum::Json(()))
}

async fn send_reset_mail(state: &AppState, email: &str) -> Result<()> {
    let Some((user, _)) = accounts::find_by_email(&state.db, email).await? else {
        return Ok(());
    };
    let mut tx = state.db.begin().await?;
    let token = password_resets::create(&mut tx, user).await?;
    tx.commit().await?;
    let link = format!("{}/forgotpassword/{token}", state.config.web_url);
    state
        .mailer
        .send(Mail {
            to: email.to_string(),
            subject: "Reset your password".into(),
            body: format!(
                "Someone asked to reset the password of your account.\n\nTo choose a new password, open:\n{link}\n\n\
                 The link works once, for one hour. If you did not ask for this, ignore this mail."
            ),
        })
        .await;
    Ok(())
}

async fn reset_password_confirm(
    State(state): State<AppState>,
    Json(p): Json<ResetPasswordConfirmData>,
) -> Result<axum::Json<()>> {
    passwords::validate_new(&p.password)?;
    let hash = state.hasher.hash(&p.password).await?;
    let mut tx = state.db.begin().await?;
    let Some(user) = password_resets::consume(&mut tx, &p.token).await? else {
        return Err(Error::new(
            ErrorCode::InvalidResetToken,
            "This password reset link is invalid or has expired",
        ));
    };
    accounts::set_password(&mut *tx, user, &hash).await?;
    let revoked = sessions::revoke_all(&mut *tx, user).await?;
    tx.commit().await?;
    announce_revoked(&state, user, &revoked).await;
    Ok(axum::Json(()))
}

async fn logout(
    State(state): State<AppState>,
    auth: OptionalAuth,
    Json(p): Json<LogoutPayload>,
) -> Result<axum::Json<()>> {
    let revoked = match (p.refresh_token, auth.0) {
        (Some(token), _) => sessions::revoke_by_refresh_token(&state.db, &token).await?,
        (None, Some(auth)) => match auth.session_id() {
            Some(s) if sessions::revoke(&state.db, auth.user_id, s).await? => Some((auth.user_id, s)),
            _ => None,
        },
        (None, None) => return Err(Error::unauthorized()),
    };
    if let Some((user, session)) = revoked {
        announce_revoked(&state, user, &[session]).await;
    }
    Ok(axum::Json(()))
}

async fn logout_all(State(state): State<AppState>, auth: UserAuth) -> Result<axum::Json<()>> {
    let revoked = sessions::revoke_all(&state.db, auth.user_id).await?;
    announce_revoked(&state, auth.user_id, &revoked).await;
    Ok(axum::Json(()))
}
