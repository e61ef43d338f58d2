//! The hub (DESIGN.md "One binary, four surfaces"): which local sessions each bus topic reaches,
//! and delivery authorization at delivery time (spec §7.7) from in-memory state kept current by
//! the events themselves.
//!
//! One dispatcher task reads the process-wide bus stream and applies every message under the
//! hub lock, in order. State is per *local user* (every session of a user shares the user's
//! spaces and relations) and per *space view* (members, roles, channels, overrides). A view or
//! user that is still loading queues its topic's messages and applies them, in order, on top of
//! the snapshot, which is read only after the topic's subscription is in effect — every change
//! is therefore either in the snapshot or in the queue (and applying it twice is harmless).

// The hub hashes ids on every delivery: foldhash, not SipHash (keys are server-made ids).
use foldhash::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::protocol::{self, InvalidReason, ResyncPayload};
use super::session::{Close, Conn, Dispatched, Event, Item, Published, Replay, Session};
use super::view::{ChannelRef, IdRef, SpaceView};
use super::{PresenceCmd, RegistryCmd};
use crate::entities::relations::RelationState;
use crate::events::Op;
use crate::functions::bus::{Topic, TopicKind};
use crate::functions::ids::{ChannelId, SessionId, SpaceId, UserId};
use crate::functions::permissions::Permissions;

/// A local user: every session of one user on this instance shares this state.
struct LocalUser {
    sessions: Vec<Uuid>,
    spaces: HashSet<SpaceId>,
    /// The user's relationship rows: row id → (other user, state, DM channel).
    relations: HashMap<Uuid, Relation>,
    /// Attached sessions (presence counts users with at least one).
    attached: u32,
    /// Messages of the user's topic that arrived while loading.
    pending: Option<Vec<Bytes>>,
    generation: u64,
    /// The first load finished (subscriptions, spaces and relations).
    loaded: bool,
    /// `loaded` and every space view of the user loaded: sessions may get `ready`.
    ready: bool,
    waiters: Vec<tokio::sync::oneshot::Sender<bool>>,
}

/// A relationship row of a local user: the other user, the state and the DM channel.
#[derive(Debug, Clone, Copy)]
pub(super) struct Relation {
    pub other: UserId,
    pub state: RelationState,
    pub channel: Option<ChannelId>,
}

impl Relation {
    /// Rows that put the other user in this user's profile audience (spec §7.8).
    fn counts(&self) -> bool {
        matches!(
            self.state,
            RelationState::Friend | RelationState::IncomingRequest | RelationState::OutgoingRequest
        )
    }
}

struct SpaceEntry {
    /// Local users who are members.
    audience: HashSet<UserId>,
    view: Option<SpaceView>,
    /// Messages that arrived while (re)loading.
    pending: Option<Vec<Bytes>>,
    generation: u64,
}

/// What the hub asks its runtime to do: it decides, the runtime (`super::Inner::run`) acts.
/// Frames are not effects: they go straight into the sessions' outbound queues, which the hub
/// owns (a fan-out to thousands of members must not allocate an effect per recipient).
#[derive(Debug)]
pub(super) enum Effect {
    Subscribe(Topic),
    Unsubscribe(Topic),
    /// Load a local user's spaces and relations (after subscribing to its topic: `subscribe`).
    LoadUser {
        user: UserId,
        generation: u64,
        subscribe: bool,
    },
    /// Load a space view (after subscribing to the space's topic: `subscribe`).
    LoadView {
        space: SpaceId,
        generation: u64,
        subscribe: bool,
    },
    Presence(PresenceCmd),
    Registry(RegistryCmd),
    /// Send a take-over reply to the requesting instance.
    Reply(Uuid, TakeoverReply),
    /// A take-over reply arrived for a request of this instance.
    Replied(TakeoverReply),
}

pub(super) type Effects = Vec<Effect>;

#[derive(Default)]
pub(super) struct Hub {
    /// This instance (its `instance:` topic carries take-over requests and replies).
    instance: Uuid,
    /// `PRESENCE_SPACE_LIMIT`: presence reaches co-members only through spaces up to this size.
    presence_limit: usize,
    sessions: HashMap<Uuid, Session>,
    users: HashMap<UserId, LocalUser>,
    spaces: HashMap<SpaceId, SpaceEntry>,
    by_auth: HashMap<SessionId, Vec<Uuid>>,
    /// Profile topic reference counts: local users themselves, members of loaded views and
    /// relation partners of local users.
    profiles: HashMap<UserId, u32>,
    /// User → loaded local views they are a member of.
    member_of: HashMap<UserId, HashSet<SpaceId>>,
    /// User → local users with a relationship row about them that counts (spec §7.8).
    partners: HashMap<UserId, HashSet<UserId>>,
    generation: u64,
    last_refresh: Option<Instant>,
    /// Deliveries not yet added to the metric (added per bus message, not per recipient).
    delivered: u64,
}

/// Where a `typing.start` goes.
pub(super) enum TypingTarget {
    Space(SpaceId),
    Dm(UserId),
}

/// A take-over request (spec §8.5) on the owner's `instance:` topic.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TakeoverRequest {
    pub request_id: Uuid,
    pub session_id: Uuid,
    pub seq: u64,
    pub from: Uuid,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub(super) enum WireReplay {
    Event { seq: u64, id: Uuid, body: String },
    Resync,
}

/// The ring entries of parked frames; `None` if an event is missing (a gap must not be
/// replayed as if there were none).
fn parked_entries(frames: &[ParkedFrame], bodies: &std::collections::HashMap<Uuid, String>) -> Option<Vec<Replay>> {
    let now = Instant::now();
    frames
        .iter()
        .map(|frame| match frame {
            ParkedFrame::Event(seq, id) => {
                let event = Event::from_body(*id, bodies.get(id)?.clone())?;
                Some(Replay::Event {
                    seq: *seq,
                    at: now,
                    event: Arc::new(event),
                })
            }
            ParkedFrame::Resync => Some(Replay::Resync),
        })
        .collect()
}

impl From<Replay> for WireReplay {
    fn from(entry: Replay) -> Self {
        match entry {
            Replay::Event { seq, event, .. } => WireReplay::Event {
                seq,
                id: event.id,
                body: event.body().to_string(),
            },
            Replay::Resync => WireReplay::Resync,
        }
    }
}

/// The owner's answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TakeoverReply {
    pub request_id: Uuid,
    pub ok: bool,
    pub reason: Option<InvalidReason>,
    pub last_seq: u64,
    pub frames: Vec<WireReplay>,
    /// Events the client already has (`seq` ≤ the requested one): the new owner must not
    /// deliver them again from its buffer.
    #[serde(default)]
    pub delivered: Vec<Uuid>,
}

/// How many of a session's newest frames are parked (a client further behind than that when
/// its instance stopped gets a fresh `ready`).
pub(super) const PARK_FRAMES: usize = 32;

/// A session that a stopping instance with nobody to hand it to wrote to Redis (spec §8.6),
/// for the next instance to resume. Its frames refer to events stored once per instance.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ParkedSession {
    pub instance: Uuid,
    pub user: UserId,
    pub auth: Option<SessionId>,
    pub last_seq: u64,
    pub frames: Vec<ParkedFrame>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) enum ParkedFrame {
    Event(u64, Uuid),
    Resync,
}

/// Everything a stopping instance parks: event bodies by id, and its sessions.
#[derive(Default)]
pub(super) struct Parking {
    pub events: std::collections::HashMap<Uuid, String>,
    pub sessions: Vec<(Uuid, ParkedSession)>,
}

/// A registered session: `ready` resolves once its user's state is loaded (`None` when it
/// already is). Its subscriptions are in effect after the bus's next barrier.
pub(super) struct Added {
    pub ready: Option<tokio::sync::oneshot::Receiver<bool>>,
}

/// What a local resume found.
pub(super) enum LocalResume {
    NotHere,
    Failed(InvalidReason),
    Found { auth: Option<SessionId> },
}

pub(super) fn resync_frame() -> Utf8Bytes {
    Utf8Bytes::from(protocol::control(
        "resync",
        &ResyncPayload {
            reason: "bus_reconnected".into(),
        },
    ))
}

fn parse<'a, T: Deserialize<'a>>(data: &'a RawValue) -> Option<T> {
    serde_json::from_str(data.get()).ok()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RelationRow {
    id: Uuid,
    relation_id: UserId,
    state: RelationState,
    #[serde(default)]
    channel_id: Option<ChannelId>,
}

/// How a space event chooses its recipients among members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recipients {
    Members,
    /// Members who can view this channel (after the event is applied).
    Channel(ChannelId),
    /// Members who could view it before (channel deletion).
    ChannelBefore(ChannelId),
    /// Members, each with a `SpaceExt` whose channels are filtered for them.
    Shaped,
    Nobody,
}

