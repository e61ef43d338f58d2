//! Accounts and sessions over HTTP (spec §4.2, §4.17, §6).

use crate::common::fixtures::{contents, space};
use crate::common::{PASSWORD, TestApp};
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn register_login_refresh_reuse_change_reset_logout_all() {
    let app = TestApp::spawn().await;
    let alice = app.register("Alice").await;

    // Login opens a second session.
    let login = app
        .post(
            "/account/login",
            None,
            json!({"email": alice.email.to_uppercase(), "password": PASSWORD}),
        )
        .await;
    login.expect(200, None);
    let access2 = login.body["accessToken"].as_str().unwrap().to_string();
    let r0 = login.body["refreshToken"].as_str().unwrap().to_string();
    assert_eq!(r0.len(), 43);

    // Rotation: r0 → r1 → r2.
    let r = app.post("/account/refresh", None, json!({"refreshToken": r0})).await;
    r.expect(200, None);
    let r1 = r.body["refreshToken"].as_str().unwrap().to_string();
    assert_ne!(r1, r0);
    let r = app.post("/account/refresh", None, json!({"refreshToken": r1})).await;
    let r2 = r.body["refreshToken"].as_str().unwrap().to_string();
    let access3 = r.body["accessToken"].as_str().unwrap().to_string();
    app.get("/users/me", Some(&access3)).await.expect(200, None);

    // r1 was superseded just now: the grace row answers with no new refresh token.
    let grace = app.post("/account/refresh", None, json!({"refreshToken": r1})).await;
    grace.expect(200, None);
    assert!(grace.body["refreshToken"].is_null());
    assert!(grace.body["accessToken"].is_string());

    // r0 is older than the previous token: reuse, and the whole session is revoked.
    app.post("/account/refresh", None, json!({"refreshToken": r0}))
        .await
        .expect(401, Some("RefreshTokenReused"));
    app.post("/account/refresh", None, json!({"refreshToken": r2}))
        .await
        .expect(401, Some("InvalidRefreshToken"));
    app.get("/users/me", Some(&access2))
        .await
        .expect(401, Some("SessionRevoked"));
    app.get("/users/me", Some(&access3))
        .await
        .expect(401, Some("SessionRevoked"));
    // The registration session is another family and still works.
    app.get("/users/me", Some(&alice.access)).await.expect(200, None);

    // Change password: every session is revoked, a new one is returned.
    let changed = app
        .post(
            "/account/change_password",
            Some(&alice.access),
            json!({"oldPassword": PASSWORD, "newPassword": "a brand new secret"}),
        )
        .await;
    changed.expect(200, None);
    let access4 = changed.body["accessToken"].as_str().unwrap().to_string();
    app.get("/users/me", Some(&alice.access))
        .await
        .expect(401, Some("SessionRevoked"));
    app.post("/account/refresh", None, json!({"refreshToken": alice.refresh}))
        .await
        .expect(401, Some("InvalidRefreshToken"));
    app.get("/users/me", Some(&access4)).await.expect(200, None);
    app.post(
        "/account/login",
        None,
        json!({"email": alice.email, "password": PASSWORD}),
    )
    .await
    .expect(401, Some("WrongPassword"));

    // Reset by mail link.
    app.post("/account/reset_password", None, json!({"email": alice.email}))
        .await
        .expect(200, None);
    let mail = app.wait_for_mail(1).await;
    assert_eq!(mail.to, alice.email);
    assert!(mail.body.contains("http://web.alterego.test/forgotpassword/"));
    let token = crate::common::reset_token(&mail);
    let confirm = app
        .post(
            "/account/reset_password/submit",
            None,
            json!({"token": token, "password": "reset password 1"}),
        )
        .await;
    confirm.expect(200, None);
    assert!(confirm.body.is_null() && confirm.text == "null");
    app.get("/users/me", Some(&access4))
        .await
        .expect(401, Some("SessionRevoked"));
    // Single use.
    app.post(
        "/account/reset_password/submit",
        None,
        json!({"token": token, "password": "reset password 2"}),
    )
    .await
    .expect(400, Some("InvalidResetToken"));

    // Log in with the new password on two devices, then log out everywhere.
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let l = app
            .post(
                "/account/login",
                None,
                json!({"email": alice.email, "password": "reset password 1"}),
            )
            .await;
        l.expect(200, None);
        tokens.push(l.body["accessToken"].as_str().unwrap().to_string());
    }
    let out = app
        .call(Method::POST, "/account/logout_all", Some(&tokens[0]), None)
        .await;
    out.expect(200, None);
    assert_eq!(out.text, "null");
    for t in &tokens {
        app.get("/users/me", Some(t)).await.expect(401, Some("SessionRevoked"));
    }
}

