//! Gateway state shared between instances (spec §8.3) — in Redis when it is configured, in
//! process memory otherwise: the session registry (resume across instances, §8.5), presence
//! (§12.8) and the typing throttle (§7.4).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManager;
use uuid::Uuid;

use super::hub::{ParkedFrame, ParkedSession, Parking};
use crate::functions::ids::{ChannelId, SessionId, UserId};

/// TTL of an attached session's registry entry; the owner refreshes it well before.
pub const REGISTRY_ATTACHED_TTL: Duration = Duration::from_secs(60);
/// How often attached entries and presence reports are refreshed.
pub const REFRESH_EVERY: Duration = Duration::from_secs(20);
/// A presence report not refreshed for this long belongs to a dead instance (spec §12.8).
pub const PRESENCE_REPORT_TTL: Duration = Duration::from_secs(60);
/// The typing throttle (spec §7.4): one broadcast per (user, channel) per 2 s.
pub const TYPING_EVERY: Duration = Duration::from_secs(2);
/// How often a running instance renews its heartbeat, and how long one lasts: an instance
/// killed without a shutdown stops counting as alive within `INSTANCE_TTL`.
pub const INSTANCE_BEAT: Duration = Duration::from_secs(5);
pub const INSTANCE_TTL: Duration = Duration::from_secs(15);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A session registry entry (spec §8.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub user: UserId,
    pub auth: Option<SessionId>,
    pub instance: Uuid,
}

/// Shared state; `redis: None` keeps everything in this process.
pub struct Shared {
    redis: Option<ConnectionManager>,
    prefix: String,
    typing: Mutex<HashMap<(UserId, ChannelId), Instant>>,
    presence: Mutex<MemoryPresence>,
}

#[derive(Default)]
struct MemoryPresence {
    /// ONLINE users: `None` while attached somewhere, or since when nobody is.
    online: HashMap<UserId, Option<Instant>>,
}

/// Marks a user present (`ZADD` to the user's instance set) and reports whether they were
/// OFFLINE, i.e. whether an ONLINE transition must be published.
const ATTACH: &str = r"
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
local was = redis.call('ZSCORE', KEYS[2], ARGV[4])
redis.call('ZADD', KEYS[2], 0, ARGV[4])
if was then return 0 else return 1 end
";

/// The user has no attached session on this instance any more; if no instance reports them,
/// they are absent from now (score = since when).
const DETACH: &str = r"
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZCARD', KEYS[1]) == 0 and redis.call('ZSCORE', KEYS[2], ARGV[3]) == '0' then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
end
return 0
";

/// Clears dead instances' reports, then takes the users absent for longer than the debounce
/// OFFLINE and returns them (each exactly once across instances: the ZREM decides).
/// KEYS: online, instances. ARGV: now, debounce, prefix, dead-after.
const SWEEP: &str = r"
local now = tonumber(ARGV[1])
local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[4]))
for _, inst in ipairs(dead) do
  local ikey = ARGV[3] .. ':presence:i:' .. inst
  for _, uid in ipairs(redis.call('SMEMBERS', ikey)) do
    local ukey = ARGV[3] .. ':presence:u:' .. uid
    redis.call('ZREM', ukey, inst)
    if redis.call('ZCARD', ukey) == 0 and redis.call('ZSCORE', KEYS[1], uid) == '0' then
      redis.call('ZADD', KEYS[1], now, uid)
    end
  end
  redis.call('DEL', ikey)
  redis.call('ZREM', KEYS[2], inst)
end
local gone = {}
for _, uid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], 1, now - tonumber(ARGV[2]))) do
  local ukey = ARGV[3] .. ':presence:u:' .. uid
  redis.call('ZREMRANGEBYSCORE', ukey, '-inf', now)
  if redis.call('ZCARD', ukey) == 0 then
    redis.call('ZREM', KEYS[1], uid)
    table.insert(gone, uid)
  else
    redis.call('ZADD', KEYS[1], 0, uid)
  end
end
return gone
";

