//! The community model over HTTP (spec §4.8–§4.16): shapes, rules, limits, cascades, events.

use std::time::Duration;

use crate::common::fixtures::{
    Target, assign_role, channel, create_space, ranked_role, role, set_override, space, space_topic, user_topic,
};
use crate::common::{Capture, Captured, TestApp, TestUser};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(2);
const QUIET: Duration = Duration::from_millis(300);

async fn next(cap: &mut Capture) -> Captured {
    cap.next(WAIT).await.expect("an event")
}

#[tokio::test]
async fn space_creation_shape_and_events() {
    let app = TestApp::spawn().await;
    let alice = app.register("Alice").await;
    let mut mine = app.capture(&[user_topic(&alice.id)]).await;
    let space = create_space(&app, &alice, "  Team  ").await;
    assert_eq!(space["name"], "Team");
    assert_eq!(space["memberCount"], 1);
    assert_eq!(space["ownerId"], alice.id);
    assert_eq!(space["type"], "NONE");
    assert!(space["visibility"].is_null() && space["icon"].is_null() && space["handle"].is_null());
    let roles = space["roles"].as_array().unwrap();
    assert_eq!(roles.len(), 1);
    assert_eq!(roles[0]["name"], "@everyone");
    assert_eq!(roles[0]["permissions"], "28672");
    assert_eq!(roles[0]["position"], -1);
    let channels = space["channels"].as_array().unwrap();
    assert_eq!(channels.len(), 1);
    assert_eq!(channels[0]["name"], "general");
    assert_eq!(channels[0]["type"], "TEXT");
    assert_eq!(channels[0]["order"], 0);
    assert!(channels[0]["lastUpdated"].is_null());
    let ev = Capture::expect_op(Some(next(&mut mine).await), "spaces.onCreate");
    assert_eq!(ev.data, space);
    // Listing shows it, in join order.
    let second = create_space(&app, &alice, "Second").await;
    let list = app.get("/spaces", Some(&alice.access)).await;
    let ids: Vec<&str> = list
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [space["id"].as_str().unwrap(), second["id"].as_str().unwrap()]);
}

#[tokio::test]
async fn join_events_are_ordered_and_scoped() {
    let app = TestApp::spawn().await;
    let (alice, bob) = (app.register("Alice").await, app.register("Bob").await);
    let (sid, _) = space(&app, &alice, &[]).await;
    let mut bobs = app.capture(&[user_topic(&bob.id)]).await;
    let mut space = app.capture(&[space_topic(&sid)]).await;
    let mut both = app.capture(&[user_topic(&bob.id), space_topic(&sid)]).await;
    let invite = app
        .post(&format!("/spaces/{sid}/invites/"), Some(&alice.access), json!({}))
        .await;
    let code = invite.body["id"].as_str().unwrap();
    let joined = app
        .post(&format!("/spaces/join/{code}"), Some(&bob.access), json!({}))
        .await;
    joined.expect(200, None);
    assert_eq!(joined.body["memberCount"], 2);
    let ev = Capture::expect_op(Some(next(&mut bobs).await), "spaces.onCreate");
    assert_eq!(ev.data["id"], sid);
    let ev = Capture::expect_op(Some(next(&mut space).await), "members.onCreate");
    assert_eq!(ev.data["userId"], bob.id);
    assert_eq!(ev.data["user"]["name"], "Bob");
    // spaces.onCreate to the joiner comes before members.onCreate to the space (spec §7.5).
    let first = next(&mut both).await;
    assert_eq!(first.op, "spaces.onCreate");
    assert_eq!(first.topic, user_topic(&bob.id));
    let second = next(&mut both).await;
    assert_eq!(second.op, "members.onCreate");
    assert_eq!(second.topic, space_topic(&sid));
    // Joining twice is a conflict, not a 500 (Mikoto defect).
    app.post(&format!("/spaces/join/{code}"), Some(&bob.access), json!({}))
        .await
        .expect(409, Some("AlreadyMember"));
}

#[tokio::test]
async fn kick_ban_and_leave_notify_the_removed_user() {
    let app = TestApp::spawn().await;
    let (alice, bob, carol, dave) = (
        app.register("Alice").await,
        app.register("Bob").await,
        app.register("Carol").await,
        app.register("Dave").await,
    );
    let (sid, _) = space(&app, &alice, &[&bob, &carol, &dave]).await;
    let mut space = app.capture(&[space_topic(&sid)]).await;

    for (user, how) in [(&bob, "kick"), (&carol, "ban"), (&dave, "leave")] {
        let mut theirs = app.capture(&[user_topic(&user.id)]).await;
        let r = match how {
            "kick" => {
                app.delete(&format!("/spaces/{sid}/members/{}", user.id), Some(&alice.access))
                    .await
            }
            "ban" => {
                app.post(
                    &format!("/spaces/{sid}/bans/"),
                    Some(&alice.access),
                    json!({"userId": user.id}),
                )
                .await
            }
            _ => app.delete(&format!("/spaces/{sid}/leave"), Some(&user.access)).await,
        };
        r.expect(200, None);
        let ev = Capture::expect_op(Some(next(&mut space).await), "members.onDelete");
        assert_eq!(ev.data["userId"], user.id, "{how}");
        let ev = Capture::expect_op(Some(next(&mut theirs).await), "spaces.onDelete");
        assert_eq!(ev.data["id"], sid, "{how}");
        // The removed user no longer sees the space.
        app.get(&format!("/spaces/{sid}"), Some(&user.access))
            .await
            .expect(404, Some("NotFound"));
    }
    let after = app.get(&format!("/spaces/{sid}"), Some(&alice.access)).await;
    assert_eq!(after.body["memberCount"], 1);
    // The banned user cannot come back; the others can.
    let invite = app
        .post(&format!("/spaces/{sid}/invites/"), Some(&alice.access), json!({}))
        .await;
    let code = invite.body["id"].as_str().unwrap();
    app.post(&format!("/spaces/join/{code}"), Some(&carol.access), json!({}))
        .await
        .expect(403, Some("Banned"));
    app.post(&format!("/spaces/join/{code}"), Some(&bob.access), json!({}))
        .await
        .expect(200, None);
    app.post(
        &format!("/spaces/{sid}/bans/"),
        Some(&alice.access),
        json!({"userId": carol.id}),
    )
    .await
    .expect(409, Some("AlreadyBanned"));
    app.delete(&format!("/spaces/{sid}/bans/{}", carol.id), Some(&alice.access))
        .await
        .expect(200, None);
    app.delete(&format!("/spaces/{sid}/bans/{}", carol.id), Some(&alice.access))
        .await
        .expect(200, None);
    app.post(&format!("/spaces/join/{code}"), Some(&carol.access), json!({}))
        .await
        .expect(200, None);
}

