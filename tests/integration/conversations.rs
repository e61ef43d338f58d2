//! Messages, relations and DMs over HTTP (spec §4.5, §4.6, §4.10, §4.17).

use std::collections::BTreeSet;
use std::time::Duration;

use crate::common::fixtures::{Target, befriend, channel, ids, set_override, space, space_topic, user_topic};
use crate::common::{Capture, Captured, TestApp};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(2);
const QUIET: Duration = Duration::from_millis(300);

async fn next(cap: &mut Capture) -> Captured {
    cap.next(WAIT).await.expect("an event")
}

/// Inserts `n` messages straight into the database, in id order; returns their ids.
async fn seed_messages(app: &TestApp, channel: &str, author: &str, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..n {
        let id = uuid::Uuid::now_v7();
        let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
        let ts = chrono::DateTime::from_timestamp(secs as i64, nanos).unwrap();
        sqlx::query("INSERT INTO messages (id, channel_id, author_id, timestamp, content) VALUES ($1, $2::uuid, $3::uuid, $4, $5)")
            .bind(id)
            .bind(channel)
            .bind(author)
            .bind(ts)
            .bind(format!("m{i}"))
            .execute(app.db())
            .await
            .unwrap();
        out.push(id.to_string());
    }
    out
}

#[tokio::test]
async fn sending_and_reading_messages() {
    let app = TestApp::spawn().await;
    let (ann, ben) = (app.register("Ann").await, app.register("Ben").await);
    let (sid, cid) = space(&app, &ann, &[&ben]).await;
    let base = format!("/spaces/{sid}/channels/{cid}/messages/");
    let mut space_events = app.capture(&[space_topic(&sid)]).await;
    let sent = app
        .post(&base, Some(&ann.access), json!({"content": "  hello  "}))
        .await;
    sent.expect(200, None);
    let m = &sent.body;
    assert_eq!(m["content"], "  hello  ", "content is not trimmed");
    assert_eq!(m["author"]["name"], "Ann");
    assert_eq!(m["authorId"], ann.id);
    assert_eq!(m["attachments"], json!([]));
    assert!(m["editedTimestamp"].is_null());
    // The timestamp is the id's millisecond.
    let id = uuid::Uuid::parse_str(m["id"].as_str().unwrap()).unwrap();
    let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
    let from_id = chrono::DateTime::from_timestamp(secs as i64, nanos)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    assert_eq!(m["timestamp"], from_id);
    // The sender's audience (the space) gets the same message; lastUpdated follows it.
    let ev = Capture::expect_op(Some(next(&mut space_events).await), "messages.onCreate");
    assert_eq!(&ev.data, m);
    let channel = app
        .get(&format!("/spaces/{sid}/channels/{cid}"), Some(&ann.access))
        .await;
    assert_eq!(channel.body["lastUpdated"], m["timestamp"]);
    // Ben reads it, edits are the author's only, deletion by author or MANAGE_MESSAGES.
    assert_eq!(
        ids(&app.get(&base, Some(&ben.access)).await.body),
        [m["id"].as_str().unwrap()]
    );
    let mid = m["id"].as_str().unwrap();
    app.patch(
        &format!("{base}{mid}"),
        Some(&ben.access),
        json!({"content": "mine now"}),
    )
    .await
    .expect(403, Some("Forbidden"));
    let edited = app
        .patch(&format!("{base}{mid}"), Some(&ann.access), json!({"content": "hello!"}))
        .await;
    edited.expect(200, None);
    assert!(edited.body["editedTimestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        Capture::expect_op(Some(next(&mut space_events).await), "messages.onUpdate").data["content"],
        "hello!"
    );
    app.patch(&format!("{base}{mid}"), Some(&ann.access), json!({"content": "  "}))
        .await
        .expect(400, Some("ValidationFailed"));
    app.delete(&format!("{base}{mid}"), Some(&ben.access))
        .await
        .expect(403, Some("InsufficientPermissions"));
    app.delete(&format!("{base}{mid}"), Some(&ann.access))
        .await
        .expect(200, None);
    let ev = Capture::expect_op(Some(next(&mut space_events).await), "messages.onDelete");
    assert_eq!(ev.data, json!({"channelId": cid, "messageId": mid}));
    app.get(&format!("{base}{mid}"), Some(&ann.access))
        .await
        .expect(404, Some("NotFound"));
}

#[tokio::test]
async fn message_rules() {
    let app = TestApp::spawn().await;
    let (ann, ben, cat) = (
        app.register("Ann").await,
        app.register("Ben").await,
        app.register("Cat").await,
    );
    let (sid, cid) = space(&app, &ann, &[&ben]).await;
    let base = format!("/spaces/{sid}/channels/{cid}/messages/");
    let a = Some(ann.access.as_str());
    for (body, code) in [
        (json!({"content": ""}), "ValidationFailed"),
        (json!({"content": " \n\t "}), "ValidationFailed"),
        (json!({"content": "x".repeat(4001)}), "ValidationFailed"),
    ] {
        app.post(&base, a, body).await.expect(400, Some(code));
    }
    app.post(&base, a, json!({"content": "é".repeat(4000)}))
        .await
        .expect(200, None);
    app.post(&base, a, json!({})).await.expect(422, Some("InvalidBody"));
    let eleven: Vec<Value> = (0..11)
        .map(|i| json!({"url": format!("attachment/x{i}.png"), "filename": "x"}))
        .collect();
    app.post(&base, a, json!({"content": "x", "attachments": eleven}))
        .await
        .expect(400, Some("ValidationFailed"));
    app.post(
        &base,
        a,
        json!({"content": "x", "attachments": [{"url": "https://evil.example/a.png"}]}),
    )
    .await
    .expect(400, Some("InvalidMediaReference"));
    // Outsiders see nothing; other spaces' channels are not found through this space.
    app.get(&base, Some(&cat.access)).await.expect(404, Some("NotFound"));
    app.post(&base, Some(&cat.access), json!({"content": "hi"}))
        .await
        .expect(404, Some("NotFound"));
    let (_, other_channel) = space(&app, &cat, &[]).await;
    app.get(&format!("/spaces/{sid}/channels/{other_channel}/messages/"), a)
        .await
        .expect(404, Some("NotFound"));
    // A message of another channel is not found here (Mikoto defect: messages.get unchecked).
    let elsewhere = channel(&app, &ann, &sid, "two").await;
    let m = app
        .post(
            &format!("/spaces/{sid}/channels/{elsewhere}/messages/"),
            a,
            json!({"content": "there"}),
        )
        .await;
    let mid = m.body["id"].as_str().unwrap();
    app.get(&format!("{base}{mid}"), a).await.expect(404, Some("NotFound"));
    // Only TEXT, VOICE and THREAD channels take messages.
    for kind in ["DOCUMENT", "CATEGORY"] {
        let c = app
            .post(
                &format!("/spaces/{sid}/channels/"),
                a,
                json!({"name": kind, "type": kind}),
            )
            .await
            .body["id"]
            .as_str()
            .unwrap()
            .to_string();
        app.post(
            &format!("/spaces/{sid}/channels/{c}/messages/"),
            a,
            json!({"content": "x"}),
        )
        .await
        .expect(400, Some("WrongChannelType"));
    }
    // SEND_MESSAGES is checked per channel.
    set_override(&app, &ann, &sid, &cid, Target::Member(&ben.id), 0, 8192).await;
    app.post(&base, Some(&ben.access), json!({"content": "muted"}))
        .await
        .expect(403, Some("InsufficientPermissions"));
    app.get(&base, Some(&ben.access)).await.expect(200, None);
    // MANAGE_MESSAGES in the channel lets Ben delete others' messages.
    let victim = app.post(&base, a, json!({"content": "delete me"})).await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    set_override(&app, &ann, &sid, &cid, Target::Member(&ben.id), 512, 0).await;
    app.delete(&format!("{base}{victim}"), Some(&ben.access))
        .await
        .expect(200, None);
}

#[tokio::test]
async fn members_without_view_get_no_message_events_topic_is_filtered_at_delivery() {
    // Space message events are published once to the space topic; the gateway filters per
    // recipient by VIEW_CHANNEL. Here: a hidden channel's messages are unreadable over REST.
    let app = TestApp::spawn().await;
    let (ann, ben) = (app.register("Ann").await, app.register("Ben").await);
    let (sid, _) = space(&app, &ann, &[&ben]).await;
    let hidden = channel(&app, &ann, &sid, "hidden").await;
    set_override(&app, &ann, &sid, &hidden, Target::Member(&ben.id), 0, 4096).await;
    let base = format!("/spaces/{sid}/channels/{hidden}/messages/");
    let m = app.post(&base, Some(&ann.access), json!({"content": "secret"})).await;
    let mid = m.body["id"].as_str().unwrap();
    app.get(&base, Some(&ben.access)).await.expect(404, Some("NotFound"));
    app.get(&format!("{base}{mid}"), Some(&ben.access))
        .await
        .expect(404, Some("NotFound"));
    app.get(&format!("{base}search?q=secret"), Some(&ben.access))
        .await
        .expect(404, Some("NotFound"));
    app.post(&base, Some(&ben.access), json!({"content": "x"}))
        .await
        .expect(404, Some("NotFound"));
}

#[tokio::test]
async fn cursors_before_after_around() {
    let app = TestApp::spawn().await;
    let ann = app.register("Ann").await;
    let (sid, cid) = space(&app, &ann, &[]).await;
    let base = format!("/spaces/{sid}/channels/{cid}/messages/");
    let a = Some(ann.access.as_str());
    // Seeded directly: the `messages` bucket allows 10 sends per 10 s.
    let all = seed_messages(&app, &cid, &ann.id, 12).await;
    let get = |q: String| {
        let app = &app;
        let base = base.clone();
        async move { ids(&app.get(&format!("{base}?{q}"), a).await.body) }
    };
    assert_eq!(get("limit=5".into()).await, all[7..]);
    assert_eq!(get(format!("limit=3&before={}", all[5])).await, all[2..5]);
    assert_eq!(
        get(format!("limit=3&cursor={}", all[5])).await,
        all[2..5],
        "cursor means before"
    );
    assert_eq!(get(format!("limit=3&after={}", all[5])).await, all[6..9]);
    assert_eq!(get(format!("limit=5&around={}", all[5])).await, all[3..8]);
    assert_eq!(get(format!("limit=4&around={}", all[0])).await, all[0..4]);
    // A deleted message's id still positions the cursor.
    app.delete(&format!("{base}{}", all[5]), a).await.expect(200, None);
    assert_eq!(get(format!("limit=2&before={}", all[5])).await, all[3..5]);
    assert_eq!(get(format!("limit=2&after={}", all[5])).await, all[6..8]);
    // A v7 id from nowhere works by its time; a non-v7 unknown id is 404.
    let future = uuid::Uuid::now_v7();
    assert_eq!(get(format!("limit=2&before={future}")).await, all[10..12]);
    let r = app.get(&format!("{base}?before={}", uuid::Uuid::new_v4()), a).await;
    r.expect(404, Some("NotFound"));
    app.get(&format!("{base}?before={}&after={}", all[1], all[2]), a)
        .await
        .expect(400, Some("InvalidQuery"));
    app.get(&format!("{base}?before=nope"), a)
        .await
        .expect(400, Some("InvalidQuery"));
    app.get(&format!("{base}?limit=x"), a)
        .await
        .expect(400, Some("InvalidQuery"));
    assert_eq!(get("limit=1000".into()).await.len(), 11, "clamped to 100");
    assert_eq!(get("limit=0".into()).await.len(), 1, "clamped to 1");
}

#[tokio::test]
async fn mikoto_defect_equal_timestamp_pagination_skipped_messages() {
    // Mikoto skipped messages that shared the cursor's millisecond. Insert many messages with
    // the same timestamp and page through them one at a time.
    let app = TestApp::spawn().await;
    let ann = app.register("Ann").await;
    let (sid, cid) = space(&app, &ann, &[]).await;
    let ts = chrono::Utc::now();
    let mut ids_in_order = Vec::new();
    for _ in 0..20 {
        let id = uuid::Uuid::now_v7();
        sqlx::query("INSERT INTO messages (id, channel_id, author_id, timestamp, content) VALUES ($1, $2::uuid, $3::uuid, $4, 'same ms')")
            .bind(id)
            .bind(&cid)
            .bind(&ann.id)
            .bind(ts)
            .execute(app.db())
            .await
            .unwrap();
        ids_in_order.push(id.to_string());
    }
    ids_in_order.sort();
    let base = format!("/spaces/{sid}/channels/{cid}/messages/");
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("{base}?limit=3&before={c}"),
            None => format!("{base}?limit=3"),
        };
        let page = ids(&app.get(&q, Some(&ann.access)).await.body);
        if page.is_empty() {
            break;
        }
        cursor = Some(page[0].clone());
        let mut page = page;
        page.extend(seen);
        seen = page;
    }
    assert_eq!(seen, ids_in_order);
}

