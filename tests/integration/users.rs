//! `GET/PATCH /users/me` (spec §4.4) and its `users.onUpdate` event.

use std::time::Duration;

use crate::common::fixtures::profile_topic;
use crate::common::{Capture, TestApp};
use serde_json::json;

#[tokio::test]
async fn patch_semantics_and_event() {
    let app = TestApp::spawn().await;
    let alice = app.register("Alice").await;
    let bob = app.register("Bob").await;
    let mut alice_events = app.capture(&[profile_topic(&alice.id)]).await;
    let mut bob_events = app.capture(&[profile_topic(&bob.id)]).await;

    let r = app
        .patch(
            "/users/me",
            Some(&alice.access),
            json!({"name": "  Alice A.  ", "description": "hello"}),
        )
        .await;
    r.expect(200, None);
    assert_eq!(r.body["name"], "Alice A.");
    assert_eq!(r.body["description"], "hello");
    let ev = Capture::expect_op(alice_events.next(Duration::from_secs(2)).await, "users.onUpdate");
    assert_eq!(ev.data, r.body, "the event carries the same UserExt as the response");
    assert!(
        bob_events.next(Duration::from_millis(300)).await.is_none(),
        "another user's topic stays quiet"
    );

    // Absent leaves unchanged; `name: null` is absent; `description: null` clears.
    let r = app
        .patch(
            "/users/me",
            Some(&alice.access),
            json!({"name": null, "description": null}),
        )
        .await;
    r.expect(200, None);
    assert_eq!(r.body["name"], "Alice A.");
    assert!(r.body["description"].is_null());
    // `""` is stored as null.
    app.patch("/users/me", Some(&alice.access), json!({"description": "x"}))
        .await
        .expect(200, None);
    let r = app
        .patch("/users/me", Some(&alice.access), json!({"description": ""}))
        .await;
    assert!(r.body["description"].is_null());
    let stored: Option<String> = sqlx::query_scalar("SELECT description FROM users WHERE id = $1::uuid")
        .bind(&alice.id)
        .fetch_one(app.db())
        .await
        .unwrap();
    assert_eq!(stored, None);

    // An empty patch changes nothing and publishes nothing.
    while alice_events.next(Duration::from_millis(100)).await.is_some() {}
    let r = app.patch("/users/me", Some(&alice.access), json!({})).await;
    r.expect(200, None);
    assert!(alice_events.next(Duration::from_millis(300)).await.is_none());
    let me = app.get("/users/me", Some(&alice.access)).await;
    assert_eq!(me.body, r.body);
}

#[tokio::test]
async fn patch_validation() {
    let app = TestApp::spawn().await;
    let alice = app.register("Alice").await;
    let cases = [
        (json!({"name": ""}), 400, "ValidationFailed", "name"),
        (json!({"name": "x".repeat(65)}), 400, "ValidationFailed", "name"),
        (json!({"name": "a\u{0}b"}), 400, "ValidationFailed", "name"),
        (
            json!({"description": "d".repeat(2049)}),
            400,
            "ValidationFailed",
            "description",
        ),
        (
            json!({"avatar": "https://evil.example/a.png"}),
            400,
            "InvalidMediaReference",
            "avatar",
        ),
        (
            json!({"avatar": "spaceicon/abc.png"}),
            400,
            "InvalidMediaReference",
            "avatar",
        ),
        (json!({"name": 5}), 422, "InvalidBody", "name"),
        (json!({"avatar": 5}), 422, "InvalidBody", "avatar"),
    ];
    for (body, status, code, field) in cases {
        let r = app.patch("/users/me", Some(&alice.access), body.clone()).await;
        r.expect(status, Some(code));
        assert_eq!(r.body["field"], field, "{body}");
    }
    // Nothing changed.
    let me = app.get("/users/me", Some(&alice.access)).await;
    assert_eq!(me.body["name"], "Alice");
    assert!(me.body["avatar"].is_null() && me.body["description"].is_null());
    // `avatar: null` clears (and is accepted when already empty).
    app.patch("/users/me", Some(&alice.access), json!({"avatar": null}))
        .await
        .expect(200, None);
    app.patch("/users/me", None, json!({"name": "x"}))
        .await
        .expect(401, Some("Unauthorized"));
}

#[tokio::test]
async fn each_user_sees_only_themselves() {
    let app = TestApp::spawn().await;
    let alice = app.register("Alice").await;
    let bob = app.register("Bob").await;
    app.patch("/users/me", Some(&bob.access), json!({"name": "Robert"}))
        .await
        .expect(200, None);
    let me = app.get("/users/me", Some(&alice.access)).await;
    assert_eq!(me.body["id"], alice.id);
    assert_eq!(me.body["name"], "Alice");
}

#[tokio::test]
async fn in_process_bus_delivers_too() {
    let app = TestApp::builder().without_redis().spawn().await;
    let alice = app.register("Alice").await;
    let mut events = app.capture(&[profile_topic(&alice.id)]).await;
    app.patch("/users/me", Some(&alice.access), json!({"name": "Alicia"}))
        .await
        .expect(200, None);
    let ev = Capture::expect_op(events.next(Duration::from_secs(2)).await, "users.onUpdate");
    assert_eq!(ev.data["name"], "Alicia");
}