#[tokio::test]
async fn register_validation_and_duplicates() {
    let app = TestApp::spawn().await;
    let cases = [
        (
            json!({"email": "not-an-email", "name": "A", "password": PASSWORD}),
            400,
            "ValidationFailed",
            Some("email"),
        ),
        (
            json!({"email": "a@b", "name": "A", "password": PASSWORD}),
            400,
            "ValidationFailed",
            Some("email"),
        ),
        (
            json!({"email": format!("{}@x.org", "a".repeat(250)), "name": "A", "password": PASSWORD}),
            400,
            "ValidationFailed",
            Some("email"),
        ),
        (
            json!({"email": "a@x.org", "name": "   ", "password": PASSWORD}),
            400,
            "ValidationFailed",
            Some("name"),
        ),
        (
            json!({"email": "a@x.org", "name": "x".repeat(65), "password": PASSWORD}),
            400,
            "ValidationFailed",
            Some("name"),
        ),
        (
            json!({"email": "a@x.org", "name": "bell\u{7}", "password": PASSWORD}),
            400,
            "ValidationFailed",
            Some("name"),
        ),
        (
            json!({"email": "a@x.org", "name": "A", "password": "short"}),
            400,
            "PasswordTooShort",
            Some("password"),
        ),
        (
            json!({"email": "a@x.org", "name": "A", "password": "p".repeat(73)}),
            400,
            "PasswordTooLong",
            Some("password"),
        ),
        (
            json!({"email": "a@x.org", "name": "A"}),
            422,
            "InvalidBody",
            Some("password"),
        ),
        (
            json!({"email": 5, "name": "A", "password": PASSWORD}),
            422,
            "InvalidBody",
            Some("email"),
        ),
    ];
    for (body, status, code, field) in cases {
        let r = app.post("/account/register", None, body.clone()).await;
        r.expect(status, Some(code));
        assert_eq!(r.body["field"].as_str(), field, "{body}");
    }
    let alice = app.register("Alice").await;
    let dup = app
        .post(
            "/account/register",
            None,
            json!({"email": format!("  {}  ", alice.email.to_uppercase()), "name": "B", "password": PASSWORD}),
        )
        .await;
    dup.expect(409, Some("EmailTaken"));
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(app.db())
        .await
        .unwrap();
    assert_eq!(users, 1, "a refused registration leaves nothing behind");
}

#[tokio::test]
async fn registration_can_be_closed() {
    let app = TestApp::builder()
        .config(|c| c.registration_enabled = false)
        .spawn()
        .await;
    let r = app
        .post(
            "/account/register",
            None,
            json!({"email": "a@x.org", "name": "A", "password": PASSWORD}),
        )
        .await;
    r.expect(403, Some("RegistrationDisabled"));
}

#[tokio::test]
async fn registration_assigns_default_handles() {
    let app = TestApp::spawn().await;
    let a = app.register("Misaka Mikoto").await;
    let me = app.get("/users/me", Some(&a.access)).await;
    assert_eq!(me.body["handle"], "misaka-mikoto.alterego.test");
    assert_eq!(me.body["name"], "Misaka Mikoto");
    assert!(me.body["category"].is_null() && me.body["avatar"].is_null() && me.body["description"].is_null());
    let b = app.register("Misaka  Mikoto!").await;
    let me = app.get("/users/me", Some(&b.access)).await;
    let tail = &b.id.replace('-', "")[28..];
    assert_eq!(me.body["handle"], format!("misaka-mikoto-{tail}.alterego.test"));
}

