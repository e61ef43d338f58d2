//! The real-time gateway `GET /ws` (spec §7, §8; DESIGN.md "One binary, four surfaces").
//!
//! - `protocol`: inbound frame decoding and control payloads;
//! - `session`: sessions, `seq`, replay rings, bounded outbound queues;
//! - `view`: the in-memory state of a space that delivery authorization reads;
//! - `hub`: topic → local sessions, delivery authorization, resume and take-over — decisions
//!   only, returned as effects;
//! - `runtime`: executes the hub's effects (subscriptions, loads, presence, registry);
//! - `shared`: the session registry, presence and typing throttle (Redis or memory);
//! - `connection`: one socket's state machine;
//! - `openapi`: the `websocket` key of `/api.json`.
//!
//! The process holds one bus subscription (the bus multiplexes every topic); one dispatcher task
//! applies its messages to the hub in order.

pub mod connection;
pub mod hub;
pub mod openapi;
pub mod protocol;
mod runtime;
pub mod session;
pub mod shared;
pub mod view;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::ws::{Utf8Bytes, WebSocket};
use tokio::sync::{broadcast, mpsc, oneshot};
use uuid::Uuid;

use self::hub::{Added, Hub, LocalResume, TakeoverReply, TakeoverRequest, TypingTarget};
use self::protocol::{InvalidReason, Presence, PresenceStatus, ReadyPayload, TypingUpdate};
use self::session::{Close, Conn, Item, Session};
use self::shared::{Entry, Shared};
use crate::config::Config;
use crate::entities::sessions::{self, SessionState};
use crate::entities::users::{self, UserExt};
use crate::error::{Error, ErrorCode};
use crate::events::{self, Conversation};
use crate::functions::bus::{Bus, Inbound, Topic};
use crate::functions::ids::{ChannelId, SessionId, UserId};
use crate::functions::jwt::JwtKeys;
use crate::services::auth::{Auth, Grant, PendingAuth};
use crate::services::session_cache::SessionCache;

/// The socket buffers (DESIGN.md "WebSocket memory"): commands are a few hundred bytes; a larger
/// inbound frame (≤ 8 KiB) grows the read buffer as it arrives.
pub const READ_BUFFER: usize = 2048;
pub const WRITE_BUFFER: usize = 4096;
/// How long a resume waits for the owning instance to hand a session over (spec §8.5).
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(2);
/// How long authentication may take to load the user's state before giving up (4000).
const LOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The gateway: shared by every connection and the dispatcher. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    instance: Uuid,
    config: Arc<Config>,
    db: sqlx::PgPool,
    jwt: Arc<JwtKeys>,
    sessions: SessionCache,
    bus: Bus,
    shared: Shared,
    hub: Mutex<Hub>,
    presence: mpsc::UnboundedSender<PresenceCmd>,
    registry: mpsc::UnboundedSender<RegistryCmd>,
    takeovers: Mutex<HashMap<Uuid, oneshot::Sender<TakeoverReply>>>,
    draining: AtomicBool,
    open: AtomicUsize,
    /// Held while the instance heartbeat is written or removed, so that a beat in flight cannot
    /// land after the draining instance removed it.
    beat: tokio::sync::Mutex<()>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Hub> {
        self.hub.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Presence changes of local users (processed in order by one task).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PresenceCmd {
    /// The user's first attached session on this instance.
    Attached(UserId),
    /// The user's last attached session on this instance went away.
    Detached(UserId),
    /// The users attached here now (periodic report renewal).
    Refresh(Vec<UserId>),
}

/// Session registry writes (processed in order by one task).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RegistryCmd {
    Attached(Uuid, UserId, Option<SessionId>),
    Detached(Uuid, UserId, Option<SessionId>),
    /// Handed over to another instance.
    Moved(Uuid, UserId, Option<SessionId>, Uuid),
    Remove(Uuid),
    Refresh(Vec<Uuid>),
}

