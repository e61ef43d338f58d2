//! The real-time gateway `/ws` (spec §7, §8, §12.8) over real sockets, with real Redis.

use std::time::Duration;

use crate::common::fixtures::{Target, befriend, channel, id, set_override, space};
use crate::common::ws::{Read, WsClient};
use crate::common::{TestApp, TestUser};
use serde_json::{Value, json};

/// How long a negative check waits for an event that must not come.
const QUIET: Duration = Duration::from_millis(400);
const LONG: Duration = Duration::from_secs(10);

/// Posts a message through the REST API.
async fn say(app: &TestApp, user: &TestUser, sid: &str, cid: &str, text: &str) -> String {
    let m = app
        .post(
            &format!("/spaces/{sid}/channels/{cid}/messages/"),
            Some(&user.access),
            json!({"content": text}),
        )
        .await;
    m.expect(200, None);
    id(&m.body)
}

/// The ids of the messages in `frames` (a replay), in order.
fn ids(frames: &[crate::common::ws::Frame]) -> Vec<String> {
    frames.iter().map(|f| id(&f.data)).collect()
}

/// The ids of the messages created in `frames` (a replay), in order.
fn replayed_messages(frames: &[crate::common::ws::Frame]) -> Vec<String> {
    frames
        .iter()
        .filter(|f| f.op == "messages.onCreate")
        .map(|f| id(&f.data))
        .collect()
}

/// Sends a message in process, as `messages.create` does after its checks (no rate limit: the
/// tests that send many messages are about delivery, not the `messages` bucket).
async fn send(app: &TestApp, user: &TestUser, sid: &str, cid: &str, text: &str) -> String {
    use alterego::entities::messages::MessageSendPayload;
    use alterego::events::Conversation;
    use alterego::functions::ids::{ChannelId, SpaceId, UserId};
    let uuid = |s: &str| uuid::Uuid::parse_str(s).unwrap();
    let payload = MessageSendPayload {
        content: text.to_string(),
        attachments: Vec::new(),
    };
    let conn = app.state.db.acquire().await.expect("pool");
    let outlets = alterego::services::messages::Outlets {
        push: None,
        ..app.state.outlets()
    };
    let m = alterego::services::messages::send(
        outlets,
        conn,
        UserId(uuid(&user.id)),
        ChannelId(uuid(cid)),
        Conversation::Space(SpaceId(uuid(sid))),
        &payload,
        None,
    )
    .await
    .expect("send");
    m.id.to_string()
}

/// Denies VIEW_CHANNEL to `@everyone` on a channel (role id = the `@everyone` role).
async fn hide_from_everyone(app: &TestApp, owner: &TestUser, sid: &str, cid: &str) {
    let roles = app.get(&format!("/spaces/{sid}/roles/"), Some(&owner.access)).await;
    let everyone = roles
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "@everyone")
        .map(id)
        .unwrap();
    set_override(app, owner, sid, cid, Target::Role(&everyone), 0, 4096).await;
}

async fn allow_member(app: &TestApp, owner: &TestUser, sid: &str, cid: &str, user: &TestUser) {
    set_override(app, owner, sid, cid, Target::Member(&user.id), 4096, 0).await;
}

/// The message ids of `messages.onCreate` events logged by a client.
fn created(c: &WsClient) -> Vec<String> {
    c.events("messages.onCreate").iter().map(|f| id(&f.data)).collect()
}

// ----- §7.1–7.4: connection, envelope, commands ------------------------------------------

#[tokio::test]
async fn ready_ping_and_ignored_commands() {
    let app = TestApp::spawn().await;
    let alice = app.register("Alice").await;
    let mut c = app.ws_open("").await;
    let ready = c.authenticate(&alice.access).await;
    assert_eq!(ready.data["heartbeatIntervalMs"], 30_000);
    assert_eq!(ready.data["resumeWindowMs"], 120_000);
    assert_eq!(ready.data["user"]["id"], alice.id);
    assert_eq!(ready.data["user"]["name"], "Alice");
    let sid = ready.data["sessionId"].as_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(sid).unwrap().get_version_num(), 7);

    // `pong` echoes the data, carries no seq, and goes to this connection only.
    let mut other = app.ws_auth(&alice).await;
    c.send_json(json!({"op": "ping", "data": {"message": "héllo"}})).await;
    let pong = c.expect("pong").await;
    assert_eq!(pong.data, json!({"message": "héllo"}));
    assert_eq!(pong.seq, None);
    other.silent(QUIET).await;

    // Unknown ops, invalid data, and auth commands once active are ignored; the socket stays.
    for frame in [
        json!({"op": "nope", "data": 1}),
        json!({"op": "typing.start", "data": {"channelId": "not-a-uuid"}}),
        json!({"op": "ping", "data": "not an object"}),
        json!({"op": "authenticate", "data": {"token": "garbage"}}),
        json!({"op": "resume", "data": {}}),
    ] {
        c.send_json(frame).await;
    }
    c.send_json(json!({"op": "ping", "data": {"message": "still here"}}))
        .await;
    assert_eq!(c.expect("pong").await.data["message"], "still here");

    // Events carry seq from 1.
    app.patch("/users/me", Some(&alice.access), json!({"name": "Alicia"}))
        .await
        .expect(200, None);
    let ev = c.expect("users.onUpdate").await;
    assert_eq!(ev.seq, Some(1));
    assert_eq!(ev.data["name"], "Alicia");
    assert_eq!(other.expect("users.onUpdate").await.seq, Some(1));
}

#[tokio::test]
async fn legacy_token_query() {
    let app = TestApp::spawn().await;
    let alice = app.register("Alice").await;
    let mut c = app.ws_open(&format!("?token={}", alice.access)).await;
    let ready = c.expect("ready").await;
    assert_eq!(ready.data["user"]["id"], alice.id);
    let mut bad = app.ws_open("?token=nope").await;
    assert_eq!(bad.closed(LONG).await, Some(4004));
}

