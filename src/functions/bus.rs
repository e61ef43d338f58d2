//! The event bus (DESIGN.md "One binary, four surfaces"): topics in, one process-wide stream of
//! subscribed topics' events out. Two backends with the same semantics: in-process (single
//! instance) and Redis pub/sub (any number of instances). A process holds ONE Redis subscriber
//! connection multiplexing all topics, plus the pooled connection used for PUBLISH.
//!
//! Events are serialised once, at publish, into `{"id","op","data"}`; the gateway splices its
//! per-session `seq` into those bytes rather than re-serialising.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot};
use uuid::Uuid;

use crate::functions::ids::{ChannelId, SessionId, UserId};

/// Capacity of the process-wide inbound stream; a receiver that lags behind it must resync.
const INBOUND_CAPACITY: usize = 65_536;
const PUBLISH_ATTEMPTS: u32 = 3;
/// How many recent event ids the subscriber remembers to drop a repeated publish (see
/// [`RecentIds`]); far more than a retry's few hundred milliseconds of events.
const RECENT_IDS: usize = 16_384;

/// How alterego's pooled Redis connections behave when Redis is gone: a command fails within
/// about a second instead of retrying the reconnection inside the request (redis-rs's default
/// of six retries with back-off held every message send for ~19 s during an outage, issue 17);
/// the manager reconnects on the next command.
pub fn redis_manager_config() -> redis::aio::ConnectionManagerConfig {
    redis::aio::ConnectionManagerConfig::new()
        .set_number_of_retries(1)
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(2)))
}

/// A bus topic. Names are informative (spec §8.3); the constructors are the only way to make one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(Arc<str>);

impl Topic {
    /// Every session of one user (`→self`, `→U(x)`), and control messages about the user.
    pub fn user(id: UserId) -> Self {
        Topic(format!("user:{id}").into())
    }
    /// A user's profile audience (`→P(x)`): the user's own sessions and everyone who may see the
    /// profile subscribe to it, so a profile update is one publish.
    pub fn profile(id: UserId) -> Self {
        Topic(format!("profile:{id}").into())
    }
    /// Control messages for one auth session (revocation closes its sockets).
    pub fn session(id: SessionId) -> Self {
        Topic(format!("session:{id}").into())
    }
    /// Members of one space.
    pub fn space(id: Uuid) -> Self {
        Topic(format!("space:{id}").into())
    }
    /// The instances holding one document's collab room (spec §9.4 `collab:{channelId}`).
    pub fn collab(id: ChannelId) -> Self {
        Topic(format!("collab:{id}").into())
    }
    /// Control messages for one instance (spec §8.3 `instance:{instanceId}`: resume take-over).
    pub fn instance(id: Uuid) -> Self {
        Topic(format!("instance:{id}").into())
    }
    /// Revoked auth sessions, for every instance's session cache.
    pub fn revocations() -> Self {
        Topic("revocations".into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// What the topic is about (the inverse of the constructors).
    pub fn kind(&self) -> TopicKind {
        let Some((kind, id)) = self.0.split_once(':') else {
            return TopicKind::Other;
        };
        let Ok(id) = Uuid::parse_str(id) else {
            return TopicKind::Other;
        };
        match kind {
            "user" => TopicKind::User(UserId(id)),
            "profile" => TopicKind::Profile(UserId(id)),
            "session" => TopicKind::Session(SessionId(id)),
            "space" => TopicKind::Space(id),
            "instance" => TopicKind::Instance(id),
            "collab" => TopicKind::Collab(ChannelId(id)),
            _ => TopicKind::Other,
        }
    }
}

/// A parsed [`Topic`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    User(UserId),
    Profile(UserId),
    Session(SessionId),
    Space(Uuid),
    Instance(Uuid),
    Collab(ChannelId),
    Other,
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One delivered event: its topic and the serialised `{"id","op","data"}` object.
#[derive(Debug, Clone)]
pub struct BusMessage {
    pub topic: Topic,
    pub payload: Bytes,
}

/// A synchronous consumer of one topic (see [`Bus::tap`]).
pub type Tap = Arc<dyn Fn(&[u8]) + Send + Sync>;
type Taps = Arc<std::sync::RwLock<HashMap<Topic, Tap>>>;

/// What the process-wide stream carries.
#[derive(Debug, Clone)]
pub enum Inbound {
    Message(BusMessage),
    /// The subscriber lost its connection (events may have been missed); consumers must resync.
    Resync,
}

#[derive(Serialize)]
struct Envelope<'a, T: Serialize> {
    id: Uuid,
    op: &'a str,
    data: &'a T,
}

/// Serialises an event once.
pub fn encode<T: Serialize>(op: &str, data: &T) -> Result<Bytes, serde_json::Error> {
    serde_json::to_vec(&Envelope {
        id: Uuid::now_v7(),
        op,
        data,
    })
    .map(Bytes::from)
}

#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

struct Inner {
    inbound: broadcast::Sender<Inbound>,
    /// Local subscription counts: a topic is subscribed while its count is above zero.
    topics: Mutex<HashMap<Topic, usize>>,
    backend: Backend,
    /// The subscriber's connection number (1, 2, … per reconnect), 0 while it is not
    /// connected: events published now are received only while it is non-zero.
    connection: Arc<AtomicU64>,
    taps: Taps,
}

enum Backend {
    InProcess,
    Redis {
        publisher: redis::aio::ConnectionManager,
        prefix: String,
        commands: mpsc::UnboundedSender<SubCommand>,
    },
}

enum SubCommand {
    Subscribe(Topic, oneshot::Sender<()>),
    Unsubscribe(Topic),
    /// Answered once every earlier command has been applied.
    Barrier(oneshot::Sender<()>),
}

impl Bus {
    pub fn in_process() -> Self {
        let (inbound, _) = broadcast::channel(INBOUND_CAPACITY);
        Bus {
            inner: Arc::new(Inner {
                inbound,
                topics: Mutex::new(HashMap::new()),
                backend: Backend::InProcess,
                connection: Arc::new(AtomicU64::new(1)),
                taps: Taps::default(),
            }),
        }
    }