/// The recipients of an event on a space topic (spec §7.7). No default arm: a new op must say
/// who receives it here.
fn space_recipients(op: Op, data: &RawValue) -> Recipients {
    match op {
        Op::ChannelCreated | Op::ChannelUpdated => parse::<IdRef>(data)
            .map(|c| Recipients::Channel(ChannelId(c.id)))
            .unwrap_or(Recipients::Nobody),
        Op::ChannelDeleted => parse::<IdRef>(data)
            .map(|c| Recipients::ChannelBefore(ChannelId(c.id)))
            .unwrap_or(Recipients::Nobody),
        Op::MessageCreated | Op::MessageUpdated | Op::MessageDeleted | Op::TypingUpdated => parse::<ChannelRef>(data)
            .map(|c| Recipients::Channel(c.channel_id))
            .unwrap_or(Recipients::Nobody),
        Op::SpaceUpdated | Op::SpaceDeleted => Recipients::Shaped,
        Op::MemberCreated
        | Op::MemberUpdated
        | Op::MemberDeleted
        | Op::RoleCreated
        | Op::RoleUpdated
        | Op::RoleDeleted => Recipients::Members,
        // View upkeep only.
        Op::OverrideSet | Op::OverrideDeleted => Recipients::Nobody,
        // Never published on a space topic: if one were, nobody gets it.
        Op::SpaceCreated
        | Op::RelationCreated
        | Op::RelationUpdated
        | Op::RelationDeleted
        | Op::UnreadUpdated
        | Op::UserCreated
        | Op::UserUpdated
        | Op::UserDeleted
        | Op::PresenceUpdated
        | Op::SessionRevoked
        | Op::CollabRelay => Recipients::Nobody,
    }
}

/// Per-recipient `SpaceExt` events: one event per distinct set of visible channels.
fn shaped_events(
    view: &SpaceView,
    id: Uuid,
    op: Op,
    data: &RawValue,
    recipients: &[UserId],
) -> Vec<(UserId, Arc<Event>)> {
    let Ok(Value::Object(ext)) = serde_json::from_str::<Value>(data.get()) else {
        let ev = Arc::new(Event::new(id, op, data.get()));
        return recipients.iter().map(|u| (*u, ev.clone())).collect();
    };
    let channels: Vec<(Option<ChannelId>, &Value)> = match ext.get("channels") {
        Some(Value::Array(list)) => list
            .iter()
            .map(|c| {
                let id = c.get("id").and_then(Value::as_str).and_then(|s| s.parse().ok());
                (id, c)
            })
            .collect(),
        _ => Vec::new(),
    };
    let mut shapes: HashMap<Vec<bool>, Arc<Event>> = HashMap::default();
    let mut out = Vec::with_capacity(recipients.len());
    for user in recipients {
        let visible: Vec<bool> = channels
            .iter()
            .map(|(id, _)| id.is_some_and(|c| view.can_view(*user, c)))
            .collect();
        let ev = shapes
            .entry(visible)
            .or_insert_with_key(|visible| {
                let mut shaped = ext.clone();
                let kept: Vec<Value> = channels
                    .iter()
                    .zip(visible)
                    .filter(|(_, v)| **v)
                    .map(|((_, c), _)| (*c).clone())
                    .collect();
                shaped.insert("channels".into(), Value::Array(kept));
                let text = serde_json::to_string(&shaped).unwrap_or_else(|_| data.get().to_string());
                Arc::new(Event::new(id, op, &text))
            })
            .clone();
        out.push((*user, ev));
    }
    out
}

impl Hub {
    pub fn new(instance: Uuid, presence_limit: usize) -> Hub {
        Hub {
            instance,
            presence_limit,
            ..Hub::default()
        }
    }

    fn next_generation(&mut self) -> u64 {
        self.generation += 1;
        self.generation
    }

    // ----- the bus stream -----------------------------------------------------------------

    pub fn handle(&mut self, fx: &mut Effects, topic: &Topic, payload: Bytes) {
        match topic.kind() {
            TopicKind::Space(id) => self.on_space(fx, SpaceId(id), payload),
            TopicKind::User(user) => self.on_user(fx, user, payload),
            TopicKind::Profile(user) => self.on_profile(fx, user, &payload),
            TopicKind::Session(auth) => self.on_auth_session(fx, auth, &payload),
            TopicKind::Instance(id) if id == self.instance => self.on_control(fx, &payload),
            _ => {}
        }
        self.count_deliveries();
    }

    /// Adds the deliveries made since the last call to the metric.
    fn count_deliveries(&mut self) {
        if self.delivered > 0 {
            metrics::counter!("alterego_events_delivered_total").increment(std::mem::take(&mut self.delivered));
        }
    }

    fn on_space(&mut self, fx: &mut Effects, space: SpaceId, payload: Bytes) {
        let Some(entry) = self.spaces.get_mut(&space) else {
            return;
        };
        if let Some(pending) = &mut entry.pending {
            pending.push(payload);
            return;
        }
        self.space_event(fx, space, &payload);
    }

    /// Applies one event of a loaded space view, then delivers it to the members it is for.
    fn space_event(&mut self, fx: &mut Effects, space: SpaceId, payload: &[u8]) {
        let Some(head) = Published::parse(payload) else {
            return;
        };
        let Some(op) = head.op() else {
            return;
        };
        let Some(entry) = self.spaces.get_mut(&space) else {
            return;
        };
        let Some(view) = &mut entry.view else {
            return;
        };
        let audience = space_recipients(op, head.data);
        // Who could see a deleted channel is decided before the view forgets it.
        let before: Vec<UserId> = match audience {
            Recipients::ChannelBefore(c) => entry
                .audience
                .iter()
                .copied()
                .filter(|u| view.can_view(*u, c))
                .collect(),
            _ => Vec::new(),
        };
        let change = view.apply(op, head.data);
        let deliveries: Vec<(UserId, Arc<Event>)> = match audience {
            Recipients::Nobody => Vec::new(),
            Recipients::ChannelBefore(_) => {
                let ev = Arc::new(Event::new(head.id, op, head.data.get()));
                before.into_iter().map(|u| (u, ev.clone())).collect()
            }
            Recipients::Channel(c) => {
                let ev = Arc::new(Event::new(head.id, op, head.data.get()));
                entry
                    .audience
                    .iter()
                    .filter(|u| view.can_view(**u, c))
                    .map(|u| (*u, ev.clone()))
                    .collect()
            }
            Recipients::Members => {
                let ev = Arc::new(Event::new(head.id, op, head.data.get()));
                entry
                    .audience
                    .iter()
                    .filter(|u| view.is_member(**u))
                    .map(|u| (*u, ev.clone()))
                    .collect()
            }
            Recipients::Shaped => {
                let members: Vec<UserId> = entry.audience.iter().copied().filter(|u| view.is_member(*u)).collect();
                shaped_events(view, head.id, op, head.data, &members)
            }
        };
        if let Some(u) = change.added {
            self.member_of.entry(u).or_default().insert(space);
            self.profile_ref(fx, u, true);
        }
        if let Some(u) = change.removed {
            self.unindex_member(fx, space, u);
        }
        let now = Instant::now();
        for (user, ev) in &deliveries {
            self.deliver(fx, *user, ev, now);
        }
        // The space is gone: every local member leaves it.
        if op == Op::SpaceDeleted {
            let audience: Vec<UserId> = self
                .spaces
                .get(&space)
                .map(|e| e.audience.iter().copied().collect())
                .unwrap_or_default();
            for user in audience {
                self.leave_space(fx, user, space);
            }
        }
    }

    fn on_user(&mut self, fx: &mut Effects, user: UserId, payload: Bytes) {
        let Some(local) = self.users.get_mut(&user) else {
            return;
        };
        if let Some(pending) = &mut local.pending {
            pending.push(payload);
            return;
        }
        self.user_event(fx, user, &payload);
    }

    fn user_event(&mut self, fx: &mut Effects, user: UserId, payload: &[u8]) {
        let Some(head) = Published::parse(payload) else {
            return;
        };
        let Some(op) = head.op() else {
            return;
        };
        if op.is_internal() {
            return;
        }
        let ev = Arc::new(Event::new(head.id, op, head.data.get()));
        // No default arm: a new op must say what it does to a user's state.
        match op {
            Op::SpaceCreated => {
                if let Some(s) = parse::<IdRef>(head.data) {
                    self.join_space(fx, user, SpaceId(s.id));
                }
                self.deliver(fx, user, &ev, Instant::now());
            }
            Op::SpaceDeleted => {
                self.deliver(fx, user, &ev, Instant::now());
                if let Some(s) = parse::<IdRef>(head.data) {
                    self.leave_space(fx, user, SpaceId(s.id));
                }
            }
            Op::RelationCreated | Op::RelationUpdated => {
                if let Some(row) = parse::<RelationRow>(head.data) {
                    self.set_relation(
                        fx,
                        user,
                        row.id,
                        Some(Relation {
                            other: row.relation_id,
                            state: row.state,
                            channel: row.channel_id,
                        }),
                    );
                }
                self.deliver(fx, user, &ev, Instant::now());
            }
            Op::RelationDeleted => {
                if let Some(row) = parse::<IdRef>(head.data) {
                    self.set_relation(fx, user, row.id, None);
                }
                self.deliver(fx, user, &ev, Instant::now());
            }
            Op::SpaceUpdated
            | Op::ChannelCreated
            | Op::ChannelUpdated
            | Op::ChannelDeleted
            | Op::MemberCreated
            | Op::MemberUpdated
            | Op::MemberDeleted
            | Op::RoleCreated
            | Op::RoleUpdated
            | Op::RoleDeleted
            | Op::MessageCreated
            | Op::MessageUpdated
            | Op::MessageDeleted
            | Op::TypingUpdated
            | Op::UnreadUpdated
            | Op::UserCreated
            | Op::UserUpdated
            | Op::UserDeleted
            | Op::PresenceUpdated => self.deliver(fx, user, &ev, Instant::now()),
            Op::OverrideSet | Op::OverrideDeleted | Op::SessionRevoked | Op::CollabRelay => {}
        }
    }