#[tokio::test]
async fn authentication_failures_and_decode_errors() {
    let app = TestApp::builder()
        .config(|c| c.ws_auth_timeout = Duration::from_millis(500))
        .spawn()
        .await;
    let alice = app.register("Alice").await;

    let mut c = app.ws_open("").await;
    c.send_json(json!({"op": "authenticate", "data": {"token": "bad"}}))
        .await;
    assert_eq!(c.closed(LONG).await, Some(4004), "invalid token");

    let mut c = app.ws_open("").await;
    c.send_json(json!({"op": "authenticate", "data": {}})).await;
    assert_eq!(c.closed(LONG).await, Some(4004), "missing token");

    let mut c = app.ws_open("").await;
    c.send_json(json!({"op": "ping", "data": {"message": "x"}})).await;
    assert_eq!(
        c.closed(LONG).await,
        Some(4003),
        "a first frame that is not authenticate"
    );

    let mut c = app.ws_open("").await;
    assert_eq!(c.closed(LONG).await, Some(4003), "the deadline");

    let mut c = app.ws_open("").await;
    c.send_text("not json").await;
    assert_eq!(c.closed(LONG).await, Some(4002));

    let mut c = app.ws_auth(&alice).await;
    c.send_text("[1,2]").await;
    assert_eq!(c.closed(LONG).await, Some(4002), "not an object");

    let mut c = app.ws_auth(&alice).await;
    c.send_json(json!({"data": {}})).await;
    assert_eq!(c.closed(LONG).await, Some(4002), "no op");

    let mut c = app.ws_auth(&alice).await;
    c.send_binary(vec![1, 2, 3]).await;
    assert_eq!(c.closed(LONG).await, Some(4002), "binary");

    // A logged-out session's token is refused.
    app.post("/account/logout", Some(&alice.access), json!({}))
        .await
        .expect(200, None);
    let mut c = app.ws_open("").await;
    c.send_json(json!({"op": "authenticate", "data": {"token": alice.access}}))
        .await;
    assert_eq!(c.closed(LONG).await, Some(4004), "revoked session");
}

#[tokio::test]
async fn frame_size_and_command_rate_limits() {
    let app = TestApp::spawn().await;
    let alice = app.register("Alice").await;

    // Exactly 8 KiB is accepted (and ignored: unknown op); one byte more closes with 1009.
    let mut c = app.ws_auth(&alice).await;
    let pad = |len: usize| {
        let base = json!({"op": "x", "data": ""}).to_string();
        json!({"op": "x", "data": "a".repeat(len - base.len())}).to_string()
    };
    c.send_text(&pad(8192)).await;
    c.send_json(json!({"op": "ping", "data": {"message": "ok"}})).await;
    c.expect("pong").await;
    c.send_text(&pad(8193)).await;
    assert_eq!(c.closed(LONG).await, Some(1009));

    // 120 commands per 60 s; the 121st closes with 4008 (the two above were on another socket).
    let mut c = app.ws_auth(&alice).await;
    for i in 0..120 {
        c.send_json(json!({"op": "ping", "data": {"message": i.to_string()}}))
            .await;
    }
    for _ in 0..120 {
        c.expect("pong").await;
    }
    c.send_json(json!({"op": "ping", "data": {"message": "one too many"}}))
        .await;
    assert_eq!(c.closed(LONG).await, Some(4008));
}

#[tokio::test]
async fn heartbeat_pings_and_dead_connections_close_4009() {
    let app = TestApp::builder()
        .config(|c| c.ws_heartbeat_interval = Duration::from_millis(200))
        .spawn()
        .await;
    let alice = app.register("Alice").await;
    let mut c = app.ws_auth(&alice).await;
    // A client that reads answers the server's Pings (tungstenite does it) and stays.
    let start = tokio::time::Instant::now();
    while start.elapsed() < Duration::from_millis(1200) {
        match c.read(Duration::from_millis(100)).await {
            Read::Closed(code) => panic!("closed ({code:?}) although alive"),
            _ => continue,
        }
    }
    // One that stops reading (so never answers) is dead after 2.5 intervals.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(c.closed(LONG).await, Some(4009));
}

// ----- §7.5, §7.7: who receives what -------------------------------------------------------

