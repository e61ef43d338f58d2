//! Spaces (spec §4.8, §4.17 `spaces.transferOwnership`).

use aide::axum::ApiRouter;
use aide::axum::routing::{delete_with, get_with, post_with};
use axum::extract::State;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::entities::access;
use crate::entities::channels::{self, Channel, ChannelType};
use crate::entities::handles::{self, HandleOwner};
use crate::entities::media;
use crate::entities::members;
use crate::entities::preferences::{self, NotificationLevel, NotificationPreference};
use crate::entities::roles::{self, RoleRow};
use crate::entities::spaces::{self, SpaceExt, SpaceRow, SpaceType, SpaceVisibility, View};
use crate::entities::{bans, invites, users};
use crate::error::{Error, ErrorCode, Result};
use crate::events::{Event, Outbox};
use crate::functions::ids::{ChannelId, RoleId, SpaceId, UserId};
use crate::functions::media::Store;
use crate::functions::patch::nullable;
use crate::functions::permissions::Permissions;
use crate::functions::validation;
use crate::middlewares::auth::{Auth, OptionalAuth, UserAuth};
use crate::middlewares::json::Json;
use crate::middlewares::path::Path;
use crate::middlewares::rate_limit::Limit;
use crate::routes::{JoinPath, RouterExt, SpacePath, doc};
use crate::services::access::{SpaceMember, visibility_events};
use crate::services::members::removal_events;
use crate::state::AppState;

pub fn router() -> ApiRouter<AppState> {
    let op = |id, summary, limit| doc("Spaces", id, summary, limit);
    ApiRouter::new()
        .mikoto_route(
            "/spaces/",
            get_with(list, op("spaces.list", "List Spaces", Limit::GENERAL))
                .post_with(create, op("spaces.create", "Create Space", Limit::SPACE_CREATE)),
        )
        .mikoto_route(
            "/spaces/{spaceId}",
            get_with(get, op("spaces.get", "Get Space", Limit::GENERAL))
                .delete_with(delete, op("spaces.delete", "Delete Space", Limit::GENERAL))
                .patch_with(update, op("spaces.update", "Update Space", Limit::GENERAL)),
        )
        .mikoto_route(
            "/spaces/join/{invite}",
            get_with(preview, op("spaces.preview", "Preview Space Invite", Limit::GENERAL))
                .post_with(join, op("spaces.join", "Join Space", Limit::GENERAL)),
        )
        .mikoto_route(
            "/spaces/{spaceId}/leave",
            delete_with(leave, op("spaces.leave", "Leave Space", Limit::GENERAL)),
        )
        .mikoto_route(
            "/spaces/notification-preferences",
            get_with(
                list_preferences,
                op(
                    "spaces.listNotificationPreferences",
                    "List Notification Preferences",
                    Limit::GENERAL,
                ),
            ),
        )
        .mikoto_route(
            "/spaces/{spaceId}/notification-preference",
            get_with(
                get_preference,
                op(
                    "spaces.getNotificationPreference",
                    "Get Notification Preference",
                    Limit::GENERAL,
                ),
            )
            .post_with(
                set_preference,
                op(
                    "spaces.setNotificationPreference",
                    "Set Notification Preference",
                    Limit::GENERAL,
                ),
            ),
        )
        .mikoto_route(
            "/spaces/{spaceId}/transfer_ownership",
            post_with(
                transfer_ownership,
                op("spaces.transferOwnership", "Transfer Ownership", Limit::GENERAL),
            ),
        )
}

#[derive(Deserialize, JsonSchema)]
pub struct SpaceCreatePayload {
    #[schemars(length(min = 1, max = crate::functions::validation::NAME_MAX))]
    pub name: String,
}

#[derive(Deserialize, JsonSchema)]
pub struct SpaceUpdatePayload {
    #[serde(default)]
    #[schemars(length(min = 1, max = crate::functions::validation::NAME_MAX))]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schemars(with = "Option<String>")]
    pub icon: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schemars(with = "Option<String>")]
    pub handle: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schemars(with = "Option<SpaceVisibility>")]
    pub visibility: Option<Option<SpaceVisibility>>,
}

