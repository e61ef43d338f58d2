//! Rate limiting (spec §11.1–§11.3).
//!
//! Every bucket is a GCRA: a limit `L` per period `T` allows a burst of `L`
//! requests and then refills continuously at `L/T`. Each `(bucket, key)` pair
//! stores one number, its *theoretical arrival time* (TAT). A request of cost
//! `c` advances the TAT by `c·T/L` and is allowed when the TAT, after that
//! advance, is no more than `T` ahead of now.
//!
//! State lives either in process (single instance) or in Redis (shared by all
//! instances, one atomic Lua script call per check, on the Redis server's
//! clock so that instances with skewed clocks still agree). If Redis fails,
//! limits fail open and a warning is logged: an outage of the limiter must not
//! take the chat down with it.
//!
//! All times are integer microseconds. The same arithmetic (`evaluate`) turns
//! a stored TAT into a [`Decision`] for both backends, so they behave alike.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::time::Instant;

/// A limit of `limit` units per `period`, with a burst of `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u32,
    pub period: Duration,
}

impl Quota {
    pub const fn new(limit: u32, period: Duration) -> Self {
        Self { limit, period }
    }

    fn period_us(self) -> u64 {
        u64::try_from(self.period.as_micros()).unwrap_or(u64::MAX)
    }
}

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);
const MIB: u32 = 1024 * 1024;
const GIB: u32 = 1024 * MIB;

/// Every bucket of spec §11.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    Auth,
    AuthAccount,
    Register,
    AuthMail,
    Refresh,
    BotLogin,
    Messages,
    Relations,
    SpaceCreate,
    Verification,
    General,
    Anonymous,
    WsConnect,
    /// Authenticated uploads, counted in requests.
    Upload,
    /// Authenticated uploads, counted in bytes (reported as `upload`).
    UploadBytes,
    /// Anonymous uploads, counted in requests.
    UploadAnonymous,
    /// Anonymous uploads, counted in bytes (reported as `upload-anonymous`).
    UploadAnonymousBytes,
    MediaResize,
}

impl Bucket {
    /// Every bucket, for iteration.
    pub const ALL: [Bucket; 18] = [
        Bucket::Auth,
        Bucket::AuthAccount,
        Bucket::Register,
        Bucket::AuthMail,
        Bucket::Refresh,
        Bucket::BotLogin,
        Bucket::Messages,
        Bucket::Relations,
        Bucket::SpaceCreate,
        Bucket::Verification,
        Bucket::General,
        Bucket::Anonymous,
        Bucket::WsConnect,
        Bucket::Upload,
        Bucket::UploadBytes,
        Bucket::UploadAnonymous,
        Bucket::UploadAnonymousBytes,
        Bucket::MediaResize,
    ];

    /// The public name, as sent in `X-RateLimit-Bucket`. The byte quotas share
    /// the name of their request quota, as in the spec's table.
    pub fn name(self) -> &'static str {
        match self {
            Bucket::Auth => "auth",
            Bucket::AuthAccount => "auth-account",
            Bucket::Register => "register",
            Bucket::AuthMail => "auth-mail",
            Bucket::Refresh => "refresh",
            Bucket::BotLogin => "bot-login",
            Bucket::Messages => "messages",
            Bucket::Relations => "relations",
            Bucket::SpaceCreate => "space-create",
            Bucket::Verification => "verification",
            Bucket::General => "general",
            Bucket::Anonymous => "anonymous",
            Bucket::WsConnect => "ws-connect",
            Bucket::Upload | Bucket::UploadBytes => "upload",
            Bucket::UploadAnonymous | Bucket::UploadAnonymousBytes => "upload-anonymous",
            Bucket::MediaResize => "media-resize",
        }
    }

    /// The name under which state is stored. Unlike [`Bucket::name`] it is
    /// unique, so that a byte quota never shares a TAT with its request quota.
    fn storage_id(self) -> &'static str {
        match self {
            Bucket::UploadBytes => "upload-bytes",
            Bucket::UploadAnonymousBytes => "upload-anonymous-bytes",
            other => other.name(),
        }
    }

    pub fn quota(self) -> Quota {
        match self {
            Bucket::Auth => Quota::new(10, MINUTE),
            Bucket::AuthAccount => Quota::new(10, Duration::from_secs(15 * 60)),
            Bucket::Register => Quota::new(5, HOUR),
            Bucket::AuthMail => Quota::new(3, HOUR),
            Bucket::Refresh => Quota::new(60, MINUTE),
            Bucket::BotLogin => Quota::new(10, MINUTE),
            Bucket::Messages => Quota::new(10, Duration::from_secs(10)),
            Bucket::Relations => Quota::new(30, Duration::from_secs(10 * 60)),
            Bucket::SpaceCreate => Quota::new(10, HOUR),
            Bucket::Verification => Quota::new(10, Duration::from_secs(10 * 60)),
            Bucket::General => Quota::new(1200, MINUTE),
            Bucket::Anonymous => Quota::new(120, MINUTE),
            Bucket::WsConnect => Quota::new(30, MINUTE),
            Bucket::Upload => Quota::new(30, MINUTE),
            Bucket::UploadBytes => Quota::new(GIB, DAY),
            Bucket::UploadAnonymous => Quota::new(10, MINUTE),
            Bucket::UploadAnonymousBytes => Quota::new(200 * MIB, DAY),
            Bucket::MediaResize => Quota::new(60, MINUTE),
        }
    }
}

