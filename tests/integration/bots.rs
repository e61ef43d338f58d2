//! Bots (spec §4.3, §6.6, §12.6) and voice tokens (§4.11, §12.1): the lifecycle of a bot, the
//! install rule Mikoto got wrong, the authorization matrix of every bot operation, bots on
//! `/ws`, and LiveKit tokens checked by LiveKit's own server SDK.

use std::time::Duration;

use crate::common::fixtures::{Target, channel, id, set_override, space};
use crate::common::node::verify_livekit;
use crate::common::{TestApp, TestUser};
use reqwest::Method;
use serde_json::{Value, json};

/// Creates a bot through the API; returns (bot id, secret).
async fn create_bot(app: &TestApp, owner: &TestUser, name: &str) -> (String, String) {
    let r = app.post("/bots/", Some(&owner.access), json!({"name": name})).await;
    r.expect(200, None);
    (id(&r.body), r.body["token"].as_str().expect("token").to_string())
}

async fn bot_login(app: &TestApp, bot: &str, secret: &str) -> String {
    let r = app
        .post("/bots/login", None, json!({"botId": bot, "token": secret}))
        .await;
    r.expect(200, None);
    assert_eq!(r.body["refreshToken"], Value::Null);
    r.body["accessToken"].as_str().expect("accessToken").to_string()
}

