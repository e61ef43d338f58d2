//! Bots (spec §4.3, §6.6, §12.6). Management is for the bot's owner only: someone else's bot
//! answers 404, as a missing one does. Bot tokens may not manage bots (403 `BotNotAllowed`).

use aide::axum::ApiRouter;
use aide::axum::routing::{delete_with, get_with, post_with};
use axum::extract::State;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::entities::bots::{
    self, BotChange, BotCreatedResponse, BotInfo, BotLoginPayload, BotSpaceInfo, BotVisibility, CreateBotPayload,
    InstallBotPayload,
};
use crate::error::{Error, ErrorCode, Result};
use crate::events::Outbox;
use crate::functions::ids::UserId;
use crate::functions::patch::nullable;
use crate::functions::rate_limit::Bucket;
use crate::functions::{tokens, validation};
use crate::middlewares::auth::UserAuth;
use crate::middlewares::json::Json;
use crate::middlewares::path::Path;
use crate::middlewares::rate_limit::{Limit, Limits};
use crate::routes::account::TokenPair;
use crate::routes::users::UserPatch;
use crate::routes::{BotPath, BotSpacePath, RouterExt, doc};
use crate::services::{bots as service, profiles};
use crate::state::AppState;

/// Informational permission names a bot may list.
const MAX_PERMISSIONS: usize = 32;

pub fn router() -> ApiRouter<AppState> {
    let op = |id, summary| doc("Bots", id, summary, Limit::GENERAL);
    ApiRouter::new()
        .mikoto_route(
            "/bots/",
            get_with(list, op("bots.list", "List My Bots")).post_with(create, op("bots.create", "Create Bot")),
        )
        .mikoto_route(
            "/bots/login",
            post_with(login, doc("Bots", "bots.login", "Bot Login", Limit::AUTH)),
        )
        .mikoto_route(
            "/bots/{botId}",
            get_with(get, op("bots.get", "Get Bot"))
                .patch_with(update, op("bots.update", "Update Bot"))
                .delete_with(delete, op("bots.delete", "Delete Bot")),
        )
        .mikoto_route(
            "/bots/{botId}/regenerate-token",
            post_with(regenerate, op("bots.regenerateToken", "Regenerate Bot Token")),
        )
        .mikoto_route(
            "/bots/{botId}/spaces",
            get_with(list_spaces, op("bots.listSpaces", "List Bot Spaces")),
        )
        .mikoto_route(
            "/bots/{botId}/install",
            post_with(install, op("bots.install", "Install Bot to Space")),
        )
        .mikoto_route(
            "/bots/{botId}/spaces/{spaceId}",
            delete_with(remove_from_space, op("bots.removeFromSpace", "Remove Bot from Space")),
        )
}

#[derive(Deserialize, JsonSchema)]
pub struct UpdateBotPayload {
    #[serde(default)]
    #[schemars(length(min = 1, max = crate::functions::validation::NAME_MAX))]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schemars(with = "Option<String>")]
    pub avatar: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schemars(with = "Option<String>")]
    pub description: Option<Option<String>>,
    #[serde(default)]
    #[schemars(length(max = MAX_PERMISSIONS))]
    pub permissions: Option<Vec<String>>,
    #[serde(default)]
    pub visibility: Option<BotVisibility>,
}

fn validate_permissions(list: Vec<String>) -> Result<Vec<String>> {
    if list.len() > MAX_PERMISSIONS {
        return Err(Error::validation("permissions", "At most 32 permission names"));
    }
    for p in &list {
        let len = p.chars().count();
        if len == 0 || len > 64 {
            return Err(Error::validation(
                "permissions",
                "Each permission name is 1–64 characters",
            ));
        }
    }
    Ok(list)
}

/// A fresh secret: 32 URL-safe characters (24 random bytes).
fn new_secret() -> (String, Vec<u8>) {
    let secret = tokens::generate_len(24);
    let digest = tokens::digest(&secret);
    (secret, digest)
}

async fn owned(state: &AppState, owner: UserId, bot: UserId) -> Result<BotInfo> {
    bots::get_owned(&state.db, owner, bot)
        .await?
        .ok_or_else(Error::not_found)
}

async fn list(State(state): State<AppState>, auth: UserAuth) -> Result<axum::Json<Vec<BotInfo>>> {
    Ok(axum::Json(bots::list(&state.db, auth.user_id).await?))
}

async fn create(
    State(state): State<AppState>,
    auth: UserAuth,
    Json(body): Json<CreateBotPayload>,
) -> Result<axum::Json<BotCreatedResponse>> {
    let name = validation::display_name("name", &body.name)?;
    let mut tx = state.db.begin().await?;
    bots::lock_owner(&mut *tx, auth.user_id).await?;
    if bots::count_for_owner(&mut *tx, auth.user_id).await? >= bots::MAX_PER_OWNER {
        return Err(Error::new(
            ErrorCode::LimitExceeded,
            "An owner may have at most 25 bots",
        ));
    }
    let id = UserId::new();
    let (secret, digest) = new_secret();
    bots::insert(&mut tx, id, auth.user_id, &name, &digest).await?;
    tx.commit().await?;
    Ok(axum::Json(BotCreatedResponse {
        id,
        name,
        owner_id: auth.user_id,
        token: secret,
    }))
}

