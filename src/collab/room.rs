//! One document's room on this instance (spec §9.3): the Y document, the awareness states and
//! the local connections. Pure state under a mutex — no I/O: frames go into each peer's bounded
//! queue, and whatever must cross instances or reach the database is returned to the caller.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};
use yrs::sync::awareness::AwarenessUpdate;
use yrs::sync::{Awareness, Message, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ClientID, Doc, ReadTxn, StateVector, Transact, Update};

use crate::functions::ids::{ChannelId, SessionId, SpaceId, UserId};

/// A connection's id within this instance.
pub type ConnId = u64;

/// Why a connection is being closed, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseCode {
    pub code: u16,
    pub reason: &'static str,
}

impl CloseCode {
    pub const GOING_AWAY: CloseCode = CloseCode {
        code: 1001,
        reason: "going away",
    };
    pub const PROTOCOL: CloseCode = CloseCode {
        code: 1002,
        reason: "malformed message",
    };
    pub const TEXT: CloseCode = CloseCode {
        code: 1003,
        reason: "binary frames only",
    };
    pub const TOO_BIG: CloseCode = CloseCode {
        code: 1009,
        reason: "frame too large",
    };
    pub const INTERNAL: CloseCode = CloseCode {
        code: 1011,
        reason: "internal error",
    };
    pub const REVOKED: CloseCode = CloseCode {
        code: 4006,
        reason: "session revoked",
    };
    pub const RATE: CloseCode = CloseCode {
        code: 4008,
        reason: "rate limited",
    };
    pub const TIMED_OUT: CloseCode = CloseCode {
        code: 4009,
        reason: "timed out",
    };
    pub const SLOW: CloseCode = CloseCode {
        code: 4010,
        reason: "too slow",
    };
    pub const ACCESS_LOST: CloseCode = CloseCode {
        code: 4013,
        reason: "access revoked",
    };
}

/// The sending side of one connection: its frame queue and a way to close it.
#[derive(Clone)]
pub struct Link {
    frames: mpsc::Sender<Bytes>,
    close: Arc<Closer>,
}

#[derive(Default)]
pub struct Closer {
    code: std::sync::Mutex<Option<CloseCode>>,
    notify: Notify,
}

impl Closer {
    /// Asks the connection to close (the first code wins).
    pub fn close(&self, code: CloseCode) {
        let mut slot = self.code.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(code);
            self.notify.notify_one();
        }
    }

    /// Waits until [`close`](Self::close) is called; returns its code.
    pub async fn closed(&self) -> CloseCode {
        loop {
            if let Some(code) = *self.code.lock().unwrap_or_else(|p| p.into_inner()) {
                return code;
            }
            self.notify.notified().await;
        }
    }
}

impl Link {
    /// A link and its receiving end (`queue` frames at most).
    pub fn new(queue: usize) -> (Link, mpsc::Receiver<Bytes>, Arc<Closer>) {
        let (tx, rx) = mpsc::channel(queue);
        let close = Arc::new(Closer::default());
        (
            Link {
                frames: tx,
                close: close.clone(),
            },
            rx,
            close,
        )
    }

    /// Queues a frame; a peer that cannot keep up is closed (it reconnects and resyncs).
    pub fn send(&self, frame: Bytes) {
        if self.frames.try_send(frame).is_err() {
            self.close.close(CloseCode::SLOW);
        }
    }

    pub fn close(&self, code: CloseCode) {
        self.close.close(code);
    }
}

/// A local connection of the room.
pub struct Peer {
    pub link: Link,
    pub user: UserId,
    /// Its revocation key (auth session, or a bot's id).
    pub key: SessionId,
    /// SEND_MESSAGES in the channel: its updates are applied; a reader's are refused.
    pub writer: bool,
    /// The awareness client ids this connection announced (removed when it closes).
    owned: HashSet<ClientID>,
}

impl Peer {
    pub fn new(link: Link, user: UserId, key: SessionId, writer: bool) -> Peer {
        Peer {
            link,
            user,
            key,
            writer,
            owned: HashSet::new(),
        }
    }
}

/// The compaction thresholds and the size limit (spec §9.4, §13).
pub const COMPACT_UPDATES: usize = 500;
pub const COMPACT_BYTES: usize = 1024 * 1024;
pub const MAX_STATE_BYTES: usize = 32 * 1024 * 1024;

pub struct Room {
    pub channel: ChannelId,
    pub space: SpaceId,
    awareness: Awareness,
    peers: HashMap<ConnId, Peer>,
    /// Stored bytes (snapshot + updates) as far as this instance knows.
    pub stored_bytes: usize,
    /// Updates this instance appended since the room was loaded or last compacted.
    pub pending_updates: usize,
    pub pending_bytes: usize,
    pub compacting: bool,
    /// Set when the room leaves the registry: a late joiner must make a new one.
    pub closed: bool,
}