#[tokio::test]
async fn search_messages() {
    let app = TestApp::spawn().await;
    let ann = app.register("Ann").await;
    let (sid, cid) = space(&app, &ann, &[]).await;
    let base = format!("/spaces/{sid}/channels/{cid}/messages/");
    let a = Some(ann.access.as_str());
    for text in [
        "the quick brown fox",
        "lazy dog sleeps",
        "quick thinking",
        "Brown bread",
        "foxes and hounds",
    ] {
        app.post(&base, a, json!({"content": text})).await.expect(200, None);
    }
    let contents = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|m| m["content"].as_str().unwrap().to_string())
            .collect()
    };
    let r = app.get(&format!("{base}search?q=quick"), a).await;
    r.expect(200, None);
    assert_eq!(
        contents(&r.body),
        ["quick thinking", "the quick brown fox"],
        "newest first"
    );
    assert_eq!(
        contents(&app.get(&format!("{base}search?q=brown%20-bread"), a).await.body),
        ["the quick brown fox"]
    );
    assert_eq!(
        contents(&app.get(&format!("{base}search?q=%22lazy%20dog%22"), a).await.body),
        ["lazy dog sleeps"]
    );
    assert_eq!(
        contents(&app.get(&format!("{base}search?q=dog%20or%20bread"), a).await.body),
        ["Brown bread", "lazy dog sleeps"]
    );
    let first = app.get(&format!("{base}search?q=quick&limit=1"), a).await;
    let before = first.body[0]["id"].as_str().unwrap();
    assert_eq!(
        contents(&app.get(&format!("{base}search?q=quick&before={before}"), a).await.body),
        ["the quick brown fox"]
    );
    app.get(&format!("{base}search"), a)
        .await
        .expect(400, Some("InvalidQuery"));
    app.get(&format!("{base}search?q="), a)
        .await
        .expect(400, Some("InvalidQuery"));
    app.get(&format!("{base}search?q={}", "x".repeat(257)), a)
        .await
        .expect(400, Some("InvalidQuery"));
    assert_eq!(app.get(&format!("{base}search?q=%22%22"), a).await.body, json!([]));
}

