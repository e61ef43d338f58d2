//! Property test of message history paging (spec §4.10): for any insertion pattern — including
//! many messages in the same millisecond and interleaved channels — paging backwards and then
//! forwards visits every message of the channel exactly once, in order. The same holds for
//! history imported from Mikoto (random UUIDv4 ids, microsecond timestamps, minted ids): in the
//! source's (timestamp, id) order.

use crate::common::TestApp;
use crate::common::fixtures::ids;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::json;

/// A message as a test inserts it: its id, its stored timestamp, and its key in the order the
/// history must have.
type Minted = (uuid::Uuid, chrono::DateTime<chrono::Utc>, (u64, u32, uuid::Uuid));

/// A message created by alterego at `ms`: a UUIDv7, ordered by itself.
fn native(ms: u64, _micros: u32) -> Minted {
    let (id, ts) = v7_at(ms);
    (id, ts, (ms, 0, id))
}

/// A message imported from Mikoto at `ms` + `micros` µs with a random UUIDv4: its minted id,
/// ordered as Mikoto ordered it, by (timestamp, old id).
fn imported(ms: u64, micros: u32) -> Minted {
    let legacy = uuid::Uuid::new_v4();
    let at = chrono::DateTime::from_timestamp_millis(ms as i64)
        .unwrap_or_default()
        .naive_utc()
        + chrono::TimeDelta::microseconds(i64::from(micros));
    let id = alterego::import::convert::message_id(legacy, at);
    (id, alterego::import::convert::timestamp(at).0, (ms, micros, legacy))
}

/// A UUIDv7 at `ms` with random tail bits, and its timestamp.
fn v7_at(ms: u64) -> (uuid::Uuid, chrono::DateTime<chrono::Utc>) {
    let ts = uuid::Timestamp::from_unix(uuid::NoContext, ms / 1000, ((ms % 1000) * 1_000_000) as u32);
    let id = uuid::Uuid::new_v7(ts);
    (
        id,
        chrono::DateTime::from_timestamp_millis(ms as i64).unwrap_or_default(),
    )
}

async fn page(app: &TestApp, token: &str, base: &str, query: &str) -> Vec<String> {
    let r = app.get(&format!("{base}?{query}"), Some(token)).await;
    r.expect(200, None);
    ids(&r.body)
}

#[test]
fn paging_visits_every_message_exactly_once() {
    property(native);
}

#[test]
fn paging_visits_every_imported_message_exactly_once() {
    property(imported);
}

fn property(mint: fn(u64, u32) -> Minted) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (app, ann, sid) = rt.block_on(async {
        let app = TestApp::spawn().await;
        let ann = app.register("Ann").await;
        let s = app.post("/spaces/", Some(&ann.access), json!({"name": "Paging"})).await;
        (app, ann, s.body["id"].as_str().unwrap().to_string())
    });
    let author = ann.id.clone();
    let mut runner = TestRunner::new(Config {
        cases: 24,
        ..Config::default()
    });
    // Each message: a millisecond offset (small range → many collisions), a microsecond within
    // it (for imported rows), and whether it goes to a neighbouring channel instead; plus a
    // page size.
    let strategy = (
        proptest::collection::vec((0u64..8, 0u32..3, proptest::bool::weighted(0.3)), 1..60),
        1i64..12,
    );
    let result = runner.run(&strategy, |(pattern, limit)| {
        rt.block_on(async {
            let path = format!("/spaces/{sid}/channels/");
            let mk = |name: &str| app.post(&path, Some(&ann.access), json!({"name": name}));
            let cid = mk("main").await.body["id"].as_str().unwrap().to_string();
            let other = mk("other").await.body["id"].as_str().unwrap().to_string();
            let base_ms = 1_800_000_000_000u64;
            let mut mine = Vec::new();
            for (offset, micros, elsewhere) in &pattern {
                let (id, ts, key) = mint(base_ms + offset, *micros);
                let channel = if *elsewhere { &other } else { &cid };
                sqlx::query(
                    "INSERT INTO messages (id, channel_id, author_id, timestamp, content) VALUES ($1, $2::uuid, $3::uuid, $4, 'x')",
                )
                .bind(id)
                .bind(channel)
                .bind(&author)
                .bind(ts)
                .execute(app.db())
                .await
                .unwrap();
                if !elsewhere {
                    mine.push((key, id.to_string()));
                }
            }
            mine.sort();
            let mine: Vec<String> = mine.into_iter().map(|(_, id)| id).collect();
            let base = format!("/spaces/{sid}/channels/{cid}/messages/");
            // Backwards from the newest.
            let mut back: Vec<String> = Vec::new();
            let mut q = format!("limit={limit}");
            loop {
                let p = page(&app, &ann.access, &base, &q).await;
                if p.is_empty() {
                    break;
                }
                q = format!("limit={limit}&before={}", p[0]);
                back.splice(0..0, p);
            }
            prop_assert_eq!(&back, &mine);
            // Forwards from before the oldest.
            let mut fwd: Vec<String> = Vec::new();
            let (start, _) = v7_at(base_ms - 1);
            let mut q = format!("limit={limit}&after={start}");
            loop {
                let p = page(&app, &ann.access, &base, &q).await;
                if p.is_empty() {
                    break;
                }
                q = format!("limit={limit}&after={}", p[p.len() - 1]);
                fwd.extend(p);
            }
            prop_assert_eq!(&fwd, &mine);
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