/// Any failure is the same 401 `WrongPassword`. A bcrypt hash carried over from Mikoto is
/// verified once and replaced by the secret's SHA-256 digest.
async fn login(
    State(state): State<AppState>,
    limits: Limits,
    Json(body): Json<BotLoginPayload>,
) -> Result<axum::Json<TokenPair>> {
    limits.check(Bucket::BotLogin, &body.bot_id.to_string()).await?;
    let wrong = || Error::new(ErrorCode::WrongPassword, "Invalid bot id or token");
    let digest = tokens::digest(&body.token);
    let credential = bots::credential(&state.db, body.bot_id).await?;
    let ok = match &credential {
        Some(bots::Credential {
            secret_digest: Some(stored),
            ..
        }) => tokens::digests_equal(stored, &digest),
        Some(bots::Credential {
            secret_bcrypt: Some(hash),
            ..
        }) => {
            let ok = state.hasher.verify(&body.token, Some(hash)).await?;
            if ok {
                bots::upgrade_secret(&state.db, body.bot_id, &digest).await?;
            }
            ok
        }
        // Unknown bots cost the same comparison.
        _ => {
            tokens::digests_equal(&[0; 32], &digest);
            false
        }
    };
    let Some(credential) = credential.filter(|_| ok) else {
        return Err(wrong());
    };
    let access_token = state
        .jwt
        .bot_token(body.bot_id.0, credential.token_generation, state.config.bot_token_ttl)
        .map_err(Error::internal)?;
    Ok(axum::Json(TokenPair {
        access_token,
        refresh_token: None,
    }))
}

async fn get(State(state): State<AppState>, auth: UserAuth, Path(p): Path<BotPath>) -> Result<axum::Json<BotInfo>> {
    Ok(axum::Json(owned(&state, auth.user_id, p.bot_id).await?))
}

/// PATCH semantics; a profile change (name, avatar, description) is announced like a user's.
async fn update(
    State(state): State<AppState>,
    auth: UserAuth,
    Path(p): Path<BotPath>,
    Json(body): Json<UpdateBotPayload>,
) -> Result<axum::Json<BotInfo>> {
    owned(&state, auth.user_id, p.bot_id).await?;
    let profile = UserPatch {
        name: body.name,
        avatar: body.avatar,
        description: body.description,
    }
    .validate(&state.config.media_public_url)?;
    let change = BotChange {
        visibility: body.visibility,
        permissions: body.permissions.map(validate_permissions).transpose()?,
    };
    let profile_changed = !profile.is_empty();
    let mut tx = state.db.begin().await?;
    if !profiles::apply_change(&mut tx, &state.media, p.bot_id, profile).await? {
        return Err(Error::not_found());
    }
    bots::update(&mut *tx, p.bot_id, &change).await?;
    tx.commit().await?;
    if profile_changed {
        profiles::announce_user(&state.db, &state.bus, p.bot_id).await?;
    }
    Ok(axum::Json(owned(&state, auth.user_id, p.bot_id).await?))
}

async fn delete(State(state): State<AppState>, auth: UserAuth, Path(p): Path<BotPath>) -> Result<axum::Json<()>> {
    let mut tx = state.db.begin().await?;
    lock_owned(&mut tx, auth.user_id, p.bot_id).await?;
    let mut outbox = Outbox::new();
    service::delete(&mut tx, &mut outbox, p.bot_id).await?;
    outbox.commit(tx, &state.bus).await?;
    service::revoke_sockets(&state.bus, &state.sessions, p.bot_id).await;
    Ok(axum::Json(()))
}

/// Locks the bot row of `owner` for this transaction; 404 for a missing or foreign bot.
async fn lock_owned(tx: &mut sqlx::PgConnection, owner: UserId, bot: UserId) -> Result<()> {
    if bots::lock_owned(tx, owner, bot).await? {
        Ok(())
    } else {
        Err(Error::not_found())
    }
}

async fn regenerate(
    State(state): State<AppState>,
    auth: UserAuth,
    Path(p): Path<BotPath>,
) -> Result<axum::Json<BotCreatedResponse>> {
    let (secret, digest) = new_secret();
    if !bots::regenerate(&state.db, auth.user_id, p.bot_id, &digest).await? {
        return Err(Error::not_found());
    }
    service::revoke_sockets(&state.bus, &state.sessions, p.bot_id).await;
    let bot = owned(&state, auth.user_id, p.bot_id).await?;
    Ok(axum::Json(BotCreatedResponse {
        id: bot.id,
        name: bot.name,
        owner_id: bot.owner_id,
        token: secret,
    }))
}

async fn list_spaces(
    State(state): State<AppState>,
    auth: UserAuth,
    Path(p): Path<BotPath>,
) -> Result<axum::Json<Vec<BotSpaceInfo>>> {
    owned(&state, auth.user_id, p.bot_id).await?;
    Ok(axum::Json(bots::spaces(&state.db, p.bot_id).await?))
}

/// The caller owns the bot or it is public, **and** holds MANAGE_BOTS in the target space.
async fn install(
    State(state): State<AppState>,
    auth: UserAuth,
    Path(p): Path<BotPath>,
    Json(body): Json<InstallBotPayload>,
) -> Result<axum::Json<()>> {
    let mut tx = state.db.begin().await?;
    let mut outbox = Outbox::new();
    service::add_to_space(&mut tx, &mut outbox, auth.user_id, body.space_id, p.bot_id).await?;
    outbox.commit(tx, &state.bus).await?;
    Ok(axum::Json(()))
}

async fn remove_from_space(
    State(state): State<AppState>,
    auth: UserAuth,
    Path(p): Path<BotSpacePath>,
) -> Result<axum::Json<()>> {
    let mut tx = state.db.begin().await?;
    lock_owned(&mut tx, auth.user_id, p.bot_id).await?;
    let mut outbox = Outbox::new();
    if !service::leave_space(&mut tx, &mut outbox, p.space_id, p.bot_id).await? {
        return Err(Error::not_found());
    }
    outbox.commit(tx, &state.bus).await?;
    Ok(axum::Json(()))
}
