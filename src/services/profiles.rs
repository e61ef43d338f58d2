//! Telling everyone who may see a profile that it changed (spec §7.8).

use sqlx::PgPool;

use crate::entities::users::{self, ProfileChange, UserExt};
use crate::entities::{media, members, spaces};
use crate::error::{Error, Result};
use crate::events::Event;
use crate::functions::bus::Bus;
use crate::functions::ids::{SpaceId, UserId};
use crate::functions::media::{MediaStore, Store};

/// Applies a validated profile change inside `tx`: a new avatar must exist in the avatar store
/// and is claimed with the change. `false` when the user does not exist.
pub async fn apply_change(
    tx: &mut sqlx::PgConnection,
    media: &MediaStore,
    user: UserId,
    mut change: ProfileChange,
) -> Result<bool> {
    if change.is_empty() {
        return Ok(users::get_ext(&mut *tx, user).await?.is_some());
    }
    if let Some(Some(avatar)) = &change.avatar {
        let key = media::claim_reference(tx, media, Store::Avatar, avatar, "avatar").await?;
        change.avatar = Some(Some(key));
    }
    users::update_profile(&mut *tx, user, &change).await
}

/// After a committed change of a user's profile or handle: reads the user and publishes
/// `users.onUpdate` to the profile topic (the user's own sessions and their profile audience),
/// then `members.onUpdate` in each of their spaces. Returns the user as published.
pub async fn announce_user(db: &PgPool, bus: &Bus, user: UserId) -> Result<UserExt> {
    let ext = users::get_ext(db, user).await?.ok_or_else(Error::not_found)?;
    Event::ProfileUpdated(&ext).publish(bus).await;
    // Mikoto clients ignore `users.*`: `members.onUpdate` refreshes their member lists.
    for space in members::of_user(db, user).await? {
        if let Some(member) = members::get(db, space, user).await? {
            Event::MemberUpdated(&member).publish(bus).await;
        }
    }
    Ok(ext)
}

/// After a committed change of a space's handle: `spaces.onUpdate` to its members.
pub async fn announce_space(db: &PgPool, bus: &Bus, space: SpaceId) -> Result<()> {
    let mut conn = db.acquire().await?;
    if let Some(row) = spaces::get(&mut *conn, space).await? {
        let everything = spaces::ext(&mut conn, &row, spaces::View::Everything).await?;
        Event::SpaceUpdated(&everything).publish(bus).await;
    }
    Ok(())
}
