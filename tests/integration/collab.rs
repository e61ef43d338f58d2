//! Documents and the `/collab` socket (spec §4.12, §9): the REST snapshot and bootstrap claim,
//! authorization before the upgrade, hostile frames, persistence and compaction. The tests
//! with Mikoto's real client library (y-websocket 2.x) are in `collab_client`.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

use crate::common::fixtures::{Target, channel, id, set_override, space};
use crate::common::{TestApp, TestUser};

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A DOCUMENT channel in `sid`; returns its id.
pub async fn document(app: &TestApp, owner: &TestUser, sid: &str) -> String {
    let r = app
        .post(
            &format!("/spaces/{sid}/channels/"),
            Some(&owner.access),
            json!({"name": "Notes", "type": "DOCUMENT"}),
        )
        .await;
    r.expect(200, None);
    id(&r.body)
}

async fn open(app: &TestApp, cid: &str, token: &str) -> Socket {
    let url = format!("ws://{}/collab/{cid}?token={token}", app.addr);
    let (socket, _) = tokio_tungstenite::connect_async(url).await.expect("collab upgrade");
    socket
}

/// The next binary frame (panics on anything else within 5 s).
async fn next_binary(socket: &mut Socket) -> Vec<u8> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
            Ok(Some(Ok(Ws::Binary(b)))) => return b.to_vec(),
            Ok(Some(Ok(Ws::Ping(_) | Ws::Pong(_)))) => continue,
            other => panic!("expected a binary frame, got {other:?}"),
        }
    }
}

/// The close code the server sends within 5 s.
async fn close_code(socket: &mut Socket) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Ok(Some(Ok(Ws::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_)) | None) => return None,
            Err(_) => panic!("the server did not close within 5 s"),
        }
    }
}

fn update_frame(update: Vec<u8>) -> Vec<u8> {
    yrs::sync::Message::Sync(yrs::sync::SyncMessage::Update(update)).encode_v1()
}

/// A Y update inserting `text` at the start of the "content" text of a fresh document.
fn insert(client: u64, text: &str) -> Vec<u8> {
    let doc = Doc::with_client_id(client);
    let t = doc.get_or_insert_text("content");
    t.insert(&mut doc.transact_mut(), 0, text);
    doc.transact().encode_state_as_update_v1(&StateVector::default())
}

/// The text a socket's room holds: SyncStep1 with an empty state vector, read SyncStep2.
async fn room_text(socket: &mut Socket) -> String {
    let step1 = yrs::sync::Message::Sync(yrs::sync::SyncMessage::SyncStep1(StateVector::default())).encode_v1();
    socket.send(Ws::Binary(step1.into())).await.unwrap();
    loop {
        let frame = next_binary(socket).await;
        if let Ok(yrs::sync::Message::Sync(yrs::sync::SyncMessage::SyncStep2(update))) =
            yrs::sync::Message::decode_v1(&frame)
        {
            let doc = Doc::new();
            let t = doc.get_or_insert_text("content");
            doc.transact_mut()
                .apply_update(Update::decode_v1(&update).unwrap())
                .unwrap();
            return t.get_string(&doc.transact());
        }
    }
}

