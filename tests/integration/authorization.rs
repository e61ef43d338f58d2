//! The authorization matrix of the community operations (spec §4.8, §4.9, §4.13–§4.16 and the
//! community operations of §4.17; issue 3, item 3), plus named regression tests for the Mikoto
//! defects of Appendix B that concern those sections.
//!
//! Every [`Row`] is one request built from a [`World`] and the exact answer (status and error
//! `code`) expected for each of the seven [`Actor`]s. Expected answers follow the order of checks
//! of §2.9: existence and visibility (404) before permissions and rank (403) before value
//! validation (400) before state conflicts (409).
//!
//! Refusals and reads run against one shared world per test. After the refusals of each row
//! that is not a GET, the owner's view of that world (space with roles, channels and member
//! count; members with their roles; bans; invites; the overrides of `general` and `hidden`) must
//! be exactly what it was before: nothing changes on refusal. Each expected success of a write runs in a fresh world (a new
//! space with a new owner, built the same way) so that successes do not interfere.
//!
//! Each matrix test spawns its own server; sections are separate tests so that they run in
//! parallel and each owner stays well inside the `general` rate limit (1200 requests a minute).

use std::collections::BTreeSet;

use crate::common::fixtures::ids;
use crate::common::{PASSWORD, Resp, TestApp};
use base64::Engine as _;
use futures_util::StreamExt as _;
use futures_util::future::join_all;
use reqwest::Method;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Actors and the world they live in
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Actor {
    /// Created the space.
    Owner,
    /// Holds the role "Admin": `ADMIN`, position 5.
    Admin,
    /// Holds the role "Moderator": BAN|MANAGE_ROLES|ASSIGN_ROLES|MANAGE_CHANNELS|MANAGE_INVITES|
    /// MANAGE_SPACE (`2236`), position 3.
    Moderator,
    /// A member with no roles.
    Member,
    /// Holds the role "Low": no permissions, position 1 (below the moderator).
    Low,
    /// Registered, not a member.
    Outsider,
    /// Joined, then was banned.
    Banned,
}

use Actor::*;

/// The order of every expectation array.
const ACTORS: [Actor; 7] = [Owner, Admin, Moderator, Member, Low, Outsider, Banned];
const MEMBERS: [Actor; 5] = [Owner, Admin, Moderator, Member, Low];

// Permission bits (spec §5.1).
const ADMIN: u64 = 1;
const MANAGE_MESSAGES: u64 = 512;
const VIEW_CHANNEL: u64 = 4096;
const SEND_MESSAGES: u64 = 8192;
const ATTACH_FILES: u64 = 16384;
const MENTION_EVERYONE: u64 = 32768;
const MODERATOR_PERMISSIONS: u64 = 2236;

#[derive(Debug, Clone)]
struct User {
    id: String,
    token: String,
}

/// Per-app fixtures shared by every world of a test: the cast (every user but the owner), a
/// space none of them belongs to (with a channel and an invite), and a public bot. Each world
/// has its own owner, who creates it; the owner's `space-create` rate limit (10 per hour) is why
/// owners cannot be shared.
struct Fixtures {
    cast: [User; 8],
    foreign_space: String,
    foreign_channel: String,
    foreign_invite: String,
    bot: String,
    /// Whether worlds get the overrides on `general` (only the override rows need them).
    general_overrides: bool,
}

impl Fixtures {
    async fn create(app: &TestApp, general_overrides: bool) -> Fixtures {
        let names = [
            "Admin",
            "Moderator",
            "Member",
            "Low",
            "Outsider",
            "Banned",
            "Victim",
            "Peer",
            "Stranger",
        ];
        let mut users = join_all(names.iter().map(|n| signup(app, n))).await;
        let stranger = users.pop().expect("stranger");
        let t = Some(stranger.token.as_str());
        let space = ok(app.post("/spaces/", t, json!({"name": "Elsewhere"})).await);
        let foreign_space = text(&space["id"]);
        let invite = ok(app
            .post(&format!("/spaces/{foreign_space}/invites/"), t, json!({}))
            .await);
        Fixtures {
            cast: users.try_into().expect("eight users"),
            foreign_channel: text(&space["channels"][0]["id"]),
            foreign_invite: text(&invite["id"]),
            bot: app.create_bot(&stranger.id, "Public Bot", true).await,
            foreign_space,
            general_overrides,
        }
    }
}

/// One space with its cast, built through the public API by [`World::build`]:
///
/// * roles Admin (`ADMIN`, 5), Moderator (`2236`, 3), Low (none, 1), Helper (none, 0, unassigned)
///   and Senior (none, 5, unassigned);
/// * members owner, admin, moderator, member, low, plus two targets: `victim` (no roles) and
///   `peer` (Moderator, equal to the moderator); `banned` joined and was banned; `outsider`
///   never joined;
/// * channels `general`, `hidden` (`@everyone` denied VIEW_CHANNEL) and `doomed` (to delete);
/// * for the override rows, overrides on `general`: Low, Admin, Victim and Peer deny
///   ATTACH_FILES, Moderator denies MANAGE_MESSAGES, Helper allows MENTION_EVERYONE.
struct World {
    space: String,
    general: String,
    hidden: String,
    doomed: String,
    everyone: String,
    admin_role: String,
    mod_role: String,
    low_role: String,
    helper_role: String,
    senior_role: String,
    invite: String,
    foreign_space: String,
    foreign_channel: String,
    foreign_invite: String,
    bot: String,
    owner: User,
    admin: User,
    moderator: User,
    member: User,
    low: User,
    outsider: User,
    banned: User,
    victim: User,
    peer: User,
}

impl World {
    async fn build(app: &TestApp, fx: &Fixtures) -> World {
        let owner = signup(app, "Owner").await;
        let [admin, moderator, member, low, outsider, banned, victim, peer] = fx.cast.clone();
        let t = Some(owner.token.as_str());

        let space = ok(app.post("/spaces/", t, json!({"name": "World"})).await);
        let sid = text(&space["id"]);
        let general = text(&space["channels"][0]["id"]);
        let everyone = text(&space["roles"][0]["id"]);
        let at = |rest: String| format!("/spaces/{sid}/{rest}");

        let specs = [
            ("Admin", ADMIN, 5),
            ("Moderator", MODERATOR_PERMISSIONS, 3),
            ("Low", 0, 1),
            ("Helper", 0, 0),
            ("Senior", 0, 5),
        ];
        let roles = join_all(specs.iter().map(|&(name, permissions, position)| async move {
            let role = ok(app.post(&at("roles/".into()), t, json!({"name": name})).await);
            let id = text(&role["id"]);
            if position != 0 {
                let patch = json!({"permissions": permissions.to_string(), "position": position});
                ok(app.patch(&at(format!("roles/{id}")), t, patch).await);
            }
            id
        }))
        .await;
        let [admin_role, mod_role, low_role, helper_role, senior_role]: [String; 5] =
            roles.try_into().expect("five roles");

        let invite = text(&ok(app.post(&at("invites/".into()), t, json!({})).await)["id"]);
        join_all([&admin, &moderator, &member, &low, &banned, &victim, &peer].map(|u| {
            let path = format!("/spaces/join/{invite}");
            async move { ok(app.call(Method::POST, &path, Some(&u.token), None).await) }
        }))
        .await;
        join_all(
            [
                (&admin, &admin_role),
                (&moderator, &mod_role),
                (&low, &low_role),
                (&peer, &mod_role),
            ]
            .map(|(u, r)| {
                let path = at(format!("members/{}/roles/{r}", u.id));
                async move { ok(app.call(Method::POST, &path, t, None).await) }
            }),
        )
        .await;
        ok(app.post(&at("bans/".into()), t, json!({"userId": banned.id})).await);

        let channels = join_all(["hidden", "doomed"].map(|name| {
            let path = at("channels/".into());
            async move { text(&ok(app.post(&path, t, json!({"name": name})).await)["id"]) }
        }))
        .await;
        let [hidden, doomed]: [String; 2] = channels.try_into().expect("two channels");

        let mut overrides = vec![(&hidden, &everyone, "ROLE", 0, VIEW_CHANNEL)];
        if fx.general_overrides {
            overrides.extend([
                (&general, &low_role, "ROLE", 0, ATTACH_FILES),
                (&general, &admin_role, "ROLE", 0, ATTACH_FILES),
                (&general, &mod_role, "ROLE", 0, MANAGE_MESSAGES),
                (&general, &helper_role, "ROLE", MENTION_EVERYONE, 0),
                (&general, &victim.id, "MEMBER", 0, ATTACH_FILES),
                (&general, &peer.id, "MEMBER", 0, ATTACH_FILES),
            ]);
        }
        join_all(overrides.into_iter().map(|(channel, target, kind, allow, deny)| {
            let path = at(format!("channels/{channel}/overrides/{target}"));
            async move { ok(app.put(&path, t, overwrite(kind, allow, deny)).await) }
        }))
        .await;

        World {
            space: sid,
            general,
            hidden,
            doomed,
            everyone,
            admin_role,
            mod_role,
            low_role,
            helper_role,
            senior_role,
            invite,
            foreign_space: fx.foreign_space.clone(),
            foreign_channel: fx.foreign_channel.clone(),
            foreign_invite: fx.foreign_invite.clone(),
            bot: fx.bot.clone(),
            owner,
            admin,
            moderator,
            member,
            low,
            outsider,
            banned,
            victim,
            peer,
        }
    }