    /// `users.onUpdate` and `presence.onUpdate` of `subject`: its profile audience (spec §7.8),
    /// computed from local views and relations; each local user at most once.
    fn on_profile(&mut self, fx: &mut Effects, subject: UserId, payload: &[u8]) {
        let Some(head) = Published::parse(payload) else {
            return;
        };
        let Some(op) = head.op() else {
            return;
        };
        let presence = match op {
            Op::PresenceUpdated => true,
            Op::UserCreated | Op::UserUpdated | Op::UserDeleted => false,
            // Never published on a profile topic.
            Op::SpaceCreated
            | Op::SpaceUpdated
            | Op::SpaceDeleted
            | Op::ChannelCreated
            | Op::ChannelUpdated
            | Op::ChannelDeleted
            | Op::MemberCreated
            | Op::MemberUpdated
            | Op::MemberDeleted
            | Op::RoleCreated
            | Op::RoleUpdated
            | Op::RoleDeleted
            | Op::MessageCreated
            | Op::MessageUpdated
            | Op::MessageDeleted
            | Op::TypingUpdated
            | Op::RelationCreated
            | Op::RelationUpdated
            | Op::RelationDeleted
            | Op::UnreadUpdated
            | Op::SessionRevoked
            | Op::OverrideSet
            | Op::OverrideDeleted
            | Op::CollabRelay => return,
        };
        let mut recipients: HashSet<UserId> = HashSet::default();
        let limit = match presence {
            true if self.presence_limit > 0 => self.presence_limit,
            _ => usize::MAX,
        };
        if let Some(spaces) = self.member_of.get(&subject) {
            for space in spaces {
                let Some(entry) = self.spaces.get(space) else { continue };
                let Some(view) = &entry.view else { continue };
                if view.is_member(subject) && view.member_count() <= limit {
                    recipients.extend(entry.audience.iter().copied().filter(|u| view.is_member(*u)));
                }
            }
        }
        if let Some(partners) = self.partners.get(&subject) {
            recipients.extend(partners.iter().copied());
        }
        // The user's own sessions get their profile updates, not their presence.
        if presence {
            recipients.remove(&subject);
        } else if self.users.contains_key(&subject) {
            recipients.insert(subject);
        }
        let ev = Arc::new(Event::new(head.id, op, head.data.get()));
        let now = Instant::now();
        for user in recipients {
            self.deliver(fx, user, &ev, now);
        }
    }

    /// `sessions.revoked`: every socket of that auth session is closed with 4006 (spec §6.2).
    fn on_auth_session(&mut self, fx: &mut Effects, auth: SessionId, payload: &[u8]) {
        let Some(head) = Published::parse(payload) else {
            return;
        };
        if head.op() != Some(Op::SessionRevoked) {
            return;
        }
        for sid in self.by_auth.get(&auth).cloned().unwrap_or_default() {
            if let Some(conn) = self.sessions.get(&sid).and_then(|s| s.conn.clone()) {
                conn.close(Close::INVALIDATED);
            }
            self.destroy_session(fx, sid, true);
        }
    }

    fn on_control(&mut self, fx: &mut Effects, payload: &[u8]) {
        let Some(head) = Published::parse(payload) else {
            return;
        };
        match head.op.as_ref() {
            super::TAKEOVER_REQUEST => {
                if let Some(req) = parse::<TakeoverRequest>(head.data) {
                    let reply = self.hand_over(fx, &req);
                    fx.push(Effect::Reply(req.from, reply));
                }
            }
            super::TAKEOVER_REPLY => {
                if let Ok(reply) = serde_json::from_str::<TakeoverReply>(head.data.get()) {
                    fx.push(Effect::Replied(reply));
                }
            }
            _ => {}
        }
    }

    /// The bus lost messages (spec §8.4): every session is told to resync, and all state is
    /// reloaded from the database on top of the (still active) subscriptions.
    pub fn resync(&mut self, fx: &mut Effects) {
        let frame = resync_frame();
        for s in self.sessions.values_mut() {
            if s.pending.is_none() {
                s.resync(&frame);
            } else if let Some(p) = &mut s.pending {
                // Events were lost while waiting for a take-over: the resume cannot be lossless.
                p.overflowed = true;
            }
        }
        let users: Vec<UserId> = self.users.keys().copied().collect();
        for user in users {
            let generation = self.next_generation();
            if let Some(local) = self.users.get_mut(&user) {
                local.generation = generation;
                local.pending.get_or_insert_with(Vec::new);
                fx.push(Effect::LoadUser {
                    user,
                    generation,
                    subscribe: false,
                });
            }
        }
        let spaces: Vec<SpaceId> = self.spaces.keys().copied().collect();
        for space in spaces {
            let generation = self.next_generation();
            if let Some(entry) = self.spaces.get_mut(&space) {
                entry.generation = generation;
                entry.pending.get_or_insert_with(Vec::new);
                fx.push(Effect::LoadView {
                    space,
                    generation,
                    subscribe: false,
                });
            }
        }
    }

    // ----- delivery -----------------------------------------------------------------------

    /// Dispatches one event to every session of a local user.
    fn deliver(&mut self, fx: &mut Effects, user: UserId, ev: &Arc<Event>, now: Instant) {
        let Some(local) = self.users.get_mut(&user) else {
            return;
        };
        let mut delivered = 0u64;
        for sid in &local.sessions {
            let Some(session) = self.sessions.get_mut(sid) else {
                continue;
            };
            delivered += 1;
            if let Dispatched::Overflowed = session.dispatch(ev, now) {
                metrics::counter!("alterego_ws_queue_overflows_total").increment(1);
                local.attached = local.attached.saturating_sub(1);
                if local.attached == 0 {
                    fx.push(Effect::Presence(PresenceCmd::Detached(user)));
                }
                fx.push(Effect::Registry(RegistryCmd::Detached(*sid, user, session.auth)));
            }
        }
        self.delivered += delivered;
    }

    // ----- subscriptions and indexes ------------------------------------------------------

    fn profile_ref(&mut self, fx: &mut Effects, user: UserId, add: bool) {
        if add {
            let n = self.profiles.entry(user).or_insert(0);
            *n += 1;
            if *n == 1 {
                fx.push(Effect::Subscribe(Topic::profile(user)));
            }
        } else if let Some(n) = self.profiles.get_mut(&user) {
            *n -= 1;
            if *n == 0 {
                self.profiles.remove(&user);
                fx.push(Effect::Unsubscribe(Topic::profile(user)));
            }
        }
    }

    fn unindex_member(&mut self, fx: &mut Effects, space: SpaceId, user: UserId) {
        if let Some(set) = self.member_of.get_mut(&user) {
            set.remove(&space);
            if set.is_empty() {
                self.member_of.remove(&user);
            }
        }
        self.profile_ref(fx, user, false);
    }

    /// A local user is (now) a member of `space`: joins its audience, creating and loading the
    /// view when this instance has none.
    fn join_space(&mut self, fx: &mut Effects, user: UserId, space: SpaceId) {
        let Some(local) = self.users.get_mut(&user) else {
            return;
        };
        if !local.spaces.insert(space) {
            return;
        }
        if !self.spaces.contains_key(&space) {
            let generation = self.next_generation();
            self.spaces.insert(
                space,
                SpaceEntry {
                    audience: HashSet::default(),
                    view: None,
                    pending: Some(Vec::new()),
                    generation,
                },
            );
            fx.push(Effect::LoadView {
                space,
                generation,
                subscribe: true,
            });
        }
        if let Some(entry) = self.spaces.get_mut(&space) {
            entry.audience.insert(user);
        }
    }

    fn leave_space(&mut self, fx: &mut Effects, user: UserId, space: SpaceId) {
        if let Some(local) = self.users.get_mut(&user) {
            local.spaces.remove(&space);
        }
        let Some(entry) = self.spaces.get_mut(&space) else {
            return;
        };
        entry.audience.remove(&user);
        if entry.audience.is_empty() {
            self.drop_space(fx, space);
        }
    }

    fn drop_space(&mut self, fx: &mut Effects, space: SpaceId) {
        let Some(entry) = self.spaces.remove(&space) else {
            return;
        };
        fx.push(Effect::Unsubscribe(Topic::space(space.0)));
        if let Some(view) = entry.view {
            for member in view.members() {
                self.unindex_member(fx, space, member);
            }
        }
    }

