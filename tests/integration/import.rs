//! `alterego import-mikoto` (spec §1.7): a Mikoto-shaped database seeded with a small but
//! complete community is imported, then checked through the public API — old passwords and bot
//! secrets log in, every space, channel, role and member is where it was and visible only to
//! the right people, history pages in the source's exact order (equal timestamps included),
//! attachment URLs are unchanged — and the importer's refusals and crash behaviour hold.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use alterego::import::{ImportError, Options, Report};
use chrono::NaiveDateTime;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::common::TestApp;
use crate::common::fixtures::{contents, ids};
use crate::common::mikoto::MikotoDb;

const OLD_PASSWORD: &str = "my old mikoto password";
const PUBLIC_SECRET: &str = "public-bot-secret-0123456789abcd";
const PRIVATE_SECRET: &str = "private-bot-secret-0123456789abc";
/// A UUIDv7 cursor before every message.
const EPOCH: &str = "00000000-0000-7000-8000-000000000000";
/// Messages of the busiest channel, ten per millisecond.
const HISTORY: usize = 2_400;

/// The ids of the seeded community.
struct Community {
    ann: Uuid,
    bob: Uuid,
    dan: Uuid,
    space_a: Uuid,
    space_b: Uuid,
    space_c: Uuid,
    a_general: Uuid,
    a_category: Uuid,
    a_sub: Uuid,
    b_general: Uuid,
    dm_channel: Uuid,
    public_bot: Uuid,
    private_bot: Uuid,
}

fn v4() -> Uuid {
    Uuid::new_v4()
}

fn at(ms: i64) -> NaiveDateTime {
    chrono::DateTime::from_timestamp_millis(ms).unwrap().naive_utc()
}