#[tokio::test]
async fn space_deletion_cascades_and_notifies_every_member() {
    let app = TestApp::spawn().await;
    let (alice, bob) = (app.register("Alice").await, app.register("Bob").await);
    let (sid, _) = space(&app, &alice, &[&bob]).await;
    let c = app
        .post(
            &format!("/spaces/{sid}/channels/"),
            Some(&alice.access),
            json!({"name": "docs", "type": "DOCUMENT"}),
        )
        .await;
    let cid = c.body["id"].as_str().unwrap().to_string();
    let rid = role(&app, &alice, &sid, "Mods").await;
    set_override(&app, &alice, &sid, &cid, Target::Role(&rid), 4096, 0).await;
    assign_role(&app, &alice, &sid, &bob, &rid).await;
    app.post(
        &format!("/spaces/{sid}/channels/{cid}/ack"),
        Some(&bob.access),
        json!({}),
    )
    .await
    .expect(200, None);
    app.post(
        &format!("/spaces/{sid}/notification-preference"),
        Some(&bob.access),
        json!({"level": "NOTHING"}),
    )
    .await
    .expect(200, None);
    app.patch(
        &format!("/spaces/{sid}"),
        Some(&alice.access),
        json!({"handle": "team"}),
    )
    .await
    .expect(200, None);

    let mut space = app.capture(&[space_topic(&sid)]).await;
    app.delete(&format!("/spaces/{sid}"), Some(&bob.access))
        .await
        .expect(403, Some("Forbidden"));
    let r = app.delete(&format!("/spaces/{sid}"), Some(&alice.access)).await;
    r.expect(200, None);
    assert_eq!(r.text, "null");
    let ev = Capture::expect_op(Some(next(&mut space).await), "spaces.onDelete");
    assert_eq!(ev.data["id"], sid);
    for table in [
        "spaces",
        "channels",
        "roles",
        "members",
        "member_roles",
        "invites",
        "bans",
        "channel_overrides",
        "channel_unreads",
        "documents",
        "notification_preferences",
    ] {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(app.db())
            .await
            .unwrap();
        assert_eq!(n, 0, "{table} has orphans");
    }
    let handles: i64 = sqlx::query_scalar("SELECT count(*) FROM handles WHERE space_id IS NOT NULL")
        .fetch_one(app.db())
        .await
        .unwrap();
    assert_eq!(handles, 0);
}

#[tokio::test]
async fn hidden_channels_stay_hidden_and_visibility_deltas_are_sent() {
    let app = TestApp::spawn().await;
    let (alice, bob, carol) = (
        app.register("Alice").await,
        app.register("Bob").await,
        app.register("Carol").await,
    );
    let (sid, _) = space(&app, &alice, &[&bob, &carol]).await;
    let space = app.get(&format!("/spaces/{sid}"), Some(&alice.access)).await;
    let everyone = space.body["roles"][0]["id"].as_str().unwrap().to_string();
    let cid = channel(&app, &alice, &sid, "secret").await;
    let vip_id = role(&app, &alice, &sid, "VIP").await;
    assign_role(&app, &alice, &sid, &carol, &vip_id).await;

    let mut bobs = app.capture(&[user_topic(&bob.id)]).await;
    let mut carols = app.capture(&[user_topic(&carol.id)]).await;
    // Hide it from @everyone, allow VIP.
    let ov = format!("/spaces/{sid}/channels/{cid}/overrides/");
    set_override(&app, &alice, &sid, &cid, Target::Role(&vip_id), 4096, 0).await;
    set_override(&app, &alice, &sid, &cid, Target::Role(&everyone), 0, 4096).await;
    let ev = Capture::expect_op(Some(next(&mut bobs).await), "channels.onDelete");
    assert_eq!(ev.data["id"], cid);
    assert!(
        carols.next(QUIET).await.is_none(),
        "Carol keeps the channel through VIP"
    );

    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    let bob_space = app.get(&format!("/spaces/{sid}"), Some(&bob.access)).await;
    assert_eq!(names(&bob_space.body["channels"]), ["general"]);
    assert_eq!(
        names(
            &app.get(&format!("/spaces/{sid}/channels"), Some(&bob.access))
                .await
                .body
        ),
        ["general"]
    );
    assert_eq!(
        names(&app.get("/spaces", Some(&bob.access)).await.body[0]["channels"]),
        ["general"]
    );
    app.get(&format!("/spaces/{sid}/channels/{cid}"), Some(&bob.access))
        .await
        .expect(404, Some("NotFound"));
    app.post(
        &format!("/spaces/{sid}/channels/{cid}/ack"),
        Some(&bob.access),
        json!({}),
    )
    .await
    .expect(404, Some("NotFound"));
    let carol_list = app.get(&format!("/spaces/{sid}/channels"), Some(&carol.access)).await;
    assert_eq!(names(&carol_list.body), ["general", "secret"]);
    // Unreads only cover visible channels.
    app.post(
        &format!("/spaces/{sid}/channels/{cid}/ack"),
        Some(&carol.access),
        json!({}),
    )
    .await
    .expect(200, None);
    Capture::expect_op(Some(next(&mut carols).await), "unreads.onUpdate");
    sqlx::query("INSERT INTO channel_unreads (channel_id, user_id, timestamp) VALUES ($1::uuid, $2::uuid, now())")
        .bind(&cid)
        .bind(&bob.id)
        .execute(app.db())
        .await
        .unwrap();
    let unreads = app
        .get(&format!("/spaces/{sid}/channels/unreads"), Some(&bob.access))
        .await;
    assert_eq!(unreads.body, json!([]));

    // Giving Bob the VIP role reveals it (Δvis on role assignment).
    assign_role(&app, &alice, &sid, &bob, &vip_id).await;
    let ev = Capture::expect_op(Some(next(&mut bobs).await), "channels.onCreate");
    assert_eq!(ev.data["id"], cid);
    // Removing VIEW from the VIP override hides it from both (Δvis on override change).
    app.delete(&format!("{ov}{vip_id}"), Some(&alice.access))
        .await
        .expect(200, None);
    assert_eq!(
        Capture::expect_op(Some(next(&mut bobs).await), "channels.onDelete").data["id"],
        cid
    );
    assert_eq!(
        Capture::expect_op(Some(next(&mut carols).await), "channels.onDelete").data["id"],
        cid
    );
    // A role permission change that touches no visibility sends no delta.
    app.patch(
        &format!("/spaces/{sid}/roles/{vip_id}"),
        Some(&alice.access),
        json!({"permissions": "2048"}),
    )
    .await
    .expect(200, None);
    assert!(bobs.next(QUIET).await.is_none());
    // Deleting the @everyone deny shows it again.
    app.delete(&format!("{ov}{everyone}"), Some(&alice.access))
        .await
        .expect(200, None);
    assert_eq!(
        Capture::expect_op(Some(next(&mut bobs).await), "channels.onCreate").data["id"],
        cid
    );
}