#[tokio::test]
async fn documents_snapshot_rules_events_and_media_claims() {
    let app = TestApp::spawn().await;
    let owner = app.register("Owner").await;
    let reader = app.register("Reader").await;
    let outsider = app.register("Outsider").await;
    let (sid, general) = space(&app, &owner, &[&reader]).await;
    let cid = document(&app, &owner, &sid).await;
    set_override(&app, &owner, &sid, &cid, Target::Member(&reader.id), 0, 1 << 13).await;
    let path = format!("/spaces/{sid}/channels/{cid}/documents/");

    let doc = app.get(&path, Some(&reader.access)).await;
    doc.expect(200, None);
    assert_eq!(
        (doc.body["channelId"].as_str(), doc.body["content"].as_str()),
        (Some(cid.as_str()), Some(""))
    );
    app.get(
        &format!("/spaces/{sid}/channels/{general}/documents/"),
        Some(&owner.access),
    )
    .await
    .expect(404, Some("NotFound"));
    app.get(&path, Some(&outsider.access))
        .await
        .expect(404, Some("NotFound"));
    app.patch(&path, Some(&reader.access), json!({"content": "mine"}))
        .await
        .expect(403, Some("InsufficientPermissions"));
    app.patch(&path, Some(&owner.access), json!({"content": "x".repeat(262_145)}))
        .await
        .expect(400, Some("ValidationFailed"));

    let upload = app
        .upload(
            "attachment",
            Some(&owner.access),
            "notes.txt",
            "text/plain",
            b"hello".to_vec(),
        )
        .await;
    upload.expect(200, None);
    let key = upload.body["url"].as_str().unwrap().to_string();
    let mut reader_ws = app.ws_auth(&reader).await;
    let mut outsider_ws = app.ws_auth(&outsider).await;
    let content = format!("# Notes\n\n![file]({}/{key})", app.state.config.media_public_url);
    let saved = app.patch(&path, Some(&owner.access), json!({"content": content})).await;
    saved.expect(200, None);
    assert_eq!(saved.body["content"], content.as_str());
    let (updated, _) = reader_ws.until("channels.onUpdate").await;
    assert_eq!(updated.data["id"], cid.as_str());
    assert!(updated.data["lastUpdated"].is_string());
    for frame in outsider_ws.drain(Duration::from_millis(300)).await {
        assert!(!frame.data.to_string().contains(&cid), "an outsider saw {frame:?}");
    }
    let claimed: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT claimed_at FROM media_objects WHERE key = $1")
            .bind(&key)
            .fetch_one(app.db())
            .await
            .unwrap();
    assert!(claimed.is_some(), "the embedded attachment is claimed");
    // null leaves the snapshot as it is.
    let same = app.patch(&path, Some(&owner.access), json!({"content": null})).await;
    assert_eq!(same.body["content"], content.as_str());
}

#[tokio::test]
async fn bootstrap_is_claimed_once_by_a_writer_and_never_after_state_exists() {
    let app = TestApp::spawn().await;
    let owner = app.register("Owner").await;
    let reader = app.register("Reader").await;
    let (sid, _) = space(&app, &owner, &[&reader]).await;
    let cid = document(&app, &owner, &sid).await;
    set_override(&app, &owner, &sid, &cid, Target::Member(&reader.id), 0, 1 << 13).await;
    let claim = |who: &TestUser| {
        let path = format!("/spaces/{sid}/channels/{cid}/documents/claim-bootstrap");
        let token = who.access.clone();
        let app = &app;
        async move { app.post(&path, Some(&token), json!({})).await.body["shouldBootstrap"].clone() }
    };
    assert_eq!(claim(&reader).await, false, "a reader never bootstraps");
    assert_eq!(claim(&owner).await, true);
    assert_eq!(claim(&owner).await, false, "the claim is held for 30 s");

    // Once Y state is persisted, no one bootstraps again (a new channel, so no claim is held).
    let cid2 = document(&app, &owner, &sid).await;
    let mut socket = open(&app, &cid2, &owner.access).await;
    next_binary(&mut socket).await;
    socket
        .send(Ws::Binary(update_frame(insert(7, "seed")).into()))
        .await
        .unwrap();
    assert_eq!(room_text(&mut socket).await, "seed");
    let path = format!("/spaces/{sid}/channels/{cid2}/documents/claim-bootstrap");
    let r = app.post(&path, Some(&owner.access), json!({})).await;
    assert_eq!(r.body["shouldBootstrap"], false);
}

