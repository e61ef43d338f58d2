//! Rate limits over HTTP (spec §11): headers, 429 body, buckets per route, client IP rules.

use crate::common::{PASSWORD, TestApp, random_ip};
use serde_json::{Value, json};

async fn post_from(app: &TestApp, ip: &str, path: &str, body: Value) -> crate::common::Resp {
    let req = app.http.post(app.url(path)).header("x-forwarded-for", ip).json(&body);
    TestApp::read(req.send().await.unwrap()).await
}

#[tokio::test]
async fn register_bucket_headers_and_429() {
    let app = TestApp::spawn().await;
    let ip = random_ip();
    for i in 0..5u32 {
        let body = json!({"email": format!("u{i}@example.org"), "name": "U", "password": PASSWORD});
        let r = post_from(&app, &ip, "/account/register", body).await;
        r.expect(200, None);
        // `register` (5/h) has fewer remaining than `auth` (10/min), so it governs the headers.
        assert_eq!(r.header("x-ratelimit-bucket"), Some("register"));
        assert_eq!(r.header("x-ratelimit-limit"), Some("5"));
        assert_eq!(r.header("x-ratelimit-remaining"), Some((4 - i).to_string().as_str()));
        let reset: f64 = r.header("x-ratelimit-reset-after").unwrap().parse().unwrap();
        assert!(reset > 0.0 && reset <= 3600.0);
    }
    let r = post_from(
        &app,
        &ip,
        "/account/register",
        json!({"email": "u9@example.org", "name": "U", "password": PASSWORD}),
    )
    .await;
    r.expect(429, Some("RateLimited"));
    assert_eq!(r.body["message"], "You are being rate limited.");
    let retry = r.body["retryAfter"].as_f64().unwrap();
    assert!(
        retry > 600.0 && retry <= 720.0,
        "one register slot refills every 12 minutes: {retry}"
    );
    assert_eq!(r.header("retry-after"), Some(retry.ceil().to_string().as_str()));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    // Nothing was created by the refused request; another client is unaffected.
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(app.db())
        .await
        .unwrap();
    assert_eq!(n, 5);
    post_from(
        &app,
        &random_ip(),
        "/account/register",
        json!({"email": "v@example.org", "name": "V", "password": PASSWORD}),
    )
    .await
    .expect(200, None);
}

#[tokio::test]
async fn rate_limiting_comes_before_decoding() {
    let app = TestApp::spawn().await;
    let ip = random_ip();
    for _ in 0..10 {
        post_from(&app, &ip, "/account/login", json!({}))
            .await
            .expect(422, Some("InvalidBody"));
    }
    post_from(&app, &ip, "/account/login", json!({}))
        .await
        .expect(429, Some("RateLimited"));
}

#[tokio::test]
async fn auth_account_bucket_is_per_email() {
    let app = TestApp::spawn().await;
    let alice = app.register("Alice").await;
    // From ten different IPs, so only the per-email bucket (10 / 15 min) can refuse.
    for _ in 0..10 {
        let r = post_from(
            &app,
            &random_ip(),
            "/account/login",
            json!({"email": alice.email, "password": "wrong password"}),
        )
        .await;
        r.expect(401, Some("WrongPassword"));
    }
    let r = post_from(
        &app,
        &random_ip(),
        "/account/login",
        json!({"email": alice.email.to_uppercase(), "password": PASSWORD}),
    )
    .await;
    r.expect(429, Some("RateLimited"));
    assert_eq!(r.header("x-ratelimit-bucket"), Some("auth-account"));
    // Rate limiting never answers 401/403; other accounts are unaffected.
    let bob = app.register("Bob").await;
    post_from(
        &app,
        &random_ip(),
        "/account/login",
        json!({"email": bob.email, "password": PASSWORD}),
    )
    .await
    .expect(200, None);
}

#[tokio::test]
async fn reset_mail_limit_is_silent() {
    let app = TestApp::spawn().await;
    let alice = app.register("Alice").await;
    for _ in 0..5 {
        let r = post_from(
            &app,
            &random_ip(),
            "/account/reset_password",
            json!({"email": alice.email}),
        )
        .await;
        r.expect(200, None);
        assert_eq!(r.text, "null");
        assert_ne!(
            r.header("x-ratelimit-bucket"),
            Some("auth-mail"),
            "the mail limit reveals nothing"
        );
    }
    app.wait_for_mail(3).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(app.mails().len(), 3, "auth-mail allows 3 mails per hour");
}

#[tokio::test]
async fn general_and_anonymous_buckets() {
    let app = TestApp::spawn().await;
    let alice = app.register("Alice").await;
    let r = app.get("/users/me", Some(&alice.access)).await;
    assert_eq!(r.header("x-ratelimit-bucket"), Some("general"));
    assert_eq!(r.header("x-ratelimit-limit"), Some("1200"));
    let r = app.get("/", None).await;
    assert_eq!(r.header("x-ratelimit-bucket"), Some("anonymous"));
    assert_eq!(r.header("x-ratelimit-limit"), Some("120"));
    let r = app.get("/api.json", None).await;
    assert_eq!(r.header("x-ratelimit-bucket"), Some("anonymous"));
    let r = app
        .post("/account/refresh", None, json!({"refreshToken": alice.refresh}))
        .await;
    assert_eq!(r.header("x-ratelimit-bucket"), Some("refresh"));
    // Operational endpoints are exempt.
    for path in ["/healthz", "/readyz", "/metrics", "/docs"] {
        let r = app.get(path, None).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(r.header("x-ratelimit-bucket").is_none(), "{path}");
    }
}

#[tokio::test]
async fn forwarded_for_is_only_trusted_from_trusted_proxies() {
    // No trusted proxies: every request is keyed by the TCP peer, whatever the header says.
    let app = TestApp::builder().config(|c| c.trusted_proxies.clear()).spawn().await;
    for _ in 0..5 {
        let r = post_from(
            &app,
            &random_ip(),
            "/account/register",
            json!({"email": format!("{}@x.org", uuid::Uuid::now_v7().simple()), "name": "U", "password": PASSWORD}),
        )
        .await;
        r.expect(200, None);
    }
    let r = post_from(
        &app,
        &random_ip(),
        "/account/register",
        json!({"email": "last@x.org", "name": "U", "password": PASSWORD}),
    )
    .await;
    r.expect(429, Some("RateLimited"));
}

#[tokio::test]
async fn in_memory_limiter_enforces_too() {
    let app = TestApp::builder().without_redis().spawn().await;
    let ip = random_ip();
    for _ in 0..10 {
        post_from(
            &app,
            &ip,
            "/account/reset_password/submit",
            json!({"token": "x", "password": "long enough"}),
        )
        .await
        .expect(400, Some("InvalidResetToken"));
    }
    let r = post_from(
        &app,
        &ip,
        "/account/reset_password/submit",
        json!({"token": "x", "password": "long enough"}),
    )
    .await;
    r.expect(429, Some("RateLimited"));
    assert_eq!(r.header("x-ratelimit-bucket"), Some("auth"));
}