fn claims(token: &str) -> Value {
    use base64::Engine;
    let part = token.split('.').nth(1).expect("payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("claims")
}

#[tokio::test]
async fn a_bot_lives_logs_in_regenerates_and_dies_as_a_tombstone() {
    let app = TestApp::spawn().await;
    let owner = app.register("Owner").await;
    let other = app.register("Other").await;
    let (bot, secret) = create_bot(&app, &owner, "  Helper  ").await;
    assert_eq!(secret.len(), 32);
    assert!(
        secret
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    );

    // Only the SHA-256 digest is stored.
    let (digest, bcrypt): (Option<Vec<u8>>, Option<String>) =
        sqlx::query_as("SELECT secret_digest, secret_bcrypt FROM bots WHERE user_id = $1::uuid")
            .bind(&bot)
            .fetch_one(app.db())
            .await
            .unwrap();
    use sha2::Digest;
    assert_eq!(digest.unwrap(), sha2::Sha256::digest(secret.as_bytes()).to_vec());
    assert!(bcrypt.is_none());

    let info = app.get(&format!("/bots/{bot}"), Some(&owner.access)).await;
    info.expect(200, None);
    assert_eq!(info.body["name"], "Helper");
    assert_eq!(info.body["visibility"], "PRIVATE");
    assert_eq!(info.body["user"]["category"], "BOT");
    assert_eq!(info.body["lastTokenRegeneratedAt"], Value::Null);
    let listed = app.get("/bots/", Some(&owner.access)).await;
    assert_eq!(listed.body.as_array().unwrap().len(), 1);
    assert_eq!(app.get("/bots/", Some(&other.access)).await.body, json!([]));

    // Login: a 24 h bot JWT with category and generation; every failure is the same 401.
    let token = bot_login(&app, &bot, &secret).await;
    let c = claims(&token);
    assert_eq!((c["category"].as_str(), c["gen"].as_i64()), (Some("bot"), Some(0)));
    assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 86_400);
    assert!(c.get("sid").is_none());
    for (who, secret) in [(bot.as_str(), "x".repeat(32)), (&other.id, secret.clone())] {
        app.post("/bots/login", None, json!({"botId": who, "token": secret}))
            .await
            .expect(401, Some("WrongPassword"));
    }
    let me = app.get("/users/me", Some(&token)).await;
    me.expect(200, None);
    assert_eq!(
        (me.body["id"].as_str(), me.body["category"].as_str()),
        (Some(bot.as_str()), Some("BOT"))
    );

    // Installed by its owner (who owns the space: MANAGE_BOTS), it can talk there.
    let (sid, general) = space(&app, &owner, &[]).await;
    app.post(
        &format!("/bots/{bot}/install"),
        Some(&owner.access),
        json!({"spaceId": sid}),
    )
    .await
    .expect(200, None);
    let spaces = app.get(&format!("/bots/{bot}/spaces"), Some(&owner.access)).await;
    assert_eq!(spaces.body[0]["spaceId"], sid.as_str());
    assert!(spaces.body[0]["spaceName"].as_str().is_some());
    let sent = app
        .post(
            &format!("/spaces/{sid}/channels/{general}/messages/"),
            Some(&token),
            json!({"content": "beep"}),
        )
        .await;
    sent.expect(200, None);
    let message = id(&sent.body);

    // A profile change keeps BotInfo.name equal to the user's name.
    let updated = app
        .patch(
            &format!("/bots/{bot}"),
            Some(&owner.access),
            json!({"name": "Helper 2", "description": "helps", "visibility": "PUBLIC", "permissions": ["read"]}),
        )
        .await;
    updated.expect(200, None);
    assert_eq!(updated.body["name"], "Helper 2");
    assert_eq!(updated.body["user"]["name"], "Helper 2");
    assert_eq!(updated.body["user"]["description"], "helps");
    assert_eq!(
        (updated.body["visibility"].as_str(), updated.body["permissions"].clone()),
        (Some("PUBLIC"), json!(["read"]))
    );
    app.patch(
        &format!("/bots/{bot}"),
        Some(&owner.access),
        json!({"permissions": vec!["p"; 33]}),
    )
    .await
    .expect(400, Some("ValidationFailed"));
    app.patch(&format!("/bots/{bot}"), Some(&owner.access), json!({"name": " "}))
        .await
        .expect(400, Some("ValidationFailed"));

    // Regeneration: the old JWT is refused at once, the old secret too.
    let regen = app
        .post(&format!("/bots/{bot}/regenerate-token"), Some(&owner.access), json!({}))
        .await;
    regen.expect(200, None);
    let secret2 = regen.body["token"].as_str().unwrap().to_string();
    assert_ne!(secret2, secret);
    app.get("/users/me", Some(&token))
        .await
        .expect(401, Some("SessionRevoked"));
    app.post("/bots/login", None, json!({"botId": bot, "token": secret}))
        .await
        .expect(401, Some("WrongPassword"));
    let token2 = bot_login(&app, &bot, &secret2).await;
    assert_eq!(claims(&token2)["gen"], 1);
    let info = app.get(&format!("/bots/{bot}"), Some(&owner.access)).await;
    assert!(info.body["lastTokenRegeneratedAt"].as_str().is_some());

    // Deletion: memberships, credentials and invites go; the user row stays as the author.
    sqlx::query("INSERT INTO invites (code, space_id, creator_id) VALUES ('botinvite', $1::uuid, $2::uuid)")
        .bind(&sid)
        .bind(&bot)
        .execute(app.db())
        .await
        .unwrap();
    app.delete(&format!("/bots/{bot}"), Some(&other.access))
        .await
        .expect(404, Some("NotFound"));
    app.delete(&format!("/bots/{bot}"), Some(&owner.access))
        .await
        .expect(200, None);
    app.get(&format!("/bots/{bot}"), Some(&owner.access))
        .await
        .expect(404, Some("NotFound"));
    app.get("/users/me", Some(&token2))
        .await
        .expect(401, Some("InvalidToken"));
    app.post("/bots/login", None, json!({"botId": bot, "token": secret2}))
        .await
        .expect(401, Some("WrongPassword"));
    let members = app.get(&format!("/spaces/{sid}/members/"), Some(&owner.access)).await;
    assert!(
        !members.text.contains(&bot),
        "the bot is still a member: {}",
        members.text
    );
    let invites = app.get(&format!("/spaces/{sid}/invites/"), Some(&owner.access)).await;
    assert_eq!(invites.body, json!([]));
    let history = app
        .get(
            &format!("/spaces/{sid}/channels/{general}/messages/"),
            Some(&owner.access),
        )
        .await;
    let kept = history
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == message.as_str())
        .cloned();
    assert_eq!(kept.expect("the bot's message stays")["author"]["id"], bot.as_str());
}

