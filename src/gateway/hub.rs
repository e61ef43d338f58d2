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
use super::{Inner, PresenceCmd, RegistryCmd};
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

#[derive(Debug, Clone, Copy)]
struct Relation {
    other: UserId,
    state: RelationState,
    channel: Option<ChannelId>,
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

#[derive(Default)]
pub(super) struct Hub {
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

/// A registered session: resolves once its subscriptions are in effect and its user's state is
/// loaded (`ready: None` when it already is).
pub(super) struct Added {
    pub ready: Option<tokio::sync::oneshot::Receiver<bool>>,
    pub subscribed: Subscribed,
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
        | Op::SessionRevoked => Recipients::Nobody,
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
    fn next_generation(&mut self) -> u64 {
        self.generation += 1;
        self.generation
    }

    // ----- the bus stream -----------------------------------------------------------------

    pub fn handle(&mut self, inner: &Arc<Inner>, topic: &Topic, payload: Bytes) {
        match topic.kind() {
            TopicKind::Space(id) => self.on_space(inner, SpaceId(id), payload),
            TopicKind::User(user) => self.on_user(inner, user, payload),
            TopicKind::Profile(user) => self.on_profile(inner, user, &payload),
            TopicKind::Session(auth) => self.on_auth_session(inner, auth, &payload),
            TopicKind::Instance(id) if id == inner.instance => self.on_control(inner, &payload),
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

    fn on_space(&mut self, inner: &Arc<Inner>, space: SpaceId, payload: Bytes) {
        let Some(entry) = self.spaces.get_mut(&space) else {
            return;
        };
        if let Some(pending) = &mut entry.pending {
            pending.push(payload);
            return;
        }
        self.space_event(inner, space, &payload);
    }

    /// Applies one event of a loaded space view, then delivers it to the members it is for.
    fn space_event(&mut self, inner: &Arc<Inner>, space: SpaceId, payload: &[u8]) {
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
            self.profile_ref(inner, u, true);
        }
        if let Some(u) = change.removed {
            self.unindex_member(inner, space, u);
        }
        let now = Instant::now();
        for (user, ev) in &deliveries {
            self.deliver(inner, *user, ev, now);
        }
        // The space is gone: every local member leaves it.
        if op == Op::SpaceDeleted {
            let audience: Vec<UserId> = self
                .spaces
                .get(&space)
                .map(|e| e.audience.iter().copied().collect())
                .unwrap_or_default();
            for user in audience {
                self.leave_space(inner, user, space);
            }
        }
    }

    fn on_user(&mut self, inner: &Arc<Inner>, user: UserId, payload: Bytes) {
        let Some(local) = self.users.get_mut(&user) else {
            return;
        };
        if let Some(pending) = &mut local.pending {
            pending.push(payload);
            return;
        }
        self.user_event(inner, user, &payload);
    }

    fn user_event(&mut self, inner: &Arc<Inner>, user: UserId, payload: &[u8]) {
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
                    self.join_space(inner, user, SpaceId(s.id));
                }
                self.deliver(inner, user, &ev, Instant::now());
            }
            Op::SpaceDeleted => {
                self.deliver(inner, user, &ev, Instant::now());
                if let Some(s) = parse::<IdRef>(head.data) {
                    self.leave_space(inner, user, SpaceId(s.id));
                }
            }
            Op::RelationCreated | Op::RelationUpdated => {
                if let Some(row) = parse::<RelationRow>(head.data) {
                    self.set_relation(
                        inner,
                        user,
                        row.id,
                        Some(Relation {
                            other: row.relation_id,
                            state: row.state,
                            channel: row.channel_id,
                        }),
                    );
                }
                self.deliver(inner, user, &ev, Instant::now());
            }
            Op::RelationDeleted => {
                if let Some(row) = parse::<IdRef>(head.data) {
                    self.set_relation(inner, user, row.id, None);
                }
                self.deliver(inner, user, &ev, Instant::now());
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
            | Op::PresenceUpdated => self.deliver(inner, user, &ev, Instant::now()),
            Op::OverrideSet | Op::OverrideDeleted | Op::SessionRevoked => {}
        }
    }

