//! Telling everyone who may see a profile that it changed (spec §7.8).

use sqlx::PgPool;

use crate::entities::users::{self, UserExt};
use crate::entities::{members, spaces};
use crate::error::{Error, Result};
use crate::events::Event;
use crate::functions::bus::Bus;
use crate::functions::ids::{SpaceId, UserId};

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