#[tokio::test]
async fn idempotent_sends() {
    let app = TestApp::spawn().await;
    let ann = app.register("Ann").await;
    let (sid, cid) = space(&app, &ann, &[]).await;
    let base = format!("/spaces/{sid}/channels/{cid}/messages/");
    let send = |key: &'static str, content: &'static str| {
        let req = app
            .http
            .post(app.url(&base))
            .bearer_auth(&ann.access)
            .header("idempotency-key", key)
            .json(&json!({"content": content}));
        async move { TestApp::read(req.send().await.unwrap()).await }
    };
    let mut events = app.capture(&[space_topic(&sid)]).await;
    let first = send("retry-1", "once").await;
    first.expect(200, None);
    Capture::expect_op(Some(next(&mut events).await), "messages.onCreate");
    let again = send("retry-1", "once").await;
    again.expect(200, None);
    assert_eq!(again.body, first.body, "the original message comes back");
    assert!(events.next(QUIET).await.is_none(), "and no event is sent");
    let other = send("retry-2", "twice").await;
    assert_ne!(other.body["id"], first.body["id"]);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(app.db())
        .await
        .unwrap();
    assert_eq!(count, 2);
    // A failed send frees its key.
    send("retry-3", "").await.expect(400, Some("ValidationFailed"));
    send("retry-3", "fixed").await.expect(200, None);
    // Also when it fails inside its transaction (the key is released on the same connection,
    // after the rollback): the message is not stored, and the corrected retry goes through.
    let with_bad_attachment = app
        .http
        .post(app.url(&base))
        .bearer_auth(&ann.access)
        .header("idempotency-key", "retry-4")
        .json(&json!({"content": "x", "attachments": [{"url": "https://evil.example/a.png"}]}));
    TestApp::read(with_bad_attachment.send().await.unwrap())
        .await
        .expect(400, Some("InvalidMediaReference"));
    send("retry-4", "fixed").await.expect(200, None);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(app.db())
        .await
        .unwrap();
    assert_eq!(count, 4, "once, twice, fixed (retry-3), fixed (retry-4)");
    let bad = app
        .http
        .post(app.url(&base))
        .bearer_auth(&ann.access)
        .header("idempotency-key", "x".repeat(65))
        .json(&json!({"content": "x"}));
    TestApp::read(bad.send().await.unwrap())
        .await
        .expect(400, Some("ValidationFailed"));
    // A key still in flight conflicts.
    sqlx::query("INSERT INTO idempotency_keys (user_id, operation, key) VALUES ($1::uuid, 'messages.create', 'busy')")
        .bind(&ann.id)
        .execute(app.db())
        .await
        .unwrap();
    send("busy", "x").await.expect(409, Some("Conflict"));
}

