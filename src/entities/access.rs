//! The permission calculator's inputs (spec §5.5): standings, overrides and visibility, read
//! from the database. The decisions built on them are `services::access`.

use std::collections::{BTreeSet, HashMap};

use sqlx::{FromRow, PgExecutor, Row};
use uuid::Uuid;

use crate::entities::channels::{self, Channel, ChannelType};
use crate::entities::sessions::SessionState;
use crate::error::Error;
use crate::functions::ids::{ChannelId, SessionId, SpaceId, UserId};
use crate::functions::permissions::{Override, Permissions, RoleGrant, Standing, Target};

#[derive(FromRow)]
struct StandingRow {
    user_id: Uuid,
    is_owner: bool,
    everyone_id: Uuid,
    everyone: i64,
    role_ids: Vec<Uuid>,
    role_perms: Vec<i64>,
    role_positions: Vec<i32>,
}

impl From<StandingRow> for Standing {
    fn from(r: StandingRow) -> Self {
        let roles = r
            .role_ids
            .iter()
            .zip(r.role_perms.iter().zip(r.role_positions.iter()))
            .map(|(id, (p, pos))| RoleGrant {
                id: *id,
                permissions: Permissions::from_stored(*p),
                position: *pos,
            })
            .collect();
        Standing {
            user_id: r.user_id,
            is_owner: r.is_owner,
            everyone_role: r.everyone_id,
            everyone: Permissions::from_stored(r.everyone),
            roles,
        }
    }
}

/// Standings of members of a space: all of them, or only `users`. One query.
pub async fn standings(
    db: impl PgExecutor<'_>,
    space: SpaceId,
    users: Option<&[UserId]>,
) -> Result<Vec<Standing>, Error> {
    let users: Option<Vec<Uuid>> = users.map(|u| u.iter().map(|u| u.0).collect());
    let rows: Vec<StandingRow> = sqlx::query_as(
        "SELECT m.user_id, s.owner_id = m.user_id AS is_owner, d.id AS everyone_id, d.permissions AS everyone, \
                COALESCE(array_agg(r.id ORDER BY r.id) FILTER (WHERE r.id IS NOT NULL), '{}') AS role_ids, \
                COALESCE(array_agg(r.permissions ORDER BY r.id) FILTER (WHERE r.id IS NOT NULL), '{}') AS role_perms, \
                COALESCE(array_agg(r.position ORDER BY r.id) FILTER (WHERE r.id IS NOT NULL), '{}') AS role_positions \
         FROM members m \
         JOIN spaces s ON s.id = m.space_id \
         JOIN roles d ON d.space_id = m.space_id AND d.is_default \
         LEFT JOIN member_roles mr ON mr.space_id = m.space_id AND mr.user_id = m.user_id \
         LEFT JOIN roles r ON r.id = mr.role_id \
         WHERE m.space_id = $1 AND ($2::uuid[] IS NULL OR m.user_id = ANY($2)) \
         GROUP BY m.id, m.user_id, s.owner_id, d.id, d.permissions ORDER BY m.id",
    )
    .bind(space)
    .bind(users)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(Standing::from).collect())
}

#[derive(FromRow)]
struct ChannelAccessRow {
    #[sqlx(flatten)]
    standing: StandingRow,
    /// `None` when the space has no such channel.
    channel_type: Option<ChannelType>,
    override_types: Vec<String>,
    override_targets: Vec<Uuid>,
    override_allows: Vec<i64>,
    override_denies: Vec<i64>,
}

/// The query of [`channel_access`]: `$1` space, `$2` user, `$3` channel; no row when the user is
/// not a member.
macro_rules! channel_access_sql {
    () => {
        "SELECT m.user_id, s.owner_id = m.user_id AS is_owner, d.id AS everyone_id, d.permissions AS everyone, \
                g.role_ids, g.role_perms, g.role_positions, c.type AS channel_type, \
                o.override_types, o.override_targets, o.override_allows, o.override_denies \
         FROM members m \
         JOIN spaces s ON s.id = m.space_id \
         JOIN roles d ON d.space_id = m.space_id AND d.is_default \
         CROSS JOIN LATERAL ( \
             SELECT COALESCE(array_agg(r.id ORDER BY r.id), '{}') AS role_ids, \
                    COALESCE(array_agg(r.permissions ORDER BY r.id), '{}') AS role_perms, \
                    COALESCE(array_agg(r.position ORDER BY r.id), '{}') AS role_positions \
             FROM member_roles mr JOIN roles r ON r.id = mr.role_id \
             WHERE mr.space_id = m.space_id AND mr.user_id = m.user_id) g \
         LEFT JOIN channels c ON c.space_id = m.space_id AND c.id = $3 \
         CROSS JOIN LATERAL ( \
             SELECT COALESCE(array_agg(x.target_type), '{}') AS override_types, \
                    COALESCE(array_agg(x.target_id), '{}') AS override_targets, \
                    COALESCE(array_agg(x.allow), '{}') AS override_allows, \
                    COALESCE(array_agg(x.deny), '{}') AS override_denies \
             FROM channel_overrides x WHERE x.channel_id = c.id) o \
         WHERE m.space_id = $1 AND m.user_id = $2"
    };
}

