//! Gateway sessions (spec §7.6): the `seq` counter, the replay ring, and the bounded outbound
//! queue of the connection a session is attached to.
//!
//! An [`Event`] is built once per bus message (or once per distinct shape, for per-recipient
//! `SpaceExt` filtering) and shared by every recipient; a session's frame is that event with its
//! own `seq` spliced in at write time, never re-serialised.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::events::Op;
use crate::functions::ids::{SessionId, UserId};

/// Outbound queue bound (spec §7.9): frames, bytes.
pub const QUEUE_FRAMES: usize = 512;
pub const QUEUE_BYTES: usize = 4 * 1024 * 1024;
/// Replay ring bound (spec §7.6): frames, bytes, and the age kept while attached.
pub const RING_FRAMES: usize = 2048;
pub const RING_BYTES: usize = 8 * 1024 * 1024;
pub const RING_ATTACHED_AGE: Duration = Duration::from_secs(60);

/// One published event, ready to be framed for any session.
#[derive(Debug)]
pub struct Event {
    /// The internal event id (spec §8.4), for de-duplication.
    pub id: Uuid,
    /// `{"op":…,"data":…` — the frame without its `seq` and closing brace.
    body: Bytes,
}

pub use crate::events::Published;

impl Event {
    /// The event of op `op` with serialised `data`.
    pub fn new(id: Uuid, op: Op, data: &str) -> Event {
        let op = serde_json::to_string(op.name()).unwrap_or_else(|_| "\"\"".into());
        let mut body = String::with_capacity(op.len() + data.len() + 16);
        body.push_str("{\"op\":");
        body.push_str(&op);
        body.push_str(",\"data\":");
        body.push_str(data);
        Event {
            id,
            body: Bytes::from(body),
        }
    }

    /// Rebuilds an event from its body (take-over transfer).
    pub fn from_body(id: Uuid, body: String) -> Option<Event> {
        body.starts_with("{\"op\":").then(|| Event {
            id,
            body: Bytes::from(body),
        })
    }

    pub fn body(&self) -> &str {
        // Built only from `String`s.
        std::str::from_utf8(&self.body).unwrap_or("")
    }

    /// The frame a session sends: `{"op":…,"data":…,"seq":N}`.
    pub fn frame(&self, seq: u64) -> Utf8Bytes {
        let mut s = String::with_capacity(self.body.len() + 28);
        s.push_str(self.body());
        s.push_str(",\"seq\":");
        s.push_str(&seq.to_string());
        s.push('}');
        Utf8Bytes::from(s)
    }

    /// Bytes counted against queue and ring bounds.
    pub fn cost(&self) -> usize {
        self.body.len() + 24
    }
}

/// Why the server closes a connection (spec §7.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close {
    pub code: u16,
    pub reason: &'static str,
}

impl Close {
    pub const GOING_AWAY: Close = Close {
        code: 1001,
        reason: "going away",
    };
    pub const TOO_BIG: Close = Close {
        code: 1009,
        reason: "frame too large",
    };
    pub const UNKNOWN: Close = Close {
        code: 4000,
        reason: "unknown error",
    };
    pub const DECODE: Close = Close {
        code: 4002,
        reason: "decode error",
    };
    pub const NOT_AUTHENTICATED: Close = Close {
        code: 4003,
        reason: "not authenticated",
    };
    pub const AUTH_FAILED: Close = Close {
        code: 4004,
        reason: "authentication failed",
    };
    pub const INVALIDATED: Close = Close {
        code: 4006,
        reason: "session invalidated",
    };
    pub const RATE_LIMITED: Close = Close {
        code: 4008,
        reason: "rate limited",
    };
    pub const TIMED_OUT: Close = Close {
        code: 4009,
        reason: "session timed out",
    };
    pub const SLOW: Close = Close {
        code: 4010,
        reason: "slow consumer",
    };
    pub const REPLACED: Close = Close {
        code: 4011,
        reason: "session replaced",
    };
}