    /// Replaces a loaded view, keeping indexes and profile subscriptions in step.
    fn set_view(&mut self, fx: &mut Effects, space: SpaceId, view: SpaceView) {
        let Some(entry) = self.spaces.get_mut(&space) else {
            return;
        };
        let old: HashSet<UserId> = entry.view.as_ref().map(|v| v.members().collect()).unwrap_or_default();
        let new: HashSet<UserId> = view.members().collect();
        entry.view = Some(view);
        for u in new.difference(&old) {
            self.member_of.entry(*u).or_default().insert(space);
            self.profile_ref(fx, *u, true);
        }
        for u in old.difference(&new) {
            self.unindex_member(fx, space, *u);
        }
    }

    fn set_relation(&mut self, fx: &mut Effects, user: UserId, row: Uuid, relation: Option<Relation>) {
        let Some(local) = self.users.get_mut(&user) else {
            return;
        };
        let old = match relation {
            Some(r) => local.relations.insert(row, r),
            None => local.relations.remove(&row),
        };
        let was = old.filter(Relation::counts).map(|r| r.other);
        let now = relation.filter(Relation::counts).map(|r| r.other);
        if was == now {
            return;
        }
        if let Some(other) = was {
            if let Some(set) = self.partners.get_mut(&other) {
                set.remove(&user);
                if set.is_empty() {
                    self.partners.remove(&other);
                }
            }
            self.profile_ref(fx, other, false);
        }
        if let Some(other) = now {
            self.partners.entry(other).or_default().insert(user);
            self.profile_ref(fx, other, true);
        }
    }

    /// Sessions may be told `ready` once the user and all of its views are loaded.
    fn check_ready(&mut self, user: UserId) {
        let Some(local) = self.users.get_mut(&user) else {
            return;
        };
        if local.ready || !local.loaded {
            return;
        }
        let views_loaded = local.spaces.iter().all(|s| {
            self.spaces
                .get(s)
                .is_some_and(|e| e.view.is_some() && e.pending.is_none())
        });
        if views_loaded {
            local.ready = true;
            for w in local.waiters.drain(..) {
                let _ = w.send(true);
            }
        }
    }

    /// Whether the user and all its views are loaded with nothing queued (a take-over then
    /// loses nothing that is still in a queue).
    fn settled(&self, user: UserId) -> bool {
        self.users.get(&user).is_some_and(|l| {
            l.ready
                && l.pending.is_none()
                && l.spaces.iter().all(|s| {
                    self.spaces
                        .get(s)
                        .is_some_and(|e| e.view.is_some() && e.pending.is_none())
                })
        })
    }

    // ----- sessions -----------------------------------------------------------------------

