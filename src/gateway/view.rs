//! The gateway's in-memory view of one space (spec §7.7): who is a member, with which roles, and
//! the channels with their overrides — everything delivery authorization needs, so that no
//! delivery queries the database. Loaded once when a local session first needs the space, then
//! kept current by the space's own events, applied in publish order before each is delivered.

use foldhash::HashMap;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::entities::{access, channels, roles, spaces};
use crate::error::Error;
use crate::events::Op;
use crate::functions::ids::{ChannelId, RoleId, SpaceId, UserId};
use crate::functions::permissions::{Override, Permissions, RoleGrant, Standing, Target};

#[derive(Debug, Clone, Default)]
pub struct SpaceView {
    pub owner: Option<UserId>,
    everyone: Option<RoleId>,
    everyone_perms: Permissions,
    roles: HashMap<RoleId, (Permissions, i32)>,
    members: HashMap<UserId, Vec<RoleId>>,
    /// Channel → parent.
    channels: HashMap<ChannelId, Option<ChannelId>>,
    overrides: HashMap<ChannelId, Vec<Override>>,
}

/// How applying an event changed the member set (the gateway keeps profile subscriptions and
/// indexes in step).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MemberChange {
    pub added: Option<UserId>,
    pub removed: Option<UserId>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MemberData {
    user_id: UserId,
    #[serde(default)]
    role_ids: Vec<RoleId>,
}

