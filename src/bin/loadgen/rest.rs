//! REST scenarios: `send` (message sends), `history` (pages of a large channel) and `search`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{Value, json};

use crate::population::State;
use crate::report::{self, Run};
use crate::{Failure, Options, client, live};

const COLUMNS: [&str; 7] = [
    "scenario",
    "requests",
    "errors",
    "requestsPerSecond",
    "p50Ms",
    "p99Ms",
    "maxMs",
];

/// Runs `requests` GETs from `concurrency` workers; each asks `next_url` for its URL.
async fn drive(
    http: reqwest::Client,
    token: String,
    requests: u64,
    concurrency: u64,
    next_url: Arc<dyn Fn() -> String + Send + Sync>,
) -> Run {
    let started = Instant::now();
    let per_worker = requests.div_ceil(concurrency.max(1));
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (http, token, next_url) = (http.clone(), token.clone(), next_url.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_worker as usize);
            let mut errors = 0u64;
            for _ in 0..per_worker {
                let url = next_url();
                let t = Instant::now();
                record(
                    http.get(&url).bearer_auth(&token).send().await,
                    t,
                    &mut latencies,
                    &mut errors,
                )
                .await;
            }
            (latencies, errors)
        }));
    }
    collect(tasks, started).await
}

type Worker = tokio::task::JoinHandle<(Vec<Duration>, u64)>;

/// Counts one request: its latency when it succeeded (body read), an error otherwise.
async fn record(
    res: reqwest::Result<reqwest::Response>,
    started: Instant,
    latencies: &mut Vec<Duration>,
    errors: &mut u64,
) {
    let ok = match res {
        Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
        Err(_) => false,
    };
    if ok {
        latencies.push(started.elapsed());
    } else {
        *errors += 1;
    }
}

/// Gathers the workers' latencies and errors into one run.
async fn collect(tasks: Vec<Worker>, started: Instant) -> Run {
    let mut run = Run {
        latencies: Vec::new(),
        errors: 0,
        elapsed: Duration::ZERO,
    };
    for t in tasks {
        if let Ok((l, e)) = t.await {
            run.latencies.extend(l);
            run.errors += e;
        }
    }
    run.elapsed = started.elapsed();
    run
}

/// The messages URL of the channel and the token to use: from `--state`, or from `--base-url`,
/// `--space`, `--channel` and `--token`.
fn channel_target(opts: &Options) -> Result<(String, String), Failure> {
    if let Ok(path) = opts.get("state") {
        let state = State::load(path)?;
        return Ok((state.messages_url(), state.token));
    }
    let url = format!(
        "{}/spaces/{}/channels/{}/messages/",
        opts.base()?,
        opts.get("space")?,
        opts.get("channel")?
    );
    Ok((url, opts.get("token")?.to_string()))
}

/// The time span of a channel's history, from its oldest and newest messages (in unix ms).
async fn span(http: &reqwest::Client, base: &str, token: &str) -> Result<(u64, u64), Failure> {
    let ms = |m: &Value| -> Option<u64> {
        let id = uuid::Uuid::parse_str(m["id"].as_str()?).ok()?;
        let (s, n) = id.get_timestamp()?.to_unix();
        Some(s * 1000 + u64::from(n) / 1_000_000)
    };
    let newest: Value = http
        .get(format!("{base}?limit=1"))
        .bearer_auth(token)
        .send()
        .await?
        .json()
        .await?;
    let first = uuid::Uuid::nil();
    let oldest: Value = http
        .get(format!("{base}?limit=1&after={first}"))
        .bearer_auth(token)
        .send()
        .await?
        .json()
        .await?;
    let hi = newest.get(0).and_then(ms).ok_or("the channel is empty")?;
    let lo = oldest.get(0).and_then(ms).unwrap_or(hi);
    Ok((lo, hi))
}

fn v7_at(ms: u64) -> uuid::Uuid {
    uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        ms / 1000,
        ((ms % 1000) * 1_000_000) as u32,
    ))
}

