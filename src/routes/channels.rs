//! Channels (spec §4.9) and channel permission overrides (§4.17).

use aide::axum::ApiRouter;
use aide::axum::routing::{get_with, post_with};
use axum::extract::State;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::entities::access;
use crate::entities::channels::{self, Channel, ChannelType, ChannelUnread, MAX_DEPTH};
use crate::entities::overrides::{self, ChannelOverride, OverrideRow, OverrideTargetType};
use crate::entities::roles;
use crate::error::{Error, ErrorCode, Result};
use crate::events::{Event, Outbox, OverrideKey};
use crate::functions::ids::{ChannelId, RoleId, UserId};
use crate::functions::patch::nullable;
use crate::functions::permissions::Permissions;
use crate::functions::time::Timestamp;
use crate::functions::validation;
use crate::middlewares::auth::Auth;
use crate::middlewares::json::Json;
use crate::middlewares::path::Path;
use crate::middlewares::rate_limit::Limit;
use crate::routes::{ChannelPath, OverridePath, RouterExt, SpacePath, doc};
use crate::services::access::{SpaceMember, insufficient_rank, require_bits, visibility_events};
use crate::state::AppState;

pub fn router() -> ApiRouter<AppState> {
    let op = |id, summary, limit| doc("Channels", id, summary, limit);
    ApiRouter::new()
        .mikoto_route(
            "/spaces/{spaceId}/channels/",
            get_with(list, op("channels.list", "List Channels", Limit::GENERAL))
                .post_with(create, op("channels.create", "Create Channel", Limit::GENERAL)),
        )
        .mikoto_route(
            "/spaces/{spaceId}/channels/{channelId}",
            get_with(get, op("channels.get", "Get Channel", Limit::GENERAL))
                .delete_with(delete, op("channels.delete", "Delete Channel", Limit::GENERAL))
                .patch_with(update, op("channels.update", "Update Channel", Limit::GENERAL)),
        )
        .mikoto_route(
            "/spaces/{spaceId}/channels/unreads",
            get_with(unreads, op("channels.unreads", "List Unreads", Limit::GENERAL)),
        )
        .mikoto_route(
            "/spaces/{spaceId}/channels/{channelId}/ack",
            post_with(
                acknowledge,
                op("channels.acknowledge", "Acknowledge Channel", Limit::GENERAL),
            ),
        )
        .mikoto_route(
            "/spaces/{spaceId}/channels/{channelId}/overrides/",
            get_with(
                list_overrides,
                op("channels.listOverrides", "List Channel Overrides", Limit::GENERAL),
            ),
        )
        .mikoto_route(
            "/spaces/{spaceId}/channels/{channelId}/overrides/{targetId}",
            get_with(
                get_override,
                op("channels.getOverride", "Get Channel Override", Limit::GENERAL),
            )
            .put_with(
                set_override,
                op("channels.setOverride", "Set Channel Override", Limit::GENERAL),
            )
            .delete_with(
                delete_override,
                op("channels.deleteOverride", "Delete Channel Override", Limit::GENERAL),
            ),
        )
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelCreatePayload {
    #[schemars(length(min = 1, max = crate::functions::validation::NAME_MAX))]
    pub name: String,
    #[serde(default)]
    pub parent_id: Option<ChannelId>,
    #[serde(default, rename = "type")]
    pub kind: Option<ChannelType>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelPatch {
    #[serde(default)]
    #[schemars(length(min = 1, max = crate::functions::validation::NAME_MAX))]
    pub name: Option<String>,
    /// NEW: 0 – 2 147 483 647.
    #[serde(default)]
    #[schemars(range(min = 0, max = i32::MAX))]
    pub order: Option<i64>,
    /// NEW: `null` moves the channel to the top level.
    #[serde(default, deserialize_with = "nullable")]
    #[schemars(with = "Option<ChannelId>")]
    pub parent_id: Option<Option<ChannelId>>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OverridePayload {
    pub target_type: OverrideTargetType,
    pub allow: String,
    pub deny: String,
}

async fn list(State(state): State<AppState>, auth: Auth, Path(p): Path<SpacePath>) -> Result<axum::Json<Vec<Channel>>> {
    let mut conn = state.db.acquire().await?;
    let me = SpaceMember::load(&mut *conn, p.space_id, auth.user_id).await?;
    let all = channels::list(&mut *conn, p.space_id).await?;
    let overrides = access::space_overrides(&mut *conn, p.space_id).await?;
    Ok(axum::Json(access::visible_channels(&me.standing, &all, &overrides)))
}

async fn create(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Path<SpacePath>,
    Json(body): Json<ChannelCreatePayload>,
) -> Result<axum::Json<Channel>> {
    let mut tx = state.db.begin().await?;
    let me = SpaceMember::load(&mut *tx, p.space_id, auth.user_id).await?;
    me.require(Permissions::MANAGE_CHANNELS)?;
    let name = validation::display_name("name", &body.name)?;
    let kind = body.kind.unwrap_or(ChannelType::Text);
    if matches!(kind, ChannelType::Application | ChannelType::Thread) {
        return Err(Error::validation(
            "type",
            "Only TEXT, VOICE, DOCUMENT and CATEGORY channels can be created",
        ));
    }
    let all = channels::list(&mut *tx, p.space_id).await?;
    if let Some(parent) = body.parent_id {
        let visible = match me.channel(&mut tx, parent).await {
            Ok(_) => true,
            Err(e) if e.code() == ErrorCode::NotFound => false,
            Err(e) => return Err(e),
        };
        if !visible {
            return Err(Error::validation(
                "parentId",
                "`parentId` must be a channel of this space",
            ));
        }
        if channels::depth(&all, parent) + 1 > MAX_DEPTH {
            return Err(Error::validation("parentId", "Channels nest at most 8 levels deep"));
        }
    }
    if all.len() as i64 >= channels::MAX_PER_SPACE {
        return Err(Error::new(ErrorCode::LimitExceeded, "A space has at most 500 channels"));
    }
    let channel = Channel {
        id: ChannelId::new(),
        space_id: Some(p.space_id),
        parent_id: body.parent_id,
        order: channels::next_order(&mut *tx, p.space_id, body.parent_id).await?,
        name,
        kind,
        last_updated: Some(Timestamp::now()),
    };
    channels::insert(&mut tx, &channel).await?;
    if let Some(parent) = body.parent_id {
        overrides::copy(&mut *tx, parent, channel.id).await?;
    }
    let mut outbox = Outbox::new();
    outbox.push(Event::ChannelCreated(p.space_id, &channel));
    outbox.commit(tx, &state.bus).await?;
    Ok(axum::Json(channel))
}

async fn get(State(state): State<AppState>, auth: Auth, Path(p): Path<ChannelPath>) -> Result<axum::Json<Channel>> {
    let mut conn = state.db.acquire().await?;
    let me = SpaceMember::load(&mut *conn, p.space_id, auth.user_id).await?;
    let (channel, _) = me.channel(&mut conn, p.channel_id).await?;
    Ok(axum::Json(channel))
}

async fn update(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Path<ChannelPath>,
    Json(patch): Json<ChannelPatch>,
) -> Result<axum::Json<Channel>> {
    let mut tx = state.db.begin().await?;
    let me = SpaceMember::load(&mut *tx, p.space_id, auth.user_id).await?;
    let (mut channel, _) = me.channel(&mut tx, p.channel_id).await?;
    me.require(Permissions::MANAGE_CHANNELS)?;
    if let Some(name) = &patch.name {
        channel.name = validation::display_name("name", name)?;
    }
    if let Some(order) = patch.order {
        channel.order = i32::try_from(order)
            .ok()
            .filter(|o| *o >= 0)
            .ok_or_else(|| Error::validation("order", "`order` must be between 0 and 2147483647"))?;
    }
    if let Some(parent) = patch.parent_id {
        if let Some(parent) = parent {
            let all = channels::list(&mut *tx, p.space_id).await?;
            let invalid = || {
                Error::validation(
                    "parentId",
                    "`parentId` must be another channel of this space, not below this one",
                )
            };
            // The new parent must be visible to the caller, as in `channels.create`; a hidden
            // channel's id must not be probeable.
            let visible = match me.channel(&mut tx, parent).await {
                Ok(_) => true,
                Err(e) if e.code() == ErrorCode::NotFound => false,
                Err(e) => return Err(e),
            };
            if !visible
                || !all.iter().any(|c| c.id == parent)
                || channels::subtree_deepest_first(&all, channel.id).contains(&parent)
            {
                return Err(invalid());
            }
            if channels::depth(&all, parent) + channels::height(&all, channel.id) > MAX_DEPTH {
                return Err(Error::validation("parentId", "Channels nest at most 8 levels deep"));
            }
        }
        channel.parent_id = parent;
    }
    channels::update(&mut *tx, &channel).await?;
    let mut outbox = Outbox::new();
    outbox.push(Event::ChannelUpdated(p.space_id, &channel));
    outbox.commit(tx, &state.bus).await?;
    Ok(axum::Json(channel))
}

async fn delete(State(state): State<AppState>, auth: Auth, Path(p): Path<ChannelPath>) -> Result<axum::Json<()>> {
    let mut tx = state.db.begin().await?;
    let me = SpaceMember::load(&mut *tx, p.space_id, auth.user_id).await?;
    me.channel(&mut tx, p.channel_id).await?;
    me.require(Permissions::MANAGE_CHANNELS)?;
    let all = channels::list(&mut *tx, p.space_id).await?;
    let doomed = channels::subtree_deepest_first(&all, p.channel_id);
    // Descendants cascade through parent_id; events go out deepest first.
    channels::delete(&mut *tx, p.channel_id).await?;
    let mut outbox = Outbox::new();
    for id in doomed {
        if let Some(c) = all.iter().find(|c| c.id == id) {
            outbox.push(Event::ChannelDeleted(p.space_id, c));
        }
    }
    outbox.commit(tx, &state.bus).await?;
    Ok(axum::Json(()))
}

async fn unreads(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Path<SpacePath>,
) -> Result<axum::Json<Vec<ChannelUnread>>> {
    let mut conn = state.db.acquire().await?;
    let me = SpaceMember::load(&mut *conn, p.space_id, auth.user_id).await?;
    let all = channels::list(&mut *conn, p.space_id).await?;
    let overrides = access::space_overrides(&mut *conn, p.space_id).await?;
    let visible: Vec<ChannelId> = access::visible_channels(&me.standing, &all, &overrides)
        .iter()
        .map(|c| c.id)
        .collect();
    let markers = channels::unreads(&mut *conn, p.space_id, auth.user_id).await?;
    Ok(axum::Json(
        markers
            .into_iter()
            .filter(|m| visible.contains(&m.channel_id))
            .collect(),
    ))
}

async fn acknowledge(State(state): State<AppState>, auth: Auth, Path(p): Path<ChannelPath>) -> Result<axum::Json<()>> {
    let mut conn = state.db.acquire().await?;
    let me = SpaceMember::load(&mut *conn, p.space_id, auth.user_id).await?;
    me.channel(&mut conn, p.channel_id).await?;
    let marker = channels::acknowledge(&mut *conn, p.channel_id, auth.user_id, Timestamp::now()).await?;
    Event::UnreadUpdated(auth.user_id, &marker).publish(&state.bus).await;
    Ok(axum::Json(()))
}

/// The caller's access for override operations: member, channel visible, MANAGE_ROLES.
async fn override_access(
    conn: &mut sqlx::PgConnection,
    p: &OverridePath,
    user: UserId,
) -> Result<(SpaceMember, Permissions)> {
    let me = SpaceMember::load(&mut *conn, p.space_id, user).await?;
    let (_, held) = me.channel(conn, p.channel_id).await?;
    me.require(Permissions::MANAGE_ROLES)?;
    Ok((me, held))
}

async fn list_overrides(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Path<ChannelPath>,
) -> Result<axum::Json<Vec<ChannelOverride>>> {
    let mut conn = state.db.acquire().await?;
    let path = OverridePath {
        space_id: p.space_id,
        channel_id: p.channel_id,
        target_id: uuid::Uuid::nil(),
    };
    override_access(&mut conn, &path, auth.user_id).await?;
    let rows = overrides::list(&mut *conn, p.channel_id).await?;
    Ok(axum::Json(rows.iter().map(OverrideRow::wire).collect()))
}

async fn get_override(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Path<OverridePath>,
) -> Result<axum::Json<ChannelOverride>> {
    let mut conn = state.db.acquire().await?;
    override_access(&mut conn, &p, auth.user_id).await?;
    let row = overrides::get(&mut *conn, p.channel_id, p.target_id)
        .await?
        .ok_or_else(Error::not_found)?;
    Ok(axum::Json(row.wire()))
}

/// Parses an override bit set: decimal, only override-capable bits (spec §5.3).
fn override_bits(field: &str, value: &str) -> Result<Permissions> {
    let invalid = || {
        Error::validation(
            field,
            format!("`{field}` must be a decimal string of override-capable bits"),
        )
    };
    let (bits, undefined) = Permissions::parse_decimal(value).ok_or_else(invalid)?;
    if undefined != 0 || !Permissions::OVERRIDABLE.contains(bits) {
        return Err(invalid());
    }
    Ok(bits)
}

/// Whether an override target is below the caller for the rank rule of spec §5.6: `@everyone`
/// or a role below the caller; a member below the caller. Unknown targets are 404.
async fn target_below(
    conn: &mut sqlx::PgConnection,
    me: &SpaceMember,
    kind: OverrideTargetType,
    target: uuid::Uuid,
) -> Result<bool> {
    Ok(match kind {
        OverrideTargetType::Role => {
            let role = roles::get(&mut *conn, me.space_id, RoleId(target))
                .await?
                .ok_or_else(Error::not_found)?;
            role.is_default || me.standing.outranks_position(role.position)
        }
        OverrideTargetType::Member => {
            let other = access::standing(&mut *conn, me.space_id, UserId(target))
                .await?
                .ok_or_else(Error::not_found)?;
            me.standing.outranks(&other)
        }
    })
}

async fn set_override(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Path<OverridePath>,
    Json(body): Json<OverridePayload>,
) -> Result<axum::Json<ChannelOverride>> {
    let mut tx = state.db.begin().await?;
    let me = SpaceMember::load(&mut *tx, p.space_id, auth.user_id).await?;
    let (_, held) = me.channel(&mut tx, p.channel_id).await?;
    // The target's existence (404) comes before permissions and rank (403), spec §2.9.
    let below = target_below(&mut tx, &me, body.target_type, p.target_id).await?;
    me.require(Permissions::MANAGE_ROLES)?;
    if !below {
        return Err(insufficient_rank());
    }
    let allow = override_bits("allow", &body.allow)?;
    let deny = override_bits("deny", &body.deny)?;
    let old = overrides::get(&mut *tx, p.channel_id, p.target_id).await?;
    let (old_allow, old_deny) = old
        .as_ref()
        .map(|o| (Permissions::from_stored(o.allow), Permissions::from_stored(o.deny)))
        .unwrap_or_default();
    // The grant rule (403) before the allow/deny overlap (400), spec §2.9.
    require_bits(held, (old_allow ^ allow) | (old_deny ^ deny)).map_err(|_| insufficient_rank())?;
    if allow.intersects(deny) {
        return Err(Error::validation("deny", "A bit cannot be both allowed and denied"));
    }
    if old.is_none() && overrides::count(&mut *tx, p.channel_id).await? >= overrides::MAX_PER_CHANNEL {
        return Err(Error::new(
            ErrorCode::LimitExceeded,
            "A channel has at most 100 overrides",
        ));
    }
    let before = access::visibility(&mut tx, p.space_id, None).await?;
    let row = OverrideRow {
        channel_id: p.channel_id,
        target_type: body.target_type,
        target_id: p.target_id,
        allow: allow.to_stored(),
        deny: deny.to_stored(),
    };
    overrides::upsert(&mut tx, &row).await?;
    let after = access::visibility(&mut tx, p.space_id, None).await?;
    let all = channels::list(&mut *tx, p.space_id).await?;
    let mut outbox = Outbox::new();
    // Keeps the gateway's view of the space current (never delivered), before the Δvis events.
    outbox.push(Event::OverrideSet(p.space_id, &row.wire()));
    visibility_events(&before, &after, &all, &mut outbox);
    outbox.commit(tx, &state.bus).await?;
    Ok(axum::Json(row.wire()))
}

async fn delete_override(
    State(state): State<AppState>,
    auth: Auth,
    Path(p): Path<OverridePath>,
) -> Result<axum::Json<()>> {
    let mut tx = state.db.begin().await?;
    let (me, held) = override_access(&mut tx, &p, auth.user_id).await?;
    let Some(old) = overrides::get(&mut *tx, p.channel_id, p.target_id).await? else {
        return Ok(axum::Json(()));
    };
    if !target_below(&mut tx, &me, old.target_type, p.target_id).await? {
        return Err(insufficient_rank());
    }
    require_bits(
        held,
        Permissions::from_stored(old.allow) | Permissions::from_stored(old.deny),
    )
    .map_err(|_| insufficient_rank())?;
    let before = access::visibility(&mut tx, p.space_id, None).await?;
    overrides::delete(&mut *tx, p.channel_id, p.target_id).await?;
    let after = access::visibility(&mut tx, p.space_id, None).await?;
    let all = channels::list(&mut *tx, p.space_id).await?;
    let mut outbox = Outbox::new();
    // Keeps the gateway's view of the space current (never delivered), before the Δvis events.
    let key = OverrideKey {
        channel_id: p.channel_id,
        target_id: p.target_id,
    };
    outbox.push(Event::OverrideDeleted(p.space_id, &key));
    visibility_events(&before, &after, &all, &mut outbox);
    outbox.commit(tx, &state.bus).await?;
    Ok(axum::Json(()))
}