#[derive(Deserialize, JsonSchema)]
pub struct NotificationPreferencePayload {
    pub level: NotificationLevel,
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransferOwnershipPayload {
    pub user_id: UserId,
}

/// The SpaceExt a member sees.
pub async fn ext_for(state: &AppState, space: SpaceId, user: UserId) -> Result<SpaceExt> {
    let mut conn = state.db.acquire().await?;
    let row = spaces::get(&mut *conn, space).await?.ok_or_else(Error::not_found)?;
    let standing = access::standing(&mut *conn, space, user)
        .await?
        .ok_or_else(Error::not_found)?;
    spaces::ext(&mut conn, &row, View::Member(&standing)).await
}

async fn list(State(state): State<AppState>, auth: Auth) -> Result<axum::Json<Vec<SpaceExt>>> {
    let mut conn = state.db.acquire().await?;
    let rows = spaces::list_for_user(&mut *conn, auth.user_id).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        if let Some(standing) = access::standing(&mut *conn, row.id, auth.user_id).await? {
            out.push(spaces::ext(&mut conn, &row, View::Member(&standing)).await?);
        }
    }
    Ok(axum::Json(out))
}

fn check_space_cap(count: i64) -> Result<()> {
    if count >= spaces::MAX_PER_USER {
        return Err(Error::new(
            ErrorCode::LimitExceeded,
            "A user may be in at most 200 spaces",
        ));
    }
    Ok(())
}

async fn create(
    State(state): State<AppState>,
    auth: UserAuth,
    Json(p): Json<SpaceCreatePayload>,
) -> Result<axum::Json<SpaceExt>> {
    let name = validation::display_name("name", &p.name)?;
    let mut tx = state.db.begin().await?;
    check_space_cap(spaces::count_for_user(&mut *tx, auth.user_id).await?)?;
    let space = SpaceRow {
        id: SpaceId::new(),
        name,
        icon: None,
        owner_id: auth.user_id,
        kind: SpaceType::None,
        visibility: None,
        handle: None,
    };
    spaces::insert(&mut *tx, &space).await?;
    let everyone = RoleRow {
        id: RoleId::new(),
        space_id: space.id,
        name: roles::DEFAULT_NAME.into(),
        color: None,
        permissions: Permissions::DEFAULT_EVERYONE.to_stored(),
        position: -1,
        is_default: true,
    };
    roles::insert(&mut *tx, &everyone).await?;
    let general = Channel {
        id: ChannelId::new(),
        space_id: Some(space.id),
        parent_id: None,
        order: 0,
        name: "general".into(),
        kind: ChannelType::Text,
        last_updated: None,
    };
    channels::insert(&mut tx, &general).await?;
    members::insert(&mut *tx, space.id, auth.user_id).await?;
    let standing = access::standing(&mut *tx, space.id, auth.user_id)
        .await?
        .ok_or_else(Error::not_found)?;
    let ext = spaces::ext(&mut tx, &space, View::Member(&standing)).await?;
    let member = members::get(&mut *tx, space.id, auth.user_id)
        .await?
        .ok_or_else(Error::not_found)?;
    let mut outbox = Outbox::new();
    outbox.push(Event::SpaceJoined(auth.user_id, &ext));
    outbox.push(Event::MemberCreated(&member));
    outbox.commit(tx, &state.bus).await?;
    Ok(axum::Json(ext))
}

async fn get(State(state): State<AppState>, auth: Auth, Path(p): Path<SpacePath>) -> Result<axum::Json<SpaceExt>> {
    Ok(axum::Json(ext_for(&state, p.space_id, auth.user_id).await?))
}