#[tokio::test]
async fn the_upgrade_is_authorized_first_with_json_errors() {
    let app = TestApp::spawn().await;
    let owner = app.register("Owner").await;
    let outsider = app.register("Outsider").await;
    let (sid, general) = space(&app, &owner, &[]).await;
    let cid = document(&app, &owner, &sid).await;
    let dm_friend = app.register("Friend").await;
    let dm = crate::common::fixtures::befriend(&app, &owner, &dm_friend).await;
    let cases: Vec<(String, u16, &str)> = vec![
        (format!("/collab/{cid}"), 401, "Unauthorized"),
        (format!("/collab/{cid}?token=nope"), 401, "InvalidToken"),
        (
            format!("/collab/not-a-uuid?token={}", owner.access),
            400,
            "InvalidPathParameter",
        ),
        (format!("/collab/{general}?token={}", owner.access), 404, "NotFound"),
        (format!("/collab/{dm}?token={}", owner.access), 404, "NotFound"),
        (
            format!("/collab/{}?token={}", uuid::Uuid::now_v7(), owner.access),
            404,
            "NotFound",
        ),
        (format!("/collab/{cid}?token={}", outsider.access), 404, "NotFound"),
    ];
    for (path, status, code) in cases {
        let url = format!("ws://{}{path}", app.addr);
        match tokio_tungstenite::connect_async(url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
                assert_eq!(res.status().as_u16(), status, "{path}");
                let body: Value =
                    serde_json::from_slice(res.body().as_deref().unwrap_or_default()).expect("JSON error");
                assert_eq!(body["code"], code, "{path}");
            }
            other => panic!("{path}: expected an HTTP refusal, got {other:?}"),
        }
    }
    let _ = sid;
}

#[tokio::test]
async fn hostile_frames_close_cleanly() {
    let app = TestApp::spawn().await;
    let owner = app.register("Owner").await;
    let (sid, _) = space(&app, &owner, &[]).await;
    let cid = document(&app, &owner, &sid).await;

    let mut s = open(&app, &cid, &owner.access).await;
    s.send(Ws::Text("hello".into())).await.unwrap();
    assert_eq!(close_code(&mut s).await, Some(1003));

    // The server refuses the frame from its header, while the client is still writing it: read
    // concurrently, as a browser does, to see the close frame before the connection drops.
    let (mut sink, mut stream) = open(&app, &cid, &owner.access).await.split();
    let writer = tokio::spawn(async move {
        let _ = sink.send(Ws::Binary(vec![0u8; 8 * 1024 * 1024 + 1].into())).await;
    });
    let mut code = None;
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
        if let Ws::Close(frame) = msg {
            code = frame.map(|f| u16::from(f.code));
            break;
        }
    }
    writer.abort();
    assert_eq!(code, Some(1009));

    for garbage in [vec![0, 9, 1], vec![0, 2, 200], vec![0xff; 12], vec![1, 5, 1, 2]] {
        let mut s = open(&app, &cid, &owner.access).await;
        s.send(Ws::Binary(garbage.clone().into())).await.unwrap();
        assert_eq!(close_code(&mut s).await, Some(1002), "{garbage:?}");
    }

    let mut s = open(&app, &cid, &owner.access).await;
    let query = yrs::sync::Message::AwarenessQuery.encode_v1();
    let mut code = None;
    for _ in 0..1300 {
        if s.send(Ws::Binary(query.clone().into())).await.is_err() {
            break;
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, s.next()).await {
        if let Ok(Ws::Close(frame)) = msg {
            code = frame.map(|f| f.code);
            break;
        }
    }
    assert_eq!(code, Some(CloseCode::from(4008)));

    // The server still serves the room.
    let mut s = open(&app, &cid, &owner.access).await;
    assert_eq!(next_binary(&mut s).await[..2], [0, 0], "SyncStep1 first");
}