    /// `users.onUpdate` and `presence.onUpdate` of `subject`: its profile audience (spec §7.8),
    /// computed from local views and relations; each local user at most once.
    fn on_profile(&mut self, inner: &Arc<Inner>, subject: UserId, payload: &[u8]) {
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
            | Op::OverrideDeleted => return,
        };
        let mut recipients: HashSet<UserId> = HashSet::default();
        let limit = match presence {
            true if inner.config.presence_space_limit > 0 => inner.config.presence_space_limit,
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
            self.deliver(inner, user, &ev, now);
        }
    }

    /// `sessions.revoked`: every socket of that auth session is closed with 4006 (spec §6.2).
    fn on_auth_session(&mut self, inner: &Arc<Inner>, auth: SessionId, payload: &[u8]) {
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
            self.destroy_session(inner, sid, true);
        }
    }

    fn on_control(&mut self, inner: &Arc<Inner>, payload: &[u8]) {
        let Some(head) = Published::parse(payload) else {
            return;
        };
        match head.op.as_ref() {
            "takeover.request" => {
                if let Some(req) = parse::<TakeoverRequest>(head.data) {
                    let reply = self.hand_over(inner, &req);
                    let bus = inner.bus.clone();
                    tokio::spawn(async move {
                        bus.publish(&Topic::instance(req.from), "takeover.reply", &reply).await;
                    });
                }
            }
            "takeover.reply" => {
                if let Ok(reply) = serde_json::from_str::<TakeoverReply>(head.data.get()) {
                    let waiter = inner
                        .takeovers
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&reply.request_id);
                    if let Some(w) = waiter {
                        let _ = w.send(reply);
                    }
                }
            }
            _ => {}
        }
    }

    /// The bus lost messages (spec §8.4): every session is told to resync, and all state is
    /// reloaded from the database on top of the (still active) subscriptions.
    pub fn resync(&mut self, inner: &Arc<Inner>) {
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
                tokio::spawn(load_user(inner.clone(), user, generation, None));
            }
        }
        let spaces: Vec<SpaceId> = self.spaces.keys().copied().collect();
        for space in spaces {
            let generation = self.next_generation();
            if let Some(entry) = self.spaces.get_mut(&space) {
                entry.generation = generation;
                entry.pending.get_or_insert_with(Vec::new);
                tokio::spawn(load_view(inner.clone(), space, generation, None));
            }
        }
    }

    // ----- delivery -----------------------------------------------------------------------

    /// Dispatches one event to every session of a local user.
    fn deliver(&mut self, inner: &Arc<Inner>, user: UserId, ev: &Arc<Event>, now: Instant) {
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
                    let _ = inner.presence.send(PresenceCmd::Detached(user));
                }
                let _ = inner.registry.send(RegistryCmd::Detached(*sid, user, session.auth));
            }
        }
        self.delivered += delivered;
    }

    // ----- subscriptions and indexes ------------------------------------------------------

    fn profile_ref(&mut self, inner: &Arc<Inner>, user: UserId, add: bool) {
        if add {
            let n = self.profiles.entry(user).or_insert(0);
            *n += 1;
            if *n == 1 {
                drop(inner.bus.subscribe_now(&Topic::profile(user)));
            }
        } else if let Some(n) = self.profiles.get_mut(&user) {
            *n -= 1;
            if *n == 0 {
                self.profiles.remove(&user);
                inner.bus.unsubscribe_now(&Topic::profile(user));
            }
        }
    }

    fn unindex_member(&mut self, inner: &Arc<Inner>, space: SpaceId, user: UserId) {
        if let Some(set) = self.member_of.get_mut(&user) {
            set.remove(&space);
            if set.is_empty() {
                self.member_of.remove(&user);
            }
        }
        self.profile_ref(inner, user, false);
    }

    /// A local user is (now) a member of `space`: joins its audience, creating and loading the
    /// view when this instance has none.
    fn join_space(&mut self, inner: &Arc<Inner>, user: UserId, space: SpaceId) {
        let Some(local) = self.users.get_mut(&user) else {
            return;
        };
        if !local.spaces.insert(space) {
            return;
        }
        if !self.spaces.contains_key(&space) {
            let generation = self.next_generation();
            let subscribed = inner.bus.subscribe_now(&Topic::space(space.0));
            self.spaces.insert(
                space,
                SpaceEntry {
                    audience: HashSet::default(),
                    view: None,
                    pending: Some(Vec::new()),
                    generation,
                },
            );
            tokio::spawn(load_view(inner.clone(), space, generation, Some(Box::pin(subscribed))));
        }
        if let Some(entry) = self.spaces.get_mut(&space) {
            entry.audience.insert(user);
        }
    }

    fn leave_space(&mut self, inner: &Arc<Inner>, user: UserId, space: SpaceId) {
        if let Some(local) = self.users.get_mut(&user) {
            local.spaces.remove(&space);
        }
        let Some(entry) = self.spaces.get_mut(&space) else {
            return;
        };
        entry.audience.remove(&user);
        if entry.audience.is_empty() {
            self.drop_space(inner, space);
        }
    }

    fn drop_space(&mut self, inner: &Arc<Inner>, space: SpaceId) {
        let Some(entry) = self.spaces.remove(&space) else {
            return;
        };
        inner.bus.unsubscribe_now(&Topic::space(space.0));
        if let Some(view) = entry.view {
            for member in view.members() {
                self.unindex_member(inner, space, member);
            }
        }
    }

    /// Replaces a loaded view, keeping indexes and profile subscriptions in step.
    fn set_view(&mut self, inner: &Arc<Inner>, space: SpaceId, view: SpaceView) {
        let Some(entry) = self.spaces.get_mut(&space) else {
            return;
        };
        let old: HashSet<UserId> = entry.view.as_ref().map(|v| v.members().collect()).unwrap_or_default();
        let new: HashSet<UserId> = view.members().collect();
        entry.view = Some(view);
        for u in new.difference(&old) {
            self.member_of.entry(*u).or_default().insert(space);
            self.profile_ref(inner, *u, true);
        }
        for u in old.difference(&new) {
            self.unindex_member(inner, space, *u);
        }
    }

    fn set_relation(&mut self, inner: &Arc<Inner>, user: UserId, row: Uuid, relation: Option<Relation>) {
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
            self.profile_ref(inner, other, false);
        }
        if let Some(other) = now {
            self.partners.entry(other).or_default().insert(user);
            self.profile_ref(inner, other, true);
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
    pub fn add_session(&mut self, inner: &Arc<Inner>, session: Session) -> Added {
        let (sid, user, auth, attached) = (session.id, session.user, session.auth, session.is_attached());
        self.sessions.insert(sid, session);
        let subscribed: Subscribed = match auth {
            Some(auth) => {
                self.by_auth.entry(auth).or_default().push(sid);
                Box::pin(inner.bus.subscribe_now(&Topic::session(auth)))
            }
            None => Box::pin(std::future::ready(())),
        };
        if !self.users.contains_key(&user) {
            let generation = self.next_generation();
            let subscribed = inner.bus.subscribe_now(&Topic::user(user));
            self.profile_ref(inner, user, true);
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
            tokio::spawn(load_user(inner.clone(), user, generation, Some(Box::pin(subscribed))));
        }
        let Some(local) = self.users.get_mut(&user) else {
            return Added {
                ready: None,
                subscribed,
            };
        };
        local.sessions.push(sid);
        if attached {
            local.attached += 1;
            if local.attached == 1 {
                let _ = inner.presence.send(PresenceCmd::Attached(user));
            }
            let _ = inner.registry.send(RegistryCmd::Attached(sid, user, auth));
        }
        if local.ready {
            return Added {
                ready: None,
                subscribed,
            };
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        local.waiters.push(tx);
        Added {
            ready: Some(rx),
            subscribed,
        }
    }

    /// Removes a session. `forget` also deletes its registry entry (not when another instance
    /// has taken it over).
    pub fn destroy_session(&mut self, inner: &Arc<Inner>, sid: Uuid, forget: bool) {
        let Some(session) = self.sessions.remove(&sid) else {
            return;
        };
        if let Some(auth) = session.auth {
            inner.bus.unsubscribe_now(&Topic::session(auth));
            if let Some(list) = self.by_auth.get_mut(&auth) {
                list.retain(|s| *s != sid);
                if list.is_empty() {
                    self.by_auth.remove(&auth);
                }
            }
        }
        if forget {
            let _ = inner.registry.send(RegistryCmd::Remove(sid));
        }
        let user = session.user;
        let Some(local) = self.users.get_mut(&user) else {
            return;
        };
        local.sessions.retain(|s| *s != sid);
        if session.conn.is_some() {
            local.attached = local.attached.saturating_sub(1);
            if local.attached == 0 {
                let _ = inner.presence.send(PresenceCmd::Detached(user));
            }
        }
        if local.sessions.is_empty() {
            self.remove_user(inner, user);
        }
    }

    fn remove_user(&mut self, inner: &Arc<Inner>, user: UserId) {
        let Some(local) = self.users.get(&user) else {
            return;
        };
        let spaces: Vec<SpaceId> = local.spaces.iter().copied().collect();
        let relations: Vec<Uuid> = local.relations.keys().copied().collect();
        for space in spaces {
            self.leave_space(inner, user, space);
        }
        for row in relations {
            self.set_relation(inner, user, row, None);
        }
        self.users.remove(&user);
        self.profile_ref(inner, user, false);
        inner.bus.unsubscribe_now(&Topic::user(user));
    }

    /// The socket of `sid` went away. `end` destroys the session (client close 1000, or a
    /// non-resumable close); otherwise it detaches and stays resumable.
    pub fn detach(&mut self, inner: &Arc<Inner>, sid: Uuid, conn: &Arc<Conn>, end: bool) {
        let Some(session) = self.sessions.get_mut(&sid) else {
            return;
        };
        let mine = session.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn));
        if !mine {
            // Replaced by a resume, or already detached by an overflow.
            if end && session.conn.is_none() {
                self.destroy_session(inner, sid, true);
            }
            return;
        }
        if end {
            self.destroy_session(inner, sid, true);
            return;
        }
        session.conn = None;
        session.detached_at = Some(Instant::now());
        let (user, auth) = (session.user, session.auth);
        if let Some(local) = self.users.get_mut(&user) {
            local.attached = local.attached.saturating_sub(1);
            if local.attached == 0 {
                let _ = inner.presence.send(PresenceCmd::Detached(user));
            }
        }
        let _ = inner.registry.send(RegistryCmd::Detached(sid, user, auth));
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
        inner: &Arc<Inner>,
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
                let _ = inner.presence.send(PresenceCmd::Attached(user));
            }
        }
        let _ = inner.registry.send(RegistryCmd::Attached(sid, user, auth));
        Ok(replayed)
    }

    /// The owner's side of a take-over (spec §8.5 step 4). Every message received before the
    /// request has been applied: the dispatcher handles them in order.
    fn hand_over(&mut self, inner: &Arc<Inner>, req: &TakeoverRequest) -> TakeoverReply {
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
        let frames = entries
            .into_iter()
            .map(|e| match e {
                Replay::Event { seq, event, .. } => WireReplay::Event {
                    seq,
                    id: event.id,
                    body: event.body().to_string(),
                },
                Replay::Resync => WireReplay::Resync,
            })
            .collect();
        let reply = TakeoverReply {
            request_id: req.request_id,
            ok: true,
            reason: None,
            last_seq: session.seq,
            frames,
            delivered: session.delivered_ids(req.seq),
        };
        let (user, auth) = (session.user, session.auth);
        let _ = inner
            .registry
            .send(RegistryCmd::Moved(req.session_id, user, auth, req.from));
        self.destroy_session(inner, req.session_id, false);
        reply
    }

    /// The new owner's side (spec §8.5 step 5): replay what the old owner handed over, then the
    /// live events buffered meanwhile that were not in it.
    pub fn complete_takeover(
        &mut self,
        inner: &Arc<Inner>,
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
                let _ = inner.presence.send(PresenceCmd::Attached(user));
            }
        }
        let _ = inner.registry.send(RegistryCmd::Attached(sid, user, auth));
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
    pub fn housekeeping(&mut self, inner: &Arc<Inner>, window: Duration) {
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
            self.destroy_session(inner, sid, true);
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
            let _ = inner.registry.send(RegistryCmd::Refresh(sids));
            let _ = inner.presence.send(PresenceCmd::Refresh(users));
        }
    }

    /// Graceful shutdown (spec §8.6): every socket closes with 1001; sessions stay resumable.
    pub fn close_all(&mut self, inner: &Arc<Inner>) {
        let sids: Vec<(Uuid, Arc<Conn>)> = self
            .sessions
            .values()
            .filter_map(|s| s.conn.clone().map(|c| (s.id, c)))
            .collect();
        for (sid, conn) in sids {
            conn.close(Close::GOING_AWAY);
            self.detach(inner, sid, &conn, false);
        }
    }

    pub fn is_attached(&self, sid: Uuid) -> Option<bool> {
        self.sessions.get(&sid).map(Session::is_attached)
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Fails a user whose state cannot be loaded: its sessions close with 4000.
    fn fail_user(&mut self, inner: &Arc<Inner>, user: UserId) {
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
            self.destroy_session(inner, sid, true);
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

pub(super) type Subscribed = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Retries a load a few times (the database may blip); `Err` after the last attempt.
async fn with_retries<T, F, Fut>(mut f: F) -> Result<T, crate::error::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, crate::error::Error>>,
{
    let mut delay = Duration::from_millis(50);
    let mut attempt = 0;
    loop {
        attempt += 1;
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt >= 4 => return Err(e),
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay *= 4;
            }
        }
    }
}

