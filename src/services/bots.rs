//! Bots entering and leaving spaces, and losing their credentials (spec §4.3, §4.13, §12.6).

use crate::entities::members::{self, MemberExt};
use crate::entities::users::{self, UserCategory};
use crate::entities::{access, bans, bots, spaces};
use crate::error::{Error, ErrorCode, Result};
use crate::events::{Event, Outbox, Revoked};
use crate::functions::bus::Bus;
use crate::functions::ids::{SessionId, SpaceId, UserId};
use crate::functions::permissions::Permissions;
use crate::services::access::SpaceMember;
use crate::services::members::removal_events;
use crate::services::session_cache::SessionCache;

/// `members.create` and `bots.install`: `caller`, a member of `space` with MANAGE_BOTS, adds a
/// bot they own or a public one. Checks in the order of spec §2.9: the space (404), the bot
/// (404), MANAGE_BOTS (403), installable (403 `Forbidden`), ban (403 `Banned`), membership
/// (409), the 200-spaces cap (400). Events: `spaces.onCreate` to the bot, `members.onCreate`.
pub async fn add_to_space(
    conn: &mut sqlx::PgConnection,
    outbox: &mut Outbox,
    caller: UserId,
    space: SpaceId,
    bot: UserId,
) -> Result<MemberExt> {
    let me = SpaceMember::load(&mut *conn, space, caller).await?;
    let target = users::get_ext(&mut *conn, bot).await?.ok_or_else(Error::not_found)?;
    me.require(Permissions::MANAGE_BOTS)?;
    let installable = bots::installable_by(&mut *conn, bot, caller).await?;
    if target.category != Some(UserCategory::Bot) || installable != Some(true) {
        return Err(Error::new(
            ErrorCode::Forbidden,
            "Only a bot you own, or a public bot, can be added",
        ));
    }
    if bans::is_banned(&mut *conn, space, bot).await? {
        return Err(Error::new(ErrorCode::Banned, "This bot is banned from the space"));
    }
    if members::is_member(&mut *conn, space, bot).await? {
        return Err(Error::new(ErrorCode::AlreadyMember, "The bot is already a member"));
    }
    if spaces::count_for_user(&mut *conn, bot).await? >= spaces::MAX_PER_USER {
        return Err(Error::new(
            ErrorCode::LimitExceeded,
            "A bot may be in at most 200 spaces",
        ));
    }
    members::insert(&mut *conn, space, bot).await?;
    let member = members::get(&mut *conn, space, bot)
        .await?
        .ok_or_else(Error::not_found)?;
    let standing = access::standing(&mut *conn, space, bot)
        .await?
        .ok_or_else(Error::not_found)?;
    let row = spaces::get(&mut *conn, space).await?.ok_or_else(Error::not_found)?;
    let ext = spaces::ext(conn, &row, spaces::View::Member(&standing)).await?;
    outbox.push(Event::SpaceJoined(bot, &ext));
    outbox.push(Event::MemberCreated(&member));
    Ok(member)
}

/// Removes the bot from one space: `members.onDelete` to the space, `spaces.onDelete` to the
/// bot. `false` when it was not a member.
pub async fn leave_space(
    conn: &mut sqlx::PgConnection,
    outbox: &mut Outbox,
    space: SpaceId,
    bot: UserId,
) -> Result<bool> {
    let Some(standing) = access::standing(&mut *conn, space, bot).await? else {
        return Ok(false);
    };
    removal_events(&mut *conn, space, bot, &standing, outbox).await?;
    members::remove(conn, space, bot).await
}

/// `bots.delete`: the bot leaves every space and loses its credentials and its invites; its
/// user row stays as a tombstone. The caller commits, then [`revoke_sockets`].
pub async fn delete(conn: &mut sqlx::PgConnection, outbox: &mut Outbox, bot: UserId) -> Result<()> {
    for space in members::of_user(&mut *conn, bot).await? {
        leave_space(conn, outbox, space, bot).await?;
    }
    bots::delete(conn, bot).await?;
    Ok(())
}

/// Ends the bot's tokens on every instance (cached grants, sockets closed with 4006): its
/// revocation key is its user id.
pub async fn revoke_sockets(bus: &Bus, sessions: &SessionCache, bot: UserId) {
    sessions.announce(&[SessionId(bot.0)]).await;
    Event::SessionRevoked(SessionId(bot.0), &Revoked { user_id: bot })
        .publish(bus)
        .await;
}
