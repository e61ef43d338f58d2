//! The HTTP contract of spec §2: JSON errors for every rejection, trailing slashes, headers.

use crate::common::TestApp;
use reqwest::Method;
use serde_json::json;

async fn raw(req: reqwest::RequestBuilder) -> crate::common::Resp {
    TestApp::read(req.send().await.expect("request")).await
}

#[tokio::test]
async fn framework_rejections_are_json() {
    let app = TestApp::spawn().await;
    let url = app.url("/account/login");
    // Malformed JSON → 400 InvalidJson.
    let r = raw(app
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"email\":"))
    .await;
    r.expect(400, Some("InvalidJson"));
    // Invalid UTF-8 → 400 InvalidJson.
    let r = raw(app
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body(b"{\"email\":\"\xff\"}".to_vec()))
    .await;
    r.expect(400, Some("InvalidJson"));
    // Wrong shape → 422 InvalidBody with the field.
    let r = raw(app.http.post(&url).json(&json!({"email": ["x"], "password": "y"}))).await;
    r.expect(422, Some("InvalidBody"));
    assert_eq!(r.body["field"], "email");
    // Wrong content type → 415.
    let r = raw(app.http.post(&url).header("content-type", "text/plain").body("{}x")).await;
    r.expect(415, Some("UnsupportedMediaType"));
    // No content type with a body → 415.
    let r = raw(app.http.post(&url).body(r#"{"email":"a","password":"b"}"#)).await;
    r.expect(415, Some("UnsupportedMediaType"));
    // A JSON content type with parameters is fine.
    let r = raw(app
        .http
        .post(&url)
        .header("content-type", "application/json; charset=utf-8")
        .body(r#"{"email":"a@b.org","password":"b"}"#))
    .await;
    r.expect(401, Some("WrongPassword"));
    // Over 2 MiB → 413.
    let big = format!(r#"{{"email":"{}","password":"x"}}"#, "a".repeat(2 * 1024 * 1024 + 10));
    let r = raw(app.http.post(&url).header("content-type", "application/json").body(big)).await;
    r.expect(413, Some("PayloadTooLarge"));
    // Integers as strings are rejected (spec §2.4) — covered by the unit tests of the extractor.
}

#[tokio::test]
async fn body_less_requests_are_accepted() {
    let app = TestApp::spawn().await;
    let alice = app.register("Alice").await;
    // No body, no content type: treated as {} (logout has no required field).
    let r = raw(app.http.post(app.url("/account/logout")).bearer_auth(&alice.access)).await;
    r.expect(200, None);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.text, "null");
    // An empty body with a content type is {} too; a required field then is missing (422).
    let r = raw(app
        .http
        .post(app.url("/account/login"))
        .header("content-type", "application/json"))
    .await;
    r.expect(422, Some("InvalidBody"));
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let app = TestApp::spawn().await;
    let r = app.get("/definitely/not/here", None).await;
    r.expect(404, Some("NotFound"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let r = app.call(Method::DELETE, "/account/login", None, None).await;
    r.expect(405, Some("MethodNotAllowed"));
    let r = app.call(Method::PUT, "/users/me", None, None).await;
    r.expect(405, Some("MethodNotAllowed"));
    // Paths are case-sensitive.
    app.get("/Users/me", None).await.expect(404, Some("NotFound"));
}

#[tokio::test]
async fn trailing_slashes_are_tolerated() {
    let app = TestApp::spawn().await;
    let alice = app.register("Alice").await;
    app.get("/users/me/", Some(&alice.access)).await.expect(200, None);
    app.get("/users/me", Some(&alice.access)).await.expect(200, None);
    app.post(
        "/account/login/",
        None,
        json!({"email": alice.email, "password": crate::common::PASSWORD}),
    )
    .await
    .expect(200, None);
    let r = app.get("/", None).await;
    r.expect(200, None);
    assert_eq!(
        r.body,
        json!({"name": "alterego", "version": env!("CARGO_PKG_VERSION")})
    );
    app.get("/healthz/", None).await.expect(200, None);
}

#[tokio::test]
async fn request_ids_and_security_headers() {
    let app = TestApp::spawn().await;
    let r = app.get("/", None).await;
    let id = r.header("x-request-id").expect("request id");
    assert!(uuid::Uuid::parse_str(id).is_ok());
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("referrer-policy"), Some("strict-origin-when-cross-origin"));
    assert_eq!(
        r.header("content-security-policy"),
        Some("default-src 'none'; frame-ancestors 'none'")
    );
    assert_eq!(r.header("strict-transport-security"), None, "HSTS only in production");
    // A valid incoming id is echoed; an invalid one replaced.
    let mine = uuid::Uuid::new_v4().to_string();
    let r = raw(app.http.get(app.url("/")).header("x-request-id", &mine)).await;
    assert_eq!(r.header("x-request-id"), Some(mine.as_str()));
    let r = raw(app.http.get(app.url("/")).header("x-request-id", "not-a-uuid")).await;
    assert_ne!(r.header("x-request-id"), Some("not-a-uuid"));
    // Errors carry them too.
    let r = app.get("/nope", None).await;
    assert!(r.header("x-request-id").is_some());
}

#[tokio::test]
async fn cors_follows_configuration() {
    let app = TestApp::spawn().await;
    let preflight = raw(app
        .http
        .request(Method::OPTIONS, app.url("/account/login"))
        .header("origin", "http://web.alterego.test")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type, idempotency-key",
        ))
    .await;
    assert_eq!(preflight.status, 200);
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("http://web.alterego.test")
    );
    let methods = preflight
        .header("access-control-allow-methods")
        .unwrap_or_default()
        .to_string();
    for m in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        assert!(methods.contains(m), "{methods}");
    }
    assert!(preflight.header("access-control-allow-credentials").is_none());
    let other = raw(app.http.get(app.url("/")).header("origin", "http://evil.example")).await;
    assert!(other.header("access-control-allow-origin").is_none());
    let ok = raw(app.http.get(app.url("/")).header("origin", "http://web.alterego.test")).await;
    let exposed = ok
        .header("access-control-expose-headers")
        .unwrap_or_default()
        .to_lowercase();
    for h in [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset-after",
        "x-ratelimit-bucket",
        "retry-after",
        "x-request-id",
    ] {
        assert!(exposed.contains(h), "{exposed}");
    }
}

#[tokio::test]
async fn production_adds_hsts() {
    let app = TestApp::builder()
        .without_redis()
        .config(|c| c.environment = alterego::config::Environment::Production)
        .spawn()
        .await;
    let r = app.get("/", None).await;
    assert_eq!(r.header("strict-transport-security"), Some("max-age=63072000"));
}

#[tokio::test]
async fn database_failures_are_generic_500s() {
    let app = TestApp::spawn().await;
    let alice = app.register("Alice").await;
    // Break the schema under the server: the error must not leak SQL or table names.
    sqlx::query("ALTER TABLE handles RENAME TO handles_gone")
        .execute(app.db())
        .await
        .unwrap();
    let r = app.get("/users/me", Some(&alice.access)).await;
    r.expect(500, Some("InternalError"));
    let id = r.header("x-request-id").unwrap().to_string();
    assert_eq!(r.body["requestId"], id);
    assert!(!r.text.contains("handles"), "{}", r.text);
    assert!(!r.text.to_lowercase().contains("relation"), "{}", r.text);
}

#[tokio::test]
async fn websocket_helper_reports_refusals() {
    let app = TestApp::spawn().await;
    // No gateway yet on this path: the upgrade is refused with the JSON 404.
    match app.ws("/no-socket-here").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => assert_eq!(res.status(), 404),
        other => panic!("expected an HTTP refusal, got {other:?}"),
    }
}
