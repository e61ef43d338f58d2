//! Operational endpoints (spec §4.19) and the OpenAPI document.

use std::time::{Duration, Instant};

use alterego::middlewares::access_log;

use crate::common::TestApp;
use crate::common::logs::Logs;

#[tokio::test]
async fn health_readiness_and_draining() {
    let app = TestApp::spawn().await;
    let r = app.get("/healthz", None).await;
    r.expect(200, None);
    assert_eq!(r.body["status"], "ok");
    app.get("/readyz", None).await.expect(200, None);
    app.state.start_draining();
    app.get("/readyz", None).await.expect(503, Some("ServiceUnavailable"));
    app.get("/healthz", None).await.expect(200, None);
}

#[tokio::test]
async fn readiness_fails_when_the_database_is_gone() {
    let app = TestApp::builder().without_redis().spawn().await;
    app.state.db.close().await;
    app.get("/readyz", None).await.expect(503, Some("ServiceUnavailable"));
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let app = TestApp::spawn().await;
    app.get("/", None).await.expect(200, None);
    app.get("/nope", None).await.expect(404, None);
    let r = app.get("/metrics", None).await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap_or_default().starts_with("text/plain"));
    assert!(
        r.text
            .contains("http_requests_total{method=\"GET\",route=\"/\",status=\"200\"}"),
        "{}",
        r.text
    );
    assert!(r.text.contains("status=\"404\""));
    assert!(r.text.contains("http_request_duration_seconds_bucket"));
    assert!(r.text.contains("alterego_db_pool_connections"));
    // Every metric is described, ours and the process's.
    for help in [
        "# HELP http_requests_total HTTP requests answered",
        "# HELP http_request_duration_seconds Time to answer",
        "# HELP alterego_db_pool_connections PostgreSQL connections",
        "# TYPE process_cpu_seconds_total counter",
        "# HELP process_resident_memory_bytes ",
        "# HELP process_open_fds ",
        "# HELP process_max_fds ",
        "# HELP process_start_time_seconds ",
    ] {
        assert!(r.text.contains(help), "`{help}` missing:\n{}", r.text);
    }
    let value = |name: &str| -> f64 {
        let prefix = format!("{name} ");
        let line = r.text.lines().find(|l| l.starts_with(&prefix));
        line.and_then(|l| l[prefix.len()..].trim().parse().ok())
            .unwrap_or_else(|| panic!("no value for {name}"))
    };
    assert!(value("process_cpu_seconds_total") > 0.0);
    assert!(value("process_resident_memory_bytes") > 1.0e6);
    assert!(value("process_open_fds") >= 3.0);
}

#[tokio::test]
async fn metrics_token_is_required_when_configured() {
    let token = "metrics-token-0123456789";
    let app = TestApp::builder()
        .config(move |c| c.metrics_token = Some(token.into()))
        .spawn()
        .await;
    let scrape = |auth: Option<&'static str>| {
        let mut req = app.http.get(app.url("/metrics"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        async move { TestApp::read(req.send().await.expect("request")).await }
    };
    for auth in [None, Some("Bearer wrong-token-0123456789"), Some("Basic bWV0cmljcw==")] {
        let r = scrape(auth).await;
        r.expect(401, Some("Unauthorized"));
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        assert!(!r.text.contains("http_requests_total"));
    }
    let r = scrape(Some("Bearer metrics-token-0123456789")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains("# TYPE process_cpu_seconds_total counter"));
    // Only /metrics is guarded.
    app.get("/readyz", None).await.expect(200, None);
}

#[tokio::test]
async fn docs_page_is_self_contained() {
    let app = TestApp::spawn().await;
    for path in ["/docs", "/scalar"] {
        let r = app.get(path, None).await;
        assert_eq!(r.status, 200);
        assert!(r.header("content-type").unwrap_or_default().starts_with("text/html"));
        assert!(r.text.contains("/api.json"));
        assert!(r.text.len() > 500_000, "the Scalar bundle is embedded, not fetched");
        assert!(!r.text.contains("<script src="), "no external script tag");
        let csp = r.header("content-security-policy").unwrap_or_default();
        // The page may talk to this origin only: nothing is fetched from a CDN.
        assert!(csp.contains("connect-src 'self'") && !csp.contains("http"), "{csp}");
    }
}

#[tokio::test]
async fn openapi_document_describes_the_api() {
    let app = TestApp::spawn().await;
    let r = app.get("/api.json", None).await;
    r.expect(200, None);
    let doc = &r.body;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["paths"]["/account/logout"]["post"]["operationId"], "account.logout");
    assert_eq!(
        doc["paths"]["/account/logout_all"]["post"]["operationId"],
        "account.logout_all"
    );
    // Errors are documented with the shared body schema.
    let default = &doc["paths"]["/account/login"]["post"]["responses"]["default"];
    assert!(
        default.to_string().contains("#/components/schemas/ErrorBody"),
        "{default}"
    );
    assert!(doc["components"]["schemas"]["ErrorBody"]["properties"]["code"].is_object());
    // Operational endpoints are not part of the client API document.
    assert!(doc["paths"]["/healthz"].is_null());
}

