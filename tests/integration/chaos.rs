//! Chaos beyond the gateway (issue 17): what alterego depends on fails while it serves traffic —
//! PostgreSQL is restarted, Redis is killed and restarted, the server itself is killed with
//! SIGKILL. No request gets a 500, no acknowledged message is lost, and service comes back by
//! itself. Each test runs the processes it breaks (a private PostgreSQL cluster, a private
//! `redis-server`, a server binary), never the shared services.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::common::fixtures::space;
use crate::common::redis::PrivateRedis;
use crate::common::ws::Read;
use crate::common::{TestApp, random_ip};

/// One send's outcome: the status (0: no HTTP answer), the body, and when it was answered.
#[derive(Debug)]
struct Outcome {
    status: u16,
    body: Value,
    retry_after: Option<String>,
    at: Instant,
}

/// Senders posting messages to one channel until `stop`, as fast as answers come.
struct Traffic {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<Outcome>>>,
    answered: Arc<AtomicUsize>,
}

impl Traffic {
    fn start(base: &str, token: &str, path: &str, senders: usize) -> Traffic {
        let (stop, stopped) = watch::channel(false);
        let answered = Arc::new(AtomicUsize::new(0));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let tasks = (0..senders)
            .map(|n| {
                let (client, stopped, answered) = (client.clone(), stopped.clone(), answered.clone());
                let (url, token) = (format!("{base}{path}"), token.to_string());
                tokio::spawn(async move {
                    let mut outcomes = Vec::new();
                    for i in 0.. {
                        if *stopped.borrow() {
                            break;
                        }
                        let sent = client
                            .post(&url)
                            .bearer_auth(&token)
                            .header("x-forwarded-for", random_ip())
                            .json(&json!({"content": format!("sender {n} message {i}")}))
                            .send()
                            .await;
                        let outcome = match sent {
                            Ok(r) => Outcome {
                                status: r.status().as_u16(),
                                retry_after: r
                                    .headers()
                                    .get("retry-after")
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_owned),
                                body: r.json().await.unwrap_or(Value::Null),
                                at: Instant::now(),
                            },
                            Err(_) => Outcome {
                                status: 0,
                                body: Value::Null,
                                retry_after: None,
                                at: Instant::now(),
                            },
                        };
                        answered.fetch_add(1, Ordering::Relaxed);
                        let unanswered = outcome.status == 0;
                        outcomes.push(outcome);
                        if unanswered {
                            // The server is gone; a pause keeps a dead port from being hammered.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                    outcomes
                })
            })
            .collect();
        Traffic { stop, tasks, answered }
    }

    /// Waits until `n` more answers (of any kind) have come in.
    async fn wait_for_answers(&self, n: usize) {
        let target = self.answered.load(Ordering::Relaxed) + n;
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.answered.load(Ordering::Relaxed) < target {
            assert!(Instant::now() < deadline, "traffic stalled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn finish(self) -> Vec<Outcome> {
        let _ = self.stop.send(true);
        let mut all = Vec::new();
        for t in self.tasks {
            all.extend(t.await.unwrap());
        }
        all
    }
}

fn statuses(outcomes: &[Outcome]) -> BTreeMap<u16, usize> {
    let mut counts = BTreeMap::new();
    for o in outcomes {
        *counts.entry(o.status).or_default() += 1;
    }
    counts
}

fn acknowledged(outcomes: &[Outcome]) -> HashSet<String> {
    outcomes
        .iter()
        .filter(|o| o.status == 200)
        .map(|o| o.body["id"].as_str().expect("message id").to_string())
        .collect()
}

/// The ids of the messages stored in `channel`, read from the database.
async fn stored(db: &sqlx::PgPool, channel: &str) -> HashSet<String> {
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM messages WHERE channel_id = $1::uuid")
        .bind(channel)
        .fetch_all(db)
        .await
        .expect("stored messages");
    ids.into_iter().map(|id| id.to_string()).collect()
}

/// PostgreSQL stopped (fast shutdown: connections cut mid-transaction) and started again under
/// a steady stream of sends: during the outage each request is a JSON 503 with `Retry-After`
/// (a 500 before), the pool reconnects without help, and every acknowledged message is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_gives_503_then_recovers_without_losing_a_message() {
    use alterego::embedded_postgres::EmbeddedPostgres;
    let dir = tempfile::tempdir().unwrap();
    let pg = EmbeddedPostgres::start(dir.path()).await.expect("private cluster");
    let url = pg.url("chaos");
    let pool = alterego::db::connect(&url, 2, true).await.expect("create database");
    alterego::db::migrate(&pool).await.expect("migrate");
    pool.close().await;
    let app = TestApp::builder()
        .config(move |c| {
            c.database_url = url;
            c.rate_limits = false;
        })
        .spawn()
        .await;
    let owner = app.register("Owner").await;
    let (sid, cid) = space(&app, &owner, &[]).await;
    let path = format!("/spaces/{sid}/channels/{cid}/messages/");

    let traffic = Traffic::start(&app.base, &owner.access, &path, 4);
    traffic.wait_for_answers(50).await;
    let down = Instant::now();
    pg.stop().await;
    traffic.wait_for_answers(8).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _pg = EmbeddedPostgres::start(dir.path()).await.expect("restart");
    let up = Instant::now();
    // Recovery: sends succeed again without anyone touching the server.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = app.post(&path, Some(&owner.access), json!({"content": "probe"})).await;
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery: {} {}", r.status, r.text);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    traffic.wait_for_answers(50).await;
    let outcomes = traffic.finish().await;

    let counts = statuses(&outcomes);
    assert!(
        counts.keys().all(|s| *s == 200 || *s == 503),
        "only successes and 503s: {counts:?}"
    );
    let unavailable: Vec<_> = outcomes.iter().filter(|o| o.status == 503).collect();
    assert!(!unavailable.is_empty(), "the outage was not noticed: {counts:?}");
    for o in &unavailable {
        assert_eq!(o.body["code"], "ServiceUnavailable", "{:?}", o.body);
        assert!(o.retry_after.is_some(), "503 without Retry-After: {o:?}");
        assert!(o.at >= down, "a 503 before the outage: {o:?}");
    }
    assert!(
        outcomes.iter().any(|o| o.status == 200 && o.at > up),
        "no success after the restart: {counts:?}"
    );
    let acked = acknowledged(&outcomes);
    let stored = stored(app.db(), &cid).await;
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    app.get("/readyz", None).await.expect(200, None);
}

/// Redis killed and restarted under traffic: REST keeps answering (rate limits fail open, with a
/// warning), events published during the outage cannot be delivered, so every socket is told
/// to `resync` once the bus is back; delivery then resumes and nothing acknowledged is missing
/// from history.
#[tokio::test]
async fn redis_restart_keeps_rest_up_and_tells_sockets_to_resync() {
    let logs = crate::common::logs::Logs::capture();
    let mut redis = PrivateRedis::start().await;
    let app = TestApp::builder().redis_at(&redis.url).spawn().await;
    let owner = app.register("Owner").await;
    let reader = app.register("Reader").await;
    let (sid, cid) = space(&app, &owner, &[&reader]).await;
    let path = format!("/spaces/{sid}/channels/{cid}/messages/");
    let mut socket = app.ws_auth(&reader).await;
    let before = app.post(&path, Some(&owner.access), json!({"content": "before"})).await;
    before.expect(200, None);
    assert_eq!(socket.expect("messages.onCreate").await.data["id"], before.body["id"]);

    redis.kill();
    let mut during = Vec::new();
    for i in 0..5 {
        let r = app
            .post(&path, Some(&owner.access), json!({"content": format!("during {i}")}))
            .await;
        r.expect(200, None);
        during.push(r.body["id"].as_str().unwrap().to_string());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !logs.lines_with("limits fail open").is_empty(),
        "the limiter's outage is logged"
    );
    redis.restart().await;

    // The socket stays open and is told that events may have been missed.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match socket.read(left).await {
            Read::Frame(f) if f.op == "resync" => {
                assert_eq!(f.data["reason"], "bus_reconnected");
                break;
            }
            Read::Frame(_) => continue,
            other => panic!("no resync after the Redis restart: {other:?}\n{}", logs.text()),
        }
    }
    let after = app.post(&path, Some(&owner.access), json!({"content": "after"})).await;
    after.expect(200, None);
    let (frame, _) = socket.until("messages.onCreate").await;
    assert_eq!(frame.data["id"], after.body["id"]);
    // What the client refetches on `resync` holds everything acknowledged during the outage.
    let history = app.get(&format!("{path}?limit=50"), Some(&reader.access)).await;
    history.expect(200, None);
    let listed: HashSet<String> = history
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    for id in &during {
        assert!(
            listed.contains(id),
            "message {id} acknowledged during the outage is missing"
        );
    }
}

