//! `/collab` driven by the real client: y-websocket 2.x's `WebsocketProvider` and yjs 13 from
//! npm (tests/node/collab-client.mjs), as Mikoto's web client opens documents.

use std::time::Duration;

use serde_json::json;

use crate::collab::document;
use crate::common::TestApp;
use crate::common::collab::CollabNode;
use crate::common::fixtures::{Target, set_override, space};

fn base(app: &TestApp) -> String {
    format!("ws://{}", app.addr)
}

#[tokio::test]
async fn concurrent_editors_converge_readers_cannot_write_and_awareness_reaches_everyone() {
    let app = TestApp::spawn().await;
    let owner = app.register("Owner").await;
    let writer = app.register("Writer").await;
    let reader = app.register("Reader").await;
    let (sid, _) = space(&app, &owner, &[&writer, &reader]).await;
    let cid = document(&app, &owner, &sid).await;
    set_override(&app, &owner, &sid, &cid, Target::Member(&reader.id), 0, 1 << 13).await;

    let mut node = CollabNode::start().await;
    for (name, user) in [("a", &owner), ("b", &writer), ("r", &reader)] {
        let opened = node.open(name, &base(&app), &cid, &user.access).await;
        assert_eq!(opened["ok"], true, "{name}: {opened}");
    }
    // Interleaved inserts and deletes from two writers, without waiting for each other.
    node.insert("a", 0, "hello").await;
    node.insert("b", 0, "world").await;
    node.insert("a", 0, ">>").await;
    node.delete("b", 0, 2).await;
    node.insert("b", 1, "!").await;
    node.insert("a", 3, "-").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let a = node.text("a").await;
    assert!(node.wait_text("b", &a).await, "b diverged from a ({a})");
    assert!(node.wait_text("r", &a).await, "the reader did not follow");
    assert_eq!(a.chars().count(), "hello".len() + "world".len() + 2 + 1 + 1 - 2);

    // The reader types locally; the server refuses it, so the others never see it.
    node.insert("r", 0, "READER").await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!node.text("a").await.contains("READER"));
    assert!(!node.text("b").await.contains("READER"));

    // Awareness: each peer sees the others (and itself).
    node.set_awareness("a", json!({"user": {"name": "A"}})).await;
    node.set_awareness("b", json!({"user": {"name": "B"}})).await;
    node.set_awareness("r", json!({"user": {"name": "R"}})).await;
    let ok = node.wait_peers("a", 3).await;
    assert!(ok, "a sees {}", node.peers("a").await);
    let ok = node.wait_peers("b", 3).await;
    assert!(ok, "b sees {}", node.peers("b").await);
    let seen = node.peers("b").await.to_string();
    assert!(seen.contains("\"A\"") && seen.contains("\"B\""), "{seen}");
    // A peer that leaves disappears from the others' awareness.
    node.close("a").await;
    assert!(node.wait_peers_exact("b", 2).await);
}

#[tokio::test]
async fn documents_survive_a_restart_including_after_compaction() {
    let mut app = TestApp::spawn().await;
    let owner = app.register("Owner").await;
    let (sid, _) = space(&app, &owner, &[]).await;
    let cid = document(&app, &owner, &sid).await;
    let mut node = CollabNode::start().await;
    node.open("a", &base(&app), &cid, &owner.access).await;
    let mut expected = String::new();
    for i in 0..650 {
        let piece = format!("{}", i % 10);
        node.insert("a", expected.len(), &piece).await;
        expected.push_str(&piece);
    }
    // Compaction ran (more than 500 updates), and the rest is stored as rows.
    let mut compacted = false;
    for _ in 0..100 {
        let snapshot: Option<bool> =
            sqlx::query_scalar("SELECT y_state IS NOT NULL FROM documents WHERE channel_id = $1::uuid")
                .bind(&cid)
                .fetch_optional(app.db())
                .await
                .unwrap();
        if snapshot == Some(true) {
            compacted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(compacted, "no compaction after 650 updates");
    node.close("a").await;

    // The server stops; another starts on the same database: the document is whole.
    app.begin_shutdown();
    let fresh = app.spawn_peer().await;
    let opened = node.open("b", &base(&fresh), &cid, &owner.access).await;
    assert_eq!(opened["ok"], true, "{opened}");
    assert!(
        node.wait_text("b", &expected).await,
        "text after restart: {}",
        node.text("b").await
    );
}

#[tokio::test]
async fn two_instances_share_a_room_both_ways_and_a_late_joiner_gets_everything() {
    let app = TestApp::spawn().await;
    let peer = app.spawn_peer().await;
    let owner = app.register("Owner").await;
    let (sid, _) = space(&app, &owner, &[]).await;
    let cid = document(&app, &owner, &sid).await;
    let mut node = CollabNode::start().await;
    node.open("one", &base(&app), &cid, &owner.access).await;
    node.open("two", &base(&peer), &cid, &owner.access).await;
    node.insert("one", 0, "from one. ").await;
    assert!(node.wait_text("two", "from one. ").await);
    node.insert("two", 10, "from two.").await;
    assert!(node.wait_text("one", "from one. from two.").await);
    // Awareness crosses instances too.
    node.set_awareness("one", json!({"user": "one"})).await;
    node.set_awareness("two", json!({"user": "two"})).await;
    assert!(node.wait_peers("one", 2).await && node.wait_peers("two", 2).await);
    // Updates were stored once, by the instance that received them.
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM document_updates WHERE channel_id = $1::uuid")
        .bind(&cid)
        .fetch_one(app.db())
        .await
        .unwrap();
    assert_eq!(rows, 2, "each update persisted exactly once");
    // A client joining the second instance later gets the whole state.
    node.open("late", &base(&peer), &cid, &owner.access).await;
    assert!(node.wait_text("late", "from one. from two.").await);
}

#[tokio::test]
async fn the_real_client_is_closed_on_kick_and_on_revocation() {
    let app = TestApp::spawn().await;
    let owner = app.register("Owner").await;
    let kicked = app.register("Kicked").await;
    let revoked = app.register("Revoked").await;
    let (sid, _) = space(&app, &owner, &[&kicked, &revoked]).await;
    let cid = document(&app, &owner, &sid).await;
    let mut node = CollabNode::start().await;
    node.open("k", &base(&app), &cid, &kicked.access).await;
    node.open("v", &base(&app), &cid, &revoked.access).await;
    app.delete(&format!("/spaces/{sid}/members/{}", kicked.id), Some(&owner.access))
        .await
        .expect(200, None);
    assert_eq!(node.next_close("k", Duration::from_secs(5)).await, Some(4013));
    app.post("/account/logout", Some(&revoked.access), json!({}))
        .await
        .expect(200, None);
    assert_eq!(node.next_close("v", Duration::from_secs(5)).await, Some(4006));
    // Reconnecting is refused before the upgrade.
    let again = node
        .open_with("k2", &base(&app), &cid, Some(&kicked.access), false)
        .await;
    assert_eq!(again["ok"], false, "{again}");
}