    fn actor(&self, a: Actor) -> &User {
        match a {
            Owner => &self.owner,
            Admin => &self.admin,
            Moderator => &self.moderator,
            Member => &self.member,
            Low => &self.low,
            Outsider => &self.outsider,
            Banned => &self.banned,
        }
    }

    fn token(&self, a: Actor) -> Option<&str> {
        Some(self.actor(a).token.as_str())
    }

    /// `/spaces/{space}/{rest}`, or `/spaces/{space}` for an empty `rest`.
    fn at(&self, rest: &str) -> String {
        if rest.is_empty() {
            format!("/spaces/{}", self.space)
        } else {
            format!("/spaces/{}/{rest}", self.space)
        }
    }

    fn channel(&self, channel: &str) -> String {
        self.at(&format!("channels/{channel}"))
    }

    fn overrides(&self, channel: &str) -> String {
        self.at(&format!("channels/{channel}/overrides/"))
    }

    fn override_of(&self, channel: &str, target: &str) -> String {
        self.at(&format!("channels/{channel}/overrides/{target}"))
    }

    fn member_path(&self, user: &User) -> String {
        self.at(&format!("members/{}", user.id))
    }

    fn member_role(&self, user: &User, role: &str) -> String {
        self.at(&format!("members/{}/roles/{role}", user.id))
    }

    fn role(&self, role: &str) -> String {
        self.at(&format!("roles/{role}"))
    }

    fn join(&self) -> String {
        format!("/spaces/join/{}", self.invite)
    }
}

/// Registers a user; the id comes from the access token's `sub`.
async fn signup(app: &TestApp, name: &str) -> User {
    let email = format!("{}-{}@example.org", name.to_lowercase(), uuid::Uuid::now_v7().simple());
    let r = app
        .post(
            "/account/register",
            None,
            json!({"email": email, "name": name, "password": PASSWORD}),
        )
        .await;
    let token = text(&ok(r)["accessToken"]);
    let payload = token.split('.').nth(1).expect("JWT payload");
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64 payload"),
    )
    .expect("JSON claims");
    User {
        id: text(&claims["sub"]),
        token,
    }
}

/// The body of a 200 response.
fn ok(r: Resp) -> Value {
    assert_eq!(r.status, 200, "expected 200, got {}", r.text);
    r.body
}

fn text(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v}"))
        .to_string()
}

fn overwrite(kind: &str, allow: u64, deny: u64) -> Value {
    json!({"targetType": kind, "allow": allow.to_string(), "deny": deny.to_string()})
}

/// A random id that names nothing.
fn nobody() -> String {
    uuid::Uuid::now_v7().to_string()
}

// ---------------------------------------------------------------------------------------------
// Rows and the runner
// ---------------------------------------------------------------------------------------------

struct Req {
    method: Method,
    path: String,
    body: Option<Value>,
}

fn get(path: String) -> Req {
    Req {
        method: Method::GET,
        path,
        body: None,
    }
}

fn post(path: String, body: Value) -> Req {
    Req {
        method: Method::POST,
        path,
        body: Some(body),
    }
}

/// A POST without a body (the operation takes none).
fn bare_post(path: String) -> Req {
    Req {
        method: Method::POST,
        path,
        body: None,
    }
}

fn patch(path: String, body: Value) -> Req {
    Req {
        method: Method::PATCH,
        path,
        body: Some(body),
    }
}

fn put(path: String, body: Value) -> Req {
    Req {
        method: Method::PUT,
        path,
        body: Some(body),
    }
}

fn delete(path: String) -> Req {
    Req {
        method: Method::DELETE,
        path,
        body: None,
    }
}

