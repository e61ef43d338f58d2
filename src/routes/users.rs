//! The caller's own user (spec §4.4 `user.get`, `user.update`).

use aide::axum::ApiRouter;
use aide::axum::routing::get_with;
use axum::extract::State;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::entities::relations;
use crate::entities::users::{self, ProfileChange, UserExt};
use crate::error::{Error, ErrorCode, Result};
use crate::events::Presence;
use crate::functions::ids::UserId;
use crate::functions::patch::nullable;
use crate::functions::{media_ref, validation};
use crate::middlewares::auth::Auth;
use crate::middlewares::json::Json;
use crate::middlewares::path::{Path, Query};
use crate::middlewares::rate_limit::Limit;
use crate::routes::{RouterExt, doc};
use crate::services::profiles;
use crate::state::AppState;

pub fn router() -> ApiRouter<AppState> {
    ApiRouter::new()
        .mikoto_route(
            "/users/presence",
            get_with(presence, |o| {
                doc("Users", "users.presence", "Get Presence", Limit::GENERAL)(o)
                    .description("The presence of up to 100 users in the caller's profile audience.")
            }),
        )
        .mikoto_route(
            "/users/{userId}",
            get_with(get_user, doc("Users", "users.get", "Get User", Limit::GENERAL)),
        )
        .mikoto_route(
            "/users/me",
            get_with(get_me, doc("Users", "user.get", "Get Current User", Limit::GENERAL))
                .patch_with(update_me, doc("Users", "user.update", "Update User", Limit::GENERAL)),
        )
}

#[derive(Deserialize, JsonSchema)]
pub struct UserPatch {
    #[serde(default)]
    #[schemars(length(min = 1, max = crate::functions::validation::NAME_MAX))]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schemars(with = "Option<String>")]
    pub avatar: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schemars(with = "Option<String>")]
    #[schemars(length(max = crate::functions::validation::DESCRIPTION_MAX))]
    pub description: Option<Option<String>>,
}

impl UserPatch {
    /// Validates into a change: `name: null` means unchanged, `""` description means none.
    pub fn validate(self, media_public_url: &str) -> Result<ProfileChange> {
        let name = self.name.map(|n| validation::display_name("name", &n)).transpose()?;
        let avatar = self
            .avatar
            .map(|a| {
                a.map(|v| media_ref::normalize("avatar", &v, media_public_url, "avatar"))
                    .transpose()
            })
            .transpose()?;
        let description = self
            .description
            .map(|d| d.map(|v| validation::description(&v)).transpose().map(Option::flatten))
            .transpose()?;
        Ok(ProfileChange {
            name,
            avatar,
            description,
        })
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserPath {
    pub user_id: UserId,
}

/// A public profile (spec §4.17): visible to the user, co-members and relations; 404 otherwise.
async fn get_user(State(state): State<AppState>, auth: Auth, Path(p): Path<UserPath>) -> Result<axum::Json<UserExt>> {
    if !relations::can_see_profile(&state.db, auth.user_id, p.user_id).await? {
        return Err(Error::not_found());
    }
    Ok(axum::Json(
        users::get_ext(&state.db, p.user_id)
            .await?
            .ok_or_else(Error::not_found)?,
    ))
}

async fn get_me(State(state): State<AppState>, auth: Auth) -> Result<axum::Json<UserExt>> {
    let user = users::get_ext(&state.db, auth.user_id)
        .await?
        .ok_or_else(Error::not_found)?;
    Ok(axum::Json(user))
}

async fn update_me(
    State(state): State<AppState>,
    auth: Auth,
    Json(patch): Json<UserPatch>,
) -> Result<axum::Json<UserExt>> {
    let change = patch.validate(&state.config.media_public_url)?;
    let changed = !change.is_empty();
    let mut tx = state.db.begin().await?;
    if !profiles::apply_change(&mut tx, &state.media, auth.user_id, change).await? {
        return Err(Error::not_found());
    }
    tx.commit().await?;
    if !changed {
        let user = users::get_ext(&state.db, auth.user_id)
            .await?
            .ok_or_else(Error::not_found)?;
        return Ok(axum::Json(user));
    }
    Ok(axum::Json(
        profiles::announce_user(&state.db, &state.bus, auth.user_id).await?,
    ))
}

#[derive(Deserialize, JsonSchema)]
pub struct PresenceQuery {
    /// 1–100 comma-separated user ids.
    #[serde(default)]
    pub ids: Option<String>,
}

/// `users.presence` (spec §4.17, §12.8): one entry per requested user in the caller's profile
/// audience (the caller included), in request order; other ids are omitted.
async fn presence(
    State(state): State<AppState>,
    auth: Auth,
    Query(q): Query<PresenceQuery>,
) -> Result<axum::Json<Vec<Presence>>> {
    let invalid = || {
        Error::new(
            ErrorCode::InvalidQuery,
            "`ids` must be 1 to 100 comma-separated user ids",
        )
    };
    let raw = q.ids.unwrap_or_default();
    let parts: Vec<&str> = raw.split(',').map(str::trim).filter(|p| !p.is_empty()).collect();
    if parts.is_empty() || parts.len() > 100 {
        return Err(invalid());
    }
    let mut ids: Vec<UserId> = Vec::with_capacity(parts.len());
    for part in parts {
        let id: UserId = part.parse().map_err(|_| invalid())?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    let visible = relations::profile_audience_of(&state.db, auth.user_id, &ids).await?;
    let ids: Vec<UserId> = ids.into_iter().filter(|id| visible.contains(id)).collect();
    Ok(axum::Json(state.gateway.presence(&ids).await))
}