#[tokio::test]
async fn access_log_is_one_line_per_request_with_the_route_and_no_query() {
    let logs = Logs::capture();
    let app = TestApp::spawn().await;
    let alice = app.register("Alice").await;
    let r = app
        .get(&format!("/users/{}?secret=hunter2", alice.id), Some(&alice.access))
        .await;
    r.expect(200, None);
    let id = r.header("x-request-id").expect("x-request-id").to_string();
    let access: Vec<String> = logs
        .lines_with(&id)
        .into_iter()
        .filter(|l| l.contains(access_log::TARGET))
        .collect();
    assert_eq!(access.len(), 1, "one access line per request: {access:?}");
    let line = &access[0];
    for part in [
        " INFO ",
        "method=GET",
        "route=/users/{userId}",
        "status=200",
        "latency_ms=",
        &format!("request_id={id}"),
    ] {
        assert!(line.contains(part), "`{part}` missing from {line}");
    }
    assert!(!line.contains(&alice.id), "the raw path is not logged: {line}");

    // A token in the query string (the legacy `/ws?token=`) never reaches the log.
    let r = app.get(&format!("/ws?token={}", alice.access), None).await;
    let id = r.header("x-request-id").expect("x-request-id").to_string();
    let line = logs.lines_with(&format!("request_id={id}")).join("\n");
    assert!(
        line.contains("route=/ws") && line.contains(&format!("status={}", r.status)),
        "{line}"
    );
    let text = logs.text();
    for secret in ["hunter2", "secret=", "token=", alice.access.as_str()] {
        assert!(!text.contains(secret), "`{secret}` was logged");
    }
}

/// How long a socket may take to see its 1001, and a stopping server to return.
const LONG: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_lone_instance_stops_at_once_when_nobody_can_take_its_sessions() {
    let mut app = TestApp::spawn().await;
    assert_eq!(app.state.config.shutdown_drain, Duration::from_secs(30));
    let alice = app.register("Alice").await;
    let mut a = app.ws_auth(&alice).await;
    let started = Instant::now();
    app.begin_shutdown();
    assert_eq!(a.closed(LONG).await, Some(1001));
    // The session stays resumable, but no other instance has a heartbeat: no 30 s wait.
    assert!(app.stopped(LONG).await, "the server did not stop");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_draining_instance_answers_readyz_503_and_waits_for_take_over() {
    let app = TestApp::spawn().await;
    let mut peer = app.spawn_peer().await;
    let alice = app.register("Alice").await;
    let mut a = peer.ws_auth(&alice).await;
    let session = a.session_id.clone().expect("session id");
    peer.begin_shutdown();
    assert_eq!(a.closed(LONG).await, Some(1001));
    // The listener stays open while the sessions wait: readiness is a JSON 503, not a refused
    // connection; liveness still answers; new sockets are refused.
    peer.get("/readyz", None).await.expect(503, Some("ServiceUnavailable"));
    peer.get("/healthz", None).await.expect(200, None);
    match peer.ws("/ws").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 503),
        other => panic!("a draining instance accepted a socket: {:?}", other.map(|_| ())),
    }
    // Another instance is alive, so the session waits for it.
    assert!(
        !peer.stopped(Duration::from_millis(1500)).await,
        "stopped without a take-over"
    );
    let mut a2 = app.ws_open("").await;
    a2.resumed(&alice.access, &session, a.seq).await;
    assert!(peer.stopped(LONG).await, "the server did not stop after the take-over");
}