#[derive(Deserialize)]
struct RoleData {
    id: RoleId,
    #[serde(default)]
    permissions: Option<String>,
    #[serde(default)]
    position: Option<i32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChannelData {
    id: ChannelId,
    #[serde(default)]
    parent_id: Option<ChannelId>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpaceData {
    #[serde(default)]
    owner_id: Option<UserId>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OverrideData {
    channel_id: ChannelId,
    #[serde(default)]
    target_type: Option<String>,
    target_id: uuid::Uuid,
    #[serde(default)]
    allow: Option<String>,
    #[serde(default)]
    deny: Option<String>,
}

/// The `channelId` of a channel-scoped event (messages, typing).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelRef {
    pub channel_id: ChannelId,
}

/// The `id` of an object.
#[derive(Deserialize)]
pub struct IdRef {
    pub id: uuid::Uuid,
}

fn parse<'a, T: Deserialize<'a>>(data: &'a RawValue) -> Option<T> {
    serde_json::from_str(data.get()).ok()
}

fn bits(s: Option<&str>) -> Permissions {
    s.and_then(Permissions::parse_decimal)
        .map(|(p, _)| p)
        .unwrap_or_default()
}

impl SpaceView {
    /// A view with only its owner and `@everyone` (default permissions); tests add the rest
    /// through events.
    #[cfg(test)]
    pub fn for_tests(owner: UserId, everyone: RoleId) -> SpaceView {
        SpaceView {
            owner: Some(owner),
            everyone: Some(everyone),
            everyone_perms: Permissions::DEFAULT_EVERYONE,
            ..SpaceView::default()
        }
    }

    /// Reads the space's current state (four queries; only when a view is first needed).
    pub async fn load(db: &sqlx::PgPool, space: SpaceId) -> Result<Option<SpaceView>, Error> {
        let mut conn = db.acquire().await?;
        let Some(row) = spaces::get(&mut *conn, space).await? else {
            return Ok(None);
        };
        let mut view = SpaceView {
            owner: Some(row.owner_id),
            ..SpaceView::default()
        };
        for r in roles::list(&mut *conn, space).await? {
            if r.is_default {
                view.everyone = Some(r.id);
                view.everyone_perms = r.perms();
            } else {
                view.roles.insert(r.id, (r.perms(), r.position));
            }
        }
        for s in access::standings(&mut *conn, space, None).await? {
            let roles = s.roles.iter().map(|g| RoleId(g.id)).collect();
            view.members.insert(UserId(s.user_id), roles);
        }
        for c in channels::list(&mut *conn, space).await? {
            view.channels.insert(c.id, c.parent_id);
        }
        for (channel, o) in access::space_overrides(&mut *conn, space).await? {
            view.overrides.entry(ChannelId(channel)).or_default().push(o);
        }
        Ok(Some(view))
    }

    pub fn members(&self) -> impl Iterator<Item = UserId> + '_ {
        self.members.keys().copied()
    }

    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    pub fn is_member(&self, user: UserId) -> bool {
        self.members.contains_key(&user)
    }

    pub fn has_channel(&self, channel: ChannelId) -> bool {
        self.channels.contains_key(&channel)
    }

    fn standing(&self, user: UserId) -> Option<Standing> {
        let roles = self.members.get(&user)?;
        Some(Standing {
            user_id: user.0,
            is_owner: self.owner == Some(user),
            everyone_role: self.everyone.map(|r| r.0).unwrap_or_default(),
            everyone: self.everyone_perms,
            roles: roles
                .iter()
                .filter_map(|id| {
                    self.roles.get(id).map(|(p, pos)| RoleGrant {
                        id: id.0,
                        permissions: *p,
                        position: *pos,
                    })
                })
                .collect(),
        })
    }

    /// P(M, C) for a member and a channel of this space; empty for non-members and unknown
    /// channels.
    pub fn permissions_in(&self, user: UserId, channel: ChannelId) -> Permissions {
        if !self.channels.contains_key(&channel) {
            return Permissions::empty();
        }
        let Some(standing) = self.standing(user) else {
            return Permissions::empty();
        };
        let overrides = self.overrides.get(&channel).map(Vec::as_slice).unwrap_or(&[]);
        standing.channel(overrides)
    }

    pub fn can_view(&self, user: UserId, channel: ChannelId) -> bool {
        self.permissions_in(user, channel).contains(Permissions::VIEW_CHANNEL)
    }

    /// Applies one event of the space's topic. Every change is a "set" of state carried by the
    /// event, so applying an event twice, or an event already reflected in a fresh load, is
    /// harmless.
    pub fn apply(&mut self, op: Op, data: &RawValue) -> MemberChange {
        let mut change = MemberChange::default();
        match op {
            Op::MemberCreated | Op::MemberUpdated => {
                if let Some(m) = parse::<MemberData>(data)
                    && self.members.insert(m.user_id, m.role_ids).is_none()
                {
                    change.added = Some(m.user_id);
                }
            }
            Op::MemberDeleted => {
                if let Some(m) = parse::<MemberData>(data)
                    && self.members.remove(&m.user_id).is_some()
                {
                    // Removal deletes the member's overrides with the membership.
                    self.drop_overrides(Target::Member(m.user_id.0));
                    change.removed = Some(m.user_id);
                }
            }
            Op::RoleCreated | Op::RoleUpdated => {
                if let Some(r) = parse::<RoleData>(data) {
                    let perms = bits(r.permissions.as_deref());
                    if Some(r.id) == self.everyone {
                        self.everyone_perms = perms;
                    } else {
                        let position = r.position.unwrap_or(0);
                        self.roles.insert(r.id, (perms, position));
                    }
                }
            }
            Op::RoleDeleted => {
                if let Some(r) = parse::<RoleData>(data) {
                    self.roles.remove(&r.id);
                    for roles in self.members.values_mut() {
                        roles.retain(|id| *id != r.id);
                    }
                    self.drop_overrides(Target::Role(r.id.0));
                }
            }
            Op::ChannelCreated => {
                if let Some(c) = parse::<ChannelData>(data)
                    && !self.channels.contains_key(&c.id)
                {
                    self.channels.insert(c.id, c.parent_id);
                    // A child channel starts with a copy of its parent's overrides.
                    if let Some(parent) = c.parent_id
                        && let Some(o) = self.overrides.get(&parent).cloned()
                    {
                        self.overrides.insert(c.id, o);
                    }
                }
            }
            Op::ChannelUpdated => {
                if let Some(c) = parse::<ChannelData>(data) {
                    self.channels.insert(c.id, c.parent_id);
                }
            }
            Op::ChannelDeleted => {
                if let Some(c) = parse::<ChannelData>(data) {
                    self.channels.remove(&c.id);
                    self.overrides.remove(&c.id);
                }
            }
            Op::SpaceUpdated => {
                if let Some(s) = parse::<SpaceData>(data)
                    && s.owner_id.is_some()
                {
                    self.owner = s.owner_id;
                }
            }
            Op::OverrideSet => {
                if let Some(o) = parse::<OverrideData>(data) {
                    let target = match o.target_type.as_deref() {
                        Some("MEMBER") => Target::Member(o.target_id),
                        _ => Target::Role(o.target_id),
                    };
                    let list = self.overrides.entry(o.channel_id).or_default();
                    list.retain(|x| target_id(x.target) != o.target_id);
                    list.push(Override {
                        target,
                        allow: bits(o.allow.as_deref()),
                        deny: bits(o.deny.as_deref()),
                    });
                }
            }
            Op::OverrideDeleted => {
                if let Some(o) = parse::<OverrideData>(data)
                    && let Some(list) = self.overrides.get_mut(&o.channel_id)
                {
                    list.retain(|x| target_id(x.target) != o.target_id);
                }
            }
            // Events that change nothing a delivery decision reads.
            Op::SpaceCreated
            | Op::SpaceDeleted
            | Op::MessageCreated
            | Op::MessageUpdated
            | Op::MessageDeleted
            | Op::TypingUpdated
            | Op::RelationCreated
            | Op::RelationUpdated
            | Op::RelationDeleted
            | Op::UnreadUpdated
            | Op::UserCreated
            | Op::UserUpdated
            | Op::UserDeleted
            | Op::PresenceUpdated
            | Op::SessionRevoked
            | Op::CollabRelay => {}
        }
        change
    }

    fn drop_overrides(&mut self, target: Target) {
        for list in self.overrides.values_mut() {
            list.retain(|o| o.target != target);
        }
    }
}

fn target_id(t: Target) -> uuid::Uuid {
    match t {
        Target::Role(id) | Target::Member(id) => id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(v: serde_json::Value) -> Box<RawValue> {
        RawValue::from_string(v.to_string()).unwrap()
    }

    #[test]
    fn events_keep_the_view_current() {
        let owner = UserId::new();
        let alice = UserId::new();
        let everyone = RoleId::new();
        let mods = RoleId::new();
        let general = ChannelId::new();
        let secret = ChannelId::new();
        let mut v = SpaceView {
            owner: Some(owner),
            everyone: Some(everyone),
            everyone_perms: Permissions::DEFAULT_EVERYONE,
            ..SpaceView::default()
        };
        v.members.insert(owner, vec![]);
        v.channels.insert(general, None);
        let change = v.apply(
            Op::MemberCreated,
            &raw(serde_json::json!({"userId": alice, "roleIds": []})),
        );
        assert_eq!(change.added, Some(alice));
        assert!(v.can_view(alice, general));
        v.apply(
            Op::ChannelCreated,
            &raw(serde_json::json!({"id": secret, "parentId": null})),
        );
        assert!(v.can_view(alice, secret));
        // Hide `secret` from @everyone, then let the moderators in.
        v.apply(
            Op::OverrideSet,
            &raw(serde_json::json!({"channelId": secret, "targetType": "ROLE", "targetId": everyone, "allow": "0", "deny": "4096"})),
        );
        assert!(!v.can_view(alice, secret));
        assert!(v.can_view(owner, secret));
        v.apply(
            Op::RoleCreated,
            &raw(serde_json::json!({"id": mods, "permissions": "0", "position": 1})),
        );
        v.apply(
            Op::OverrideSet,
            &raw(serde_json::json!({"channelId": secret, "targetType": "ROLE", "targetId": mods, "allow": "4096", "deny": "0"})),
        );
        v.apply(
            Op::MemberUpdated,
            &raw(serde_json::json!({"userId": alice, "roleIds": [mods]})),
        );
        assert!(v.can_view(alice, secret));
        // A child copies its parent's overrides.
        let child = ChannelId::new();
        v.apply(
            Op::ChannelCreated,
            &raw(serde_json::json!({"id": child, "parentId": secret})),
        );
        assert!(v.can_view(alice, child));
        v.apply(
            Op::RoleDeleted,
            &raw(serde_json::json!({"id": mods, "permissions": "0", "position": 1})),
        );
        assert!(!v.can_view(alice, secret));
        assert!(!v.can_view(alice, child));
        // Ownership moves.
        v.apply(Op::SpaceUpdated, &raw(serde_json::json!({"id": "x", "ownerId": alice})));
        assert!(v.can_view(alice, secret));
        let change = v.apply(Op::MemberDeleted, &raw(serde_json::json!({"userId": alice})));
        assert_eq!(change.removed, Some(alice));
        assert!(!v.is_member(alice));
        assert!(!v.can_view(alice, general));
        v.apply(Op::ChannelDeleted, &raw(serde_json::json!({"id": general})));
        assert!(!v.can_view(owner, general));
        v.apply(
            Op::OverrideDeleted,
            &raw(serde_json::json!({"channelId": secret, "targetId": everyone})),
        );
        v.apply(
            Op::MemberCreated,
            &raw(serde_json::json!({"userId": alice, "roleIds": []})),
        );
        assert!(v.can_view(alice, secret));
    }
}