#[tokio::test]
async fn space_event_matrix() {
    let app = TestApp::spawn().await;
    let owner = app.register("Owner").await;
    let insider = app.register("Insider").await; // may see the secret channel
    let member = app.register("Member").await; // may not
    let kicked = app.register("Kicked").await;
    let outsider = app.register("Outsider").await;
    let (sid, general) = space(&app, &owner, &[&insider, &member, &kicked]).await;
    let secret = channel(&app, &owner, &sid, "secret").await;
    hide_from_everyone(&app, &owner, &sid, &secret).await;
    allow_member(&app, &owner, &sid, &secret, &insider).await;

    let mut o = app.ws_auth(&owner).await;
    let mut i = app.ws_auth(&insider).await;
    let mut m = app.ws_auth(&member).await;
    let mut k = app.ws_auth(&kicked).await;
    let mut x = app.ws_auth(&outsider).await;

    // A message in general reaches every member, the sender included.
    let hello = say(&app, &owner, &sid, &general, "hello").await;
    for c in [&mut o, &mut i, &mut m, &mut k] {
        let f = c.expect("messages.onCreate").await;
        assert_eq!(id(&f.data), hello);
    }
    // A message in the secret channel reaches only those who can view it.
    let psst = say(&app, &insider, &sid, &secret, "psst").await;
    for c in [&mut o, &mut i] {
        assert_eq!(id(&c.expect("messages.onCreate").await.data), psst);
    }
    app.patch(
        &format!("/spaces/{sid}/channels/{secret}/messages/{psst}"),
        Some(&insider.access),
        json!({"content": "psst!"}),
    )
    .await
    .expect(200, None);
    for c in [&mut o, &mut i] {
        c.expect("messages.onUpdate").await;
    }
    app.patch(
        &format!("/spaces/{sid}/channels/{secret}"),
        Some(&owner.access),
        json!({"name": "secret2"}),
    )
    .await
    .expect(200, None);
    for c in [&mut o, &mut i] {
        c.expect("channels.onUpdate").await;
    }
    // Typing: sender included, hidden channel hidden.
    i.send_json(json!({"op": "typing.start", "data": {"channelId": secret}}))
        .await;
    for c in [&mut o, &mut i] {
        let t = c.expect("typing.onUpdate").await;
        assert_eq!(t.data, json!({"channelId": secret, "userId": insider.id}));
    }
    // A member without VIEW_CHANNEL cannot type there (ignored), and nothing leaked to them.
    m.send_json(json!({"op": "typing.start", "data": {"channelId": secret}}))
        .await;
    let next = say(&app, &owner, &sid, &general, "sentinel 1").await;
    for c in [&mut m, &mut k] {
        let (f, skipped) = c.until("messages.onCreate").await;
        assert_eq!(id(&f.data), next);
        assert!(skipped.is_empty(), "leaked: {skipped:?}");
    }
    for c in [&mut o, &mut i] {
        let (f, skipped) = c.until("messages.onCreate").await;
        assert_eq!(id(&f.data), next);
        assert!(skipped.is_empty(), "unexpected: {skipped:?}");
    }

    // spaces.onUpdate: channels filtered per recipient.
    app.patch(
        &format!("/spaces/{sid}"),
        Some(&owner.access),
        json!({"name": "Renamed"}),
    )
    .await
    .expect(200, None);
    for (c, sees_secret) in [(&mut o, true), (&mut i, true), (&mut m, false), (&mut k, false)] {
        let f = c.expect("spaces.onUpdate").await;
        assert_eq!(f.data["name"], "Renamed");
        let names: Vec<&str> = f.data["channels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names.contains(&"secret2"), sees_secret, "{names:?}");
        assert!(names.contains(&"general"));
    }

    // Roles and members events reach every member.
    app.post(
        &format!("/spaces/{sid}/roles/"),
        Some(&owner.access),
        json!({"name": "Mods"}),
    )
    .await
    .expect(200, None);
    for c in [&mut o, &mut i, &mut m, &mut k] {
        c.expect("roles.onCreate").await;
    }

    // Kick: the kicked user gets spaces.onDelete, then nothing more of the space.
    app.delete(&format!("/spaces/{sid}/members/{}", kicked.id), Some(&owner.access))
        .await
        .expect(200, None);
    let f = k.expect("spaces.onDelete").await;
    assert_eq!(f.data["id"], sid);
    for c in [&mut o, &mut i, &mut m] {
        let f = c.expect("members.onDelete").await;
        assert_eq!(f.data["userId"], kicked.id);
    }
    let after = say(&app, &owner, &sid, &general, "after the kick").await;
    for c in [&mut o, &mut i, &mut m] {
        assert_eq!(id(&c.expect("messages.onCreate").await.data), after);
    }
    app.patch(&format!("/spaces/{sid}"), Some(&owner.access), json!({"name": "Again"}))
        .await
        .expect(200, None);
    k.silent(QUIET).await;

    // A visibility change: hiding general from the member sends them channels.onDelete, and
    // its messages stop at once.
    hide_from_everyone(&app, &owner, &sid, &general).await;
    let f = m.until("channels.onDelete").await.0;
    assert_eq!(id(&f.data), general);
    let hidden = say(&app, &owner, &sid, &general, "now hidden").await;
    let (f, _) = o.until("messages.onCreate").await;
    assert_eq!(id(&f.data), hidden);
    // Channel deletion reaches those who could view it (the owner), not the member.
    app.delete(&format!("/spaces/{sid}/channels/{general}"), Some(&owner.access))
        .await
        .expect(200, None);
    assert_eq!(id(&o.until("channels.onDelete").await.0.data), general);
    let rest = m.drain(QUIET).await;
    assert!(
        rest.iter()
            .all(|f| f.op == "spaces.onUpdate" || f.op == "channels.onDelete" && id(&f.data) != general),
        "{rest:?}"
    );
    assert!(!created(&m).contains(&hidden));

    // The outsider saw none of it, and everyone's seq is gapless (checked on every read).
    x.silent(QUIET).await;
    assert!(x.log.iter().all(|f| f.op == "ready"), "{:?}", x.log);

    // Space deletion reaches every remaining member with their own channel list.
    app.delete(&format!("/spaces/{sid}"), Some(&owner.access))
        .await
        .expect(200, None);
    for c in [&mut o, &mut i, &mut m] {
        let f = c.until("spaces.onDelete").await.0;
        assert_eq!(f.data["id"], sid);
    }
    k.silent(QUIET).await;
}

#[tokio::test]
async fn joining_subscribes_and_profiles_reach_the_audience() {
    let app = TestApp::spawn().await;
    let owner = app.register("Owner").await;
    let joiner = app.register("Joiner").await;
    let stranger = app.register("Stranger").await;
    let (sid, general) = space(&app, &owner, &[]).await;
    let mut o = app.ws_auth(&owner).await;
    let mut j = app.ws_auth(&joiner).await;
    let mut s = app.ws_auth(&stranger).await;

    let invite = app
        .post(&format!("/spaces/{sid}/invites/"), Some(&owner.access), json!({}))
        .await;
    app.post(
        &format!("/spaces/join/{}", id(&invite.body)),
        Some(&joiner.access),
        json!({}),
    )
    .await
    .expect(200, None);
    let f = j.expect("spaces.onCreate").await;
    assert_eq!(f.data["id"], sid);
    assert_eq!(o.expect("members.onCreate").await.data["userId"], joiner.id);
    // The joiner's session is subscribed now: the space's events reach it.
    let msg = say(&app, &owner, &sid, &general, "welcome").await;
    assert_eq!(id(&j.until("messages.onCreate").await.0.data), msg);
    assert_eq!(id(&o.expect("messages.onCreate").await.data), msg);

    // users.onUpdate reaches the user and co-members, not strangers.
    app.patch("/users/me", Some(&joiner.access), json!({"name": "J"}))
        .await
        .expect(200, None);
    assert_eq!(j.until("users.onUpdate").await.0.data["name"], "J");
    assert_eq!(o.until("users.onUpdate").await.0.data["name"], "J");
    // ... exactly once, although it also produces members.onUpdate in the space.
    let rest = o.drain(QUIET).await;
    assert!(rest.iter().all(|f| f.op == "members.onUpdate"), "{rest:?}");
    s.silent(QUIET).await;

    // A friend request puts the stranger in the joiner's profile audience.
    app.post(
        &format!("/relations/{}/request", stranger.id),
        Some(&joiner.access),
        json!({}),
    )
    .await
    .expect(200, None);
    s.expect("relations.onCreate").await;
    j.until("relations.onCreate").await;
    app.patch("/users/me", Some(&joiner.access), json!({"name": "Jo"}))
        .await
        .expect(200, None);
    assert_eq!(s.expect("users.onUpdate").await.data["name"], "Jo");

    // Leaving: the leaver stops receiving the space at once.
    app.delete(&format!("/spaces/{sid}/leave"), Some(&joiner.access))
        .await
        .expect(200, None);
    j.until("spaces.onDelete").await;
    say(&app, &owner, &sid, &general, "gone").await;
    o.until("messages.onCreate").await;
    j.silent(QUIET).await;
}

#[tokio::test]
async fn dm_events_reach_exactly_the_participants() {
    let app = TestApp::spawn().await;
    let a = app.register("A").await;
    let b = app.register("B").await;
    let c = app.register("C").await;
    let (_, _) = space(&app, &a, &[&b, &c]).await;
    let mut ca = app.ws_auth(&a).await;
    let mut cb = app.ws_auth(&b).await;
    let mut cc = app.ws_auth(&c).await;
    let dm = befriend(&app, &a, &b).await;
    let m = app
        .post(
            &format!("/dm/{dm}/messages/"),
            Some(&a.access),
            json!({"content": "hi"}),
        )
        .await;
    m.expect(200, None);
    for client in [&mut ca, &mut cb] {
        let (f, skipped) = client.until("messages.onCreate").await;
        assert_eq!(id(&f.data), id(&m.body));
        assert!(skipped.iter().all(|f| f.op.starts_with("relations.")), "{skipped:?}");
    }
    // DM typing reaches both participants.
    cb.send_json(json!({"op": "typing.start", "data": {"channelId": dm}}))
        .await;
    for client in [&mut ca, &mut cb] {
        let t = client.expect("typing.onUpdate").await;
        assert_eq!(t.data["userId"], b.id);
    }
    // A second typing.start within 2 s is dropped (the throttle).
    cb.send_json(json!({"op": "typing.start", "data": {"channelId": dm}}))
        .await;
    // Not a participant: ignored.
    cc.send_json(json!({"op": "typing.start", "data": {"channelId": dm}}))
        .await;
    ca.silent(QUIET).await;
    cc.silent(QUIET).await;
    assert!(
        cc.log.iter().all(|f| f.op == "ready" || f.op == "presence.onUpdate"),
        "{:?}",
        cc.log
    );
}

// ----- §7.6, §6.2: sessions, resume, revocation -----------------------------------------------

#[tokio::test]
async fn resume_after_abrupt_disconnect_loses_and_duplicates_nothing() {
    let app = TestApp::spawn().await;
    let owner = app.register("Owner").await;
    let reader = app.register("Reader").await;
    let (sid, general) = space(&app, &owner, &[&reader]).await;
    let mut c = app.ws_auth(&reader).await;
    let session = c.session_id.clone().unwrap();
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(send(&app, &owner, &sid, &general, &format!("before {i}")).await);
    }
    for _ in 0..3 {
        c.expect("messages.onCreate").await;
    }
    let processed = c.seq;
    let seen = created(&c);
    c.kill();
    for i in 0..5 {
        sent.push(send(&app, &owner, &sid, &general, &format!("during {i}")).await);
    }
    let mut c2 = app.ws_open("").await;
    let (replayed, resumed) = c2.resume(&reader.access, &session, processed).await;
    assert_eq!(resumed.op, "resumed", "{resumed:?}");
    assert_eq!(resumed.data["sessionId"], session);
    assert_eq!(resumed.data["replayed"], 7);
    assert_eq!(replayed.first().and_then(|f| f.seq), Some(processed + 1));
    for i in 0..3 {
        sent.push(send(&app, &owner, &sid, &general, &format!("after {i}")).await);
    }
    for _ in 0..3 {
        c2.expect("messages.onCreate").await;
    }
    let mut all = seen;
    all.extend(created(&c2));
    assert_eq!(all, sent, "every message exactly once, in order");
}

