//! Measures the gateway's resident memory per idle authenticated `/ws` connection.
//!
//! Run against a release server started separately (its own process, so the client's sockets
//! do not count against it), for example:
//!
//! ```sh
//! ulimit -n 20000
//! WS_URL=ws://127.0.0.1:3599/ws DATABASE_URL=postgres://postgres@127.0.0.1:5432/alterego_mem \
//! JWT_SECRET=... JWT_ISSUER=http://localhost:3599 SERVER_PID=$(pgrep -n alterego) \
//! CONNECTIONS=10000 cargo run --release --example ws_memory
//! ```
//!
//! It seeds `CONNECTIONS` users (straight into the database: registering 10,000 accounts
//! through bcrypt would take far longer than the measurement) with one auth session each —
//! with `SHARED_SPACE=1` all members of one space, so every connection's presence reaches every
//! other one (`SETTLE_SECS` then should exceed the 60 s replay age); then reads the server's `VmRSS` with one connection open, opens the
//! rest (each authenticates and waits for `ready`, then keeps reading so the server's Pings are
//! answered, as a browser would), waits for the server to settle, and reads `VmRSS` again.

use std::time::{Duration, Instant};

use alterego::functions::jwt::JwtKeys;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use uuid::Uuid;

fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("{key} must be set"))
}

fn rss_kib(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("server process");
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

async fn seed(db: &sqlx::PgPool, n: usize, shared: bool) -> Vec<(Uuid, Uuid)> {
    let users: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
    let sessions: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
    let owner = users[0];
    let (space, everyone, general) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let members: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
    let mut tx = db.begin().await.expect("begin");
    sqlx::query(
        "INSERT INTO users (id, name) SELECT u, 'user ' || i FROM unnest($1::uuid[]) WITH ORDINALITY AS t(u, i)",
    )
    .bind(&users)
    .execute(&mut *tx)
    .await
    .expect("users");
    sqlx::query("INSERT INTO auth_sessions (id, user_id) SELECT * FROM unnest($1::uuid[], $2::uuid[])")
        .bind(&sessions)
        .bind(&users)
        .execute(&mut *tx)
        .await
        .expect("sessions");
    sqlx::query("INSERT INTO spaces (id, name, owner_id) VALUES ($1, 'Memory', $2)")
        .bind(space)
        .bind(owner)
        .execute(&mut *tx)
        .await
        .expect("space");
    sqlx::query(
        "INSERT INTO roles (id, space_id, name, permissions, position, is_default) \
         VALUES ($1, $2, '@everyone', 28672, -1, true)",
    )
    .bind(everyone)
    .bind(space)
    .execute(&mut *tx)
    .await
    .expect("role");
    sqlx::query("INSERT INTO channels (id, space_id, name, type) VALUES ($1, $2, 'general', 'TEXT')")
        .bind(general)
        .bind(space)
        .execute(&mut *tx)
        .await
        .expect("channel");
    let in_space = if shared { &users[..] } else { &users[..1] };
    sqlx::query(
        "INSERT INTO members (id, space_id, user_id) SELECT m, $2, u FROM unnest($1::uuid[], $3::uuid[]) AS t(m, u)",
    )
    .bind(&members[..in_space.len()])
    .bind(space)
    .bind(in_space)
    .execute(&mut *tx)
    .await
    .expect("members");
    tx.commit().await.expect("commit");
    users.into_iter().zip(sessions).collect()
}

/// Opens one connection, authenticates, waits for `ready`, then keeps reading in the background.
async fn connect(url: &str, token: String) -> Result<tokio::task::JoinHandle<()>, String> {
    let mut req = url.into_client_request().map_err(|e| e.to_string())?;
    let ip = Uuid::new_v4().into_bytes();
    let forwarded = format!("10.{}.{}.{}", ip[0], ip[1], ip[2]);
    req.headers_mut()
        .insert("x-forwarded-for", forwarded.parse().map_err(|_| "header")?);
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(4096);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(req, Some(config), false)
        .await
        .map_err(|e| e.to_string())?;
    let auth = serde_json::json!({"op": "authenticate", "data": {"token": token}}).to_string();
    ws.send(Message::Text(auth.into())).await.map_err(|e| e.to_string())?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.as_str().contains("\"op\":\"ready\"") => break,
            Some(Ok(Message::Close(f))) => return Err(format!("closed: {f:?}")),
            Some(Ok(_)) => continue,
            other => return Err(format!("{other:?}")),
        }
    }
    Ok(tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} }))
}

#[tokio::main]
async fn main() {
    let url = env("WS_URL");
    let pid = env("SERVER_PID");
    let n: usize = std::env::var("CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let parallel: usize = std::env::var("CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let db = sqlx::PgPool::connect(&env("DATABASE_URL")).await.expect("database");
    let keys = JwtKeys::new(env("JWT_SECRET").as_bytes(), &env("JWT_ISSUER"));
    let t = Instant::now();
    // SHARED_SPACE=1: every user is a member of one space (presence then fans out to all).
    let shared = std::env::var("SHARED_SPACE").is_ok_and(|v| v == "1");
    let settle: u64 = std::env::var("SETTLE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let pairs = seed(&db, n + 1, shared).await;
    println!("seeded {} users (shared space: {shared}) in {:?}", n + 1, t.elapsed());
    let tokens: Vec<String> = pairs
        .iter()
        .map(|(u, s)| keys.user_token(*u, *s, Duration::from_secs(3600)).expect("token"))
        .collect();

    // One connection first: pools, the space view and the bus subscriptions exist from here on.
    let first = connect(&url, tokens[0].clone()).await.expect("first connection");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = rss_kib(&pid);
    println!("server VmRSS with 1 connection: {before} KiB");

    let t = Instant::now();
    let mut handles = vec![first];
    let mut failed = 0;
    for chunk in tokens[1..].chunks(parallel) {
        let results = futures_util::future::join_all(chunk.iter().map(|tk| connect(&url, tk.clone()))).await;
        for r in results {
            match r {
                Ok(h) => handles.push(h),
                Err(e) => {
                    failed += 1;
                    if failed < 5 {
                        eprintln!("connection failed: {e}");
                    }
                }
            }
        }
    }
    println!(
        "{} connections ready ({failed} failed) in {:?}",
        handles.len(),
        t.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(settle)).await;
    let after = rss_kib(&pid);
    let added = (handles.len() - 1) as f64;
    println!("server VmRSS with {} connections: {after} KiB", handles.len());
    println!(
        "per idle authenticated connection: {:.2} KB ({:.2} KiB)",
        (after.saturating_sub(before) as f64) * 1.024 / added,
        (after.saturating_sub(before) as f64) / added
    );
}