/// Pages of `limit` messages before random points of the whole history.
pub async fn history(opts: &Options) -> Result<(), Failure> {
    let (channel_url, token) = channel_target(opts)?;
    let (requests, concurrency, limit) = (
        opts.num("requests", 2000)?,
        opts.num("concurrency", 4)?,
        opts.num("limit", 50)?,
    );
    let http = client()?;
    let (lo, hi) = span(&http, &channel_url, &token).await?;
    let url = channel_url.clone();
    let next: Arc<dyn Fn() -> String + Send + Sync> = Arc::new(move || {
        let at = rand::rng().random_range(lo..=hi.max(lo));
        format!("{url}?limit={limit}&before={}", v7_at(at + 1))
    });
    let run = drive(http, token, requests, concurrency, next).await;
    report::print(
        &run.summary("history", json!({"limit": limit, "concurrency": concurrency})),
        &COLUMNS,
    );
    Ok(())
}

/// Full-text searches drawn from `--queries`, some paged with `before` at random points.
pub async fn search(opts: &Options) -> Result<(), Failure> {
    let (channel_url, token) = channel_target(opts)?;
    let (requests, concurrency) = (opts.num("requests", 1000)?, opts.num("concurrency", 4)?);
    let queries: Vec<String> = opts
        .get("queries")?
        .split(',')
        .map(|q| q.trim().to_string())
        .filter(|q| !q.is_empty())
        .collect();
    if queries.is_empty() {
        return Err("--queries needs at least one query".into());
    }
    let http = client()?;
    let (lo, hi) = span(&http, &channel_url, &token).await?;
    let url = format!("{channel_url}search");
    let encoded: Vec<String> = queries
        .iter()
        .map(|q| q.replace('%', "%25").replace(' ', "%20").replace('"', "%22"))
        .collect();
    let next: Arc<dyn Fn() -> String + Send + Sync> = Arc::new(move || {
        let mut rng = rand::rng();
        let q = &encoded[rng.random_range(0..encoded.len())];
        if rng.random_bool(0.5) {
            format!(
                "{url}?q={q}&limit=25&before={}",
                v7_at(rng.random_range(lo..=hi.max(lo)))
            )
        } else {
            format!("{url}?q={q}&limit=25")
        }
    });
    let run = drive(http, token, requests, concurrency, next).await;
    report::print(
        &run.summary("search", json!({"queries": queries, "concurrency": concurrency})),
        &COLUMNS,
    );
    Ok(())
}

/// Message sends (persisted and fanned out) from `concurrency` workers for `seconds`, while
/// `--listeners` members are connected and receive them.
pub async fn send(opts: &Options) -> Result<(), Failure> {
    let (url, token) = channel_target(opts)?;
    let (concurrency, seconds) = (opts.num("concurrency", 64)?.max(1), opts.num("seconds", 10)?);
    let mut fleet = live::listeners(opts).await?;
    let http = client()?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let (http, token, url) = (http.clone(), token.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut errors, mut n) = (Vec::new(), 0u64, 0u64);
            while Instant::now() < deadline {
                n += 1;
                let body = json!({"content": format!("loadgen {worker}/{n}")});
                let t = Instant::now();
                let res = http.post(&url).bearer_auth(&token).json(&body).send().await;
                record(res, t, &mut latencies, &mut errors).await;
            }
            (latencies, errors)
        }));
    }
    let run = collect(tasks, started).await;
    let mut listening = json!({"listeners": 0});
    if let Some(mut f) = fleet.take() {
        let tallies = f.finish(0, Duration::ZERO).await?;
        listening = json!({"listeners": f.connected, "dropped": crate::gateway::sum(&tallies, "dropped")});
        f.close().await;
    }
    let params = json!({"concurrency": concurrency, "seconds": seconds, "listeners": listening});
    report::print(&run.summary("send", params), &COLUMNS);
    Ok(())
}
