//! `alterego-loadgen`: measures a server the way clients load it, through the public wire
//! protocol only (REST today; WebSocket scenarios arrive with the gateway). Point it at any
//! server implementing the protocol with `--base-url`.
//!
//! ```text
//! alterego-loadgen setup   --base-url URL                        # user + space + channel, as JSON
//! alterego-loadgen history --base-url URL --token T --space S --channel C [--requests N] [--concurrency C] [--limit 50]
//! alterego-loadgen search  --base-url URL --token T --space S --channel C --queries a,b,"c d" [--requests N] [--concurrency C]
//! alterego-loadgen send    --base-url URL --token T --space S --channel C [--concurrency 64] [--seconds 10]
//! ```
//! Every loop is bounded in count and time. Results: one JSON line, then a readable table.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{Value, json};

type Failure = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((scenario, rest)) = args.split_first() else {
        eprintln!("usage: alterego-loadgen <setup|history|search> --base-url URL [options]");
        return ExitCode::FAILURE;
    };
    let opts = match Options::parse(rest) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("alterego-loadgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match scenario.as_str() {
        "setup" => setup(&opts).await,
        "history" => history(&opts).await,
        "search" => search(&opts).await,
        "send" => send(&opts).await,
        other => Err(format!("unknown scenario `{other}`").into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("alterego-loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--key value` options.
struct Options {
    values: HashMap<String, String>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut values = HashMap::new();
        let mut it = args.iter();
        while let Some(key) = it.next() {
            let name = key
                .strip_prefix("--")
                .ok_or_else(|| format!("expected an option, got `{key}`"))?;
            let value = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
            values.insert(name.to_string(), value.clone());
        }
        Ok(Options { values })
    }

    fn get(&self, key: &str) -> Result<&str, String> {
        self.values
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| format!("--{key} is required"))
    }

    fn num(&self, key: &str, default: u64) -> Result<u64, String> {
        match self.values.get(key) {
            Some(v) => v.parse().map_err(|_| format!("--{key} must be a number")),
            None => Ok(default),
        }
    }

    fn base(&self) -> Result<String, String> {
        Ok(self.get("base-url")?.trim_end_matches('/').to_string())
    }
}

fn client() -> Result<reqwest::Client, Failure> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(256)
        .build()?)
}

/// Registers a user and creates a space; prints the ids and token as JSON.
async fn setup(opts: &Options) -> Result<(), Failure> {
    let base = opts.base()?;
    let http = client()?;
    let email = format!("loadgen-{}@example.org", uuid::Uuid::new_v4().simple());
    let password = "loadgen password";
    let reg: Value = http
        .post(format!("{base}/account/register"))
        .json(&json!({"email": email, "name": "loadgen", "password": password}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let token = reg["accessToken"].as_str().ok_or("no access token")?.to_string();
    let space: Value = http
        .post(format!("{base}/spaces/"))
        .bearer_auth(&token)
        .json(&json!({"name": "loadgen"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let me: Value = http
        .get(format!("{base}/users/me"))
        .bearer_auth(&token)
        .send()
        .await?
        .json()
        .await?;
    println!(
        "{}",
        json!({
            "email": email, "password": password, "token": token, "userId": me["id"],
            "spaceId": space["id"], "channelId": space["channels"][0]["id"],
        })
    );
    Ok(())
}

/// Latencies of one run.
struct Run {
    latencies: Vec<Duration>,
    errors: u64,
    elapsed: Duration,
}

impl Run {
    fn report(mut self, scenario: &str, extra: Value) {
        self.latencies.sort();
        let n = self.latencies.len();
        let pct = |p: f64| -> f64 {
            if n == 0 {
                return 0.0;
            }
            let i = ((p / 100.0) * n as f64).ceil() as usize;
            self.latencies[i.clamp(1, n) - 1].as_secs_f64() * 1000.0
        };
        let rps = n as f64 / self.elapsed.as_secs_f64().max(1e-9);
        let summary = json!({
            "scenario": scenario, "requests": n, "errors": self.errors, "seconds": self.elapsed.as_secs_f64(),
            "requestsPerSecond": rps, "p50Ms": pct(50.0), "p99Ms": pct(99.0), "maxMs": pct(100.0), "params": extra,
        });
        println!("{summary}");
        println!("| scenario | requests | errors | req/s | p50 ms | p99 ms | max ms |");
        println!("|---|---|---|---|---|---|---|");
        println!(
            "| {scenario} | {n} | {} | {rps:.0} | {:.2} | {:.2} | {:.2} |",
            self.errors,
            pct(50.0),
            pct(99.0),
            pct(100.0)
        );
    }
}

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

/// The messages URL of `--space`/`--channel` and the `--token` to use.
fn channel_target(opts: &Options) -> Result<(String, String), String> {
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
async fn history(opts: &Options) -> Result<(), Failure> {
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
    run.report("history", json!({"limit": limit, "concurrency": concurrency}));
    Ok(())
}

/// Full-text searches drawn from `--queries`, some paged with `before` at random points.
async fn search(opts: &Options) -> Result<(), Failure> {
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
    run.report("search", json!({"queries": queries, "concurrency": concurrency}));
    Ok(())
}

/// Message sends (persisted and fanned out) from `concurrency` workers for `seconds`.
async fn send(opts: &Options) -> Result<(), Failure> {
    let base = opts.base()?;
    let url = format!(
        "{base}/spaces/{}/channels/{}/messages/",
        opts.get("space")?,
        opts.get("channel")?
    );
    let token = opts.get("token")?.to_string();
    let (concurrency, seconds) = (opts.num("concurrency", 64)?.max(1), opts.num("seconds", 10)?);
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
    run.report("send", json!({"concurrency": concurrency, "seconds": seconds}));
    Ok(())
}