    /// Connects the publisher and starts the single subscriber task. `prefix` namespaces topics.
    pub async fn redis(client: redis::Client, prefix: String) -> redis::RedisResult<Self> {
        let publisher = client
            .get_connection_manager_with_config(redis_manager_config())
            .await?;
        let first = client.get_async_pubsub().await?;
        let (inbound, _) = broadcast::channel(INBOUND_CAPACITY);
        let (tx, rx) = mpsc::unbounded_channel();
        let connection = Arc::new(AtomicU64::new(0));
        let taps = Taps::default();
        tokio::spawn(subscriber_task(
            client,
            first,
            prefix.clone(),
            rx,
            Outlet {
                inbound: inbound.clone(),
                taps: taps.clone(),
                recent: RecentIds::new(RECENT_IDS),
            },
            connection.clone(),
        ));
        Ok(Bus {
            inner: Arc::new(Inner {
                inbound,
                topics: Mutex::new(HashMap::new()),
                backend: Backend::Redis {
                    publisher,
                    prefix,
                    commands: tx,
                },
                connection,
                taps,
            }),
        })
    }

    /// The process-wide stream of events on subscribed topics.
    pub fn inbound(&self) -> broadcast::Receiver<Inbound> {
        self.inner.inbound.subscribe()
    }

    /// Subscribes this process to a topic; returns once the subscription is in effect, so an
    /// event published afterwards (on any instance) is received.
    pub async fn subscribe(&self, topic: &Topic) {
        self.subscribe_now(topic).await
    }

    /// Registers a subscription immediately, in call order with every other (un)subscription,
    /// and returns a future that resolves once it is in effect. Lets a caller holding a lock
    /// register without awaiting.
    pub fn subscribe_now(&self, topic: &Topic) -> impl Future<Output = ()> + Send + 'static {
        let first = {
            let mut topics = self.inner.topics.lock().unwrap_or_else(|p| p.into_inner());
            let n = topics.entry(topic.clone()).or_insert(0);
            *n += 1;
            *n == 1
        };
        let done = match &self.inner.backend {
            Backend::Redis { commands, .. } => {
                let (ack, done) = oneshot::channel();
                let cmd = if first {
                    SubCommand::Subscribe(topic.clone(), ack)
                } else {
                    SubCommand::Barrier(ack)
                };
                commands.send(cmd).is_ok().then_some(done)
            }
            Backend::InProcess => None,
        };
        async move {
            if let Some(done) = done {
                let _ = done.await;
            }
        }
    }

