//! Every event the server publishes (spec §3.4, §7.7, §7.8): its op, its payload type and who may
//! receive it. Publishers build an [`Event`]; its variant fixes the payload type and its
//! [`Audience`] fixes the bus topics. The gateway reads the op back with [`Op::parse`] and matches
//! it exhaustively, so a new event does not compile until both sides say who receives it.
//!
//! No op string literal lives outside this module.

use bytes::Bytes;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::entities::channels::{Channel, ChannelUnread};
use crate::entities::members::MemberExt;
use crate::entities::messages::{MessageExt, MessageKey};
use crate::entities::overrides::ChannelOverride;
use crate::entities::relations::RelationshipExt;
use crate::entities::roles::Role;
use crate::entities::spaces::SpaceExt;
use crate::entities::users::UserExt;
use crate::functions::bus::{Bus, Topic};
use crate::functions::ids::{ChannelId, SessionId, SpaceId, UserId};

/// Declares the ops: the enum, its wire names and the list of all of them.
macro_rules! ops {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)*) => {
        /// An event op as it appears on the wire.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Op {
            $($(#[$doc])* $variant,)*
        }

        impl Op {
            pub const ALL: &'static [Op] = &[$(Op::$variant),*];

            pub const fn name(self) -> &'static str {
                match self {
                    $(Op::$variant => $name,)*
                }
            }

            /// The op of a wire name (`None` for a name this server never publishes).
            pub fn parse(name: &str) -> Option<Op> {
                match name {
                    $($name => Some(Op::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

ops! {
    SpaceCreated = "spaces.onCreate",
    SpaceUpdated = "spaces.onUpdate",
    SpaceDeleted = "spaces.onDelete",
    ChannelCreated = "channels.onCreate",
    ChannelUpdated = "channels.onUpdate",
    ChannelDeleted = "channels.onDelete",
    MemberCreated = "members.onCreate",
    MemberUpdated = "members.onUpdate",
    MemberDeleted = "members.onDelete",
    RoleCreated = "roles.onCreate",
    RoleUpdated = "roles.onUpdate",
    RoleDeleted = "roles.onDelete",
    MessageCreated = "messages.onCreate",
    MessageUpdated = "messages.onUpdate",
    MessageDeleted = "messages.onDelete",
    TypingUpdated = "typing.onUpdate",
    RelationCreated = "relations.onCreate",
    RelationUpdated = "relations.onUpdate",
    RelationDeleted = "relations.onDelete",
    UnreadUpdated = "unreads.onUpdate",
    UserCreated = "users.onCreate",
    UserUpdated = "users.onUpdate",
    UserDeleted = "users.onDelete",
    PresenceUpdated = "presence.onUpdate",
    /// Control: the auth session was revoked; its sockets close (spec §6.2).
    SessionRevoked = "sessions.revoked",
    /// Internal: a channel override was set; keeps the gateway's space view current.
    OverrideSet = "internal.overrides.set",
    /// Internal: a channel override was deleted.
    OverrideDeleted = "internal.overrides.delete",
    /// Internal: a Y update or awareness message of a collab room, relayed to other instances.
    CollabRelay = "internal.collab.relay",
}

impl Op {
    /// Ops that keep the gateway's state current and never reach a client.
    pub const fn is_internal(self) -> bool {
        matches!(
            self,
            Op::OverrideSet | Op::OverrideDeleted | Op::SessionRevoked | Op::CollabRelay
        )
    }
}

impl Serialize for Op {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// Who may receive an event (spec §7.7, §7.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// Every member of a space.
    Space(SpaceId),
    /// Members of a space who may view the channel once the event is applied.
    Channel(SpaceId, ChannelId),
    /// Members who could view the channel before it was deleted.
    FormerChannel(SpaceId, ChannelId),
    /// Every member, each receiving only the channels they may view (a `SpaceExt` payload).
    SpaceShaped(SpaceId),
    /// Both participants of a DM.
    Dm(UserId, UserId),
    /// A user's profile audience: co-members, relation partners and the user.
    Profile(UserId),
    /// One user's own sessions.
    User(UserId),
    /// The sockets of one auth session.
    AuthSession(SessionId),
    /// No client: the gateway's view of the space.
    SpaceView(SpaceId),
    /// The instances that hold a document's collab room.
    CollabRoom(ChannelId),
}

impl Audience {
    /// The bus topics that carry an event to this audience.
    pub fn topics(self) -> Vec<Topic> {
        match self {
            Audience::Space(s)
            | Audience::Channel(s, _)
            | Audience::FormerChannel(s, _)
            | Audience::SpaceShaped(s)
            | Audience::SpaceView(s) => vec![Topic::space(s.0)],
            Audience::Dm(a, b) => vec![Topic::user(a), Topic::user(b)],
            Audience::Profile(u) => vec![Topic::profile(u)],
            Audience::User(u) => vec![Topic::user(u)],
            Audience::AuthSession(s) => vec![Topic::session(s)],
            Audience::CollabRoom(c) => vec![Topic::collab(c)],
        }
    }
}

/// Where a conversation's events go: a space (delivery filters by VIEW_CHANNEL) or a DM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conversation {
    Space(SpaceId),
    Dm(UserId, UserId),
}

impl Conversation {
    fn audience(self, channel: ChannelId) -> Audience {
        match self {
            Conversation::Space(s) => Audience::Channel(s, channel),
            Conversation::Dm(a, b) => Audience::Dm(a, b),
        }
    }
}

/// `typing.onUpdate` data (Mikoto's `TypingUpdate`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TypingUpdate {
    pub channel_id: ChannelId,
    pub user_id: UserId,
}

crate::wire_enum!(
    PresenceStatus {
        Online = "ONLINE",
        Offline = "OFFLINE",
    }
);

/// `presence.onUpdate` data and the `users.presence` entries (spec §3.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Presence {
    pub user_id: UserId,
    pub status: PresenceStatus,
}

/// An object identified by its id (`relations.onDelete`, `users.onDelete`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ObjectWithId {
    pub id: Uuid,
}

/// `sessions.revoked` data.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Revoked {
    pub user_id: UserId,
}

/// `internal.overrides.delete` data.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OverrideKey {
    pub channel_id: ChannelId,
    pub target_id: Uuid,
}