/// One encoded y-protocols message.
pub fn frame(message: &Message) -> Bytes {
    Bytes::from(message.encode_v1())
}

impl Room {
    pub fn new(channel: ChannelId, space: SpaceId) -> Room {
        Room {
            channel,
            space,
            awareness: Awareness::new(Doc::new()),
            peers: HashMap::new(),
            stored_bytes: 0,
            pending_updates: 0,
            pending_bytes: 0,
            compacting: false,
            closed: false,
        }
    }

    /// Applies stored or relayed state; bad bytes are skipped (and reported).
    pub fn apply(&mut self, update: &[u8]) -> bool {
        let Ok(update) = Update::decode_v1(update) else {
            return false;
        };
        // Third-party code on untrusted input: a panic refuses the update instead of ending
        // the task that holds the room.
        let doc = self.awareness.doc();
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            doc.transact_mut().apply_update(update).is_ok()
        }))
        .unwrap_or(false)
    }

    pub fn is_empty_document(&self) -> bool {
        self.awareness.doc().transact().state_vector() == StateVector::default()
    }

    pub fn peers(&self) -> impl Iterator<Item = (&ConnId, &Peer)> {
        self.peers.iter()
    }

    pub fn peer_mut(&mut self, conn: ConnId) -> Option<&mut Peer> {
        self.peers.get_mut(&conn)
    }

    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// A new connection: it is sent SyncStep1 with the room's state vector, then every
    /// awareness state (spec §9.3).
    pub fn join(&mut self, conn: ConnId, peer: Peer) {
        let sv = self.awareness.doc().transact().state_vector();
        peer.link.send(frame(&Message::Sync(SyncMessage::SyncStep1(sv))));
        if let Some(all) = self.awareness_frame() {
            peer.link.send(all);
        }
        self.peers.insert(conn, peer);
    }

    /// SyncStep2 for a peer's state vector.
    pub fn step2(&self, sv: &StateVector) -> Bytes {
        let update = self.awareness.doc().transact().encode_state_as_update_v1(sv);
        frame(&Message::Sync(SyncMessage::SyncStep2(update)))
    }

    /// Every awareness state, as one message (`None` when there is none).
    pub fn awareness_frame(&self) -> Option<Bytes> {
        let update = self.awareness.update().ok()?;
        (!update.clients.is_empty()).then(|| frame(&Message::Awareness(update)))
    }

    /// A writer's update, already persisted: applied, then sent to every other local peer.
    /// Returns the Sync Update message to relay to other instances.
    pub fn apply_local(&mut self, from: ConnId, update: Vec<u8>) -> Bytes {
        self.apply(&update);
        let message = frame(&Message::Sync(SyncMessage::Update(update)));
        for (id, peer) in &self.peers {
            if *id != from {
                peer.link.send(message.clone());
            }
        }
        message
    }

    /// An update relayed by another instance (persisted there): applied and sent to every
    /// local peer.
    pub fn apply_remote(&mut self, update: &[u8], message: Bytes) {
        if self.apply(update) {
            self.broadcast(message);
        }
    }

    /// An awareness message (local or relayed): applied and sent to every local peer,
    /// the sender included (spec §9.3 Fix). Local client ids are owned by `from`.
    pub fn awareness(&mut self, from: Option<ConnId>, update: AwarenessUpdate, message: Bytes) {
        if let Some(peer) = from.and_then(|c| self.peers.get_mut(&c)) {
            peer.owned.extend(update.clients.keys().copied());
        }
        if self.awareness.apply_update(update).is_ok() {
            self.broadcast(message);
        }
    }

    /// The awareness states owned by local peers, to answer another instance's query.
    pub fn local_awareness(&self) -> Option<Bytes> {
        let owned: Vec<ClientID> = self.peers.values().flat_map(|p| p.owned.iter().copied()).collect();
        if owned.is_empty() {
            return None;
        }
        let update = self.awareness.update_with_clients(owned).ok()?;
        Some(frame(&Message::Awareness(update)))
    }

    /// A connection left: its awareness states are removed and the removal is sent to the
    /// remaining peers. Returns the removal message (to relay) if there was one.
    pub fn leave(&mut self, conn: ConnId) -> Option<Bytes> {
        let peer = self.peers.remove(&conn)?;
        if peer.owned.is_empty() {
            return None;
        }
        for id in &peer.owned {
            self.awareness.remove_state(*id);
        }
        let update = self.awareness.update_with_clients(peer.owned.iter().copied()).ok()?;
        let message = frame(&Message::Awareness(update));
        self.broadcast(message.clone());
        Some(message)
    }

    pub fn broadcast(&self, message: Bytes) {
        for peer in self.peers.values() {
            peer.link.send(message.clone());
        }
    }

    /// The full state as one update (the compaction snapshot, or a resync diff).
    pub fn diff_since(&self, sv: &StateVector) -> Vec<u8> {
        self.awareness.doc().transact().encode_state_as_update_v1(sv)
    }

    pub fn state_vector(&self) -> StateVector {
        self.awareness.doc().transact().state_vector()
    }

    /// Whether a writer's update would grow the document past its limit.
    pub fn too_large(&self, incoming: usize) -> bool {
        self.stored_bytes + incoming > MAX_STATE_BYTES
    }

    /// Counts an appended update; `true` when the room should be compacted.
    pub fn appended(&mut self, bytes: usize) -> bool {
        self.stored_bytes += bytes;
        self.pending_updates += 1;
        self.pending_bytes += bytes;
        !self.compacting && (self.pending_updates > COMPACT_UPDATES || self.pending_bytes > COMPACT_BYTES)
    }
}