#[tokio::test]
async fn login_failures_are_uniform() {
    let app = TestApp::spawn().await;
    let alice = app.register("Alice").await;
    let wrong = app
        .post(
            "/account/login",
            None,
            json!({"email": alice.email, "password": "wrong password"}),
        )
        .await;
    let unknown = app
        .post(
            "/account/login",
            None,
            json!({"email": "nobody@example.org", "password": "wrong password"}),
        )
        .await;
    wrong.expect(401, Some("WrongPassword"));
    unknown.expect(401, Some("WrongPassword"));
    assert_eq!(wrong.body, unknown.body);
    // Login applies no length rule.
    app.post("/account/login", None, json!({"email": alice.email, "password": "x"}))
        .await
        .expect(401, Some("WrongPassword"));
}

#[tokio::test]
async fn refresh_errors() {
    let app = TestApp::spawn().await;
    app.post("/account/refresh", None, json!({"refreshToken": "unknown"}))
        .await
        .expect(401, Some("InvalidRefreshToken"));
    app.post("/account/refresh", None, json!({}))
        .await
        .expect(422, Some("InvalidBody"));
    // The Authorization header is ignored on `none` routes, even when it is garbage.
    let alice = app.register("Alice").await;
    let r = app
        .http
        .post(app.url("/account/refresh"))
        .header("authorization", "Bearer expired.garbage.token")
        .json(&json!({"refreshToken": alice.refresh}))
        .send()
        .await
        .unwrap();
    TestApp::read(r).await.expect(200, None);
}

#[tokio::test]
async fn expired_refresh_token() {
    let app = TestApp::spawn().await;
    let alice = app.register("Alice").await;
    sqlx::query("UPDATE refresh_tokens SET expires_at = now() - interval '1 second'")
        .execute(app.db())
        .await
        .unwrap();
    app.post("/account/refresh", None, json!({"refreshToken": alice.refresh}))
        .await
        .expect(401, Some("TokenExpired"));
}

#[tokio::test]
async fn grace_window_can_be_disabled() {
    let app = TestApp::builder()
        .config(|c| c.refresh_reuse_grace = std::time::Duration::ZERO)
        .spawn()
        .await;
    let alice = app.register("Alice").await;
    app.post("/account/refresh", None, json!({"refreshToken": alice.refresh}))
        .await
        .expect(200, None);
    app.post("/account/refresh", None, json!({"refreshToken": alice.refresh}))
        .await
        .expect(401, Some("RefreshTokenReused"));
    app.get("/users/me", Some(&alice.access))
        .await
        .expect(401, Some("SessionRevoked"));
}

#[tokio::test]
async fn concurrent_refreshes_rotate_once() {
    let app = TestApp::spawn().await;
    let alice = app.register("Alice").await;
    let body = json!({"refreshToken": alice.refresh});
    let (a, b) = tokio::join!(
        app.post("/account/refresh", None, body.clone()),
        app.post("/account/refresh", None, body)
    );
    a.expect(200, None);
    b.expect(200, None);
    let rotated = [&a, &b].iter().filter(|r| r.body["refreshToken"].is_string()).count();
    assert_eq!(rotated, 1, "exactly one rotates, the other gets grace: {a:?} {b:?}");
}

#[tokio::test]
async fn change_password_rules() {
    let app = TestApp::spawn().await;
    let alice = app.register("Alice").await;
    let path = "/account/change_password";
    app.post(
        path,
        Some(&alice.access),
        json!({"oldPassword": "nope nope", "newPassword": "another secret"}),
    )
    .await
    .expect(401, Some("WrongPassword"));
    app.post(
        path,
        Some(&alice.access),
        json!({"oldPassword": PASSWORD, "newPassword": "short"}),
    )
    .await
    .expect(400, Some("PasswordTooShort"));
    app.post(
        path,
        None,
        json!({"oldPassword": PASSWORD, "newPassword": "another secret"}),
    )
    .await
    .expect(401, Some("Unauthorized"));
    // Refusals changed nothing.
    app.get("/users/me", Some(&alice.access)).await.expect(200, None);
    app.post(
        "/account/login",
        None,
        json!({"email": alice.email, "password": PASSWORD}),
    )
    .await
    .expect(200, None);
}