/// The outcome of a check, with what the headers of §11.3 need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The public bucket name ([`Bucket::name`]).
    pub bucket: &'static str,
    pub allowed: bool,
    pub limit: u32,
    /// Units that may be spent immediately.
    pub remaining: u32,
    /// Until `remaining` is back to `limit`.
    pub reset_after: Duration,
    /// Zero when allowed; otherwise until a request of the same cost will be
    /// allowed. A cost above the limit is never allowed, whatever this says.
    pub retry_after: Duration,
}

impl Decision {
    /// The decision reported when the store is unavailable (fail open).
    fn open(bucket: Bucket) -> Self {
        let quota = bucket.quota();
        Self {
            bucket: bucket.name(),
            allowed: true,
            limit: quota.limit,
            remaining: quota.limit,
            reset_after: Duration::ZERO,
            retry_after: Duration::ZERO,
        }
    }
}

/// Of several decisions, the one the headers report (§11.3): the refusing one
/// with the longest `retry_after` if any refuses, otherwise the one with the
/// fewest remaining. Ties go to the earliest.
pub fn governing(decisions: &[Decision]) -> Option<&Decision> {
    let refused = decisions
        .iter()
        .filter(|d| !d.allowed)
        .reduce(|best, d| if d.retry_after > best.retry_after { d } else { best });
    refused.or_else(|| {
        decisions
            .iter()
            .reduce(|best, d| if d.remaining < best.remaining { d } else { best })
    })
}

// ---------------------------------------------------------------------------
// GCRA arithmetic, shared by both backends.

/// How far a request of `cost` advances the TAT: `cost·T/L`, rounded down to
/// a whole microsecond. Every count bucket's interval is a whole number of
/// microseconds; for the byte buckets rounding down gives away under a tenth
/// of a byte per request, and keeps `remaining` exact (`L - cost` after a
/// first request), which rounding up would not.
fn increment_us(quota: Quota, cost: u32) -> u64 {
    let limit = u128::from(quota.limit.max(1));
    let advance = u128::from(cost) * u128::from(quota.period_us());
    u64::try_from(advance / limit).unwrap_or(u64::MAX)
}

/// Whole units still available when the TAT is `backlog` ahead of now.
fn remaining(quota: Quota, backlog: u64) -> u32 {
    let period = quota.period_us();
    if period == 0 {
        return quota.limit;
    }
    let free = u128::from(period.saturating_sub(backlog));
    let units = free * u128::from(quota.limit) / u128::from(period);
    u32::try_from(units).unwrap_or(quota.limit).min(quota.limit)
}

/// One request evaluated against a stored TAT (both in µs on the same clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Eval {
    allowed: bool,
    /// The TAT before this request, never earlier than now.
    tat: u64,
    /// The TAT after this request if allowed, else `tat`.
    new_tat: u64,
    now: u64,
    quota: Quota,
}

fn evaluate(quota: Quota, stored_tat: u64, now: u64, cost: u32) -> Eval {
    let tat = stored_tat.max(now);
    let advanced = tat.saturating_add(increment_us(quota, cost));
    let allowed = advanced - now <= quota.period_us();
    Eval {
        allowed,
        tat,
        new_tat: if allowed { advanced } else { tat },
        now,
        quota,
    }
}

impl Eval {
    /// The decision, with the request consumed if it was allowed.
    fn decision(self, bucket: Bucket, cost: u32) -> Decision {
        let backlog = self.new_tat - self.now;
        let retry_after_us = if self.allowed {
            0
        } else {
            // When the TAT will have receded far enough for this cost to fit.
            let advanced = self.tat.saturating_add(increment_us(self.quota, cost));
            (advanced - self.now).saturating_sub(self.quota.period_us())
        };
        Decision {
            bucket: bucket.name(),
            allowed: self.allowed,
            limit: self.quota.limit,
            remaining: remaining(self.quota, backlog),
            reset_after: Duration::from_micros(backlog),
            retry_after: Duration::from_micros(retry_after_us),
        }
    }

    /// The decision for a request that was not consumed because another
    /// bucket of the same check refused: it reports the bucket's current state.
    fn unconsumed(self, bucket: Bucket, cost: u32) -> Decision {
        Eval {
            new_tat: self.tat,
            ..self
        }
        .decision(bucket, cost)
    }
}

