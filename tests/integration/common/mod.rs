//! The integration-test harness: the real server on an ephemeral port, a fresh database cloned
//! from a migrated template, an isolated Redis namespace, HTTP/WebSocket clients and a bus
//! capture. Tests run in parallel and never see each other's data.
//!
//! A server: `TestApp::spawn()`, or [`TestApp::builder`] for one with adjusted configuration or
//! state. The spaces, channels, roles, friendships and DMs tests start from are built by
//! [`fixtures`].

pub mod collab;
pub mod fixtures;
pub mod logs;
pub mod mikoto;
pub mod node;
pub mod redis;
pub mod ws;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use alterego::config::Config;
use alterego::functions::bus::{Inbound, Topic};
use alterego::functions::mail::Mailer;
use alterego::state::AppState;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::{Connection, PgConnection};
use tokio::sync::{broadcast, oneshot};

pub const PASSWORD: &str = "correct horse battery";

pub fn database_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// `url` with its database name replaced.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, _) = url.rsplit_once('/').unwrap_or((url, ""));
    format!("{base}/{name}")
}

/// A template database holding the current migrations, created once per migration set and
/// shared by every test process (creation is serialised with an advisory lock).
async fn template_database(admin_url: &str) -> String {
    let mut hasher = Sha256::new();
    for m in alterego::db::MIGRATOR.iter() {
        hasher.update(m.version.to_le_bytes());
        hasher.update(&m.checksum);
    }
    let digest = hasher.finalize();
    let name = format!(
        "alterego_tmpl_{}",
        digest.iter().take(6).map(|b| format!("{b:02x}")).collect::<String>()
    );
    let mut admin = PgConnection::connect(admin_url)
        .await
        .expect("connect to PostgreSQL (is it running?)");
    sqlx::query("SELECT pg_advisory_lock(7411)")
        .execute(&mut admin)
        .await
        .expect("lock");
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&name)
        .fetch_one(&mut admin)
        .await
        .expect("query");
    if !exists {
        let building = format!("{name}_building");
        let drop = format!("DROP DATABASE IF EXISTS \"{building}\" WITH (FORCE)");
        sqlx::query(sqlx::AssertSqlSafe(drop))
            .execute(&mut admin)
            .await
            .expect("drop stale");
        let create = format!("CREATE DATABASE \"{building}\"");
        sqlx::query(sqlx::AssertSqlSafe(create))
            .execute(&mut admin)
            .await
            .expect("create template");
        let pool = alterego::db::connect(&with_database(admin_url, &building), 2, false)
            .await
            .expect("connect template");
        alterego::db::migrate(&pool).await.expect("migrate template");
        pool.close().await;
        let rename = format!("ALTER DATABASE \"{building}\" RENAME TO \"{name}\"");
        sqlx::query(sqlx::AssertSqlSafe(rename))
            .execute(&mut admin)
            .await
            .expect("publish template");
    }
    sqlx::query("SELECT pg_advisory_unlock(7411)")
        .execute(&mut admin)
        .await
        .expect("unlock");
    let _ = admin.close().await;
    name
}

/// A fresh database for one test.
async fn fresh_database(admin_url: &str) -> String {
    let template = template_database(admin_url).await;
    let name = format!("alterego_test_{}", uuid::Uuid::now_v7().simple());
    let mut admin = PgConnection::connect(admin_url).await.expect("connect");
    let create = format!("CREATE DATABASE \"{name}\" TEMPLATE \"{template}\"");
    sqlx::query(sqlx::AssertSqlSafe(create))
        .execute(&mut admin)
        .await
        .expect("clone template");
    let _ = admin.close().await;
    name
}