#[tokio::test]
async fn reset_password_reveals_nothing_and_rotates_tokens() {
    let app = TestApp::spawn().await;
    let alice = app.register("Alice").await;
    let unknown = app
        .post("/account/reset_password", None, json!({"email": "nobody@example.org"}))
        .await;
    unknown.expect(200, None);
    assert_eq!(unknown.text, "null");
    app.post("/account/reset_password", None, json!({"email": alice.email}))
        .await
        .expect(200, None);
    let first = app.wait_for_mail(1).await;
    app.post("/account/reset_password", None, json!({"email": alice.email}))
        .await
        .expect(200, None);
    let second = app.wait_for_mail(2).await;
    let token = crate::common::reset_token;
    // A new token invalidates the earlier one.
    app.post(
        "/account/reset_password/submit",
        None,
        json!({"token": token(&first), "password": "new password 1"}),
    )
    .await
    .expect(400, Some("InvalidResetToken"));
    // A bad new password does not consume the token.
    app.post(
        "/account/reset_password/submit",
        None,
        json!({"token": token(&second), "password": "short"}),
    )
    .await
    .expect(400, Some("PasswordTooShort"));
    app.post(
        "/account/reset_password/submit",
        None,
        json!({"token": token(&second), "password": "new password 1"}),
    )
    .await
    .expect(200, None);
    app.get("/users/me", Some(&alice.access))
        .await
        .expect(401, Some("SessionRevoked"));
    app.post(
        "/account/login",
        None,
        json!({"email": alice.email, "password": "new password 1"}),
    )
    .await
    .expect(200, None);
    // Tokens are stored hashed only.
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM password_reset_tokens")
        .fetch_one(app.db())
        .await
        .unwrap();
    assert_eq!(stored, 0);
    let raw: Vec<Vec<u8>> = sqlx::query_scalar("SELECT digest FROM refresh_tokens")
        .fetch_all(app.db())
        .await
        .unwrap();
    assert!(raw.iter().all(|d| d.len() == 32));
}

#[tokio::test]
async fn expired_reset_token() {
    let app = TestApp::spawn().await;
    let alice = app.register("Alice").await;
    app.post("/account/reset_password", None, json!({"email": alice.email}))
        .await
        .expect(200, None);
    let mail = app.wait_for_mail(1).await;
    let token = crate::common::reset_token(&mail);
    sqlx::query("UPDATE password_reset_tokens SET expires_at = now() - interval '1 second'")
        .execute(app.db())
        .await
        .unwrap();
    app.post(
        "/account/reset_password/submit",
        None,
        json!({"token": token, "password": "new password 1"}),
    )
    .await
    .expect(400, Some("InvalidResetToken"));
}

#[tokio::test]
async fn logout_paths() {
    let app = TestApp::spawn().await;
    let alice = app.register("Alice").await;
    // Bearer only: revokes that session.
    let r = app
        .call(Method::POST, "/account/logout", Some(&alice.access), None)
        .await;
    r.expect(200, None);
    assert_eq!(r.text, "null");
    app.get("/users/me", Some(&alice.access))
        .await
        .expect(401, Some("SessionRevoked"));
    app.post("/account/refresh", None, json!({"refreshToken": alice.refresh}))
        .await
        .expect(401, Some("InvalidRefreshToken"));

    // Refresh token: revokes its family; idempotent and silent for unknown tokens.
    let l = app
        .post(
            "/account/login",
            None,
            json!({"email": alice.email, "password": PASSWORD}),
        )
        .await;
    let (access, refresh) = (
        l.body["accessToken"].as_str().unwrap(),
        l.body["refreshToken"].as_str().unwrap(),
    );
    app.post("/account/logout", None, json!({"refreshToken": refresh}))
        .await
        .expect(200, None);
    app.get("/users/me", Some(access))
        .await
        .expect(401, Some("SessionRevoked"));
    app.post("/account/logout", None, json!({"refreshToken": refresh}))
        .await
        .expect(200, None);
    app.post("/account/logout", None, json!({"refreshToken": "never-issued"}))
        .await
        .expect(200, None);

    // Neither: 401. A revoked bearer counts as none (auth mode `opt`).
    app.call(Method::POST, "/account/logout", None, None)
        .await
        .expect(401, Some("Unauthorized"));
    app.call(Method::POST, "/account/logout", Some(access), None)
        .await
        .expect(401, Some("Unauthorized"));
    app.call(Method::POST, "/account/logout_all", None, None)
        .await
        .expect(401, Some("Unauthorized"));
}