/// `internal.collab.relay` data: one y-protocols message of a collab room, from one instance to
/// the others that hold the room.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CollabRelay {
    /// The publishing instance (it ignores its own relays).
    pub origin: Uuid,
    /// The encoded message (a Sync Update or an Awareness message), base64.
    pub message: String,
}

/// One event: the variant names the op and the payload type, its fields the audience.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// The user became a member of the space (their own sessions).
    SpaceJoined(UserId, &'a SpaceExt),
    /// The user is no longer a member (their own sessions).
    SpaceLeft(UserId, &'a SpaceExt),
    SpaceUpdated(&'a SpaceExt),
    SpaceDeleted(&'a SpaceExt),
    ChannelCreated(SpaceId, &'a Channel),
    ChannelUpdated(SpaceId, &'a Channel),
    ChannelDeleted(SpaceId, &'a Channel),
    /// A channel became visible to one user (an override or role change).
    ChannelShown(UserId, &'a Channel),
    /// A channel stopped being visible to one user.
    ChannelHidden(UserId, &'a Channel),
    MemberCreated(&'a MemberExt),
    MemberUpdated(&'a MemberExt),
    MemberDeleted(&'a MemberExt),
    RoleCreated(&'a Role),
    RoleUpdated(&'a Role),
    RoleDeleted(&'a Role),
    MessageCreated(Conversation, &'a MessageExt),
    MessageUpdated(Conversation, &'a MessageExt),
    MessageDeleted(Conversation, &'a MessageKey),
    Typing(Conversation, &'a TypingUpdate),
    /// The relationship row `owner` holds about someone.
    RelationCreated(UserId, &'a RelationshipExt),
    RelationUpdated(UserId, &'a RelationshipExt),
    RelationDeleted(UserId, &'a ObjectWithId),
    UnreadUpdated(UserId, &'a ChannelUnread),
    ProfileUpdated(&'a UserExt),
    PresenceUpdated(&'a Presence),
    SessionRevoked(SessionId, &'a Revoked),
    OverrideSet(SpaceId, &'a ChannelOverride),
    OverrideDeleted(SpaceId, &'a OverrideKey),
    CollabRelay(ChannelId, &'a CollabRelay),
}

impl Event<'_> {
    pub fn op(&self) -> Op {
        match self {
            Event::SpaceJoined(..) => Op::SpaceCreated,
            Event::SpaceLeft(..) => Op::SpaceDeleted,
            Event::SpaceUpdated(_) => Op::SpaceUpdated,
            Event::SpaceDeleted(_) => Op::SpaceDeleted,
            Event::ChannelCreated(..) | Event::ChannelShown(..) => Op::ChannelCreated,
            Event::ChannelUpdated(..) => Op::ChannelUpdated,
            Event::ChannelDeleted(..) | Event::ChannelHidden(..) => Op::ChannelDeleted,
            Event::MemberCreated(_) => Op::MemberCreated,
            Event::MemberUpdated(_) => Op::MemberUpdated,
            Event::MemberDeleted(_) => Op::MemberDeleted,
            Event::RoleCreated(_) => Op::RoleCreated,
            Event::RoleUpdated(_) => Op::RoleUpdated,
            Event::RoleDeleted(_) => Op::RoleDeleted,
            Event::MessageCreated(..) => Op::MessageCreated,
            Event::MessageUpdated(..) => Op::MessageUpdated,
            Event::MessageDeleted(..) => Op::MessageDeleted,
            Event::Typing(..) => Op::TypingUpdated,
            Event::RelationCreated(..) => Op::RelationCreated,
            Event::RelationUpdated(..) => Op::RelationUpdated,
            Event::RelationDeleted(..) => Op::RelationDeleted,
            Event::UnreadUpdated(..) => Op::UnreadUpdated,
            Event::ProfileUpdated(_) => Op::UserUpdated,
            Event::PresenceUpdated(_) => Op::PresenceUpdated,
            Event::SessionRevoked(..) => Op::SessionRevoked,
            Event::OverrideSet(..) => Op::OverrideSet,
            Event::OverrideDeleted(..) => Op::OverrideDeleted,
            Event::CollabRelay(..) => Op::CollabRelay,
        }
    }

    pub fn audience(&self) -> Audience {
        match *self {
            Event::SpaceJoined(u, _) | Event::SpaceLeft(u, _) => Audience::User(u),
            Event::SpaceUpdated(s) | Event::SpaceDeleted(s) => Audience::SpaceShaped(s.id),
            Event::ChannelCreated(s, c) | Event::ChannelUpdated(s, c) => Audience::Channel(s, c.id),
            Event::ChannelDeleted(s, c) => Audience::FormerChannel(s, c.id),
            Event::ChannelShown(u, _) | Event::ChannelHidden(u, _) => Audience::User(u),
            Event::MemberCreated(m) | Event::MemberUpdated(m) | Event::MemberDeleted(m) => Audience::Space(m.space_id),
            Event::RoleCreated(r) | Event::RoleUpdated(r) | Event::RoleDeleted(r) => Audience::Space(r.space_id),
            Event::MessageCreated(c, m) | Event::MessageUpdated(c, m) => c.audience(m.channel_id),
            Event::MessageDeleted(c, k) => c.audience(k.channel_id),
            Event::Typing(c, t) => c.audience(t.channel_id),
            Event::RelationCreated(u, _) | Event::RelationUpdated(u, _) | Event::RelationDeleted(u, _) => {
                Audience::User(u)
            }
            Event::UnreadUpdated(u, _) => Audience::User(u),
            Event::ProfileUpdated(u) => Audience::Profile(u.id),
            Event::PresenceUpdated(p) => Audience::Profile(p.user_id),
            Event::SessionRevoked(s, _) => Audience::AuthSession(s),
            Event::OverrideSet(s, _) | Event::OverrideDeleted(s, _) => Audience::SpaceView(s),
            Event::CollabRelay(c, _) => Audience::CollabRoom(c),
        }
    }

    fn data(&self) -> serde_json::Result<Box<RawValue>> {
        use serde_json::value::to_raw_value as raw;
        match *self {
            Event::SpaceJoined(_, s) | Event::SpaceLeft(_, s) | Event::SpaceUpdated(s) | Event::SpaceDeleted(s) => {
                raw(s)
            }
            Event::ChannelCreated(_, c)
            | Event::ChannelUpdated(_, c)
            | Event::ChannelDeleted(_, c)
            | Event::ChannelShown(_, c)
            | Event::ChannelHidden(_, c) => raw(c),
            Event::MemberCreated(m) | Event::MemberUpdated(m) | Event::MemberDeleted(m) => raw(m),
            Event::RoleCreated(r) | Event::RoleUpdated(r) | Event::RoleDeleted(r) => raw(r),
            Event::MessageCreated(_, m) | Event::MessageUpdated(_, m) => raw(m),
            Event::MessageDeleted(_, k) => raw(k),
            Event::Typing(_, t) => raw(t),
            Event::RelationCreated(_, r) | Event::RelationUpdated(_, r) => raw(r),
            Event::RelationDeleted(_, o) => raw(o),
            Event::UnreadUpdated(_, u) => raw(u),
            Event::ProfileUpdated(u) => raw(u),
            Event::PresenceUpdated(p) => raw(p),
            Event::SessionRevoked(_, r) => raw(r),
            Event::OverrideSet(_, o) => raw(o),
            Event::OverrideDeleted(_, k) => raw(k),
            Event::CollabRelay(_, r) => raw(r),
        }
    }

    /// The event serialised once per topic (each copy has its own id: subscribers drop an id
    /// they have just seen).
    fn encode(&self) -> Vec<(Topic, Bytes)> {
        let op = self.op();
        let data = match self.data() {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(op = op.name(), error = %e, "event serialisation failed");
                return Vec::new();
            }
        };
        self.audience()
            .topics()
            .into_iter()
            .filter_map(|topic| match crate::functions::bus::encode(op.name(), &data) {
                Ok(bytes) => Some((topic, bytes)),
                Err(e) => {
                    tracing::error!(op = op.name(), error = %e, "event serialisation failed");
                    None
                }
            })
            .collect()
    }

    /// Publishes at once: for events that follow no transaction of their own.
    pub async fn publish(&self, bus: &Bus) {
        for (topic, bytes) in self.encode() {
            bus.publish_raw(&topic, bytes).await;
        }
    }
}

/// Events collected while a transaction runs, published only after it commits.
#[derive(Default)]
pub struct Outbox {
    events: Vec<(Topic, Bytes)>,
}

impl Outbox {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, event: Event<'_>) {
        self.events.extend(event.encode());
    }

    /// Publishes every event in order (for work already committed, or not transactional).
    pub async fn publish(self, bus: &Bus) {
        for (topic, bytes) in self.events {
            bus.publish_raw(&topic, bytes).await;
        }
    }

    /// Commits the transaction, then publishes. Nothing is published for rolled-back work.
    pub async fn commit(self, tx: sqlx::Transaction<'_, sqlx::Postgres>, bus: &Bus) -> Result<(), sqlx::Error> {
        tx.commit().await?;
        self.publish(bus).await;
        Ok(())
    }
}

/// The head of a published payload `{"id","op","data"}`.
#[derive(Deserialize)]
pub struct Published<'a> {
    pub id: Uuid,
    #[serde(borrow)]
    pub op: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    pub data: &'a RawValue,
}

impl Published<'_> {
    pub fn parse(payload: &[u8]) -> Option<Published<'_>> {
        serde_json::from_slice(payload).ok()
    }

    /// The op, when it is one this server publishes.
    pub fn op(&self) -> Option<Op> {
        Op::parse(&self.op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entities::channels::ChannelType;
    use crate::entities::overrides::OverrideTargetType;
    use crate::entities::relations::RelationState;
    use crate::entities::spaces::SpaceType;
    use crate::functions::ids::{MemberId, RoleId};
    use crate::functions::time::Timestamp;

    fn id() -> Uuid {
        Uuid::now_v7()
    }

    fn user(id: UserId) -> UserExt {
        UserExt {
            id,
            name: "u".into(),
            avatar: None,
            description: None,
            category: None,
            handle: None,
        }
    }

    /// Every event, with the op it carries and the audience it reaches (spec §7.7, §7.8).
    #[test]
    fn every_event_names_its_op_and_audience() {
        let (space, channel, me, other) = (SpaceId(id()), ChannelId(id()), UserId(id()), UserId(id()));
        let session = SessionId(id());
        let relay = CollabRelay {
            origin: id(),
            message: "AAE=".into(),
        };
        let ch = Channel {
            id: channel,
            space_id: Some(space),
            parent_id: None,
            order: 0,
            name: "c".into(),
            kind: ChannelType::Text,
            last_updated: None,
        };
        let ext = SpaceExt {
            id: space,
            name: "s".into(),
            icon: None,
            owner_id: Some(me),
            kind: SpaceType::None,
            visibility: None,
            handle: None,
            roles: Vec::new(),
            channels: vec![ch.clone()],
            member_count: 1,
        };
        let member = MemberExt {
            id: MemberId(id()),
            space_id: space,
            user_id: me,
            name: None,
            user: user(me),
            role_ids: Vec::new(),
        };
        let role = Role {
            id: RoleId(id()),
            space_id: space,
            name: "r".into(),
            color: None,
            permissions: "0".into(),
            position: 1,
        };
        let message = MessageExt {
            id: id(),
            channel_id: channel,
            author_id: Some(me),
            timestamp: Timestamp::now(),
            edited_timestamp: None,
            content: "hi".into(),
            author: None,
            attachments: Vec::new(),
        };
        let key = MessageKey {
            channel_id: channel,
            message_id: message.id,
        };
        let typing = TypingUpdate {
            channel_id: channel,
            user_id: me,
        };
        let relation = RelationshipExt {
            id: id(),
            user_id: me,
            relation_id: other,
            state: RelationState::Friend,
            channel_id: None,
            user: user(other),
        };
        let gone = ObjectWithId { id: id() };
        let unread = ChannelUnread {
            channel_id: channel,
            user_id: me,
            timestamp: Timestamp::now(),
        };
        let profile = user(me);
        let presence = Presence {
            user_id: me,
            status: PresenceStatus::Online,
        };
        let revoked = Revoked { user_id: me };
        let ov = ChannelOverride {
            channel_id: channel,
            target_type: OverrideTargetType::Role,
            target_id: id(),
            allow: "0".into(),
            deny: "0".into(),
        };
        let ov_key = OverrideKey {
            channel_id: channel,
            target_id: ov.target_id,
        };
        let in_space = Conversation::Space(space);
        let in_dm = Conversation::Dm(me, other);
        let table: Vec<(Event<'_>, &str, Audience)> = vec![
            (Event::SpaceJoined(me, &ext), "spaces.onCreate", Audience::User(me)),
            (Event::SpaceLeft(me, &ext), "spaces.onDelete", Audience::User(me)),
            (
                Event::SpaceUpdated(&ext),
                "spaces.onUpdate",
                Audience::SpaceShaped(space),
            ),
            (
                Event::SpaceDeleted(&ext),
                "spaces.onDelete",
                Audience::SpaceShaped(space),
            ),
            (
                Event::ChannelCreated(space, &ch),
                "channels.onCreate",
                Audience::Channel(space, channel),
            ),
            (
                Event::ChannelUpdated(space, &ch),
                "channels.onUpdate",
                Audience::Channel(space, channel),
            ),
            (
                Event::ChannelDeleted(space, &ch),
                "channels.onDelete",
                Audience::FormerChannel(space, channel),
            ),
            (Event::ChannelShown(me, &ch), "channels.onCreate", Audience::User(me)),
            (Event::ChannelHidden(me, &ch), "channels.onDelete", Audience::User(me)),
            (
                Event::MemberCreated(&member),
                "members.onCreate",
                Audience::Space(space),
            ),
            (
                Event::MemberUpdated(&member),
                "members.onUpdate",
                Audience::Space(space),
            ),
            (
                Event::MemberDeleted(&member),
                "members.onDelete",
                Audience::Space(space),
            ),
            (Event::RoleCreated(&role), "roles.onCreate", Audience::Space(space)),
            (Event::RoleUpdated(&role), "roles.onUpdate", Audience::Space(space)),
            (Event::RoleDeleted(&role), "roles.onDelete", Audience::Space(space)),
            (
                Event::MessageCreated(in_space, &message),
                "messages.onCreate",
                Audience::Channel(space, channel),
            ),
            (
                Event::MessageCreated(in_dm, &message),
                "messages.onCreate",
                Audience::Dm(me, other),
            ),
            (
                Event::MessageUpdated(in_space, &message),
                "messages.onUpdate",
                Audience::Channel(space, channel),
            ),
            (
                Event::MessageUpdated(in_dm, &message),
                "messages.onUpdate",
                Audience::Dm(me, other),
            ),
            (
                Event::MessageDeleted(in_space, &key),
                "messages.onDelete",
                Audience::Channel(space, channel),
            ),
            (
                Event::MessageDeleted(in_dm, &key),
                "messages.onDelete",
                Audience::Dm(me, other),
            ),
            (
                Event::Typing(in_space, &typing),
                "typing.onUpdate",
                Audience::Channel(space, channel),
            ),
            (
                Event::Typing(in_dm, &typing),
                "typing.onUpdate",
                Audience::Dm(me, other),
            ),
            (
                Event::RelationCreated(me, &relation),
                "relations.onCreate",
                Audience::User(me),
            ),
            (
                Event::RelationUpdated(me, &relation),
                "relations.onUpdate",
                Audience::User(me),
            ),
            (
                Event::RelationDeleted(me, &gone),
                "relations.onDelete",
                Audience::User(me),
            ),
            (
                Event::UnreadUpdated(me, &unread),
                "unreads.onUpdate",
                Audience::User(me),
            ),
            (Event::ProfileUpdated(&profile), "users.onUpdate", Audience::Profile(me)),
            (
                Event::PresenceUpdated(&presence),
                "presence.onUpdate",
                Audience::Profile(me),
            ),
            (
                Event::SessionRevoked(session, &revoked),
                "sessions.revoked",
                Audience::AuthSession(session),
            ),
            (
                Event::OverrideSet(space, &ov),
                "internal.overrides.set",
                Audience::SpaceView(space),
            ),
            (
                Event::OverrideDeleted(space, &ov_key),
                "internal.overrides.delete",
                Audience::SpaceView(space),
            ),
            (
                Event::CollabRelay(channel, &relay),
                "internal.collab.relay",
                Audience::CollabRoom(channel),
            ),
        ];
        for (event, op, audience) in &table {
            assert_eq!(event.op().name(), *op, "{event:?}");
            assert_eq!(event.audience(), *audience, "{event:?}");
            let encoded = event.encode();
            assert_eq!(encoded.len(), audience.topics().len(), "{event:?}");
            for (topic, bytes) in encoded {
                let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
                assert_eq!(v["op"], *op);
                assert!(v["id"].is_string() && v["data"].is_object(), "{event:?}");
                assert!(audience.topics().contains(&topic));
            }
        }
        // Every op that is published has an event.
        for op in Op::ALL
            .iter()
            .filter(|op| !matches!(op, Op::UserCreated | Op::UserDeleted))
        {
            assert!(table.iter().any(|(e, ..)| e.op() == *op), "no event publishes {op:?}");
        }
    }

    #[test]
    fn op_names_round_trip() {
        for op in Op::ALL {
            assert_eq!(Op::parse(op.name()), Some(*op));
        }
        assert_eq!(Op::parse("messages.onCreated"), None);
        assert!(
            Op::ALL
                .iter()
                .filter(|op| op.is_internal())
                .all(|op| !op.name().contains(".on"))
        );
    }
}