    /// Registers a session of `user` (attached to `conn`, or a take-over placeholder) and
    /// returns a receiver that resolves once the user's state is ready (`None` when it is).
    pub fn add_session(&mut self, fx: &mut Effects, session: Session) -> Added {
        let (sid, user, auth, attached) = (session.id, session.user, session.auth, session.is_attached());
        self.sessions.insert(sid, session);
        if let Some(auth) = auth {
            self.by_auth.entry(auth).or_default().push(sid);
            fx.push(Effect::Subscribe(Topic::session(auth)));
        }
        if !self.users.contains_key(&user) {
            let generation = self.next_generation();
            self.profile_ref(fx, user, true);
            self.users.insert(
                user,
                LocalUser {
                    sessions: Vec::new(),
                    spaces: HashSet::default(),
                    relations: HashMap::default(),
                    attached: 0,
                    pending: Some(Vec::new()),
                    generation,
                    loaded: false,
                    ready: false,
                    waiters: Vec::new(),
                },
            );
            fx.push(Effect::LoadUser {
                user,
                generation,
                subscribe: true,
            });
        }
        let Some(local) = self.users.get_mut(&user) else {
            return Added { ready: None };
        };
        local.sessions.push(sid);
        if attached {
            local.attached += 1;
            if local.attached == 1 {
                fx.push(Effect::Presence(PresenceCmd::Attached(user)));
            }
            fx.push(Effect::Registry(RegistryCmd::Attached(sid, user, auth)));
        }
        if local.ready {
            return Added { ready: None };
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        local.waiters.push(tx);
        Added { ready: Some(rx) }
    }

    /// Removes a session. `forget` also deletes its registry entry (not when another instance
    /// has taken it over).
    pub fn destroy_session(&mut self, fx: &mut Effects, sid: Uuid, forget: bool) {
        let Some(session) = self.sessions.remove(&sid) else {
            return;
        };
        if let Some(auth) = session.auth {
            fx.push(Effect::Unsubscribe(Topic::session(auth)));
            if let Some(list) = self.by_auth.get_mut(&auth) {
                list.retain(|s| *s != sid);
                if list.is_empty() {
                    self.by_auth.remove(&auth);
                }
            }
        }
        if forget {
            fx.push(Effect::Registry(RegistryCmd::Remove(sid)));
        }
        let user = session.user;
        let Some(local) = self.users.get_mut(&user) else {
            return;
        };
        local.sessions.retain(|s| *s != sid);
        if session.conn.is_some() {
            local.attached = local.attached.saturating_sub(1);
            if local.attached == 0 {
                fx.push(Effect::Presence(PresenceCmd::Detached(user)));
            }
        }
        if local.sessions.is_empty() {
            self.remove_user(fx, user);
        }
    }

    fn remove_user(&mut self, fx: &mut Effects, user: UserId) {
        let Some(local) = self.users.get(&user) else {
            return;
        };
        let spaces: Vec<SpaceId> = local.spaces.iter().copied().collect();
        let relations: Vec<Uuid> = local.relations.keys().copied().collect();
        for space in spaces {
            self.leave_space(fx, user, space);
        }
        for row in relations {
            self.set_relation(fx, user, row, None);
        }
        self.users.remove(&user);
        self.profile_ref(fx, user, false);
        fx.push(Effect::Unsubscribe(Topic::user(user)));
    }

    /// The socket of `sid` went away. `end` destroys the session (client close 1000, or a
    /// non-resumable close); otherwise it detaches and stays resumable.
    pub fn detach(&mut self, fx: &mut Effects, sid: Uuid, conn: &Arc<Conn>, end: bool) {
        let Some(session) = self.sessions.get_mut(&sid) else {
            return;
        };
        let mine = session.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn));
        if !mine {
            // Replaced by a resume, or already detached by an overflow.
            if end && session.conn.is_none() {
                self.destroy_session(fx, sid, true);
            }
            return;
        }
        if end {
            self.destroy_session(fx, sid, true);
            return;
        }
        session.conn = None;
        session.detached_at = Some(Instant::now());
        let (user, auth) = (session.user, session.auth);
        if let Some(local) = self.users.get_mut(&user) {
            local.attached = local.attached.saturating_sub(1);
            if local.attached == 0 {
                fx.push(Effect::Presence(PresenceCmd::Detached(user)));
            }
        }
        fx.push(Effect::Registry(RegistryCmd::Detached(sid, user, auth)));
    }

    /// First half of a local resume: the session's owner and auth session.
    pub fn find_for_resume(&self, sid: Uuid, user: UserId) -> LocalResume {
        match self.sessions.get(&sid) {
            None => LocalResume::NotHere,
            Some(s) if s.user != user => LocalResume::Failed(InvalidReason::UserMismatch),
            Some(s) if s.pending.is_some() => LocalResume::Failed(InvalidReason::Unknown),
            Some(s) => LocalResume::Found { auth: s.auth },
        }
    }

    /// Second half: replays after `seq` onto `conn`, then `resumed`; the previous connection,
    /// if any, is closed with 4011.
    pub fn resume_local(
        &mut self,
        fx: &mut Effects,
        sid: Uuid,
        user: UserId,
        seq: u64,
        conn: &Arc<Conn>,
    ) -> Result<u64, InvalidReason> {
        let Some(session) = self.sessions.get_mut(&sid) else {
            return Err(InvalidReason::Unknown);
        };
        if session.user != user || session.pending.is_some() {
            return Err(InvalidReason::Unknown);
        }
        let replay = session.replay_after(seq).ok_or(InvalidReason::SeqOutOfRange)?;
        let was_attached = match session.conn.take() {
            Some(old) => {
                old.close(Close::REPLACED);
                true
            }
            None => false,
        };
        let replayed = push_replay(conn, &replay);
        conn.push(Item::Control(resumed_frame(sid, replayed)));
        session.conn = Some(conn.clone());
        session.detached_at = None;
        let auth = session.auth;
        if !was_attached && let Some(local) = self.users.get_mut(&user) {
            local.attached += 1;
            if local.attached == 1 {
                fx.push(Effect::Presence(PresenceCmd::Attached(user)));
            }
        }
        fx.push(Effect::Registry(RegistryCmd::Attached(sid, user, auth)));
        Ok(replayed)
    }

    /// The owner's side of a take-over (spec §8.5 step 4). Every message received before the
    /// request has been applied: the dispatcher handles them in order.
    fn hand_over(&mut self, fx: &mut Effects, req: &TakeoverRequest) -> TakeoverReply {
        let fail = |reason| TakeoverReply {
            request_id: req.request_id,
            ok: false,
            reason: Some(reason),
            last_seq: 0,
            frames: Vec::new(),
            delivered: Vec::new(),
        };
        let Some(session) = self.sessions.get(&req.session_id) else {
            return fail(InvalidReason::Unknown);
        };
        if session.pending.is_some() || !self.settled(session.user) {
            return fail(InvalidReason::Unknown);
        }
        let Some(entries) = session.replay_after(req.seq) else {
            return fail(InvalidReason::SeqOutOfRange);
        };
        if let Some(conn) = &session.conn {
            conn.close(Close::REPLACED);
        }
        let frames = entries.into_iter().map(WireReplay::from).collect();
        let reply = TakeoverReply {
            request_id: req.request_id,
            ok: true,
            reason: None,
            last_seq: session.seq,
            frames,
            delivered: session.delivered_ids(req.seq),
        };
        let (user, auth) = (session.user, session.auth);
        fx.push(Effect::Registry(RegistryCmd::Moved(
            req.session_id,
            user,
            auth,
            req.from,
        )));
        self.destroy_session(fx, req.session_id, false);
        reply
    }

    /// A stopping instance that has stopped serving: every session it still holds, with its
    /// newest frames, leaves the hub for Redis (its registry entry stays for the next instance).
    /// The sessions are taken without the per-session teardown — the process is about to exit
    /// and tearing 36,000 sessions down one by one took seconds.
    pub fn park_all(&mut self, instance: Uuid) -> Parking {
        let mut parking = Parking::default();
        for (sid, session) in std::mem::take(&mut self.sessions) {
            if session.pending.is_some() {
                continue; // Being taken over from elsewhere: nothing to park yet.
            }
            let frames = session
                .tail(PARK_FRAMES)
                .map(|entry| match entry {
                    Replay::Event { seq, event, .. } => {
                        parking
                            .events
                            .entry(event.id)
                            .or_insert_with(|| event.body().to_string());
                        ParkedFrame::Event(*seq, event.id)
                    }
                    Replay::Resync => ParkedFrame::Resync,
                })
                .collect();
            let parked = ParkedSession {
                instance,
                user: session.user,
                auth: session.auth,
                last_seq: session.seq,
                frames,
            };
            parking.sessions.push((sid, parked));
        }
        self.by_auth.clear();
        parking
    }

    /// Adopts a parked session as a detached session of this instance (at start, before serving):
    /// from now on its events reach its ring, and a resume finds it here. `None` when it is
    /// already held here or one of its frames' events is gone (its client starts afresh).
    pub fn adopt(
        &mut self,
        fx: &mut Effects,
        sid: Uuid,
        parked: ParkedSession,
        bodies: &std::collections::HashMap<Uuid, String>,
    ) -> Option<Added> {
        if self.sessions.contains_key(&sid) {
            return None;
        }
        let entries = parked_entries(&parked.frames, bodies)?;
        let mut session = Session::new(sid, parked.user, parked.auth, None);
        session.restore(parked.last_seq, entries);
        fx.push(Effect::Registry(RegistryCmd::Detached(sid, parked.user, parked.auth)));
        Some(self.add_session(fx, session))
    }

    /// Resumes a parked session into the placeholder `sid` (as a take-over would): `bodies`
    /// holds the parked events its frames refer to.
    pub fn complete_unpark(
        &mut self,
        fx: &mut Effects,
        sid: Uuid,
        parked: ParkedSession,
        bodies: &std::collections::HashMap<Uuid, String>,
        seq: u64,
        conn: &Arc<Conn>,
    ) -> Result<u64, InvalidReason> {
        let entries = parked_entries(&parked.frames, bodies).ok_or(InvalidReason::SeqOutOfRange)?;
        let mut scratch = Session::new(sid, parked.user, parked.auth, None);
        scratch.restore(parked.last_seq, entries);
        let replay = scratch.replay_after(seq).ok_or(InvalidReason::SeqOutOfRange)?;
        let reply = TakeoverReply {
            request_id: Uuid::nil(),
            ok: true,
            reason: None,
            last_seq: parked.last_seq,
            frames: replay.into_iter().map(WireReplay::from).collect(),
            delivered: scratch.delivered_ids(seq),
        };
        self.complete_takeover(fx, sid, reply, conn)
    }

    /// The new owner's side (spec §8.5 step 5): replay what the old owner handed over, then the
    /// live events buffered meanwhile that were not in it.
    pub fn complete_takeover(
        &mut self,
        fx: &mut Effects,
        sid: Uuid,
        reply: TakeoverReply,
        conn: &Arc<Conn>,
    ) -> Result<u64, InvalidReason> {
        let Some(session) = self.sessions.get_mut(&sid) else {
            return Err(InvalidReason::Unknown);
        };
        let Some(pending) = session.pending.take() else {
            return Err(InvalidReason::Unknown);
        };
        let now = Instant::now();
        let mut seen: HashSet<Uuid> = reply.delivered.iter().copied().collect();
        let entries: Vec<Replay> = reply
            .frames
            .into_iter()
            .filter_map(|f| match f {
                WireReplay::Event { seq, id, body } => {
                    seen.insert(id);
                    Event::from_body(id, body).map(|ev| Replay::Event {
                        seq,
                        at: now,
                        event: Arc::new(ev),
                    })
                }
                WireReplay::Resync => Some(Replay::Resync),
            })
            .collect();
        let replayed = push_replay(conn, &entries);
        session.restore(reply.last_seq, entries);
        conn.push(Item::Control(resumed_frame(sid, replayed)));
        session.conn = Some(conn.clone());
        session.detached_at = None;
        if pending.overflowed {
            session.resync(&resync_frame());
        }
        for ev in pending.events.iter().filter(|e| !seen.contains(&e.id)) {
            session.dispatch(ev, now);
        }
        let (user, auth) = (session.user, session.auth);
        if let Some(local) = self.users.get_mut(&user) {
            local.attached += 1;
            if local.attached == 1 {
                fx.push(Effect::Presence(PresenceCmd::Attached(user)));
            }
        }
        fx.push(Effect::Registry(RegistryCmd::Attached(sid, user, auth)));
        Ok(replayed)
    }

    /// A `typing.start` target, checked against the local state (spec §7.4).
    pub fn typing_target(&self, user: UserId, channel: ChannelId) -> Option<TypingTarget> {
        let local = self.users.get(&user)?;
        for space in &local.spaces {
            let Some(view) = self.spaces.get(space).and_then(|e| e.view.as_ref()) else {
                continue;
            };
            if view.has_channel(channel) {
                let needed = Permissions::VIEW_CHANNEL | Permissions::SEND_MESSAGES;
                return view
                    .permissions_in(user, channel)
                    .contains(needed)
                    .then_some(TypingTarget::Space(*space));
            }
        }
        local
            .relations
            .values()
            .find(|r| r.channel == Some(channel) && r.state == RelationState::Friend)
            .map(|r| TypingTarget::Dm(r.other))
    }

    // ----- housekeeping -------------------------------------------------------------------

    /// Expires detached sessions past the resume window, trims attached replay rings, renews
    /// registry entries, and updates the session gauges.
    pub fn housekeeping(&mut self, fx: &mut Effects, window: Duration) {
        // Deliveries of events applied outside `handle` (views and users that finished loading).
        self.count_deliveries();
        let now = Instant::now();
        let expired: Vec<Uuid> = self
            .sessions
            .values()
            .filter(|s| s.pending.is_none() && s.detached_at.is_some_and(|at| now.duration_since(at) >= window))
            .map(|s| s.id)
            .collect();
        for sid in expired {
            self.destroy_session(fx, sid, true);
        }
        let mut attached = 0usize;
        for s in self.sessions.values_mut() {
            s.trim(now);
            if s.is_attached() {
                attached += 1;
            }
        }
        metrics::gauge!("alterego_ws_sessions", "state" => "attached").set(attached as f64);
        metrics::gauge!("alterego_ws_sessions", "state" => "detached").set((self.sessions.len() - attached) as f64);
        if self
            .last_refresh
            .is_none_or(|t| now.duration_since(t) >= super::shared::REFRESH_EVERY)
        {
            self.last_refresh = Some(now);
            let sids: Vec<Uuid> = self
                .sessions
                .values()
                .filter(|s| s.is_attached())
                .map(|s| s.id)
                .collect();
            let users: Vec<UserId> = self
                .users
                .iter()
                .filter(|(_, l)| l.attached > 0)
                .map(|(u, _)| *u)
                .collect();
            fx.push(Effect::Registry(RegistryCmd::Refresh(sids)));
            fx.push(Effect::Presence(PresenceCmd::Refresh(users)));
        }
    }

    /// Graceful shutdown (spec §8.6): every socket closes with 1001; sessions stay resumable.
    pub fn close_all(&mut self, fx: &mut Effects) {
        let sids: Vec<(Uuid, Arc<Conn>)> = self
            .sessions
            .values()
            .filter_map(|s| s.conn.clone().map(|c| (s.id, c)))
            .collect();
        for (sid, conn) in sids {
            conn.close(Close::GOING_AWAY);
            self.detach(fx, sid, &conn, false);
        }
    }

    pub fn is_attached(&self, sid: Uuid) -> Option<bool> {
        self.sessions.get(&sid).map(Session::is_attached)
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Fails a user whose state cannot be loaded: its sessions close with 4000.
    fn fail_user(&mut self, fx: &mut Effects, user: UserId) {
        let Some(local) = self.users.get_mut(&user) else {
            return;
        };
        for w in local.waiters.drain(..) {
            let _ = w.send(false);
        }
        for sid in local.sessions.clone() {
            if let Some(conn) = self.sessions.get(&sid).and_then(|s| s.conn.clone()) {
                conn.close(Close::UNKNOWN);
            }
            self.destroy_session(fx, sid, true);
        }
    }
}