async fn exec(db: &PgPool, sql: &'static str, binds: &[Uuid]) {
    let mut q = sqlx::query(sql);
    for b in binds {
        q = q.bind(*b);
    }
    q.execute(db).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn user(db: &PgPool, name: &str, email: Option<&str>, category: Option<&str>) -> Uuid {
    let id = v4();
    sqlx::query("INSERT INTO \"User\" (id, name, category) VALUES ($1, $2, $3::\"UserCategory\")")
        .bind(id)
        .bind(name)
        .bind(category)
        .execute(db)
        .await
        .unwrap();
    if let Some(email) = email {
        let hash = bcrypt::hash(OLD_PASSWORD, 4).unwrap();
        sqlx::query("INSERT INTO \"Account\" (id, email, passhash) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(email)
            .bind(hash)
            .execute(db)
            .await
            .unwrap();
    }
    id
}

async fn space(db: &PgPool, name: &str, owner: Uuid, kind: &str) -> Uuid {
    let id = v4();
    sqlx::query("INSERT INTO \"Space\" (id, name, \"ownerId\", type) VALUES ($1, $2, $3, $4::\"SpaceType\")")
        .bind(id)
        .bind(name)
        .bind(owner)
        .bind(kind)
        .execute(db)
        .await
        .unwrap();
    id
}

async fn channel(db: &PgPool, space: Uuid, parent: Option<Uuid>, name: &str, kind: &str, order: i32) -> Uuid {
    let id = v4();
    sqlx::query(
        "INSERT INTO \"Channel\" (id, \"spaceId\", \"parentId\", name, type, \"order\") VALUES ($1, $2, $3, $4, $5::\"ChannelType\", $6)",
    )
    .bind(id)
    .bind(space)
    .bind(parent)
    .bind(name)
    .bind(kind)
    .bind(order)
    .execute(db)
    .await
    .unwrap();
    id
}

async fn role(db: &PgPool, space: Uuid, name: &str, permissions: &str, position: i32) -> Uuid {
    let id = v4();
    sqlx::query("INSERT INTO \"Role\" (id, \"spaceId\", name, permissions, position) VALUES ($1, $2, $3, $4, $5)")
        .bind(id)
        .bind(space)
        .bind(name)
        .bind(permissions)
        .bind(position)
        .execute(db)
        .await
        .unwrap();
    id
}

async fn member(db: &PgPool, space: Uuid, user: Uuid) -> Uuid {
    let id = v4();
    exec(
        db,
        "INSERT INTO \"SpaceUser\" (id, \"spaceId\", \"userId\") VALUES ($1, $2, $3)",
        &[id, space, user],
    )
    .await;
    id
}

/// `n` messages in `channel`, `per_ms` to a millisecond, content `"{prefix}{i}"`.
async fn messages(db: &PgPool, channel: Uuid, authors: &[Uuid], n: usize, per_ms: usize, prefix: &str) {
    let ids: Vec<Uuid> = (0..n).map(|_| v4()).collect();
    let times: Vec<NaiveDateTime> = (0..n).map(|i| at(1_750_000_000_000 + (i / per_ms) as i64)).collect();
    let authors: Vec<Uuid> = (0..n).map(|i| authors[i % authors.len()]).collect();
    let contents: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    sqlx::query(
        "INSERT INTO \"Message\" (id, content, timestamp, \"authorId\", \"channelId\") \
         SELECT id, c, t, a, $5 FROM UNNEST($1::uuid[], $2::text[], $3::timestamp[], $4::uuid[]) AS x (id, c, t, a)",
    )
    .bind(&ids)
    .bind(&contents)
    .bind(&times)
    .bind(&authors)
    .bind(channel)
    .execute(db)
    .await
    .unwrap();
}

/// A community: three spaces (one GROUP without `@everyone`), a DM space, a channel tree, roles
/// with Mikoto permission strings (one invalid), members, a ban, invites, thousands of messages
/// with equal timestamps, attachments, DMs, a friendship, a block, two bots, handles,
/// preferences, a push subscription, and rows of the tables alterego does not carry.
async fn seed(db: &PgPool) -> Community {
    let ann = user(db, "Ann", Some("ann@example.org"), None).await;
    let bob = user(db, "Bob", Some(" Bob@Example.org"), None).await;
    let cat = user(db, "Cat", Some("cat@example.org"), Some("UNVERIFIED")).await;
    let dan = user(db, "Dan", Some("dan@example.org"), None).await;
    let eve = user(db, "Eve", Some("eve@example.org"), None).await;
    // Equal once lowercased: one of the two accounts is skipped.
    user(db, "Twin", Some("twin@example.org"), None).await;
    user(db, "Twin", Some("TWIN@example.org"), None).await;
    let public_bot = user(db, "Helper", None, Some("BOT")).await;
    let private_bot = user(db, "Secret", None, None).await;
    for (bot, owner, secret, visibility) in [
        (public_bot, ann, PUBLIC_SECRET, "PUBLIC"),
        (private_bot, bob, PRIVATE_SECRET, "PRIVATE"),
    ] {
        sqlx::query(
            "INSERT INTO \"Bot\" (id, name, \"ownerId\", secret, visibility, permissions) \
             VALUES ($1, 'bot', $2, $3, $4::\"BotVisibility\", '[\"messages\", 7]'::jsonb)",
        )
        .bind(bot)
        .bind(owner)
        .bind(bcrypt::hash(secret, 4).unwrap())
        .bind(visibility)
        .execute(db)
        .await
        .unwrap();
    }

    let space_a = space(db, "Lounge", ann, "NONE").await;
    let space_b = space(db, "Side room", bob, "NONE").await;
    let space_c = space(db, "Group", cat, "GROUP").await;
    let dm_space = space(db, "", ann, "DM").await;
    role(db, space_a, "@everyone", "0", -1).await;
    let mods = role(db, space_a, "Mods", "2048", 1).await;
    let admins = role(db, space_a, "Admins", &(u64::MAX).to_string(), 2).await;
    role(db, space_a, "Odd", "not a number", 0).await;
    role(db, space_b, "@everyone", "512", -1).await;
    role(db, dm_space, "@everyone", "0", -1).await;
    let mut a_members = vec![];
    for u in [ann, bob, cat, public_bot] {
        a_members.push(member(db, space_a, u).await);
    }
    for u in [bob, cat] {
        member(db, space_b, u).await;
    }
    // Cat, the owner of C, has no membership row there: the importer adds it.
    member(db, space_c, dan).await;
    member(db, dm_space, ann).await;
    exec(
        db,
        "INSERT INTO \"_RoleToSpaceUser\" (\"A\", \"B\") VALUES ($1, $2)",
        &[mods, a_members[1]],
    )
    .await;
    exec(
        db,
        "INSERT INTO \"_RoleToSpaceUser\" (\"A\", \"B\") VALUES ($1, $2)",
        &[admins, a_members[2]],
    )
    .await;
    exec(
        db,
        "INSERT INTO \"Ban\" (id, \"userId\", \"spaceId\", reason) VALUES ($1, $2, $3, 'spam')",
        &[v4(), eve, space_a],
    )
    .await;
    exec(
        db,
        "INSERT INTO \"Invite\" (id, \"spaceId\", \"creatorId\") VALUES ('loungeInvite', $1, $2), ('orphanInvite', $1, NULL)",
        &[space_a, ann],
    )
    .await;

    let a_general = channel(db, space_a, None, "general", "TEXT", 0).await;
    let a_category = channel(db, space_a, None, "Topics", "CATEGORY", 1).await;
    let a_sub = channel(db, space_a, Some(a_category), "sub", "TEXT", 0).await;
    let notes = channel(db, space_a, Some(a_category), "notes", "DOCUMENT", 1).await;
    let b_general = channel(db, space_b, None, "general", "TEXT", 0).await;
    let dm_channel = channel(db, dm_space, None, "dm", "TEXT", 0).await;
    sqlx::query("INSERT INTO \"Document\" (id, \"channelId\", content) VALUES ($1, $2, '# Notes')")
        .bind(v4())
        .bind(notes)
        .execute(db)
        .await
        .unwrap();
    messages(db, a_general, &[ann, bob, cat], HISTORY, 10, "a").await;
    messages(db, a_sub, &[bob], 30, 3, "s").await;
    messages(db, b_general, &[bob, cat], 40, 4, "b").await;
    messages(db, dm_channel, &[ann, bob], 25, 5, "d").await;
    // Attachments on every 100th message of `general`, with relative and absolute URLs.
    sqlx::query(
        "INSERT INTO \"MessageAttachment\" (id, \"messageId\", url, filename, \"contentType\", size, \"order\") \
         SELECT gen_random_uuid(), id, CASE WHEN n % 2 = 0 THEN 'attachment/' || n || '.png' \
         ELSE 'https://media.mikoto.example/attachment/' || n || '.png' END, n || '.png', 'image/png', 100 + n, 0 \
         FROM (SELECT id, substr(content, 2)::int AS n FROM \"Message\" WHERE \"channelId\" = $1) m WHERE n % 100 = 0",
    )
    .bind(a_general)
    .execute(db)
    .await
    .unwrap();
    exec(
        db,
        "INSERT INTO \"ChannelUnread\" (\"channelId\", \"userId\", timestamp) VALUES ($1, $2, now())",
        &[a_general, ann],
    )
    .await;
    for (u, r, channel, state) in [
        (ann, bob, Some(dm_channel), "FRIEND"),
        (bob, ann, Some(dm_channel), "FRIEND"),
        (ann, dan, None, "BLOCKED"),
        (cat, dan, None, "NONE"),
    ] {
        sqlx::query(
            "INSERT INTO \"Relationship\" (id, \"userId\", \"relationId\", \"channelId\", state) VALUES ($1, $2, $3, $4, $5::\"RelationState\")",
        )
        .bind(v4())
        .bind(u)
        .bind(r)
        .bind(channel)
        .bind(state)
        .execute(db)
        .await
        .unwrap();
    }
    for (handle, u, s) in [
        ("Ann.alterego.test", Some(ann), None),
        ("bob.alterego.test", Some(bob), None),
        ("bob-old.alterego.test", Some(bob), None),
        ("lounge.alterego.test", None, Some(space_a)),
    ] {
        sqlx::query("INSERT INTO \"Handle\" (handle, \"userId\", \"spaceId\") VALUES ($1, $2, $3)")
            .bind(handle)
            .bind(u)
            .bind(s)
            .execute(db)
            .await
            .unwrap();
    }
    exec(
        db,
        "INSERT INTO \"NotificationPreference\" (\"userId\", \"spaceId\", level) VALUES ($1, $2, 'MENTIONS'), ($1, $3, 'NOTHING')",
        &[ann, space_a, dm_space],
    )
    .await;
    exec(
        db,
        "INSERT INTO \"PushSubscription\" (\"userId\", endpoint, p256dh, auth) VALUES ($1, 'https://push.example/1', 'k', 'a')",
        &[ann],
    )
    .await;
    exec(
        db,
        "INSERT INTO \"RefreshToken\" (id, token, \"expiresAt\", \"accountId\") VALUES ($1, 'tok', now(), $2)",
        &[v4(), ann],
    )
    .await;
    exec(
        db,
        "INSERT INTO \"Settings\" (id, \"userId\", data) VALUES ($1, $2, '{}')",
        &[v4(), ann],
    )
    .await;
    Community {
        ann,
        bob,
        dan,
        space_a,
        space_b,
        space_c,
        a_general,
        a_category,
        a_sub,
        b_general,
        dm_channel,
        public_bot,
        private_bot,
    }
}

fn options(source: &MikotoDb) -> Options {
    Options {
        source_url: source.url.clone(),
        dry_run: false,
        allow_non_empty: false,
        batch_size: 500,
        quiet: true,
    }
}

async fn login(app: &TestApp, email: &str) -> String {
    let r = app
        .post(
            "/account/login",
            None,
            json!({"email": email, "password": OLD_PASSWORD}),
        )
        .await;
    r.expect(200, None);
    r.body["accessToken"].as_str().unwrap().to_string()
}

/// Every message of a channel, paged `before` from the newest or `after` from before the oldest.
async fn walk(app: &TestApp, token: &str, base: &str, limit: usize, backwards: bool) -> Vec<Value> {
    let (dir, mut cursor) = if backwards {
        ("before", None)
    } else {
        ("after", Some(EPOCH.to_string()))
    };
    let mut all: Vec<Value> = Vec::new();
    loop {
        let q = match &cursor {
            Some(c) => format!("limit={limit}&{dir}={c}"),
            None => format!("limit={limit}"),
        };
        let r = app.get(&format!("{base}?{q}"), Some(token)).await;
        r.expect(200, None);
        let page = r.body.as_array().unwrap().clone();
        let edge = if backwards { page.first() } else { page.last() };
        let Some(edge) = edge else { break };
        cursor = Some(edge["id"].as_str().unwrap().to_string());
        if backwards {
            all.splice(0..0, page);
        } else {
            all.extend(page);
        }
    }
    all
}

/// A channel's history paged both ways (which must agree), as contents in history order.
async fn history(app: &TestApp, token: &str, base: &str, limit: usize) -> Vec<String> {
    let back = walk(app, token, base, limit, true).await;
    assert_eq!(
        back,
        walk(app, token, base, limit, false).await,
        "backward and forward walks differ"
    );
    back.iter()
        .map(|m| m["content"].as_str().unwrap().to_string())
        .collect()
}

/// The source's own history order: (timestamp, id).
async fn source_order(db: &PgPool, channel: Uuid) -> Vec<String> {
    sqlx::query_scalar("SELECT content FROM \"Message\" WHERE \"channelId\" = $1 ORDER BY timestamp, id")
        .bind(channel)
        .fetch_all(db)
        .await
        .unwrap()
}

/// The user ids of a member list.
fn member_users(list: &Value) -> Vec<String> {
    let members = list.as_array().unwrap_or_else(|| panic!("not a member list: {list}"));
    members
        .iter()
        .map(|m| m["user"]["id"].as_str().unwrap().to_string())
        .collect()
}

fn skipped(report: &Report, table: &str, reason: &str) -> u64 {
    report
        .get(table)
        .and_then(|t| t.skipped.get(reason).copied())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_mikoto_community_moves_over_intact() {
    let source = MikotoDb::create().await;
    let src = source.pool().await;
    let c = seed(&src).await;
    let app = TestApp::spawn().await;

    // A dry run reports everything and writes nothing.
    let dry = alterego::import::run(
        app.db(),
        &Options {
            dry_run: true,
            ..options(&source)
        },
    )
    .await
    .unwrap();
    assert_eq!(dry.get("Message").unwrap().written as usize, HISTORY + 95);
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(app.db())
        .await
        .unwrap();
    assert_eq!(users, 0, "a dry run wrote");

    let report = alterego::import::run(app.db(), &options(&source)).await.unwrap();
    let text = report.to_string();
    // Every table is reported, read = written + skipped where no row was added, and every
    // skip has its reason.
    for (name, t) in &report.tables {
        let added: u64 = t
            .adjusted
            .iter()
            .filter(|(why, _)| why.contains("added"))
            .map(|(_, n)| n)
            .sum();
        assert_eq!(
            t.written + t.skipped_total(),
            t.read + added,
            "{name}: rows unaccounted for\n{text}"
        );
    }
    assert_eq!(report.get("User").unwrap().written, 9, "{text}");
    // The flag history pages read attachments by is written with the messages, exactly.
    let (flagged, mismatched): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE has_attachments), \
                count(*) FILTER (WHERE has_attachments <> EXISTS \
                    (SELECT 1 FROM message_attachments a WHERE a.message_id = messages.id)) FROM messages",
    )
    .fetch_one(app.db())
    .await
    .unwrap();
    assert!(flagged > 0, "no imported message has attachments");
    assert_eq!(mismatched, 0, "has_attachments disagrees with message_attachments");
    assert_eq!(
        skipped(
            &report,
            "Account",
            "email equals another account's once trimmed and lowercased"
        ),
        1
    );
    assert_eq!(skipped(&report, "Relationship", "state NONE: no relationship"), 1);
    assert_eq!(
        skipped(&report, "RefreshToken", "not carried: users sign in again (spec §1.7)"),
        1
    );
    assert_eq!(
        skipped(
            &report,
            "Handle",
            "owner already holds a handle (the verified, then newest, is kept)"
        ),
        1
    );
    assert_eq!(report.get("Message").unwrap().written as usize, HISTORY + 95, "{text}");
    assert_eq!(report.get("MessageAttachment").unwrap().written, 24, "{text}");
    assert_eq!(
        report
            .get("Role")
            .unwrap()
            .adjusted
            .get("space had no @everyone role: one was added with 28672"),
        Some(&1)
    );

    // Old passwords log in (the email as alterego normalises it).
    let ann = login(&app, "ann@example.org").await;
    let bob = login(&app, "bob@example.org").await;
    let cat = login(&app, "cat@example.org").await;
    let dan = login(&app, "dan@example.org").await;

    // Spaces, channels, roles and members: visible to members, 404 to everyone else.
    let a = app.get(&format!("/spaces/{}", c.space_a), Some(&ann)).await;
    a.expect(200, None);
    assert_eq!(a.body["ownerId"], json!(c.ann.to_string()));
    let roles = &a.body["roles"];
    // A field of the role named `name`.
    let role = |name: &str, field: &str| -> String {
        let found = roles.as_array().unwrap().iter().find(|r| r["name"] == name);
        found.unwrap_or_else(|| panic!("no role {name}"))[field]
            .as_str()
            .unwrap()
            .to_string()
    };
    let perms = |name: &str| role(name, "permissions");
    assert_eq!(perms("@everyone"), "28672");
    assert_eq!(perms("Mods"), "2048");
    assert_eq!(perms("Admins"), "65535");
    assert_eq!(perms("Odd"), "0");
    let channels = app.get(&format!("/spaces/{}/channels/", c.space_a), Some(&bob)).await;
    channels.expect(200, None);
    let sub = channels
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|ch| ch["id"] == json!(c.a_sub.to_string()))
        .cloned();
    assert_eq!(sub.unwrap()["parentId"], json!(c.a_category.to_string()));
    assert_eq!(ids(&channels.body).len(), 4);
    let members = app.get(&format!("/spaces/{}/members/", c.space_a), Some(&cat)).await;
    assert_eq!(member_users(&members.body).len(), 4);
    let bob_member = members
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user"]["id"] == json!(c.bob.to_string()))
        .unwrap();
    assert_eq!(bob_member["roleIds"].as_array().unwrap().len(), 1);
    for (token, space, sees) in [
        (&dan, c.space_a, false),
        (&ann, c.space_b, false),
        (&bob, c.space_b, true),
        (&dan, c.space_c, true),
        (&cat, c.space_c, true),
    ] {
        let want = if sees { 200 } else { 404 };
        for path in [
            format!("/spaces/{space}"),
            format!("/spaces/{space}/channels/"),
            format!("/spaces/{space}/members/"),
        ] {
            let r = app.get(&path, Some(token)).await;
            assert_eq!(r.status, want, "{path}: {}", r.text);
        }
    }
    for (token, sees) in [(&dan, false), (&ann, false), (&bob, true)] {
        let r = app
            .get(
                &format!("/spaces/{}/channels/{}/messages/", c.space_b, c.b_general),
                Some(token),
            )
            .await;
        assert_eq!(r.status, if sees { 200 } else { 404 }, "{}", r.text);
    }
    // C's owner had no membership row in Mikoto: the importer added it.
    let c_members = app.get(&format!("/spaces/{}/members/", c.space_c), Some(&dan)).await;
    let c_users = member_users(&c_members.body);
    assert_eq!(c_users.len(), 2);
    assert!(c_users.contains(&c.dan.to_string()));
    let listed = app.get("/spaces/", Some(&dan)).await;
    assert_eq!(ids(&listed.body), vec![c.space_c.to_string()]);

    // History: every message exactly once, in the source's (timestamp, id) order.
    let base = format!("/spaces/{}/channels/{}/messages/", c.space_a, c.a_general);
    assert_eq!(
        history(&app, &ann, &base, 100).await,
        source_order(&src, c.a_general).await
    );
    assert_eq!(history(&app, &ann, &base, 7).await.len(), HISTORY);
    let base_b = format!("/spaces/{}/channels/{}/messages/", c.space_b, c.b_general);
    assert_eq!(
        history(&app, &cat, &base_b, 3).await,
        source_order(&src, c.b_general).await
    );
    // An old Mikoto id still works as a cursor.
    let (legacy, content): (Uuid, String) = sqlx::query_as(
        "SELECT id, content FROM \"Message\" WHERE \"channelId\" = $1 ORDER BY timestamp, id OFFSET 500 LIMIT 1",
    )
    .bind(c.a_general)
    .fetch_one(&src)
    .await
    .unwrap();
    let order = source_order(&src, c.a_general).await;
    let r = app.get(&format!("{base}?limit=5&before={legacy}"), Some(&ann)).await;
    r.expect(200, None);
    let got = contents(&r.body);
    assert_eq!(got, order[495..500].iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(order[500], content);
    app.get(&format!("{base}?before={}", Uuid::new_v4()), Some(&ann))
        .await
        .expect(404, Some("NotFound"));

    // Attachment URLs are exactly Mikoto's.
    let mut urls: Vec<String> = walk(&app, &ann, &base, 100, false)
        .await
        .iter()
        .flat_map(|m| m["attachments"].as_array().unwrap().clone())
        .map(|a| a["url"].as_str().unwrap().to_string())
        .collect();
    let mut want: Vec<String> = sqlx::query_scalar("SELECT url FROM \"MessageAttachment\"")
        .fetch_all(&src)
        .await
        .unwrap();
    urls.sort();
    want.sort();
    assert_eq!(urls, want);

    // DMs: the participants read them in order; nobody else sees them.
    let dm = format!("/dm/{}/messages/", c.dm_channel);
    assert_eq!(
        history(&app, &bob, &dm, 4).await,
        source_order(&src, c.dm_channel).await
    );
    app.get(&dm, Some(&cat)).await.expect(404, Some("NotFound"));
    let relations = app.get("/relations/", Some(&ann)).await;
    relations.expect(200, None);
    assert_eq!(relations.body.as_array().unwrap().len(), 2, "{}", relations.text);

    // Imported roles drive alterego's channel permissions: hiding `sub` from @everyone hides it
    // from Bob (Mods) but not from Cat (Admins, whose Mikoto string set ADMIN).
    let everyone = role("@everyone", "id");
    let sub_path = format!("/spaces/{}/channels/{}", c.space_a, c.a_sub);
    app.put(
        &format!("{sub_path}/overrides/{everyone}"),
        Some(&ann),
        json!({"targetType": "ROLE", "allow": "0", "deny": "4096"}),
    )
    .await
    .expect(200, None);
    for (token, sees) in [(&bob, false), (&cat, true), (&ann, true)] {
        for path in [sub_path.clone(), format!("{sub_path}/messages/")] {
            let r = app.get(&path, Some(token)).await;
            assert_eq!(r.status, if sees { 200 } else { 404 }, "{path}: {}", r.text);
        }
    }

    // The ban holds: Eve is listed with the reason and cannot rejoin through an invite.
    let bans = app.get(&format!("/spaces/{}/bans/", c.space_a), Some(&ann)).await;
    bans.expect(200, None);
    assert_eq!(bans.body.as_array().unwrap().len(), 1, "{}", bans.text);
    assert_eq!(bans.body[0]["reason"], json!("spam"));
    let eve = login(&app, "eve@example.org").await;
    app.post("/spaces/join/loungeInvite", Some(&eve), json!({}))
        .await
        .expect(403, Some("Banned"));
    // Preferences: Ann's explicit level for the lounge (her DM space's row was not carried).
    let prefs = app.get("/spaces/notification-preferences", Some(&ann)).await;
    prefs.expect(200, None);
    assert_eq!(prefs.body.as_array().unwrap().len(), 1, "{}", prefs.text);
    assert_eq!(prefs.body[0]["level"], json!("MENTIONS"));

    // Handles and invites.
    app.get("/handles/ann.alterego.test", None).await.expect(200, None);
    app.get("/handles/lounge.alterego.test", None).await.expect(200, None);
    let invites = app.get(&format!("/spaces/{}/invites/", c.space_a), Some(&ann)).await;
    invites.expect(200, None);
    assert_eq!(invites.body.as_array().unwrap().len(), 2, "{}", invites.text);

    // Bots: the old secret logs in, once verified with bcrypt and then by its SHA-256 digest.
    for (bot, secret) in [(c.public_bot, PUBLIC_SECRET), (c.private_bot, PRIVATE_SECRET)] {
        for _ in 0..2 {
            app.post("/bots/login", None, json!({"botId": bot, "token": secret}))
                .await
                .expect(200, None);
        }
        let (digest, hash): (Option<Vec<u8>>, Option<String>) =
            sqlx::query_as("SELECT secret_digest, secret_bcrypt FROM bots WHERE user_id = $1")
                .bind(bot)
                .fetch_one(app.db())
                .await
                .unwrap();
        assert!(digest.is_some() && hash.is_none(), "bot secret not re-hashed");
        app.post("/bots/login", None, json!({"botId": bot, "token": "wrong"}))
            .await
            .expect(401, Some("WrongPassword"));
    }
    let category: Option<String> = sqlx::query_scalar("SELECT category FROM users WHERE id = $1")
        .bind(c.private_bot)
        .fetch_one(app.db())
        .await
        .unwrap();
    assert_eq!(category.as_deref(), Some("BOT"), "a bot's user is a BOT user");

    // A database that is not Mikoto's is refused by name.
    let not_mikoto = Options {
        source_url: app.state.config.database_url.clone(),
        ..options(&source)
    };
    let refused = alterego::import::run(app.db(), &not_mikoto).await;
    assert!(
        matches!(&refused, Err(ImportError::NotMikoto(tables)) if tables.contains("Message")),
        "{refused:?}"
    );

    // A second import into the now non-empty target is refused, and changes nothing.
    let again = alterego::import::run(app.db(), &options(&source)).await;
    assert!(matches!(again, Err(ImportError::TargetNotEmpty(_))), "{again:?}");
}

/// A digest of every imported table's content (columns the import sets; not `now()` defaults).
async fn digest(db: &PgPool) -> String {
    let tables = [
        "SELECT id, name, avatar, description, category FROM users",
        "SELECT user_id, email, password_hash FROM accounts",
        "SELECT id, name, icon, owner_id, type, visibility FROM spaces",
        "SELECT * FROM roles",
        "SELECT * FROM members",
        "SELECT * FROM member_roles",
        "SELECT id, space_id, user_id, reason FROM bans",
        "SELECT * FROM invites",
        "SELECT * FROM channels",
        "SELECT id, channel_id, content FROM documents",
        "SELECT id, channel_id, author_id, timestamp, edited_timestamp, content FROM messages",
        "SELECT * FROM message_attachments",
        "SELECT * FROM imported_message_ids",
        "SELECT * FROM channel_unreads",
        "SELECT * FROM relationships",
        "SELECT user_id, owner_id, visibility, secret_bcrypt, permissions FROM bots",
        "SELECT * FROM handles",
        "SELECT * FROM notification_preferences",
        "SELECT * FROM push_subscriptions",
    ];
    let mut out = String::new();
    for t in tables {
        let sql = format!(
            "SELECT count(*)::text || ':' || coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') FROM ({t}) x"
        );
        let d: String = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(db)
            .await
            .unwrap();
        out.push_str(&format!("{t} => {d}\n"));
    }
    out
}

/// Killing the importer mid-way leaves the target empty (one transaction); running it again
/// gives exactly what a clean import gives.
#[tokio::test]
async fn a_killed_import_rerun_equals_a_clean_one() {
    let source = MikotoDb::create().await;
    let src = source.pool().await;
    let c = seed(&src).await;
    // Enough history that the kill lands while messages are being written.
    messages(&src, c.a_sub, &[c.ann], 40_000, 7, "k").await;

    let clean = TestApp::spawn().await;
    alterego::import::run(clean.db(), &options(&source)).await.unwrap();
    let target = TestApp::spawn().await;
    let url = target.state.config.database_url.clone();
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_alterego"));
        cmd.current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &url)
            .env("RUST_LOG", "warn")
            .args(["import-mikoto", "--source", &source.url, "--batch-size", "500"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    };

    let mut child = run(&[]).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.starts_with("import: Message: started") {
            break;
        }
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the import finished before the kill: {seen:?}");
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(target.db())
        .await
        .unwrap();
    assert_eq!(users, 0, "a killed import left rows behind");

    let out = run(&["--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(report["dry_run"], json!(false));
    assert_eq!(digest(target.db()).await, digest(clean.db()).await);

    // Merging the same source again writes nothing: every row collides and is counted.
    let merged = alterego::import::run(
        target.db(),
        &Options {
            allow_non_empty: true,
            ..options(&source)
        },
    )
    .await
    .unwrap();
    for (name, t) in &merged.tables {
        assert_eq!(t.written, 0, "{name} written twice");
    }
    assert_eq!(
        merged
            .get("Message")
            .unwrap()
            .skipped
            .get("already present in the target (unique key collision)"),
        Some(&merged.get("Message").unwrap().read)
    );
    assert_eq!(digest(target.db()).await, digest(clean.db()).await);

    // The binary refuses the now non-empty target with a clear message.
    let out = run(&[]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds data"));
    // And explains itself.
    let help = Command::new(env!("CARGO_BIN_EXE_alterego"))
        .args(["import-mikoto", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("--dry-run"));
}