impl Shared {
    pub fn new(redis: Option<ConnectionManager>, prefix: String) -> Shared {
        Shared {
            redis,
            prefix,
            typing: Mutex::new(HashMap::new()),
            presence: Mutex::new(MemoryPresence::default()),
        }
    }

    fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.prefix)
    }

    fn session_key(&self, sid: Uuid) -> String {
        self.key(&format!("ws:session:{sid}"))
    }

    // ----- session registry --------------------------------------------------------------

    /// Records a session as owned by `instance` (attached or detached, with the matching TTL).
    pub async fn put(&self, sid: Uuid, entry: &Entry, attached: bool, detached_ttl: Duration) {
        let Some(conn) = &self.redis else { return };
        let mut conn = conn.clone();
        let ttl = if attached { REGISTRY_ATTACHED_TTL } else { detached_ttl };
        let auth = entry.auth.map(|a| a.to_string()).unwrap_or_default();
        let res: redis::RedisResult<()> = redis::pipe()
            .cmd("HSET")
            .arg(self.session_key(sid))
            .arg("user")
            .arg(entry.user.to_string())
            .arg("auth")
            .arg(auth)
            .arg("instance")
            .arg(entry.instance.to_string())
            .arg("state")
            .arg(if attached { "attached" } else { "detached" })
            .ignore()
            .cmd("PEXPIRE")
            .arg(self.session_key(sid))
            .arg(ms(ttl))
            .ignore()
            .query_async(&mut conn)
            .await;
        if let Err(e) = res {
            tracing::warn!(error = %e, "session registry write failed");
        }
    }

    pub async fn remove(&self, sid: Uuid) {
        let Some(conn) = &self.redis else { return };
        let mut conn = conn.clone();
        let res: redis::RedisResult<()> = redis::cmd("DEL")
            .arg(self.session_key(sid))
            .query_async(&mut conn)
            .await;
        if let Err(e) = res {
            tracing::warn!(error = %e, "session registry delete failed");
        }
    }

    /// Keeps attached sessions' entries alive.
    pub async fn refresh(&self, sids: &[Uuid]) {
        let Some(conn) = &self.redis else { return };
        for chunk in sids.chunks(1000) {
            let mut pipe = redis::pipe();
            for sid in chunk {
                pipe.cmd("PEXPIRE")
                    .arg(self.session_key(*sid))
                    .arg(ms(REGISTRY_ATTACHED_TTL))
                    .ignore();
            }
            let mut conn = conn.clone();
            if let Err(e) = pipe.query_async::<()>(&mut conn).await {
                tracing::warn!(error = %e, "session registry refresh failed");
            }
        }
    }

    // ----- parked sessions (a lone instance that stops, spec §8.6) --------------------------

    fn parked_key(&self, sid: Uuid) -> String {
        self.key(&format!("ws:parked:{sid}"))
    }

    fn parked_events_key(&self, instance: Uuid) -> String {
        self.key(&format!("ws:parked-events:{instance}"))
    }

    /// Writes a stopping instance's sessions and their events, kept for `ttl`; returns how
    /// many sessions were written.
    pub(super) async fn park(&self, parking: &Parking, instance: Uuid, ttl: Duration) -> usize {
        let Some(conn) = &self.redis else { return 0 };
        let events: Vec<(String, &str)> = parking
            .events
            .iter()
            .map(|(id, body)| (id.to_string(), body.as_str()))
            .collect();
        let events_key = self.parked_events_key(instance);
        for chunk in events.chunks(500) {
            let mut pipe = redis::pipe();
            pipe.cmd("HSET").arg(&events_key);
            for (id, body) in chunk {
                pipe.arg(id).arg(*body);
            }
            pipe.ignore().cmd("PEXPIRE").arg(&events_key).arg(ms(ttl)).ignore();
            let mut conn = conn.clone();
            if let Err(e) = pipe.query_async::<()>(&mut conn).await {
                tracing::warn!(error = %e, "parking events failed; those sessions cannot be resumed");
                return 0;
            }
        }
        let mut written = 0;
        for chunk in parking.sessions.chunks(1000) {
            let mut pipe = redis::pipe();
            for (sid, parked) in chunk {
                let Ok(json) = serde_json::to_string(parked) else {
                    continue;
                };
                pipe.cmd("SET")
                    .arg(self.parked_key(*sid))
                    .arg(json)
                    .arg("PX")
                    .arg(ms(ttl))
                    .ignore();
            }
            let mut conn = conn.clone();
            match pipe.query_async::<()>(&mut conn).await {
                Ok(()) => written += chunk.len(),
                Err(e) => tracing::warn!(error = %e, "parking sessions failed"),
            }
        }
        written
    }

    /// Takes every parked session (each once: GETDEL decides between instances starting
    /// together) with the bodies of their events.
    pub(super) async fn unpark_all(&self) -> (Vec<(Uuid, ParkedSession)>, HashMap<Uuid, String>) {
        let mut sessions = Vec::new();
        let mut bodies = HashMap::new();
        let Some(conn) = &self.redis else {
            return (sessions, bodies);
        };
        let mut conn = conn.clone();
        let pattern = self.parked_key_pattern();
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let page: redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await;
            let Ok((next, found)) = page else { break };
            keys.extend(found);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        for chunk in keys.chunks(500) {
            let mut pipe = redis::pipe();
            for key in chunk {
                pipe.cmd("GETDEL").arg(key);
            }
            let Ok(values) = pipe.query_async::<Vec<Option<String>>>(&mut conn).await else {
                continue;
            };
            for (key, value) in chunk.iter().zip(values) {
                let sid = key.rsplit(':').next().and_then(|s| s.parse().ok());
                let parked = value.and_then(|v| serde_json::from_str::<ParkedSession>(&v).ok());
                if let (Some(sid), Some(parked)) = (sid, parked) {
                    sessions.push((sid, parked));
                }
            }
        }
        let mut instances: Vec<Uuid> = sessions.iter().map(|(_, p)| p.instance).collect();
        instances.sort();
        instances.dedup();
        for instance in instances {
            let found: redis::RedisResult<HashMap<String, String>> = redis::cmd("HGETALL")
                .arg(self.parked_events_key(instance))
                .query_async(&mut conn)
                .await;
            for (id, body) in found.unwrap_or_default() {
                if let Ok(id) = id.parse() {
                    bodies.insert(id, body);
                }
            }
        }
        (sessions, bodies)
    }

    fn parked_key_pattern(&self) -> String {
        self.key("ws:parked:*")
    }

    /// Takes a parked session (once: the first resume wins) with the bodies of its events.
    pub(super) async fn unpark(&self, sid: Uuid) -> Option<(ParkedSession, HashMap<Uuid, String>)> {
        let conn = self.redis.as_ref()?;
        let mut conn = conn.clone();
        let json: Option<String> = redis::cmd("GETDEL")
            .arg(self.parked_key(sid))
            .query_async(&mut conn)
            .await
            .ok()?;
        let parked: ParkedSession = serde_json::from_str(&json?).ok()?;
        let ids: Vec<Uuid> = parked
            .frames
            .iter()
            .filter_map(|f| match f {
                ParkedFrame::Event(_, id) => Some(*id),
                ParkedFrame::Resync => None,
            })
            .collect();
        let mut bodies = HashMap::new();
        if !ids.is_empty() {
            let found: Vec<Option<String>> = redis::cmd("HMGET")
                .arg(self.parked_events_key(parked.instance))
                .arg(ids.iter().map(Uuid::to_string).collect::<Vec<_>>())
                .query_async(&mut conn)
                .await
                .ok()?;
            bodies.extend(ids.into_iter().zip(found).filter_map(|(id, b)| Some((id, b?))));
        }
        Some((parked, bodies))
    }

    pub async fn lookup(&self, sid: Uuid) -> Option<Entry> {
        let conn = self.redis.as_ref()?;
        let mut conn = conn.clone();
        let map: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.session_key(sid))
            .query_async(&mut conn)
            .await
            .ok()?;
        Some(Entry {
            user: map.get("user")?.parse().ok()?,
            auth: map.get("auth").and_then(|a| a.parse().ok()),
            instance: map.get("instance")?.parse().ok()?,
        })
    }

    // ----- instances ----------------------------------------------------------------------
    //
    // `{prefix}:ws:instances` scores each instance that serves `/ws` by when its heartbeat
    // expires. A draining instance asks it whether anyone else could take its sessions over.

    fn instances_key(&self) -> String {
        self.key("ws:instances")
    }

    /// Records `instance` as alive for `INSTANCE_TTL` and forgets expired heartbeats.
    pub async fn instance_beat(&self, instance: Uuid) {
        let Some(conn) = &self.redis else { return };
        let now = now_ms();
        let res: redis::RedisResult<()> = redis::pipe()
            .cmd("ZADD")
            .arg(self.instances_key())
            .arg(now + ms(INSTANCE_TTL))
            .arg(instance.to_string())
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(self.instances_key())
            .arg("-inf")
            .arg(now)
            .ignore()
            .query_async(&mut conn.clone())
            .await;
        if let Err(e) = res {
            tracing::warn!(error = %e, "instance heartbeat failed");
        }
    }

    /// `instance` no longer takes sessions over (it is draining).
    pub async fn instance_leave(&self, instance: Uuid) {
        let Some(conn) = &self.redis else { return };
        let res: redis::RedisResult<()> = redis::cmd("ZREM")
            .arg(self.instances_key())
            .arg(instance.to_string())
            .query_async(&mut conn.clone())
            .await;
        if let Err(e) = res {
            tracing::warn!(error = %e, "instance heartbeat removal failed");
        }
    }

    /// Whether an instance other than `instance` has a live heartbeat. Without Redis, or when
    /// Redis does not answer, nobody else could take a session over: false.
    pub async fn others_alive(&self, instance: Uuid) -> bool {
        let Some(conn) = &self.redis else { return false };
        let res: redis::RedisResult<Vec<String>> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.instances_key())
            .arg(now_ms())
            .arg("+inf")
            .query_async(&mut conn.clone())
            .await;
        let me = instance.to_string();
        match res {
            Ok(alive) => alive.iter().any(|i| *i != me),
            Err(e) => {
                tracing::warn!(error = %e, "instance heartbeat query failed");
                false
            }
        }
    }

    // ----- presence -----------------------------------------------------------------------

    /// The user has an attached session here now; true when they were OFFLINE before.
    pub async fn presence_attach(&self, instance: Uuid, user: UserId) -> bool {
        let Some(conn) = &self.redis else {
            let mut p = self.presence.lock().unwrap_or_else(|e| e.into_inner());
            return p.online.insert(user, None).is_none();
        };
        let mut conn = conn.clone();
        let now = now_ms();
        let res: redis::RedisResult<i64> = redis::Script::new(ATTACH)
            .key(self.key(&format!("presence:u:{user}")))
            .key(self.key("presence:online"))
            .key(self.key(&format!("presence:i:{instance}")))
            .key(self.key("presence:instances"))
            .arg(instance.to_string())
            .arg(now + ms(PRESENCE_REPORT_TTL))
            .arg(now)
            .arg(user.to_string())
            .invoke_async(&mut conn)
            .await;
        match res {
            Ok(n) => n == 1,
            Err(e) => {
                tracing::warn!(error = %e, "presence update failed");
                false
            }
        }
    }

    /// The user has no attached session here any more.
    pub async fn presence_detach(&self, instance: Uuid, user: UserId) {
        let Some(conn) = &self.redis else {
            let mut p = self.presence.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(since) = p.online.get_mut(&user) {
                *since = Some(Instant::now());
            }
            return;
        };
        let mut conn = conn.clone();
        let res: redis::RedisResult<i64> = redis::Script::new(DETACH)
            .key(self.key(&format!("presence:u:{user}")))
            .key(self.key("presence:online"))
            .key(self.key(&format!("presence:i:{instance}")))
            .arg(instance.to_string())
            .arg(now_ms())
            .arg(user.to_string())
            .invoke_async(&mut conn)
            .await;
        if let Err(e) = res {
            tracing::warn!(error = %e, "presence update failed");
        }
    }

    /// Renews this instance's reports for its attached users.
    pub async fn presence_refresh(&self, instance: Uuid, users: &[UserId]) {
        let Some(conn) = &self.redis else { return };
        let now = now_ms();
        let expiry = now + ms(PRESENCE_REPORT_TTL);
        let mut pipe = redis::pipe();
        pipe.cmd("ZADD")
            .arg(self.key("presence:instances"))
            .arg(now)
            .arg(instance.to_string())
            .ignore();
        for user in users {
            pipe.cmd("ZADD")
                .arg(self.key(&format!("presence:u:{user}")))
                .arg(expiry)
                .arg(instance.to_string())
                .ignore();
        }
        let mut conn = conn.clone();
        if let Err(e) = pipe.query_async::<()>(&mut conn).await {
            tracing::warn!(error = %e, "presence refresh failed");
        }
    }

    /// Users whose debounce ran out: they are OFFLINE now (each returned to one instance only).
    pub async fn presence_sweep(&self, debounce: Duration) -> Vec<UserId> {
        let Some(conn) = &self.redis else {
            let mut p = self.presence.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let gone: Vec<UserId> = p
                .online
                .iter()
                .filter(|(_, since)| since.is_some_and(|s| now.duration_since(s) >= debounce))
                .map(|(u, _)| *u)
                .collect();
            for u in &gone {
                p.online.remove(u);
            }
            return gone;
        };
        let mut conn = conn.clone();
        let res: redis::RedisResult<Vec<String>> = redis::Script::new(SWEEP)
            .key(self.key("presence:online"))
            .key(self.key("presence:instances"))
            .arg(now_ms())
            .arg(ms(debounce))
            .arg(&self.prefix)
            .arg(ms(PRESENCE_REPORT_TTL))
            .invoke_async(&mut conn)
            .await;
        match res {
            Ok(list) => list.iter().filter_map(|u| u.parse().ok()).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "presence sweep failed");
                Vec::new()
            }
        }
    }

    /// Which of `users` are ONLINE (attached somewhere, or within the offline debounce).
    pub async fn online(&self, users: &[UserId]) -> Vec<bool> {
        // An empty pipeline is an "empty command" error in Redis (logged on every call).
        if users.is_empty() {
            return Vec::new();
        }
        let Some(conn) = &self.redis else {
            let p = self.presence.lock().unwrap_or_else(|e| e.into_inner());
            return users.iter().map(|u| p.online.contains_key(u)).collect();
        };
        let mut pipe = redis::pipe();
        for u in users {
            pipe.cmd("ZSCORE").arg(self.key("presence:online")).arg(u.to_string());
        }
        let mut conn = conn.clone();
        match pipe.query_async::<Vec<Option<String>>>(&mut conn).await {
            Ok(scores) => scores.iter().map(Option::is_some).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "presence query failed");
                vec![false; users.len()]
            }
        }
    }

    // ----- typing throttle ----------------------------------------------------------------

    /// Whether a `typing.onUpdate` may be broadcast now for (user, channel); takes the slot.
    pub async fn typing_allowed(&self, user: UserId, channel: ChannelId) -> bool {
        let Some(conn) = &self.redis else {
            let mut t = self.typing.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if t.len() > 10_000 {
                t.retain(|_, at| now.duration_since(*at) < TYPING_EVERY);
            }
            return match t.get(&(user, channel)) {
                Some(at) if now.duration_since(*at) < TYPING_EVERY => false,
                _ => {
                    t.insert((user, channel), now);
                    true
                }
            };
        };
        let mut conn = conn.clone();
        let res: redis::RedisResult<Option<String>> = redis::cmd("SET")
            .arg(self.key(&format!("typing:{user}:{channel}")))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ms(TYPING_EVERY))
            .query_async(&mut conn)
            .await;
        match res {
            Ok(v) => v.is_some(),
            // Without Redis the throttle cannot be shared; let the event through.
            Err(_) => true,
        }
    }
}