/// A local user's state as read from the database: spaces, and relationship rows by id.
pub(super) type UserState = (Vec<SpaceId>, Vec<(Uuid, Relation)>);

impl Hub {
    // ----- loads --------------------------------------------------------------------------

    /// A user's state was read (`None`: it could not be). Returns whether the load is still
    /// current and the runtime should wait for the new subscriptions, then call
    /// [`Hub::user_subscribed`].
    pub fn user_loaded(&mut self, fx: &mut Effects, user: UserId, generation: u64, loaded: Option<UserState>) -> bool {
        let current: Vec<SpaceId> = match self.users.get(&user) {
            Some(l) if l.generation == generation => l.spaces.iter().copied().collect(),
            _ => return false,
        };
        let Some((spaces, relations)) = loaded else {
            self.fail_user(fx, user);
            return false;
        };
        // Reconcile spaces and relations with the snapshot.
        let wanted: HashSet<SpaceId> = spaces.into_iter().collect();
        for s in current.iter().filter(|s| !wanted.contains(s)) {
            self.leave_space(fx, user, *s);
        }
        for s in wanted {
            self.join_space(fx, user, s);
        }
        let rows: HashMap<Uuid, Relation> = relations.into_iter().collect();
        let old: Vec<Uuid> = self
            .users
            .get(&user)
            .map(|l| l.relations.keys().copied().collect())
            .unwrap_or_default();
        for row in old.iter().filter(|r| !rows.contains_key(r)) {
            self.set_relation(fx, user, *row, None);
        }
        for (row, r) in rows {
            self.set_relation(fx, user, row, Some(r));
        }
        // Messages of the user's topic that arrived meanwhile, in order.
        let pending = self
            .users
            .get_mut(&user)
            .and_then(|l| l.pending.take())
            .unwrap_or_default();
        for payload in pending {
            self.user_event(fx, user, &payload);
        }
        true
    }

    /// The space subscriptions of a loaded user are in effect: its sessions may get `ready`
    /// once its views are loaded too.
    pub fn user_subscribed(&mut self, user: UserId, generation: u64) {
        if let Some(local) = self.users.get_mut(&user)
            && local.generation == generation
        {
            local.loaded = true;
            self.check_ready(user);
        }
    }

    /// A space view was read: `Some(None)` when the space no longer exists, `None` when it could
    /// not be read.
    pub fn view_loaded(
        &mut self,
        fx: &mut Effects,
        space: SpaceId,
        generation: u64,
        loaded: Option<Option<SpaceView>>,
    ) {
        let Some(entry) = self.spaces.get(&space) else {
            return;
        };
        if entry.generation != generation {
            return;
        }
        let audience: Vec<UserId> = entry.audience.iter().copied().collect();
        match loaded {
            Some(Some(view)) => {
                self.set_view(fx, space, view);
                let pending = self
                    .spaces
                    .get_mut(&space)
                    .and_then(|e| e.pending.take())
                    .unwrap_or_default();
                for payload in pending {
                    self.space_event(fx, space, &payload);
                }
                for user in audience {
                    self.check_ready(user);
                }
            }
            Some(None) => {
                // Deleted before it could be loaded: nobody is a member any more.
                for user in audience {
                    self.leave_space(fx, user, space);
                    self.check_ready(user);
                }
            }
            None => {
                for user in audience {
                    self.fail_user(fx, user);
                }
            }
        }
    }
}

fn resumed_frame(sid: Uuid, replayed: u64) -> Utf8Bytes {
    Utf8Bytes::from(protocol::control(
        "resumed",
        &protocol::ResumedPayload {
            session_id: sid,
            replayed,
        },
    ))
}

/// Queues replayed frames with their original `seq`; returns how many events were replayed.
fn push_replay(conn: &Conn, entries: &[Replay]) -> u64 {
    let mut n = 0;
    for e in entries {
        match e {
            Replay::Event { seq, event, .. } => {
                conn.push(Item::Event(*seq, event.clone()));
                n += 1;
            }
            Replay::Resync => conn.push(Item::Control(resync_frame())),
        }
    }
    n
}

#[cfg(test)]
mod tests {
    //! The hub's transitions, without sockets, Redis or a database: events go in through
    //! `handle`, loads complete through `user_loaded`/`view_loaded`, and what comes out is the
    //! effects and the frames queued on each session's connection.

    use serde_json::{Value, json};

    use super::*;
    use crate::functions::bus::encode;
    use crate::functions::ids::{RoleId, SessionId};
    use crate::gateway::session::Close;

    struct World {
        hub: Hub,
        space: SpaceId,
        everyone: RoleId,
        general: ChannelId,
        secret: ChannelId,
        owner: UserId,
    }

    /// A user with one attached session on this instance.
    struct Local {
        id: UserId,
        sid: Uuid,
        auth: SessionId,
        conn: Arc<Conn>,
    }

    fn publish(hub: &mut Hub, topic: Topic, op: Op, data: Value) -> Effects {
        let mut fx = Effects::new();
        hub.handle(&mut fx, &topic, encode(op.name(), &data).unwrap());
        fx
    }

    /// The ops (and data) queued on a connection since the last call.
    fn frames(conn: &Conn) -> Vec<(String, Value)> {
        let (items, _) = conn.take();
        items
            .iter()
            .map(|i| {
                let v: Value = serde_json::from_str(i.text().as_str()).unwrap();
                (v["op"].as_str().unwrap().to_string(), v["data"].clone())
            })
            .collect()
    }

    fn ops(conn: &Conn) -> Vec<String> {
        frames(conn).into_iter().map(|(op, _)| op).collect()
    }

    fn raw(v: Value) -> Box<RawValue> {
        RawValue::from_string(v.to_string()).unwrap()
    }

    fn world() -> World {
        World {
            hub: Hub::new(Uuid::now_v7(), 1000),
            space: SpaceId::new(),
            everyone: RoleId::new(),
            general: ChannelId::new(),
            secret: ChannelId::new(),
            owner: UserId::new(),
        }
    }

    impl World {
        /// The space as the database would give it: the owner and `members`, two channels.
        fn view(&self, members: &[UserId]) -> SpaceView {
            let mut v = SpaceView::for_tests(self.owner, self.everyone);
            for m in std::iter::once(&self.owner).chain(members) {
                v.apply(Op::MemberCreated, &raw(json!({"userId": m, "roleIds": []})));
            }
            for c in [self.general, self.secret] {
                v.apply(Op::ChannelCreated, &raw(json!({"id": c})));
            }
            v
        }

        /// Connects `id` and completes its loads with `spaces`; a space view it requests is
        /// loaded with `members` (and `id`).
        fn connect(&mut self, id: UserId, spaces: &[SpaceId], members: &[UserId]) -> Local {
            let (sid, auth, conn) = (Uuid::now_v7(), SessionId::new(), Conn::new());
            let mut fx = Effects::new();
            let added = self
                .hub
                .add_session(&mut fx, Session::new(sid, id, Some(auth), Some(conn.clone())));
            let generation = load_user_requested(&fx, id).expect("a user load");
            assert!(
                fx.iter()
                    .any(|e| matches!(e, Effect::Subscribe(t) if *t == Topic::session(auth)))
            );
            assert!(
                fx.iter()
                    .any(|e| matches!(e, Effect::Presence(PresenceCmd::Attached(u)) if *u == id))
            );
            let mut fx = Effects::new();
            assert!(
                self.hub
                    .user_loaded(&mut fx, id, generation, Some((spaces.to_vec(), Vec::new())))
            );
            self.hub.user_subscribed(id, generation);
            for e in fx {
                if let Effect::LoadView {
                    space,
                    generation,
                    subscribe,
                } = e
                {
                    assert!(subscribe);
                    let mut everyone: Vec<UserId> = members.to_vec();
                    everyone.push(id);
                    let view = self.view(&everyone);
                    self.hub
                        .view_loaded(&mut Effects::new(), space, generation, Some(Some(view)));
                }
            }
            let mut ready = added.ready.expect("a new user waits for its state");
            assert_eq!(
                ready.try_recv(),
                Ok(true),
                "ready once the user and its views are loaded"
            );
            Local { id, sid, auth, conn }
        }

        fn message(&mut self, channel: ChannelId) -> Effects {
            let data = json!({"id": Uuid::now_v7(), "channelId": channel, "content": "hi"});
            publish(&mut self.hub, Topic::space(self.space.0), Op::MessageCreated, data)
        }
    }

    fn load_user_requested(fx: &Effects, user: UserId) -> Option<u64> {
        fx.iter().find_map(|e| match e {
            Effect::LoadUser {
                user: u,
                generation,
                subscribe: true,
            } if *u == user => Some(*generation),
            _ => None,
        })
    }

