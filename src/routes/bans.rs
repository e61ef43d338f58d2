//! Bans (spec §4.15).

use aide::axum::ApiRouter;
use aide::axum::routing::{delete_with, get_with};
use axum::extract::State;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::entities::access;
use crate::entities::bans::{self, BanInfo, REASON_MAX};
use crate::entities::{members, users};
use crate::error::{Error, ErrorCode, Result};
use crate::events::Outbox;
use crate::functions::ids::{BanId, UserId};
use crate::functions::permissions::Permissions;
use crate::functions::query::{clamp_limit, empty_as_none};
use crate::middlewares::auth::Auth;
use crate::middlewares::json::Json;
use crate::middlewares::path::{Path, Query};
use crate::middlewares::rate_limit::Limit;
use crate::routes::{MemberPath, RouterExt, SpacePath, doc};
use crate::services::access::{SpaceMember, insufficient_rank};
use crate::services::members::removal_events;
use crate::state::AppState;

pub fn router() -> ApiRouter<AppState> {
    let op = |id, summary, limit| doc("Bans", id, summary, limit);
    ApiRouter::new()
        .mikoto_route(
            "/spaces/{spaceId}/bans/",
            get_with(list, op("bans.list", "List Bans", Limit::GENERAL))
                .post_with(create, op("bans.create", "Ban User", Limit::GENERAL)),
        )
        .mikoto_route(
            "/spaces/{spaceId}/bans/{userId}",
            delete_with(delete, op("bans.delete", "Unban User", Limit::GENERAL)),
        )
}

/// NEW optional paging of `bans.list`.
#[derive(Deserialize, JsonSchema)]
pub struct BanListQuery {
    #[serde(default, deserialize_with = "empty_as_none")]
    #[schemars(with = "Option<BanId>")]
    pub cursor: Option<BanId>,
    #[serde(default, deserialize_with = "empty_as_none")]
    #[schemars(with = "Option<i64>")]
    pub limit: Option<i64>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BanCreatePayload {
    pub user_id: UserId,
    #[serde(default)]
    #[schemars(length(max = REASON_MAX))]
    pub reason: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Path<SpacePath>,
    Query(q): Query<BanListQuery>,
) -> Result<axum::Json<Vec<BanInfo>>> {
    SpaceMember::load(&state.db, p.space_id, auth.user_id)
        .await?
        .require(Permissions::BAN)?;
    let limit = clamp_limit(q.limit, 1000, 1000);
    Ok(axum::Json(bans::list(&state.db, p.space_id, q.cursor, limit).await?))
}

async fn create(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Path<SpacePath>,
    Json(body): Json<BanCreatePayload>,
) -> Result<axum::Json<BanInfo>> {
    let mut tx = state.db.begin().await?;
    let me = SpaceMember::load(&mut *tx, p.space_id, auth.user_id).await?;
    users::get_ext(&mut *tx, body.user_id)
        .await?
        .ok_or_else(Error::not_found)?;
    me.require(Permissions::BAN)?;
    if body.user_id == auth.user_id {
        return Err(Error::new(ErrorCode::CannotTargetSelf, "You cannot ban yourself"));
    }
    let target = access::standing(&mut *tx, p.space_id, body.user_id).await?;
    if let Some(t) = &target
        && (t.is_owner || !me.standing.outranks(t))
    {
        return Err(insufficient_rank());
    }
    let reason = body.reason.filter(|r| !r.is_empty());
    if reason.as_ref().is_some_and(|r| r.chars().count() > REASON_MAX) {
        return Err(Error::validation(
            "reason",
            "`reason` must be at most 512 characters long",
        ));
    }
    let mut outbox = Outbox::new();
    if let Some(t) = &target {
        removal_events(&mut tx, p.space_id, body.user_id, t, &mut outbox).await?;
    }
    let ban = bans::insert(&mut tx, p.space_id, body.user_id, reason.as_deref()).await?;
    if target.is_some() {
        members::remove(&mut tx, p.space_id, body.user_id).await?;
    }
    outbox.commit(tx, &state.bus).await?;
    Ok(axum::Json(ban))
}

async fn delete(State(state): State<AppState>, auth: Auth, Path(p): Path<MemberPath>) -> Result<axum::Json<()>> {
    SpaceMember::load(&state.db, p.space_id, auth.user_id)
        .await?
        .require(Permissions::BAN)?;
    bans::delete(&state.db, p.space_id, p.user_id).await?;
    Ok(axum::Json(()))
}