/// A `PUBLISH` that timed out may have reached Redis all the same, and is retried with the same
/// bytes: sockets must get the event once (under overload this once repeated a message to every
/// member of a large space).
#[tokio::test]
async fn an_event_published_twice_is_delivered_once() {
    use alterego::functions::bus::{Topic, encode};
    let app = TestApp::spawn().await;
    let owner = app.register("Owner").await;
    let reader = app.register("Reader").await;
    let (sid, general) = space(&app, &owner, &[&reader]).await;
    let mut c = app.ws_auth(&reader).await;
    let first = say(&app, &owner, &sid, &general, "original").await;
    let original = c.expect("messages.onCreate").await;
    let payload = encode("messages.onCreate", &original.data).unwrap();
    let topic = Topic::space(uuid::Uuid::parse_str(&sid).unwrap());
    app.state.bus.publish_raw(&topic, payload.clone()).await;
    app.state.bus.publish_raw(&topic, payload).await;
    let marker = say(&app, &owner, &sid, &general, "marker").await;
    while created(&c).last() != Some(&marker) {
        c.expect("messages.onCreate").await;
    }
    assert_eq!(
        created(&c),
        vec![first.clone(), first, marker],
        "the repeat was dropped"
    );
}

#[tokio::test]
async fn resume_failures_and_replacement() {
    let app = TestApp::builder()
        .config(|c| c.ws_resume_window = Duration::from_millis(1500))
        .spawn()
        .await;
    let alice = app.register("Alice").await;
    let bob = app.register("Bob").await;
    let mut c = app.ws_auth(&alice).await;
    let session = c.session_id.clone().unwrap();
    app.patch("/users/me", Some(&alice.access), json!({"name": "A1"}))
        .await
        .expect(200, None);
    c.expect("users.onUpdate").await;

    // Resuming an attached session replaces its connection (4011).
    let mut c2 = app.ws_open("").await;
    let replayed = c2.resumed(&alice.access, &session, 0).await;
    assert_eq!(replayed.len(), 1);
    assert_eq!(c.closed(LONG).await, Some(4011));

    // invalidSession, then the same socket may authenticate.
    let mut c3 = app.ws_open("").await;
    let (_, r) = c3.resume(&alice.access, &session, 5).await;
    assert_eq!(r.data["reason"], "seq_out_of_range");
    let (_, r) = c3.resume(&bob.access, &session, 0).await;
    assert_eq!(r.data["reason"], "user_mismatch");
    let (_, r) = c3.resume(&alice.access, &uuid::Uuid::now_v7().to_string(), 0).await;
    assert_eq!(r.data["reason"], "unknown");
    c3.authenticate(&alice.access).await;
    let mut bad = app.ws_open("").await;
    bad.send_json(json!({"op": "resume", "data": {"token": "bad", "sessionId": session, "seq": 0}}))
        .await;
    assert_eq!(bad.closed(LONG).await, Some(4004));

    // A client close with 1000 ends the session.
    c2.close(1000).await;
    let mut c4 = app.ws_open("").await;
    let (_, r) = c4.resume(&alice.access, &session, 1).await;
    assert_eq!(r.op, "invalidSession");

    // A detached session expires after the resume window.
    let session3 = c3.session_id.clone().unwrap();
    c3.kill();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, r) = c4.resume(&alice.access, &session3, 0).await;
    assert_eq!(r.op, "invalidSession");
}

#[tokio::test]
async fn revoked_sessions_are_closed_with_4006() {
    let app = TestApp::spawn().await;
    let alice = app.register("Alice").await;
    let mut c = app.ws_auth(&alice).await;
    let mut other = app.ws_auth(&alice).await;
    let session = c.session_id.clone().unwrap();
    app.post("/account/logout", Some(&alice.access), json!({}))
        .await
        .expect(200, None);
    assert_eq!(c.closed(LONG).await, Some(4006));
    assert_eq!(other.closed(LONG).await, Some(4006));
    // The session is gone, not resumable.
    let login = app
        .post(
            "/account/login",
            None,
            json!({"email": alice.email, "password": alice.password}),
        )
        .await;
    let token = login.body["accessToken"].as_str().unwrap().to_string();
    let mut c2 = app.ws_open("").await;
    let (_, r) = c2.resume(&token, &session, 0).await;
    assert_eq!(r.op, "invalidSession");
}

