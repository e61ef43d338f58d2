//! Members and role assignment (spec §4.13).

use std::collections::BTreeSet;

use aide::axum::ApiRouter;
use aide::axum::routing::{get_with, post_with};
use axum::extract::State;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::entities::access;
use crate::entities::members::{self, MemberExt};
use crate::entities::{channels, roles};
use crate::error::{Error, ErrorCode, Result};
use crate::events::{Event, Outbox};
use crate::functions::ids::{MemberId, RoleId, SpaceId, UserId};
use crate::functions::permissions::Permissions;
use crate::functions::query::{clamp_limit, empty_as_none};
use crate::middlewares::auth::Auth;
use crate::middlewares::json::Json;
use crate::middlewares::path::{Path, Query};
use crate::middlewares::rate_limit::Limit;
use crate::routes::{MemberPath, MemberRolePath, RouterExt, SpacePath, doc};
use crate::services::access::{SpaceMember, insufficient_rank, visibility_events};
use crate::services::bots;
use crate::services::members::removal_events;
use crate::state::AppState;

const MAX_ROLES: usize = 250;

pub fn router() -> ApiRouter<AppState> {
    let op = |id, summary, limit| doc("Members", id, summary, limit);
    ApiRouter::new()
        .mikoto_route(
            "/spaces/{spaceId}/members/",
            get_with(list, op("members.list", "List Members in Space", Limit::GENERAL))
                .post_with(create, op("members.create", "Add Bot Member", Limit::GENERAL)),
        )
        .mikoto_route(
            "/spaces/{spaceId}/members/{userId}",
            get_with(get, op("members.get", "Get Member from Space", Limit::GENERAL))
                .delete_with(kick, op("members.delete", "Kick Member", Limit::GENERAL))
                .patch_with(update, op("members.update", "Update Member", Limit::GENERAL)),
        )
        .mikoto_route(
            "/spaces/{spaceId}/members/{userId}/roles/{roleId}",
            post_with(add_role, op("members.addRole", "Add Role to Member", Limit::GENERAL)).delete_with(
                remove_role,
                op("members.removeRole", "Remove Role from Member", Limit::GENERAL),
            ),
        )
}

