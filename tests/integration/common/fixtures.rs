//! The fixtures tests start from, built through the public API: spaces with members, channels,
//! roles, permission overrides, friends with their DM channel; and the ids and bus topics tests
//! read. Every request a builder sends must succeed (it asserts the status), so a test fails
//! where its setup breaks rather than later.

use alterego::functions::bus::Topic;
use alterego::functions::ids::UserId;
use serde_json::{Value, json};

use super::{TestApp, TestUser};

/// The `id` of a JSON object.
#[track_caller]
pub fn id(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("expected a string id in {v}"))
        .to_string()
}

/// The ids of a JSON array of objects.
#[track_caller]
pub fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected an array, got {v}"))
        .iter()
        .map(id)
        .collect()
}

/// A user id as the bus and the routes take it.
pub fn user_id(id: &str) -> UserId {
    UserId(uuid::Uuid::parse_str(id).expect("a user id"))
}

/// A user's own topic (relations, DMs, their view of spaces and channels).
pub fn user_topic(id: &str) -> Topic {
    Topic::user(user_id(id))
}

/// A user's profile topic (`users.onUpdate`, handle changes).
pub fn profile_topic(id: &str) -> Topic {
    Topic::profile(user_id(id))
}

/// A space's topic.
pub fn space_topic(id: &str) -> Topic {
    Topic::space(uuid::Uuid::parse_str(id).expect("a space id"))
}

/// `owner` creates a space named `name`; returns the space as the server answered it.
pub async fn create_space(app: &TestApp, owner: &TestUser, name: &str) -> Value {
    let r = app.post("/spaces/", Some(&owner.access), json!({"name": name})).await;
    r.expect(200, None);
    r.body
}

/// A space owned by `owner` that each of `members` joined with one invite (created only when
/// there are members); returns (space id, `general` channel id).
pub async fn space(app: &TestApp, owner: &TestUser, members: &[&TestUser]) -> (String, String) {
    let space = create_space(app, owner, "Team").await;
    let (sid, general) = (id(&space), id(&space["channels"][0]));
    if !members.is_empty() {
        let invite = app
            .post(&format!("/spaces/{sid}/invites/"), Some(&owner.access), json!({}))
            .await;
        invite.expect(200, None);
        let code = id(&invite.body);
        for member in members {
            app.post(&format!("/spaces/join/{code}"), Some(&member.access), json!({}))
                .await
                .expect(200, None);
        }
    }
    (sid, general)
}

/// A text channel `name` at the top of space `sid`, created by `owner`; returns its id.
pub async fn channel(app: &TestApp, owner: &TestUser, sid: &str, name: &str) -> String {
    let c = app
        .post(
            &format!("/spaces/{sid}/channels/"),
            Some(&owner.access),
            json!({"name": name}),
        )
        .await;
    c.expect(200, None);
    id(&c.body)
}

/// A role `name` in space `sid`, created by `owner` with the defaults (no permissions);
/// returns its id.
pub async fn role(app: &TestApp, owner: &TestUser, sid: &str, name: &str) -> String {
    let r = app
        .post(
            &format!("/spaces/{sid}/roles/"),
            Some(&owner.access),
            json!({"name": name}),
        )
        .await;
    r.expect(200, None);
    id(&r.body)
}

/// [`role`], then its permission bits and position set by `owner`.
pub async fn ranked_role(
    app: &TestApp,
    owner: &TestUser,
    sid: &str,
    name: &str,
    permissions: u64,
    position: i64,
) -> String {
    let rid = role(app, owner, sid, name).await;
    app.patch(
        &format!("/spaces/{sid}/roles/{rid}"),
        Some(&owner.access),
        json!({"permissions": permissions.to_string(), "position": position}),
    )
    .await
    .expect(200, None);
    rid
}

/// `owner` gives `member` the role `rid`.
pub async fn assign_role(app: &TestApp, owner: &TestUser, sid: &str, member: &TestUser, rid: &str) {
    app.post(
        &format!("/spaces/{sid}/members/{}/roles/{rid}", member.id),
        Some(&owner.access),
        json!({}),
    )
    .await
    .expect(200, None);
}

/// Whom a permission override is for.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// A role id.
    Role(&'a str),
    /// A member's user id.
    Member(&'a str),
}

/// `owner` sets the override of `target` on channel `cid`: the permission bits it allows and
/// those it denies.
pub async fn set_override(
    app: &TestApp,
    owner: &TestUser,
    sid: &str,
    cid: &str,
    target: Target<'_>,
    allow: u64,
    deny: u64,
) {
    let (kind, target) = match target {
        Target::Role(id) => ("ROLE", id),
        Target::Member(id) => ("MEMBER", id),
    };
    app.put(
        &format!("/spaces/{sid}/channels/{cid}/overrides/{target}"),
        Some(&owner.access),
        json!({"targetType": kind, "allow": allow.to_string(), "deny": deny.to_string()}),
    )
    .await
    .expect(200, None);
}

/// `a` and `b` become friends (`a` asks, `b` accepts) and `a` opens their DM channel; returns
/// its id.
pub async fn befriend(app: &TestApp, a: &TestUser, b: &TestUser) -> String {
    app.post(&format!("/relations/{}/request", b.id), Some(&a.access), json!({}))
        .await
        .expect(200, None);
    app.post(&format!("/relations/{}/accept", a.id), Some(&b.access), json!({}))
        .await
        .expect(200, None);
    let dm = app
        .post(&format!("/relations/{}/dm", b.id), Some(&a.access), json!({}))
        .await;
    dm.expect(200, None);
    id(&dm.body)
}

/// The `content` of each message in a list answer, in order.
pub fn contents(messages: &Value) -> Vec<&str> {
    messages
        .as_array()
        .expect("a list of messages")
        .iter()
        .map(|m| m["content"].as_str().expect("content"))
        .collect()
}