#[tokio::test]
async fn revocations_are_announced_on_the_bus() {
    let app = TestApp::spawn().await;
    let alice = app.register("Alice").await;
    let session: uuid::Uuid = sqlx::query_scalar("SELECT id FROM auth_sessions")
        .fetch_one(app.db())
        .await
        .unwrap();
    let topic = alterego::functions::bus::Topic::session(alterego::functions::ids::SessionId(session));
    let mut cap = app.capture(&[topic]).await;
    app.call(Method::POST, "/account/logout_all", Some(&alice.access), None)
        .await
        .expect(200, None);
    let ev = crate::common::Capture::expect_op(cap.next(std::time::Duration::from_secs(2)).await, "sessions.revoked");
    assert_eq!(ev.data["userId"], alice.id);
}

#[tokio::test]
async fn bad_tokens() {
    let app = TestApp::spawn().await;
    let alice = app.register("Alice").await;
    app.get("/users/me", None).await.expect(401, Some("Unauthorized"));
    for header in ["Basic abc", "Bearer", "Bearer a b", "token"] {
        let r = app
            .http
            .get(app.url("/users/me"))
            .header("authorization", header)
            .send()
            .await
            .unwrap();
        TestApp::read(r).await.expect(401, Some("Unauthorized"));
    }
    app.get("/users/me", Some("not.a.jwt"))
        .await
        .expect(401, Some("InvalidToken"));
    // Case-insensitive scheme, several spaces.
    let r = app
        .http
        .get(app.url("/users/me"))
        .header("authorization", format!("bEaReR   {}", alice.access))
        .send()
        .await
        .unwrap();
    TestApp::read(r).await.expect(200, None);
    // A token signed with another secret.
    let other = alterego::functions::jwt::JwtKeys::new(b"another-secret-another-secret-0123", "http://alterego.test");
    let forged = other
        .user_token(
            uuid::Uuid::now_v7(),
            uuid::Uuid::now_v7(),
            std::time::Duration::from_secs(3600),
        )
        .unwrap();
    app.get("/users/me", Some(&forged))
        .await
        .expect(401, Some("InvalidToken"));
    // Right secret, unknown session.
    let stray = app
        .state
        .jwt
        .user_token(
            uuid::Uuid::parse_str(&alice.id).unwrap(),
            uuid::Uuid::now_v7(),
            std::time::Duration::from_secs(3600),
        )
        .unwrap();
    app.get("/users/me", Some(&stray))
        .await
        .expect(401, Some("InvalidToken"));
}