    /// Hands every event of `topic` to `tap`, on the subscriber's task and in order with
    /// [`barrier`](Self::barrier): an event that Redis sent before a subscription took effect
    /// has been tapped when that subscription's barrier resolves. Tapped events do not go to
    /// the [`inbound`](Self::inbound) stream. Returns once the subscription is in effect.
    pub fn tap(&self, topic: &Topic, tap: Tap) -> impl Future<Output = ()> + Send + 'static {
        self.inner
            .taps
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(topic.clone(), tap);
        self.subscribe_now(topic)
    }

    /// Drops one subscription; the last one unsubscribes the process (returns once done).
    pub async fn unsubscribe(&self, topic: &Topic) {
        self.unsubscribe_now(topic);
        self.barrier().await
    }

    /// Drops one subscription immediately (in call order); the last one unsubscribes the process.
    pub fn unsubscribe_now(&self, topic: &Topic) {
        let last = {
            let mut topics = self.inner.topics.lock().unwrap_or_else(|p| p.into_inner());
            match topics.get_mut(topic) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                Some(_) => {
                    topics.remove(topic);
                    true
                }
                None => false,
            }
        };
        if last && let Backend::Redis { commands, .. } = &self.inner.backend {
            let _ = commands.send(SubCommand::Unsubscribe(topic.clone()));
        }
    }

    /// Resolves once every (un)subscription registered before this call is in effect.
    pub fn barrier(&self) -> impl Future<Output = ()> + Send + 'static {
        let done = match &self.inner.backend {
            Backend::Redis { commands, .. } => {
                let (ack, done) = oneshot::channel();
                commands.send(SubCommand::Barrier(ack)).is_ok().then_some(done)
            }
            Backend::InProcess => None,
        };
        async move {
            if let Some(done) = done {
                let _ = done.await;
            }
        }
    }

    /// The subscriber's current connection (a new number after each reconnect), `None` while
    /// it is not connected: only then do events published now reach this process.
    pub fn connection(&self) -> Option<u64> {
        Some(self.inner.connection.load(Ordering::Acquire)).filter(|&n| n != 0)
    }

    /// Whether this bus is shared through Redis (several instances).
    pub fn is_shared(&self) -> bool {
        matches!(self.inner.backend, Backend::Redis { .. })
    }

    fn is_subscribed(&self, topic: &Topic) -> bool {
        self.inner
            .topics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(topic)
    }

    /// Publishes one event. Failures are logged and retried briefly, never returned: the write
    /// that produced the event has already committed (spec §8.1).
    pub async fn publish<T: Serialize>(&self, topic: &Topic, op: &str, data: &T) {
        match encode(op, data) {
            Ok(payload) => self.publish_raw(topic, payload).await,
            Err(e) => tracing::error!(%topic, op, error = %e, "event serialisation failed"),
        }
    }

    /// Publishes bytes made by [`encode`]. Each encoded event has its own id, and subscribers
    /// drop an id they have just seen, so the same bytes must not be published to two topics.
    pub async fn publish_raw(&self, topic: &Topic, payload: Bytes) {
        metrics::counter!("alterego_events_published_total").increment(1);
        match &self.inner.backend {
            Backend::InProcess => {
                let tap = self
                    .inner
                    .taps
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(topic)
                    .cloned();
                if let Some(tap) = tap {
                    tap(&payload);
                } else if self.is_subscribed(topic) {
                    let _ = self.inner.inbound.send(Inbound::Message(BusMessage {
                        topic: topic.clone(),
                        payload,
                    }));
                }
            }
            Backend::Redis { publisher, prefix, .. } => {
                let channel = format!("{prefix}:{topic}");
                for attempt in 1..=PUBLISH_ATTEMPTS {
                    let mut conn = publisher.clone();
                    let res: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                        .arg(&channel)
                        .arg(payload.as_ref())
                        .query_async(&mut conn)
                        .await;
                    match res {
                        Ok(_) => return,
                        Err(e) if attempt == PUBLISH_ATTEMPTS => {
                            tracing::error!(%topic, error = %e, "event lost: publish failed");
                        }
                        Err(e) => {
                            tracing::warn!(%topic, error = %e, attempt, "publish failed, retrying");
                            tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
                        }
                    }
                }
            }
        }
    }

    /// Whether the backend answers (for `/readyz`).
    pub async fn ping(&self) -> bool {
        match &self.inner.backend {
            Backend::InProcess => true,
            Backend::Redis { publisher, .. } => {
                let mut conn = publisher.clone();
                redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok()
            }
        }
    }
}