/// A reader's update is refused with `read-only` and reaches no one; a writer's is persisted
/// before anyone else sees it, survives a restart, and compaction folds rows without loss.
#[tokio::test]
async fn updates_are_persisted_compacted_and_refused_for_readers() {
    let app = TestApp::spawn().await;
    let owner = app.register("Owner").await;
    let reader = app.register("Reader").await;
    let (sid, _) = space(&app, &owner, &[&reader]).await;
    let cid = document(&app, &owner, &sid).await;
    set_override(&app, &owner, &sid, &cid, Target::Member(&reader.id), 0, 1 << 13).await;

    let mut w = open(&app, &cid, &owner.access).await;
    let mut r = open(&app, &cid, &reader.access).await;
    next_binary(&mut w).await;
    next_binary(&mut r).await;
    r.send(Ws::Binary(update_frame(insert(11, "reader")).into()))
        .await
        .unwrap();
    let denied = next_binary(&mut r).await;
    assert_eq!(
        yrs::sync::Message::decode_v1(&denied).unwrap(),
        yrs::sync::Message::Auth(Some("read-only".into()))
    );
    w.send(Ws::Binary(update_frame(insert(12, "writer")).into()))
        .await
        .unwrap();
    let seen = next_binary(&mut r).await;
    assert!(matches!(
        yrs::sync::Message::decode_v1(&seen),
        Ok(yrs::sync::Message::Sync(yrs::sync::SyncMessage::Update(_)))
    ));
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM document_updates WHERE channel_id = $1::uuid")
        .bind(&cid)
        .fetch_one(app.db())
        .await
        .unwrap();
    assert_eq!(rows, 1, "only the writer's update is stored");

    // 600 more updates: compaction folds them (more than 500 pending).
    let doc = Doc::with_client_id(99);
    let text = doc.get_or_insert_text("content");
    for i in 0..600u32 {
        let before = doc.transact().state_vector();
        text.insert(&mut doc.transact_mut(), 0, if i % 2 == 0 { "a" } else { "b" });
        let update = doc.transact().encode_state_as_update_v1(&before);
        w.send(Ws::Binary(update_frame(update).into())).await.unwrap();
    }
    let expected = {
        let mut s = text.get_string(&doc.transact());
        s.push_str("writer");
        s
    };
    // The server handles a socket's frames in order: the answer to this SyncStep1 comes after
    // all 600 updates were persisted and applied (and a client that vanishes without waiting
    // could lose frames still in flight, as with any TCP peer).
    assert_eq!(room_text(&mut w).await.len(), expected.len());
    let mut folded = false;
    for _ in 0..100 {
        let (rows, snapshot): (i64, bool) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM document_updates WHERE channel_id = $1::uuid), \
                    (SELECT y_state IS NOT NULL FROM documents WHERE channel_id = $1::uuid)",
        )
        .bind(&cid)
        .fetch_one(app.db())
        .await
        .unwrap();
        if snapshot && rows < 500 {
            folded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(folded, "compaction did not run");
    drop((w, r));

    // A fresh server on the same database: the whole text, from snapshot + later rows.
    let fresh = app.spawn_peer().await;
    let mut s = open(&fresh, &cid, &owner.access).await;
    next_binary(&mut s).await;
    let text = room_text(&mut s).await;
    assert_eq!(text.len(), expected.len());
    assert!(text.contains("writer") && text.matches(['a', 'b']).count() == 600);
}

/// Kicking a member closes its collab socket with 4013; revoking its session with 4006;
/// deleting the channel closes everyone with 4013, and its stored state goes with it.
#[tokio::test]
async fn access_changes_and_revocation_close_collab_sockets() {
    let app = TestApp::spawn().await;
    let owner = app.register("Owner").await;
    let kicked = app.register("Kicked").await;
    let revoked = app.register("Revoked").await;
    let (sid, _) = space(&app, &owner, &[&kicked, &revoked]).await;
    let cid = document(&app, &owner, &sid).await;
    let mut k = open(&app, &cid, &kicked.access).await;
    let mut v = open(&app, &cid, &revoked.access).await;
    let mut o = open(&app, &cid, &owner.access).await;
    for s in [&mut k, &mut v, &mut o] {
        next_binary(s).await;
    }
    o.send(Ws::Binary(update_frame(insert(5, "x")).into())).await.unwrap();
    app.delete(&format!("/spaces/{sid}/members/{}", kicked.id), Some(&owner.access))
        .await
        .expect(200, None);
    assert_eq!(close_code(&mut k).await, Some(4013));
    app.post("/account/logout", Some(&revoked.access), json!({}))
        .await
        .expect(200, None);
    assert_eq!(close_code(&mut v).await, Some(4006));
    // Hiding the channel from a member closes them too.
    let hidden = channel(&app, &owner, &sid, "plain").await;
    let _ = hidden;
    app.delete(&format!("/spaces/{sid}/channels/{cid}"), Some(&owner.access))
        .await
        .expect(200, None);
    assert_eq!(close_code(&mut o).await, Some(4013));
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM document_updates WHERE channel_id = $1::uuid")
        .bind(&cid)
        .fetch_one(app.db())
        .await
        .unwrap();
    assert_eq!(rows, 0, "a deleted channel's document state is deleted");
}