/// Each instance remembers live sessions (`SESSION_CACHE_TTL`), yet a revocation made on one
/// instance is refused at once on the other: logout, logout everywhere, password change.
#[tokio::test]
async fn a_revoked_session_is_refused_at_once_on_every_instance() {
    let app = TestApp::spawn().await;
    let peer = app.spawn_peer().await;
    let alice = app.register("Alice").await;
    let both = [&app, &peer];
    let ok_everywhere = |token: String| async move {
        for instance in both {
            // Twice: the second answer comes from the instance's cache.
            for _ in 0..2 {
                instance.get("/users/me", Some(&token)).await.expect(200, None);
            }
        }
    };

    // The cache does answer: a session revoked behind the server's back (no announcement)
    // is still accepted by both instances, which is what the bus announcement is for.
    let (hidden, _) = app.login(&alice).await;
    ok_everywhere(hidden.clone()).await;
    revoke_newest_session_silently(&app).await;
    for instance in both {
        instance.get("/users/me", Some(&hidden)).await.expect(200, None);
    }

    // Logout on one instance: the very next request on the other is refused.
    let (a1, r1) = app.login(&alice).await;
    ok_everywhere(a1.clone()).await;
    app.post("/account/logout", Some(&a1), json!({"refreshToken": r1}))
        .await
        .expect(200, None);
    peer.get("/users/me", Some(&a1))
        .await
        .expect(401, Some("SessionRevoked"));
    app.get("/users/me", Some(&a1))
        .await
        .expect(401, Some("SessionRevoked"));

    // Logout everywhere, made on the peer.
    let (a2, _) = app.login(&alice).await;
    let (a3, _) = peer.login(&alice).await;
    ok_everywhere(a2.clone()).await;
    ok_everywhere(a3.clone()).await;
    peer.call(Method::POST, "/account/logout_all", Some(&a3), None)
        .await
        .expect(200, None);
    for token in [&a2, &a3, &alice.access] {
        app.get("/users/me", Some(token))
            .await
            .expect(401, Some("SessionRevoked"));
        peer.get("/users/me", Some(token))
            .await
            .expect(401, Some("SessionRevoked"));
    }

    // A password change on one instance ends the sessions cached by the other.
    let (a4, _) = app.login(&alice).await;
    ok_everywhere(a4.clone()).await;
    let changed = peer
        .post(
            "/account/change_password",
            Some(&a4),
            json!({"oldPassword": PASSWORD, "newPassword": "a brand new secret"}),
        )
        .await;
    changed.expect(200, None);
    app.get("/users/me", Some(&a4))
        .await
        .expect(401, Some("SessionRevoked"));
    let fresh = changed.body["accessToken"].as_str().unwrap().to_string();
    ok_everywhere(fresh).await;
}

/// Message sends take the session from the cache as well: a session revoked on one instance
/// cannot send through another whose cache held it live — nothing is stored or delivered —
/// while the cache does answer there (a revocation made behind the server's back still sends).
#[tokio::test]
async fn a_revoked_session_cannot_send_through_another_instance() {
    let app = TestApp::spawn().await;
    let peer = app.spawn_peer().await;
    let owner = app.register("Owner").await;
    let alice = app.register("Alice").await;
    let (sid, general) = space(&app, &owner, &[&alice]).await;
    let path = format!("/spaces/{sid}/channels/{general}/messages/");
    let send = |token: String, text: &'static str| {
        let (peer, path) = (&peer, path.clone());
        async move { peer.post(&path, Some(&token), json!({"content": text})).await }
    };
    let mut listener = peer.ws_auth(&owner).await;

    // A second session of Alice, cached live by the peer, then revoked in the database only.
    let (hidden, _) = app.login(&alice).await;
    send(hidden.clone(), "warms the cache").await.expect(200, None);
    revoke_newest_session_silently(&app).await;
    send(hidden, "from the cache").await.expect(200, None);

    // Logout on the first instance: the peer refuses the very next send.
    send(alice.access.clone(), "before the logout").await.expect(200, None);
    app.post(
        "/account/logout",
        Some(&alice.access),
        json!({"refreshToken": alice.refresh}),
    )
    .await
    .expect(200, None);
    send(alice.access.clone(), "after the logout")
        .await
        .expect(401, Some("SessionRevoked"));

    let mut heard = Vec::new();
    for _ in 0..3 {
        heard.push(listener.expect("messages.onCreate").await.data["content"].clone());
    }
    assert_eq!(heard, ["warms the cache", "from the cache", "before the logout"]);
    listener.silent(std::time::Duration::from_millis(400)).await;
    let stored = app.get(&path, Some(&owner.access)).await;
    stored.expect(200, None);
    assert_eq!(
        contents(&stored.body),
        ["warms the cache", "from the cache", "before the logout"]
    );
}

/// Revokes the newest auth session in the database only — no bus announcement — to show that
/// an instance's session cache answers.
async fn revoke_newest_session_silently(app: &TestApp) {
    sqlx::query(
        "UPDATE auth_sessions SET revoked_at = now() \
         WHERE id = (SELECT id FROM auth_sessions ORDER BY created_at DESC, id DESC LIMIT 1)",
    )
    .execute(app.db())
    .await
    .expect("revoke behind the server's back");
}