#[tokio::test]
async fn slow_consumers_are_closed_with_4010_and_can_resume() {
    use alterego::functions::bus::Topic;
    use alterego::functions::ids::UserId;
    // The in-process bus: tens of MiB through Redis pub/sub would only test Redis's buffers.
    let app = TestApp::builder().without_redis().spawn().await;
    let alice = app.register("Alice").await;
    let bob = app.register("Bob").await;
    let mut slow = app.ws_auth(&alice).await;
    let mut fast = app.ws_auth(&bob).await;
    let session = slow.session_id.clone().unwrap();
    let alice_topic = Topic::user(UserId(uuid::Uuid::parse_str(&alice.id).unwrap()));
    let bob_topic = Topic::user(UserId(uuid::Uuid::parse_str(&bob.id).unwrap()));
    // Events of an op the gateway delivers to a user's own sessions without reading its data.
    let op = alterego::events::Op::UnreadUpdated.name();
    // 64 KiB events until the server gives up on the socket (the kernel's buffers absorb
    // tens of MiB first, then the 4 MiB queue overflows); the client reads nothing meanwhile.
    let blob = "x".repeat(64 * 1024);
    let sid = uuid::Uuid::parse_str(&session).unwrap();
    let mut published = 0u64;
    while app.state.gateway.is_attached(sid) == Some(true) {
        assert!(published < 5000, "never overflowed");
        app.state
            .bus
            .publish(&alice_topic, op, &json!({"i": published, "blob": blob}))
            .await;
        app.state.bus.publish(&bob_topic, op, &json!({"i": published})).await;
        published += 1;
        tokio::task::yield_now().await;
    }
    // A few more while detached: they are kept for the resume.
    for _ in 0..5 {
        app.state
            .bus
            .publish(&alice_topic, op, &json!({"i": published, "blob": "y"}))
            .await;
        published += 1;
    }
    // The other socket is not held up.
    let mut small = 0;
    while small < published - 5 {
        fast.expect(op).await;
        small += 1;
    }
    assert_eq!(slow.closed(Duration::from_secs(30)).await, Some(4010));
    let got = slow.seq;
    assert!(got < published, "the client cannot have had everything: {got}");
    // The session stayed: a resume replays what the socket never delivered.
    let mut again = app.ws_open("").await;
    let replayed = again.resumed(&alice.access, &session, got).await;
    assert_eq!(replayed.len() as u64, published - got);
    assert_eq!(replayed.last().unwrap().data["i"], published - 1);
}

// ----- §8: several instances, bus loss, shutdown ----------------------------------------------

#[tokio::test]
async fn two_instances_share_events_and_hand_sessions_over() {
    let app = TestApp::spawn().await;
    let peer = app.spawn_peer().await;
    assert_ne!(app.state.gateway.instance_id(), peer.state.gateway.instance_id());
    let alice = app.register("Alice").await;
    let bob = app.register("Bob").await;
    let (sid, general) = space(&app, &alice, &[&bob]).await;
    let mut a = app.ws_auth(&alice).await;
    let mut b = peer.ws_auth(&bob).await;

    // A write on either instance reaches sockets on both.
    let m1 = say(&app, &alice, &sid, &general, "from the first").await;
    let m2 = say(&peer, &bob, &sid, &general, "from the second").await;
    for c in [&mut a, &mut b] {
        assert_eq!(id(&c.expect("messages.onCreate").await.data), m1);
        assert_eq!(id(&c.expect("messages.onCreate").await.data), m2);
    }

    // Alice's socket on the first instance dies; she resumes on the second (take-over).
    let session = a.session_id.clone().unwrap();
    let seen = a.seq;
    a.kill();
    let mut sent = Vec::new();
    for i in 0..4 {
        sent.push(send(&app, &bob, &sid, &general, &format!("meanwhile {i}")).await);
    }
    let mut a2 = peer.ws_open("").await;
    let (replayed, resumed) = a2.resume(&alice.access, &session, seen).await;
    assert_eq!(resumed.op, "resumed", "{resumed:?}");
    assert_eq!(resumed.data["replayed"], 4);
    assert_eq!(ids(&replayed), sent);
    assert_eq!(
        app.state.gateway.is_attached(uuid::Uuid::parse_str(&session).unwrap()),
        None
    );
    let m3 = send(&app, &bob, &sid, &general, "after the move").await;
    assert_eq!(id(&a2.expect("messages.onCreate").await.data), m3);
    a2.silent(QUIET).await;

    // Taking over an attached session closes its old connection with 4011.
    let bob_session = b.session_id.clone().unwrap();
    let bob_seq = b.seq;
    let mut b2 = app.ws_open("").await;
    b2.resumed(&bob.access, &bob_session, bob_seq).await;
    assert_eq!(b.closed(LONG).await, Some(4011));
    let m4 = say(&peer, &alice, &sid, &general, "still flowing").await;
    assert_eq!(id(&b2.until("messages.onCreate").await.0.data), m4);
    assert_eq!(id(&a2.expect("messages.onCreate").await.data), m4);

    // Presence is shared: both are ONLINE from either instance.
    for server in [&app, &peer] {
        let r = server
            .get(
                &format!("/users/presence?ids={},{}", alice.id, bob.id),
                Some(&alice.access),
            )
            .await;
        r.expect(200, None);
        assert_eq!(r.body[0]["status"], "ONLINE", "{}", r.text);
        assert_eq!(r.body[1]["status"], "ONLINE", "{}", r.text);
    }
}

