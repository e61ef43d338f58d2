//! Hostile input that once gave 500s or wrong codes (issue 17), kept as regression tests: NUL
//! in bodies, paths and queries; truncated and absurdly nested JSON; invisible and bidi-spoofed
//! names; concurrent writers of one override.

use serde_json::json;

use crate::common::TestApp;
use crate::common::fixtures::{channel, space};

#[tokio::test]
async fn nul_is_a_400_naming_the_field_everywhere() {
    let app = TestApp::spawn().await;
    let owner = app.register("Owner").await;
    let t = Some(owner.access.as_str());
    let (sid, general) = space(&app, &owner, &[]).await;
    let cases = [
        (
            app.post(
                "/account/login",
                None,
                json!({"email": "a\u{0}b@example.org", "password": "x"}),
            )
            .await,
            "email",
        ),
        (
            app.patch("/users/me", t, json!({"description": "hi\u{0}"})).await,
            "description",
        ),
        (app.get("/handles/a%00b", None).await, "path"),
        (
            app.post(
                &format!("/spaces/{sid}/channels/{general}/messages/"),
                t,
                json!({"content": "a\u{0}"}),
            )
            .await,
            "content",
        ),
        (
            app.get(&format!("/spaces/{sid}/channels/{general}/messages/search?q=a%00"), t)
                .await,
            "q",
        ),
        (
            app.get(&format!("/spaces/{sid}/invites/?cursor=%00"), t).await,
            "cursor",
        ),
        (
            app.post(
                &format!("/spaces/{sid}/bans/"),
                t,
                json!({"userId": owner.id, "reason": "\u{0}"}),
            )
            .await,
            "reason",
        ),
        (
            app.post("/spaces/", t, json!({"name": "x", "nested": ["\u{0}"]})).await,
            "nested[0]",
        ),
    ];
    for (r, field) in cases {
        assert_eq!(r.status, 400, "{field}: {}", r.text);
        assert_eq!(r.body["code"], "ValidationFailed", "{field}: {}", r.text);
        assert_eq!(r.body["field"], field, "{}", r.text);
    }
}

#[tokio::test]
async fn truncated_or_deeply_nested_json_is_invalid_json() {
    let app = TestApp::spawn().await;
    let owner = app.register("Owner").await;
    for body in ["{\"name\": [".to_string(), "[".repeat(100_000)] {
        let res = app
            .http
            .post(app.url("/spaces/"))
            .bearer_auth(&owner.access)
            .header("content-type", "application/json")
            .header("x-forwarded-for", crate::common::random_ip())
            .body(body)
            .send()
            .await
            .unwrap();
        let r = TestApp::read(res).await;
        r.expect(400, Some("InvalidJson"));
    }
}

#[tokio::test]
async fn invisible_or_bidi_spoofed_names_and_empty_looking_messages_are_refused() {
    let app = TestApp::spawn().await;
    let owner = app.register("Owner").await;
    let t = Some(owner.access.as_str());
    let (sid, general) = space(&app, &owner, &[]).await;
    for name in [
        "\u{200B}\u{200B}",
        "\u{FEFF}",
        "admin\u{202E}txt.exe",
        "\u{2066}x\u{2069}",
    ] {
        app.patch("/users/me", t, json!({"name": name}))
            .await
            .expect(400, Some("ValidationFailed"));
        app.post("/spaces/", t, json!({"name": name}))
            .await
            .expect(400, Some("ValidationFailed"));
        app.post(&format!("/spaces/{sid}/channels/"), t, json!({"name": name}))
            .await
            .expect(400, Some("ValidationFailed"));
        app.post(&format!("/spaces/{sid}/roles/"), t, json!({"name": name}))
            .await
            .expect(400, Some("ValidationFailed"));
    }
    app.post(
        &format!("/spaces/{sid}/channels/{general}/messages/"),
        t,
        json!({"content": "\u{200B}\u{2060}\u{FEFF}"}),
    )
    .await
    .expect(400, Some("ValidationFailed"));
    // Joiners inside visible text are fine (emoji sequences).
    app.patch("/users/me", t, json!({"name": "Ada \u{1F469}\u{200D}\u{1F4BB}"}))
        .await
        .expect(200, None);
}

#[tokio::test]
async fn concurrent_puts_of_one_override_all_succeed() {
    let app = TestApp::spawn().await;
    let owner = app.register("Owner").await;
    let member = app.register("Member").await;
    let (sid, _) = space(&app, &owner, &[&member]).await;
    let cid = channel(&app, &owner, &sid, "contested").await;
    let path = format!("/spaces/{sid}/channels/{cid}/overrides/{}", member.id);
    let puts = (0..60).map(|i| {
        let body = json!({"targetType": "MEMBER", "allow": "0", "deny": if i % 2 == 0 { "4096" } else { "8192" }});
        let (app, path, token) = (&app, path.clone(), owner.access.clone());
        async move { app.put(&path, Some(&token), body).await }
    });
    let results = futures_util::future::join_all(puts).await;
    let statuses: Vec<u16> = results.iter().map(|r| r.status).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM channel_overrides WHERE channel_id = $1::uuid")
        .bind(&cid)
        .fetch_one(app.db())
        .await
        .unwrap();
    assert_eq!(rows, 1);
}