#[tokio::test]
async fn forwarded_for_without_trusted_proxies_is_warned_about_once() {
    let logs = Logs::capture();
    let app = TestApp::builder().config(|c| c.trusted_proxies.clear()).spawn().await;
    // Another test of this process may have been first: the warning is once per process.
    let earlier = alterego::middlewares::client_ip::forwarded_warning_given();
    for _ in 0..3 {
        app.get("/", None).await.expect(200, None); // `call` sends X-Forwarded-For
    }
    let warnings = logs.lines_with("TRUSTED_PROXIES is unset");
    assert_eq!(warnings.len(), usize::from(!earlier), "{warnings:?}");
    if let Some(w) = warnings.first() {
        assert!(w.contains(" WARN ") && w.contains("rate-limit"), "{w}");
    }
    assert!(alterego::middlewares::client_ip::forwarded_warning_given());
}

#[tokio::test]
async fn without_database_url_a_private_cluster_serves_when_nothing_answers() {
    use std::os::unix::fs::PermissionsExt;

    let root = tempfile::tempdir().expect("temporary directory");
    // As root the cluster runs as the `postgres` user, who must be able to reach the directory.
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let dead_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    // The development default, moved to an address where nothing answers.
    let mut config = crate::common::test_config(&format!("postgres://postgres@127.0.0.1:{dead_port}/alterego"), false);
    config.database_url_default = true;
    config.embedded_database_dir = root.path().join("postgres");
    config.media_local_dir = root.path().join("media");
    let pg = alterego::embedded_postgres::prepare(&mut config)
        .await
        .expect("private cluster")
        .expect("started, since nothing answers");
    assert!(config.database_url.contains("?host=/"), "{}", config.database_url);
    let data = pg.data_dir().to_path_buf();
    assert!(data.join("PG_VERSION").is_file());
    let settings = std::fs::read_to_string(data.join("alterego.conf")).expect("settings");
    assert!(settings.contains("listen_addresses = ''"), "{settings}");

    let pool = alterego::db::connect(&config.database_url, 5, true)
        .await
        .expect("connect through the socket");
    alterego::db::migrate(&pool).await.expect("migrate");
    let state = alterego::state::AppState::new(config, pool, Some(alterego::functions::mail::Mailer::memory()))
        .await
        .expect("state");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(alterego::serve(listener, state.clone(), async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let r = TestApp::read(http.get(format!("{base}/readyz")).send().await.expect("readyz")).await;
    r.expect(200, None);
    let r = TestApp::read(
        http.post(format!("{base}/account/register"))
            .json(&serde_json::json!({"email": "me@example.org", "name": "Me", "password": "correct horse battery"}))
            .send()
            .await
            .expect("register"),
    )
    .await;
    r.expect(200, None);

    let _ = stop.send(());
    let served = tokio::time::timeout(LONG, server).await;
    assert!(matches!(served, Ok(Ok(Ok(())))), "{served:?}");
    state.db.close().await;
    pg.stop().await;
    assert!(!data.join("postmaster.pid").exists(), "the cluster was stopped");
}