#[tokio::test]
async fn a_silent_owner_means_invalid_session() {
    let app = TestApp::spawn().await;
    let alice = app.register("Alice").await;
    // A registry entry whose owner instance is gone (crashed): nobody answers the take-over.
    let session = uuid::Uuid::now_v7();
    let mut redis = redis::Client::open(crate::common::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let key = format!("{}:ws:session:{session}", app.state.config.redis_prefix);
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("user")
        .arg(&alice.id)
        .arg("auth")
        .arg("")
        .arg("instance")
        .arg(uuid::Uuid::now_v7().to_string())
        .arg("state")
        .arg("detached")
        .query_async(&mut redis)
        .await
        .unwrap();
    let mut c = app.ws_open("").await;
    let start = std::time::Instant::now();
    let (_, r) = c.resume(&alice.access, &session.to_string(), 0).await;
    assert_eq!(r.op, "invalidSession");
    assert!(start.elapsed() >= Duration::from_secs(2), "{:?}", start.elapsed());
    c.authenticate(&alice.access).await;
}

#[tokio::test]
async fn a_lost_bus_connection_means_resync_never_silent_loss() {
    let redis = crate::common::redis::PrivateRedis::start().await;
    let app = TestApp::builder().redis_at(&redis.url).spawn().await;
    let owner = app.register("Owner").await;
    let reader = app.register("Reader").await;
    let (sid, general) = space(&app, &owner, &[&reader]).await;
    let mut c = app.ws_auth(&reader).await;
    let session = c.session_id.clone().unwrap();
    let m1 = send(&app, &owner, &sid, &general, "before").await;
    assert_eq!(id(&c.expect("messages.onCreate").await.data), m1);
    let before_gap = c.seq;

    // Kill the subscriber connection (and only pub/sub connections) of this Redis.
    let mut admin = redis::Client::open(redis.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(killed, 1, "one subscriber connection per process");
    let r = c.expect("resync").await;
    assert_eq!(r.data["reason"], "bus_reconnected");
    assert_eq!(r.seq, None);
    // Delivery continues after the re-subscription; the socket stayed open.
    let m2 = send(&app, &owner, &sid, &general, "after").await;
    assert_eq!(id(&c.expect("messages.onCreate").await.data), m2);
    // The replay buffer was cut at the gap: resuming from before it is refused.
    c.kill();
    let mut c2 = app.ws_open("").await;
    let (_, r) = c2.resume(&reader.access, &session, before_gap - 1).await;
    assert_eq!(r.data["reason"], "seq_out_of_range");
    // From the gap on, the resume replays the resync first.
    let replayed = c2.resumed(&reader.access, &session, before_gap).await;
    let ops: Vec<&str> = replayed.iter().map(|f| f.op.as_str()).collect();
    assert_eq!(ops, ["resync", "messages.onCreate"]);
}

#[tokio::test]
async fn graceful_shutdown_closes_1001_and_sessions_move() {
    let app = TestApp::spawn().await;
    let mut peer = app.spawn_peer().await;
    let owner = app.register("Owner").await;
    let alice = app.register("Alice").await;
    let (sid, general) = space(&app, &owner, &[&alice]).await;
    let mut a = peer.ws_auth(&alice).await;
    let session = a.session_id.clone().unwrap();
    let m1 = send(&app, &owner, &sid, &general, "one").await;
    assert_eq!(id(&a.expect("messages.onCreate").await.data), m1);
    peer.begin_shutdown();
    assert_eq!(a.closed(LONG).await, Some(1001));
    assert!(peer.state.is_draining());
    let m2 = send(&app, &owner, &sid, &general, "two").await;
    // The draining instance still hands its sessions over.
    let mut a2 = app.ws_open("").await;
    let replayed = a2.resumed(&alice.access, &session, a.seq).await;
    assert_eq!(ids(&replayed), [m2]);
}

// ----- §12.8: presence --------------------------------------------------------------------

#[tokio::test]
async fn presence_with_debounce() {
    let app = TestApp::builder()
        .config(|c| c.presence_offline_debounce = Duration::from_millis(600))
        .spawn()
        .await;
    let alice = app.register("Alice").await;
    let bob = app.register("Bob").await;
    let carol = app.register("Carol").await;
    space(&app, &alice, &[&bob]).await;
    let mut a = app.ws_auth(&alice).await;
    a.hide_presence = false;
    let presence = |ids: String| {
        let (app, token) = (&app, alice.access.clone());
        async move {
            let r = app.get(&format!("/users/presence?ids={ids}"), Some(&token)).await;
            r.expect(200, None);
            r.body
        }
    };
    assert_eq!(
        presence(format!("{},{}", bob.id, carol.id)).await,
        json!([{"userId": bob.id, "status": "OFFLINE"}]),
        "Carol is not in Alice's profile audience"
    );
    let mut b = app.ws_auth(&bob).await;
    b.hide_presence = false;
    let f = a.expect("presence.onUpdate").await;
    assert_eq!(f.data, json!({"userId": bob.id, "status": "ONLINE"}));
    assert_eq!(presence(bob.id.clone()).await[0]["status"], "ONLINE");
    // Bob's own sessions never get his presence.
    assert!(b.events("presence.onUpdate").iter().all(|f| f.data["userId"] != bob.id));
    // A reconnect within the debounce is not a transition.
    b.kill();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let b2 = app.ws_auth(&bob).await;
    a.silent(Duration::from_millis(1000)).await;
    // Gone for longer than the debounce: OFFLINE.
    b2.kill();
    let f = a.expect("presence.onUpdate").await;
    assert_eq!(f.data, json!({"userId": bob.id, "status": "OFFLINE"}));
    assert_eq!(presence(bob.id.clone()).await[0]["status"], "OFFLINE");
    // Alice's self-query works.
    assert_eq!(presence(alice.id.clone()).await[0]["status"], "ONLINE");
    // Validation.
    for bad in ["", "nope", &vec![bob.id.clone(); 101].join(",")] {
        app.get(&format!("/users/presence?ids={bad}"), Some(&alice.access))
            .await
            .expect(400, Some("InvalidQuery"));
    }
    let many: Vec<String> = (0..101).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    app.get(&format!("/users/presence?ids={}", many.join(",")), Some(&alice.access))
        .await
        .expect(400, Some("InvalidQuery"));
    app.get("/users/presence?ids=x", None).await.expect(401, None);
}

/// `PRESENCE_SPACE_LIMIT`: a space above it does not carry presence (every connect would reach
/// every member); a smaller shared space still does.
#[tokio::test]
async fn presence_skips_spaces_above_the_limit() {
    let app = TestApp::builder()
        .config(|c| {
            c.presence_offline_debounce = Duration::from_millis(400);
            c.presence_space_limit = 2;
        })
        .spawn()
        .await;
    let alice = app.register("Alice").await;
    let bob = app.register("Bob").await;
    let carol = app.register("Carol").await;
    space(&app, &alice, &[&bob, &carol]).await;
    let mut a = app.ws_auth(&alice).await;
    a.hide_presence = false;
    let b = app.ws_auth(&bob).await;
    a.silent(Duration::from_millis(800)).await;
    // A two-member space shared with Bob carries his next transition.
    space(&app, &alice, &[&bob]).await;
    a.drain(Duration::from_millis(300)).await;
    b.kill();
    let f = a.expect("presence.onUpdate").await;
    assert_eq!(f.data, json!({"userId": bob.id, "status": "OFFLINE"}));
}

#[tokio::test]
async fn metrics_cover_the_gateway() {
    let app = TestApp::spawn().await;
    let alice = app.register("Alice").await;
    let mut c = app.ws_auth(&alice).await;
    app.patch("/users/me", Some(&alice.access), json!({"name": "A"}))
        .await
        .expect(200, None);
    c.expect("users.onUpdate").await;
    let mut bad = app.ws_open("").await;
    let (_, r) = bad.resume(&alice.access, &uuid::Uuid::now_v7().to_string(), 0).await;
    assert_eq!(r.op, "invalidSession");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let text = app.get("/metrics", None).await.text;
    for name in [
        "alterego_ws_connections",
        "alterego_ws_sessions{state=\"attached\"}",
        "alterego_ws_sessions{state=\"detached\"}",
        "alterego_events_published_total",
        "alterego_events_delivered_total",
        "alterego_ws_resumes_total{result=\"failed\"}",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }
}

// ----- the chaos test -------------------------------------------------------------------------

/// What one chaos reader ended with.
struct ChaosOutcome {
    got: std::collections::HashSet<String>,
    told: bool,
    resumes: u32,
    moved: u32,
    /// (instance, seq resumed from, frames replayed, when) of each resume.
    history: Vec<(usize, u64, usize, std::time::Instant)>,
}

/// Reads messages while killing its own socket at random and resuming on a random instance.
async fn chaos_reader(
    servers: [std::sync::Arc<TestApp>; 2],
    user: TestUser,
    (mut at, mut client): (usize, WsClient),
    seed: u64,
    total: usize,
    mut done: tokio::sync::watch::Receiver<bool>,
) -> ChaosOutcome {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = ChaosOutcome {
        got: Default::default(),
        told: false,
        resumes: 0,
        moved: 0,
        history: Vec::new(),
    };
    let take = |out: &mut ChaosOutcome, f: &crate::common::ws::Frame| match f.op.as_str() {
        "messages.onCreate" => {
            let id = id(&f.data);
            assert!(out.got.insert(id.clone()), "{} got {id} twice", user.name);
        }
        "resync" | "invalidSession" => out.told = true,
        _ => {}
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(100);
    loop {
        if *done.borrow_and_update() && (out.got.len() == total || out.told) {
            return out;
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!("{} stalled at {}; resumes: {:?}", user.name, out.got.len(), out.history);
            return out;
        }
        let kill = match client.read(Duration::from_millis(100)).await {
            Read::Frame(f) => {
                take(&mut out, &f);
                rng.random_ratio(1, 120)
            }
            Read::Timeout => false,
            Read::Closed(code) => {
                assert!(matches!(code, Some(4010) | None), "closed with {code:?}");
                true
            }
        };
        if !kill {
            continue;
        }
        let (session, seq) = (client.session_id.clone().unwrap(), client.seq);
        client.kill();
        if rng.random_ratio(1, 3) {
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..60))).await;
        }
        let next = rng.random_range(0..2usize);
        if next != at {
            out.moved += 1;
        }
        at = next;
        let mut fresh = servers[at].ws_open("").await;
        let (replayed, r) = fresh.resume(&user.access, &session, seq).await;
        out.history.push((at, seq, replayed.len(), std::time::Instant::now()));
        for f in &replayed {
            take(&mut out, f);
        }
        take(&mut out, &r);
        if r.op == "invalidSession" {
            fresh.authenticate(&user.access).await;
        } else {
            out.resumes += 1;
        }
        client = fresh;
    }
}

