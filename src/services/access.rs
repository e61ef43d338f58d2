//! Who may do what in a space (spec §5): is the caller a member, do they hold a bit, can they
//! see a channel — and the visibility events a permission change causes. The inputs come from
//! `entities::access`; the calculator itself is `functions::permissions`.

use std::collections::BTreeSet;

use sqlx::PgExecutor;

use crate::entities::access::{self, Visibility};
use crate::entities::channels::{self, Channel, ChannelType};
use crate::error::{Error, ErrorCode};
use crate::events::{Event, Outbox};
use crate::functions::ids::{ChannelId, SpaceId, UserId};
use crate::functions::permissions::{Permissions, Standing};

/// Permissions in a channel, or 404 when they do not include seeing it (a channel one cannot
/// see does not exist).
pub fn viewable(perms: Permissions) -> Result<Permissions, Error> {
    if perms.contains(Permissions::VIEW_CHANNEL) {
        Ok(perms)
    } else {
        Err(Error::not_found())
    }
}

/// What [`access::channel_access`] found, as the caller may see it: 404 unless they are a
/// member of the space and can view the channel.
pub fn visible(found: Option<(ChannelType, Permissions)>) -> Result<(ChannelType, Permissions), Error> {
    let (kind, perms) = found.ok_or_else(Error::not_found)?;
    Ok((kind, viewable(perms)?))
}

/// A channel's type and the caller's permissions in it, as [`SpaceMember::load`] then
/// [`SpaceMember::channel`] would answer them, in one query.
pub async fn channel(
    db: impl PgExecutor<'_>,
    space: SpaceId,
    channel: ChannelId,
    user: UserId,
) -> Result<(ChannelType, Permissions), Error> {
    visible(access::channel_access(db, space, channel, user).await?)
}

/// The caller's membership in a space, for authorization.
#[derive(Debug, Clone)]
pub struct SpaceMember {
    pub space_id: SpaceId,
    pub user_id: UserId,
    pub standing: Standing,
}

impl SpaceMember {
    /// 404 unless `user` is a member of `space` (a space one cannot see does not exist).
    pub async fn load(db: impl PgExecutor<'_>, space: SpaceId, user: UserId) -> Result<SpaceMember, Error> {
        let standing = access::standing(db, space, user).await?.ok_or_else(Error::not_found)?;
        Ok(SpaceMember {
            space_id: space,
            user_id: user,
            standing,
        })
    }

    pub fn permissions(&self) -> Permissions {
        self.standing.space()
    }

    /// 403 `InsufficientPermissions` naming the missing bits.
    pub fn require(&self, needed: Permissions) -> Result<(), Error> {
        require_bits(self.permissions(), needed)
    }

    /// 403 `Forbidden` unless the caller owns the space.
    pub fn require_owner(&self) -> Result<(), Error> {
        if self.standing.is_owner {
            Ok(())
        } else {
            Err(Error::new(
                ErrorCode::Forbidden,
                "Only the owner of the space may do this",
            ))
        }
    }

    /// A channel of this space the caller can view, with the caller's permissions in it;
    /// 404 for channels of other spaces and for channels the caller cannot view.
    pub async fn channel(&self, conn: &mut sqlx::PgConnection, id: ChannelId) -> Result<(Channel, Permissions), Error> {
        let channel = channels::get(&mut *conn, self.space_id, id)
            .await?
            .ok_or_else(Error::not_found)?;
        let perms = viewable(self.standing.channel(&access::channel_overrides(&mut *conn, id).await?))?;
        Ok((channel, perms))
    }
}

pub fn require_bits(held: Permissions, needed: Permissions) -> Result<(), Error> {
    let missing = needed - held;
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::new(
            ErrorCode::InsufficientPermissions,
            format!("Missing permission: {}", missing.names()),
        ))
    }
}

pub fn insufficient_rank() -> Error {
    Error::new(
        ErrorCode::InsufficientRank,
        "The target is not below you in the role hierarchy",
    )
}

/// Visibility deltas (spec §5.5 Δvis): `channels.onCreate` for each channel a member newly sees,
/// `channels.onDelete` for each they no longer see, sent to that member's own topic.
pub fn visibility_events(before: &Visibility, after: &Visibility, all: &[Channel], outbox: &mut Outbox) {
    let empty = BTreeSet::new();
    for (user, now) in after {
        let was = before.get(user).unwrap_or(&empty);
        for c in all.iter().filter(|c| now.contains(&c.id) && !was.contains(&c.id)) {
            outbox.push(Event::ChannelShown(*user, c));
        }
        for c in all.iter().filter(|c| was.contains(&c.id) && !now.contains(&c.id)) {
            outbox.push(Event::ChannelHidden(*user, c));
        }
    }
}