/// The ops of the take-over protocol on `instance:` topics (spec §8.5): between instances only,
/// never delivered to a client.
pub(crate) const TAKEOVER_REQUEST: &str = "takeover.request";
pub(crate) const TAKEOVER_REPLY: &str = "takeover.reply";

/// A resumed session: how many frames were replayed.
pub struct Resumed {
    pub replayed: u64,
}

impl Gateway {
    /// Starts the gateway's tasks: the dispatcher (one bus stream for the whole process),
    /// housekeeping, presence and the registry writer.
    pub fn start(
        config: Arc<Config>,
        db: sqlx::PgPool,
        jwt: Arc<JwtKeys>,
        sessions: SessionCache,
        bus: Bus,
        redis: Option<redis::aio::ConnectionManager>,
    ) -> Self {
        let (presence_tx, presence_rx) = mpsc::unbounded_channel();
        let (registry_tx, registry_rx) = mpsc::unbounded_channel();
        let inbound = bus.inbound();
        let instance = Uuid::now_v7();
        let config_presence_limit = config.presence_space_limit;
        let inner = Arc::new(Inner {
            instance,
            shared: Shared::new(redis, config.redis_prefix.clone()),
            config,
            db,
            jwt,
            sessions,
            bus,
            hub: Mutex::new(Hub::new(instance, config_presence_limit)),
            presence: presence_tx,
            registry: registry_tx,
            takeovers: Mutex::new(HashMap::new()),
            draining: AtomicBool::new(false),
            open: AtomicUsize::new(0),
            beat: tokio::sync::Mutex::new(()),
        });
        if inner.bus.is_shared() {
            drop(inner.bus.subscribe_now(&Topic::instance(instance)));
            tokio::spawn(heartbeat(Arc::downgrade(&inner)));
        }
        tokio::spawn(dispatcher(Arc::downgrade(&inner), inbound));
        tokio::spawn(housekeeping(Arc::downgrade(&inner)));
        tokio::spawn(presence_task(Arc::downgrade(&inner), presence_rx));
        tokio::spawn(registry_task(Arc::downgrade(&inner), registry_rx));
        Gateway { inner }
    }

    /// This process's instance id (spec §8.2).
    pub fn instance_id(&self) -> Uuid {
        self.inner.instance
    }

    /// Sessions held by this instance (attached or detached).
    pub fn session_count(&self) -> usize {
        self.inner.lock().session_count()
    }

    /// Whether a session held here is attached to a connection (`None`: not held here).
    pub fn is_attached(&self, session: Uuid) -> Option<bool> {
        self.inner.lock().is_attached(session)
    }

    /// Serves an upgraded socket until it closes; `token` came in the upgrade's query string.
    pub async fn serve(self, socket: WebSocket, token: Option<String>) {
        connection::run(socket, self, token).await
    }

