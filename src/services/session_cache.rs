//! Live auth sessions remembered per process, so a request's session check costs no query.
//!
//! A cached session is only as good as the news of its revocation: every revocation is
//! forgotten here at once by the instance that makes it and published on the `revocations`
//! topic, which every instance taps at start (`Bus::tap`: applied on the bus's own task, before
//! any later subscription is acknowledged). While this process's bus subscriber is not
//! connected (or before the tap is in effect) the cache is bypassed; after a reconnect it
//! starts empty. A short TTL bounds what a lost message could cost. A check that started
//! before a revocation was forgotten never stores its (possibly stale) answer: see [`Ticket`].
//!
//! Because the tap runs before a subscription's barrier resolves, a socket that subscribed to
//! its session's topic may ask the cache instead of the database whether the session is still
//! live: a revocation published before the subscription has been forgotten by then, one
//! published after reaches the socket.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::functions::bus::{Bus, Topic};
use crate::functions::ids::{SessionId, UserId};
use crate::services::auth::{Auth, Grant};

/// At most this many sessions are remembered; beyond it expired ones are dropped, then all.
const CAPACITY: usize = 200_000;

/// The `revocations` message: the revocation keys (auth sessions, or a bot's user id) gone.
#[derive(Debug, Serialize, Deserialize)]
struct Revocations {
    keys: Vec<SessionId>,
}

#[derive(Deserialize)]
struct Envelope {
    data: Revocations,
}

#[derive(Clone)]
pub struct SessionCache {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    ttl: Duration,
    bus: Bus,
    /// Set once the `revocations` subscription is in effect.
    listening: AtomicBool,
}

#[derive(Default)]
struct State {
    entries: HashMap<SessionId, Entry>,
    /// Bumped by every forget and flush.
    generation: u64,
    /// The bus connection the entries were learnt on: revocations published while the
    /// subscriber was away were missed, so a new connection starts from nothing.
    connection: u64,
}

#[derive(Clone, Copy)]
struct Entry {
    user: UserId,
    grant: Grant,
    until: Instant,
}

/// Taken before a session is read from the database; [`SessionCache::remember`] stores the
/// answer only if nothing was forgotten meanwhile (the read may predate that revocation).
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

impl SessionCache {
    /// A cache fed by `bus`; a zero `ttl` disables it. Taps the `revocations` topic.
    pub fn start(bus: Bus, ttl: Duration) -> Self {
        let cache = SessionCache {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                ttl,
                bus,
                listening: AtomicBool::new(false),
            }),
        };
        if !ttl.is_zero() {
            let weak = Arc::downgrade(&cache.inner);
            let subscribed = cache.inner.bus.tap(
                &Topic::revocations(),
                Arc::new(move |payload: &[u8]| {
                    if let Some(inner) = weak.upgrade() {
                        SessionCache { inner }.apply(payload);
                    }
                }),
            );
            let weak = Arc::downgrade(&cache.inner);
            tokio::spawn(async move {
                subscribed.await;
                if let Some(inner) = weak.upgrade() {
                    inner.listening.store(true, Ordering::Release);
                }
            });
        }
        cache
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state, if the cache may be used now: enabled, listening, and the bus connected
    /// (flushed first if it reconnected since the entries were learnt).
    fn usable(&self) -> Option<MutexGuard<'_, State>> {
        if self.inner.ttl.is_zero() || !self.inner.listening.load(Ordering::Acquire) {
            return None;
        }
        let connection = self.inner.bus.connection()?;
        let mut state = self.state();
        if state.connection != connection {
            state.connection = connection;
            state.generation += 1;
            state.entries.clear();
        }
        Some(state)
    }

    /// Whether the grant is known to be live.
    pub fn is_live(&self, user: UserId, grant: Grant) -> bool {
        let Some(state) = self.usable() else {
            return false;
        };
        let hit = state
            .entries
            .get(&key_of(user, grant))
            .is_some_and(|e| e.user == user && e.grant == grant && e.until > Instant::now());
        metrics::counter!("alterego_session_cache_total", "result" => if hit { "hit" } else { "miss" }).increment(1);
        hit
    }

    pub fn ticket(&self) -> Ticket {
        Ticket(self.state().generation)
    }

    /// Remembers a grant just read as live, unless a revocation was forgotten since `ticket`.
    pub fn remember(&self, ticket: Ticket, auth: &Auth) {
        let Some(mut state) = self.usable() else {
            return;
        };
        let now = Instant::now();
        if state.generation != ticket.0 {
            return;
        }
        if state.entries.len() >= CAPACITY {
            state.entries.retain(|_, e| e.until > now);
            if state.entries.len() >= CAPACITY {
                state.entries.clear();
            }
        }
        state.entries.insert(
            auth.revocation_key(),
            Entry {
                user: auth.user_id,
                grant: auth.grant,
                until: now + self.inner.ttl,
            },
        );
    }

    /// Forgets revocation keys here, at once (the revoking instance does not wait for the bus).
    pub fn forget(&self, keys: &[SessionId]) {
        let mut state = self.state();
        state.generation += 1;
        for key in keys {
            state.entries.remove(key);
        }
    }

    /// A `revocations` message from the bus.
    fn apply(&self, payload: &[u8]) {
        match serde_json::from_slice::<Envelope>(payload) {
            Ok(envelope) => self.forget(&envelope.data.keys),
            Err(e) => {
                tracing::warn!(error = %e, "unreadable revocations message; session cache flushed");
                let mut state = self.state();
                state.generation += 1;
                state.entries.clear();
            }
        }
    }

    /// Forgets `keys` here and tells every other instance to.
    pub async fn announce(&self, keys: &[SessionId]) {
        if keys.is_empty() {
            return;
        }
        self.forget(keys);
        let message = Revocations { keys: keys.to_vec() };
        self.inner
            .bus
            .publish(&Topic::revocations(), "sessions.revoked", &message)
            .await;
    }
}