/// The critical Mikoto hole (Appendix B): owning a bot is not enough, the installer needs
/// MANAGE_BOTS in the target space; and only the owner may install a private bot.
#[tokio::test]
async fn install_needs_manage_bots_and_ownership_or_a_public_bot() {
    let app = TestApp::spawn().await;
    let (owner, admin, member, outsider) = (
        app.register("Space Owner").await,
        app.register("Admin").await,
        app.register("Member").await,
        app.register("Outsider").await,
    );
    let (sid, _) = space(&app, &owner, &[&admin, &member]).await;
    let rid = crate::common::fixtures::role(&app, &owner, &sid, "Bots").await;
    app.patch(
        &format!("/spaces/{sid}/roles/{rid}"),
        Some(&owner.access),
        json!({"permissions": "1024"}),
    )
    .await
    .expect(200, None);
    crate::common::fixtures::assign_role(&app, &owner, &sid, &admin, &rid).await;

    let (members_bot, _) = create_bot(&app, &member, "Member Bot").await;
    let (outsider_bot, _) = create_bot(&app, &outsider, "Outsider Bot").await;
    let install = |bot: String, who: String| {
        let app = &app;
        let sid = sid.clone();
        async move {
            app.post(&format!("/bots/{bot}/install"), Some(&who), json!({"spaceId": sid}))
                .await
        }
    };
    // A member who owns the bot but lacks MANAGE_BOTS.
    install(members_bot.clone(), member.access.clone())
        .await
        .expect(403, Some("InsufficientPermissions"));
    // An admin with MANAGE_BOTS, but the bot is someone else's private bot.
    install(members_bot.clone(), admin.access.clone())
        .await
        .expect(403, Some("Forbidden"));
    app.post(
        &format!("/spaces/{sid}/members/"),
        Some(&admin.access),
        json!({"userId": members_bot}),
    )
    .await
    .expect(403, Some("Forbidden"));
    // The owner of a bot outside the space gets 404 for the space.
    install(outsider_bot.clone(), outsider.access.clone())
        .await
        .expect(404, Some("NotFound"));
    // Unknown bot; a user who is not a bot.
    install(uuid::Uuid::now_v7().to_string(), admin.access.clone())
        .await
        .expect(404, Some("NotFound"));
    install(member.id.clone(), admin.access.clone())
        .await
        .expect(403, Some("Forbidden"));
    // Public: anyone with MANAGE_BOTS may install it, once.
    app.patch(
        &format!("/bots/{outsider_bot}"),
        Some(&outsider.access),
        json!({"visibility": "PUBLIC"}),
    )
    .await
    .expect(200, None);
    install(outsider_bot.clone(), member.access.clone())
        .await
        .expect(403, Some("InsufficientPermissions"));
    install(outsider_bot.clone(), admin.access.clone())
        .await
        .expect(200, None);
    install(outsider_bot.clone(), admin.access.clone())
        .await
        .expect(409, Some("AlreadyMember"));
    // Banned: kicked out with a ban, it cannot come back.
    app.put(
        &format!("/spaces/{sid}/bans/{outsider_bot}"),
        Some(&owner.access),
        json!({"reason": "spam"}),
    )
    .await;
    let banned = install(outsider_bot.clone(), admin.access.clone()).await;
    if banned.status != 409 {
        banned.expect(403, Some("Banned"));
    }
    // Its owner (not a member) may remove it only from spaces it is in.
    app.delete(&format!("/bots/{members_bot}/spaces/{sid}"), Some(&member.access))
        .await
        .expect(404, Some("NotFound"));
}

