//! Invites (spec §4.16).

use aide::axum::ApiRouter;
use aide::axum::routing::{delete_with, get_with};
use axum::extract::State;
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::entities::invites::{self, Invite, MAX_USABLE_PER_SPACE};
use crate::error::{Error, ErrorCode, Result};
use crate::functions::permissions::Permissions;
use crate::functions::query::{clamp_limit, empty_as_none};
use crate::functions::time::Timestamp;
use crate::middlewares::auth::Auth;
use crate::middlewares::json::Json;
use crate::middlewares::path::{Path, Query};
use crate::middlewares::rate_limit::Limit;
use crate::routes::{InvitePath, RouterExt, SpacePath, doc};
use crate::services::access::SpaceMember;
use crate::state::AppState;

pub fn router() -> ApiRouter<AppState> {
    let op = |id, summary, limit| doc("Invites", id, summary, limit);
    ApiRouter::new()
        .mikoto_route(
            "/spaces/{spaceId}/invites/",
            get_with(list, op("invites.list", "List Invites", Limit::GENERAL))
                .post_with(create, op("invites.create", "Create Invite", Limit::GENERAL)),
        )
        .mikoto_route(
            "/spaces/{spaceId}/invites/{inviteId}",
            delete_with(delete, op("invites.delete", "Delete Invite", Limit::GENERAL)),
        )
}

/// The body may be absent; both fields are NEW.
#[derive(Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct InviteCreatePayload {
    #[serde(default)]
    #[schemars(range(min = 1, max = 10_000))]
    pub max_uses: Option<i64>,
    /// RFC 3339 with `Z` or an offset.
    #[serde(default)]
    pub expires_at: Option<String>,
}

/// NEW optional paging of `invites.list`.
#[derive(Deserialize, JsonSchema)]
pub struct InviteListQuery {
    #[serde(default, deserialize_with = "empty_as_none")]
    pub cursor: Option<String>,
    #[serde(default, deserialize_with = "empty_as_none")]
    #[schemars(with = "Option<i64>")]
    pub limit: Option<i64>,
}

async fn member_with_invites(state: &AppState, p: &SpacePath, auth: Auth) -> Result<SpaceMember> {
    let me = SpaceMember::load(&state.db, p.space_id, auth.user_id).await?;
    me.require(Permissions::MANAGE_INVITES)?;
    Ok(me)
}

fn expiry(raw: &str) -> Result<Timestamp> {
    let invalid = || Error::validation("expiresAt", "`expiresAt` must be an RFC 3339 time in the next 365 days");
    let at = DateTime::parse_from_rfc3339(raw)
        .map_err(|_| invalid())?
        .with_timezone(&Utc);
    let now = Utc::now();
    if at <= now || at > now + chrono::Duration::days(365) {
        return Err(invalid());
    }
    Ok(Timestamp::from(at))
}

async fn create(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Path<SpacePath>,
    Json(body): Json<InviteCreatePayload>,
) -> Result<axum::Json<Invite>> {
    member_with_invites(&state, &p, auth).await?;
    let max_uses = body
        .max_uses
        .map(|m| i32::try_from(m).ok().filter(|m| (1..=10_000).contains(m)))
        .map(|m| m.ok_or_else(|| Error::validation("maxUses", "`maxUses` must be between 1 and 10000")))
        .transpose()?;
    let expires_at = body.expires_at.as_deref().map(expiry).transpose()?;
    if invites::count_usable(&state.db, p.space_id).await? >= MAX_USABLE_PER_SPACE {
        return Err(Error::new(
            ErrorCode::LimitExceeded,
            "A space has at most 1000 usable invites",
        ));
    }
    let invite = Invite {
        id: invites::new_code(),
        space_id: p.space_id,
        created_at: Timestamp::now(),
        creator_id: auth.user_id,
        max_uses,
        uses: 0,
        expires_at,
    };
    invites::insert(&state.db, &invite).await?;
    Ok(axum::Json(invite))
}

async fn list(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Path<SpacePath>,
    Query(q): Query<InviteListQuery>,
) -> Result<axum::Json<Vec<Invite>>> {
    member_with_invites(&state, &p, auth).await?;
    let limit = clamp_limit(q.limit, 1000, 1000);
    Ok(axum::Json(
        invites::list(&state.db, p.space_id, q.cursor.as_deref(), limit).await?,
    ))
}

async fn delete(State(state): State<AppState>, auth: Auth, Path(p): Path<InvitePath>) -> Result<axum::Json<()>> {
    member_with_invites(&state, &SpacePath { space_id: p.space_id }, auth).await?;
    if !invites::delete(&state.db, p.space_id, &p.invite_id).await? {
        return Err(Error::not_found());
    }
    Ok(axum::Json(()))
}