/// Turns evaluations into decisions: if any refused, nothing was consumed.
fn decisions(checks: &[(Bucket, &str, u32)], evals: &[Eval]) -> Vec<Decision> {
    let all_allowed = evals.iter().all(|e| e.allowed);
    checks
        .iter()
        .zip(evals)
        .map(|(&(bucket, _, cost), eval)| {
            if all_allowed || !eval.allowed {
                eval.decision(bucket, cost)
            } else {
                eval.unconsumed(bucket, cost)
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Limiter.

/// A rate limiter; cheap to clone, clones share state.
#[derive(Clone)]
pub struct RateLimiter {
    backend: Arc<Backend>,
}

enum Backend {
    Memory(MemoryStore),
    Redis(RedisStore),
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.backend {
            Backend::Memory(_) => f.write_str("RateLimiter(in memory)"),
            Backend::Redis(store) => write!(f, "RateLimiter(redis, prefix {:?})", store.prefix),
        }
    }
}

impl RateLimiter {
    /// State in this process: for a single instance without Redis.
    pub fn in_memory() -> Self {
        Self {
            backend: Arc::new(Backend::Memory(MemoryStore::new(MEMORY_SWEEP_THRESHOLD))),
        }
    }

    /// State in Redis, shared by every instance using the same `prefix`.
    /// `prefix` namespaces keys (tests use a unique prefix per test).
    pub fn redis(conn: ConnectionManager, prefix: String) -> Self {
        Self {
            backend: Arc::new(Backend::Redis(RedisStore {
                conn,
                prefix,
                script: redis::Script::new(GCRA_SCRIPT),
                degraded: AtomicBool::new(false),
            })),
        }
    }

    /// Checks and, if allowed, consumes `cost` units for `key` in `bucket`.
    /// `cost` is usually 1; byte quotas pass the byte count.
    pub async fn check(&self, bucket: Bucket, key: &str, cost: u32) -> Decision {
        let mut decisions = self.check_all_with_cost(&[(bucket, key, cost)]).await;
        decisions.pop().unwrap_or_else(|| Decision::open(bucket))
    }

    /// Checks several `(bucket, key)` pairs at cost 1. The request is allowed
    /// only if all allow, and if any refuses none is consumed (so a refused
    /// request does not eat into the other buckets). Decisions are returned in
    /// order; see [`governing`] for the one to report.
    pub async fn check_all(&self, checks: &[(Bucket, &str)]) -> Vec<Decision> {
        let with_cost: Vec<(Bucket, &str, u32)> = checks.iter().map(|&(b, k)| (b, k, 1)).collect();
        self.check_all_with_cost(&with_cost).await
    }

    /// [`RateLimiter::check_all`] with a cost per pair, e.g. an upload's
    /// request count and byte count together.
    pub async fn check_all_with_cost(&self, checks: &[(Bucket, &str, u32)]) -> Vec<Decision> {
        if checks.is_empty() {
            return Vec::new();
        }
        match &*self.backend {
            Backend::Memory(store) => store.check_all(checks),
            Backend::Redis(store) => store.check_all(checks).await,
        }
    }
}

// ---------------------------------------------------------------------------
// In-memory backend.

/// Past this many keys, expired entries are swept out. An entry whose TAT is
/// in the past is equivalent to no entry, so sweeping never changes a result.
const MEMORY_SWEEP_THRESHOLD: usize = 100_000;

struct MemoryStore {
    /// The zero of the microsecond clock. Tokio's clock, so that code built
    /// with tokio's `test-util` can pause and advance it.
    origin: Instant,
    capacity: usize,
    state: Mutex<MemoryState>,
}

struct MemoryState {
    tats: HashMap<(&'static str, String), u64>,
    /// Size that triggers the next sweep. It grows with the live entries so
    /// that a map full of live keys is not rescanned on every insert.
    sweep_at: usize,
}

impl MemoryStore {
    fn new(capacity: usize) -> Self {
        Self {
            origin: Instant::now(),
            capacity,
            state: Mutex::new(MemoryState {
                tats: HashMap::new(),
                sweep_at: capacity,
            }),
        }
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> MutexGuard<'_, MemoryState> {
        // The map is consistent after any panic (single inserts), so a
        // poisoned lock is safe to reuse.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check_all(&self, checks: &[(Bucket, &str, u32)]) -> Vec<Decision> {
        self.check_all_at(checks, self.now_us())
    }

    /// [`MemoryStore::check_all`] at time `now` (µs since `origin`).
    fn check_all_at(&self, checks: &[(Bucket, &str, u32)], now: u64) -> Vec<Decision> {
        let keys: Vec<(&'static str, String)> = checks
            .iter()
            .map(|&(bucket, key, _)| (bucket.storage_id(), key.to_owned()))
            .collect();
        let mut state = self.lock();

        // Peek every pair; a pair repeated in the same call sees the earlier
        // occurrence's consumption.
        let mut pending: Vec<(usize, u64)> = Vec::new();
        let mut evals = Vec::with_capacity(checks.len());
        for (i, &(bucket, _, cost)) in checks.iter().enumerate() {
            let earlier = pending.iter().rev().find(|&&(j, _)| keys[j] == keys[i]);
            let stored = match earlier {
                Some(&(_, tat)) => tat,
                None => state.tats.get(&keys[i]).copied().unwrap_or(0),
            };
            let eval = evaluate(bucket.quota(), stored, now, cost);
            if eval.allowed {
                pending.push((i, eval.new_tat));
            }
            evals.push(eval);
        }

        // Consume only if all allow.
        if evals.iter().all(|e| e.allowed) {
            for (i, tat) in pending {
                if tat > now {
                    state.tats.insert(keys[i].clone(), tat);
                }
            }
            if state.tats.len() > state.sweep_at {
                state.tats.retain(|_, tat| *tat > now);
                state.sweep_at = self.capacity.max(state.tats.len().saturating_mul(2));
            }
        }
        drop(state);
        decisions(checks, &evals)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().tats.len()
    }
}

// ---------------------------------------------------------------------------
// Redis backend.

/// Peeks every key, then consumes all of them only if all allow, atomically.
///
/// `KEYS[i]` is a pair's key; `ARGV[2i-1]` its period and `ARGV[2i]` this
/// request's TAT advance, in µs (computed by the caller, so that Lua does only
/// additions and comparisons, which are exact on doubles at this magnitude).
/// Uses the server's clock so that all instances agree. Returns
/// `{all_allowed, now, tat_1, …, tat_n}`, each `tat_i` being the TAT the pair
/// was evaluated against; the caller redoes the same arithmetic to build the
/// decisions. Keys expire when their TAT passes, since they are then
/// equivalent to absent keys.
const GCRA_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {0, now}
local pending = {}
local ok = 1
for i, key in ipairs(KEYS) do
  local tat = pending[key]
  if tat == nil then
    tat = tonumber(redis.call('GET', key)) or now
  end
  if tat < now then tat = now end
  out[i + 2] = tat
  local advanced = tat + tonumber(ARGV[2 * i])
  if advanced - now > tonumber(ARGV[2 * i - 1]) then
    ok = 0
  else
    pending[key] = advanced
  end
end
if ok == 1 then
  for key, tat in pairs(pending) do
    if tat > now then
      redis.call('SET', key, string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000))
    end
  end
end
out[1] = ok
return out
";

struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    script: redis::Script,
    /// Set while Redis is failing, so that an outage logs one warning rather
    /// than one per request.
    degraded: AtomicBool,
}

impl RedisStore {
    fn key(&self, bucket: Bucket, key: &str) -> String {
        format!("{}:rl:{}:{}", self.prefix, bucket.storage_id(), key)
    }

    async fn check_all(&self, checks: &[(Bucket, &str, u32)]) -> Vec<Decision> {
        match self.run(checks).await {
            Ok(decisions) => {
                if self.degraded.swap(false, Ordering::Relaxed) {
                    tracing::info!("rate limiter: Redis is reachable again; limits enforced");
                }
                decisions
            }
            Err(error) => {
                if self.degraded.swap(true, Ordering::Relaxed) {
                    tracing::debug!(%error, "rate limiter: Redis still failing; failing open");
                } else {
                    tracing::warn!(%error, "rate limiter: Redis failed; limits fail open until it recovers");
                }
                checks.iter().map(|&(bucket, _, _)| Decision::open(bucket)).collect()
            }
        }
    }

    async fn run(&self, checks: &[(Bucket, &str, u32)]) -> redis::RedisResult<Vec<Decision>> {
        let mut invocation = self.script.prepare_invoke();
        for &(bucket, key, cost) in checks {
            let quota = bucket.quota();
            invocation
                .key(self.key(bucket, key))
                .arg(quota.period_us())
                .arg(increment_us(quota, cost));
        }
        let mut conn = self.conn.clone();
        let reply: Vec<i64> = invocation.invoke_async(&mut conn).await?;
        let (now, tats) = parse_reply(&reply, checks.len())
            .ok_or_else(|| redis::RedisError::from((redis::ErrorKind::Parse, "unexpected rate limit script reply")))?;
        let evals: Vec<Eval> = checks
            .iter()
            .zip(tats)
            .map(|(&(bucket, _, cost), tat)| evaluate(bucket.quota(), tat, now, cost))
            .collect();
        Ok(decisions(checks, &evals))
    }
}

/// Splits `{all_allowed, now, tat_1, …, tat_n}` into `now` and the TATs.
fn parse_reply(reply: &[i64], n: usize) -> Option<(u64, Vec<u64>)> {
    if reply.len() != n + 2 {
        return None;
    }
    let now = u64::try_from(reply[1]).ok()?;
    let tats = reply[2..]
        .iter()
        .map(|&tat| u64::try_from(tat).ok())
        .collect::<Option<Vec<u64>>>()?;
    Some((now, tats))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    // --- pure arithmetic -------------------------------------------------

    #[test]
    fn quotas_match_the_spec() {
        let table: [(Bucket, &str, u32, u64); 18] = [
            (Bucket::Auth, "auth", 10, 60),
            (Bucket::AuthAccount, "auth-account", 10, 900),
            (Bucket::Register, "register", 5, 3600),
            (Bucket::AuthMail, "auth-mail", 3, 3600),
            (Bucket::Refresh, "refresh", 60, 60),
            (Bucket::BotLogin, "bot-login", 10, 60),
            (Bucket::Messages, "messages", 10, 10),
            (Bucket::Relations, "relations", 30, 600),
            (Bucket::SpaceCreate, "space-create", 10, 3600),
            (Bucket::Verification, "verification", 10, 600),
            (Bucket::General, "general", 1200, 60),
            (Bucket::Anonymous, "anonymous", 120, 60),
            (Bucket::WsConnect, "ws-connect", 30, 60),
            (Bucket::Upload, "upload", 30, 60),
            (Bucket::UploadBytes, "upload", 1_073_741_824, 86_400),
            (Bucket::UploadAnonymous, "upload-anonymous", 10, 60),
            (Bucket::UploadAnonymousBytes, "upload-anonymous", 209_715_200, 86_400),
            (Bucket::MediaResize, "media-resize", 60, 60),
        ];
        for (bucket, name, limit, secs) in table {
            assert_eq!(bucket.name(), name);
            assert_eq!(bucket.quota(), Quota::new(limit, Duration::from_secs(secs)));
        }
        let mut ids: Vec<&str> = Bucket::ALL.iter().map(|b| b.storage_id()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), Bucket::ALL.len(), "storage ids must be unique");
    }

    #[test]
    fn evaluate_burst_then_refuse() {
        let q = Quota::new(3, Duration::from_secs(3));
        let mut tat = 0;
        for expected_remaining in [2, 1, 0] {
            let e = evaluate(q, tat, 0, 1);
            assert!(e.allowed);
            let d = e.decision(Bucket::Auth, 1);
            assert_eq!(d.remaining, expected_remaining);
            tat = e.new_tat;
        }
        let e = evaluate(q, tat, 0, 1);
        assert!(!e.allowed);
        let d = e.decision(Bucket::Auth, 1);
        assert_eq!((d.remaining, d.retry_after, d.reset_after), (0, SEC, 3 * SEC));
    }

    #[test]
    fn increment_is_exact_or_rounds_down() {
        // 1 GiB / 24 h is 80.466… µs per byte.
        let q = Bucket::UploadBytes.quota();
        assert_eq!(increment_us(q, 1), 80);
        assert_eq!(increment_us(q, 1000), 80_466);
        assert_eq!(increment_us(Bucket::General.quota(), 1), 50_000);
        assert_eq!(increment_us(q, 1 << 30), 86_400_000_000);
        assert_eq!(increment_us(q, 0), 0);
    }

    #[test]
    fn governing_picks_longest_refusal_else_fewest_remaining() {
        let d = |bucket, allowed, remaining, retry: u64| Decision {
            bucket,
            allowed,
            limit: 10,
            remaining,
            reset_after: SEC,
            retry_after: ms(retry),
        };
        assert_eq!(governing(&[]), None);
        let all_ok = [
            d("a", true, 5, 0),
            d("b", true, 2, 0),
            d("c", true, 2, 0),
            d("d", true, 9, 0),
        ];
        assert_eq!(governing(&all_ok).map(|d| d.bucket), Some("b"));
        let refused = [
            d("a", true, 0, 0),
            d("b", false, 0, 300),
            d("c", false, 0, 900),
            d("d", false, 0, 900),
        ];
        assert_eq!(governing(&refused).map(|d| d.bucket), Some("c"));
        let one = [d("a", true, 0, 0), d("b", false, 3, 10)];
        assert_eq!(governing(&one).map(|d| d.bucket), Some("b"));
    }

    #[test]
    fn parse_reply_validates_shape() {
        assert_eq!(parse_reply(&[1, 5, 6, 7], 2), Some((5, vec![6, 7])));
        assert_eq!(parse_reply(&[1, 5, 6], 2), None);
        assert_eq!(parse_reply(&[1, -5, 6], 1), None);
    }

    // --- in-memory backend ------------------------------------------------
    //
    // The crate's tokio has no `test-util`, so `tokio::time::pause` is not
    // available; these tests drive the store's clock by hand instead.

    /// A memory store with a manual clock (µs).
    struct Clocked {
        store: MemoryStore,
        now: u64,
    }

    impl Clocked {
        fn new(capacity: usize) -> Self {
            Self {
                store: MemoryStore::new(capacity),
                now: 0,
            }
        }

        fn check(&self, bucket: Bucket, key: &str, cost: u32) -> Decision {
            let mut ds = self.store.check_all_at(&[(bucket, key, cost)], self.now);
            ds.pop().expect("one decision")
        }

        fn check_all(&self, checks: &[(Bucket, &str)]) -> Vec<Decision> {
            let with_cost: Vec<_> = checks.iter().map(|&(b, k)| (b, k, 1)).collect();
            self.store.check_all_at(&with_cost, self.now)
        }

        fn advance(&mut self, by: Duration) {
            self.now += u64::try_from(by.as_micros()).expect("small duration");
        }
    }

    #[test]
    fn memory_burst_then_refused() {
        let rl = Clocked::new(MEMORY_SWEEP_THRESHOLD);
        for i in 0..10u32 {
            let d = rl.check(Bucket::Auth, "1.2.3.4", 1);
            assert!(d.allowed, "request {i}");
            assert_eq!((d.bucket, d.limit, d.remaining), ("auth", 10, 9 - i));
            assert_eq!(d.retry_after, Duration::ZERO);
            assert_eq!(d.reset_after, Duration::from_secs(6 * u64::from(i + 1)));
        }
        let d = rl.check(Bucket::Auth, "1.2.3.4", 1);
        assert!(!d.allowed);
        assert_eq!((d.remaining, d.retry_after, d.reset_after), (0, 6 * SEC, 60 * SEC));
        // Other keys and buckets are independent.
        assert!(rl.check(Bucket::Auth, "5.6.7.8", 1).allowed);
        assert!(rl.check(Bucket::Refresh, "1.2.3.4", 1).allowed);
    }

    #[test]
    fn memory_refills_after_interval() {
        let mut rl = Clocked::new(MEMORY_SWEEP_THRESHOLD);
        for _ in 0..10 {
            assert!(rl.check(Bucket::Messages, "u:c", 1).allowed);
        }
        let d = rl.check(Bucket::Messages, "u:c", 1);
        assert_eq!((d.allowed, d.retry_after), (false, SEC));

        rl.advance(ms(400));
        let d = rl.check(Bucket::Messages, "u:c", 1);
        assert_eq!((d.allowed, d.retry_after, d.reset_after), (false, ms(600), ms(9600)));

        rl.advance(ms(600));
        let d = rl.check(Bucket::Messages, "u:c", 1);
        assert!(d.allowed);
        assert_eq!((d.remaining, d.reset_after), (0, 10 * SEC));
        assert!(!rl.check(Bucket::Messages, "u:c", 1).allowed);

        // A full period later the whole burst is back.
        rl.advance(10 * SEC);
        let d = rl.check(Bucket::Messages, "u:c", 1);
        assert_eq!((d.allowed, d.remaining, d.reset_after), (true, 9, SEC));
    }

    #[test]
    fn memory_cost_above_one() {
        let rl = Clocked::new(MEMORY_SWEEP_THRESHOLD);
        // 200 MiB per day, in bytes.
        let mib = 1024 * 1024;
        let d = rl.check(Bucket::UploadAnonymousBytes, "ip", 150 * mib);
        assert!(d.allowed);
        assert_eq!((d.bucket, d.remaining), ("upload-anonymous", 50 * mib));
        assert_eq!(d.reset_after, Duration::from_secs(86_400 * 3 / 4));

        // 60 MiB does not fit; it will once 10 MiB have refilled (1/20 day).
        let d = rl.check(Bucket::UploadAnonymousBytes, "ip", 60 * mib);
        assert!(!d.allowed);
        assert_eq!(d.remaining, 50 * mib);
        assert_eq!(d.retry_after, Duration::from_secs(86_400 / 20));
        // The refused request consumed nothing.
        assert!(rl.check(Bucket::UploadAnonymousBytes, "ip", 50 * mib).allowed);
        assert!(!rl.check(Bucket::UploadAnonymousBytes, "ip", 1).allowed);

        // Count-based cost: 3 at once on a limit of 5.
        let d = rl.check(Bucket::Register, "ip", 3);
        assert_eq!((d.allowed, d.remaining), (true, 2));
        let d = rl.check(Bucket::Register, "ip", 3);
        assert_eq!(
            (d.allowed, d.remaining, d.retry_after),
            (false, 2, Duration::from_secs(720))
        );
        // Cost zero only reports.
        let d = rl.check(Bucket::Register, "ip", 0);
        assert_eq!((d.allowed, d.remaining), (true, 2));
    }

    #[test]
    fn memory_check_all_refuses_without_consuming() {
        let rl = Clocked::new(MEMORY_SWEEP_THRESHOLD);
        for _ in 0..10 {
            assert!(rl.check(Bucket::BotLogin, "bot", 1).allowed);
        }
        let ds = rl.check_all(&[(Bucket::Auth, "ip"), (Bucket::BotLogin, "bot")]);
        assert_eq!(ds.len(), 2);
        assert!(ds[0].allowed && !ds[1].allowed);
        // The allowed bucket reports its untouched state.
        assert_eq!((ds[0].remaining, ds[0].reset_after), (10, Duration::ZERO));
        assert_eq!(governing(&ds).map(|d| d.bucket), Some("bot-login"));
        // Auth was not consumed: ten more still pass.
        for _ in 0..10 {
            assert!(rl.check(Bucket::Auth, "ip", 1).allowed);
        }

        // When all allow, all are consumed.
        let ds = rl.check_all(&[(Bucket::Register, "ip"), (Bucket::Refresh, "ip")]);
        assert!(ds.iter().all(|d| d.allowed));
        assert_eq!((ds[0].remaining, ds[1].remaining), (4, 59));
        assert_eq!(governing(&ds).map(|d| d.bucket), Some("register"));
    }

    #[test]
    fn memory_check_all_repeated_pair_counts_twice() {
        let rl = Clocked::new(MEMORY_SWEEP_THRESHOLD);
        for _ in 0..4 {
            assert!(rl.check(Bucket::Register, "ip", 1).allowed);
        }
        let ds = rl.check_all(&[(Bucket::Register, "ip"), (Bucket::Register, "ip")]);
        assert!(ds[0].allowed && !ds[1].allowed);
        assert!(rl.check(Bucket::Register, "ip", 1).allowed);

        let ds = rl.check_all(&[(Bucket::AuthMail, "e"), (Bucket::AuthMail, "e")]);
        assert_eq!((ds[0].remaining, ds[1].remaining), (2, 1));
    }

    #[test]
    fn memory_upload_bytes_and_count_are_separate() {
        let rl = Clocked::new(MEMORY_SWEEP_THRESHOLD);
        let ds = rl
            .store
            .check_all_at(&[(Bucket::Upload, "u", 1), (Bucket::UploadBytes, "u", 1000)], rl.now);
        assert!(ds.iter().all(|d| d.allowed));
        assert_eq!((ds[0].remaining, ds[1].remaining), (29, (1 << 30) - 1000));
        assert_eq!(governing(&ds).map(|d| (d.bucket, d.remaining)), Some(("upload", 29)));
    }

    #[test]
    fn memory_sweeps_expired_entries() {
        let mut rl = Clocked::new(100);
        for i in 0..100 {
            assert!(rl.check(Bucket::Messages, &format!("k{i}"), 1).allowed);
        }
        assert_eq!(rl.store.len(), 100);
        // All of those expire after one interval (1 s).
        rl.advance(ms(1001));
        for i in 0..5 {
            assert!(rl.check(Bucket::Messages, &format!("fresh{i}"), 1).allowed);
        }
        assert_eq!(rl.store.len(), 5, "the 101st entry swept the 100 expired ones");

        // Live entries survive a sweep and keep their state; the threshold
        // then grows so that live entries are not rescanned on every insert.
        let rl = Clocked::new(10);
        for _ in 0..10 {
            assert!(rl.check(Bucket::Messages, "hot", 1).allowed);
        }
        for i in 0..20 {
            assert!(rl.check(Bucket::Messages, &format!("k{i}"), 1).allowed);
        }
        assert!(!rl.check(Bucket::Messages, "hot", 1).allowed);
        assert_eq!(rl.store.len(), 21);
        assert_eq!(rl.store.lock().sweep_at, 22);
    }

    #[tokio::test]
    async fn memory_public_api_and_shared_clones() {
        let a = RateLimiter::in_memory();
        let b = a.clone();
        for i in 0..3 {
            let d = a.check(Bucket::AuthMail, "e@x", 1).await;
            assert_eq!((d.allowed, d.remaining), (true, 2 - i));
        }
        let d = b.check(Bucket::AuthMail, "e@x", 1).await;
        assert!(!d.allowed);
        assert!(close(d.retry_after, Duration::from_secs(1200)), "{d:?}");
        let ds = b.check_all(&[(Bucket::Auth, "ip"), (Bucket::AuthMail, "e@x")]).await;
        assert!(ds[0].allowed && !ds[1].allowed);
        assert_eq!(a.check(Bucket::Auth, "ip", 1).await.remaining, 9);
        assert_eq!(a.check_all(&[]).await, Vec::new());
    }

    // --- Redis backend ----------------------------------------------------

    fn redis_url() -> String {
        std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
    }

    async fn redis_limiter(prefix: &str) -> RateLimiter {
        let client = redis::Client::open(redis_url()).expect("redis url");
        let conn = ConnectionManager::new(client).await.expect("redis connection");
        RateLimiter::redis(conn, unique(prefix))
    }

    fn unique(prefix: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("test-rl-{prefix}-{}-{nanos}", std::process::id())
    }

    /// Redis uses real time, so durations are checked within a tolerance.
    fn close(actual: Duration, expected: Duration) -> bool {
        let diff = actual.abs_diff(expected);
        diff <= ms(500)
    }

    #[tokio::test]
    async fn redis_burst_then_refused() {
        let rl = redis_limiter("burst").await;
        for i in 0..10u32 {
            let d = rl.check(Bucket::Auth, "1.2.3.4", 1).await;
            assert!(d.allowed, "request {i}");
            assert_eq!((d.bucket, d.limit), ("auth", 10));
            // Real time passes between calls; at most one unit refills here.
            assert!(d.remaining == 9 - i || d.remaining == 10 - i, "{d:?}");
        }
        let d = rl.check(Bucket::Auth, "1.2.3.4", 1).await;
        assert!(!d.allowed, "{d:?}");
        assert_eq!(d.remaining, 0);
        assert!(close(d.retry_after, 6 * SEC), "{d:?}");
        assert!(close(d.reset_after, 60 * SEC), "{d:?}");
        assert!(rl.check(Bucket::Auth, "5.6.7.8", 1).await.allowed);
    }

    #[tokio::test]
    async fn redis_refills_after_interval() {
        let rl = redis_limiter("refill").await;
        // 1200 per minute: one unit every 50 ms.
        let ds = rl.check(Bucket::General, "u", 1200).await;
        assert!(ds.allowed);
        let d = rl.check(Bucket::General, "u", 1).await;
        assert!(!d.allowed);
        assert!(d.retry_after <= ms(50) && d.retry_after > Duration::ZERO, "{d:?}");
        tokio::time::sleep(ms(120)).await;
        let d = rl.check(Bucket::General, "u", 2).await;
        assert!(d.allowed, "{d:?}");
    }

    #[tokio::test]
    async fn redis_cost_and_expiry() {
        let rl = redis_limiter("cost").await;
        let d = rl.check(Bucket::Register, "ip", 3).await;
        assert_eq!((d.allowed, d.remaining), (true, 2));
        assert!(close(d.reset_after, Duration::from_secs(3 * 720)));
        let d = rl.check(Bucket::Register, "ip", 3).await;
        assert_eq!((d.allowed, d.remaining), (false, 2));
        assert!(close(d.retry_after, Duration::from_secs(720)), "{d:?}");

        // The key expires with its TAT.
        let client = redis::Client::open(redis_url()).expect("redis url");
        let mut conn = client.get_multiplexed_async_connection().await.expect("connect");
        let key = match &*rl.backend {
            Backend::Redis(store) => store.key(Bucket::Register, "ip"),
            Backend::Memory(_) => unreachable!(),
        };
        let pttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut conn).await.expect("pttl");
        assert!(pttl > 2_150_000 && pttl <= 2_160_000, "pttl {pttl}");
    }

    #[tokio::test]
    async fn redis_check_all_refuses_without_consuming() {
        let rl = redis_limiter("all").await;
        assert!(rl.check(Bucket::BotLogin, "bot", 10).await.allowed);
        let ds = rl.check_all(&[(Bucket::Auth, "ip"), (Bucket::BotLogin, "bot")]).await;
        assert!(ds[0].allowed && !ds[1].allowed, "{ds:?}");
        assert_eq!(ds[0].remaining, 10);
        assert_eq!(governing(&ds).map(|d| d.bucket), Some("bot-login"));
        let d = rl.check(Bucket::Auth, "ip", 10).await;
        assert!(d.allowed, "auth was not consumed: {d:?}");

        let ds = rl.check_all(&[(Bucket::Register, "ip"), (Bucket::Refresh, "ip")]).await;
        assert!(ds.iter().all(|d| d.allowed));
        assert_eq!((ds[0].remaining, ds[1].remaining), (4, 59));

        // A repeated pair counts twice.
        let ds = rl.check_all(&[(Bucket::AuthMail, "e"), (Bucket::AuthMail, "e")]).await;
        assert_eq!((ds[0].remaining, ds[1].remaining), (2, 1));
    }

    #[tokio::test]
    async fn redis_instances_share_state() {
        let a = redis_limiter("shared").await;
        let prefix = match &*a.backend {
            Backend::Redis(store) => store.prefix.clone(),
            Backend::Memory(_) => unreachable!(),
        };
        let client = redis::Client::open(redis_url()).expect("redis url");
        let conn = ConnectionManager::new(client).await.expect("redis connection");
        let b = RateLimiter::redis(conn, prefix);
        for _ in 0..3 {
            assert!(a.check(Bucket::AuthMail, "e@x", 1).await.allowed);
        }
        assert!(!b.check(Bucket::AuthMail, "e@x", 1).await.allowed);
        // A different prefix is a different namespace.
        let c = redis_limiter("shared-other").await;
        assert!(c.check(Bucket::AuthMail, "e@x", 1).await.allowed);
    }

    #[tokio::test]
    async fn redis_survives_script_flush() {
        let rl = redis_limiter("flush").await;
        assert!(rl.check(Bucket::Auth, "ip", 1).await.allowed);
        let client = redis::Client::open(redis_url()).expect("redis url");
        let mut conn = client.get_multiplexed_async_connection().await.expect("connect");
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut conn)
            .await
            .expect("flush");
        // EVALSHA fails with NOSCRIPT, the script is reloaded, state is kept.
        let d = rl.check(Bucket::Auth, "ip", 1).await;
        assert_eq!((d.allowed, d.remaining), (true, 8));
    }

    #[tokio::test]
    async fn redis_fails_open() {
        // Nothing listens on port 1: every call fails with a connection error.
        let client = redis::Client::open("redis://127.0.0.1:1").expect("redis url");
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(Some(ms(200)))
            .set_response_timeout(Some(ms(200)));
        let conn = ConnectionManager::new_lazy_with_config(client, config).expect("lazy manager");
        let rl = RateLimiter::redis(conn, unique("dead"));
        for _ in 0..15 {
            let d = rl.check(Bucket::Auth, "ip", 1).await;
            assert_eq!(d, Decision::open(Bucket::Auth));
        }
        let ds = rl
            .check_all(&[(Bucket::Register, "ip"), (Bucket::UploadBytes, "u")])
            .await;
        assert_eq!(
            ds,
            vec![Decision::open(Bucket::Register), Decision::open(Bucket::UploadBytes)]
        );
        assert_eq!((ds[1].bucket, ds[1].remaining), ("upload", 1 << 30));
        match &*rl.backend {
            Backend::Redis(store) => assert!(store.degraded.load(Ordering::Relaxed)),
            Backend::Memory(_) => unreachable!(),
        }
    }
}