#[tokio::test]
async fn friend_requests_and_events() {
    let app = TestApp::spawn().await;
    let (ann, ben) = (app.register("Ann").await, app.register("Ben").await);
    let mut anns = app.capture(&[user_topic(&ann.id)]).await;
    let mut bens = app.capture(&[user_topic(&ben.id)]).await;
    let r = app
        .post(&format!("/relations/{}/request", ben.id), Some(&ann.access), json!({}))
        .await;
    r.expect(200, None);
    assert_eq!(
        (
            r.body["state"].as_str(),
            r.body["userId"].as_str(),
            r.body["relationId"].as_str()
        ),
        (Some("OUTGOING_REQUEST"), Some(ann.id.as_str()), Some(ben.id.as_str()))
    );
    assert_eq!(r.body["user"]["name"], "Ben");
    let ev = Capture::expect_op(Some(next(&mut anns).await), "relations.onCreate");
    assert_eq!(ev.data, r.body);
    let ev = Capture::expect_op(Some(next(&mut bens).await), "relations.onCreate");
    assert_eq!(ev.data["state"], "INCOMING_REQUEST");
    // Repeating is a no-op.
    app.post(&format!("/relations/{}/request", ben.id), Some(&ann.access), json!({}))
        .await
        .expect(200, None);
    assert!(anns.next(QUIET).await.is_none());
    // Ann cannot accept her own request; a crossing request auto-accepts.
    app.post(&format!("/relations/{}/accept", ben.id), Some(&ann.access), json!({}))
        .await
        .expect(400, Some("NotIncomingRequest"));
    let r = app
        .post(&format!("/relations/{}/request", ann.id), Some(&ben.access), json!({}))
        .await;
    assert_eq!(r.body["state"], "FRIEND");
    assert_eq!(
        Capture::expect_op(Some(next(&mut anns).await), "relations.onUpdate").data["state"],
        "FRIEND"
    );
    assert_eq!(
        Capture::expect_op(Some(next(&mut bens).await), "relations.onUpdate").data["state"],
        "FRIEND"
    );
    assert_eq!(
        app.get("/relations", Some(&ann.access))
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Rules.
    app.post(&format!("/relations/{}/request", ann.id), Some(&ann.access), json!({}))
        .await
        .expect(400, Some("CannotFriendSelf"));
    let bot = app.create_bot(&ann.id, "Bot", true).await;
    app.post(&format!("/relations/{bot}/request"), Some(&ann.access), json!({}))
        .await
        .expect(400, Some("CannotFriendBot"));
    app.post(
        &format!("/relations/{}/request", uuid::Uuid::now_v7()),
        Some(&ann.access),
        json!({}),
    )
    .await
    .expect(404, Some("NotFound"));
    app.get(&format!("/relations/{}", uuid::Uuid::now_v7()), Some(&ann.access))
        .await
        .expect(404, Some("NotFound"));
    app.post(&format!("/relations/{}/decline", ben.id), Some(&ann.access), json!({}))
        .await
        .expect(400, Some("NotIncomingRequest"));
    app.delete(&format!("/relations/{}/block", ben.id), Some(&ann.access))
        .await
        .expect(400, Some("NotBlocked"));
    // Remove: both rows go, each side learns its own row id.
    let ann_row = app.get(&format!("/relations/{}", ben.id), Some(&ann.access)).await.body["id"].clone();
    let ben_row = app.get(&format!("/relations/{}", ann.id), Some(&ben.access)).await.body["id"].clone();
    app.delete(&format!("/relations/{}", ben.id), Some(&ann.access))
        .await
        .expect(200, None);
    assert_eq!(
        Capture::expect_op(Some(next(&mut anns).await), "relations.onDelete").data,
        json!({"id": ann_row})
    );
    assert_eq!(
        Capture::expect_op(Some(next(&mut bens).await), "relations.onDelete").data,
        json!({"id": ben_row})
    );
    app.delete(&format!("/relations/{}", ben.id), Some(&ann.access))
        .await
        .expect(400, Some("CannotRemove"));
    // Decline.
    app.post(&format!("/relations/{}/request", ben.id), Some(&ann.access), json!({}))
        .await
        .expect(200, None);
    app.post(&format!("/relations/{}/decline", ann.id), Some(&ben.access), json!({}))
        .await
        .expect(200, None);
    assert_eq!(app.get("/relations", Some(&ann.access)).await.body, json!([]));
}

#[tokio::test]
async fn mikoto_defect_block_bypass_by_deleting_the_other_users_block() {
    let app = TestApp::spawn().await;
    let (ann, ben) = (app.register("Ann").await, app.register("Ben").await);
    let dm = befriend(&app, &ann, &ben).await;
    app.post(
        &format!("/dm/{dm}/messages/"),
        Some(&ben.access),
        json!({"content": "hi"}),
    )
    .await
    .expect(200, None);
    let mut anns = app.capture(&[user_topic(&ann.id)]).await;
    let mut bens = app.capture(&[user_topic(&ben.id)]).await;
    let r = app
        .post(&format!("/relations/{}/block", ben.id), Some(&ann.access), json!({}))
        .await;
    r.expect(200, None);
    assert_eq!(r.body["state"], "BLOCKED");
    // The DM goes away for both, with events.
    let mut ops: BTreeSet<String> = BTreeSet::new();
    ops.insert(next(&mut anns).await.op);
    ops.insert(next(&mut anns).await.op);
    assert_eq!(
        ops,
        BTreeSet::from(["channels.onDelete".to_string(), "relations.onUpdate".to_string()])
    );
    let mut ops: BTreeSet<String> = BTreeSet::new();
    ops.insert(next(&mut bens).await.op);
    ops.insert(next(&mut bens).await.op);
    assert_eq!(
        ops,
        BTreeSet::from(["channels.onDelete".to_string(), "relations.onDelete".to_string()])
    );
    app.get(&format!("/dm/{dm}/messages/"), Some(&ben.access))
        .await
        .expect(404, Some("NotFound"));
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(app.db())
        .await
        .unwrap();
    assert_eq!(left, 0);
    // Ben cannot befriend Ann, and (the Mikoto bypass) cannot remove her block.
    app.post(&format!("/relations/{}/request", ann.id), Some(&ben.access), json!({}))
        .await
        .expect(403, Some("Forbidden"));
    app.delete(&format!("/relations/{}/block", ann.id), Some(&ben.access))
        .await
        .expect(400, Some("NotBlocked"));
    app.delete(&format!("/relations/{}", ann.id), Some(&ben.access))
        .await
        .expect(400, Some("CannotRemove"));
    // Ben blocks back: Ann's block stays.
    app.post(&format!("/relations/{}/block", ann.id), Some(&ben.access), json!({}))
        .await
        .expect(200, None);
    assert_eq!(
        app.get(&format!("/relations/{}", ben.id), Some(&ann.access)).await.body["state"],
        "BLOCKED"
    );
    // Ann unblocks: only her row goes; Ben's block still stops her request.
    app.delete(&format!("/relations/{}/block", ben.id), Some(&ann.access))
        .await
        .expect(200, None);
    app.get(&format!("/relations/{}", ben.id), Some(&ann.access))
        .await
        .expect(404, Some("NotFound"));
    app.post(&format!("/relations/{}/request", ben.id), Some(&ann.access), json!({}))
        .await
        .expect(403, Some("Forbidden"));
    app.post(&format!("/relations/{}/block", ann.id), Some(&ann.access), json!({}))
        .await
        .expect(400, Some("CannotBlockSelf"));
}

#[tokio::test]
async fn direct_messages_and_mikoto_defect_dm_existence_revealed_by_403() {
    let app = TestApp::spawn().await;
    let (ann, ben, cat) = (
        app.register("Ann").await,
        app.register("Ben").await,
        app.register("Cat").await,
    );
    app.post(&format!("/relations/{}/request", ben.id), Some(&ann.access), json!({}))
        .await
        .expect(200, None);
    app.post(&format!("/relations/{}/dm", ben.id), Some(&ann.access), json!({}))
        .await
        .expect(403, Some("Forbidden"));
    app.post(&format!("/relations/{}/dm", cat.id), Some(&ann.access), json!({}))
        .await
        .expect(404, Some("NotFound"));
    app.post(&format!("/relations/{}/accept", ann.id), Some(&ben.access), json!({}))
        .await
        .expect(200, None);
    let (_, general) = space(&app, &ann, &[]).await;
    let mut anns = app.capture(&[user_topic(&ann.id)]).await;
    let mut bens = app.capture(&[user_topic(&ben.id)]).await;
    let mut cats = app.capture(&[user_topic(&cat.id)]).await;
    let dm = app
        .post(&format!("/relations/{}/dm", ben.id), Some(&ann.access), json!({}))
        .await;
    dm.expect(200, None);
    assert_eq!(
        (
            dm.body["name"].as_str(),
            dm.body["type"].as_str(),
            dm.body["order"].as_i64()
        ),
        (Some("Ben"), Some("TEXT"), Some(0))
    );
    assert!(dm.body["spaceId"].is_null());
    let dm_id = dm.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        Capture::expect_op(Some(next(&mut anns).await), "relations.onUpdate").data["channelId"],
        dm_id
    );
    assert_eq!(
        Capture::expect_op(Some(next(&mut bens).await), "relations.onUpdate").data["channelId"],
        dm_id
    );
    // Opening again returns the same channel, named per viewer, with no event.
    let again = app
        .post(&format!("/relations/{}/dm", ann.id), Some(&ben.access), json!({}))
        .await;
    assert_eq!(
        (again.body["id"].as_str(), again.body["name"].as_str()),
        (Some(dm_id.as_str()), Some("Ann"))
    );
    assert!(anns.next(QUIET).await.is_none());
    // Messages reach exactly the two participants.
    let base = format!("/dm/{dm_id}/messages/");
    let m = app.post(&base, Some(&ann.access), json!({"content": "hi ben"})).await;
    m.expect(200, None);
    assert_eq!(
        Capture::expect_op(Some(next(&mut anns).await), "messages.onCreate").data,
        m.body
    );
    assert_eq!(
        Capture::expect_op(Some(next(&mut bens).await), "messages.onCreate").data,
        m.body
    );
    assert!(cats.next(QUIET).await.is_none());
    let mid = m.body["id"].as_str().unwrap();
    // Cat is not a participant: 404 everywhere (Mikoto answered 403).
    app.get(&base, Some(&cat.access)).await.expect(404, Some("NotFound"));
    app.post(&base, Some(&cat.access), json!({"content": "x"}))
        .await
        .expect(404, Some("NotFound"));
    app.post(&format!("/dm/{dm_id}/ack"), Some(&cat.access), json!({}))
        .await
        .expect(404, Some("NotFound"));
    app.get(&format!("{base}search?q=hi"), Some(&cat.access))
        .await
        .expect(404, Some("NotFound"));
    // A space channel is not a DM.
    app.get(&format!("/dm/{general}/messages/"), Some(&ann.access))
        .await
        .expect(404, Some("NotFound"));
    // Author rules.
    app.patch(&format!("{base}{mid}"), Some(&ben.access), json!({"content": "x"}))
        .await
        .expect(403, Some("Forbidden"));
    app.delete(&format!("{base}{mid}"), Some(&ben.access))
        .await
        .expect(403, Some("Forbidden"));
    // Search, unreads and ack.
    assert_eq!(
        ids(&app.get(&format!("{base}search?q=ben"), Some(&ben.access)).await.body),
        [mid]
    );
    app.post(&format!("/dm/{dm_id}/ack"), Some(&ben.access), json!({}))
        .await
        .expect(200, None);
    assert_eq!(
        Capture::expect_op(Some(next(&mut bens).await), "unreads.onUpdate").data["channelId"],
        dm_id
    );
    let unreads = app.get("/dm/unreads", Some(&ben.access)).await;
    assert_eq!(unreads.body.as_array().unwrap().len(), 1);
    assert_eq!(app.get("/dm/unreads", Some(&ann.access)).await.body, json!([]));
    // Unfriending deletes the DM with its messages and tells both.
    app.delete(&format!("/relations/{}", ben.id), Some(&ann.access))
        .await
        .expect(200, None);
    let mut ops = vec![next(&mut anns).await.op, next(&mut anns).await.op];
    ops.sort();
    assert_eq!(ops, ["channels.onDelete", "relations.onDelete"]);
    app.get(&base, Some(&ann.access)).await.expect(404, Some("NotFound"));
    assert_eq!(app.get("/dm/unreads", Some(&ben.access)).await.body, json!([]));
}