#[derive(Deserialize, JsonSchema)]
pub struct MemberListQuery {
    #[serde(default, deserialize_with = "empty_as_none")]
    #[schemars(with = "Option<MemberId>")]
    pub cursor: Option<MemberId>,
    #[serde(default, deserialize_with = "empty_as_none")]
    #[schemars(with = "Option<i64>")]
    pub limit: Option<i64>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberCreatePayload {
    pub user_id: UserId,
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberUpdatePayload {
    pub role_ids: Vec<RoleId>,
}

async fn list(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Path<SpacePath>,
    Query(q): Query<MemberListQuery>,
) -> Result<axum::Json<Vec<MemberExt>>> {
    SpaceMember::load(&state.db, p.space_id, auth.user_id).await?;
    let limit = clamp_limit(q.limit, 100, 200);
    Ok(axum::Json(members::list(&state.db, p.space_id, q.cursor, limit).await?))
}

async fn get(State(state): State<AppState>, auth: Auth, Path(p): Path<MemberPath>) -> Result<axum::Json<MemberExt>> {
    SpaceMember::load(&state.db, p.space_id, auth.user_id).await?;
    Ok(axum::Json(
        members::get(&state.db, p.space_id, p.user_id)
            .await?
            .ok_or_else(Error::not_found)?,
    ))
}

/// "Add Bot Member": a bot the caller owns, or a public one (the rules of `bots.install`).
async fn create(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Path<SpacePath>,
    Json(body): Json<MemberCreatePayload>,
) -> Result<axum::Json<MemberExt>> {
    let mut tx = state.db.begin().await?;
    let mut outbox = Outbox::new();
    let member = bots::add_to_space(&mut tx, &mut outbox, auth.user_id, p.space_id, body.user_id).await?;
    outbox.commit(tx, &state.bus).await?;
    Ok(axum::Json(member))
}

async fn kick(State(state): State<AppState>, auth: Auth, Path(p): Path<MemberPath>) -> Result<axum::Json<()>> {
    let mut tx = state.db.begin().await?;
    let me = SpaceMember::load(&mut *tx, p.space_id, auth.user_id).await?;
    let target = access::standing(&mut *tx, p.space_id, p.user_id)
        .await?
        .ok_or_else(Error::not_found)?;
    me.require(Permissions::BAN)?;
    if p.user_id == auth.user_id {
        return Err(Error::new(ErrorCode::CannotTargetSelf, "You cannot kick yourself"));
    }
    if target.is_owner || !me.standing.outranks(&target) {
        return Err(insufficient_rank());
    }
    let mut outbox = Outbox::new();
    removal_events(&mut tx, p.space_id, p.user_id, &target, &mut outbox).await?;
    members::remove(&mut tx, p.space_id, p.user_id).await?;
    outbox.commit(tx, &state.bus).await?;
    Ok(axum::Json(()))
}

/// Applies role additions and removals to one member, with the rank rule, events and Δvis.
async fn change_roles(
    state: &AppState,
    auth: Auth,
    space: SpaceId,
    user: UserId,
    wanted: impl FnOnce(&BTreeSet<RoleId>) -> Result<BTreeSet<RoleId>>,
) -> Result<MemberExt> {
    let mut tx = state.db.begin().await?;
    let me = SpaceMember::load(&mut *tx, space, auth.user_id).await?;
    if !members::lock(&mut *tx, space, user).await? {
        return Err(Error::not_found());
    }
    let member = members::get(&mut *tx, space, user)
        .await?
        .ok_or_else(Error::not_found)?;
    let current: BTreeSet<RoleId> = member.role_ids.iter().copied().collect();
    let wanted = wanted(&current)?;
    me.require(Permissions::ASSIGN_ROLES)?;
    let space_roles = roles::list(&mut *tx, space).await?;
    let changed: Vec<RoleId> = current.symmetric_difference(&wanted).copied().collect();
    for id in &changed {
        let role = space_roles.iter().find(|r| r.id == *id).ok_or_else(Error::not_found)?;
        if !me.standing.outranks_position(role.position) {
            return Err(insufficient_rank());
        }
    }
    if changed.is_empty() {
        return Ok(member);
    }
    let before = access::visibility(&mut tx, space, Some(&[user])).await?;
    for id in &changed {
        if wanted.contains(id) {
            members::add_role(&mut *tx, space, user, *id).await?;
        } else {
            members::remove_role(&mut *tx, space, user, *id).await?;
        }
    }
    let after = access::visibility(&mut tx, space, Some(&[user])).await?;
    let all = channels::list(&mut *tx, space).await?;
    let member = members::get(&mut *tx, space, user)
        .await?
        .ok_or_else(Error::not_found)?;
    let mut outbox = Outbox::new();
    outbox.push(Event::MemberUpdated(&member));
    visibility_events(&before, &after, &all, &mut outbox);
    outbox.commit(tx, &state.bus).await?;
    Ok(member)
}

/// The checks of `members.addRole` / `members.removeRole` in the order of spec §2.9: the role and
/// the target member exist (404); the caller holds ASSIGN_ROLES, and the role is below them
/// (403) even when the call would change nothing; the role is not `@everyone` (400).
async fn check_assignment(state: &AppState, auth: Auth, p: &MemberRolePath) -> Result<()> {
    let me = SpaceMember::load(&state.db, p.space_id, auth.user_id).await?;
    let role = roles::get(&state.db, p.space_id, p.role_id)
        .await?
        .ok_or_else(Error::not_found)?;
    if !members::is_member(&state.db, p.space_id, p.user_id).await? {
        return Err(Error::not_found());
    }
    me.require(Permissions::ASSIGN_ROLES)?;
    if !me.standing.outranks_position(role.position) {
        return Err(insufficient_rank());
    }
    if role.is_default {
        return Err(Error::new(
            ErrorCode::DefaultRoleImmutable,
            "The @everyone role applies to every member implicitly",
        ));
    }
    Ok(())
}

async fn update(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Path<MemberPath>,
    Json(body): Json<MemberUpdatePayload>,
) -> Result<axum::Json<MemberExt>> {
    SpaceMember::load(&state.db, p.space_id, auth.user_id).await?;
    let space_roles = roles::list(&state.db, p.space_id).await?;
    let mut requested = BTreeSet::new();
    for id in body.role_ids {
        let role = space_roles.iter().find(|r| r.id == id).ok_or_else(Error::not_found)?;
        if !role.is_default {
            requested.insert(id);
        }
    }
    if requested.len() > MAX_ROLES {
        return Err(Error::new(
            ErrorCode::LimitExceeded,
            "A member can hold at most 250 roles",
        ));
    }
    let member = change_roles(&state, auth, p.space_id, p.user_id, |_| Ok(requested)).await?;
    Ok(axum::Json(member))
}

async fn add_role(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Path<MemberRolePath>,
) -> Result<axum::Json<MemberExt>> {
    Ok(axum::Json(set_role(&state, auth, &p, true).await?))
}

async fn remove_role(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Path<MemberRolePath>,
) -> Result<axum::Json<MemberExt>> {
    Ok(axum::Json(set_role(&state, auth, &p, false).await?))
}

/// Assigns (`assigned`) or unassigns one role.
async fn set_role(state: &AppState, auth: Auth, p: &MemberRolePath, assigned: bool) -> Result<MemberExt> {
    check_assignment(state, auth, p).await?;
    change_roles(state, auth, p.space_id, p.user_id, |current| {
        let mut wanted = current.clone();
        if assigned {
            wanted.insert(p.role_id);
        } else {
            wanted.remove(&p.role_id);
        }
        Ok(wanted)
    })
    .await
}