async fn update(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Path<SpacePath>,
    Json(patch): Json<SpaceUpdatePayload>,
) -> Result<axum::Json<SpaceExt>> {
    let mut tx = state.db.begin().await?;
    let me = SpaceMember::load(&mut *tx, p.space_id, auth.user_id).await?;
    me.require(Permissions::MANAGE_SPACE)?;
    let mut row = spaces::get(&mut *tx, p.space_id).await?.ok_or_else(Error::not_found)?;
    if let Some(name) = &patch.name {
        row.name = validation::display_name("name", name)?;
    }
    if let Some(icon) = &patch.icon {
        row.icon = match icon {
            // The object must exist in the spaceicon store; it is claimed in this transaction.
            Some(v) => Some(media::claim_reference(&mut tx, &state.media, Store::SpaceIcon, v, "icon").await?),
            None => None,
        };
    }
    if let Some(visibility) = patch.visibility {
        row.visibility = visibility;
    }
    spaces::update(&mut *tx, &row).await?;
    if let Some(handle) = &patch.handle {
        // `null` or `""` releases the handle; anything else follows `user.setHandle`'s rules.
        let requested = handle.as_deref().map(str::trim).filter(|h| !h.is_empty());
        let owner = HandleOwner::Space { id: row.id };
        handles::set_requested(&mut tx, owner, requested, &state.config.handle_domain).await?;
    }
    let row = spaces::get(&mut *tx, p.space_id).await?.ok_or_else(Error::not_found)?;
    let everything = spaces::ext(&mut tx, &row, View::Everything).await?;
    let mine = spaces::ext(&mut tx, &row, View::Member(&me.standing)).await?;
    let mut outbox = Outbox::new();
    outbox.push(Event::SpaceUpdated(&everything));
    outbox.commit(tx, &state.bus).await?;
    Ok(axum::Json(mine))
}

async fn delete(State(state): State<AppState>, auth: Auth, Path(p): Path<SpacePath>) -> Result<axum::Json<()>> {
    let mut tx = state.db.begin().await?;
    let me = SpaceMember::load(&mut *tx, p.space_id, auth.user_id).await?;
    me.require_owner()?;
    let row = spaces::get(&mut *tx, p.space_id).await?.ok_or_else(Error::not_found)?;
    let before = spaces::ext(&mut tx, &row, View::Everything).await?;
    spaces::delete(&mut *tx, p.space_id).await?;
    let mut outbox = Outbox::new();
    // Every member's sessions are subscribed to the space topic (spec §4.8: all members).
    outbox.push(Event::SpaceDeleted(&before));
    outbox.commit(tx, &state.bus).await?;
    Ok(axum::Json(()))
}

/// An invite code, or `@handle` of a public space (spec §4.8).
enum Entry {
    Invite(String),
    Handle,
}

async fn resolve(conn: &mut sqlx::PgConnection, key: &str) -> Result<(SpaceRow, Entry)> {
    if let Some(handle) = key.strip_prefix('@') {
        let row = spaces::by_handle(&mut *conn, handle)
            .await?
            .ok_or_else(Error::not_found)?;
        if row.visibility != Some(SpaceVisibility::Public) {
            return Err(Error::new(
                ErrorCode::Forbidden,
                "This space can only be joined with an invite",
            ));
        }
        return Ok((row, Entry::Handle));
    }
    let invite = invites::get_usable(&mut *conn, key)
        .await?
        .ok_or_else(Error::not_found)?;
    let row = spaces::get(&mut *conn, invite.space_id)
        .await?
        .ok_or_else(Error::not_found)?;
    Ok((row, Entry::Invite(invite.id)))
}

async fn preview(
    State(state): State<AppState>,
    auth: OptionalAuth,
    Path(p): Path<JoinPath>,
) -> Result<axum::Json<SpaceExt>> {
    let mut conn = state.db.acquire().await?;
    let (row, _) = resolve(&mut conn, &p.invite).await?;
    let standing = match auth.0 {
        Some(a) => access::standing(&mut *conn, row.id, a.user_id).await?,
        None => None,
    };
    let view = standing.as_ref().map(View::Member).unwrap_or(View::Outsider);
    Ok(axum::Json(spaces::ext(&mut conn, &row, view).await?))
}

async fn join(State(state): State<AppState>, auth: UserAuth, Path(p): Path<JoinPath>) -> Result<axum::Json<SpaceExt>> {
    let mut tx = state.db.begin().await?;
    let (row, entry) = resolve(&mut tx, &p.invite).await?;
    if bans::is_banned(&mut *tx, row.id, auth.user_id).await? {
        return Err(Error::new(ErrorCode::Banned, "You are banned from this space"));
    }
    if members::is_member(&mut *tx, row.id, auth.user_id).await? {
        return Err(Error::new(ErrorCode::AlreadyMember, "Already a member of this space"));
    }
    check_space_cap(spaces::count_for_user(&mut *tx, auth.user_id).await?)?;
    if let Entry::Invite(code) = &entry
        && !invites::consume(&mut *tx, code).await?
    {
        return Err(Error::not_found());
    }
    members::insert(&mut *tx, row.id, auth.user_id).await?;
    let standing = access::standing(&mut *tx, row.id, auth.user_id)
        .await?
        .ok_or_else(Error::not_found)?;
    let ext = spaces::ext(&mut tx, &row, View::Member(&standing)).await?;
    let member = members::get(&mut *tx, row.id, auth.user_id)
        .await?
        .ok_or_else(Error::not_found)?;
    let mut outbox = Outbox::new();
    outbox.push(Event::SpaceJoined(auth.user_id, &ext));
    outbox.push(Event::MemberCreated(&member));
    outbox.commit(tx, &state.bus).await?;
    Ok(axum::Json(ext))
}