/// Every bot operation, for the owner, another user, the bot itself and an anonymous caller.
#[tokio::test]
async fn bot_operations_authorization_matrix() {
    let app = TestApp::spawn().await;
    let owner = app.register("Owner").await;
    let other = app.register("Other").await;
    let (sid, _) = space(&app, &owner, &[&other]).await;
    let (bot, _) = create_bot(&app, &owner, "Matrix Bot").await;
    // The bot actor: a bot token of the same owner (the rows regenerate and delete `bot`).
    let (caller, secret) = create_bot(&app, &owner, "Caller Bot").await;
    let bot_token = bot_login(&app, &caller, &secret).await;
    app.post(
        &format!("/bots/{bot}/install"),
        Some(&owner.access),
        json!({"spaceId": sid}),
    )
    .await
    .expect(200, None);

    // (method, path, body, owner, other user, bot token, anonymous)
    type Row = (Method, String, Value, (u16, &'static str), (u16, &'static str));
    let rows: Vec<Row> = vec![
        (Method::GET, "/bots/".into(), Value::Null, (200, ""), (200, "")),
        (
            Method::POST,
            "/bots/".into(),
            json!({"name": "New"}),
            (200, ""),
            (200, ""),
        ),
        (
            Method::GET,
            format!("/bots/{bot}"),
            Value::Null,
            (200, ""),
            (404, "NotFound"),
        ),
        (
            Method::PATCH,
            format!("/bots/{bot}"),
            json!({"permissions": []}),
            (200, ""),
            (404, "NotFound"),
        ),
        (
            Method::GET,
            format!("/bots/{bot}/spaces"),
            Value::Null,
            (200, ""),
            (404, "NotFound"),
        ),
        (
            Method::POST,
            format!("/bots/{bot}/install"),
            json!({"spaceId": sid}),
            (409, "AlreadyMember"),
            (403, "InsufficientPermissions"),
        ),
        (
            Method::DELETE,
            format!("/bots/{bot}/spaces/{sid}"),
            Value::Null,
            (200, ""),
            (404, "NotFound"),
        ),
        (
            Method::POST,
            format!("/bots/{bot}/regenerate-token"),
            Value::Null,
            (200, ""),
            (404, "NotFound"),
        ),
        (
            Method::DELETE,
            format!("/bots/{bot}"),
            Value::Null,
            (200, ""),
            (404, "NotFound"),
        ),
    ];
    for (method, path, body, owner_expect, other_expect) in rows {
        let body = (!body.is_null()).then_some(body);
        let check = |r: crate::common::Resp, (status, code): (u16, &str), who: &str| {
            assert_eq!(r.status, status, "{who}: {method} {path}: {}", r.text);
            if !code.is_empty() {
                assert_eq!(r.body["code"], code, "{who}: {method} {path}");
            }
        };
        // Refusals first: they must change nothing the owner's success depends on.
        check(
            app.call(method.clone(), &path, None, body.clone()).await,
            (401, "Unauthorized"),
            "anonymous",
        );
        check(
            app.call(method.clone(), &path, Some(&bot_token), body.clone()).await,
            (403, "BotNotAllowed"),
            "bot",
        );
        check(
            app.call(method.clone(), &path, Some(&other.access), body.clone()).await,
            other_expect,
            "other",
        );
        check(
            app.call(method.clone(), &path, Some(&owner.access), body.clone()).await,
            owner_expect,
            "owner",
        );
    }
    let other_bot_token = {
        let (b, s) = create_bot(&app, &other, "Restricted").await;
        bot_login(&app, &b, &s).await
    };
    // The bot-token restrictions of §6.6 beyond the bot operations.
    for (method, path, body) in [
        (
            Method::POST,
            "/account/change_password".to_string(),
            json!({"oldPassword": "x", "newPassword": "yyyyyyyy"}),
        ),
        (Method::POST, "/account/logout_all".into(), json!({})),
        (Method::GET, "/relations/".into(), Value::Null),
        (Method::GET, "/dm/unreads".into(), Value::Null),
        (Method::POST, "/spaces/".into(), json!({"name": "S"})),
        (Method::POST, "/spaces/join/someinvite".into(), json!({})),
        (
            Method::POST,
            format!("/spaces/{sid}/transfer_ownership"),
            json!({"userId": other.id}),
        ),
        (
            Method::POST,
            "/users/me/handle/verify".into(),
            json!({"handle": "bot.example.org"}),
        ),
        (
            Method::POST,
            "/users/me/handle/verify/complete".into(),
            json!({"handle": "bot.example.org"}),
        ),
        (
            Method::POST,
            format!("/spaces/{sid}/handle/verify"),
            json!({"handle": "team.example.org"}),
        ),
        (
            Method::POST,
            format!("/spaces/{sid}/handle/verify/complete"),
            json!({"handle": "team.example.org"}),
        ),
        (
            Method::POST,
            "/push/subscribe".into(),
            json!({"endpoint": "https://push.example.com/x", "p256dh": "a", "auth": "b"}),
        ),
        (
            Method::POST,
            "/push/unsubscribe".into(),
            json!({"endpoint": "https://push.example.com/x"}),
        ),
    ] {
        let r = app
            .call(
                method.clone(),
                &path,
                Some(&other_bot_token),
                (!body.is_null()).then_some(body),
            )
            .await;
        assert_eq!(
            (r.status, r.body["code"].as_str()),
            (403, Some("BotNotAllowed")),
            "{method} {path}: {}",
            r.text
        );
    }
}