/// The configuration of a test server: production-like, but fast bcrypt and a fixed secret.
pub fn test_config(database_url: &str, redis: bool) -> Config {
    let prefix = format!("t{}", uuid::Uuid::now_v7().simple());
    let mut map: HashMap<&str, String> = HashMap::from([
        ("DATABASE_URL", database_url.to_string()),
        ("JWT_SECRET", "test-secret-test-secret-test-secret-0123".into()),
        ("PUBLIC_URL", "http://alterego.test".into()),
        ("WEB_URL", "http://web.alterego.test".into()),
        ("HANDLE_DOMAIN", "alterego.test".into()),
        ("REDIS_PREFIX", prefix),
        ("AUTOMIGRATE", "false".into()),
        ("DATABASE_MAX_CONNECTIONS", "5".into()),
        ("TRUSTED_PROXIES", "127.0.0.1".into()),
    ]);
    if redis {
        map.insert("REDIS_URL", redis_url());
    }
    let mut config = Config::from_lookup(|k| map.get(k).cloned()).expect("test config");
    config.bcrypt_cost = 4;
    config
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub state: AppState,
    pub http: reqwest::Client,
    admin_url: String,
    db_name: String,
    shutdown: Option<oneshot::Sender<()>>,
    /// Turns true when `alterego::serve` has returned.
    served: tokio::sync::watch::Receiver<bool>,
    /// This test's S3-protocol server and local media directory (see the media section below).
    pub media: MediaFixture,
}

pub struct TestUser {
    pub id: String,
    pub email: String,
    pub name: String,
    pub password: String,
    pub access: String,
    pub refresh: String,
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the status and, for errors, the stable code.
    #[track_caller]
    pub fn expect(&self, status: u16, code: Option<&str>) -> &Self {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.text);
        if let Some(code) = code {
            assert_eq!(self.body["code"], code, "unexpected code; body: {}", self.text);
            assert!(self.body["message"].is_string(), "error without message: {}", self.text);
        }
        self
    }
}

/// The token of the reset link in a password-reset mail.
pub fn reset_token(mail: &alterego::functions::mail::Mail) -> String {
    let link = mail.body.split("/forgotpassword/").nth(1).expect("reset link in mail");
    link.split_whitespace().next().expect("token").to_string()
}

/// A random address in 10.0.0.0/8.
pub fn random_ip() -> String {
    let b = uuid::Uuid::new_v4().into_bytes();
    format!("10.{}.{}.{}", b[0], b[1], b[2])
}

/// Adjusts a test server's configuration or state before it starts.
type Adjust<'a, T> = Box<dyn FnOnce(&mut T) + Send + 'a>;

/// How to build a [`TestApp`]: [`TestApp::builder`], the adjustments, then
/// [`TestAppBuilder::spawn`]. Adjustments run in the order they were given.
#[must_use = "a builder does nothing until `spawn`"]
pub struct TestAppBuilder<'a> {
    redis: bool,
    config: Vec<Adjust<'a, Config>>,
    state: Vec<Adjust<'a, AppState>>,
}

impl<'a> TestAppBuilder<'a> {
    /// In-process backends (bus, rate limits) instead of Redis.
    pub fn without_redis(mut self) -> Self {
        self.redis = false;
        self
    }

    /// Adjusts the configuration (already pointed at this test's database, Redis namespace and
    /// media fixture).
    pub fn config(mut self, adjust: impl FnOnce(&mut Config) + Send + 'a) -> Self {
        self.config.push(Box::new(adjust));
        self
    }

    /// Adjusts the state before the server starts (e.g. a fake `domain_probe` for handle
    /// verification).
    pub fn state(mut self, adjust: impl FnOnce(&mut AppState) + Send + 'a) -> Self {
        self.state.push(Box::new(adjust));
        self
    }

    /// Redis at `url` (a [`redis::PrivateRedis`], say) instead of the shared one.
    pub fn redis_at(self, url: &str) -> Self {
        let url = url.to_string();
        self.config(move |c| c.redis_url = Some(url))
    }

    /// The media backend (local by default).
    pub fn media(self, storage: alterego::config::MediaStorage) -> Self {
        self.config(move |c| c.media_storage = storage)
    }

    /// Creates the database, the media fixture and the state, and starts the server.
    pub async fn spawn(self) -> TestApp {
        let admin_url = database_url();
        let db_name = fresh_database(&admin_url).await;
        let mut config = test_config(&with_database(&admin_url, &db_name), self.redis);
        let media = MediaFixture::start().await;
        media.configure(&mut config);
        for adjust in self.config {
            adjust(&mut config);
        }
        let mut state = TestApp::new_state(config).await;
        for adjust in self.state {
            adjust(&mut state);
        }
        TestApp::serve(state, admin_url, db_name, media).await
    }
}

impl TestApp {
    /// A server with Redis (bus, rate limits) in its own namespace.
    pub async fn spawn() -> TestApp {
        Self::builder().spawn().await
    }

