//! Roles (spec §4.14, §4.17 `roles.list`).

use aide::axum::ApiRouter;
use aide::axum::routing::{get_with, patch_with};
use axum::extract::State;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::entities::access;
use crate::entities::channels;
use crate::entities::roles::{self, DEFAULT_NAME, Role, RoleRow};
use crate::error::{Error, ErrorCode, Result};
use crate::events::{Event, Outbox};
use crate::functions::ids::RoleId;
use crate::functions::patch::nullable;
use crate::functions::permissions::Permissions;
use crate::functions::validation;
use crate::middlewares::auth::Auth;
use crate::middlewares::json::Json;
use crate::middlewares::path::Path;
use crate::middlewares::rate_limit::Limit;
use crate::routes::{RolePath, RouterExt, SpacePath, doc};
use crate::services::access::{SpaceMember, insufficient_rank, visibility_events};
use crate::state::AppState;

const MAX_PER_SPACE: i64 = 250;

pub fn router() -> ApiRouter<AppState> {
    let op = |id, summary, limit| doc("Roles", id, summary, limit);
    ApiRouter::new()
        .mikoto_route(
            "/spaces/{spaceId}/roles/",
            get_with(list, op("roles.list", "List Roles", Limit::GENERAL))
                .post_with(create, op("roles.create", "Create Role", Limit::GENERAL)),
        )
        .mikoto_route(
            "/spaces/{spaceId}/roles/{roleId}",
            patch_with(update, op("roles.update", "Update Role", Limit::GENERAL))
                .delete_with(delete, op("roles.delete", "Delete Role", Limit::GENERAL)),
        )
}

#[derive(Deserialize, JsonSchema)]
pub struct RoleCreatePayload {
    #[schemars(length(min = 1, max = crate::functions::validation::NAME_MAX))]
    pub name: String,
}

/// Every field optional (spec §3.3); `color: null` clears the colour.
#[derive(Deserialize, JsonSchema)]
pub struct RolePatch {
    #[serde(default)]
    #[schemars(length(min = 1, max = crate::functions::validation::NAME_MAX))]
    pub name: Option<String>,
    #[serde(default)]
    #[schemars(regex(pattern = r"^[0-9]{1,20}$"))]
    pub permissions: Option<String>,
    #[serde(default)]
    #[schemars(range(min = 0, max = i32::MAX))]
    pub position: Option<i64>,
    #[serde(default, deserialize_with = "nullable")]
    #[schemars(with = "Option<String>")]
    pub color: Option<Option<String>>,
}

fn role_name(raw: &str) -> Result<String> {
    let name = validation::display_name("name", raw)?;
    if name.eq_ignore_ascii_case(DEFAULT_NAME) {
        return Err(Error::validation("name", "`@everyone` is reserved"));
    }
    Ok(name)
}

/// `#rgb` or `#rrggbb`, stored as lowercase `#rrggbb`.
fn color(raw: &str) -> Result<String> {
    let hex = raw
        .strip_prefix('#')
        .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
    let full = match hex {
        Some(h) if h.len() == 6 => h.to_lowercase(),
        Some(h) if h.len() == 3 => h.chars().flat_map(|c| [c, c]).collect::<String>().to_lowercase(),
        _ => {
            return Err(Error::validation("color", "`color` must be #rgb or #rrggbb"));
        }
    };
    Ok(format!("#{full}"))
}

async fn list(State(state): State<AppState>, auth: Auth, Path(p): Path<SpacePath>) -> Result<axum::Json<Vec<Role>>> {
    SpaceMember::load(&state.db, p.space_id, auth.user_id).await?;
    Ok(axum::Json(
        roles::list(&state.db, p.space_id)
            .await?
            .iter()
            .map(RoleRow::wire)
            .collect(),
    ))
}

async fn create(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Path<SpacePath>,
    Json(body): Json<RoleCreatePayload>,
) -> Result<axum::Json<Role>> {
    let mut tx = state.db.begin().await?;
    SpaceMember::load(&mut *tx, p.space_id, auth.user_id)
        .await?
        .require(Permissions::MANAGE_ROLES)?;
    let name = role_name(&body.name)?;
    if roles::count(&mut *tx, p.space_id).await? >= MAX_PER_SPACE {
        return Err(Error::new(ErrorCode::LimitExceeded, "A space has at most 250 roles"));
    }
    let row = RoleRow {
        id: RoleId::new(),
        space_id: p.space_id,
        name,
        color: None,
        permissions: 0,
        position: 0,
        is_default: false,
    };
    roles::insert(&mut *tx, &row).await?;
    let mut outbox = Outbox::new();
    outbox.push(Event::RoleCreated(&row.wire()));
    outbox.commit(tx, &state.bus).await?;
    Ok(axum::Json(row.wire()))
}