async fn leave(State(state): State<AppState>, auth: Auth, Path(p): Path<SpacePath>) -> Result<axum::Json<()>> {
    let mut tx = state.db.begin().await?;
    let me = SpaceMember::load(&mut *tx, p.space_id, auth.user_id).await?;
    if me.standing.is_owner {
        return Err(Error::new(
            ErrorCode::OwnerCannotLeave,
            "The owner must transfer ownership before leaving",
        ));
    }
    let mut outbox = Outbox::new();
    removal_events(&mut tx, p.space_id, auth.user_id, &me.standing, &mut outbox).await?;
    members::remove(&mut tx, p.space_id, auth.user_id).await?;
    outbox.commit(tx, &state.bus).await?;
    Ok(axum::Json(()))
}

async fn list_preferences(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<axum::Json<Vec<NotificationPreference>>> {
    Ok(axum::Json(preferences::list(&state.db, auth.user_id).await?))
}

async fn get_preference(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Path<SpacePath>,
) -> Result<axum::Json<NotificationPreference>> {
    SpaceMember::load(&state.db, p.space_id, auth.user_id).await?;
    Ok(axum::Json(preferences::get(&state.db, auth.user_id, p.space_id).await?))
}

async fn set_preference(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Path<SpacePath>,
    Json(body): Json<NotificationPreferencePayload>,
) -> Result<axum::Json<NotificationPreference>> {
    SpaceMember::load(&state.db, p.space_id, auth.user_id).await?;
    Ok(axum::Json(
        preferences::set(&state.db, auth.user_id, p.space_id, body.level).await?,
    ))
}

async fn transfer_ownership(
    State(state): State<AppState>,
    auth: UserAuth,
    Path(p): Path<SpacePath>,
    Json(body): Json<TransferOwnershipPayload>,
) -> Result<axum::Json<SpaceExt>> {
    let mut tx = state.db.begin().await?;
    let me = SpaceMember::load(&mut *tx, p.space_id, auth.user_id).await?;
    // Existence (404) before permission (403), spec §2.9.
    let target = members::get(&mut *tx, p.space_id, body.user_id)
        .await?
        .ok_or_else(Error::not_found)?;
    me.require_owner()?;
    if target.user_id == auth.user_id {
        return Err(Error::validation("userId", "You already own this space"));
    }
    if target.user.category == Some(users::UserCategory::Bot) {
        return Err(Error::validation("userId", "A bot cannot own a space"));
    }
    let pair = [auth.user_id, body.user_id];
    let before = access::visibility(&mut tx, p.space_id, Some(&pair)).await?;
    let mut row = spaces::get(&mut *tx, p.space_id).await?.ok_or_else(Error::not_found)?;
    row.owner_id = body.user_id;
    spaces::update(&mut *tx, &row).await?;
    let after = access::visibility(&mut tx, p.space_id, Some(&pair)).await?;
    let all = channels::list(&mut *tx, p.space_id).await?;
    let everything = spaces::ext(&mut tx, &row, View::Everything).await?;
    let mut outbox = Outbox::new();
    outbox.push(Event::SpaceUpdated(&everything));
    visibility_events(&before, &after, &all, &mut outbox);
    let standing = access::standing(&mut *tx, p.space_id, auth.user_id)
        .await?
        .ok_or_else(Error::not_found)?;
    let mine = spaces::ext(&mut tx, &row, View::Member(&standing)).await?;
    outbox.commit(tx, &state.bus).await?;
    Ok(axum::Json(mine))
}