/// A channel of a space as its message operations see it: its type and the caller's permissions
/// in it, in one query; `None` unless `user` is a member of `space` and the channel is in it.
pub async fn channel_access(
    db: impl PgExecutor<'_>,
    space: SpaceId,
    channel: ChannelId,
    user: UserId,
) -> Result<Option<(ChannelType, Permissions)>, Error> {
    let row: Option<ChannelAccessRow> = sqlx::query_as(channel_access_sql!())
        .bind(space)
        .bind(user)
        .bind(channel)
        .fetch_optional(db)
        .await?;
    Ok(row.and_then(ChannelAccessRow::resolve))
}

/// The state of the caller's auth session and [`channel_access`], in one round trip.
pub async fn session_channel_access(
    db: impl PgExecutor<'_>,
    space: SpaceId,
    channel: ChannelId,
    user: UserId,
    session: SessionId,
) -> Result<(SessionState, Option<(ChannelType, Permissions)>), Error> {
    let row = sqlx::query(concat!(
        "SELECT (SELECT revoked_at IS NOT NULL FROM auth_sessions WHERE id = $4 AND user_id = $2) \
         AS session_revoked, a.* FROM (SELECT) one LEFT JOIN LATERAL (",
        channel_access_sql!(),
        ") a ON true"
    ))
    .bind(space)
    .bind(user)
    .bind(channel)
    .bind(session)
    .fetch_one(db)
    .await?;
    let session = SessionState::from_revoked(row.try_get("session_revoked")?);
    let access = match row.try_get::<Option<Uuid>, _>("user_id")? {
        None => None,
        Some(_) => ChannelAccessRow::from_row(&row)?.resolve(),
    };
    Ok((session, access))
}

impl ChannelAccessRow {
    fn resolve(self) -> Option<(ChannelType, Permissions)> {
        let kind = self.channel_type?;
        let overrides: Vec<Override> = self
            .override_types
            .iter()
            .zip(&self.override_targets)
            .zip(self.override_allows.iter().zip(&self.override_denies))
            .map(|((kind, target), (allow, deny))| to_override(kind, *target, *allow, *deny))
            .collect();
        Some((kind, Standing::from(self.standing).channel(&overrides)))
    }
}

/// One member's standing, or `None` when they are not a member (or the space does not exist).
pub async fn standing(db: impl PgExecutor<'_>, space: SpaceId, user: UserId) -> Result<Option<Standing>, Error> {
    Ok(standings(db, space, Some(&[user])).await?.into_iter().next())
}

#[derive(FromRow)]
struct OverrideRow {
    channel_id: Uuid,
    target_type: String,
    target_id: Uuid,
    allow: i64,
    deny: i64,
}

/// Every override of every channel of a space, as (channel, override).
pub async fn space_overrides(db: impl PgExecutor<'_>, space: SpaceId) -> Result<Vec<(Uuid, Override)>, Error> {
    let rows: Vec<OverrideRow> = sqlx::query_as(
        "SELECT o.channel_id, o.target_type, o.target_id, o.allow, o.deny FROM channel_overrides o \
         JOIN channels c ON c.id = o.channel_id WHERE c.space_id = $1",
    )
    .bind(space)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.channel_id, to_override(&r.target_type, r.target_id, r.allow, r.deny)))
        .collect())
}

/// The overrides of one channel.
pub async fn channel_overrides(db: impl PgExecutor<'_>, channel: ChannelId) -> Result<Vec<Override>, Error> {
    let rows: Vec<OverrideRow> = sqlx::query_as(
        "SELECT channel_id, target_type, target_id, allow, deny FROM channel_overrides WHERE channel_id = $1",
    )
    .bind(channel)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| to_override(&r.target_type, r.target_id, r.allow, r.deny))
        .collect())
}

fn to_override(kind: &str, target: Uuid, allow: i64, deny: i64) -> Override {
    let target = if kind == "MEMBER" {
        Target::Member(target)
    } else {
        Target::Role(target)
    };
    Override {
        target,
        allow: Permissions::from_stored(allow),
        deny: Permissions::from_stored(deny),
    }
}

/// The channels of a space each member can view.
pub type Visibility = HashMap<UserId, BTreeSet<ChannelId>>;

/// What every member (or only `users`) can see in a space right now. Used before and after a
/// change to compute visibility deltas (spec §5.5 Δvis).
pub async fn visibility(
    conn: &mut sqlx::PgConnection,
    space: SpaceId,
    users: Option<&[UserId]>,
) -> Result<Visibility, Error> {
    let standings = standings(&mut *conn, space, users).await?;
    let all = channels::list(&mut *conn, space).await?;
    let overrides = space_overrides(&mut *conn, space).await?;
    Ok(standings
        .iter()
        .map(|s| {
            let seen = all
                .iter()
                .filter(|c| s.channel_in(c.id.0, &overrides).contains(Permissions::VIEW_CHANNEL))
                .map(|c| c.id)
                .collect();
            (UserId(s.user_id), seen)
        })
        .collect())
}

/// The channels a member can view, in `SpaceExt.channels` order.
pub fn visible_channels(standing: &Standing, all: &[Channel], overrides: &[(Uuid, Override)]) -> Vec<Channel> {
    all.iter()
        .filter(|c| {
            standing
                .channel_in(c.id.0, overrides)
                .contains(Permissions::VIEW_CHANNEL)
        })
        .cloned()
        .collect()
}