/// The key a grant is revoked by (as [`Auth::revocation_key`]).
fn key_of(user: UserId, grant: Grant) -> SessionId {
    match grant {
        Grant::Session(s) => s,
        Grant::Bot { .. } => SessionId(user.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn auth() -> Auth {
        Auth {
            user_id: UserId(Uuid::now_v7()),
            grant: Grant::Session(SessionId(Uuid::now_v7())),
        }
    }

    async fn cache() -> SessionCache {
        let cache = SessionCache::start(Bus::in_process(), Duration::from_secs(30));
        for _ in 0..100 {
            if cache.usable().is_some() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(cache.usable().is_some());
        cache
    }

    #[tokio::test]
    async fn a_remembered_session_is_live_until_forgotten() {
        let cache = cache().await;
        let a = auth();
        assert!(!cache.is_live(a.user_id, a.grant));
        cache.remember(cache.ticket(), &a);
        assert!(cache.is_live(a.user_id, a.grant));
        // Another user presenting the same session id is not the cached grant.
        assert!(!cache.is_live(UserId(Uuid::now_v7()), a.grant));
        cache.forget(&[a.revocation_key()]);
        assert!(!cache.is_live(a.user_id, a.grant));
    }

    #[tokio::test]
    async fn a_check_older_than_a_revocation_is_not_remembered() {
        let cache = cache().await;
        let a = auth();
        let ticket = cache.ticket();
        // The revocation is forgotten while the database read is in flight.
        cache.forget(&[a.revocation_key()]);
        cache.remember(ticket, &a);
        assert!(!cache.is_live(a.user_id, a.grant));
    }

    #[tokio::test]
    async fn revocations_published_on_the_bus_are_forgotten() {
        let cache = cache().await;
        let a = auth();
        cache.remember(cache.ticket(), &a);
        // As another instance would: publish without forgetting here first.
        let message = Revocations {
            keys: vec![a.revocation_key()],
        };
        cache
            .inner
            .bus
            .publish(&Topic::revocations(), "sessions.revoked", &message)
            .await;
        for _ in 0..100 {
            if !cache.is_live(a.user_id, a.grant) {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the published revocation was not applied");
    }

    #[tokio::test]
    async fn a_bot_generation_is_part_of_the_grant() {
        let cache = cache().await;
        let user = UserId(Uuid::now_v7());
        let bot = Auth {
            user_id: user,
            grant: Grant::Bot { generation: 1 },
        };
        cache.remember(cache.ticket(), &bot);
        assert!(cache.is_live(user, Grant::Bot { generation: 1 }));
        assert!(!cache.is_live(user, Grant::Bot { generation: 2 }));
        cache.forget(&[SessionId(user.0)]);
        assert!(!cache.is_live(user, Grant::Bot { generation: 1 }));
    }

    #[tokio::test]
    async fn a_zero_ttl_disables_the_cache() {
        let cache = SessionCache::start(Bus::in_process(), Duration::ZERO);
        let a = auth();
        cache.remember(cache.ticket(), &a);
        assert!(!cache.is_live(a.user_id, a.grant));
    }
}