/// Loads a local user's spaces and relations once its topic subscriptions are in effect.
async fn load_user(inner: Arc<Inner>, user: UserId, generation: u64, subscribed: Option<Subscribed>) {
    if let Some(s) = subscribed {
        s.await;
    }
    let db = inner.db.clone();
    let loaded = with_retries(|| {
        let db = db.clone();
        async move {
            let spaces = crate::entities::members::of_user(&db, user).await?;
            let relations = crate::entities::relations::list(&db, user).await?;
            Ok((spaces, relations))
        }
    })
    .await;
    {
        let mut hub = inner.lock();
        let current: Vec<SpaceId> = match hub.users.get(&user) {
            Some(l) if l.generation == generation => l.spaces.iter().copied().collect(),
            _ => return,
        };
        let (spaces, relations) = match loaded {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, %user, "gateway: cannot load a user's state");
                hub.fail_user(&inner, user);
                return;
            }
        };
        // Reconcile spaces and relations with the snapshot.
        let wanted: HashSet<SpaceId> = spaces.into_iter().collect();
        for s in current.iter().filter(|s| !wanted.contains(s)) {
            hub.leave_space(&inner, user, *s);
        }
        for s in wanted {
            hub.join_space(&inner, user, s);
        }
        let rows: HashMap<Uuid, Relation> = relations
            .into_iter()
            .map(|r| {
                (
                    r.id,
                    Relation {
                        other: r.relation_id,
                        state: r.state,
                        channel: r.channel_id,
                    },
                )
            })
            .collect();
        let old: Vec<Uuid> = hub
            .users
            .get(&user)
            .map(|l| l.relations.keys().copied().collect())
            .unwrap_or_default();
        for row in old.iter().filter(|r| !rows.contains_key(r)) {
            hub.set_relation(&inner, user, *row, None);
        }
        for (row, r) in rows {
            hub.set_relation(&inner, user, row, Some(r));
        }
        // Messages of the user's topic that arrived meanwhile, in order.
        let pending = hub
            .users
            .get_mut(&user)
            .and_then(|l| l.pending.take())
            .unwrap_or_default();
        for payload in pending {
            hub.user_event(&inner, user, &payload);
        }
    }
    // The space subscriptions registered above are in effect after this barrier.
    inner.bus.barrier().await;
    let mut hub = inner.lock();
    if let Some(local) = hub.users.get_mut(&user)
        && local.generation == generation
    {
        local.loaded = true;
        hub.check_ready(user);
    }
}