    #[test]
    fn a_new_session_subscribes_and_loads_its_user_then_its_spaces() {
        let mut w = world();
        let (id, sid, auth, conn) = (UserId::new(), Uuid::now_v7(), SessionId::new(), Conn::new());
        let mut fx = Effects::new();
        let added = w
            .hub
            .add_session(&mut fx, Session::new(sid, id, Some(auth), Some(conn)));
        assert!(
            fx.iter()
                .any(|e| matches!(e, Effect::Subscribe(t) if *t == Topic::profile(id)))
        );
        assert!(fx.iter().any(|e| matches!(e, Effect::Registry(RegistryCmd::Attached(s, u, Some(a))) if *s == sid && *u == id && *a == auth)));
        let generation = load_user_requested(&fx, id).unwrap();
        let mut fx = Effects::new();
        assert!(
            w.hub
                .user_loaded(&mut fx, id, generation, Some((vec![w.space], Vec::new())))
        );
        // The space's view is loaded after its topic is subscribed.
        assert!(
            fx.iter()
                .any(|e| matches!(e, Effect::LoadView { space, subscribe: true, .. } if *space == w.space))
        );
        w.hub.user_subscribed(id, generation);
        let mut ready = added.ready.unwrap();
        assert!(ready.try_recv().is_err(), "not ready before the view is loaded");
        // A stale load (an older generation) changes nothing.
        assert!(!w.hub.user_loaded(
            &mut Effects::new(),
            id,
            generation + 100,
            Some((Vec::new(), Vec::new()))
        ));
        // A load that failed closes the user's sessions with 4000.
        let other = Conn::new();
        let (u2, s2) = (UserId::new(), Uuid::now_v7());
        let mut fx = Effects::new();
        w.hub
            .add_session(&mut fx, Session::new(s2, u2, None, Some(other.clone())));
        let g2 = load_user_requested(&fx, u2).unwrap();
        assert!(!w.hub.user_loaded(&mut Effects::new(), u2, g2, None));
        assert_eq!(other.closing().map(|c| c.code), Some(Close::UNKNOWN.code));
        assert_eq!(w.hub.is_attached(s2), None);
    }

    #[test]
    fn members_receive_space_events_and_outsiders_do_not() {
        let mut w = world();
        let space = w.space;
        let bob = w.connect(UserId::new(), &[], &[]);
        let alice = w.connect(UserId::new(), &[space], &[bob.id]);
        w.message(w.general);
        assert_eq!(ops(&alice.conn), [Op::MessageCreated.name()]);
        assert!(ops(&bob.conn).is_empty(), "bob has no session in the space's audience");
        // A member event reaches members.
        publish(
            &mut w.hub,
            Topic::space(space.0),
            Op::RoleCreated,
            json!({"id": RoleId::new(), "permissions": "0"}),
        );
        assert_eq!(ops(&alice.conn), [Op::RoleCreated.name()]);
    }

    #[test]
    fn an_op_the_server_does_not_publish_reaches_nobody() {
        let mut w = world();
        let space = w.space;
        let alice = w.connect(UserId::new(), &[space], &[]);
        let data = json!({"id": Uuid::now_v7(), "channelId": w.general});
        publish(&mut w.hub, Topic::space(space.0), Op::MessageCreated, data.clone());
        assert_eq!(
            ops(&alice.conn),
            [Op::MessageCreated.name()],
            "the known op is delivered"
        );
        // Before the ops were typed, an unlisted op on a space topic went to every member.
        let mut fx = Effects::new();
        w.hub.handle(
            &mut fx,
            &Topic::space(space.0),
            encode("messages.onCreated", &data).unwrap(),
        );
        w.hub
            .handle(&mut fx, &Topic::user(alice.id), encode("test.anything", &data).unwrap());
        w.hub.handle(
            &mut fx,
            &Topic::profile(alice.id),
            encode("test.anything", &data).unwrap(),
        );
        assert!(ops(&alice.conn).is_empty());
        assert!(fx.is_empty());
    }

    #[test]
    fn a_kicked_or_banned_member_receives_nothing_more_and_the_space_is_dropped() {
        let mut w = world();
        let space = w.space;
        let bob_id = UserId::new();
        let alice = w.connect(UserId::new(), &[space], &[bob_id]);
        let bob = w.connect(bob_id, &[space], &[]);
        // Removal (kick and ban publish the same events): members.onDelete to the space, which
        // the remaining members receive...
        publish(
            &mut w.hub,
            Topic::space(space.0),
            Op::MemberDeleted,
            json!({"userId": alice.id}),
        );
        assert_eq!(ops(&bob.conn), [Op::MemberDeleted.name()]);
        assert!(ops(&alice.conn).is_empty(), "no longer a member when it is delivered");
        w.message(w.general);
        assert_eq!(ops(&bob.conn), [Op::MessageCreated.name()]);
        assert!(ops(&alice.conn).is_empty(), "no message after the removal");
        // ... then spaces.onDelete to the member, who leaves the audience.
        let fx = publish(
            &mut w.hub,
            Topic::user(alice.id),
            Op::SpaceDeleted,
            json!({"id": space}),
        );
        assert_eq!(ops(&alice.conn), [Op::SpaceDeleted.name()]);
        assert!(fx.is_empty(), "bob still needs the space");
        // The last local member leaving drops the view and its subscription.
        publish(
            &mut w.hub,
            Topic::space(space.0),
            Op::MemberDeleted,
            json!({"userId": bob.id}),
        );
        let fx = publish(&mut w.hub, Topic::user(bob.id), Op::SpaceDeleted, json!({"id": space}));
        assert!(
            fx.iter()
                .any(|e| matches!(e, Effect::Unsubscribe(t) if *t == Topic::space(space.0)))
        );
        // Joining again: spaces.onCreate subscribes and loads the view anew.
        let fx = publish(
            &mut w.hub,
            Topic::user(alice.id),
            Op::SpaceCreated,
            json!({"id": space}),
        );
        assert_eq!(ops(&alice.conn), [Op::SpaceCreated.name()]);
        assert!(
            fx.iter()
                .any(|e| matches!(e, Effect::LoadView { space: s, subscribe: true, .. } if *s == space))
        );
    }

    #[test]
    fn overrides_and_roles_hide_and_reveal_a_channel() {
        let mut w = world();
        let space = w.space;
        let alice = w.connect(UserId::new(), &[space], &[]);
        let (everyone, secret) = (w.everyone, w.secret);
        // @everyone denied VIEW_CHANNEL on the secret channel.
        let deny = Permissions::VIEW_CHANNEL.to_decimal();
        let hide = json!({"channelId": secret, "targetType": "ROLE", "targetId": everyone, "allow": "0", "deny": deny});
        publish(&mut w.hub, Topic::space(space.0), Op::OverrideSet, hide);
        assert!(ops(&alice.conn).is_empty(), "internal events never reach a client");
        w.message(secret);
        assert!(ops(&alice.conn).is_empty(), "hidden by the override");
        w.message(w.general);
        assert_eq!(ops(&alice.conn), [Op::MessageCreated.name()]);
        // A role that allows VIEW_CHANNEL there reveals it once alice holds it.
        let mods = RoleId::new();
        publish(
            &mut w.hub,
            Topic::space(space.0),
            Op::RoleCreated,
            json!({"id": mods, "permissions": "0", "position": 1}),
        );
        let allow = json!({"channelId": secret, "targetType": "ROLE", "targetId": mods, "allow": deny, "deny": "0"});
        publish(&mut w.hub, Topic::space(space.0), Op::OverrideSet, allow);
        publish(
            &mut w.hub,
            Topic::space(space.0),
            Op::MemberUpdated,
            json!({"userId": alice.id, "roleIds": [mods]}),
        );
        frames(&alice.conn);
        w.message(secret);
        assert_eq!(ops(&alice.conn), [Op::MessageCreated.name()], "revealed by the role");
        // Deleting the role hides it again; deleting the @everyone override reveals it.
        publish(&mut w.hub, Topic::space(space.0), Op::RoleDeleted, json!({"id": mods}));
        frames(&alice.conn);
        w.message(secret);
        assert!(ops(&alice.conn).is_empty(), "hidden again without the role");
        publish(
            &mut w.hub,
            Topic::space(space.0),
            Op::OverrideDeleted,
            json!({"channelId": secret, "targetId": everyone}),
        );
        w.message(secret);
        assert_eq!(ops(&alice.conn), [Op::MessageCreated.name()]);
        // A deleted channel's event reaches those who could see it, before the view forgets it.
        publish(
            &mut w.hub,
            Topic::space(space.0),
            Op::ChannelDeleted,
            json!({"id": secret}),
        );
        assert_eq!(ops(&alice.conn), [Op::ChannelDeleted.name()]);
        w.message(secret);
        assert!(ops(&alice.conn).is_empty(), "the channel is gone");
    }

