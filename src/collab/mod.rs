//! The `/collab/<channelId>` subsystem (spec §9): live Y.js documents, a sibling of the `/ws`
//! gateway on the same bus and the same token checks.
//!
//! - `room`: one document's state on this instance (Y doc, awareness, local peers);
//! - `connection`: one socket's life (framing, limits, sync and awareness messages);
//! - `writer`: batched appends of updates to PostgreSQL, before anything is broadcast;
//! - this module: the registry of rooms, loading and compaction, the bus (updates and awareness
//!   relayed between instances on `collab:{channelId}`; revocation and access changes from the
//!   same events the gateway uses) and the bootstrap claim.

pub mod connection;
pub mod room;
mod writer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use sqlx::PgPool;
use tokio::sync::{OnceCell, broadcast};
use uuid::Uuid;
use yrs::sync::{Message, SyncMessage};
use yrs::updates::decoder::Decode;

use crate::entities::{access, documents};
use crate::error::{Error, Result};
use crate::events::{CollabRelay, Event, Op, Published};
use crate::functions::bus::{Bus, Inbound, Topic, TopicKind};
use crate::functions::ids::{ChannelId, SessionId, SpaceId};
use crate::functions::permissions::Permissions;
use room::{CloseCode, Room};

/// How long a bootstrap claim lasts (spec §9.5, §13).
const CLAIM_TTL: Duration = Duration::from_secs(30);

/// A room and whether it has been loaded.
struct Slot {
    room: Mutex<Room>,
    loaded: OnceCell<()>,
}

struct Inner {
    db: PgPool,
    bus: Bus,
    redis: Option<redis::aio::ConnectionManager>,
    redis_prefix: String,
    instance: Uuid,
    rooms: Mutex<HashMap<ChannelId, Arc<Slot>>>,
    writer: writer::Writer,
    next_conn: AtomicU64,
    claims: Mutex<HashMap<ChannelId, Instant>>,
    draining: AtomicBool,
}

#[derive(Clone)]
pub struct Collab {
    inner: Arc<Inner>,
}

/// A locked room, held briefly (never across an await).
fn lock(slot: &Slot) -> std::sync::MutexGuard<'_, Room> {
    slot.room.lock().unwrap_or_else(|p| p.into_inner())
}

impl Collab {
    pub fn start(db: PgPool, bus: Bus, redis: Option<redis::aio::ConnectionManager>, redis_prefix: String) -> Collab {
        let inner = Arc::new(Inner {
            writer: writer::Writer::start(db.clone()),
            db,
            redis,
            redis_prefix,
            instance: Uuid::now_v7(),
            rooms: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            claims: Mutex::new(HashMap::new()),
            draining: AtomicBool::new(false),
            bus: bus.clone(),
        });
        tokio::spawn(dispatcher(Arc::downgrade(&inner), bus.inbound()));
        Collab { inner }
    }

    pub fn db(&self) -> &PgPool {
        &self.inner.db
    }

    pub fn bus(&self) -> &Bus {
        &self.inner.bus
    }