/// Channels per SUBSCRIBE command when many are (re-)subscribed at once.
const SUBSCRIBE_BATCH: usize = 512;

/// The ids of the last events received, so that an event published twice reaches consumers
/// once. A `PUBLISH` that timed out may still have reached Redis; its retry (same bytes, same
/// id) must not deliver the event again — under overload that repeated a message to every
/// member of an 18,000-member space.
struct RecentIds {
    set: HashSet<Uuid>,
    order: VecDeque<Uuid>,
    capacity: usize,
}

impl RecentIds {
    fn new(capacity: usize) -> Self {
        RecentIds {
            set: HashSet::with_capacity(capacity),
            order: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    /// Whether `payload` is an event seen for the first time (payloads without an id pass).
    fn first_time(&mut self, payload: &[u8]) -> bool {
        #[derive(Deserialize)]
        struct Id {
            id: Uuid,
        }
        let Ok(Id { id }) = serde_json::from_slice::<Id>(payload) else {
            return true;
        };
        if !self.set.insert(id) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.set.remove(&oldest);
        }
        self.order.push_back(id);
        true
    }
}

/// Where the subscriber's messages go: taps, else the process-wide stream (once per event id).
struct Outlet {
    inbound: broadcast::Sender<Inbound>,
    taps: Taps,
    recent: RecentIds,
}

impl Outlet {
    fn deliver(&mut self, topic: &Topic, payload: &[u8]) {
        if !self.recent.first_time(payload) {
            return;
        }
        let tap = self.taps.read().unwrap_or_else(|p| p.into_inner()).get(topic).cloned();
        match tap {
            Some(tap) => tap(payload),
            None => {
                let payload = Bytes::copy_from_slice(payload);
                let _ = self.inbound.send(Inbound::Message(BusMessage {
                    topic: topic.clone(),
                    payload,
                }));
            }
        }
    }
}

/// Owns the one subscriber connection: applies (un)subscriptions, forwards messages, and on a
/// lost connection reconnects, re-subscribes everything and then tells consumers to resync
/// (spec §8.4: events published during the gap are lost; from the resync on, none are).
async fn subscriber_task(
    client: redis::Client,
    first: redis::aio::PubSub,
    prefix: String,
    mut commands: mpsc::UnboundedReceiver<SubCommand>,
    mut outlet: Outlet,
    connection: Arc<AtomicU64>,
) {
    let channel_prefix = format!("{prefix}:");
    let mut wanted: HashMap<String, Topic> = HashMap::new();
    let mut conn = Some(first);
    let mut backoff = Duration::from_millis(100);
    let mut lost = false;
    let mut connections = 0;
    loop {
        let pubsub = match conn.take() {
            Some(c) => c,
            None => match client.get_async_pubsub().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "bus subscriber cannot reconnect to Redis");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            },
        };
        let (mut sink, mut stream) = pubsub.split();
        let mut healthy = true;
        let all: Vec<&String> = wanted.keys().collect();
        for batch in all.chunks(SUBSCRIBE_BATCH) {
            if sink.subscribe(batch).await.is_err() {
                healthy = false;
                break;
            }
        }
        if healthy {
            backoff = Duration::from_millis(100);
            connections += 1;
            connection.store(connections, Ordering::Release);
            if lost {
                tracing::info!(topics = wanted.len(), "bus subscriber reconnected; consumers resync");
                let _ = outlet.inbound.send(Inbound::Resync);
            }
        }
        while healthy {
            tokio::select! {
                cmd = commands.recv() => {
                    let Some(cmd) = cmd else { return };
                    // Apply this command and every one already queued, batching subscriptions.
                    let mut batch: Vec<String> = Vec::new();
                    let mut acks: Vec<oneshot::Sender<()>> = Vec::new();
                    let mut next = Some(cmd);
                    while let Some(cmd) = next.take() {
                        match cmd {
                            SubCommand::Subscribe(t, ack) => {
                                let ch = format!("{channel_prefix}{t}");
                                wanted.insert(ch.clone(), t);
                                batch.push(ch);
                                acks.push(ack);
                            }
                            SubCommand::Barrier(ack) => acks.push(ack),
                            SubCommand::Unsubscribe(t) => {
                                let ch = format!("{channel_prefix}{t}");
                                wanted.remove(&ch);
                                if !batch.is_empty() {
                                    healthy &= sink.subscribe(&batch).await.is_ok();
                                    batch.clear();
                                }
                                healthy &= sink.unsubscribe(&ch).await.is_ok();
                            }
                        }
                        if batch.len() >= SUBSCRIBE_BATCH {
                            healthy &= sink.subscribe(&batch).await.is_ok();
                            batch.clear();
                        }
                        if acks.len() < 4 * SUBSCRIBE_BATCH {
                            next = commands.try_recv().ok();
                        }
                    }
                    if !batch.is_empty() {
                        healthy &= sink.subscribe(&batch).await.is_ok();
                    }
                    // Messages Redis sent before its answers are delivered before the acks.
                    while let Some(next) = stream.next().now_or_never() {
                        let Some(msg) = next else {
                            healthy = false;
                            break;
                        };
                        if let Some(topic) = wanted.get(msg.get_channel_name()) {
                            outlet.deliver(topic, msg.get_payload_bytes());
                        }
                    }
                    // A failed command is applied again by the re-subscription after reconnect.
                    for ack in acks {
                        let _ = ack.send(());
                    }
                }
                msg = stream.next() => {
                    let Some(msg) = msg else { break };
                    if let Some(topic) = wanted.get(msg.get_channel_name()) {
                        outlet.deliver(topic, msg.get_payload_bytes());
                    }
                }
            }
        }
        connection.store(0, Ordering::Release);
        tracing::warn!("bus subscriber lost its Redis connection; reconnecting");
        lost = true;
        tokio::time::sleep(backoff).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_process_delivers_only_subscribed_topics() {
        let bus = Bus::in_process();
        let a = Topic::user(UserId::new());
        let b = Topic::user(UserId::new());
        let mut rx = bus.inbound();
        bus.subscribe(&a).await;
        bus.publish(&b, "x.ignored", &1).await;
        bus.publish(&a, "x.seen", &serde_json::json!({"k": 1})).await;
        let Inbound::Message(m) = rx.recv().await.unwrap() else {
            panic!("resync")
        };
        assert_eq!(m.topic, a);
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(v["op"], "x.seen");
        assert_eq!(v["data"]["k"], 1);
        assert!(v["id"].is_string());
        bus.unsubscribe(&a).await;
        bus.publish(&a, "x.after", &1).await;
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn a_repeated_event_id_is_dropped_while_remembered() {
        let mut recent = RecentIds::new(2);
        let a = encode("x.a", &1).unwrap();
        let b = encode("x.b", &2).unwrap();
        let c = encode("x.c", &3).unwrap();
        assert!(recent.first_time(&a));
        assert!(!recent.first_time(&a), "a retried publish is dropped");
        assert!(recent.first_time(&b));
        assert!(recent.first_time(&c), "c evicts a");
        assert!(recent.first_time(&a), "forgotten after `capacity` newer events");
        assert!(recent.first_time(b"not json"), "payloads without an id pass");
        assert!(recent.first_time(b"not json"));
    }

    #[tokio::test]
    async fn subscriptions_are_counted() {
        let bus = Bus::in_process();
        let t = Topic::profile(UserId::new());
        bus.subscribe(&t).await;
        bus.subscribe(&t).await;
        bus.unsubscribe(&t).await;
        assert!(bus.is_subscribed(&t));
        bus.unsubscribe(&t).await;
        assert!(!bus.is_subscribed(&t));
    }
}