    /// Verifies a token as the REST extractors do (spec §7.3).
    pub async fn verify(&self, token: &str) -> Result<Auth, Error> {
        Auth::verify(&self.inner.jwt, &self.inner.db, &self.inner.sessions, token).await
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Open WebSocket connections on this instance.
    pub fn open_connections(&self) -> usize {
        self.inner.open.load(Ordering::SeqCst)
    }

    /// `authenticate` (spec §7.3): verifies `token`, creates a session attached to `conn`, with
    /// `ready` queued first; returns once every subscription is in effect and the user's state
    /// is loaded. Costs one query for the session and the user (none for the session when the
    /// cache knows it) plus, for a user not yet connected here, one for its spaces and relations.
    pub async fn authenticate(&self, token: &str, conn: &Arc<Conn>) -> Result<(Uuid, UserId), Close> {
        let inner = &self.inner;
        let pending = PendingAuth::verify(&inner.jwt, token).map_err(close_for)?;
        let (auth, user) = self.caller(pending).await?;
        let sid = Uuid::now_v7();
        let ready = protocol::control(
            "ready",
            &ReadyPayload {
                session_id: sid,
                heartbeat_interval_ms: millis(inner.config.ws_heartbeat_interval),
                resume_window_ms: millis(inner.config.ws_resume_window),
                user,
            },
        );
        conn.push(Item::Control(Utf8Bytes::from(ready)));
        let added = inner.with_hub(|hub, fx| {
            hub.add_session(
                fx,
                Session::new(sid, auth.user_id, Some(auth.revocation_key()), Some(conn.clone())),
            )
        });
        if !self.loaded(added).await {
            inner.with_hub(|hub, fx| hub.destroy_session(fx, sid, true));
            return Err(Close::UNKNOWN);
        }
        // A revocation published before the session topic was subscribed was missed by the
        // topic, but not by the session cache (`Bus::tap`): a cached session is still live.
        if !inner.sessions.is_live(auth.user_id, auth.grant) && !auth.is_live(&inner.db).await {
            inner.with_hub(|hub, fx| hub.destroy_session(fx, sid, true));
            return Err(Close::AUTH_FAILED);
        }
        Ok((sid, auth.user_id))
    }

    /// The verified caller and its user: one query for both when the session is not cached.
    async fn caller(&self, pending: PendingAuth) -> Result<(Auth, UserExt), Close> {
        let (db, cache) = (&self.inner.db, &self.inner.sessions);
        let (auth, user) = match pending.session_id() {
            Some(session) if !cache.is_live(pending.user_id, pending.grant) => {
                let ticket = cache.ticket();
                let (state, user) = users::get_ext_with_session(db, pending.user_id, session)
                    .await
                    .map_err(close_for)?;
                let auth = pending.resolve(state).map_err(close_for)?;
                cache.remember(ticket, &auth);
                (auth, user)
            }
            _ => {
                let auth = pending.check_cached(db, cache).await.map_err(close_for)?;
                (auth, users::get_ext(db, auth.user_id).await.map_err(close_for)?)
            }
        };
        Ok((auth, user.ok_or(Close::AUTH_FAILED)?))
    }

    /// Waits (at most `LOAD_TIMEOUT`) until a new session's subscriptions are in effect and its
    /// user's state is loaded; `false` if it could not be.
    async fn loaded(&self, added: Added) -> bool {
        tokio::time::timeout(LOAD_TIMEOUT, async {
            self.inner.bus.barrier().await;
            match added.ready {
                None => true,
                Some(rx) => rx.await.unwrap_or(false),
            }
        })
        .await
        .unwrap_or(false)
    }

    /// Whether a stored revocation key is live: an auth session, or for a bot (whose key is its
    /// user id) that the bot still exists — a regeneration already closed its older sessions,
    /// and the resuming token was checked against the current generation.
    async fn auth_session_live(&self, user: UserId, auth: SessionId) -> bool {
        if self.inner.sessions.is_live(user, Grant::Session(auth)) {
            return true;
        }
        if auth.0 == user.0 {
            return matches!(
                crate::entities::bots::credential(&self.inner.db, user).await,
                Ok(Some(_))
            );
        }
        matches!(
            sessions::state(&self.inner.db, user, auth).await,
            Ok(SessionState::Live)
        )
    }

    /// `resume` (spec §7.6, §8.5): on success the replay and `resumed` are queued on `conn`.
    pub async fn resume(&self, auth: Auth, sid: Uuid, seq: u64, conn: &Arc<Conn>) -> Result<Resumed, InvalidReason> {
        let result = self.try_resume(auth, sid, seq, conn).await;
        let outcome = if result.is_ok() { "succeeded" } else { "failed" };
        metrics::counter!("alterego_ws_resumes_total", "result" => outcome).increment(1);
        result
    }

    async fn try_resume(&self, auth: Auth, sid: Uuid, seq: u64, conn: &Arc<Conn>) -> Result<Resumed, InvalidReason> {
        let inner = &self.inner;
        let found = inner.lock().find_for_resume(sid, auth.user_id);
        match found {
            LocalResume::Failed(reason) => Err(reason),
            LocalResume::Found { auth: owner } => {
                if let Some(a) = owner
                    && !self.auth_session_live(auth.user_id, a).await
                {
                    return Err(InvalidReason::Expired);
                }
                let replayed = inner.with_hub(|hub, fx| hub.resume_local(fx, sid, auth.user_id, seq, conn))?;
                Ok(Resumed { replayed })
            }
            LocalResume::NotHere => self.take_over(auth, sid, seq, conn).await,
        }
    }

    /// Resume of a session another instance owns (spec §8.5).
    async fn take_over(&self, auth: Auth, sid: Uuid, seq: u64, conn: &Arc<Conn>) -> Result<Resumed, InvalidReason> {
        let inner = &self.inner;
        if !inner.bus.is_shared() {
            return Err(InvalidReason::Unknown);
        }
        let entry: Entry = inner.shared.lookup(sid).await.ok_or(InvalidReason::Unknown)?;
        if entry.user != auth.user_id {
            return Err(InvalidReason::UserMismatch);
        }
        if entry.instance == inner.instance {
            return Err(InvalidReason::Unknown);
        }
        if let Some(a) = entry.auth
            && !self.auth_session_live(entry.user, a).await
        {
            return Err(InvalidReason::Expired);
        }
        // 2. Subscribe to the session's topics and buffer live events (keyed by event id).
        let added = inner.with_hub(|hub, fx| {
            if !matches!(hub.find_for_resume(sid, auth.user_id), LocalResume::NotHere) {
                return None;
            }
            let mut placeholder = Session::new(sid, entry.user, entry.auth, None);
            placeholder.pending = Some(session::Pending::default());
            Some(hub.add_session(fx, placeholder))
        });
        let added = added.ok_or(InvalidReason::Unknown)?;
        let fail = |reason| {
            inner.with_hub(|hub, fx| hub.destroy_session(fx, sid, false));
            Err(reason)
        };
        if !self.loaded(added).await {
            return fail(InvalidReason::Unknown);
        }
        // The owner stopped with nobody to hand its sessions to and parked them in Redis.
        if let Some((parked, bodies)) = inner.shared.unpark(sid).await {
            if parked.user != auth.user_id {
                return fail(InvalidReason::UserMismatch);
            }
            let done = inner.with_hub(|hub, fx| hub.complete_unpark(fx, sid, parked, &bodies, seq, conn));
            return match done {
                Ok(replayed) => Ok(Resumed { replayed }),
                Err(reason) => fail(reason),
            };
        }
        // 3. Ask the owner; 6. give up after 2 s.
        let request_id = Uuid::now_v7();
        let (tx, rx) = oneshot::channel();
        inner
            .takeovers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(request_id, tx);
        let request = TakeoverRequest {
            request_id,
            session_id: sid,
            seq,
            from: inner.instance,
        };
        inner
            .bus
            .publish(&Topic::instance(entry.instance), TAKEOVER_REQUEST, &request)
            .await;
        let reply = tokio::time::timeout(TAKEOVER_TIMEOUT, rx).await;
        inner
            .takeovers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&request_id);
        let reply = match reply {
            Ok(Ok(r)) if r.ok => r,
            Ok(Ok(r)) => return fail(r.reason.unwrap_or(InvalidReason::Unknown)),
            _ => return fail(InvalidReason::Unknown),
        };
        // 5. Replay, `resumed`, then the buffered live events not in the replay.
        let done = inner.with_hub(|hub, fx| hub.complete_takeover(fx, sid, reply, conn));
        match done {
            Ok(replayed) => Ok(Resumed { replayed }),
            Err(reason) => fail(reason),
        }
    }