async fn update(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Path<RolePath>,
    Json(patch): Json<RolePatch>,
) -> Result<axum::Json<Role>> {
    let mut tx = state.db.begin().await?;
    let me = SpaceMember::load(&mut *tx, p.space_id, auth.user_id).await?;
    let mut role = roles::get(&mut *tx, p.space_id, p.role_id)
        .await?
        .ok_or_else(Error::not_found)?;
    me.require(Permissions::MANAGE_ROLES)?;
    if !me.standing.outranks_position(role.position) {
        return Err(insufficient_rank());
    }
    let old_perms = role.perms();
    // The role editor sends @everyone's name and position back unchanged; they are ignored.
    let (name, position) = match role.is_default {
        true => (None, None),
        false => (patch.name.as_deref(), patch.position),
    };
    let permissions = patch.permissions.as_deref().map(Permissions::parse_decimal);
    // Rank and "cannot grant what you do not hold" (403) come before value validation (400),
    // spec §2.9; a value that does not parse has nothing to check here.
    if let Some(position) = position
        && position >= 0
        && !me
            .standing
            .outranks_position(i32::try_from(position).unwrap_or(i32::MAX))
    {
        return Err(insufficient_rank());
    }
    if let Some(Some((bits, _))) = permissions
        && !me.permissions().contains(old_perms ^ bits)
    {
        return Err(Error::new(
            ErrorCode::InsufficientRank,
            "You cannot grant or revoke permissions you do not hold",
        ));
    }
    if let Some(name) = name {
        role.name = role_name(name)?;
    }
    if let Some(position) = position {
        role.position = i32::try_from(position)
            .ok()
            .filter(|p| *p >= 0)
            .ok_or_else(|| Error::validation("position", "`position` must be between 0 and 2147483647"))?;
    }
    if let Some(parsed) = permissions {
        let (bits, _undefined_dropped) =
            parsed.ok_or_else(|| Error::validation("permissions", "`permissions` must be a decimal u64 string"))?;
        role.permissions = bits.to_stored();
    }
    if let Some(c) = &patch.color {
        role.color = c.as_deref().map(color).transpose()?;
    }
    let perms_changed = role.perms() != old_perms;
    let before = if perms_changed {
        Some(access::visibility(&mut tx, p.space_id, None).await?)
    } else {
        None
    };
    roles::update(&mut *tx, &role).await?;
    let mut outbox = Outbox::new();
    outbox.push(Event::RoleUpdated(&role.wire()));
    if let Some(before) = before {
        let after = access::visibility(&mut tx, p.space_id, None).await?;
        let all = channels::list(&mut *tx, p.space_id).await?;
        visibility_events(&before, &after, &all, &mut outbox);
    }
    outbox.commit(tx, &state.bus).await?;
    Ok(axum::Json(role.wire()))
}

async fn delete(State(state): State<AppState>, auth: Auth, Path(p): Path<RolePath>) -> Result<axum::Json<()>> {
    let mut tx = state.db.begin().await?;
    let me = SpaceMember::load(&mut *tx, p.space_id, auth.user_id).await?;
    let role = roles::get(&mut *tx, p.space_id, p.role_id)
        .await?
        .ok_or_else(Error::not_found)?;
    me.require(Permissions::MANAGE_ROLES)?;
    if !me.standing.outranks_position(role.position) {
        return Err(insufficient_rank());
    }
    if role.is_default {
        return Err(Error::new(
            ErrorCode::DefaultRoleImmutable,
            "The @everyone role cannot be deleted",
        ));
    }
    let before = access::visibility(&mut tx, p.space_id, None).await?;
    roles::delete(&mut tx, p.role_id).await?;
    let after = access::visibility(&mut tx, p.space_id, None).await?;
    let all = channels::list(&mut *tx, p.space_id).await?;
    let mut outbox = Outbox::new();
    outbox.push(Event::RoleDeleted(&role.wire()));
    visibility_events(&before, &after, &all, &mut outbox);
    outbox.commit(tx, &state.bus).await?;
    Ok(axum::Json(()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn colours() {
        assert_eq!(super::color("#ABC").unwrap(), "#aabbcc");
        assert_eq!(super::color("#a1B2c3").unwrap(), "#a1b2c3");
        for bad in ["abc", "#abcd", "#ggg", "", "#"] {
            assert!(super::color(bad).is_err(), "{bad}");
        }
    }
}