/// 2,000 messages while readers' sockets are killed at random and resume, half the time on
/// the other instance: every reader ends with every message exactly once, or was told
/// `invalidSession`/`resync`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_every_message_exactly_once_or_told() {
    const TOTAL: usize = 2000;
    const CHANNELS: usize = 4;
    let app = std::sync::Arc::new(TestApp::spawn().await);
    let peer = std::sync::Arc::new(app.spawn_peer().await);
    let owner = app.register("Owner").await;
    let second = app.register("Second").await;
    let mut readers = Vec::new();
    for i in 0..6 {
        readers.push(app.register(&format!("Reader {i}")).await);
    }
    let mut members: Vec<&TestUser> = readers.iter().collect();
    members.push(&second);
    let (sid, general) = space(&app, &owner, &members).await;
    let mut channels = vec![general];
    for i in 1..CHANNELS {
        channels.push(channel(&app, &owner, &sid, &format!("c{i}")).await);
    }
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for (i, user) in readers.into_iter().enumerate() {
        let servers = [app.clone(), peer.clone()];
        // Connected (`ready`) before the first message: events from then on must all arrive.
        let at = i % 2;
        let client = servers[at].ws_auth(&user).await;
        let seed = 7 + i as u64;
        tasks.push(tokio::spawn(chaos_reader(
            servers,
            user,
            (at, client),
            seed,
            TOTAL,
            done_rx.clone(),
        )));
    }
    let start = std::time::Instant::now();
    let mut senders = Vec::new();
    for (i, cid) in channels.iter().enumerate() {
        let (app, sid, cid) = (app.clone(), sid.clone(), cid.clone());
        let author = if i % 2 == 0 { &owner } else { &second };
        let author = TestUser {
            id: author.id.clone(),
            email: author.email.clone(),
            name: author.name.clone(),
            password: author.password.clone(),
            access: author.access.clone(),
            refresh: author.refresh.clone(),
        };
        senders.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in 0..TOTAL / CHANNELS {
                ids.push(send(&app, &author, &sid, &cid, &format!("{i}:{n}")).await);
            }
            ids
        }));
    }
    let mut all = std::collections::HashSet::new();
    let mut order = Vec::new();
    for s in senders {
        let ids = s.await.unwrap();
        order.push(ids.clone());
        all.extend(ids);
    }
    assert_eq!(all.len(), TOTAL);
    let sent_in = start.elapsed();
    done_tx.send(true).unwrap();
    let (mut complete, mut resumes, mut moved) = (0, 0, 0);
    for t in tasks {
        let out = t.await.unwrap();
        assert!(out.got.is_subset(&all));
        if !out.told && out.got.len() != TOTAL {
            for (c, ids) in order.iter().enumerate() {
                let missing: Vec<usize> = ids
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| !out.got.contains(*m))
                    .map(|(i, _)| i)
                    .collect();
                eprintln!("channel {c}: missing {missing:?}");
            }
        }
        if !out.told {
            assert_eq!(out.got.len(), TOTAL, "silent loss");
            complete += 1;
        }
        resumes += out.resumes;
        moved += out.moved;
    }
    println!(
        "chaos: {TOTAL} messages in {sent_in:?}, {resumes} resumes ({moved} across instances), \
         {complete}/6 readers complete without being told, total {:?}",
        start.elapsed()
    );
    assert!(resumes >= 20, "too few resumes to mean anything: {resumes}");
    assert!(moved >= 5, "too few take-overs: {moved}");
    assert!(
        complete >= 1,
        "every reader was told to resync: the test proves nothing"
    );
}

#[tokio::test]
async fn upgrades_count_against_ws_connect() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let app = TestApp::spawn().await;
    let connect = || async {
        let mut req = format!("ws://{}/ws", app.addr).into_client_request().unwrap();
        req.headers_mut()
            .insert("x-forwarded-for", "10.77.0.1".parse().unwrap());
        tokio_tungstenite::connect_async(req).await
    };
    for _ in 0..30 {
        let (ws, _) = connect().await.expect("within the bucket");
        drop(ws);
    }
    match connect().await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), 429);
            assert_eq!(res.headers()["x-ratelimit-bucket"], "ws-connect");
        }
        other => panic!("expected 429, got {other:?}"),
    }
    // A plain GET is not an upgrade; the REST bucket layer does not apply to /ws.
    let r = app.get("/ws", None).await;
    r.expect(400, Some("ValidationFailed"));
    assert!(r.header("x-ratelimit-bucket").is_none());
}