/// A bot on `/ws` gets what a member with its permissions would, and its sockets close with
/// 4006 when its secret is regenerated or it is deleted.
#[tokio::test]
async fn a_bot_on_the_gateway_sees_what_its_permissions_allow_and_is_closed_on_regeneration() {
    let app = TestApp::spawn().await;
    let owner = app.register("Owner").await;
    let (sid, general) = space(&app, &owner, &[]).await;
    let hidden = channel(&app, &owner, &sid, "hidden").await;
    let (bot, secret) = create_bot(&app, &owner, "Listener").await;
    app.post(
        &format!("/bots/{bot}/install"),
        Some(&owner.access),
        json!({"spaceId": sid}),
    )
    .await
    .expect(200, None);
    set_override(&app, &owner, &sid, &hidden, Target::Member(&bot), 0, 1 << 12).await;
    let token = bot_login(&app, &bot, &secret).await;
    let mut ws = app.ws_open("").await;
    let ready = ws.authenticate(&token).await;
    assert_eq!(ready.data["user"]["id"], bot.as_str());

    for (cid, text) in [(&hidden, "secret"), (&general, "hello bot")] {
        app.post(
            &format!("/spaces/{sid}/channels/{cid}/messages/"),
            Some(&owner.access),
            json!({"content": text}),
        )
        .await
        .expect(200, None);
    }
    let (created, before) = ws.until("messages.onCreate").await;
    assert_eq!(created.data["content"], "hello bot");
    assert!(before.iter().all(|f| !f.data.to_string().contains("secret")));

    let mut second = app.ws_open("").await;
    second.authenticate(&token).await;
    app.post(&format!("/bots/{bot}/regenerate-token"), Some(&owner.access), json!({}))
        .await
        .expect(200, None);
    assert_eq!(ws.closed(Duration::from_secs(5)).await, Some(4006));
    assert_eq!(second.closed(Duration::from_secs(5)).await, Some(4006));
    // The old token no longer opens a socket.
    let mut again = app.ws_open("").await;
    again
        .send_json(json!({"op": "authenticate", "data": {"token": token}}))
        .await;
    assert!(again.closed(Duration::from_secs(5)).await.is_some());
}