/// The server process killed with SIGKILL in the middle of a stream of sends: every message it
/// acknowledged is stored (the acknowledgement comes after the commit), at most the requests in
/// flight are stored unacknowledged, and a new process serves the same database at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_sends_loses_no_acknowledged_message() {
    const SENDERS: usize = 8;
    let app = TestApp::spawn().await;
    let owner = app.register("Owner").await;
    let (sid, cid) = space(&app, &owner, &[]).await;
    let path = format!("/spaces/{sid}/channels/{cid}/messages/");
    let work = tempfile::tempdir().unwrap();

    let mut server = ServerProcess::start(&app, work.path()).await;
    let traffic = Traffic::start(&server.base, &owner.access, &path, SENDERS);
    traffic.wait_for_answers(300).await;
    server.kill();
    let outcomes = traffic.finish().await;

    let counts = statuses(&outcomes);
    assert!(
        counts.keys().all(|s| *s == 200 || *s == 0),
        "only successes, then no answer: {counts:?}"
    );
    let acked = acknowledged(&outcomes);
    assert!(acked.len() >= 250, "{counts:?}");
    let stored = stored(app.db(), &cid).await;
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    let unacknowledged = stored.difference(&acked).count();
    assert!(
        unacknowledged <= SENDERS,
        "{unacknowledged} stored messages were never answered, with {SENDERS} senders"
    );

    // A new process takes over the same database.
    let server = ServerProcess::start(&app, work.path()).await;
    let r = reqwest::Client::new()
        .post(format!("{}{path}", server.base))
        .bearer_auth(&owner.access)
        .json(&json!({"content": "after the crash"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// The `alterego` binary serving the test server's database, configured as the test server is
/// (same JWT secret and issuer, so its tokens are valid here).
struct ServerProcess {
    base: String,
    child: std::process::Child,
}

impl ServerProcess {
    async fn start(app: &TestApp, dir: &std::path::Path) -> ServerProcess {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let config = &app.state.config;
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_alterego"))
            .arg("serve")
            // No `.env` of the developer's is read from here.
            .current_dir(dir)
            .env("DATABASE_URL", &config.database_url)
            .env("JWT_SECRET", String::from_utf8(config.jwt_secret.clone()).unwrap())
            .env("PUBLIC_URL", &config.public_url)
            .env("WEB_URL", &config.web_url)
            .env("JWT_ISSUER", &config.jwt_issuer)
            .env("HANDLE_DOMAIN", "alterego.test")
            .env("BIND_ADDR", format!("127.0.0.1:{port}"))
            .env("AUTOMIGRATE", "false")
            .env("RATE_LIMITS", "off")
            .env("MEDIA_LOCAL_DIR", dir.join("media"))
            .env("RUST_LOG", "warn")
            .env_remove("REDIS_URL")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start the alterego binary");
        let server = ServerProcess {
            base: format!("http://127.0.0.1:{port}"),
            child,
        };
        let client = reqwest::Client::new();
        for _ in 0..300 {
            if let Ok(r) = client.get(format!("{}/healthz", server.base)).send().await
                && r.status() == 200
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the alterego binary did not start");
    }

    /// SIGKILL: no drain, no flush, no goodbye.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