/// Folds a stored state (snapshot, then updates in order) into one update: the snapshot that
/// replaces them. `None` if a stored update cannot be decoded (compaction must not drop it).
pub fn fold(snapshot: Option<&[u8]>, updates: &[Vec<u8>]) -> Option<Vec<u8>> {
    let doc = Doc::new();
    {
        let mut txn = doc.transact_mut();
        for bytes in snapshot.into_iter().chain(updates.iter().map(Vec::as_slice)) {
            let update = Update::decode_v1(bytes).ok()?;
            txn.apply_update(update).ok()?;
        }
    }
    let state = doc.transact().encode_state_as_update_v1(&StateVector::default());
    Some(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{GetString, Text};

    fn edit(doc: &Doc, at: u32, s: &str) -> Vec<u8> {
        let text = doc.get_or_insert_text("content");
        let before = doc.transact().state_vector();
        text.insert(&mut doc.transact_mut(), at, s);
        doc.transact().encode_state_as_update_v1(&before)
    }

    fn text_of(update: &[u8]) -> String {
        let doc = Doc::new();
        let text = doc.get_or_insert_text("content");
        doc.transact_mut()
            .apply_update(Update::decode_v1(update).unwrap())
            .unwrap();
        text.get_string(&doc.transact())
    }

    #[test]
    fn folding_keeps_every_edit() {
        let a = Doc::new();
        let u1 = edit(&a, 0, "hello");
        let u2 = edit(&a, 5, " world");
        let snapshot = fold(None, &[u1]).unwrap();
        let folded = fold(Some(&snapshot), &[u2]).unwrap();
        assert_eq!(text_of(&folded), "hello world");
        assert_eq!(fold(None, &[vec![0xff, 0xff, 0xff]]), None);
    }

    #[test]
    fn updates_reach_the_other_peers_and_awareness_everyone() {
        let mut room = Room::new(ChannelId(uuid::Uuid::now_v7()), SpaceId(uuid::Uuid::now_v7()));
        let (la, mut ra, _) = Link::new(16);
        let (lb, mut rb, _) = Link::new(16);
        let key = SessionId(uuid::Uuid::now_v7());
        let user = UserId(uuid::Uuid::now_v7());
        room.join(1, Peer::new(la, user, key, true));
        room.join(2, Peer::new(lb, user, key, false));
        // Each got SyncStep1 first.
        assert!(matches!(ra.try_recv().map(|b| b[0]), Ok(0)));
        assert!(matches!(rb.try_recv().map(|b| b[0]), Ok(0)));
        let doc = Doc::new();
        room.apply_local(1, edit(&doc, 0, "x"));
        assert!(ra.try_recv().is_err(), "the sender does not get its own update");
        assert!(rb.try_recv().is_ok());
        // Awareness goes to both, and the leaver's state is removed for the other.
        let mut update = AwarenessUpdate {
            clients: HashMap::new(),
        };
        update.clients.insert(
            ClientID::new(42),
            yrs::sync::awareness::AwarenessUpdateEntry {
                clock: 1,
                json: "{\"user\":\"a\"}".into(),
            },
        );
        let message = frame(&Message::Awareness(update.clone()));
        room.awareness(Some(1), update, message);
        assert!(ra.try_recv().is_ok() && rb.try_recv().is_ok());
        assert!(room.leave(1).is_some());
        let removal = rb.try_recv().expect("removal");
        let Message::Awareness(u) = Message::decode_v1(&removal).unwrap() else {
            panic!("not awareness")
        };
        assert_eq!(&*u.clients[&ClientID::new(42)].json, "null");
    }

    #[test]
    fn a_slow_peer_is_closed_not_waited_for() {
        let (link, _rx, closer) = Link::new(1);
        link.send(Bytes::from_static(b"a"));
        link.send(Bytes::from_static(b"b"));
        let code = futures_util::FutureExt::now_or_never(closer.closed());
        assert_eq!(code, Some(CloseCode::SLOW));
    }
}