/// The member events of a bot's life reach the space (install, profile change, deletion), and a
/// deleted bot's sockets close on every instance.
#[tokio::test]
async fn a_bot_deleted_is_closed_everywhere_and_leaves_its_spaces_with_events() {
    let app = TestApp::spawn().await;
    let peer = app.spawn_peer().await;
    let owner = app.register("Owner").await;
    let outsider = app.register("Outsider").await;
    let (sid, _) = space(&app, &owner, &[]).await;
    let (bot, secret) = create_bot(&app, &owner, "Doomed").await;
    let mut owner_ws = app.ws_auth(&owner).await;
    let mut outsider_ws = app.ws_auth(&outsider).await;
    app.post(
        &format!("/bots/{bot}/install"),
        Some(&owner.access),
        json!({"spaceId": sid}),
    )
    .await
    .expect(200, None);
    let joined = owner_ws.expect("members.onCreate").await;
    assert_eq!(joined.data["user"]["id"], bot.as_str());

    let token = bot_login(&app, &bot, &secret).await;
    let mut bot_ws = app.ws_open("").await;
    bot_ws.authenticate(&token).await;
    let mut bot_on_peer = peer.ws_open("").await;
    bot_on_peer.authenticate(&token).await;

    app.patch(&format!("/bots/{bot}"), Some(&owner.access), json!({"name": "Renamed"}))
        .await
        .expect(200, None);
    let (updated, _) = owner_ws.until("members.onUpdate").await;
    assert_eq!(updated.data["user"]["name"], "Renamed");

    app.delete(&format!("/bots/{bot}"), Some(&owner.access))
        .await
        .expect(200, None);
    let (gone, _) = owner_ws.until("members.onDelete").await;
    assert_eq!(gone.data["user"]["id"], bot.as_str());
    assert_eq!(bot_ws.closed(Duration::from_secs(5)).await, Some(4006));
    assert_eq!(bot_on_peer.closed(Duration::from_secs(5)).await, Some(4006));
    // Someone outside the space saw none of it.
    for frame in outsider_ws.drain(Duration::from_millis(300)).await {
        assert!(!frame.data.to_string().contains(&bot), "outsider saw {frame:?}");
    }
    let row: Option<String> = sqlx::query_scalar("SELECT category FROM users WHERE id = $1::uuid")
        .bind(&bot)
        .fetch_one(app.db())
        .await
        .unwrap();
    assert_eq!(row.as_deref(), Some("BOT"), "the tombstone user stays");
}

/// A secret imported from Mikoto (bcrypt) works once and is then replaced by its digest.
#[tokio::test]
async fn an_imported_bcrypt_secret_is_verified_once_and_replaced() {
    let app = TestApp::spawn().await;
    let owner = app.register("Owner").await;
    let bot = app.create_bot(&owner.id, "Imported", false).await;
    let secret = "imported-secret-imported-secret!";
    sqlx::query("UPDATE bots SET secret_bcrypt = $2 WHERE user_id = $1::uuid")
        .bind(&bot)
        .bind(bcrypt::hash(secret, 4).unwrap())
        .execute(app.db())
        .await
        .unwrap();
    app.post("/bots/login", None, json!({"botId": bot, "token": "wrong"}))
        .await
        .expect(401, Some("WrongPassword"));
    bot_login(&app, &bot, secret).await;
    let (digest, hash): (Option<Vec<u8>>, Option<String>) =
        sqlx::query_as("SELECT secret_digest, secret_bcrypt FROM bots WHERE user_id = $1::uuid")
            .bind(&bot)
            .fetch_one(app.db())
            .await
            .unwrap();
    assert!(digest.is_some() && hash.is_none());
    bot_login(&app, &bot, secret).await;
}

#[tokio::test]
async fn an_owner_has_at_most_25_bots() {
    let app = TestApp::spawn().await;
    let owner = app.register("Owner").await;
    for i in 0..25 {
        create_bot(&app, &owner, &format!("Bot {i}")).await;
    }
    app.post("/bots/", Some(&owner.access), json!({"name": "One too many"}))
        .await
        .expect(400, Some("LimitExceeded"));
    app.post("/bots/", Some(&owner.access), json!({"name": ""}))
        .await
        .expect(400, Some("ValidationFailed"));
    assert_eq!(
        app.get("/bots/", Some(&owner.access))
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        25
    );
}