    fn next_conn(&self) -> room::ConnId {
        self.inner.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// The loaded room of a channel, made and loaded on first use: subscribed to its bus topics
    /// first, then read from PostgreSQL, so nothing persisted or relayed in between is missed.
    async fn open(&self, channel: ChannelId, space: SpaceId) -> Result<Arc<Slot>> {
        let slot = {
            let mut rooms = self.inner.rooms.lock().unwrap_or_else(|p| p.into_inner());
            rooms
                .entry(channel)
                .or_insert_with(|| {
                    Arc::new(Slot {
                        room: Mutex::new(Room::new(channel, space)),
                        loaded: OnceCell::new(),
                    })
                })
                .clone()
        };
        let loaded = slot
            .loaded
            .get_or_try_init(|| async {
                self.inner.bus.subscribe(&Topic::collab(channel)).await;
                self.inner.bus.subscribe(&Topic::space(space.0)).await;
                let result = self.load(&slot, channel).await;
                if result.is_err() {
                    self.forget(channel, &slot).await;
                }
                result
            })
            .await;
        loaded.map(|_| slot.clone())
    }

    async fn load(&self, slot: &Slot, channel: ChannelId) -> Result<()> {
        let mut conn = self.inner.db.acquire().await?;
        let stored = documents::load(&mut conn, channel).await?;
        drop(conn);
        {
            let mut room = lock(slot);
            for update in stored.snapshot.iter().chain(stored.updates.iter()) {
                if !room.apply(update) {
                    tracing::warn!(%channel, "a stored collab update could not be applied");
                }
            }
            room.stored_bytes = stored.bytes();
            room.pending_updates = stored.updates.len();
            room.pending_bytes = stored.updates.iter().map(Vec::len).sum();
        }
        // Peers on other instances announce themselves again.
        self.relay(channel, room::frame(&Message::AwarenessQuery)).await;
        Ok(())
    }

    /// Drops a room from the registry and its bus topics (the last peer left, or loading failed).
    async fn forget(&self, channel: ChannelId, slot: &Arc<Slot>) {
        let space = {
            let mut rooms = self.inner.rooms.lock().unwrap_or_else(|p| p.into_inner());
            let mut room = lock(slot);
            if room.peer_count() > 0 || room.closed {
                return;
            }
            room.closed = true;
            if rooms.get(&channel).is_some_and(|s| Arc::ptr_eq(s, slot)) {
                rooms.remove(&channel);
            }
            room.space
        };
        if slot.loaded.initialized() {
            self.inner.bus.unsubscribe(&Topic::collab(channel)).await;
            self.inner.bus.unsubscribe(&Topic::space(space.0)).await;
        }
    }

    /// Publishes a room message for the other instances.
    async fn relay(&self, channel: ChannelId, message: Bytes) {
        if !self.inner.bus.is_shared() {
            return;
        }
        let data = CollabRelay {
            origin: self.inner.instance,
            message: STANDARD.encode(&message),
        };
        Event::CollabRelay(channel, &data).publish(&self.inner.bus).await;
    }

    /// Folds the room's stored updates into its snapshot (spec §9.4), in the background.
    fn compact(&self, slot: Arc<Slot>) {
        let channel = {
            let mut room = lock(&slot);
            if room.compacting {
                return;
            }
            room.compacting = true;
            room.channel
        };
        let db = self.inner.db.clone();
        tokio::spawn(async move {
            let result = documents::compact(&db, channel, |s| room::fold(s.snapshot.as_deref(), &s.updates)).await;
            let mut room = lock(&slot);
            room.compacting = false;
            match result {
                Ok(Some((rows, size))) => {
                    room.stored_bytes = size;
                    room.pending_updates = 0;
                    room.pending_bytes = 0;
                    metrics::counter!("alterego_collab_compactions_total").increment(1);
                    tracing::debug!(%channel, rows, size, "collab document compacted");
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(%channel, error = %e, "collab compaction failed"),
            }
        });
    }

    /// `documents.claimBootstrap` (spec §9.5) for a writer: granted only while nothing is
    /// persisted and the in-memory room (if any) is empty, to one caller per 30 s on any instance.
    pub async fn claim_bootstrap(&self, channel: ChannelId) -> Result<bool> {
        if documents::has_state(&self.inner.db, channel).await? {
            return Ok(false);
        }
        let live = self
            .inner
            .rooms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&channel)
            .cloned();
        if let Some(slot) = live
            && !lock(&slot).is_empty_document()
        {
            return Ok(false);
        }
        match &self.inner.redis {
            Some(conn) => {
                let mut conn = conn.clone();
                let won: Option<String> = redis::cmd("SET")
                    .arg(format!("{}:collab:bootstrap:{channel}", self.inner.redis_prefix))
                    .arg(self.inner.instance.to_string())
                    .arg("NX")
                    .arg("PX")
                    .arg(CLAIM_TTL.as_millis() as u64)
                    .query_async(&mut conn)
                    .await
                    .map_err(Error::internal)?;
                Ok(won.is_some())
            }
            None => {
                let mut claims = self.inner.claims.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                claims.retain(|_, at| now.duration_since(*at) < CLAIM_TTL);
                if claims.contains_key(&channel) {
                    return Ok(false);
                }
                claims.insert(channel, now);
                Ok(true)
            }
        }
    }

    /// Closes every collab socket of this instance (graceful shutdown): clients reconnect to
    /// another instance, where the room loads from PostgreSQL.
    /// Waits (at most 5 s) until their last frames are persisted.
    pub async fn shutdown(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
        self.each_peer(|_, peer| peer.link.close(CloseCode::GOING_AWAY));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.slots().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    fn slots(&self) -> Vec<Arc<Slot>> {
        self.inner
            .rooms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn each_peer(&self, mut f: impl FnMut(&Room, &room::Peer)) {
        for slot in self.slots() {
            let room = lock(&slot);
            for (_, peer) in room.peers() {
                f(&room, peer);
            }
        }
    }

    /// A room message relayed by another instance: applied here (not persisted again) and sent
    /// to the local peers.
    async fn on_relay(&self, channel: ChannelId, payload: &[u8]) {
        let Some(head) = Published::parse(payload) else { return };
        if head.op() != Some(Op::CollabRelay) {
            return;
        }
        let Ok(relay) = serde_json::from_str::<CollabRelay>(head.data.get()) else {
            return;
        };
        if relay.origin == self.inner.instance {
            return;
        }
        let Some(slot) = self
            .inner
            .rooms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&channel)
            .cloned()
        else {
            return;
        };
        let Ok(bytes) = STANDARD.decode(relay.message.as_bytes()) else {
            return;
        };
        let Ok(message) = Message::decode_v1(&bytes) else {
            return;
        };
        let answer = {
            let mut room = lock(&slot);
            match message {
                Message::Sync(SyncMessage::Update(update)) => {
                    room.pending_updates += 1;
                    room.stored_bytes += update.len();
                    room.apply_remote(&update, Bytes::from(bytes));
                    None
                }
                Message::Awareness(update) => {
                    room.awareness(None, update, Bytes::from(bytes));
                    None
                }
                Message::AwarenessQuery => room.local_awareness(),
                _ => None,
            }
        };
        if let Some(answer) = answer {
            self.relay(channel, answer).await;
        }
    }

    /// A revoked auth session (or bot): its collab sockets close with 4006.
    fn on_revoked(&self, key: SessionId, payload: &[u8]) {
        if Published::parse(payload).and_then(|h| h.op()) != Some(Op::SessionRevoked) {
            return;
        }
        self.each_peer(|_, peer| {
            if peer.key == key {
                peer.link.close(CloseCode::REVOKED);
            }
        });
    }

    /// An event that may change who can see or write a room of `space`: every peer's access is
    /// read again — lost VIEW_CHANNEL (or a deleted channel/space) closes with 4013, lost
    /// SEND_MESSAGES makes a reader (spec §9.7).
    async fn recheck(&self, space: SpaceId) {
        let slots: Vec<Arc<Slot>> = self.slots().into_iter().filter(|s| lock(s).space == space).collect();
        for slot in slots {
            let (channel, peers) = {
                let room = lock(&slot);
                let peers: Vec<(room::ConnId, crate::functions::ids::UserId)> =
                    room.peers().map(|(id, p)| (*id, p.user)).collect();
                (room.channel, peers)
            };
            for (conn, user) in peers {
                let found = match access::channel_access(&self.inner.db, space, channel, user).await {
                    Ok(found) => found,
                    Err(e) => {
                        tracing::warn!(%channel, error = %e, "collab access re-check failed");
                        continue;
                    }
                };
                let mut room = lock(&slot);
                let Some(peer) = room.peer_mut(conn) else { continue };
                match found {
                    Some((_, perms)) if perms.contains(Permissions::VIEW_CHANNEL) => {
                        peer.writer = perms.contains(Permissions::SEND_MESSAGES);
                    }
                    _ => peer.link.close(CloseCode::ACCESS_LOST),
                }
            }
        }
    }

    /// The bus lost messages: every room reads PostgreSQL again and sends its peers what was
    /// missed (CRDT merges make re-applying harmless).
    async fn resync(&self) {
        for slot in self.slots() {
            let (channel, before) = {
                let room = lock(&slot);
                (room.channel, room.state_vector())
            };
            let Ok(mut conn) = self.inner.db.acquire().await else {
                continue;
            };
            let Ok(stored) = documents::load(&mut conn, channel).await else {
                continue;
            };
            drop(conn);
            let mut room = lock(&slot);
            for update in stored.snapshot.iter().chain(stored.updates.iter()) {
                room.apply(update);
            }
            let missed = room.diff_since(&before);
            room.broadcast(room::frame(&Message::Sync(SyncMessage::Update(missed))));
        }
    }

    fn has_rooms_in(&self, space: SpaceId) -> bool {
        self.slots().iter().any(|s| lock(s).space == space)
    }
}

/// The ops after which a room's peers must have their access read again.
fn changes_access(op: Op) -> bool {
    matches!(
        op,
        Op::MemberDeleted
            | Op::MemberUpdated
            | Op::RoleUpdated
            | Op::RoleDeleted
            | Op::OverrideSet
            | Op::OverrideDeleted
            | Op::ChannelDeleted
            | Op::ChannelUpdated
            | Op::SpaceDeleted
    )
}

/// Follows the bus for the collab rooms (the gateway reads the same stream).
async fn dispatcher(inner: std::sync::Weak<Inner>, mut inbound: broadcast::Receiver<Inbound>) {
    loop {
        let msg = inbound.recv().await;
        let Some(inner) = inner.upgrade() else { return };
        let collab = Collab { inner };
        match msg {
            Ok(Inbound::Message(m)) => match m.topic.kind() {
                TopicKind::Collab(channel) => collab.on_relay(channel, &m.payload).await,
                TopicKind::Session(key) => collab.on_revoked(key, &m.payload),
                TopicKind::Space(space)
                    if collab.has_rooms_in(SpaceId(space))
                        && Published::parse(&m.payload)
                            .and_then(|h| h.op())
                            .is_some_and(changes_access) =>
                {
                    let collab = collab.clone();
                    tokio::spawn(async move { collab.recheck(SpaceId(space)).await });
                }
                _ => {}
            },
            Ok(Inbound::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                let collab = collab.clone();
                tokio::spawn(async move { collab.resync().await });
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