#[tokio::test]
async fn channel_tree_rules() {
    let app = TestApp::spawn().await;
    let alice = app.register("Alice").await;
    let (sid, _) = space(&app, &alice, &[]).await;
    let t = Some(alice.access.as_str());
    let path = format!("/spaces/{sid}/channels/");
    let mut parent: Option<String> = None;
    let mut chain = Vec::new();
    for depth in 1..=8 {
        let r = app
            .post(&path, t, json!({"name": format!("level {depth}"), "parentId": parent}))
            .await;
        r.expect(200, None);
        // `general` is the first top-level channel; every deeper level starts at 0.
        assert_eq!(r.body["order"], if depth == 1 { 1 } else { 0 });
        assert!(r.body["lastUpdated"].is_string());
        parent = r.body["id"].as_str().map(str::to_string);
        chain.push(parent.clone().unwrap());
    }
    let too_deep = app.post(&path, t, json!({"name": "level 9", "parentId": parent})).await;
    too_deep.expect(400, Some("ValidationFailed"));
    assert_eq!(too_deep.body["field"], "parentId");
    // Sibling order.
    let sibling = app
        .post(&path, t, json!({"name": "sibling", "parentId": chain[0]}))
        .await;
    assert_eq!(sibling.body["order"], 1);
    // No cycles: a channel cannot move under its own descendant, nor under itself.
    let top = &chain[0];
    let r = app
        .patch(&format!("{path}{top}"), t, json!({"parentId": chain[3]}))
        .await;
    r.expect(400, Some("ValidationFailed"));
    app.patch(&format!("{path}{top}"), t, json!({"parentId": top}))
        .await
        .expect(400, Some("ValidationFailed"));
    // Moving a deep subtree under another channel must respect the depth limit.
    let other = app.post(&path, t, json!({"name": "other"})).await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.patch(&format!("{path}{}", chain[0]), t, json!({"parentId": other}))
        .await
        .expect(400, Some("ValidationFailed"));
    app.patch(&format!("{path}{}", chain[1]), t, json!({"parentId": other}))
        .await
        .expect(200, None);
    // Order and parent changes as given; null moves to the top level.
    let r = app
        .patch(
            &format!("{path}{}", chain[7]),
            t,
            json!({"order": 42, "parentId": null, "name": "leaf"}),
        )
        .await;
    r.expect(200, None);
    assert_eq!(
        (
            r.body["order"].as_i64(),
            r.body["parentId"].is_null(),
            r.body["name"].as_str()
        ),
        (Some(42), true, Some("leaf"))
    );
    app.patch(&format!("{path}{}", chain[7]), t, json!({"order": -1}))
        .await
        .expect(400, Some("ValidationFailed"));
    app.patch(&format!("{path}{}", chain[7]), t, json!({"order": 2147483648u64}))
        .await
        .expect(400, Some("ValidationFailed"));
    // Types.
    for kind in ["APPLICATION", "THREAD"] {
        app.post(&path, t, json!({"name": "x", "type": kind}))
            .await
            .expect(400, Some("ValidationFailed"));
    }
    app.post(&path, t, json!({"name": "x", "type": "NOPE"}))
        .await
        .expect(422, Some("InvalidBody"));
    for kind in ["VOICE", "DOCUMENT", "CATEGORY", "TEXT"] {
        app.post(&path, t, json!({"name": kind, "type": kind}))
            .await
            .expect(200, None);
    }
    app.post(&path, t, json!({"name": ""}))
        .await
        .expect(400, Some("ValidationFailed"));
    app.post(&path, t, json!({"name": "x".repeat(65)}))
        .await
        .expect(400, Some("ValidationFailed"));
    // A parent from another space is refused (Mikoto did not check).
    let (elsewhere, _) = space(&app, &alice, &[]).await;
    let foreign = app.get(&format!("/spaces/{elsewhere}"), t).await.body["channels"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = app.post(&path, t, json!({"name": "x", "parentId": foreign})).await;
    r.expect(400, Some("ValidationFailed"));
    // A channel of another space is not found through this space.
    app.get(&format!("{path}{foreign}"), t)
        .await
        .expect(404, Some("NotFound"));
}

#[tokio::test]
async fn deleting_a_channel_deletes_its_subtree_deepest_first() {
    let app = TestApp::spawn().await;
    let alice = app.register("Alice").await;
    let (sid, _) = space(&app, &alice, &[]).await;
    let t = Some(alice.access.as_str());
    let path = format!("/spaces/{sid}/channels/");
    let root = app.post(&path, t, json!({"name": "root"})).await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let child = app
        .post(&path, t, json!({"name": "child", "parentId": root}))
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let grandchild = app
        .post(&path, t, json!({"name": "grandchild", "parentId": child}))
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut space = app.capture(&[space_topic(&sid)]).await;
    app.delete(&format!("{path}{root}"), t).await.expect(200, None);
    let order: Vec<String> = [next(&mut space).await, next(&mut space).await, next(&mut space).await]
        .iter()
        .map(|e| {
            assert_eq!(e.op, "channels.onDelete");
            e.data["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(order, [grandchild.clone(), child.clone(), root.clone()]);
    for id in [root, child, grandchild] {
        app.get(&format!("{path}{id}"), t).await.expect(404, Some("NotFound"));
    }
}

#[tokio::test]
async fn child_channels_copy_their_parents_overrides() {
    let app = TestApp::spawn().await;
    let (alice, bob) = (app.register("Alice").await, app.register("Bob").await);
    let (sid, _) = space(&app, &alice, &[&bob]).await;
    let t = Some(alice.access.as_str());
    let path = format!("/spaces/{sid}/channels/");
    let parent = channel(&app, &alice, &sid, "staff").await;
    set_override(&app, &alice, &sid, &parent, Target::Member(&bob.id), 0, 4096).await;
    let child = app
        .post(&path, t, json!({"name": "staff-only", "parentId": parent}))
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let overrides = app.get(&format!("{path}{child}/overrides"), t).await;
    assert_eq!(overrides.body.as_array().unwrap().len(), 1);
    assert_eq!(overrides.body[0]["targetId"], bob.id);
    assert_eq!(overrides.body[0]["deny"], "4096");
    app.get(&format!("{path}{child}"), Some(&bob.access))
        .await
        .expect(404, Some("NotFound"));
}

#[tokio::test]
async fn override_validation() {
    let app = TestApp::spawn().await;
    let (alice, bob) = (app.register("Alice").await, app.register("Bob").await);
    let (sid, general) = space(&app, &alice, &[&bob]).await;
    let t = Some(alice.access.as_str());
    let ov = |target: &str| format!("/spaces/{sid}/channels/{general}/overrides/{target}");
    for (body, code) in [
        (
            json!({"targetType": "MEMBER", "allow": "1", "deny": "0"}),
            "ValidationFailed",
        ),
        (
            json!({"targetType": "MEMBER", "allow": "4096", "deny": "4096"}),
            "ValidationFailed",
        ),
        (
            json!({"targetType": "MEMBER", "allow": "65536", "deny": "0"}),
            "ValidationFailed",
        ),
        (
            json!({"targetType": "MEMBER", "allow": "x", "deny": "0"}),
            "ValidationFailed",
        ),
        (
            json!({"targetType": "MEMBER", "allow": "-1", "deny": "0"}),
            "ValidationFailed",
        ),
    ] {
        app.put(&ov(&bob.id), t, body).await.expect(400, Some(code));
    }
    app.put(
        &ov(&bob.id),
        t,
        json!({"targetType": "BOTH", "allow": "0", "deny": "0"}),
    )
    .await
    .expect(422, Some("InvalidBody"));
    let stranger = uuid::Uuid::now_v7().to_string();
    app.put(
        &ov(&stranger),
        t,
        json!({"targetType": "MEMBER", "allow": "0", "deny": "0"}),
    )
    .await
    .expect(404, Some("NotFound"));
    app.put(
        &ov(&stranger),
        t,
        json!({"targetType": "ROLE", "allow": "0", "deny": "0"}),
    )
    .await
    .expect(404, Some("NotFound"));
    app.get(&ov(&bob.id), t).await.expect(404, Some("NotFound"));
    let r = app
        .put(
            &ov(&bob.id),
            t,
            json!({"targetType": "MEMBER", "allow": "8192", "deny": "16384"}),
        )
        .await;
    r.expect(200, None);
    assert_eq!(
        r.body,
        json!({"channelId": general, "targetType": "MEMBER", "targetId": bob.id, "allow": "8192", "deny": "16384"})
    );
    assert_eq!(app.get(&ov(&bob.id), t).await.body, r.body);
    // Replaced, not duplicated.
    app.put(
        &ov(&bob.id),
        t,
        json!({"targetType": "MEMBER", "allow": "0", "deny": "8192"}),
    )
    .await
    .expect(200, None);
    assert_eq!(
        app.get(&format!("/spaces/{sid}/channels/{general}/overrides/"), t)
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        1
    );
    app.delete(&ov(&bob.id), t).await.expect(200, None);
    app.delete(&ov(&bob.id), t).await.expect(200, None);
}

#[tokio::test]
async fn role_rules() {
    let app = TestApp::spawn().await;
    let (alice, bob) = (app.register("Alice").await, app.register("Bob").await);
    let (sid, _) = space(&app, &alice, &[&bob]).await;
    let t = Some(alice.access.as_str());
    let roles = format!("/spaces/{sid}/roles/");
    let r = app.post(&roles, t, json!({"name": "Helpers"})).await;
    r.expect(200, None);
    assert_eq!(
        (
            r.body["permissions"].as_str(),
            r.body["position"].as_i64(),
            r.body["color"].is_null()
        ),
        (Some("0"), Some(0), true)
    );
    let rid = r.body["id"].as_str().unwrap().to_string();
    for name in ["@everyone", "@EVERYONE", "", " "] {
        app.post(&roles, t, json!({"name": name}))
            .await
            .expect(400, Some("ValidationFailed"));
    }
    // Undefined bits are dropped; malformed strings refused.
    let r = app
        .patch(
            &format!("{roles}{rid}"),
            t,
            json!({"permissions": "18446744073709551615"}),
        )
        .await;
    assert_eq!(r.body["permissions"], "65535");
    for bad in ["-1", "1.5", "abc", "18446744073709551616"] {
        app.patch(&format!("{roles}{rid}"), t, json!({"permissions": bad}))
            .await
            .expect(400, Some("ValidationFailed"));
    }
    let r = app.patch(&format!("{roles}{rid}"), t, json!({"color": "#ABC"})).await;
    assert_eq!(r.body["color"], "#aabbcc");
    let r = app.patch(&format!("{roles}{rid}"), t, json!({"color": null})).await;
    assert!(r.body["color"].is_null(), "null clears the colour (Mikoto could not)");
    app.patch(&format!("{roles}{rid}"), t, json!({"color": "red"}))
        .await
        .expect(400, Some("ValidationFailed"));
    app.patch(&format!("{roles}{rid}"), t, json!({"position": -1}))
        .await
        .expect(400, Some("ValidationFailed"));
    // @everyone: name and position are ignored, permissions and colour apply.
    let everyone = app.get(&format!("/spaces/{sid}"), t).await.body["roles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "@everyone")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = app
        .patch(
            &format!("{roles}{everyone}"),
            t,
            json!({"name": "All", "position": 7, "permissions": "4096"}),
        )
        .await;
    r.expect(200, None);
    assert_eq!(
        (
            r.body["name"].as_str(),
            r.body["position"].as_i64(),
            r.body["permissions"].as_str()
        ),
        (Some("@everyone"), Some(-1), Some("4096"))
    );
    app.delete(&format!("{roles}{everyone}"), t)
        .await
        .expect(400, Some("DefaultRoleImmutable"));
    app.post(
        &format!("/spaces/{sid}/members/{}/roles/{everyone}", bob.id),
        t,
        json!({}),
    )
    .await
    .expect(400, Some("DefaultRoleImmutable"));
    // roles.list has the SpaceExt order: position descending.
    app.patch(&format!("{roles}{rid}"), t, json!({"position": 3}))
        .await
        .expect(200, None);
    let list = app.get(&roles, t).await;
    let names: Vec<&str> = list
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Helpers", "@everyone"]);
    // Deleting a role removes its assignments and overrides, and sends the full role.
    app.post(&format!("/spaces/{sid}/members/{}/roles/{rid}", bob.id), t, json!({}))
        .await
        .expect(200, None);
    let mut space = app.capture(&[space_topic(&sid)]).await;
    app.delete(&format!("{roles}{rid}"), t).await.expect(200, None);
    let ev = Capture::expect_op(Some(next(&mut space).await), "roles.onDelete");
    assert_eq!(ev.data["id"], rid);
    assert_eq!(ev.data["name"], "Helpers");
    let member = app.get(&format!("/spaces/{sid}/members/{}", bob.id), t).await;
    assert_eq!(member.body["roleIds"], json!([]));
}

#[tokio::test]
async fn member_role_assignment() {
    let app = TestApp::spawn().await;
    let (alice, bob, carol) = (
        app.register("Alice").await,
        app.register("Bob").await,
        app.register("Carol").await,
    );
    let (sid, _) = space(&app, &alice, &[&bob, &carol]).await;
    let t = Some(alice.access.as_str());
    let manager = ranked_role(&app, &alice, &sid, "Manager", 32, 5).await;
    let low = ranked_role(&app, &alice, &sid, "Low", 0, 1).await;
    let high = ranked_role(&app, &alice, &sid, "High", 0, 9).await;
    let member = |u: &str| format!("/spaces/{sid}/members/{u}");
    app.patch(&member(&bob.id), t, json!({"roleIds": [manager]}))
        .await
        .expect(200, None);
    app.patch(&member(&carol.id), t, json!({"roleIds": [high]}))
        .await
        .expect(200, None);

    // Bob (rank 5) may set Carol's roles below him; her High role (9) stays as it is.
    let b = Some(bob.access.as_str());
    let mut space = app.capture(&[space_topic(&sid)]).await;
    let r = app
        .patch(&member(&carol.id), b, json!({"roleIds": [low, low, high]}))
        .await;
    r.expect(200, None);
    let mut ids: Vec<&str> = r.body["roleIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    ids.sort();
    let mut want = vec![low.as_str(), high.as_str()];
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(
        Capture::expect_op(Some(next(&mut space).await), "members.onUpdate").data["userId"],
        carol.id
    );
    // Removing High is not allowed for Bob.
    app.patch(&member(&carol.id), b, json!({"roleIds": [low]}))
        .await
        .expect(403, Some("InsufficientRank"));
    app.delete(&format!("{}/roles/{high}", member(&carol.id)), b)
        .await
        .expect(403, Some("InsufficientRank"));
    // Unchanged sets publish nothing; unknown roles are 404.
    app.patch(&member(&carol.id), b, json!({"roleIds": [high, low]}))
        .await
        .expect(200, None);
    assert!(space.next(QUIET).await.is_none());
    let unknown = uuid::Uuid::now_v7();
    app.patch(&member(&carol.id), b, json!({"roleIds": [unknown]}))
        .await
        .expect(404, Some("NotFound"));
    app.patch(&member(&carol.id), b, json!({}))
        .await
        .expect(422, Some("InvalidBody"));
    // Adding an assigned role (or removing an unassigned one) is a 200 without event.
    app.post(&format!("{}/roles/{low}", member(&carol.id)), b, json!({}))
        .await
        .expect(200, None);
    app.delete(&format!("{}/roles/{low}", member(&bob.id)), b)
        .await
        .expect(200, None);
    assert!(space.next(QUIET).await.is_none());
}

#[tokio::test]
async fn members_are_paged_in_join_order() {
    let app = TestApp::spawn().await;
    let alice = app.register("Alice").await;
    let mut others = Vec::new();
    for i in 0..5 {
        others.push(app.register(&format!("User {i}")).await);
    }
    let refs: Vec<&TestUser> = others.iter().collect();
    let (sid, _) = space(&app, &alice, &refs).await;
    let t = Some(alice.access.as_str());
    let first = app.get(&format!("/spaces/{sid}/members/?limit=2"), t).await;
    let page: Vec<&Value> = first.body.as_array().unwrap().iter().collect();
    assert_eq!(page.len(), 2);
    assert_eq!(page[0]["userId"], alice.id);
    assert!(page[0]["name"].is_null() && page[0]["user"]["handle"].is_string());
    let cursor = page[1]["id"].as_str().unwrap();
    let rest = app
        .get(&format!("/spaces/{sid}/members/?limit=100&cursor={cursor}"), t)
        .await;
    let rest_ids: Vec<&str> = rest
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["userId"].as_str().unwrap())
        .collect();
    let want: Vec<&str> = others[1..].iter().map(|u| u.id.as_str()).collect();
    assert_eq!(rest_ids, want);
    // Clamped, not rejected; empty values are absent; junk is 400.
    assert_eq!(
        app.get(&format!("/spaces/{sid}/members/?limit=0"), t)
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        app.get(&format!("/spaces/{sid}/members/?limit=&cursor="), t)
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        6
    );
    app.get(&format!("/spaces/{sid}/members/?limit=abc"), t)
        .await
        .expect(400, Some("InvalidQuery"));
    app.get(&format!("/spaces/{sid}/members/?cursor=nope"), t)
        .await
        .expect(400, Some("InvalidQuery"));
    app.get(&format!("/spaces/{sid}/members/{}", uuid::Uuid::now_v7()), t)
        .await
        .expect(404, Some("NotFound"));
    app.get("/spaces/not-a-uuid/members", t)
        .await
        .expect(400, Some("InvalidPathParameter"));
}

#[tokio::test]
async fn invites_limits_expiry_and_preview() {
    let app = TestApp::spawn().await;
    let (alice, bob, carol) = (
        app.register("Alice").await,
        app.register("Bob").await,
        app.register("Carol").await,
    );
    let (sid, _) = space(&app, &alice, &[]).await;
    let t = Some(alice.access.as_str());
    let path = format!("/spaces/{sid}/invites/");
    // A body-less create works (Mikoto's clients send none).
    let plain = TestApp::read(
        app.http
            .post(app.url(&path))
            .bearer_auth(&alice.access)
            .send()
            .await
            .unwrap(),
    )
    .await;
    plain.expect(200, None);
    assert_eq!(plain.body["id"].as_str().unwrap().len(), 12);
    assert!(plain.body["maxUses"].is_null() && plain.body["expiresAt"].is_null());
    assert_eq!(plain.body["uses"], 0);
    assert_eq!(plain.body["creatorId"], alice.id);
    for body in [
        json!({"maxUses": 0}),
        json!({"maxUses": 10001}),
        json!({"expiresAt": "2020-01-01T00:00:00Z"}),
        json!({"expiresAt": "2999-01-01T00:00:00Z"}),
        json!({"expiresAt": "2030-01-01T00:00:00"}),
        json!({"expiresAt": "tomorrow"}),
    ] {
        app.post(&path, t, body).await.expect(400, Some("ValidationFailed"));
    }
    let soon = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let once = app.post(&path, t, json!({"maxUses": 1, "expiresAt": soon})).await;
    once.expect(200, None);
    assert!(once.body["expiresAt"].as_str().unwrap().ends_with('Z'));
    let code = once.body["id"].as_str().unwrap().to_string();

    // Preview without a token: no channels, no roles (Mikoto exposed them).
    let preview = app.get(&format!("/spaces/join/{code}"), None).await;
    preview.expect(200, None);
    assert_eq!(preview.body["channels"], json!([]));
    assert_eq!(preview.body["roles"], json!([]));
    assert_eq!(preview.body["memberCount"], 1);
    let own = app.get(&format!("/spaces/join/{code}"), t).await;
    assert_eq!(
        own.body["channels"].as_array().unwrap().len(),
        1,
        "a member sees the real space"
    );
    // One use, then it is exhausted for preview and join alike.
    app.post(&format!("/spaces/join/{code}"), Some(&bob.access), json!({}))
        .await
        .expect(200, None);
    app.post(&format!("/spaces/join/{code}"), Some(&carol.access), json!({}))
        .await
        .expect(404, Some("NotFound"));
    app.get(&format!("/spaces/join/{code}"), None)
        .await
        .expect(404, Some("NotFound"));
    let listed = app.get(&path, t).await;
    let used = listed
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == code.as_str())
        .unwrap()
        .clone();
    assert_eq!(used["uses"], 1);
    // Expired invites are unusable.
    let later = app.post(&path, t, json!({})).await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    sqlx::query("UPDATE invites SET expires_at = now() - interval '1 second' WHERE code = $1")
        .bind(&later)
        .execute(app.db())
        .await
        .unwrap();
    app.post(&format!("/spaces/join/{later}"), Some(&carol.access), json!({}))
        .await
        .expect(404, Some("NotFound"));
    // Deleting: this space's invites only.
    let (other, _) = space(&app, &bob, &[]).await;
    let foreign = app
        .post(&format!("/spaces/{other}/invites/"), Some(&bob.access), json!({}))
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.delete(&format!("{path}{foreign}"), t)
        .await
        .expect(404, Some("NotFound"));
    app.delete(&format!("{path}{later}"), t).await.expect(200, None);
    // Paging by code.
    let page = app.get(&format!("{path}?limit=1"), t).await;
    assert_eq!(page.body.as_array().unwrap().len(), 1);
    let next_code = page.body[0]["id"].as_str().unwrap();
    let rest = app.get(&format!("{path}?cursor={next_code}"), t).await;
    assert!(rest.body.as_array().unwrap().iter().all(|i| i["id"] != next_code));
    // Concurrent joins of a single-use invite: exactly one wins.
    let single = app.post(&path, t, json!({"maxUses": 1})).await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (x, y) = (app.register("X").await, app.register("Y").await);
    let (path_x, path_y) = (format!("/spaces/join/{single}"), format!("/spaces/join/{single}"));
    let (a, b) = tokio::join!(
        app.post(&path_x, Some(&x.access), json!({})),
        app.post(&path_y, Some(&y.access), json!({}))
    );
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [200, 404]);
}

#[tokio::test]
async fn public_spaces_join_by_handle() {
    let app = TestApp::spawn().await;
    let (alice, bob) = (app.register("Alice").await, app.register("Bob").await);
    let (sid, _) = space(&app, &alice, &[]).await;
    let t = Some(alice.access.as_str());
    let r = app
        .patch(&format!("/spaces/{sid}"), t, json!({"handle": "Rustaceans"}))
        .await;
    r.expect(200, None);
    assert_eq!(r.body["handle"], "rustaceans.alterego.test");
    // Not public yet: a handle join is forbidden.
    app.post("/spaces/join/@rustaceans.alterego.test", Some(&bob.access), json!({}))
        .await
        .expect(403, Some("Forbidden"));
    app.patch(&format!("/spaces/{sid}"), t, json!({"visibility": "PUBLIC"}))
        .await
        .expect(200, None);
    let preview = app.get("/spaces/join/%40Rustaceans.alterego.test", None).await;
    preview.expect(200, None);
    app.post("/spaces/join/@rustaceans.alterego.test", Some(&bob.access), json!({}))
        .await
        .expect(200, None);
    app.get("/spaces/join/@nobody.alterego.test", None)
        .await
        .expect(404, Some("NotFound"));
    // Handle rules: custom domains need verification, taken handles conflict, null releases.
    app.patch(&format!("/spaces/{sid}"), t, json!({"handle": "team.example.org"}))
        .await
        .expect(400, Some("CustomDomainRequiresVerification"));
    app.patch(&format!("/spaces/{sid}"), t, json!({"handle": "a"}))
        .await
        .expect(400, Some("InvalidHandle"));
    let alice_handle = app.get("/users/me", t).await.body["handle"]
        .as_str()
        .unwrap()
        .to_string();
    app.patch(&format!("/spaces/{sid}"), t, json!({"handle": alice_handle}))
        .await
        .expect(409, Some("HandleTaken"));
    let r = app
        .patch(
            &format!("/spaces/{sid}"),
            t,
            json!({"handle": null, "visibility": null}),
        )
        .await;
    assert!(r.body["handle"].is_null() && r.body["visibility"].is_null());
    // The icon must reference the spaceicon store.
    app.patch(
        &format!("/spaces/{sid}"),
        t,
        json!({"icon": "https://evil.example/x.png"}),
    )
    .await
    .expect(400, Some("InvalidMediaReference"));
    app.patch(&format!("/spaces/{sid}"), t, json!({"name": ""}))
        .await
        .expect(400, Some("ValidationFailed"));
}

#[tokio::test]
async fn ownership_transfer() {
    let app = TestApp::spawn().await;
    let (alice, bob) = (app.register("Alice").await, app.register("Bob").await);
    let (sid, _) = space(&app, &alice, &[&bob]).await;
    let path = format!("/spaces/{sid}/transfer_ownership");
    let t = Some(alice.access.as_str());
    app.delete(&format!("/spaces/{sid}/leave"), t)
        .await
        .expect(409, Some("OwnerCannotLeave"));
    app.post(&path, t, json!({"userId": alice.id}))
        .await
        .expect(400, Some("ValidationFailed"));
    let bot = app.create_bot(&alice.id, "Bot", false).await;
    app.post(&format!("/spaces/{sid}/members/"), t, json!({"userId": bot}))
        .await
        .expect(200, None);
    app.post(&path, t, json!({"userId": bot}))
        .await
        .expect(400, Some("ValidationFailed"));
    app.post(&path, t, json!({"userId": uuid::Uuid::now_v7()}))
        .await
        .expect(404, Some("NotFound"));
    let mut space = app.capture(&[space_topic(&sid)]).await;
    let r = app.post(&path, t, json!({"userId": bob.id})).await;
    r.expect(200, None);
    assert_eq!(r.body["ownerId"], bob.id);
    assert_eq!(
        Capture::expect_op(Some(next(&mut space).await), "spaces.onUpdate").data["ownerId"],
        bob.id
    );
    app.post(&path, t, json!({"userId": alice.id}))
        .await
        .expect(403, Some("Forbidden"));
    // The previous owner stays a member and may now leave.
    app.delete(&format!("/spaces/{sid}/leave"), t).await.expect(200, None);
}

#[tokio::test]
async fn bot_members() {
    let app = TestApp::spawn().await;
    let (alice, bob) = (app.register("Alice").await, app.register("Bob").await);
    let (sid, _) = space(&app, &alice, &[&bob]).await;
    let t = Some(alice.access.as_str());
    let path = format!("/spaces/{sid}/members/");
    let mine = app.create_bot(&alice.id, "Mine", false).await;
    let theirs = app.create_bot(&bob.id, "Theirs", false).await;
    let public = app.create_bot(&bob.id, "Public", true).await;
    app.post(&path, t, json!({"userId": bob.id}))
        .await
        .expect(403, Some("Forbidden"));
    app.post(&path, t, json!({"userId": theirs}))
        .await
        .expect(403, Some("Forbidden"));
    app.post(&path, t, json!({"userId": uuid::Uuid::now_v7()}))
        .await
        .expect(404, Some("NotFound"));
    let mut bot_topic = app.capture(&[user_topic(&mine)]).await;
    let r = app.post(&path, t, json!({"userId": mine})).await;
    r.expect(200, None);
    assert_eq!(r.body["user"]["category"], "BOT");
    assert_eq!(
        Capture::expect_op(Some(next(&mut bot_topic).await), "spaces.onCreate").data["id"],
        sid
    );
    app.post(&path, t, json!({"userId": mine}))
        .await
        .expect(409, Some("AlreadyMember"));
    app.post(&path, t, json!({"userId": public})).await.expect(200, None);
    // Without MANAGE_BOTS: 403.
    app.post(&path, Some(&bob.access), json!({"userId": public}))
        .await
        .expect(403, Some("InsufficientPermissions"));
}

#[tokio::test]
async fn notification_preferences() {
    let app = TestApp::spawn().await;
    let (alice, bob) = (app.register("Alice").await, app.register("Bob").await);
    let (sid, _) = space(&app, &alice, &[]).await;
    let path = format!("/spaces/{sid}/notification-preference");
    let t = Some(alice.access.as_str());
    let r = app.get(&path, t).await;
    assert_eq!(r.body, json!({"userId": alice.id, "spaceId": sid, "level": "ALL"}));
    assert_eq!(app.get("/spaces/notification-preferences", t).await.body, json!([]));
    app.post(&path, t, json!({"level": "MENTIONS"})).await.expect(200, None);
    app.post(&path, t, json!({"level": "LOUD"}))
        .await
        .expect(422, Some("InvalidBody"));
    assert_eq!(app.get(&path, t).await.body["level"], "MENTIONS");
    assert_eq!(
        app.get("/spaces/notification-preferences", t)
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        1
    );
    app.get(&path, Some(&bob.access)).await.expect(404, Some("NotFound"));
    app.post(&path, Some(&bob.access), json!({"level": "ALL"}))
        .await
        .expect(404, Some("NotFound"));
}

#[tokio::test]
async fn acknowledge_publishes_to_self_only() {
    let app = TestApp::spawn().await;
    let (alice, bob) = (app.register("Alice").await, app.register("Bob").await);
    let (sid, general) = space(&app, &alice, &[&bob]).await;
    let mut mine = app.capture(&[user_topic(&alice.id)]).await;
    let mut bobs = app.capture(&[user_topic(&bob.id)]).await;
    let r = app
        .post(
            &format!("/spaces/{sid}/channels/{general}/ack"),
            Some(&alice.access),
            json!({}),
        )
        .await;
    assert_eq!(r.text, "null");
    let ev = Capture::expect_op(Some(next(&mut mine).await), "unreads.onUpdate");
    assert_eq!(ev.data["channelId"], general);
    assert!(ev.data["timestamp"].as_str().unwrap().ends_with('Z'));
    assert!(bobs.next(QUIET).await.is_none());
    let unreads = app
        .get(&format!("/spaces/{sid}/channels/unreads"), Some(&alice.access))
        .await;
    assert_eq!(unreads.body[0]["timestamp"], ev.data["timestamp"]);
}

#[tokio::test]
async fn profile_changes_reach_member_lists() {
    let app = TestApp::spawn().await;
    let alice = app.register("Alice").await;
    let (sid, _) = space(&app, &alice, &[]).await;
    let mut space = app.capture(&[space_topic(&sid)]).await;
    app.patch("/users/me", Some(&alice.access), json!({"name": "Alicia"}))
        .await
        .expect(200, None);
    let ev = Capture::expect_op(Some(next(&mut space).await), "members.onUpdate");
    assert_eq!(ev.data["user"]["name"], "Alicia");
}

#[tokio::test]
async fn space_limits() {
    let app = TestApp::spawn().await;
    let alice = app.register("Alice").await;
    app.post("/spaces/", Some(&alice.access), json!({"name": ""}))
        .await
        .expect(400, Some("ValidationFailed"));
    app.post("/spaces/", Some(&alice.access), json!({}))
        .await
        .expect(422, Some("InvalidBody"));
    // The 200-space cap, reached through the database to keep the test fast.
    let (sid, _) = space(&app, &alice, &[]).await;
    sqlx::query(
        "INSERT INTO members (id, space_id, user_id) \
         SELECT gen_random_uuid(), s.id, $1::uuid FROM (SELECT $2::uuid AS id) s, generate_series(1, 199) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&alice.id)
    .bind(&sid)
    .execute(app.db())
    .await
    .ok();
    for _ in 0..199 {
        let id = uuid::Uuid::now_v7();
        sqlx::query("INSERT INTO spaces (id, name, owner_id) VALUES ($1, 'x', $2::uuid)")
            .bind(id)
            .bind(&alice.id)
            .execute(app.db())
            .await
            .unwrap();
        sqlx::query("INSERT INTO members (id, space_id, user_id) VALUES ($1, $1, $2::uuid)")
            .bind(id)
            .bind(&alice.id)
            .execute(app.db())
            .await
            .unwrap();
    }
    app.post("/spaces/", Some(&alice.access), json!({"name": "one too many"}))
        .await
        .expect(400, Some("LimitExceeded"));
}