#[tokio::test]
async fn bots_cannot_use_user_only_operations() {
    let app = TestApp::spawn().await;
    let ann = app.register("Ann").await;
    let bot = app.create_bot(&ann.id, "Bot", false).await;
    let token = app
        .state
        .jwt
        .bot_token(uuid::Uuid::parse_str(&bot).unwrap(), 0, Duration::from_secs(60))
        .unwrap();
    // Bot tokens are not accepted until bots can log in (the bots API issue); either way these
    // user-only operations must refuse them.
    for path in ["/relations", "/dm/unreads"] {
        let r = app.get(path, Some(&token)).await;
        assert!(r.status == 401 || r.status == 403, "{path}: {}", r.text);
    }
}

#[tokio::test]
async fn public_profiles_follow_the_audience_rule() {
    let app = TestApp::spawn().await;
    let (ann, ben, cat, dan) = (
        app.register("Ann").await,
        app.register("Ben").await,
        app.register("Cat").await,
        app.register("Dan").await,
    );
    space(&app, &ann, &[&ben]).await;
    app.post(&format!("/relations/{}/request", dan.id), Some(&cat.access), json!({}))
        .await
        .expect(200, None);
    let a = Some(ann.access.as_str());
    assert_eq!(app.get(&format!("/users/{}", ann.id), a).await.body["name"], "Ann");
    assert_eq!(
        app.get(&format!("/users/{}", ben.id), a).await.body["handle"],
        app.get("/users/me", Some(&ben.access)).await.body["handle"]
    );
    app.get(&format!("/users/{}", cat.id), a)
        .await
        .expect(404, Some("NotFound"));
    app.get(&format!("/users/{}", uuid::Uuid::now_v7()), a)
        .await
        .expect(404, Some("NotFound"));
    // A relationship row in either direction qualifies.
    app.get(&format!("/users/{}", cat.id), Some(&dan.access))
        .await
        .expect(200, None);
    app.get(&format!("/users/{}", dan.id), Some(&cat.access))
        .await
        .expect(200, None);
    app.get("/users/not-a-uuid", a)
        .await
        .expect(400, Some("InvalidPathParameter"));
}