/// `/api.json` documents the gateway (spec §4.19): Mikoto's `websocket` key, NEW ops included,
/// every schema resolvable.
#[tokio::test]
async fn the_api_document_describes_the_websocket() {
    let app = TestApp::builder().without_redis().spawn().await;
    let doc = app.get("/api.json", None).await.body;
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mikoto-api.json");
    let mikoto: Value = serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    let ws = &doc["websocket"];
    for kind in ["commands", "events"] {
        for (op, schema) in mikoto["websocket"][kind].as_object().unwrap() {
            assert!(ws[kind].get(op).is_some(), "{kind} {op} missing");
            assert_eq!(&ws[kind][op], schema, "{kind} {op}");
        }
    }
    for (kind, op) in [
        ("commands", "authenticate"),
        ("commands", "resume"),
        ("events", "ready"),
        ("events", "resumed"),
        ("events", "invalidSession"),
        ("events", "resync"),
        ("events", "presence.onUpdate"),
        ("events", "unreads.onUpdate"),
    ] {
        assert!(ws[kind].get(op).is_some(), "{kind} {op} missing");
    }
    for kind in ["commands", "events"] {
        for (op, schema) in ws[kind].as_object().unwrap() {
            if let Some(r) = schema["$ref"].as_str() {
                let name = r.strip_prefix("#/components/schemas/").unwrap();
                assert!(doc["components"]["schemas"].get(name).is_some(), "{op}: {r} unresolved");
            }
        }
    }
}

/// A socket's `authenticate` costs at most two queries on an instance that has never seen the
/// user: one for the session and the user, one for the user's spaces and relations. A second
/// socket of the same user costs one (the session is cached, the user's state is loaded).
#[tokio::test]
async fn a_connect_costs_at_most_two_queries() {
    let logs = crate::common::logs::Logs::capture_queries();
    let app = TestApp::spawn().await;
    let alice = app.register("Alice").await;
    let bob = app.register("Bob").await;
    space(&app, &alice, &[&bob]).await;
    befriend(&app, &alice, &bob).await;
    let peer = app.spawn_peer().await;
    // Alice's connect also loads the space's view on this instance (once per space).
    let _a = peer.ws_auth(&alice).await;
    logs.take_queries();
    // Background jobs (the clean-ups each instance runs at start, in their own transactions)
    // may land in a window; a connect's own statements are plain reads.
    let connect = |lines: Vec<String>| -> Vec<String> {
        let background = [
            "summary=\"BEGIN",
            "summary=\"COMMIT",
            "summary=\"ROLLBACK",
            "summary=\"DELETE",
        ];
        lines
            .into_iter()
            .filter(|l| !background.iter().any(|b| l.contains(b)))
            .collect()
    };

    let _b1 = peer.ws_auth(&bob).await;
    let cold = connect(logs.take_queries());
    assert_eq!(cold.len(), 2, "first connect: {cold:#?}");
    let _b2 = peer.ws_auth(&bob).await;
    let warm = connect(logs.take_queries());
    assert_eq!(warm.len(), 1, "second connect: {warm:#?}");
}

/// A lone instance that stops (graceful) has nobody to hand its sessions to: it parks them in
/// Redis, and the next instance resumes them with the frames the client had not read — nothing
/// lost across the restart. A client too far behind, or on another user's token, does not.
#[tokio::test]
async fn a_lone_instance_restart_keeps_sessions_resumable() {
    let mut app = TestApp::spawn().await;
    let owner = app.register("Owner").await;
    let alice = app.register("Alice").await;
    let bob = app.register("Bob").await;
    let (sid, general) = space(&app, &owner, &[&alice, &bob]).await;
    let mut a = app.ws_auth(&alice).await;
    let mut b = app.ws_auth(&bob).await;
    let m1 = send(&app, &owner, &sid, &general, "read before the stop").await;
    assert_eq!(id(&a.expect("messages.onCreate").await.data), m1);
    assert_eq!(id(&b.expect("messages.onCreate").await.data), m1);
    let seen = a.seq;
    // Sent before the stop but not read by Alice's client: it must be replayed.
    let m2 = send(&app, &owner, &sid, &general, "unread at the stop").await;
    assert_eq!(id(&b.expect("messages.onCreate").await.data), m2);
    let (alice_session, bob_session) = (a.session_id.clone().unwrap(), b.session_id.clone().unwrap());
    let bob_seen = b.seq;

    app.begin_shutdown();
    assert!(app.stopped(LONG).await, "the instance did not stop");
    let next = app.spawn_peer().await;
    // The new instance adopted the parked sessions before serving its first request: a message
    // sent (over HTTP) before the clients come back is kept for them too.
    let gap = say(&next, &owner, &sid, &general, "before they resume").await;
    // Delivery is still authorized for adopted sessions: Bob, removed meanwhile, gets nothing more.
    next.delete(&format!("/spaces/{sid}/members/{}", bob.id), Some(&owner.access))
        .await
        .expect(200, None);
    let secret = say(&next, &owner, &sid, &general, "after Bob left").await;

    // Bob's token cannot take Alice's session; Alice's can, with the unread frame replayed.
    let mut wrong = next.ws_open("").await;
    let (_, r) = wrong.resume(&bob.access, &alice_session, seen).await;
    assert_eq!(r.op, "invalidSession", "{r:?}");
    let mut a2 = next.ws_open("").await;
    let replayed = a2.resumed(&alice.access, &alice_session, seen).await;
    assert_eq!(replayed_messages(&replayed), [m2, gap.clone(), secret.clone()]);
    let mut b2 = next.ws_open("").await;
    let replayed = b2.resumed(&bob.access, &bob_session, bob_seen).await;
    assert_eq!(replayed_messages(&replayed), [gap]);

    // Alice is live on the new instance, Bob hears nothing of the space; a parked session
    // resumes once only.
    let m3 = send(&next, &owner, &sid, &general, "after the restart").await;
    assert_eq!(id(&a2.expect("messages.onCreate").await.data), m3);
    b2.silent(QUIET).await;
    let last = a2.seq;
    a2.kill();
    let mut again = next.ws_open("").await;
    // The session lives on the new instance now.
    again.resumed(&alice.access, &alice_session, last).await;
}

/// An instance whose drain time runs out while others are alive parks the sessions nobody took
/// over; a resume on a running instance then takes the parked session from Redis.
#[tokio::test]
async fn a_session_left_at_the_end_of_a_drain_is_parked_and_resumable() {
    let app = TestApp::builder()
        .config(|c| c.shutdown_drain = Duration::from_millis(300))
        .spawn()
        .await;
    let mut peer = app.spawn_peer().await;
    let owner = app.register("Owner").await;
    let alice = app.register("Alice").await;
    let (sid, general) = space(&app, &owner, &[&alice]).await;
    let mut a = peer.ws_auth(&alice).await;
    let session = a.session_id.clone().unwrap();
    let m1 = send(&app, &owner, &sid, &general, "read").await;
    assert_eq!(id(&a.expect("messages.onCreate").await.data), m1);
    let seen = a.seq;
    let m2 = send(&app, &owner, &sid, &general, "unread").await;
    peer.begin_shutdown();
    assert!(peer.stopped(LONG).await, "the peer did not stop");
    let mut a2 = app.ws_open("").await;
    let replayed = a2.resumed(&alice.access, &session, seen).await;
    assert_eq!(ids(&replayed), [m2]);
    let m3 = send(&app, &owner, &sid, &general, "after").await;
    assert_eq!(id(&a2.expect("messages.onCreate").await.data), m3);
}