/// An item of a connection's outbound queue.
#[derive(Debug)]
pub enum Item {
    Event(u64, Arc<Event>),
    Control(Utf8Bytes),
}

impl Item {
    pub fn text(&self) -> Utf8Bytes {
        match self {
            Item::Event(seq, ev) => ev.frame(*seq),
            Item::Control(t) => t.clone(),
        }
    }

    fn cost(&self) -> usize {
        match self {
            Item::Event(_, ev) => ev.cost(),
            Item::Control(t) => t.as_str().len(),
        }
    }
}

#[derive(Default)]
struct Out {
    items: VecDeque<Item>,
    bytes: usize,
    close: Option<Close>,
}

/// The shared half of one WebSocket connection: the hub pushes, the socket task drains. Pushing
/// never blocks; a full queue closes the connection instead (spec §7.9).
#[derive(Default)]
pub struct Conn {
    out: Mutex<Out>,
    notify: Notify,
}

/// The queue bound was exceeded: the connection is being closed with 4010.
#[derive(Debug)]
pub struct Overflow;

impl Conn {
    pub fn new() -> Arc<Conn> {
        Arc::new(Conn::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Out> {
        self.out.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a live event; on overflow the connection is closed with 4010.
    pub fn push_bounded(&self, item: Item) -> Result<(), Overflow> {
        let mut out = self.lock();
        if out.close.is_some() {
            return Ok(());
        }
        if out.items.len() >= QUEUE_FRAMES || out.bytes + item.cost() > QUEUE_BYTES {
            out.close = Some(Close::SLOW);
            out.items.clear();
            out.bytes = 0;
            drop(out);
            self.notify.notify_one();
            return Err(Overflow);
        }
        out.bytes += item.cost();
        out.items.push_back(item);
        drop(out);
        self.notify.notify_one();
        Ok(())
    }

    /// Queues without the bound (control frames, a resume's replay: both bounded elsewhere).
    pub fn push(&self, item: Item) {
        let mut out = self.lock();
        if out.close.is_none() {
            out.bytes += item.cost();
            out.items.push_back(item);
        }
        drop(out);
        self.notify.notify_one();
    }

    /// Asks the socket task to close with `close` (the first reason wins).
    pub fn close(&self, close: Close) {
        let mut out = self.lock();
        if out.close.is_none() {
            out.close = Some(close);
        }
        drop(out);
        self.notify.notify_one();
    }

    pub fn closing(&self) -> Option<Close> {
        self.lock().close
    }

    /// Takes everything queued, and the close reason if one was set.
    pub fn take(&self) -> (VecDeque<Item>, Option<Close>) {
        let mut out = self.lock();
        out.bytes = 0;
        (std::mem::take(&mut out.items), out.close)
    }

    /// Resolves when something was queued or a close was asked for.
    pub async fn wait(&self) {
        self.notify.notified().await
    }
}

/// An entry of the replay ring.
#[derive(Debug, Clone)]
pub enum Replay {
    Event {
        seq: u64,
        at: Instant,
        event: Arc<Event>,
    },
    /// The bus lost events here (spec §8.4): replayed as a `resync` frame.
    Resync,
}

/// Events a session is waiting for while it is being taken over from another instance.
#[derive(Default)]
pub struct Pending {
    pub events: Vec<Arc<Event>>,
    pub overflowed: bool,
}

/// A gateway session (spec §7.6).
pub struct Session {
    pub id: Uuid,
    pub user: UserId,
    /// The auth session of the token that created it (`None` for bots).
    pub auth: Option<SessionId>,
    /// The last `seq` assigned.
    pub seq: u64,
    ring: VecDeque<Replay>,
    ring_bytes: usize,
    /// Frames with `seq` ≤ this are no longer replayable.
    lost_through: u64,
    pub conn: Option<Arc<Conn>>,
    /// When the session detached (`None` while attached).
    pub detached_at: Option<Instant>,
    /// Set while the session is being taken over from another instance: live events wait here.
    pub pending: Option<Pending>,
}

/// What delivering one event to a session did.
pub enum Dispatched {
    Queued,
    /// Not attached (buffered for resume only).
    Buffered,
    /// The connection overflowed and was closed with 4010; the session is now detached.
    Overflowed,
}

impl Session {
    pub fn new(id: Uuid, user: UserId, auth: Option<SessionId>, conn: Option<Arc<Conn>>) -> Session {
        let detached_at = if conn.is_some() { None } else { Some(Instant::now()) };
        Session {
            id,
            user,
            auth,
            seq: 0,
            ring: VecDeque::new(),
            ring_bytes: 0,
            lost_through: 0,
            conn,
            detached_at,
            pending: None,
        }
    }

    /// Assigns the next `seq`, keeps the frame for replay and queues it on the connection.
    pub fn dispatch(&mut self, event: &Arc<Event>, now: Instant) -> Dispatched {
        if let Some(p) = &mut self.pending {
            if p.events.len() >= RING_FRAMES {
                p.overflowed = true;
            } else {
                p.events.push(event.clone());
            }
            return Dispatched::Buffered;
        }
        self.seq += 1;
        let seq = self.seq;
        self.remember(Replay::Event {
            seq,
            at: now,
            event: event.clone(),
        });
        match &self.conn {
            None => Dispatched::Buffered,
            Some(conn) => match conn.push_bounded(Item::Event(seq, event.clone())) {
                Ok(()) => Dispatched::Queued,
                Err(Overflow) => {
                    self.conn = None;
                    self.detached_at = Some(now);
                    Dispatched::Overflowed
                }
            },
        }
    }

    fn remember(&mut self, entry: Replay) {
        if let Replay::Event { event, .. } = &entry {
            self.ring_bytes += event.cost();
        }
        self.ring.push_back(entry);
        while self.ring.len() > RING_FRAMES || self.ring_bytes > RING_BYTES {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        match self.ring.pop_front() {
            Some(Replay::Event { seq, event, .. }) => {
                self.ring_bytes = self.ring_bytes.saturating_sub(event.cost());
                self.lost_through = self.lost_through.max(seq);
            }
            Some(Replay::Resync) | None => {}
        }
    }

    /// While attached, only the last 60 s are kept (spec §7.6).
    pub fn trim(&mut self, now: Instant) {
        if self.conn.is_none() {
            return;
        }
        while let Some(Replay::Event { at, .. }) = self.ring.front() {
            if now.duration_since(*at) <= RING_ATTACHED_AGE {
                break;
            }
            self.pop_oldest();
        }
        if self.ring.is_empty() {
            self.ring = VecDeque::new();
        }
    }

    /// The bus lost events (spec §8.4): earlier frames can no longer be replayed, and a resume
    /// from here on is told to resync. Attached connections get `resync` at once.
    pub fn resync(&mut self, frame: &Utf8Bytes) {
        self.ring.clear();
        self.ring_bytes = 0;
        self.lost_through = self.seq;
        self.ring.push_back(Replay::Resync);
        if let Some(conn) = &self.conn {
            conn.push(Item::Control(frame.clone()));
        }
    }

    /// The ring entries after `seq`, if every frame after it is still held.
    pub fn replay_after(&self, seq: u64) -> Option<Vec<Replay>> {
        if seq > self.seq || seq < self.lost_through {
            return None;
        }
        let mut out = Vec::new();
        let mut previous = self.lost_through;
        for entry in &self.ring {
            match entry {
                Replay::Event { seq: s, .. } => {
                    previous = *s;
                    if *s > seq {
                        out.push(entry.clone());
                    }
                }
                // A resync marker sits after frame `previous`.
                Replay::Resync => {
                    if previous >= seq {
                        out.push(Replay::Resync);
                    }
                }
            }
        }
        Some(out)
    }

    /// The newest `n` ring entries, oldest first.
    pub fn tail(&self, n: usize) -> impl Iterator<Item = &Replay> {
        self.ring.iter().skip(self.ring.len().saturating_sub(n))
    }

    /// Ids of the events still held with `seq` ≤ `seq` (already delivered to the client).
    pub fn delivered_ids(&self, seq: u64) -> Vec<Uuid> {
        self.ring
            .iter()
            .filter_map(|e| match e {
                Replay::Event { seq: s, event, .. } if *s <= seq => Some(event.id),
                _ => None,
            })
            .collect()
    }

    /// Restores the state handed over by another instance.
    pub fn restore(&mut self, last_seq: u64, entries: Vec<Replay>) {
        self.seq = last_seq;
        self.ring.clear();
        self.ring_bytes = 0;
        let first = entries
            .iter()
            .find_map(|e| match e {
                Replay::Event { seq, .. } => Some(*seq),
                Replay::Resync => None,
            })
            .unwrap_or(last_seq + 1);
        self.lost_through = first.saturating_sub(1);
        for e in entries {
            self.remember(e);
        }
    }

    pub fn is_attached(&self) -> bool {
        self.conn.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: u32) -> Arc<Event> {
        Arc::new(Event::new(
            Uuid::now_v7(),
            Op::MessageCreated,
            &format!("{{\"n\":{n}}}"),
        ))
    }

    #[test]
    fn frames_splice_seq() {
        let e = Event::new(Uuid::now_v7(), Op::MessageCreated, r#"{"a":[1,2]}"#);
        let want = format!(
            r#"{{"op":"{}","data":{{"a":[1,2]}},"seq":42}}"#,
            Op::MessageCreated.name()
        );
        assert_eq!(e.frame(42).as_str(), want);
        let p = br#"{"id":"0190d3b4-2a9e-7000-8000-000000000000","op":"a.b","data":{"k":"v"}}"#;
        let head = Published::parse(p).unwrap();
        assert_eq!(head.op, "a.b");
        assert_eq!(head.data.get(), r#"{"k":"v"}"#);
    }

    #[test]
    fn dispatch_replay_and_resync() {
        let conn = Conn::new();
        let mut s = Session::new(Uuid::now_v7(), UserId::new(), None, Some(conn.clone()));
        let now = Instant::now();
        for i in 0..5 {
            s.dispatch(&ev(i), now);
        }
        assert_eq!(s.seq, 5);
        let (items, close) = conn.take();
        assert_eq!(items.len(), 5);
        assert!(close.is_none());
        assert_eq!(s.replay_after(2).unwrap().len(), 3);
        assert_eq!(s.replay_after(5).unwrap().len(), 0);
        assert!(s.replay_after(6).is_none());
        s.resync(&Utf8Bytes::from_static("{}"));
        assert!(s.replay_after(4).is_none());
        let r = s.replay_after(5).unwrap();
        assert!(matches!(r.as_slice(), [Replay::Resync]));
        s.dispatch(&ev(9), now);
        let r = s.replay_after(5).unwrap();
        assert!(matches!(r.as_slice(), [Replay::Resync, Replay::Event { seq: 6, .. }]));
        assert!(matches!(s.replay_after(6).unwrap().as_slice(), []));
    }

    #[test]
    fn ring_and_queue_bounds() {
        let conn = Conn::new();
        let mut s = Session::new(Uuid::now_v7(), UserId::new(), None, Some(conn.clone()));
        let now = Instant::now();
        for i in 0..QUEUE_FRAMES as u32 {
            assert!(matches!(s.dispatch(&ev(i), now), Dispatched::Queued));
        }
        assert!(matches!(s.dispatch(&ev(0), now), Dispatched::Overflowed));
        assert_eq!(conn.closing(), Some(Close::SLOW));
        assert!(!s.is_attached());
        // Detached: everything is kept, up to the ring bound.
        for i in 0..(RING_FRAMES as u32 + 10) {
            s.dispatch(&ev(i), now);
        }
        assert!(s.replay_after(0).is_none());
        let first = s.seq - RING_FRAMES as u64;
        assert_eq!(s.replay_after(first).unwrap().len(), RING_FRAMES);
        assert!(s.replay_after(first - 1).is_none());
    }
}