#[tokio::test]
async fn message_rate_limit_is_per_user_and_channel() {
    let app = TestApp::spawn().await;
    let ann = app.register("Ann").await;
    let (sid, cid) = space(&app, &ann, &[]).await;
    let base = format!("/spaces/{sid}/channels/{cid}/messages/");
    for i in 0..10 {
        let r = app
            .post(&base, Some(&ann.access), json!({"content": format!("m{i}")}))
            .await;
        r.expect(200, None);
        assert_eq!(r.header("x-ratelimit-bucket"), Some("messages"));
    }
    app.post(&base, Some(&ann.access), json!({"content": "one too many"}))
        .await
        .expect(429, Some("RateLimited"));
    let other = channel(&app, &ann, &sid, "other").await;
    app.post(
        &format!("/spaces/{sid}/channels/{other}/messages/"),
        Some(&ann.access),
        json!({"content": "elsewhere"}),
    )
    .await
    .expect(200, None);
}

#[tokio::test]
async fn mikoto_defect_client_supplied_attachment_metadata() {
    let app = TestApp::spawn().await;
    let (ann, ben) = (app.register("Ann").await, app.register("Ben").await);
    let (sid, cid) = space(&app, &ann, &[&ben]).await;
    let base = format!("/spaces/{sid}/channels/{cid}/messages/");
    let a = Some(ann.access.as_str());
    let up = app
        .upload("attachment", a, "notes.txt", "text/plain", b"hello world".to_vec())
        .await;
    up.expect(200, None);
    let url = up.body["url"].as_str().unwrap().to_string();
    // The client lies about type and size, and sends a hostile filename.
    let lie = json!({"url": url, "filename": "../../etc/pass\u{7}wd", "contentType": "image/png", "size": 99999});
    let absolute = json!({"url": format!("http://alterego.test/media/{url}")});
    let r = app
        .post(&base, a, json!({"content": "", "attachments": [lie, absolute]}))
        .await;
    r.expect(200, None);
    let atts = r.body["attachments"].as_array().unwrap();
    assert_eq!(atts.len(), 2);
    assert_eq!(atts[0]["contentType"], "text/plain");
    assert_eq!(atts[0]["size"], 11);
    assert_eq!(atts[0]["filename"], "....etcpasswd");
    assert_eq!(atts[0]["order"], 0);
    assert_eq!(atts[1]["url"], url, "absolute references are stored relative");
    assert_eq!(
        atts[1]["filename"], "notes.txt",
        "the upload's own filename fills a missing one"
    );
    assert_eq!(atts[1]["order"], 1);
    let claimed: bool = sqlx::query_scalar("SELECT claimed_at IS NOT NULL FROM media_objects WHERE key = $1")
        .bind(&url)
        .fetch_one(app.db())
        .await
        .unwrap();
    assert!(claimed, "attaching claims the upload");
    // A listed page carries the attachments too.
    let listed = app.get(&base, a).await;
    assert_eq!(listed.body[0]["attachments"], r.body["attachments"]);
    // Other stores, unknown keys and foreign URLs are refused.
    let avatar = app.upload("avatar", a, "me.png", "image/png", tiny_png()).await.body["url"]
        .as_str()
        .unwrap()
        .to_string();
    for bad in [
        avatar.as_str(),
        "attachment/doesnotexist.txt",
        "https://elsewhere.example/media/attachment/x.txt",
    ] {
        let r = app
            .post(&base, a, json!({"content": "x", "attachments": [{"url": bad}]}))
            .await;
        r.expect(400, Some("InvalidMediaReference"));
        assert_eq!(r.body["field"], "attachments[0].url");
    }
    // ATTACH_FILES is checked per channel.
    app.put(
        &format!("/spaces/{sid}/channels/{cid}/overrides/{}", ben.id),
        a,
        json!({"targetType": "MEMBER", "allow": "0", "deny": "16384"}),
    )
    .await
    .expect(200, None);
    let b = Some(ben.access.as_str());
    let r = app
        .post(&base, b, json!({"content": "x", "attachments": [{"url": url}]}))
        .await;
    r.expect(403, Some("InsufficientPermissions"));
    app.post(&base, b, json!({"content": "text is fine"}))
        .await
        .expect(200, None);
    // A message with attachments may be edited to empty content.
    let with = app
        .post(&base, a, json!({"content": "caption", "attachments": [{"url": url}]}))
        .await;
    let mid = with.body["id"].as_str().unwrap();
    app.patch(&format!("{base}{mid}"), a, json!({"content": ""}))
        .await
        .expect(200, None);
}

