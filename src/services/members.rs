//! Leaving a space, by choice, kick or ban (spec §4.8, §4.9): the events of a member's removal.

use crate::entities::members;
use crate::entities::spaces::{self, View};
use crate::error::{Error, Result};
use crate::events::{Event, Outbox};
use crate::functions::ids::{SpaceId, UserId};
use crate::functions::permissions::Standing;

/// The events of a member leaving a space, captured before the removal (the member's row is
/// locked first, see `members::lock`): `members.onDelete` to
/// the space, then `spaces.onDelete` (as the member saw it) to the member.
pub async fn removal_events(
    conn: &mut sqlx::PgConnection,
    space: SpaceId,
    user: UserId,
    standing: &Standing,
    outbox: &mut Outbox,
) -> Result<()> {
    if !members::lock(&mut *conn, space, user).await? {
        return Err(Error::not_found());
    }
    let member = members::get(&mut *conn, space, user)
        .await?
        .ok_or_else(Error::not_found)?;
    let row = spaces::get(&mut *conn, space).await?.ok_or_else(Error::not_found)?;
    let ext = spaces::ext(conn, &row, View::Member(standing)).await?;
    outbox.push(Event::MemberDeleted(&member));
    outbox.push(Event::SpaceLeft(user, &ext));
    Ok(())
}
