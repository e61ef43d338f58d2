//! Relations: friends, requests, blocks and opening DMs (spec §4.5). `{relationId}` is the other
//! user's id. Every state change runs in one transaction; events go to each side's own topic.

use aide::axum::ApiRouter;
use aide::axum::routing::{get_with, post_with};
use axum::extract::State;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::entities::channels::Channel;
use crate::entities::relations::{self, RelationState, RelationshipExt};
use crate::entities::users::{self, UserCategory};
use crate::error::{Error, ErrorCode, Result};
use crate::events::{Event, ObjectWithId, Outbox};
use crate::functions::ids::UserId;
use crate::middlewares::auth::UserAuth;
use crate::middlewares::path::Path;
use crate::middlewares::rate_limit::Limit;
use crate::routes::{RouterExt, doc};
use crate::state::AppState;

pub fn router() -> ApiRouter<AppState> {
    let op = |id, summary, limit| doc("Relations", id, summary, limit);
    ApiRouter::new()
        .mikoto_route(
            "/relations/",
            get_with(list, op("relations.list", "List Relationships", Limit::GENERAL)),
        )
        .mikoto_route(
            "/relations/{relationId}",
            get_with(get, op("relations.get", "Get Relationship", Limit::GENERAL))
                .delete_with(remove, op("relations.remove", "Remove Friend", Limit::GENERAL)),
        )
        .mikoto_route(
            "/relations/{relationId}/request",
            post_with(
                send_request,
                op("relations.sendRequest", "Send Friend Request", Limit::RELATIONS),
            ),
        )
        .mikoto_route(
            "/relations/{relationId}/accept",
            post_with(accept, op("relations.accept", "Accept Friend Request", Limit::GENERAL)),
        )
        .mikoto_route(
            "/relations/{relationId}/decline",
            post_with(
                decline,
                op("relations.decline", "Decline Friend Request", Limit::GENERAL),
            ),
        )
        .mikoto_route(
            "/relations/{relationId}/block",
            post_with(block, op("relations.block", "Block User", Limit::GENERAL))
                .delete_with(unblock, op("relations.unblock", "Unblock User", Limit::GENERAL)),
        )
        .mikoto_route(
            "/relations/{relationId}/dm",
            post_with(open_dm, op("relations.openDm", "Open Direct Messages", Limit::GENERAL)),
        )
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RelationPath {
    pub relation_id: UserId,
}

fn not_incoming() -> Error {
    Error::new(
        ErrorCode::NotIncomingRequest,
        "There is no incoming friend request from this user",
    )
}

/// Whether a relationship row is new (`relations.onCreate`) or changed (`relations.onUpdate`).
#[derive(Clone, Copy)]
enum Row {
    Created,
    Updated,
}

/// Queues the current row of `owner` about `other` to `owner`'s topic.
async fn push_row(
    conn: &mut sqlx::PgConnection,
    outbox: &mut Outbox,
    change: Row,
    owner: UserId,
    other: UserId,
) -> Result<RelationshipExt> {
    let row = relations::get_ext(&mut *conn, owner, other)
        .await?
        .ok_or_else(Error::not_found)?;
    outbox.push(match change {
        Row::Created => Event::RelationCreated(owner, &row),
        Row::Updated => Event::RelationUpdated(owner, &row),
    });
    Ok(row)
}

/// Queues the deletion of `owner`'s row `id`.
fn push_deleted(outbox: &mut Outbox, owner: UserId, id: uuid::Uuid) {
    outbox.push(Event::RelationDeleted(owner, &ObjectWithId { id }));
}

/// Deletes a pair's DM channel, telling both participants (spec §4.5: remove, block).
async fn drop_dm(conn: &mut sqlx::PgConnection, outbox: &mut Outbox, me: UserId, other: UserId) -> Result<()> {
    let mine = relations::get_for_update(&mut *conn, me, other).await?;
    let theirs = relations::get_for_update(&mut *conn, other, me).await?;
    let Some(channel) = mine.and_then(|r| r.channel_id).or(theirs.and_then(|r| r.channel_id)) else {
        return Ok(());
    };
    for (viewer, row) in [(me, mine), (other, theirs)] {
        if row.is_some()
            && let Some(c) = relations::dm_channel(&mut *conn, channel, viewer).await?
        {
            outbox.push(Event::ChannelHidden(viewer, &c));
        }
    }
    relations::delete_dm(&mut *conn, channel).await
}

async fn list(State(state): State<AppState>, auth: UserAuth) -> Result<axum::Json<Vec<RelationshipExt>>> {
    Ok(axum::Json(relations::list(&state.db, auth.user_id).await?))
}

async fn get(
    State(state): State<AppState>,
    auth: UserAuth,
    Path(p): Path<RelationPath>,
) -> Result<axum::Json<RelationshipExt>> {
    Ok(axum::Json(
        relations::get_ext(&state.db, auth.user_id, p.relation_id)
            .await?
            .ok_or_else(Error::not_found)?,
    ))
}

async fn send_request(
    State(state): State<AppState>,
    auth: UserAuth,
    Path(p): Path<RelationPath>,
) -> Result<axum::Json<RelationshipExt>> {
    let (me, them) = (auth.user_id, p.relation_id);
    if me == them {
        return Err(Error::new(ErrorCode::CannotFriendSelf, "You cannot befriend yourself"));
    }
    let mut tx = state.db.begin().await?;
    let target = users::get_ext(&mut *tx, them).await?.ok_or_else(Error::not_found)?;
    if target.category == Some(UserCategory::Bot) {
        return Err(Error::new(ErrorCode::CannotFriendBot, "Bots cannot be befriended"));
    }
    let mine = relations::get_for_update(&mut *tx, me, them).await?;
    let theirs = relations::get_for_update(&mut *tx, them, me).await?;
    let blocked = [mine, theirs]
        .iter()
        .flatten()
        .any(|r| r.state == RelationState::Blocked);
    if blocked {
        return Err(Error::new(
            ErrorCode::Forbidden,
            "You cannot send a friend request to this user",
        ));
    }
    let mut outbox = Outbox::new();
    let row = match mine.map(|r| r.state) {
        Some(RelationState::Friend | RelationState::OutgoingRequest) => relations::get_ext(&mut *tx, me, them)
            .await?
            .ok_or_else(Error::not_found)?,
        Some(RelationState::IncomingRequest) => befriend(&mut tx, &mut outbox, me, them).await?,
        _ => {
            if relations::count_rows(&mut *tx, me).await? >= relations::MAX_ROWS
                || relations::count_rows(&mut *tx, them).await? >= relations::MAX_ROWS
                || relations::count_outgoing(&mut *tx, me).await? >= relations::MAX_PENDING_OUTGOING
            {
                return Err(Error::new(
                    ErrorCode::LimitExceeded,
                    "Too many relationships or pending requests",
                ));
            }
            relations::upsert(&mut *tx, me, them, RelationState::OutgoingRequest).await?;
            relations::upsert(&mut *tx, them, me, RelationState::IncomingRequest).await?;
            let row = push_row(&mut tx, &mut outbox, Row::Created, me, them).await?;
            push_row(&mut tx, &mut outbox, Row::Created, them, me).await?;
            row
        }
    };
    outbox.commit(tx, &state.bus).await?;
    Ok(axum::Json(row))
}

/// Both rows become `FRIEND` (accept, or a crossing request).
async fn befriend(
    conn: &mut sqlx::PgConnection,
    outbox: &mut Outbox,
    me: UserId,
    them: UserId,
) -> Result<RelationshipExt> {
    relations::upsert(&mut *conn, me, them, RelationState::Friend).await?;
    relations::upsert(&mut *conn, them, me, RelationState::Friend).await?;
    let row = push_row(conn, outbox, Row::Updated, me, them).await?;
    push_row(conn, outbox, Row::Updated, them, me).await?;
    Ok(row)
}

async fn accept(
    State(state): State<AppState>,
    auth: UserAuth,
    Path(p): Path<RelationPath>,
) -> Result<axum::Json<RelationshipExt>> {
    let mut tx = state.db.begin().await?;
    let mine = relations::get_for_update(&mut *tx, auth.user_id, p.relation_id).await?;
    if mine.map(|r| r.state) != Some(RelationState::IncomingRequest) {
        return Err(not_incoming());
    }
    let mut outbox = Outbox::new();
    let row = befriend(&mut tx, &mut outbox, auth.user_id, p.relation_id).await?;
    outbox.commit(tx, &state.bus).await?;
    Ok(axum::Json(row))
}

async fn decline(State(state): State<AppState>, auth: UserAuth, Path(p): Path<RelationPath>) -> Result<axum::Json<()>> {
    let (me, them) = (auth.user_id, p.relation_id);
    let mut tx = state.db.begin().await?;
    let mine = relations::get_for_update(&mut *tx, me, them).await?;
    if mine.map(|r| r.state) != Some(RelationState::IncomingRequest) {
        return Err(not_incoming());
    }
    let mut outbox = Outbox::new();
    delete_pair(&mut tx, &mut outbox, me, them).await?;
    outbox.commit(tx, &state.bus).await?;
    Ok(axum::Json(()))
}

/// Deletes both rows of a pair, telling each side its own row id.
async fn delete_pair(conn: &mut sqlx::PgConnection, outbox: &mut Outbox, me: UserId, them: UserId) -> Result<()> {
    for (owner, other) in [(me, them), (them, me)] {
        if let Some(id) = relations::delete(&mut *conn, owner, other).await? {
            push_deleted(outbox, owner, id);
        }
    }
    Ok(())
}

async fn remove(State(state): State<AppState>, auth: UserAuth, Path(p): Path<RelationPath>) -> Result<axum::Json<()>> {
    let (me, them) = (auth.user_id, p.relation_id);
    let mut tx = state.db.begin().await?;
    let mine = relations::get_for_update(&mut *tx, me, them).await?;
    if !matches!(
        mine.map(|r| r.state),
        Some(RelationState::Friend | RelationState::OutgoingRequest)
    ) {
        return Err(Error::new(
            ErrorCode::CannotRemove,
            "There is no friendship or outgoing request to remove",
        ));
    }
    let mut outbox = Outbox::new();
    drop_dm(&mut tx, &mut outbox, me, them).await?;
    delete_pair(&mut tx, &mut outbox, me, them).await?;
    outbox.commit(tx, &state.bus).await?;
    Ok(axum::Json(()))
}

async fn block(
    State(state): State<AppState>,
    auth: UserAuth,
    Path(p): Path<RelationPath>,
) -> Result<axum::Json<RelationshipExt>> {
    let (me, them) = (auth.user_id, p.relation_id);
    if me == them {
        return Err(Error::new(ErrorCode::CannotBlockSelf, "You cannot block yourself"));
    }
    let mut tx = state.db.begin().await?;
    users::get_ext(&mut *tx, them).await?.ok_or_else(Error::not_found)?;
    let mine = relations::get_for_update(&mut *tx, me, them).await?;
    let theirs = relations::get_for_update(&mut *tx, them, me).await?;
    let mut outbox = Outbox::new();
    drop_dm(&mut tx, &mut outbox, me, them).await?;
    relations::upsert(&mut *tx, me, them, RelationState::Blocked).await?;
    let change = if mine.is_some() { Row::Updated } else { Row::Created };
    let row = push_row(&mut tx, &mut outbox, change, me, them).await?;
    // Their own block stays: a user can never undo another user's block (Mikoto defect).
    if theirs.is_some_and(|r| r.state != RelationState::Blocked)
        && let Some(id) = relations::delete(&mut *tx, them, me).await?
    {
        push_deleted(&mut outbox, them, id);
    }
    outbox.commit(tx, &state.bus).await?;
    Ok(axum::Json(row))
}

async fn unblock(State(state): State<AppState>, auth: UserAuth, Path(p): Path<RelationPath>) -> Result<axum::Json<()>> {
    let mut tx = state.db.begin().await?;
    let mine = relations::get_for_update(&mut *tx, auth.user_id, p.relation_id).await?;
    if mine.map(|r| r.state) != Some(RelationState::Blocked) {
        return Err(Error::new(ErrorCode::NotBlocked, "This user is not blocked"));
    }
    let mut outbox = Outbox::new();
    if let Some(id) = relations::delete(&mut *tx, auth.user_id, p.relation_id).await? {
        push_deleted(&mut outbox, auth.user_id, id);
    }
    outbox.commit(tx, &state.bus).await?;
    Ok(axum::Json(()))
}

async fn open_dm(
    State(state): State<AppState>,
    auth: UserAuth,
    Path(p): Path<RelationPath>,
) -> Result<axum::Json<Channel>> {
    let (me, them) = (auth.user_id, p.relation_id);
    let mut tx = state.db.begin().await?;
    let mine = relations::get_for_update(&mut *tx, me, them)
        .await?
        .ok_or_else(Error::not_found)?;
    if mine.state != RelationState::Friend {
        return Err(Error::new(
            ErrorCode::Forbidden,
            "Direct messages are only open between friends",
        ));
    }
    let mut outbox = Outbox::new();
    let channel = match mine.channel_id {
        Some(c) => c,
        None => {
            let c = relations::open_dm(&mut tx, me, them).await?;
            push_row(&mut tx, &mut outbox, Row::Updated, me, them).await?;
            push_row(&mut tx, &mut outbox, Row::Updated, them, me).await?;
            c
        }
    };
    let view = relations::dm_channel(&mut *tx, channel, me)
        .await?
        .ok_or_else(Error::not_found)?;
    outbox.commit(tx, &state.bus).await?;
    Ok(axum::Json(view))
}