#[tokio::test]
async fn space_icons_must_be_uploads() {
    let app = TestApp::spawn().await;
    let ann = app.register("Ann").await;
    let (sid, _) = space(&app, &ann, &[]).await;
    let a = Some(ann.access.as_str());
    let icon = app.upload("spaceicon", a, "icon.png", "image/png", tiny_png()).await;
    icon.expect(200, None);
    let url = icon.body["url"].as_str().unwrap();
    let r = app.patch(&format!("/spaces/{sid}"), a, json!({"icon": url})).await;
    r.expect(200, None);
    assert_eq!(r.body["icon"], url);
    let avatar = app.upload("avatar", a, "a.png", "image/png", tiny_png()).await.body["url"]
        .as_str()
        .unwrap()
        .to_string();
    app.patch(&format!("/spaces/{sid}"), a, json!({"icon": avatar}))
        .await
        .expect(400, Some("InvalidMediaReference"));
    app.patch(&format!("/spaces/{sid}"), a, json!({"icon": "spaceicon/unknown.png"}))
        .await
        .expect(400, Some("InvalidMediaReference"));
    let cleared = app.patch(&format!("/spaces/{sid}"), a, json!({"icon": null})).await;
    assert!(cleared.body["icon"].is_null());
}

/// A valid 2×2 PNG.
fn tiny_png() -> Vec<u8> {
    let img = image::RgbImage::from_pixel(2, 2, image::Rgb([200, 10, 10]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}