/// Loads a space view once the space topic's subscription is in effect, then applies what
/// arrived meanwhile.
async fn load_view(inner: Arc<Inner>, space: SpaceId, generation: u64, subscribed: Option<Subscribed>) {
    if let Some(s) = subscribed {
        s.await;
    }
    let db = inner.db.clone();
    let loaded = with_retries(|| {
        let db = db.clone();
        async move { SpaceView::load(&db, space).await }
    })
    .await;
    let mut hub = inner.lock();
    let Some(entry) = hub.spaces.get(&space) else {
        return;
    };
    if entry.generation != generation {
        return;
    }
    let audience: Vec<UserId> = entry.audience.iter().copied().collect();
    match loaded {
        Ok(Some(view)) => {
            hub.set_view(&inner, space, view);
            let pending = hub
                .spaces
                .get_mut(&space)
                .and_then(|e| e.pending.take())
                .unwrap_or_default();
            for payload in pending {
                hub.space_event(&inner, space, &payload);
            }
            for user in audience {
                hub.check_ready(user);
            }
        }
        Ok(None) => {
            // Deleted before it could be loaded: nobody is a member any more.
            for user in audience {
                hub.leave_space(&inner, user, space);
                hub.check_ready(user);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, %space, "gateway: cannot load a space view");
            for user in audience {
                hub.fail_user(&inner, user);
            }
        }
    }
}