    /// A server to configure: `TestApp::builder().without_redis().config(|c| ..).spawn()`.
    pub fn builder<'a>() -> TestAppBuilder<'a> {
        TestAppBuilder {
            redis: true,
            config: Vec::new(),
            state: Vec::new(),
        }
    }

    /// The state of a server with `config` (its own pool, an in-memory mailer).
    async fn new_state(config: Config) -> AppState {
        let pool = alterego::db::connect(&config.database_url, config.database_max_connections, false)
            .await
            .expect("connect test database");
        AppState::new(config, pool, Some(Mailer::memory()))
            .await
            .expect("state")
    }

    /// Serves `state` on an ephemeral port. `db_name` is the database dropped with the server
    /// (empty: it belongs to another instance).
    async fn serve(state: AppState, admin_url: String, db_name: String, media: MediaFixture) -> TestApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        let (served_tx, served) = tokio::sync::watch::channel(false);
        let server_state = state.clone();
        tokio::spawn(async move {
            let _ = alterego::serve(listener, server_state, async {
                let _ = rx.await;
            })
            .await;
            let _ = served_tx.send(true);
        });
        TestApp {
            addr,
            base: format!("http://{addr}"),
            state,
            http: reqwest::Client::builder().build().expect("client"),
            admin_url,
            db_name,
            shutdown: Some(tx),
            served,
            media,
        }
    }

    /// Whether the server stopped serving (after [`TestApp::begin_shutdown`]) within `within`.
    pub async fn stopped(&self, within: Duration) -> bool {
        let mut served = self.served.clone();
        matches!(
            tokio::time::timeout(within, served.wait_for(|done| *done)).await,
            Ok(Ok(_))
        )
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends a request; `body: None` sends no body and no content type.
    ///
    /// Each request comes from a random client IP (the test server trusts 127.0.0.1 as a proxy),
    /// so the per-IP rate limits never interfere with tests that are not about them.
    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Resp {
        let mut req = self
            .http
            .request(method, self.url(path))
            .header("x-forwarded-for", random_ip());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        Self::read(req.send().await.expect("request")).await
    }

    pub async fn read(res: reqwest::Response) -> Resp {
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            body,
            text,
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Resp {
        self.call(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Resp {
        self.call(Method::POST, path, token, Some(body)).await
    }

    pub async fn patch(&self, path: &str, token: Option<&str>, body: Value) -> Resp {
        self.call(Method::PATCH, path, token, Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> Resp {
        self.call(Method::DELETE, path, token, None).await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: Value) -> Resp {
        self.call(Method::PUT, path, token, Some(body)).await
    }

    /// Creates a bot user owned by `owner` directly in the database (the bots API is another
    /// issue); returns its user id.
    pub async fn create_bot(&self, owner: &str, name: &str, public: bool) -> String {
        let id = uuid::Uuid::now_v7();
        sqlx::query("INSERT INTO users (id, name, category) VALUES ($1, $2, 'BOT')")
            .bind(id)
            .bind(name)
            .execute(self.db())
            .await
            .expect("bot user");
        sqlx::query("INSERT INTO bots (user_id, owner_id, visibility) VALUES ($1, $2::uuid, $3)")
            .bind(id)
            .bind(owner)
            .bind(if public { "PUBLIC" } else { "PRIVATE" })
            .execute(self.db())
            .await
            .expect("bot row");
        id.to_string()
    }

    /// Registers a user named `name` with a unique email.
    pub async fn register(&self, name: &str) -> TestUser {
        self.register_with_password(name, PASSWORD).await
    }

    /// A new auth session of `user` (`account.login`): its access and refresh tokens.
    pub async fn login(&self, user: &TestUser) -> (String, String) {
        let r = self
            .post(
                "/account/login",
                None,
                json!({"email": user.email, "password": user.password}),
            )
            .await;
        r.expect(200, None);
        let token = |k: &str| r.body[k].as_str().expect("token").to_string();
        (token("accessToken"), token("refreshToken"))
    }

    /// [`TestApp::register`] with a password other than [`PASSWORD`].
    pub async fn register_with_password(&self, name: &str, password: &str) -> TestUser {
        let email = format!(
            "{}-{}@example.org",
            name.to_lowercase().replace(' ', "-"),
            uuid::Uuid::now_v7().simple()
        );
        let r = self
            .post(
                "/account/register",
                None,
                json!({"email": email, "name": name, "password": password}),
            )
            .await;
        r.expect(200, None);
        let access = r.body["accessToken"].as_str().expect("accessToken").to_string();
        let refresh = r.body["refreshToken"].as_str().expect("refreshToken").to_string();
        let me = self.get("/users/me", Some(&access)).await;
        me.expect(200, None);
        TestUser {
            id: me.body["id"].as_str().expect("id").to_string(),
            email,
            name: name.to_string(),
            password: password.to_string(),
            access,
            refresh,
        }
    }

    /// Starts capturing the bus events of `topics` (subscribed before this returns).
    pub async fn capture(&self, topics: &[Topic]) -> Capture {
        let rx = self.state.bus.inbound();
        for t in topics {
            self.state.bus.subscribe(t).await;
        }
        Capture {
            rx,
            topics: topics.to_vec(),
        }
    }

    /// The mails the server has sent.
    pub fn mails(&self) -> Vec<alterego::functions::mail::Mail> {
        self.state.mailer.sent()
    }

    /// Waits for the `n`th mail (mail is sent in the background).
    pub async fn wait_for_mail(&self, n: usize) -> alterego::functions::mail::Mail {
        for _ in 0..200 {
            if let Some(m) = self.mails().get(n - 1) {
                return m.clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no mail number {n} within 4 s");
    }

    /// Opens a WebSocket to `path` (e.g. `/ws`), returning the client or the HTTP refusal.
    pub async fn ws(
        &self,
        path: &str,
    ) -> Result<
        tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
        tokio_tungstenite::tungstenite::Error,
    > {
        let url = format!("ws://{}{}", self.addr, path);
        tokio_tungstenite::connect_async(url).await.map(|(ws, _)| ws)
    }

    /// A direct connection to this test's database, for assertions on stored state.
    pub fn db(&self) -> &sqlx::PgPool {
        &self.state.db
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if self.db_name.is_empty() {
            return; // A peer instance (`spawn_peer`): the database belongs to the first one.
        }
        let (admin_url, name) = (self.admin_url.clone(), self.db_name.clone());
        // Drop the database from a separate runtime: Drop cannot await.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
            if let Ok(rt) = rt {
                rt.block_on(async move {
                    if let Ok(mut admin) = PgConnection::connect(&admin_url).await {
                        let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                        let _ = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&mut admin).await;
                    }
                });
            }
        })
        .join();
    }
}

/// Bus events captured for a test.
pub struct Capture {
    rx: broadcast::Receiver<Inbound>,
    topics: Vec<Topic>,
}

#[derive(Debug, Clone)]
pub struct Captured {
    pub topic: Topic,
    pub op: String,
    pub data: Value,
}

impl Capture {
    /// The next captured event on one of the topics, within `within`.
    pub async fn next(&mut self, within: Duration) -> Option<Captured> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.rx.recv()).await.ok()?;
            match msg {
                Ok(Inbound::Message(m)) if self.topics.contains(&m.topic) => {
                    let v: Value = serde_json::from_slice(&m.payload).expect("event JSON");
                    return Some(Captured {
                        topic: m.topic,
                        op: v["op"].as_str().unwrap_or_default().to_string(),
                        data: v["data"].clone(),
                    });
                }
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// Asserts the next event is `op` and returns its data.
    #[track_caller]
    pub fn expect_op(captured: Option<Captured>, op: &str) -> Captured {
        let c = captured.unwrap_or_else(|| panic!("expected event {op}, got none"));
        assert_eq!(c.op, op, "unexpected event: {c:?}");
        c
    }
}

// =============================================================================================
// Media (spec §10): every TestApp gets a real S3-protocol server — s3s-fs in process, on an
// ephemeral port, verifying SigV4 with static keys — and its own local media directory. The
// server's configuration points at both; `MEDIA_STORAGE` (local by default) picks the backend:
//
//     TestApp::builder().media(MediaStorage::S3).spawn().await

pub const S3_ACCESS_KEY: &str = "alterego-test-key";
pub const S3_SECRET_KEY: &str = "alterego-test-secret-key";
pub const S3_BUCKET: &str = "alterego-media";
pub const S3_REGION: &str = "us-east-1";

/// A test's media storage: an S3-protocol server on its own temporary root, and a directory
/// for the local backend. Both are removed when the test ends.
pub struct MediaFixture {
    /// `http://127.0.0.1:<port>`.
    pub s3_endpoint: String,
    /// The S3 server's file-system root (the bucket is the directory `S3_BUCKET` in it), held
    /// so that it is removed with the fixture.
    _s3_root: tempfile::TempDir,
    /// The local backend's `MEDIA_LOCAL_DIR`.
    pub local_dir: tempfile::TempDir,
    s3_shutdown: Option<oneshot::Sender<()>>,
}

impl MediaFixture {
    pub async fn start() -> MediaFixture {
        use axum::error_handling::HandleError;
        use s3s::auth::SimpleAuth;
        use s3s::service::S3ServiceBuilder;

        let s3_root = tempfile::tempdir().expect("S3 root");
        std::fs::create_dir(s3_root.path().join(S3_BUCKET)).expect("bucket directory");
        let fs = s3s_fs::FileSystem::new(s3_root.path()).expect("s3s-fs");
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(S3_ACCESS_KEY, S3_SECRET_KEY));
        let service = builder.build();
        let app = axum::Router::new().fallback_service(HandleError::new(service, |e: s3s::HttpError| async move {
            (axum::http::StatusCode::INTERNAL_SERVER_ERROR, format!("{e:?}"))
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind S3");
        let addr = listener.local_addr().expect("S3 addr");
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        MediaFixture {
            s3_endpoint: format!("http://{addr}"),
            _s3_root: s3_root,
            local_dir: tempfile::tempdir().expect("media dir"),
            s3_shutdown: Some(tx),
        }
    }

    /// Points a configuration at this fixture (the backend itself stays as configured).
    pub fn configure(&self, config: &mut Config) {
        config.media_local_dir = self.local_dir.path().join("media");
        config.s3 = alterego::config::S3Config {
            endpoint: Some(self.s3_endpoint.clone()),
            region: Some(S3_REGION.into()),
            bucket: Some(S3_BUCKET.into()),
            access_key_id: Some(S3_ACCESS_KEY.into()),
            secret_access_key: Some(S3_SECRET_KEY.into()),
            force_path_style: true,
        };
    }
}

impl Drop for MediaFixture {
    fn drop(&mut self) {
        if let Some(tx) = self.s3_shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A raw response: status, headers and the body bytes.
#[derive(Debug)]
pub struct RawResp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub bytes: Vec<u8>,
}

impl RawResp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as the JSON error or value it holds (`Null` if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }
}

impl TestApp {
    /// Uploads `bytes` as the Mikoto web client does: multipart field `file` with a filename.
    pub async fn upload(
        &self,
        store: &str,
        token: Option<&str>,
        filename: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Resp {
        self.upload_from(&random_ip(), store, token, filename, content_type, bytes)
            .await
    }

    /// [`TestApp::upload`] from a given client IP.
    pub async fn upload_from(
        &self,
        ip: &str,
        store: &str,
        token: Option<&str>,
        filename: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Resp {
        let part = reqwest::multipart::Part::bytes(bytes)
            .file_name(filename.to_string())
            .mime_str(content_type)
            .expect("part type");
        // Filenames go out raw, as browsers send them (reqwest would percent-encode them).
        let form = reqwest::multipart::Form::new()
            .percent_encode_noop()
            .text("note", "ignored")
            .part("file", part);
        let mut req = self
            .http
            .post(self.url(&format!("/media/{store}")))
            .header("x-forwarded-for", ip)
            .multipart(form);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        Self::read(req.send().await.expect("upload")).await
    }

    /// A GET with extra headers, returning the raw bytes.
    pub async fn get_raw(&self, path: &str, headers: &[(&str, &str)]) -> RawResp {
        let mut req = self.http.get(self.url(path));
        if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("x-forwarded-for")) {
            req = req.header("x-forwarded-for", random_ip());
        }
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.expect("body").to_vec();
        RawResp { status, headers, bytes }
    }

    /// Whether the configured media backend holds `key`.
    pub async fn media_has(&self, key: &str) -> bool {
        self.state.media.size(key).await.expect("media backend").is_some()
    }
}