    /// The socket of a session went away (`end`: the session ends with it).
    pub fn detach(&self, sid: Uuid, conn: &Arc<Conn>, end: bool) {
        let inner = &self.inner;
        inner.with_hub(|hub, fx| hub.detach(fx, sid, conn, end));
    }

    /// `typing.start` (spec §7.4): checked against local state, throttled across instances.
    pub async fn typing(&self, user: UserId, channel: ChannelId) {
        let inner = &self.inner;
        let target = inner.lock().typing_target(user, channel);
        let Some(target) = target else {
            return;
        };
        if !inner.shared.typing_allowed(user, channel).await {
            return;
        }
        let data = TypingUpdate {
            channel_id: channel,
            user_id: user,
        };
        let conversation = match target {
            TypingTarget::Space(space) => Conversation::Space(space),
            TypingTarget::Dm(other) => Conversation::Dm(user, other),
        };
        events::Event::Typing(conversation, &data).publish(&inner.bus).await;
    }

    /// The presence of each of `users`, in order (spec §12.8).
    pub async fn presence(&self, users: &[UserId]) -> Vec<Presence> {
        let online = self.inner.shared.online(users).await;
        users
            .iter()
            .zip(online)
            .map(|(u, on)| Presence {
                user_id: *u,
                status: if on {
                    PresenceStatus::Online
                } else {
                    PresenceStatus::Offline
                },
            })
            .collect()
    }

    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// Graceful shutdown (spec §8.6): sockets close with 1001 and sessions stay resumable;
    /// take-over requests are served until no session is left here, the resume window passes,
    /// `SHUTDOWN_DRAIN` does, or no other instance is alive to take a session over.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.draining.store(true, Ordering::SeqCst);
        {
            // Other draining instances must not wait for this one.
            let _beat = inner.beat.lock().await;
            inner.shared.instance_leave(inner.instance).await;
        }
        inner.with_hub(|hub, fx| hub.close_all(fx));
        let drain = inner.config.shutdown_drain.min(inner.config.ws_resume_window);
        let deadline = tokio::time::Instant::now() + drain;
        // Give the sockets their close frames.
        let flushed = tokio::time::Instant::now() + drain.min(Duration::from_secs(2));
        while inner.open.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < flushed {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !inner.bus.is_shared() {
            return; // No other instance can take a session over.
        }
        let mut next_look = tokio::time::Instant::now();
        loop {
            let sessions = inner.lock().session_count();
            let now = tokio::time::Instant::now();
            // What is left when the wait ends is parked once the instance stopped serving
            // (`park`): until then its sessions' rings keep receiving events.
            if sessions == 0 || now >= deadline {
                return;
            }
            // Looked up once a second: an instance started during the drain can still take over.
            if now >= next_look {
                if !inner.shared.others_alive(inner.instance).await {
                    tracing::info!(
                        sessions,
                        "no other instance is alive to take this instance's sessions over"
                    );
                    return;
                }
                next_look = now + Duration::from_secs(1);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Gateway {
    /// Takes over the sessions a stopped instance parked in Redis, before this instance serves
    /// anything: events published from then on reach their replay rings, so a client that
    /// resumes later misses nothing. Waits (at most `LOAD_TIMEOUT`) for their subscriptions.
    pub async fn adopt_parked(&self) {
        let inner = &self.inner;
        let (parked, bodies) = inner.shared.unpark_all().await;
        if parked.is_empty() {
            return;
        }
        let found = parked.len();
        let added: Vec<Added> = inner.with_hub(|hub, fx| {
            parked
                .into_iter()
                .filter_map(|(sid, p)| hub.adopt(fx, sid, p, &bodies))
                .collect()
        });
        let adopted = added.len();
        let loaded = tokio::time::timeout(LOAD_TIMEOUT, async {
            inner.bus.barrier().await;
            for a in added {
                if let Some(rx) = a.ready {
                    let _ = rx.await;
                }
            }
        })
        .await
        .is_ok();
        tracing::info!(found, adopted, loaded, "adopted the sessions a stopped instance parked");
    }

    /// After the drain, once this instance no longer serves requests (so it publishes nothing
    /// more): writes the sessions still here to Redis, for the next instance to start (or any
    /// other) to resume with their replay.
    pub async fn park(&self) {
        let inner = &self.inner;
        if !inner.bus.is_shared() {
            return;
        }
        let parking = inner.lock().park_all(inner.instance);
        if parking.sessions.is_empty() {
            return;
        }
        let window = inner.config.ws_resume_window;
        let parked = inner.shared.park(&parking, inner.instance, window).await;
        tracing::info!(
            sessions = parked,
            events = parking.events.len(),
            "parked sessions in Redis for the next instance"
        );
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Applies the bus stream to the hub, in order.
async fn dispatcher(inner: std::sync::Weak<Inner>, mut inbound: broadcast::Receiver<Inbound>) {
    loop {
        let msg = inbound.recv().await;
        let Some(inner) = inner.upgrade() else { return };
        match msg {
            Ok(Inbound::Message(m)) => inner.with_hub(|hub, fx| hub.handle(fx, &m.topic, m.payload)),
            Ok(Inbound::Resync) => inner.with_hub(|hub, fx| hub.resync(fx)),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "gateway fell behind the bus; sessions resync");
                inner.with_hub(|hub, fx| hub.resync(fx));
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Keeps this instance's heartbeat alive until it drains (see [`Shared::others_alive`]).
async fn heartbeat(inner: std::sync::Weak<Inner>) {
    let mut tick = tokio::time::interval(shared::INSTANCE_BEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let _beat = inner.beat.lock().await;
        if inner.draining.load(Ordering::SeqCst) {
            return;
        }
        inner.shared.instance_beat(inner.instance).await;
    }
}

async fn housekeeping(inner: std::sync::Weak<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let window = inner.config.ws_resume_window;
        inner.with_hub(|hub, fx| hub.housekeeping(fx, window));
    }
}

async fn presence_task(inner: std::sync::Weak<Inner>, mut rx: mpsc::UnboundedReceiver<PresenceCmd>) {
    let debounce = match inner.upgrade() {
        Some(i) => i.config.presence_offline_debounce,
        None => return,
    };
    let mut tick = tokio::time::interval((debounce / 4).clamp(Duration::from_millis(50), Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { return };
                let Some(inner) = inner.upgrade() else { return };
                match cmd {
                    PresenceCmd::Attached(user) => {
                        if inner.shared.presence_attach(inner.instance, user).await {
                            publish_presence(&inner, user, PresenceStatus::Online).await;
                        }
                    }
                    PresenceCmd::Detached(user) => inner.shared.presence_detach(inner.instance, user).await,
                    PresenceCmd::Refresh(users) => inner.shared.presence_refresh(inner.instance, &users).await,
                }
            }
            _ = tick.tick() => {
                let Some(inner) = inner.upgrade() else { return };
                for user in inner.shared.presence_sweep(debounce).await {
                    publish_presence(&inner, user, PresenceStatus::Offline).await;
                }
            }
        }
    }
}

async fn publish_presence(inner: &Inner, user: UserId, status: PresenceStatus) {
    let data = Presence { user_id: user, status };
    events::Event::PresenceUpdated(&data).publish(&inner.bus).await;
}

async fn registry_task(inner: std::sync::Weak<Inner>, mut rx: mpsc::UnboundedReceiver<RegistryCmd>) {
    while let Some(cmd) = rx.recv().await {
        let Some(inner) = inner.upgrade() else { return };
        if !inner.bus.is_shared() {
            continue;
        }
        let window = inner.config.ws_resume_window;
        let entry = |user, auth, instance| Entry { user, auth, instance };
        match cmd {
            RegistryCmd::Attached(sid, user, auth) => {
                inner
                    .shared
                    .put(sid, &entry(user, auth, inner.instance), true, window)
                    .await
            }
            RegistryCmd::Detached(sid, user, auth) => {
                inner
                    .shared
                    .put(sid, &entry(user, auth, inner.instance), false, window)
                    .await
            }
            RegistryCmd::Moved(sid, user, auth, to) => {
                inner.shared.put(sid, &entry(user, auth, to), true, window).await
            }
            RegistryCmd::Remove(sid) => inner.shared.remove(sid).await,
            RegistryCmd::Refresh(sids) => inner.shared.refresh(&sids).await,
        }
    }
}

/// A token that fails verification closes with 4004; a server error with 4000.
pub(crate) fn close_for(e: Error) -> Close {
    if e.code() == ErrorCode::InternalError {
        Close::UNKNOWN
    } else {
        Close::AUTH_FAILED
    }
}