    #[test]
    fn a_space_update_shows_each_member_only_the_channels_they_may_view() {
        let mut w = world();
        let space = w.space;
        let alice = w.connect(UserId::new(), &[space], &[]);
        let deny = Permissions::VIEW_CHANNEL.to_decimal();
        let hide =
            json!({"channelId": w.secret, "targetType": "MEMBER", "targetId": alice.id, "allow": "0", "deny": deny});
        publish(&mut w.hub, Topic::space(space.0), Op::OverrideSet, hide);
        let ext = json!({"id": space, "channels": [{"id": w.general}, {"id": w.secret}]});
        publish(&mut w.hub, Topic::space(space.0), Op::SpaceUpdated, ext);
        let got = frames(&alice.conn);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1["channels"], json!([{"id": w.general}]));
    }

    #[test]
    fn dm_events_and_typing_follow_the_relationship() {
        let mut w = world();
        let alice = w.connect(UserId::new(), &[], &[]);
        let carol = w.connect(UserId::new(), &[], &[]);
        let (bob, dm, row) = (UserId::new(), ChannelId::new(), Uuid::now_v7());
        assert!(w.hub.typing_target(alice.id, dm).is_none(), "no relationship yet");
        let friend = json!({"id": row, "relationId": bob, "state": "FRIEND", "channelId": dm});
        let fx = publish(&mut w.hub, Topic::user(alice.id), Op::RelationUpdated, friend);
        assert_eq!(ops(&alice.conn), [Op::RelationUpdated.name()]);
        // Bob's profile is now in alice's audience.
        assert!(
            fx.iter()
                .any(|e| matches!(e, Effect::Subscribe(t) if *t == Topic::profile(bob)))
        );
        assert!(matches!(w.hub.typing_target(alice.id, dm), Some(TypingTarget::Dm(u)) if u == bob));
        // A DM message goes to the participants' user topics: alice gets hers, carol nothing.
        let message = json!({"id": Uuid::now_v7(), "channelId": dm, "content": "hi"});
        publish(&mut w.hub, Topic::user(alice.id), Op::MessageCreated, message);
        assert_eq!(ops(&alice.conn), [Op::MessageCreated.name()]);
        assert!(ops(&carol.conn).is_empty());
        // Bob's profile updates reach alice; his presence too.
        publish(&mut w.hub, Topic::profile(bob), Op::UserUpdated, json!({"id": bob}));
        publish(
            &mut w.hub,
            Topic::profile(bob),
            Op::PresenceUpdated,
            json!({"userId": bob, "status": "ONLINE"}),
        );
        assert_eq!(ops(&alice.conn), [Op::UserUpdated.name(), Op::PresenceUpdated.name()]);
        assert!(ops(&carol.conn).is_empty());
        // Unfriended: the row goes, and with it typing and the profile subscription.
        let fx = publish(
            &mut w.hub,
            Topic::user(alice.id),
            Op::RelationDeleted,
            json!({"id": row}),
        );
        assert!(
            fx.iter()
                .any(|e| matches!(e, Effect::Unsubscribe(t) if *t == Topic::profile(bob)))
        );
        assert!(w.hub.typing_target(alice.id, dm).is_none());
    }

    #[test]
    fn a_revoked_session_is_closed_with_4006_and_forgotten() {
        let mut w = world();
        let alice = w.connect(UserId::new(), &[], &[]);
        let fx = publish(
            &mut w.hub,
            Topic::session(alice.auth),
            Op::SessionRevoked,
            json!({"userId": alice.id}),
        );
        assert_eq!(alice.conn.closing().map(|c| c.code), Some(Close::INVALIDATED.code));
        assert_eq!(w.hub.is_attached(alice.sid), None);
        assert_eq!(w.hub.session_count(), 0);
        assert!(
            fx.iter()
                .any(|e| matches!(e, Effect::Registry(RegistryCmd::Remove(s)) if *s == alice.sid))
        );
        assert!(
            fx.iter()
                .any(|e| matches!(e, Effect::Presence(PresenceCmd::Detached(u)) if *u == alice.id))
        );
        assert!(
            fx.iter()
                .any(|e| matches!(e, Effect::Unsubscribe(t) if *t == Topic::session(alice.auth)))
        );
        assert!(
            fx.iter()
                .any(|e| matches!(e, Effect::Unsubscribe(t) if *t == Topic::user(alice.id)))
        );
    }

    #[test]
    fn a_detached_session_keeps_its_events_for_a_resume_until_the_window_passes() {
        let mut w = world();
        let space = w.space;
        let alice = w.connect(UserId::new(), &[space], &[]);
        for _ in 0..3 {
            w.message(w.general);
        }
        let got = alice.conn.take().0;
        let seqs: Vec<u64> = got
            .iter()
            .map(|i| {
                serde_json::from_str::<Value>(i.text().as_str()).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(seqs, [1, 2, 3]);
        // The socket goes away without a normal close: detached, resumable.
        let mut fx = Effects::new();
        w.hub.detach(&mut fx, alice.sid, &alice.conn, false);
        assert_eq!(w.hub.is_attached(alice.sid), Some(false));
        assert!(
            fx.iter()
                .any(|e| matches!(e, Effect::Presence(PresenceCmd::Detached(u)) if *u == alice.id))
        );
        assert!(
            fx.iter()
                .any(|e| matches!(e, Effect::Registry(RegistryCmd::Detached(s, ..)) if *s == alice.sid))
        );
        w.message(w.general);
        // Resume after seq 2 onto a new connection: 3 and 4 are replayed, then `resumed`.
        assert!(matches!(
            w.hub.find_for_resume(alice.sid, alice.id),
            LocalResume::Found { .. }
        ));
        assert!(matches!(
            w.hub.find_for_resume(alice.sid, UserId::new()),
            LocalResume::Failed(InvalidReason::UserMismatch)
        ));
        let again = Conn::new();
        let mut fx = Effects::new();
        let replayed = w.hub.resume_local(&mut fx, alice.sid, alice.id, 2, &again).unwrap();
        assert_eq!(replayed, 2);
        assert_eq!(
            ops(&again),
            [Op::MessageCreated.name(), Op::MessageCreated.name(), "resumed"]
        );
        assert!(
            fx.iter()
                .any(|e| matches!(e, Effect::Presence(PresenceCmd::Attached(u)) if *u == alice.id))
        );
        assert!(
            fx.iter()
                .any(|e| matches!(e, Effect::Registry(RegistryCmd::Attached(s, ..)) if *s == alice.sid))
        );
        // A resume from a seq no longer held fails.
        assert!(matches!(
            w.hub
                .resume_local(&mut Effects::new(), alice.sid, alice.id, 99, &Conn::new()),
            Err(InvalidReason::SeqOutOfRange)
        ));
        // Detached past the resume window: housekeeping forgets the session.
        w.hub.detach(&mut Effects::new(), alice.sid, &again, false);
        let mut fx = Effects::new();
        w.hub.housekeeping(&mut fx, Duration::ZERO);
        assert_eq!(w.hub.is_attached(alice.sid), None);
        assert!(
            fx.iter()
                .any(|e| matches!(e, Effect::Registry(RegistryCmd::Remove(s)) if *s == alice.sid))
        );
        assert!(
            fx.iter()
                .any(|e| matches!(e, Effect::Unsubscribe(t) if *t == Topic::space(space.0)))
        );
    }

    #[test]
    fn a_session_that_closes_normally_ends() {
        let mut w = world();
        let alice = w.connect(UserId::new(), &[], &[]);
        let mut fx = Effects::new();
        w.hub.detach(&mut fx, alice.sid, &alice.conn, true);
        assert_eq!(w.hub.is_attached(alice.sid), None);
        assert!(
            fx.iter()
                .any(|e| matches!(e, Effect::Registry(RegistryCmd::Remove(s)) if *s == alice.sid))
        );
    }

    #[test]
    fn a_takeover_request_hands_the_session_over_and_replies() {
        let mut w = world();
        let space = w.space;
        let alice = w.connect(UserId::new(), &[space], &[]);
        w.message(w.general);
        w.message(w.general);
        let from = Uuid::now_v7();
        let request = TakeoverRequest {
            request_id: Uuid::now_v7(),
            session_id: alice.sid,
            seq: 1,
            from,
        };
        let instance = w.hub.instance;
        let payload = encode(super::super::TAKEOVER_REQUEST, &request).unwrap();
        let mut fx = Effects::new();
        w.hub.handle(&mut fx, &Topic::instance(instance), payload);
        assert_eq!(alice.conn.closing().map(|c| c.code), Some(Close::REPLACED.code));
        let reply = fx.iter().find_map(|e| match e {
            Effect::Reply(to, reply) if *to == from => Some(reply),
            _ => None,
        });
        let reply = reply.expect("a reply to the requesting instance");
        assert!(reply.ok);
        assert_eq!(reply.last_seq, 2);
        assert_eq!(reply.frames.len(), 1, "the events after seq 1");
        assert!(
            fx.iter().any(
                |e| matches!(e, Effect::Registry(RegistryCmd::Moved(s, _, _, to)) if *s == alice.sid && *to == from)
            )
        );
        assert_eq!(w.hub.is_attached(alice.sid), None, "the session left this instance");
        // A request on another instance's topic is not ours.
        let mut fx = Effects::new();
        let other = encode(super::super::TAKEOVER_REQUEST, &request).unwrap();
        w.hub.handle(&mut fx, &Topic::instance(Uuid::now_v7()), other);
        assert!(fx.is_empty());
    }
}