/// An expected answer: status, and the error `code` for errors.
type Expect = (u16, Option<&'static str>);

const OK: Expect = (200, None);
const NF: Expect = (404, Some("NotFound"));
const PERM: Expect = (403, Some("InsufficientPermissions"));
const RANK: Expect = (403, Some("InsufficientRank"));
const FORBID: Expect = (403, Some("Forbidden"));
const BANNED: Expect = (403, Some("Banned"));
const INVALID: Expect = (400, Some("ValidationFailed"));
const TARGETS_SELF: Expect = (400, Some("CannotTargetSelf"));
const IMMUTABLE: Expect = (400, Some("DefaultRoleImmutable"));
const ALREADY_MEMBER: Expect = (409, Some("AlreadyMember"));
const ALREADY_BANNED: Expect = (409, Some("AlreadyBanned"));
const OWNER_STAYS: Expect = (409, Some("OwnerCannotLeave"));

struct Row {
    /// The operationId.
    op: &'static str,
    case: &'static str,
    req: fn(&World) -> Req,
    /// In [`ACTORS`] order: owner, admin, moderator, member, low, outsider, banned.
    expect: [Expect; 7],
    /// A success leaves the world's snapshot unchanged, so it may run in the shared world.
    harmless: bool,
}

fn row(op: &'static str, case: &'static str, req: fn(&World) -> Req, expect: [Expect; 7]) -> Row {
    Row {
        op,
        case,
        req,
        expect,
        harmless: false,
    }
}

impl Row {
    fn harmless(mut self) -> Row {
        self.harmless = true;
        self
    }
}

async fn send(app: &TestApp, w: &World, actor: Actor, row: &Row) -> Resp {
    let req = (row.req)(w);
    app.call(req.method, &req.path, w.token(actor), req.body).await
}

fn verdict(row: &Row, actor: Actor, want: Expect, got: &Resp) -> Option<String> {
    let code = got.body.get("code").and_then(Value::as_str);
    let matches = got.status == want.0
        && match want.1 {
            Some(c) => code == Some(c) && got.body["message"].is_string(),
            None => true,
        };
    (!matches).then(|| {
        let body: String = got.text.chars().take(200).collect();
        format!(
            "{} ({}) as {actor:?}: expected {} {}, got {} {body}",
            row.op,
            row.case,
            want.0,
            want.1.unwrap_or(""),
            got.status
        )
    })
}

/// The owner's view of a world: everything a refused call must leave unchanged.
async fn snapshot(app: &TestApp, w: &World) -> Vec<(String, u16, Value)> {
    let paths = [
        w.at(""),
        w.at("members/?limit=200"),
        w.at("bans/"),
        w.at("invites/"),
        w.overrides(&w.general),
        w.overrides(&w.hidden),
    ];
    let token = w.token(Owner);
    join_all(paths.into_iter().map(|p| async move {
        let r = app.get(&p, token).await;
        (p, r.status, r.body)
    }))
    .await
}

/// Runs rows against every actor: refusals and harmless calls in one shared world (whose
/// snapshot must never change), expected successes of writes each in a fresh world.
async fn run_matrix(rows: Vec<Row>, general_overrides: bool) {
    let app = TestApp::spawn().await;
    let fx = Fixtures::create(&app, general_overrides).await;
    let shared = World::build(&app, &fx).await;
    let mut baseline = snapshot(&app, &shared).await;
    let mut failures = Vec::new();
    let mut fresh = Vec::new();
    for row in &rows {
        let method = (row.req)(&shared).method;
        let mut answered = Vec::new();
        for (actor, want) in ACTORS.into_iter().zip(row.expect) {
            if want == OK && !row.harmless && method != Method::GET {
                fresh.push((row, actor, want));
                continue;
            }
            let got = send(&app, &shared, actor, row).await;
            failures.extend(verdict(row, actor, want, &got));
            answered.push((actor, got.status));
        }
        // A row repeats one request, none of which can undo another's change, so a snapshot
        // after the row's refusals shows whether any of them changed something.
        if method == Method::GET || answered.is_empty() {
            continue;
        }
        let now = snapshot(&app, &shared).await;
        if now != baseline {
            let changed: Vec<&str> = now
                .iter()
                .zip(&baseline)
                .filter(|(a, b)| a != b)
                .map(|(a, _)| a.0.as_str())
                .collect();
            failures.push(format!(
                "{} ({}) answered {answered:?} but changed {changed:?}",
                row.op, row.case
            ));
            baseline = now;
        }
    }
    let (app, fx) = (&app, &fx);
    let outcomes: Vec<Option<String>> = futures_util::stream::iter(fresh)
        .map(|(row, actor, want)| async move {
            let w = World::build(app, fx).await;
            verdict(row, actor, want, &send(app, &w, actor, row).await)
        })
        .buffer_unordered(4)
        .collect()
        .await;
    failures.extend(outcomes.into_iter().flatten());
    assert!(
        failures.is_empty(),
        "{} expectation(s) of the matrix failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// The matrix. Columns: owner, admin, moderator, member, low, outsider, banned.
// ---------------------------------------------------------------------------------------------

fn space_rows() -> Vec<Row> {
    vec![
        row("spaces.list", "own spaces", |_| get("/spaces/".into()), [OK; 7]),
        row(
            "spaces.create",
            "new space",
            |_| post("/spaces/".into(), json!({"name": "Another"})),
            [OK; 7],
        )
        .harmless(),
        row(
            "spaces.create",
            "blank name",
            |_| post("/spaces/".into(), json!({"name": "   "})),
            [INVALID; 7],
        ),
        row(
            "spaces.get",
            "the world",
            |w| get(w.at("")),
            [OK, OK, OK, OK, OK, NF, NF],
        ),
        row(
            "spaces.update",
            "rename",
            |w| patch(w.at(""), json!({"name": "Renamed"})),
            [OK, OK, OK, PERM, PERM, NF, NF],
        ),
        row(
            "spaces.update",
            "blank name",
            |w| patch(w.at(""), json!({"name": ""})),
            [INVALID, INVALID, INVALID, PERM, PERM, NF, NF],
        ),
        row(
            "spaces.delete",
            "the world",
            |w| delete(w.at("")),
            [OK, FORBID, FORBID, FORBID, FORBID, NF, NF],
        ),
        row("spaces.preview", "valid invite", |w| get(w.join()), [OK; 7]),
        row(
            "spaces.preview",
            "unknown invite",
            |_| get("/spaces/join/NoSuchInvite".into()),
            [NF; 7],
        ),
        row(
            "spaces.join",
            "valid invite",
            |w| bare_post(w.join()),
            [
                ALREADY_MEMBER,
                ALREADY_MEMBER,
                ALREADY_MEMBER,
                ALREADY_MEMBER,
                ALREADY_MEMBER,
                OK,
                BANNED,
            ],
        ),
        row(
            "spaces.leave",
            "the world",
            |w| delete(w.at("leave")),
            [OWNER_STAYS, OK, OK, OK, OK, NF, NF],
        ),
        row(
            "spaces.listNotificationPreferences",
            "own preferences",
            |_| get("/spaces/notification-preferences".into()),
            [OK; 7],
        ),
        row(
            "spaces.getNotificationPreference",
            "own preference",
            |w| get(w.at("notification-preference")),
            [OK, OK, OK, OK, OK, NF, NF],
        ),
        row(
            "spaces.setNotificationPreference",
            "own preference",
            |w| post(w.at("notification-preference"), json!({"level": "MENTIONS"})),
            [OK, OK, OK, OK, OK, NF, NF],
        )
        .harmless(),
        row(
            "spaces.transferOwnership",
            "to a member",
            |w| post(w.at("transfer_ownership"), json!({"userId": w.member.id})),
            [OK, FORBID, FORBID, FORBID, FORBID, NF, NF],
        ),
        row(
            "spaces.transferOwnership",
            "to the owner",
            |w| post(w.at("transfer_ownership"), json!({"userId": w.owner.id})),
            [INVALID, FORBID, FORBID, FORBID, FORBID, NF, NF],
        ),
        row(
            "spaces.transferOwnership",
            "to a non-member",
            |w| post(w.at("transfer_ownership"), json!({"userId": w.outsider.id})),
            [NF; 7],
        ),
    ]
}

fn channel_rows() -> Vec<Row> {
    vec![
        row(
            "channels.list",
            "visible channels",
            |w| get(w.at("channels/")),
            [OK, OK, OK, OK, OK, NF, NF],
        ),
        row(
            "channels.create",
            "top level",
            |w| post(w.at("channels/"), json!({"name": "new"})),
            [OK, OK, OK, PERM, PERM, NF, NF],
        ),
        row(
            "channels.create",
            "blank name",
            |w| post(w.at("channels/"), json!({"name": ""})),
            [INVALID, INVALID, INVALID, PERM, PERM, NF, NF],
        ),
        row(
            "channels.create",
            "THREAD type",
            |w| post(w.at("channels/"), json!({"name": "t", "type": "THREAD"})),
            [INVALID, INVALID, INVALID, PERM, PERM, NF, NF],
        ),
        row(
            "channels.create",
            "under the hidden channel",
            |w| post(w.at("channels/"), json!({"name": "sub", "parentId": w.hidden})),
            [OK, OK, INVALID, PERM, PERM, NF, NF],
        ),
        row(
            "channels.create",
            "under a channel of another space",
            |w| post(w.at("channels/"), json!({"name": "sub", "parentId": w.foreign_channel})),
            [INVALID, INVALID, INVALID, PERM, PERM, NF, NF],
        ),
        row(
            "channels.get",
            "general",
            |w| get(w.channel(&w.general)),
            [OK, OK, OK, OK, OK, NF, NF],
        ),
        row(
            "channels.get",
            "hidden",
            |w| get(w.channel(&w.hidden)),
            [OK, OK, NF, NF, NF, NF, NF],
        ),
        row(
            "channels.get",
            "a channel of another space",
            |w| get(w.channel(&w.foreign_channel)),
            [NF; 7],
        ),
        row(
            "channels.update",
            "rename general",
            |w| patch(w.channel(&w.general), json!({"name": "renamed"})),
            [OK, OK, OK, PERM, PERM, NF, NF],
        ),
        row(
            "channels.update",
            "rename hidden",
            |w| patch(w.channel(&w.hidden), json!({"name": "renamed"})),
            [OK, OK, NF, NF, NF, NF, NF],
        ),
        row(
            "channels.update",
            "negative order",
            |w| patch(w.channel(&w.general), json!({"order": -1})),
            [INVALID, INVALID, INVALID, PERM, PERM, NF, NF],
        ),
        row(
            "channels.update",
            "parent in another space",
            |w| patch(w.channel(&w.general), json!({"parentId": w.foreign_channel})),
            [INVALID, INVALID, INVALID, PERM, PERM, NF, NF],
        ),
        row(
            "channels.update",
            "a channel of another space",
            |w| patch(w.channel(&w.foreign_channel), json!({"name": "mine"})),
            [NF; 7],
        ),
        row(
            "channels.delete",
            "doomed",
            |w| delete(w.channel(&w.doomed)),
            [OK, OK, OK, PERM, PERM, NF, NF],
        ),
        row(
            "channels.delete",
            "hidden",
            |w| delete(w.channel(&w.hidden)),
            [OK, OK, NF, NF, NF, NF, NF],
        ),
        row(
            "channels.delete",
            "a channel of another space",
            |w| delete(w.channel(&w.foreign_channel)),
            [NF; 7],
        ),
        row(
            "channels.unreads",
            "own markers",
            |w| get(w.at("channels/unreads")),
            [OK, OK, OK, OK, OK, NF, NF],
        ),
        row(
            "channels.acknowledge",
            "general",
            |w| bare_post(w.at(&format!("channels/{}/ack", w.general))),
            [OK, OK, OK, OK, OK, NF, NF],
        )
        .harmless(),
        row(
            "channels.acknowledge",
            "hidden",
            |w| bare_post(w.at(&format!("channels/{}/ack", w.hidden))),
            [OK, OK, NF, NF, NF, NF, NF],
        )
        .harmless(),
        row(
            "channels.acknowledge",
            "unknown channel",
            |w| bare_post(w.at(&format!("channels/{}/ack", nobody()))),
            [NF; 7],
        ),
    ]
}

fn override_read_rows() -> Vec<Row> {
    vec![
        row(
            "channels.listOverrides",
            "general",
            |w| get(w.overrides(&w.general)),
            [OK, OK, OK, PERM, PERM, NF, NF],
        ),
        row(
            "channels.listOverrides",
            "hidden",
            |w| get(w.overrides(&w.hidden)),
            [OK, OK, NF, NF, NF, NF, NF],
        ),
        row(
            "channels.listOverrides",
            "a channel of another space",
            |w| get(w.overrides(&w.foreign_channel)),
            [NF; 7],
        ),
        row(
            "channels.getOverride",
            "general, role Low",
            |w| get(w.override_of(&w.general, &w.low_role)),
            [OK, OK, OK, PERM, PERM, NF, NF],
        ),
        row(
            "channels.getOverride",
            "hidden, @everyone",
            |w| get(w.override_of(&w.hidden, &w.everyone)),
            [OK, OK, NF, NF, NF, NF, NF],
        ),
        // The override itself is what MANAGE_ROLES reveals: without it, 403 whether or not one exists.
        row(
            "channels.getOverride",
            "general, a role without override",
            |w| get(w.override_of(&w.general, &w.senior_role)),
            [NF, NF, NF, PERM, PERM, NF, NF],
        ),
    ]
}

fn override_set_rows() -> Vec<Row> {
    vec![
        row(
            "channels.setOverride",
            "general, role Low (below the moderator)",
            |w| {
                put(
                    w.override_of(&w.general, &w.low_role),
                    overwrite("ROLE", 0, SEND_MESSAGES),
                )
            },
            [OK, OK, OK, PERM, PERM, NF, NF],
        ),
        row(
            "channels.setOverride",
            "general, @everyone",
            |w| {
                put(
                    w.override_of(&w.general, &w.everyone),
                    overwrite("ROLE", 0, ATTACH_FILES),
                )
            },
            [OK, OK, OK, PERM, PERM, NF, NF],
        ),
        row(
            "channels.setOverride",
            "general, role Moderator (equal to the moderator)",
            |w| {
                put(
                    w.override_of(&w.general, &w.mod_role),
                    overwrite("ROLE", 0, ATTACH_FILES),
                )
            },
            [OK, OK, RANK, PERM, PERM, NF, NF],
        ),
        row(
            "channels.setOverride",
            "general, role Admin",
            |w| {
                put(
                    w.override_of(&w.general, &w.admin_role),
                    overwrite("ROLE", 0, SEND_MESSAGES),
                )
            },
            [OK, RANK, RANK, PERM, PERM, NF, NF],
        ),
        row(
            "channels.setOverride",
            "general, role Senior (position 5: ADMIN does not bypass rank)",
            |w| {
                put(
                    w.override_of(&w.general, &w.senior_role),
                    overwrite("ROLE", 0, SEND_MESSAGES),
                )
            },
            [OK, RANK, RANK, PERM, PERM, NF, NF],
        ),
        row(
            "channels.setOverride",
            "general, member victim (no roles)",
            |w| {
                put(
                    w.override_of(&w.general, &w.victim.id),
                    overwrite("MEMBER", 0, SEND_MESSAGES),
                )
            },
            [OK, OK, OK, PERM, PERM, NF, NF],
        ),
        row(
            "channels.setOverride",
            "general, member peer (equal to the moderator)",
            |w| {
                put(
                    w.override_of(&w.general, &w.peer.id),
                    overwrite("MEMBER", 0, SEND_MESSAGES),
                )
            },
            [OK, OK, RANK, PERM, PERM, NF, NF],
        ),
        row(
            "channels.setOverride",
            "general, member moderator",
            |w| {
                put(
                    w.override_of(&w.general, &w.moderator.id),
                    overwrite("MEMBER", 0, SEND_MESSAGES),
                )
            },
            [OK, OK, RANK, PERM, PERM, NF, NF],
        ),
        // The owner is below no one, not even themselves (spec §5.6: "the member is below A").
        row(
            "channels.setOverride",
            "general, member owner",
            |w| {
                put(
                    w.override_of(&w.general, &w.owner.id),
                    overwrite("MEMBER", 0, SEND_MESSAGES),
                )
            },
            [RANK, RANK, RANK, PERM, PERM, NF, NF],
        ),
        row(
            "channels.setOverride",
            "grants MENTION_EVERYONE, which the moderator does not hold",
            |w| {
                put(
                    w.override_of(&w.general, &w.low_role),
                    overwrite("ROLE", MENTION_EVERYONE, ATTACH_FILES),
                )
            },
            [OK, OK, RANK, PERM, PERM, NF, NF],
        ),
        row(
            "channels.setOverride",
            "denies MANAGE_MESSAGES, which the moderator does not hold",
            |w| {
                put(
                    w.override_of(&w.general, &w.low_role),
                    overwrite("ROLE", 0, ATTACH_FILES | MANAGE_MESSAGES),
                )
            },
            [OK, OK, RANK, PERM, PERM, NF, NF],
        ),
        row(
            "channels.setOverride",
            "the same bit allowed and denied",
            |w| {
                put(
                    w.override_of(&w.general, &w.low_role),
                    overwrite("ROLE", VIEW_CHANNEL, VIEW_CHANNEL),
                )
            },
            [INVALID, INVALID, INVALID, PERM, PERM, NF, NF],
        ),
        row(
            "channels.setOverride",
            "MENTION_EVERYONE allowed and denied (grant rule before validation)",
            |w| {
                put(
                    w.override_of(&w.general, &w.low_role),
                    overwrite("ROLE", MENTION_EVERYONE, MENTION_EVERYONE),
                )
            },
            [INVALID, INVALID, RANK, PERM, PERM, NF, NF],
        ),
        row(
            "channels.setOverride",
            "a bit that is not override-capable",
            |w| put(w.override_of(&w.general, &w.low_role), overwrite("ROLE", ADMIN, 0)),
            [INVALID, INVALID, INVALID, PERM, PERM, NF, NF],
        ),
        row(
            "channels.setOverride",
            "unknown role",
            |w| {
                put(
                    w.override_of(&w.general, &nobody()),
                    overwrite("ROLE", 0, SEND_MESSAGES),
                )
            },
            [NF; 7],
        ),
        row(
            "channels.setOverride",
            "a user who is not a member",
            |w| {
                put(
                    w.override_of(&w.general, &w.outsider.id),
                    overwrite("MEMBER", 0, SEND_MESSAGES),
                )
            },
            [NF; 7],
        ),
        row(
            "channels.setOverride",
            "hidden, @everyone",
            |w| {
                put(
                    w.override_of(&w.hidden, &w.everyone),
                    overwrite("ROLE", 0, VIEW_CHANNEL),
                )
            },
            [OK, OK, NF, NF, NF, NF, NF],
        ),
        row(
            "channels.setOverride",
            "a channel of another space",
            |w| {
                put(
                    w.override_of(&w.foreign_channel, &w.everyone),
                    overwrite("ROLE", 0, SEND_MESSAGES),
                )
            },
            [NF; 7],
        ),
    ]
}

fn override_delete_rows() -> Vec<Row> {
    vec![
        row(
            "channels.deleteOverride",
            "general, role Low",
            |w| delete(w.override_of(&w.general, &w.low_role)),
            [OK, OK, OK, PERM, PERM, NF, NF],
        ),
        row(
            "channels.deleteOverride",
            "general, role Moderator",
            |w| delete(w.override_of(&w.general, &w.mod_role)),
            [OK, OK, RANK, PERM, PERM, NF, NF],
        ),
        row(
            "channels.deleteOverride",
            "general, role Admin",
            |w| delete(w.override_of(&w.general, &w.admin_role)),
            [OK, RANK, RANK, PERM, PERM, NF, NF],
        ),
        row(
            "channels.deleteOverride",
            "general, member peer",
            |w| delete(w.override_of(&w.general, &w.peer.id)),
            [OK, OK, RANK, PERM, PERM, NF, NF],
        ),
        row(
            "channels.deleteOverride",
            "general, member victim",
            |w| delete(w.override_of(&w.general, &w.victim.id)),
            [OK, OK, OK, PERM, PERM, NF, NF],
        ),
        row(
            "channels.deleteOverride",
            "revokes MENTION_EVERYONE, which the moderator does not hold",
            |w| delete(w.override_of(&w.general, &w.helper_role)),
            [OK, OK, RANK, PERM, PERM, NF, NF],
        ),
        row(
            "channels.deleteOverride",
            "hidden, @everyone",
            |w| delete(w.override_of(&w.hidden, &w.everyone)),
            [OK, OK, NF, NF, NF, NF, NF],
        ),
    ]
}

fn member_rows() -> Vec<Row> {
    vec![
        row(
            "members.list",
            "the world",
            |w| get(w.at("members/")),
            [OK, OK, OK, OK, OK, NF, NF],
        ),
        row(
            "members.get",
            "victim",
            |w| get(w.member_path(&w.victim)),
            [OK, OK, OK, OK, OK, NF, NF],
        ),
        row(
            "members.get",
            "a user who is not a member",
            |w| get(w.member_path(&w.outsider)),
            [NF; 7],
        ),
        row(
            "members.create",
            "a public bot",
            |w| post(w.at("members/"), json!({"userId": w.bot})),
            [OK, OK, PERM, PERM, PERM, NF, NF],
        ),
        row(
            "members.create",
            "a user who is not a bot",
            |w| post(w.at("members/"), json!({"userId": w.outsider.id})),
            [FORBID, FORBID, PERM, PERM, PERM, NF, NF],
        ),
        row(
            "members.create",
            "unknown user",
            |w| post(w.at("members/"), json!({"userId": nobody()})),
            [NF; 7],
        ),
        row(
            "members.update",
            "victim gets Helper",
            |w| patch(w.member_path(&w.victim), json!({"roleIds": [w.helper_role]})),
            [OK, OK, OK, PERM, PERM, NF, NF],
        ),
        row(
            "members.update",
            "victim gets Moderator",
            |w| patch(w.member_path(&w.victim), json!({"roleIds": [w.mod_role]})),
            [OK, OK, RANK, PERM, PERM, NF, NF],
        ),
        row(
            "members.update",
            "victim gets Admin",
            |w| patch(w.member_path(&w.victim), json!({"roleIds": [w.admin_role]})),
            [OK, RANK, RANK, PERM, PERM, NF, NF],
        ),
        row(
            "members.update",
            "victim gets Senior (position 5: ADMIN does not bypass rank)",
            |w| patch(w.member_path(&w.victim), json!({"roleIds": [w.senior_role]})),
            [OK, RANK, RANK, PERM, PERM, NF, NF],
        ),
        row(
            "members.update",
            "peer keeps Moderator (untouched) and gets Helper",
            |w| patch(w.member_path(&w.peer), json!({"roleIds": [w.mod_role, w.helper_role]})),
            [OK, OK, OK, PERM, PERM, NF, NF],
        ),
        row(
            "members.update",
            "peer loses Moderator",
            |w| patch(w.member_path(&w.peer), json!({"roleIds": []})),
            [OK, OK, RANK, PERM, PERM, NF, NF],
        ),
        row(
            "members.update",
            "low loses Low",
            |w| patch(w.member_path(&w.low), json!({"roleIds": []})),
            [OK, OK, OK, PERM, PERM, NF, NF],
        ),
        row(
            "members.update",
            "@everyone is ignored",
            |w| patch(w.member_path(&w.victim), json!({"roleIds": [w.everyone]})),
            [OK, OK, OK, PERM, PERM, NF, NF],
        ),
        row(
            "members.update",
            "unknown role",
            |w| patch(w.member_path(&w.victim), json!({"roleIds": [nobody()]})),
            [NF; 7],
        ),
        row(
            "members.update",
            "a user who is not a member",
            |w| patch(w.member_path(&w.outsider), json!({"roleIds": []})),
            [NF; 7],
        ),
    ]
}

fn member_role_rows() -> Vec<Row> {
    vec![
        row(
            "members.addRole",
            "victim, Helper",
            |w| bare_post(w.member_role(&w.victim, &w.helper_role)),
            [OK, OK, OK, PERM, PERM, NF, NF],
        ),
        row(
            "members.addRole",
            "victim, Moderator (equal to the moderator)",
            |w| bare_post(w.member_role(&w.victim, &w.mod_role)),
            [OK, OK, RANK, PERM, PERM, NF, NF],
        ),
        row(
            "members.addRole",
            "victim, Admin",
            |w| bare_post(w.member_role(&w.victim, &w.admin_role)),
            [OK, RANK, RANK, PERM, PERM, NF, NF],
        ),
        row(
            "members.addRole",
            "moderator gives themselves Admin",
            |w| bare_post(w.member_role(&w.moderator, &w.admin_role)),
            [OK, RANK, RANK, PERM, PERM, NF, NF],
        ),
        row(
            "members.addRole",
            "victim, Senior (position 5: ADMIN does not bypass rank)",
            |w| bare_post(w.member_role(&w.victim, &w.senior_role)),
            [OK, RANK, RANK, PERM, PERM, NF, NF],
        ),
        row(
            "members.addRole",
            "victim, @everyone",
            |w| bare_post(w.member_role(&w.victim, &w.everyone)),
            [IMMUTABLE, IMMUTABLE, IMMUTABLE, PERM, PERM, NF, NF],
        ),
        row(
            "members.addRole",
            "unknown role",
            |w| bare_post(w.member_role(&w.victim, &nobody())),
            [NF; 7],
        ),
        row(
            "members.addRole",
            "a user who is not a member",
            |w| bare_post(w.member_role(&w.outsider, &w.helper_role)),
            [NF; 7],
        ),
        row(
            "members.addRole",
            "low, Low (already assigned)",
            |w| bare_post(w.member_role(&w.low, &w.low_role)),
            [OK, OK, OK, PERM, PERM, NF, NF],
        ),
        row(
            "members.addRole",
            "peer, Moderator (already assigned, equal to the moderator)",
            |w| bare_post(w.member_role(&w.peer, &w.mod_role)),
            [OK, OK, RANK, PERM, PERM, NF, NF],
        ),
        row(
            "members.removeRole",
            "low, Low",
            |w| delete(w.member_role(&w.low, &w.low_role)),
            [OK, OK, OK, PERM, PERM, NF, NF],
        ),
        row(
            "members.removeRole",
            "peer, Moderator",
            |w| delete(w.member_role(&w.peer, &w.mod_role)),
            [OK, OK, RANK, PERM, PERM, NF, NF],
        ),
        row(
            "members.removeRole",
            "admin, Admin",
            |w| delete(w.member_role(&w.admin, &w.admin_role)),
            [OK, RANK, RANK, PERM, PERM, NF, NF],
        ),
        row(
            "members.removeRole",
            "victim, @everyone",
            |w| delete(w.member_role(&w.victim, &w.everyone)),
            [IMMUTABLE, IMMUTABLE, IMMUTABLE, PERM, PERM, NF, NF],
        ),
        row(
            "members.removeRole",
            "victim, Helper (not assigned)",
            |w| delete(w.member_role(&w.victim, &w.helper_role)),
            [OK, OK, OK, PERM, PERM, NF, NF],
        ),
        row(
            "members.removeRole",
            "victim, Senior (not assigned, position 5)",
            |w| delete(w.member_role(&w.victim, &w.senior_role)),
            [OK, RANK, RANK, PERM, PERM, NF, NF],
        ),
        row(
            "members.removeRole",
            "unknown role",
            |w| delete(w.member_role(&w.victim, &nobody())),
            [NF; 7],
        ),
    ]
}

fn kick_rows() -> Vec<Row> {
    vec![
        row(
            "members.delete",
            "victim (no roles)",
            |w| delete(w.member_path(&w.victim)),
            [OK, OK, OK, PERM, PERM, NF, NF],
        ),
        row(
            "members.delete",
            "the owner",
            |w| delete(w.member_path(&w.owner)),
            [TARGETS_SELF, RANK, RANK, PERM, PERM, NF, NF],
        ),
        row(
            "members.delete",
            "admin",
            |w| delete(w.member_path(&w.admin)),
            [OK, TARGETS_SELF, RANK, PERM, PERM, NF, NF],
        ),
        row(
            "members.delete",
            "moderator",
            |w| delete(w.member_path(&w.moderator)),
            [OK, OK, TARGETS_SELF, PERM, PERM, NF, NF],
        ),
        row(
            "members.delete",
            "peer (equal to the moderator)",
            |w| delete(w.member_path(&w.peer)),
            [OK, OK, RANK, PERM, PERM, NF, NF],
        ),
        row(
            "members.delete",
            "low (below the moderator)",
            |w| delete(w.member_path(&w.low)),
            [OK, OK, OK, PERM, PERM, NF, NF],
        ),
        row(
            "members.delete",
            "member",
            |w| delete(w.member_path(&w.member)),
            [OK, OK, OK, PERM, PERM, NF, NF],
        ),
        row(
            "members.delete",
            "a user who is not a member",
            |w| delete(w.member_path(&w.outsider)),
            [NF; 7],
        ),
        row(
            "members.delete",
            "the banned user",
            |w| delete(w.member_path(&w.banned)),
            [NF; 7],
        ),
    ]
}

fn role_update_rows() -> Vec<Row> {
    vec![
        row(
            "roles.list",
            "the world",
            |w| get(w.at("roles/")),
            [OK, OK, OK, OK, OK, NF, NF],
        ),
        row(
            "roles.update",
            "rename Helper",
            |w| patch(w.role(&w.helper_role), json!({"name": "Renamed"})),
            [OK, OK, OK, PERM, PERM, NF, NF],
        ),
        row(
            "roles.update",
            "recolour Low",
            |w| patch(w.role(&w.low_role), json!({"color": "#abc"})),
            [OK, OK, OK, PERM, PERM, NF, NF],
        ),
        row(
            "roles.update",
            "rename Moderator",
            |w| patch(w.role(&w.mod_role), json!({"name": "Renamed"})),
            [OK, OK, RANK, PERM, PERM, NF, NF],
        ),
        row(
            "roles.update",
            "rename Admin",
            |w| patch(w.role(&w.admin_role), json!({"name": "Renamed"})),
            [OK, RANK, RANK, PERM, PERM, NF, NF],
        ),
        row(
            "roles.update",
            "rename Senior (position 5: ADMIN does not bypass rank)",
            |w| patch(w.role(&w.senior_role), json!({"name": "Renamed"})),
            [OK, RANK, RANK, PERM, PERM, NF, NF],
        ),
        row(
            "roles.update",
            "move Helper to 3",
            |w| patch(w.role(&w.helper_role), json!({"position": 3})),
            [OK, OK, RANK, PERM, PERM, NF, NF],
        ),
        row(
            "roles.update",
            "move Helper to 5",
            |w| patch(w.role(&w.helper_role), json!({"position": 5})),
            [OK, RANK, RANK, PERM, PERM, NF, NF],
        ),
        row(
            "roles.update",
            "move Helper to -1",
            |w| patch(w.role(&w.helper_role), json!({"position": -1})),
            [INVALID, INVALID, INVALID, PERM, PERM, NF, NF],
        ),
        row(
            "roles.update",
            "Helper gains ADMIN",
            |w| patch(w.role(&w.helper_role), json!({"permissions": ADMIN.to_string()})),
            [OK, OK, RANK, PERM, PERM, NF, NF],
        ),
        row(
            "roles.update",
            "Helper gains BAN (held by the moderator)",
            |w| patch(w.role(&w.helper_role), json!({"permissions": "2048"})),
            [OK, OK, OK, PERM, PERM, NF, NF],
        ),
        row(
            "roles.update",
            "Helper gains MANAGE_MESSAGES (not held by the moderator)",
            |w| {
                patch(
                    w.role(&w.helper_role),
                    json!({"permissions": MANAGE_MESSAGES.to_string()}),
                )
            },
            [OK, OK, RANK, PERM, PERM, NF, NF],
        ),
        row(
            "roles.update",
            "malformed permissions",
            |w| patch(w.role(&w.helper_role), json!({"permissions": "lots"})),
            [INVALID, INVALID, INVALID, PERM, PERM, NF, NF],
        ),
        row(
            "roles.update",
            "@everyone as the role editor sends it back",
            |w| {
                patch(
                    w.role(&w.everyone),
                    json!({"name": "@everyone", "position": -1, "permissions": "28672", "color": null}),
                )
            },
            [OK, OK, OK, PERM, PERM, NF, NF],
        ),
        row(
            "roles.update",
            "@everyone gains BAN",
            |w| patch(w.role(&w.everyone), json!({"permissions": "30720"})),
            [OK, OK, OK, PERM, PERM, NF, NF],
        ),
        row(
            "roles.update",
            "@everyone gains ADMIN",
            |w| patch(w.role(&w.everyone), json!({"permissions": "28673"})),
            [OK, OK, RANK, PERM, PERM, NF, NF],
        ),
        row(
            "roles.update",
            "blank name and position 5 (rank before validation)",
            |w| patch(w.role(&w.helper_role), json!({"name": "", "position": 5})),
            [INVALID, RANK, RANK, PERM, PERM, NF, NF],
        ),
        row(
            "roles.update",
            "blank name and ADMIN (grant rule before validation)",
            |w| patch(w.role(&w.helper_role), json!({"name": "", "permissions": "1"})),
            [INVALID, INVALID, RANK, PERM, PERM, NF, NF],
        ),
        row(
            "roles.update",
            "@everyone with a blank name and position 99 (both ignored)",
            |w| patch(w.role(&w.everyone), json!({"name": "", "position": 99})),
            [OK, OK, OK, PERM, PERM, NF, NF],
        ),
        row(
            "roles.update",
            "unknown role",
            |w| patch(w.role(&nobody()), json!({"name": "Renamed"})),
            [NF; 7],
        ),
    ]
}

fn role_create_delete_rows() -> Vec<Row> {
    vec![
        row(
            "roles.create",
            "New",
            |w| post(w.at("roles/"), json!({"name": "New"})),
            [OK, OK, OK, PERM, PERM, NF, NF],
        ),
        row(
            "roles.create",
            "a second @everyone",
            |w| post(w.at("roles/"), json!({"name": "@Everyone"})),
            [INVALID, INVALID, INVALID, PERM, PERM, NF, NF],
        ),
        row(
            "roles.delete",
            "Helper",
            |w| delete(w.role(&w.helper_role)),
            [OK, OK, OK, PERM, PERM, NF, NF],
        ),
        row(
            "roles.delete",
            "Low (assigned)",
            |w| delete(w.role(&w.low_role)),
            [OK, OK, OK, PERM, PERM, NF, NF],
        ),
        row(
            "roles.delete",
            "Moderator",
            |w| delete(w.role(&w.mod_role)),
            [OK, OK, RANK, PERM, PERM, NF, NF],
        ),
        row(
            "roles.delete",
            "Admin",
            |w| delete(w.role(&w.admin_role)),
            [OK, RANK, RANK, PERM, PERM, NF, NF],
        ),
        row(
            "roles.delete",
            "Senior (position 5: ADMIN does not bypass rank)",
            |w| delete(w.role(&w.senior_role)),
            [OK, RANK, RANK, PERM, PERM, NF, NF],
        ),
        row(
            "roles.delete",
            "@everyone",
            |w| delete(w.role(&w.everyone)),
            [IMMUTABLE, IMMUTABLE, IMMUTABLE, PERM, PERM, NF, NF],
        ),
        row("roles.delete", "unknown role", |w| delete(w.role(&nobody())), [NF; 7]),
    ]
}

fn ban_rows() -> Vec<Row> {
    vec![
        row(
            "bans.list",
            "the world",
            |w| get(w.at("bans/")),
            [OK, OK, OK, PERM, PERM, NF, NF],
        ),
        row(
            "bans.create",
            "victim (no roles)",
            |w| post(w.at("bans/"), json!({"userId": w.victim.id})),
            [OK, OK, OK, PERM, PERM, NF, NF],
        ),
        row(
            "bans.create",
            "the owner",
            |w| post(w.at("bans/"), json!({"userId": w.owner.id})),
            [TARGETS_SELF, RANK, RANK, PERM, PERM, NF, NF],
        ),
        row(
            "bans.create",
            "admin",
            |w| post(w.at("bans/"), json!({"userId": w.admin.id})),
            [OK, TARGETS_SELF, RANK, PERM, PERM, NF, NF],
        ),
        row(
            "bans.create",
            "moderator",
            |w| post(w.at("bans/"), json!({"userId": w.moderator.id})),
            [OK, OK, TARGETS_SELF, PERM, PERM, NF, NF],
        ),
        row(
            "bans.create",
            "peer (equal to the moderator)",
            |w| post(w.at("bans/"), json!({"userId": w.peer.id})),
            [OK, OK, RANK, PERM, PERM, NF, NF],
        ),
        row(
            "bans.create",
            "low (below the moderator)",
            |w| post(w.at("bans/"), json!({"userId": w.low.id, "reason": "matrix"})),
            [OK, OK, OK, PERM, PERM, NF, NF],
        ),
        row(
            "bans.create",
            "a user who is not a member",
            |w| post(w.at("bans/"), json!({"userId": w.outsider.id})),
            [OK, OK, OK, PERM, PERM, NF, NF],
        ),
        row(
            "bans.create",
            "the banned user again",
            |w| post(w.at("bans/"), json!({"userId": w.banned.id})),
            [ALREADY_BANNED, ALREADY_BANNED, ALREADY_BANNED, PERM, PERM, NF, NF],
        ),
        row(
            "bans.create",
            "unknown user",
            |w| post(w.at("bans/"), json!({"userId": nobody()})),
            [NF; 7],
        ),
        row(
            "bans.create",
            "a reason of 513 characters",
            |w| post(w.at("bans/"), json!({"userId": w.victim.id, "reason": "x".repeat(513)})),
            [INVALID, INVALID, INVALID, PERM, PERM, NF, NF],
        ),
        row(
            "bans.delete",
            "the banned user",
            |w| delete(w.at(&format!("bans/{}", w.banned.id))),
            [OK, OK, OK, PERM, PERM, NF, NF],
        ),
        row(
            "bans.delete",
            "a user who is not banned (idempotent)",
            |w| delete(w.at(&format!("bans/{}", w.outsider.id))),
            [OK, OK, OK, PERM, PERM, NF, NF],
        ),
    ]
}

fn invite_rows() -> Vec<Row> {
    vec![
        row(
            "invites.create",
            "empty object",
            |w| post(w.at("invites/"), json!({})),
            [OK, OK, OK, PERM, PERM, NF, NF],
        ),
        row(
            "invites.create",
            "no body",
            |w| bare_post(w.at("invites/")),
            [OK, OK, OK, PERM, PERM, NF, NF],
        ),
        row(
            "invites.create",
            "maxUses 0",
            |w| post(w.at("invites/"), json!({"maxUses": 0})),
            [INVALID, INVALID, INVALID, PERM, PERM, NF, NF],
        ),
        row(
            "invites.create",
            "expiry in the past",
            |w| post(w.at("invites/"), json!({"expiresAt": "2001-01-01T00:00:00Z"})),
            [INVALID, INVALID, INVALID, PERM, PERM, NF, NF],
        ),
        row(
            "invites.list",
            "the world",
            |w| get(w.at("invites/")),
            [OK, OK, OK, PERM, PERM, NF, NF],
        ),
        row(
            "invites.delete",
            "the world's invite",
            |w| delete(w.at(&format!("invites/{}", w.invite))),
            [OK, OK, OK, PERM, PERM, NF, NF],
        ),
        // Invites are only visible with MANAGE_INVITES: without it, 403 whether or not one exists.
        row(
            "invites.delete",
            "an invite of another space",
            |w| delete(w.at(&format!("invites/{}", w.foreign_invite))),
            [NF, NF, NF, PERM, PERM, NF, NF],
        ),
        row(
            "invites.delete",
            "unknown invite",
            |w| delete(w.at("invites/NoSuchInvite")),
            [NF, NF, NF, PERM, PERM, NF, NF],
        ),
        row(
            "invites.create",
            "in another space",
            |w| post(format!("/spaces/{}/invites/", w.foreign_space), json!({})),
            [NF; 7],
        ),
    ]
}

/// Every operation the matrix must cover (spec §4.8 but handle verification, §4.9, §4.13–§4.16,
/// and the community operations of §4.17).
const OPERATIONS: [&str; 40] = [
    "spaces.list",
    "spaces.create",
    "spaces.get",
    "spaces.update",
    "spaces.delete",
    "spaces.preview",
    "spaces.join",
    "spaces.leave",
    "spaces.listNotificationPreferences",
    "spaces.getNotificationPreference",
    "spaces.setNotificationPreference",
    "channels.list",
    "channels.create",
    "channels.get",
    "channels.update",
    "channels.delete",
    "channels.unreads",
    "channels.acknowledge",
    "members.list",
    "members.create",
    "members.get",
    "members.update",
    "members.delete",
    "members.addRole",
    "members.removeRole",
    "roles.create",
    "roles.update",
    "roles.delete",
    "bans.list",
    "bans.create",
    "bans.delete",
    "invites.create",
    "invites.list",
    "invites.delete",
    "roles.list",
    "spaces.transferOwnership",
    "channels.listOverrides",
    "channels.getOverride",
    "channels.setOverride",
    "channels.deleteOverride",
];

fn all_rows() -> Vec<Row> {
    [
        space_rows(),
        channel_rows(),
        override_read_rows(),
        override_set_rows(),
        override_delete_rows(),
        member_rows(),
        member_role_rows(),
        kick_rows(),
        role_update_rows(),
        role_create_delete_rows(),
        ban_rows(),
        invite_rows(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

#[test]
fn the_matrix_covers_every_community_operation() {
    let rows = all_rows();
    let covered: BTreeSet<&str> = rows.iter().map(|r| r.op).collect();
    let wanted: BTreeSet<&str> = OPERATIONS.into_iter().collect();
    assert_eq!(covered, wanted);
    // Outsiders and banned users never see a space-scoped operation succeed or be refused with
    // anything but 404; the only exceptions are the operations that are not space-scoped.
    for r in &rows {
        let scoped = !matches!(
            r.op,
            "spaces.list" | "spaces.create" | "spaces.preview" | "spaces.join" | "spaces.listNotificationPreferences"
        );
        if scoped {
            assert_eq!((r.expect[5], r.expect[6]), (NF, NF), "{} ({})", r.op, r.case);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_spaces() {
    run_matrix(space_rows(), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_channels() {
    run_matrix(channel_rows(), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_override_reads() {
    run_matrix(override_read_rows(), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_override_sets() {
    run_matrix(override_set_rows(), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_override_deletes() {
    run_matrix(override_delete_rows(), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_members() {
    run_matrix(member_rows(), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_member_roles() {
    run_matrix(member_role_rows(), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_kicks() {
    run_matrix(kick_rows(), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_role_updates() {
    run_matrix(role_update_rows(), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_role_creation_and_deletion() {
    run_matrix(role_create_delete_rows(), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_bans() {
    run_matrix(ban_rows(), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_invites() {
    run_matrix(invite_rows(), false).await;
}

// ---------------------------------------------------------------------------------------------
// Visibility
// ---------------------------------------------------------------------------------------------

/// A fresh app with one world.
async fn world() -> (TestApp, World) {
    let app = TestApp::spawn().await;
    let fx = Fixtures::create(&app, true).await;
    let w = World::build(&app, &fx).await;
    (app, w)
}

/// Which of `channel` the actor finds in each place a channel can be listed.
async fn where_listed(app: &TestApp, w: &World, actor: Actor, channel: &str) -> [bool; 5] {
    let t = w.token(actor);
    let space = ok(app.get(&w.at(""), t).await);
    let list = ok(app.get("/spaces/", t).await);
    let entry = list
        .as_array()
        .expect("array")
        .iter()
        .find(|s| s["id"] == w.space.as_str())
        .expect("the world in spaces.list")
        .clone();
    let channels = ok(app.get(&w.at("channels/"), t).await);
    let unreads = ok(app.get(&w.at("channels/unreads"), t).await);
    let preview = ok(app.get(&w.join(), t).await);
    let marked = unreads
        .as_array()
        .expect("array")
        .iter()
        .any(|m| m["channelId"] == channel);
    [
        ids(&space["channels"]).contains(&channel.to_string()),
        ids(&entry["channels"]).contains(&channel.to_string()),
        ids(&channels).contains(&channel.to_string()),
        marked,
        ids(&preview["channels"]).contains(&channel.to_string()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_channels_never_appear_for_members_without_view_channel() {
    let (app, w) = world().await;
    let t = w.token(Owner);
    let everyone_override = w.override_of(&w.hidden, &w.everyone);
    // Everyone acknowledges the channel while it is visible, so that read markers exist...
    ok(app.delete(&everyone_override, t).await);
    for a in MEMBERS {
        for c in [&w.hidden, &w.general] {
            let path = w.at(&format!("channels/{c}/ack"));
            ok(app.call(Method::POST, &path, w.token(a), None).await);
        }
    }
    // ...then it is hidden again.
    ok(app.put(&everyone_override, t, overwrite("ROLE", 0, VIEW_CHANNEL)).await);

    for a in MEMBERS {
        let sees = matches!(a, Owner | Admin);
        assert_eq!(
            where_listed(&app, &w, a, &w.hidden).await,
            [sees; 5],
            "{a:?}: hidden channel in spaces.get, spaces.list, channels.list, channels.unreads, preview"
        );
        assert_eq!(where_listed(&app, &w, a, &w.general).await, [true; 5], "{a:?}: general");
        let status = app.get(&w.channel(&w.hidden), w.token(a)).await.status;
        assert_eq!(status, if sees { 200 } else { 404 }, "{a:?}: channels.get of hidden");
    }

    // The SpaceExt of other responses is filtered the same way.
    let renamed = ok(app
        .patch(&w.at(""), w.token(Moderator), json!({"name": "Renamed"}))
        .await);
    assert!(!ids(&renamed["channels"]).contains(&w.hidden));
    let renamed = ok(app.patch(&w.at(""), w.token(Admin), json!({"name": "World"})).await);
    assert!(ids(&renamed["channels"]).contains(&w.hidden));
    let joined = ok(app.call(Method::POST, &w.join(), w.token(Outsider), None).await);
    assert_eq!(ids(&joined["channels"]), vec![w.general.clone(), w.doomed.clone()]);

    // A member override allowing VIEW_CHANNEL shows the channel to that member and no one else.
    let member_override = w.override_of(&w.hidden, &w.member.id);
    ok(app.put(&member_override, t, overwrite("MEMBER", VIEW_CHANNEL, 0)).await);
    assert_eq!(where_listed(&app, &w, Member, &w.hidden).await, [true; 5]);
    assert_eq!(where_listed(&app, &w, Low, &w.hidden).await, [false; 5]);
    ok(app.get(&w.channel(&w.hidden), w.token(Member)).await);
    // And a role override on Low shows it to low.
    let low_override = w.override_of(&w.hidden, &w.low_role);
    ok(app.put(&low_override, t, overwrite("ROLE", VIEW_CHANNEL, 0)).await);
    assert_eq!(where_listed(&app, &w, Low, &w.hidden).await, [true; 5]);
    assert_eq!(where_listed(&app, &w, Moderator, &w.hidden).await, [false; 5]);
}

// ---------------------------------------------------------------------------------------------
// Mikoto defects of Appendix B that concern these sections
// ---------------------------------------------------------------------------------------------

#[track_caller]
fn refused(r: Resp, status: u16, code: &str) {
    r.expect(status, Some(code));
}

/// The user ids of the world's members, as the admin sees them.
async fn member_ids(app: &TestApp, w: &World) -> Vec<String> {
    let members = ok(app.get(&w.at("members/?limit=200"), w.token(Admin)).await);
    members
        .as_array()
        .expect("array")
        .iter()
        .map(|m| text(&m["userId"]))
        .collect()
}

#[tokio::test]
async fn mikoto_defect_owner_could_be_kicked() {
    let (app, w) = world().await;
    let kick_owner = w.member_path(&w.owner);
    for a in [Admin, Moderator] {
        refused(app.delete(&kick_owner, w.token(a)).await, 403, "InsufficientRank");
    }
    refused(app.delete(&kick_owner, w.token(Owner)).await, 400, "CannotTargetSelf");
    assert!(member_ids(&app, &w).await.contains(&w.owner.id));
    ok(app.get(&w.at(""), w.token(Owner)).await);
}

#[tokio::test]
async fn mikoto_defect_owner_could_be_banned() {
    let (app, w) = world().await;
    let ban_owner = json!({"userId": w.owner.id, "reason": "coup"});
    for a in [Admin, Moderator] {
        refused(
            app.post(&w.at("bans/"), w.token(a), ban_owner.clone()).await,
            403,
            "InsufficientRank",
        );
    }
    refused(
        app.post(&w.at("bans/"), w.token(Owner), ban_owner).await,
        400,
        "CannotTargetSelf",
    );
    let bans = ok(app.get(&w.at("bans/"), w.token(Owner)).await);
    assert!(
        bans.as_array()
            .expect("array")
            .iter()
            .all(|b| b["userId"] != w.owner.id.as_str())
    );
    assert!(member_ids(&app, &w).await.contains(&w.owner.id));
}

#[tokio::test]
async fn mikoto_defect_owner_could_leave() {
    let (app, w) = world().await;
    refused(
        app.delete(&w.at("leave"), w.token(Owner)).await,
        409,
        "OwnerCannotLeave",
    );
    assert!(member_ids(&app, &w).await.contains(&w.owner.id));
    // Transferring ownership first makes leaving possible.
    let transferred = ok(app
        .post(
            &w.at("transfer_ownership"),
            w.token(Owner),
            json!({"userId": w.admin.id}),
        )
        .await);
    assert_eq!(transferred["ownerId"], w.admin.id.as_str());
    ok(app.delete(&w.at("leave"), w.token(Owner)).await);
    refused(
        app.delete(&w.at("leave"), w.token(Admin)).await,
        409,
        "OwnerCannotLeave",
    );
    let space = ok(app.get(&w.at(""), w.token(Admin)).await);
    assert_eq!(space["ownerId"], w.admin.id.as_str());
    assert!(!member_ids(&app, &w).await.contains(&w.owner.id));
}

#[tokio::test]
async fn mikoto_defect_role_manager_could_grant_admin() {
    let (app, w) = world().await;
    let m = w.token(Moderator);
    let roles_before = ok(app.get(&w.at("roles/"), m).await);
    let with_admin = (MODERATOR_PERMISSIONS | ADMIN).to_string();
    // Not on a role below them, nor on @everyone...
    for (role, permissions) in [
        (&w.low_role, ADMIN.to_string()),
        (&w.helper_role, with_admin.clone()),
        (&w.everyone, (28672 | ADMIN).to_string()),
    ] {
        refused(
            app.patch(&w.role(role), m, json!({"permissions": permissions})).await,
            403,
            "InsufficientRank",
        );
    }
    // ...nor on their own role, nor by assigning the Admin role to themselves...
    refused(
        app.patch(&w.role(&w.mod_role), m, json!({"permissions": with_admin}))
            .await,
        403,
        "InsufficientRank",
    );
    refused(
        app.call(Method::POST, &w.member_role(&w.moderator, &w.admin_role), m, None)
            .await,
        403,
        "InsufficientRank",
    );
    refused(
        app.patch(
            &w.member_path(&w.moderator),
            m,
            json!({"roleIds": [w.mod_role, w.admin_role]}),
        )
        .await,
        403,
        "InsufficientRank",
    );
    assert_eq!(ok(app.get(&w.at("roles/"), m).await), roles_before);
    // ...nor on a role they create themselves.
    let created = ok(app.post(&w.at("roles/"), m, json!({"name": "Sneaky"})).await);
    assert_eq!(created["permissions"], "0");
    refused(
        app.patch(&w.role(&text(&created["id"])), m, json!({"permissions": "1"}))
            .await,
        403,
        "InsufficientRank",
    );
    // The moderator still cannot do what only ADMIN allows, e.g. add a bot.
    refused(
        app.post(&w.at("members/"), m, json!({"userId": w.bot})).await,
        403,
        "InsufficientPermissions",
    );
}

#[tokio::test]
async fn mikoto_defect_space_delete_by_non_owner_answered_401() {
    let (app, w) = world().await;
    for a in [Admin, Moderator, Member, Low] {
        refused(app.delete(&w.at(""), w.token(a)).await, 403, "Forbidden");
    }
    for a in [Outsider, Banned] {
        refused(app.delete(&w.at(""), w.token(a)).await, 404, "NotFound");
    }
    ok(app.get(&w.at(""), w.token(Owner)).await);
    ok(app.delete(&w.at(""), w.token(Owner)).await);
    refused(app.get(&w.at(""), w.token(Owner)).await, 404, "NotFound");
}

#[tokio::test]
async fn mikoto_defect_duplicate_join_returned_500() {
    let (app, w) = world().await;
    let before = ok(app.get(&w.at(""), w.token(Owner)).await);
    for a in MEMBERS {
        refused(
            app.call(Method::POST, &w.join(), w.token(a), None).await,
            409,
            "AlreadyMember",
        );
    }
    assert_eq!(ok(app.get(&w.at(""), w.token(Owner)).await), before);
    let invites = ok(app.get(&w.at("invites/"), w.token(Owner)).await);
    assert_eq!(invites[0]["uses"], 7, "only the seven real joins were counted");
}

#[tokio::test]
async fn mikoto_defect_add_existing_role_returned_500() {
    let (app, w) = world().await;
    let path = w.member_role(&w.low, &w.low_role);
    for _ in 0..2 {
        let member = ok(app.call(Method::POST, &path, w.token(Owner), None).await);
        assert_eq!(member["roleIds"], json!([w.low_role]));
    }
    let got = ok(app.get(&w.member_path(&w.low), w.token(Owner)).await);
    assert_eq!(got["roleIds"], json!([w.low_role]));
    // Removing a role that is not assigned is just as harmless.
    let member = ok(app
        .delete(&w.member_role(&w.victim, &w.helper_role), w.token(Owner))
        .await);
    assert_eq!(member["roleIds"], json!([]));
}

#[tokio::test]
async fn mikoto_defect_preview_exposed_channels_and_roles() {
    let (app, w) = world().await;
    for token in [None, w.token(Outsider), w.token(Banned)] {
        let preview = ok(app.get(&w.join(), token).await);
        assert_eq!(preview["id"], w.space.as_str());
        assert_eq!(preview["name"], "World");
        assert_eq!(preview["channels"], json!([]));
        assert_eq!(preview["roles"], json!([]));
        assert_eq!(preview["memberCount"], 7);
    }
    let preview = ok(app.get(&w.join(), w.token(Member)).await);
    assert_eq!(ids(&preview["roles"]).len(), 6);
    assert_eq!(ids(&preview["channels"]), vec![w.general.clone(), w.doomed.clone()]);
}

#[tokio::test]
async fn mikoto_defect_member_count_zero_on_create() {
    let app = TestApp::spawn().await;
    let (alice, bob) = (signup(&app, "Alice").await, signup(&app, "Bob").await);
    let space = ok(app
        .post("/spaces/", Some(&alice.token), json!({"name": "Counted"}))
        .await);
    assert_eq!(space["memberCount"], 1);
    let sid = text(&space["id"]);
    let invite = ok(app
        .post(&format!("/spaces/{sid}/invites/"), Some(&alice.token), json!({}))
        .await);
    let joined = ok(app
        .call(
            Method::POST,
            &format!("/spaces/join/{}", text(&invite["id"])),
            Some(&bob.token),
            None,
        )
        .await);
    assert_eq!(joined["memberCount"], 2);
    let got = ok(app.get(&format!("/spaces/{sid}"), Some(&alice.token)).await);
    assert_eq!(got["memberCount"], 2);
}

#[tokio::test]
async fn mikoto_defect_unchecked_parent_channel() {
    let (app, w) = world().await;
    let t = w.token(Owner);
    for parent in [w.foreign_channel.clone(), nobody()] {
        let r = app
            .post(&w.at("channels/"), t, json!({"name": "stray", "parentId": parent}))
            .await;
        r.expect(400, Some("ValidationFailed"));
        assert_eq!(r.body["field"], "parentId");
        let r = app.patch(&w.channel(&w.doomed), t, json!({"parentId": parent})).await;
        r.expect(400, Some("ValidationFailed"));
        assert_eq!(r.body["field"], "parentId");
    }
    let channels = ok(app.get(&w.at("channels/"), t).await);
    assert_eq!(ids(&channels).len(), 3, "nothing was created");
    let child = ok(app
        .post(&w.at("channels/"), t, json!({"name": "child", "parentId": w.general}))
        .await);
    assert_eq!(child["parentId"], w.general.as_str());
}

#[tokio::test]
async fn mikoto_defect_members_update_unimplemented() {
    let (app, w) = world().await;
    let t = w.token(Owner);
    let path = w.member_path(&w.victim);
    let body = json!({"roleIds": [w.helper_role, w.low_role, w.everyone, w.helper_role]});
    let member = ok(app.patch(&path, t, body).await);
    let mut want = vec![w.helper_role.clone(), w.low_role.clone()];
    want.sort();
    let mut got: Vec<String> = member["roleIds"].as_array().expect("array").iter().map(text).collect();
    got.sort();
    assert_eq!(
        got, want,
        "exactly the requested roles, without duplicates or @everyone"
    );
    assert_eq!(ok(app.get(&path, t).await)["roleIds"], member["roleIds"]);
    let cleared = ok(app.patch(&path, t, json!({"roleIds": []})).await);
    assert_eq!(cleared["roleIds"], json!([]));
    // `roleIds` is required.
    app.patch(&path, t, json!({})).await.expect(422, Some("InvalidBody"));
}

#[tokio::test]
async fn mikoto_defect_non_member_answered_401() {
    let (app, w) = world().await;
    for path in [
        w.at(""),
        w.at("channels/"),
        w.at("members/"),
        w.at("roles/"),
        w.at("channels/unreads"),
    ] {
        for a in [Outsider, Banned] {
            refused(app.get(&path, w.token(a)).await, 404, "NotFound");
        }
    }
}

#[tokio::test]
async fn mikoto_defect_ack_of_unknown_channel_returned_500() {
    let (app, w) = world().await;
    for channel in [nobody(), w.foreign_channel.clone()] {
        let path = w.at(&format!("channels/{channel}/ack"));
        refused(
            app.call(Method::POST, &path, w.token(Owner), None).await,
            404,
            "NotFound",
        );
    }
}

#[tokio::test]
async fn mikoto_defect_admin_alone_did_not_bypass() {
    // In Mikoto the moderator bypass needed both ADMIN and MODERATOR; ADMIN alone passes here.
    let (app, w) = world().await;
    let a = w.token(Admin);
    ok(app.post(&w.at("invites/"), a, json!({})).await);
    ok(app.get(&w.at("bans/"), a).await);
    ok(app.post(&w.at("roles/"), a, json!({"name": "ByAdmin"})).await);
    ok(app.post(&w.at("channels/"), a, json!({"name": "by-admin"})).await);
    ok(app.get(&w.overrides(&w.hidden), a).await);
}

#[tokio::test]
async fn mikoto_defect_invites_never_expired() {
    let (app, w) = world().await;
    let t = w.token(Owner);
    let once = text(&ok(app.post(&w.at("invites/"), t, json!({"maxUses": 1})).await)["id"]);
    ok(app
        .call(Method::POST, &format!("/spaces/join/{once}"), w.token(Outsider), None)
        .await);
    let late = signup(&app, "Late").await;
    refused(app.get(&format!("/spaces/join/{once}"), None).await, 404, "NotFound");
    refused(
        app.call(Method::POST, &format!("/spaces/join/{once}"), Some(&late.token), None)
            .await,
        404,
        "NotFound",
    );
    // An invite past its expiry is gone as well (the clock is moved in the database).
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let soon = text(&ok(app.post(&w.at("invites/"), t, json!({"expiresAt": tomorrow})).await)["id"]);
    ok(app.get(&format!("/spaces/join/{soon}"), None).await);
    sqlx::query("UPDATE invites SET expires_at = now() - interval '1 second' WHERE code = $1")
        .bind(&soon)
        .execute(app.db())
        .await
        .expect("expire the invite");
    refused(app.get(&format!("/spaces/join/{soon}"), None).await, 404, "NotFound");
    refused(
        app.call(Method::POST, &format!("/spaces/join/{soon}"), Some(&late.token), None)
            .await,
        404,
        "NotFound",
    );
}

#[tokio::test]
async fn mikoto_defect_role_colour_could_not_be_cleared() {
    let (app, w) = world().await;
    let t = w.token(Owner);
    let role = ok(app.patch(&w.role(&w.helper_role), t, json!({"color": "#ABC"})).await);
    assert_eq!(role["color"], "#aabbcc");
    let role = ok(app.patch(&w.role(&w.helper_role), t, json!({"color": null})).await);
    assert_eq!(role["color"], Value::Null);
    assert_eq!(role["name"], "Helper", "other fields are untouched");
}