#[tokio::test]
async fn voice_tokens_verify_with_livekit_and_follow_send_messages() {
    let key = "APIvoicekey";
    let secret = "livekit-secret-livekit-secret-livekit";
    let app = TestApp::builder()
        .config(move |c| {
            c.livekit_url = Some("wss://voice.alterego.test".into());
            c.livekit_api_key = Some(key.into());
            c.livekit_api_secret = Some(secret.into());
        })
        .spawn()
        .await;
    let owner = app.register("Owner").await;
    let listener = app.register("Listener").await;
    let outsider = app.register("Outsider").await;
    let (sid, general) = space(&app, &owner, &[&listener]).await;
    let voice = app
        .post(
            &format!("/spaces/{sid}/channels/"),
            Some(&owner.access),
            json!({"name": "Voice", "type": "VOICE"}),
        )
        .await;
    voice.expect(200, None);
    let vid = id(&voice.body);
    set_override(&app, &owner, &sid, &vid, Target::Member(&listener.id), 0, 1 << 13).await;

    let join = async |cid: &str, who: &TestUser| {
        app.post(
            &format!("/spaces/{sid}/channels/{cid}/voice/"),
            Some(&who.access),
            json!({}),
        )
        .await
    };
    join(&general, &owner).await.expect(400, Some("WrongChannelType"));
    join(&vid, &outsider).await.expect(404, Some("NotFound"));

    for (who, can_publish) in [(&owner, true), (&listener, false)] {
        let r = join(&vid, who).await;
        r.expect(200, None);
        assert_eq!(r.body["url"], "wss://voice.alterego.test");
        assert_eq!(r.body["channelId"], vid.as_str());
        let token = r.body["token"].as_str().unwrap();
        let grants = verify_livekit(key, secret, token)
            .await
            .expect("LiveKit accepts the token");
        assert_eq!(grants["sub"], who.id.as_str());
        assert_eq!(grants["name"], who.name.as_str());
        assert_eq!(grants["video"]["room"], vid.as_str());
        assert_eq!(grants["video"]["roomJoin"], true);
        assert_eq!(grants["video"]["canSubscribe"], true);
        assert_eq!(grants["video"]["canPublish"], can_publish);
        assert_eq!(grants["video"]["canPublishData"], can_publish);
        let ttl = grants["exp"].as_u64().unwrap() - grants["iat"].as_u64().unwrap();
        assert_eq!(ttl, 7200);
        // Signed with another secret, LiveKit refuses it.
        assert!(
            verify_livekit(key, "another-secret-another-secret-another", token)
                .await
                .is_err()
        );
    }

    let unconfigured = TestApp::spawn().await;
    let owner = unconfigured.register("Owner").await;
    let (sid, _) = space(&unconfigured, &owner, &[]).await;
    let v = unconfigured
        .post(
            &format!("/spaces/{sid}/channels/"),
            Some(&owner.access),
            json!({"name": "V", "type": "VOICE"}),
        )
        .await;
    let vid = id(&v.body);
    unconfigured
        .post(
            &format!("/spaces/{sid}/channels/{vid}/voice/"),
            Some(&owner.access),
            json!({}),
        )
        .await
        .expect(503, Some("VoiceUnavailable"));
}

/// `bots.login` is limited per bot (10 a minute, spec §11.2) whatever the client address, so a
/// secret cannot be guessed from many addresses; other bots are unaffected.
#[tokio::test]
async fn bot_login_is_rate_limited_per_bot() {
    let app = TestApp::spawn().await;
    let owner = app.register("Owner").await;
    let (bot, secret) = create_bot(&app, &owner, "Guarded").await;
    let (other, other_secret) = create_bot(&app, &owner, "Other").await;
    for _ in 0..10 {
        app.post("/bots/login", None, json!({"botId": bot, "token": "guess"}))
            .await
            .expect(401, Some("WrongPassword"));
    }
    let limited = app
        .post("/bots/login", None, json!({"botId": bot, "token": secret}))
        .await;
    limited.expect(429, Some("RateLimited"));
    assert!(limited.header("retry-after").is_some());
    bot_login(&app, &other, &other_secret).await;
}

/// A bot token remembered by every instance's session cache is refused at once on all of them
/// when the owner regenerates the secret on one.
#[tokio::test]
async fn a_regenerated_bot_token_is_refused_at_once_on_every_instance() {
    let app = TestApp::spawn().await;
    let peer = app.spawn_peer().await;
    let owner = app.register("Owner").await;
    let (bot, secret) = create_bot(&app, &owner, "Cached").await;
    let token = bot_login(&app, &bot, &secret).await;
    for instance in [&app, &peer] {
        for _ in 0..2 {
            instance.get("/users/me", Some(&token)).await.expect(200, None);
        }
    }
    peer.post(&format!("/bots/{bot}/regenerate-token"), Some(&owner.access), json!({}))
        .await
        .expect(200, None);
    app.get("/users/me", Some(&token))
        .await
        .expect(401, Some("SessionRevoked"));
    peer.get("/users/me", Some(&token))
        .await
        .expect(401, Some("SessionRevoked"));
}
