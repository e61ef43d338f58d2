//! The Mikoto contract (spec §1.2, §1.3): every operation alterego serves has Mikoto's method,
//! path and operationId in `/api.json`, and its real responses validate against Mikoto's schema
//! — the schema mikoto.js checks every response with.

use std::collections::{BTreeMap, BTreeSet};

use crate::common::{PASSWORD, TestApp};
use base64::Engine;
use reqwest::Method;
use serde_json::{Value, json};

fn mikoto_api() -> Value {
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mikoto-api.json");
    let text = std::fs::read_to_string(fixture).expect("tests/fixtures/mikoto-api.json");
    // The fixture is a copy of the team's spec file; when the spec is checked out next to the
    // repository, they must not have drifted apart.
    let shared = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/spec/mikoto-api.json");
    if let Ok(spec) = std::fs::read_to_string(shared) {
        assert_eq!(
            spec, text,
            "tests/fixtures/mikoto-api.json differs from ../shared/spec/mikoto-api.json"
        );
    }
    serde_json::from_str(&text).expect("mikoto-api.json parses")
}

/// (method, path) → operationId of an OpenAPI document.
fn operations(doc: &Value) -> BTreeMap<(String, String), String> {
    let mut out = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            if let Some(id) = op["operationId"].as_str() {
                out.insert((method.to_uppercase(), path.clone()), id.to_string());
            }
        }
    }
    out
}

/// A validator for the 200 response of a Mikoto operation.
struct Contract {
    doc: Value,
}

impl Contract {
    fn response_schema(&self, method: &str, path: &str) -> Value {
        let op = &self.doc["paths"][path][method.to_lowercase()];
        let mut schema = op["responses"]["200"]["content"]["application/json"]["schema"].clone();
        assert!(schema.is_object(), "Mikoto documents no JSON 200 for {method} {path}");
        schema["components"] = self.doc["components"].clone();
        schema
    }

    #[track_caller]
    fn check(&self, seen: &mut BTreeSet<String>, method: &str, path: &str, resp: &crate::common::Resp) {
        assert_eq!(resp.status, 200, "{method} {path}: {}", resp.text);
        let schema = self.response_schema(method, path);
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .expect("schema compiles");
        let errors: Vec<String> = validator
            .iter_errors(&resp.body)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {path} response violates Mikoto's schema: {errors:?}\n{}",
            resp.text
        );
        let id = self.doc["paths"][path][method.to_lowercase()]["operationId"]
            .as_str()
            .unwrap_or_default();
        seen.insert(id.to_string());
    }
}

/// A domain probe that answers every TXT look-up with the records the scenario sets (handle
/// verification cannot reach the internet from a test).
#[derive(Default)]
struct ScriptedDns(std::sync::Mutex<Vec<String>>);

impl alterego::functions::verification::DomainProbe for ScriptedDns {
    fn txt<'a>(&'a self, _: &'a str) -> futures_util::future::BoxFuture<'a, Result<Vec<String>, String>> {
        Box::pin(async move { Ok(self.0.lock().unwrap().clone()) })
    }
    fn well_known<'a>(&'a self, _: &'a str) -> futures_util::future::BoxFuture<'a, Result<Vec<u8>, String>> {
        Box::pin(async move { Err("the server answered HTTP 404".to_string()) })
    }
}

#[tokio::test]
async fn served_operations_match_mikoto() {
    let mikoto = mikoto_api();
    let dns = std::sync::Arc::new(ScriptedDns::default());
    let probe = dns.clone();
    let app = TestApp::builder()
        .state(move |s| s.domain_probe = probe)
        .config(|c| {
            let (public, private) = crate::push::vapid_pair();
            c.vapid_public_key = Some(public);
            c.vapid_private_key = Some(private);
            c.vapid_subject = Some("https://alterego.test".into());
            c.livekit_url = Some("wss://voice.alterego.test".into());
            c.livekit_api_key = Some("APIcontract".into());
            c.livekit_api_secret = Some("contract-secret-contract-secret".into());
        })
        .spawn()
        .await;
    let ours = app.get("/api.json", None).await;
    ours.expect(200, None);
    assert_eq!(ours.body["openapi"].as_str().map(|v| v.starts_with("3.1")), Some(true));

    let theirs = operations(&mikoto);
    let mine = operations(&ours.body);
    assert_eq!(theirs.len(), 88);

    // Every operation we document under a Mikoto operationId sits at Mikoto's method and path.
    let by_id: BTreeMap<&String, &(String, String)> = theirs.iter().map(|(k, v)| (v, k)).collect();
    for (key, id) in &mine {
        if let Some(expected) = by_id.get(id) {
            assert_eq!(*expected, key, "operationId {id} is served at the wrong method/path");
        }
    }
    let served: BTreeSet<String> = theirs
        .iter()
        .filter(|(k, _)| mine.contains_key(*k))
        .map(|(_, id)| id.clone())
        .collect();
    for (key, id) in &theirs {
        if let Some(our_id) = mine.get(key) {
            assert_eq!(our_id, id, "{key:?} has the wrong operationId");
        }
    }

    // Component names line up for every schema a served operation references.
    let ours_text = ours.text.clone();
    for id in &served {
        let (method, path) = by_id[id];
        let op = serde_json::to_string(&mikoto["paths"][path][method.to_lowercase()]).unwrap();
        for name in op
            .split("#/components/schemas/")
            .skip(1)
            .map(|s| s.split('"').next().unwrap_or_default())
        {
            assert!(
                ours_text.contains(&format!("#/components/schemas/{name}\"")),
                "{id}: component {name} is missing from /api.json"
            );
        }
    }
    // Every reference in our document resolves.
    let schemas = ours.body["components"]["schemas"]
        .as_object()
        .expect("component schemas");
    for name in ours_text
        .split("\"#/components/schemas/")
        .skip(1)
        .map(|s| s.split('"').next().unwrap_or_default())
    {
        assert!(
            schemas.contains_key(name),
            "/api.json references the missing component {name}"
        );
    }
    // The bearer scheme exists and protected operations use it.
    assert_eq!(ours.body["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    assert!(
        ours.body["paths"]["/users/me"]["get"]["security"]
            .to_string()
            .contains("bearer")
    );

    // Real responses of every served operation validate against Mikoto's schemas.
    let contract = Contract { doc: mikoto.clone() };
    let mut seen = BTreeSet::new();
    let check = |seen: &mut BTreeSet<String>, m: &str, p: &str, r: &crate::common::Resp| contract.check(seen, m, p, r);

    check(&mut seen, "GET", "/", &app.get("/", None).await);
    let email = "contract@example.org";
    let reg = app
        .post(
            "/account/register",
            None,
            json!({"email": email, "name": "Contract", "password": PASSWORD}),
        )
        .await;
    check(&mut seen, "POST", "/account/register", &reg);
    let login = app
        .post("/account/login", None, json!({"email": email, "password": PASSWORD}))
        .await;
    check(&mut seen, "POST", "/account/login", &login);
    let refresh_token = login.body["refreshToken"].as_str().unwrap().to_string();
    let refreshed = app
        .post("/account/refresh", None, json!({"refreshToken": refresh_token}))
        .await;
    check(&mut seen, "POST", "/account/refresh", &refreshed);
    let grace = app
        .post("/account/refresh", None, json!({"refreshToken": refresh_token}))
        .await;
    check(&mut seen, "POST", "/account/refresh", &grace);
    let access = refreshed.body["accessToken"].as_str().unwrap().to_string();
    check(
        &mut seen,
        "GET",
        "/users/me",
        &app.get("/users/me", Some(&access)).await,
    );
    let patched = app
        .patch("/users/me", Some(&access), json!({"description": "hi", "name": "C"}))
        .await;
    check(&mut seen, "PATCH", "/users/me", &patched);
    let cleared = app
        .patch("/users/me", Some(&access), json!({"description": null}))
        .await;
    check(&mut seen, "PATCH", "/users/me", &cleared);
    let changed = app
        .post(
            "/account/change_password",
            Some(&access),
            json!({"oldPassword": PASSWORD, "newPassword": "another password"}),
        )
        .await;
    check(&mut seen, "POST", "/account/change_password", &changed);
    check(
        &mut seen,
        "POST",
        "/account/reset_password",
        &app.post("/account/reset_password", None, json!({"email": email})).await,
    );
    let mail = app.wait_for_mail(1).await;
    let token = crate::common::reset_token(&mail);
    let confirm = app
        .post(
            "/account/reset_password/submit",
            None,
            json!({"token": token, "password": "third password"}),
        )
        .await;
    check(&mut seen, "POST", "/account/reset_password/submit", &confirm);
    // Our additions are void operations returning `null` as well.
    let l = app
        .post(
            "/account/login",
            None,
            json!({"email": email, "password": "third password"}),
        )
        .await;
    let a = l.body["accessToken"].as_str().unwrap();
    assert_eq!(
        app.call(Method::POST, "/account/logout_all", Some(a), None).await.text,
        "null"
    );

    community_scenario(&app, &contract, &mut seen).await;
    conversation_scenario(&app, &contract, &mut seen).await;
    handles_scenario(&app, &dns, &contract, &mut seen).await;
    bots_and_voice_scenario(&app, &contract, &mut seen).await;

    assert_eq!(
        seen, served,
        "every served Mikoto operation must have its response checked here"
    );
    println!(
        "contract coverage: {} of {} Mikoto operations served and validated: {:?}",
        served.len(),
        theirs.len(),
        served
    );
}

/// Every community operation (spec §4.8, §4.9, §4.13–§4.16), validated against Mikoto's schemas.
async fn community_scenario(app: &TestApp, contract: &Contract, seen: &mut BTreeSet<String>) {
    let owner = app.register("Owner").await;
    let guest = app.register("Guest").await;
    let t = Some(owner.access.as_str());
    let g = Some(guest.access.as_str());
    let mut check = |m: &str, p: &str, r: &crate::common::Resp| contract.check(seen, m, p, r);

    let space = app.post("/spaces/", t, json!({"name": "Contract Space"})).await;
    check("POST", "/spaces/", &space);
    let sid = space.body["id"].as_str().unwrap().to_string();
    check("GET", "/spaces/", &app.get("/spaces/", t).await);
    check("GET", "/spaces/{spaceId}", &app.get(&format!("/spaces/{sid}"), t).await);
    let patched = app
        .patch(
            &format!("/spaces/{sid}"),
            t,
            json!({"name": "Renamed", "visibility": "PUBLIC"}),
        )
        .await;
    check("PATCH", "/spaces/{spaceId}", &patched);

    let invite = app.post(&format!("/spaces/{sid}/invites/"), t, json!({})).await;
    check("POST", "/spaces/{spaceId}/invites/", &invite);
    let code = invite.body["id"].as_str().unwrap().to_string();
    check(
        "GET",
        "/spaces/{spaceId}/invites/",
        &app.get(&format!("/spaces/{sid}/invites/"), t).await,
    );
    check(
        "GET",
        "/spaces/join/{invite}",
        &app.get(&format!("/spaces/join/{code}"), None).await,
    );
    check(
        "POST",
        "/spaces/join/{invite}",
        &app.post(&format!("/spaces/join/{code}"), g, json!({})).await,
    );

    let channel = app
        .post(
            &format!("/spaces/{sid}/channels/"),
            t,
            json!({"name": "docs", "type": "DOCUMENT"}),
        )
        .await;
    check("POST", "/spaces/{spaceId}/channels/", &channel);
    let cid = channel.body["id"].as_str().unwrap().to_string();
    check(
        "GET",
        "/spaces/{spaceId}/channels/",
        &app.get(&format!("/spaces/{sid}/channels/"), t).await,
    );
    check(
        "GET",
        "/spaces/{spaceId}/channels/{channelId}",
        &app.get(&format!("/spaces/{sid}/channels/{cid}"), t).await,
    );
    let renamed = app
        .patch(&format!("/spaces/{sid}/channels/{cid}"), t, json!({"name": "notes"}))
        .await;
    check("PATCH", "/spaces/{spaceId}/channels/{channelId}", &renamed);
    check(
        "POST",
        "/spaces/{spaceId}/channels/{channelId}/ack",
        &app.post(&format!("/spaces/{sid}/channels/{cid}/ack"), t, json!({}))
            .await,
    );
    check(
        "GET",
        "/spaces/{spaceId}/channels/unreads",
        &app.get(&format!("/spaces/{sid}/channels/unreads"), t).await,
    );

    let role = app
        .post(&format!("/spaces/{sid}/roles/"), t, json!({"name": "Mods"}))
        .await;
    check("POST", "/spaces/{spaceId}/roles/", &role);
    let rid = role.body["id"].as_str().unwrap().to_string();
    let role_patch = json!({"name": "Moderators", "permissions": "2048", "position": 1, "color": "#AbC"});
    check(
        "PATCH",
        "/spaces/{spaceId}/roles/{roleId}",
        &app.patch(&format!("/spaces/{sid}/roles/{rid}"), t, role_patch).await,
    );

    let gid = &guest.id;
    check(
        "GET",
        "/spaces/{spaceId}/members/",
        &app.get(&format!("/spaces/{sid}/members/?limit=10"), t).await,
    );
    check(
        "GET",
        "/spaces/{spaceId}/members/{userId}",
        &app.get(&format!("/spaces/{sid}/members/{gid}"), t).await,
    );
    let added = app
        .post(&format!("/spaces/{sid}/members/{gid}/roles/{rid}"), t, json!({}))
        .await;
    check("POST", "/spaces/{spaceId}/members/{userId}/roles/{roleId}", &added);
    let removed = app.delete(&format!("/spaces/{sid}/members/{gid}/roles/{rid}"), t).await;
    check("DELETE", "/spaces/{spaceId}/members/{userId}/roles/{roleId}", &removed);
    let updated = app
        .patch(&format!("/spaces/{sid}/members/{gid}"), t, json!({"roleIds": [rid]}))
        .await;
    check("PATCH", "/spaces/{spaceId}/members/{userId}", &updated);
    let bot = app.create_bot(&owner.id, "Helper Bot", false).await;
    check(
        "POST",
        "/spaces/{spaceId}/members/",
        &app.post(&format!("/spaces/{sid}/members/"), t, json!({"userId": bot}))
            .await,
    );
    check(
        "DELETE",
        "/spaces/{spaceId}/members/{userId}",
        &app.delete(&format!("/spaces/{sid}/members/{bot}"), t).await,
    );

    check(
        "POST",
        "/spaces/{spaceId}/notification-preference",
        &app.post(
            &format!("/spaces/{sid}/notification-preference"),
            g,
            json!({"level": "MENTIONS"}),
        )
        .await,
    );
    check(
        "GET",
        "/spaces/{spaceId}/notification-preference",
        &app.get(&format!("/spaces/{sid}/notification-preference"), g).await,
    );
    check(
        "GET",
        "/spaces/notification-preferences",
        &app.get("/spaces/notification-preferences", g).await,
    );

    check(
        "DELETE",
        "/spaces/{spaceId}/leave",
        &app.delete(&format!("/spaces/{sid}/leave"), g).await,
    );
    let ban = app
        .post(
            &format!("/spaces/{sid}/bans/"),
            t,
            json!({"userId": gid, "reason": "spam"}),
        )
        .await;
    check("POST", "/spaces/{spaceId}/bans/", &ban);
    check(
        "GET",
        "/spaces/{spaceId}/bans/",
        &app.get(&format!("/spaces/{sid}/bans/"), t).await,
    );
    check(
        "DELETE",
        "/spaces/{spaceId}/bans/{userId}",
        &app.delete(&format!("/spaces/{sid}/bans/{gid}"), t).await,
    );

    check(
        "DELETE",
        "/spaces/{spaceId}/invites/{inviteId}",
        &app.delete(&format!("/spaces/{sid}/invites/{code}"), t).await,
    );
    check(
        "DELETE",
        "/spaces/{spaceId}/roles/{roleId}",
        &app.delete(&format!("/spaces/{sid}/roles/{rid}"), t).await,
    );
    check(
        "DELETE",
        "/spaces/{spaceId}/channels/{channelId}",
        &app.delete(&format!("/spaces/{sid}/channels/{cid}"), t).await,
    );
    check(
        "DELETE",
        "/spaces/{spaceId}",
        &app.delete(&format!("/spaces/{sid}"), t).await,
    );
}

/// Every conversation operation (spec §4.5, §4.6, §4.10, §4.17), validated against Mikoto's schemas.
async fn conversation_scenario(app: &TestApp, contract: &Contract, seen: &mut BTreeSet<String>) {
    let ann = app.register("Ann").await;
    let ben = app.register("Ben").await;
    let cat = app.register("Cat").await;
    let (a, b, c) = (
        Some(ann.access.as_str()),
        Some(ben.access.as_str()),
        Some(cat.access.as_str()),
    );
    let mut check = |m: &str, p: &str, r: &crate::common::Resp| contract.check(seen, m, p, r);

    check(
        "POST",
        "/relations/{relationId}/request",
        &app.post(&format!("/relations/{}/request", ben.id), a, json!({})).await,
    );
    check(
        "POST",
        "/relations/{relationId}/accept",
        &app.post(&format!("/relations/{}/accept", ann.id), b, json!({})).await,
    );
    check("GET", "/relations/", &app.get("/relations/", a).await);
    check(
        "GET",
        "/relations/{relationId}",
        &app.get(&format!("/relations/{}", ben.id), a).await,
    );
    let dm = app.post(&format!("/relations/{}/dm", ben.id), a, json!({})).await;
    check("POST", "/relations/{relationId}/dm", &dm);
    let dm_id = dm.body["id"].as_str().unwrap().to_string();

    let sent = app
        .post(&format!("/dm/{dm_id}/messages/"), a, json!({"content": "hello ben"}))
        .await;
    check("POST", "/dm/{channelId}/messages/", &sent);
    let mid = sent.body["id"].as_str().unwrap().to_string();
    check(
        "GET",
        "/dm/{channelId}/messages/",
        &app.get(&format!("/dm/{dm_id}/messages/?limit=10"), b).await,
    );
    let edited = app
        .patch(
            &format!("/dm/{dm_id}/messages/{mid}"),
            a,
            json!({"content": "hello again"}),
        )
        .await;
    check("PATCH", "/dm/{channelId}/messages/{messageId}", &edited);
    check(
        "POST",
        "/dm/{channelId}/ack",
        &app.post(&format!("/dm/{dm_id}/ack"), b, json!({})).await,
    );
    check("GET", "/dm/unreads", &app.get("/dm/unreads", b).await);
    check(
        "DELETE",
        "/dm/{channelId}/messages/{messageId}",
        &app.delete(&format!("/dm/{dm_id}/messages/{mid}"), a).await,
    );

    app.post(&format!("/relations/{}/request", cat.id), a, json!({}))
        .await
        .expect(200, None);
    check(
        "POST",
        "/relations/{relationId}/decline",
        &app.post(&format!("/relations/{}/decline", ann.id), c, json!({})).await,
    );
    check(
        "POST",
        "/relations/{relationId}/block",
        &app.post(&format!("/relations/{}/block", cat.id), a, json!({})).await,
    );
    check(
        "DELETE",
        "/relations/{relationId}/block",
        &app.delete(&format!("/relations/{}/block", cat.id), a).await,
    );
    check(
        "DELETE",
        "/relations/{relationId}",
        &app.delete(&format!("/relations/{}", ben.id), a).await,
    );

    let space = app.post("/spaces/", a, json!({"name": "Chat"})).await;
    let sid = space.body["id"].as_str().unwrap().to_string();
    let cid = space.body["channels"][0]["id"].as_str().unwrap().to_string();
    let base = format!("/spaces/{sid}/channels/{cid}/messages/");
    let msg = app
        .post(&base, a, json!({"content": "first post", "attachments": []}))
        .await;
    check("POST", "/spaces/{spaceId}/channels/{channelId}/messages/", &msg);
    let mid = msg.body["id"].as_str().unwrap().to_string();
    check(
        "GET",
        "/spaces/{spaceId}/channels/{channelId}/messages/",
        &app.get(&base, a).await,
    );
    check(
        "GET",
        "/spaces/{spaceId}/channels/{channelId}/messages/{messageId}",
        &app.get(&format!("{base}{mid}"), a).await,
    );
    let edited = app
        .patch(&format!("{base}{mid}"), a, json!({"content": "first post, edited"}))
        .await;
    check(
        "PATCH",
        "/spaces/{spaceId}/channels/{channelId}/messages/{messageId}",
        &edited,
    );
    check(
        "DELETE",
        "/spaces/{spaceId}/channels/{channelId}/messages/{messageId}",
        &app.delete(&format!("{base}{mid}"), a).await,
    );
}

/// Handles and domain verification (spec §4.1, §4.4, §4.8), validated against Mikoto's schemas:
/// failed and successful verifications, and the resolution of a verified domain.
async fn handles_scenario(app: &TestApp, dns: &ScriptedDns, contract: &Contract, seen: &mut BTreeSet<String>) {
    let hana = app.register("Hana").await;
    let h = Some(hana.access.as_str());
    let mut check = |m: &str, p: &str, r: &crate::common::Resp| contract.check(seen, m, p, r);

    check(
        "GET",
        "/.well-known/mikoto/instance.json",
        &app.get("/.well-known/mikoto/instance.json", None).await,
    );
    check(
        "GET",
        "/handles/{handle}",
        &app.get("/handles/hana.alterego.test", None).await,
    );
    check(
        "POST",
        "/users/me/handle",
        &app.post("/users/me/handle", h, json!({"handle": "hana-chan"})).await,
    );
    check("DELETE", "/users/me/handle", &app.delete("/users/me/handle", h).await);

    let challenge = app
        .post("/users/me/handle/verify", h, json!({"handle": "hana.example.org"}))
        .await;
    check("POST", "/users/me/handle/verify", &challenge);
    let complete = "/users/me/handle/verify/complete";
    let failed = app.post(complete, h, json!({"handle": "hana.example.org"})).await;
    assert_eq!(failed.body["success"], false, "{}", failed.text);
    check("POST", complete, &failed);
    *dns.0.lock().unwrap() = vec![challenge.body["dnsTxtRecord"].as_str().unwrap().to_string()];
    let verified = app.post(complete, h, json!({"handle": "hana.example.org"})).await;
    assert_eq!(verified.body["success"], true, "{}", verified.text);
    check("POST", complete, &verified);
    let resolved = app.get("/handles/hana.example.org", None).await;
    assert!(resolved.body["verifiedAt"].is_string(), "{}", resolved.text);
    check("GET", "/handles/{handle}", &resolved);

    let space = app.post("/spaces/", h, json!({"name": "Hana's"})).await;
    let sid = space.body["id"].as_str().unwrap().to_string();
    let challenge = app
        .post(
            &format!("/spaces/{sid}/handle/verify"),
            h,
            json!({"handle": "team.example.org"}),
        )
        .await;
    check("POST", "/spaces/{spaceId}/handle/verify", &challenge);
    *dns.0.lock().unwrap() = vec![challenge.body["dnsTxtRecord"].as_str().unwrap().to_string()];
    let verified = app
        .post(
            &format!("/spaces/{sid}/handle/verify/complete"),
            h,
            json!({"handle": "team.example.org"}),
        )
        .await;
    assert_eq!(verified.body["success"], true, "{}", verified.text);
    check("POST", "/spaces/{spaceId}/handle/verify/complete", &verified);
    let resolved = app.get("/handles/team.example.org", None).await;
    check("GET", "/handles/{handle}", &resolved);
}

/// Bots, push, documents and voice (spec §4.3, §4.7, §4.11, §4.12), validated against Mikoto's schemas.
async fn bots_and_voice_scenario(app: &TestApp, contract: &Contract, seen: &mut BTreeSet<String>) {
    let owner = app.register("Bot Owner").await;
    let o = Some(owner.access.as_str());
    let mut check = |m: &str, p: &str, r: &crate::common::Resp| contract.check(seen, m, p, r);

    let created = app.post("/bots/", o, json!({"name": "Contract Bot"})).await;
    check("POST", "/bots/", &created);
    let bot = created.body["id"].as_str().unwrap().to_string();
    let secret = created.body["token"].as_str().unwrap().to_string();
    check("GET", "/bots/", &app.get("/bots/", o).await);
    check("GET", "/bots/{botId}", &app.get(&format!("/bots/{bot}"), o).await);
    let login = app
        .post("/bots/login", None, json!({"botId": bot, "token": secret}))
        .await;
    check("POST", "/bots/login", &login);
    let patched = app
        .patch(
            &format!("/bots/{bot}"),
            o,
            json!({"name": "Renamed Bot", "visibility": "PUBLIC", "permissions": ["messages"], "description": null}),
        )
        .await;
    check("PATCH", "/bots/{botId}", &patched);
    let space = app.post("/spaces/", o, json!({"name": "Bots' home"})).await;
    let sid = space.body["id"].as_str().unwrap().to_string();
    check(
        "POST",
        "/bots/{botId}/install",
        &app.post(&format!("/bots/{bot}/install"), o, json!({"spaceId": sid}))
            .await,
    );
    check(
        "GET",
        "/bots/{botId}/spaces",
        &app.get(&format!("/bots/{bot}/spaces"), o).await,
    );
    check(
        "POST",
        "/bots/{botId}/regenerate-token",
        &app.post(&format!("/bots/{bot}/regenerate-token"), o, json!({})).await,
    );
    check(
        "DELETE",
        "/bots/{botId}/spaces/{spaceId}",
        &app.delete(&format!("/bots/{bot}/spaces/{sid}"), o).await,
    );
    check("DELETE", "/bots/{botId}", &app.delete(&format!("/bots/{bot}"), o).await);

    check("GET", "/push/config", &app.get("/push/config", None).await);
    // A literal public address passes the SSRF rules without DNS.
    let endpoint = "https://93.184.216.34/push/contract";
    let (p256dh, auth) = {
        use aws_lc_rs::agreement::{ECDH_P256, PrivateKey};
        let key = PrivateKey::generate(&ECDH_P256).unwrap();
        let public = key.compute_public_key().unwrap();
        (
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(public.as_ref()),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([9u8; 16]),
        )
    };
    check(
        "POST",
        "/push/subscribe",
        &app.post(
            "/push/subscribe",
            o,
            json!({"endpoint": endpoint, "p256dh": p256dh, "auth": auth}),
        )
        .await,
    );
    check(
        "POST",
        "/push/unsubscribe",
        &app.post("/push/unsubscribe", o, json!({"endpoint": endpoint})).await,
    );

    let document = app
        .post(
            &format!("/spaces/{sid}/channels/"),
            o,
            json!({"name": "Notes", "type": "DOCUMENT"}),
        )
        .await;
    let did = document.body["id"].as_str().unwrap().to_string();
    let docs = format!("/spaces/{sid}/channels/{did}/documents/");
    check(
        "GET",
        "/spaces/{spaceId}/channels/{channelId}/documents/",
        &app.get(&docs, o).await,
    );
    check(
        "PATCH",
        "/spaces/{spaceId}/channels/{channelId}/documents/",
        &app.patch(&docs, o, json!({"content": "# Hello"})).await,
    );
    check(
        "POST",
        "/spaces/{spaceId}/channels/{channelId}/documents/claim-bootstrap",
        &app.post(&format!("{docs}claim-bootstrap"), o, json!({})).await,
    );

    let voice = app
        .post(
            &format!("/spaces/{sid}/channels/"),
            o,
            json!({"name": "Voice", "type": "VOICE"}),
        )
        .await;
    let vid = voice.body["id"].as_str().unwrap().to_string();
    check(
        "POST",
        "/spaces/{spaceId}/channels/{channelId}/voice/",
        &app.post(&format!("/spaces/{sid}/channels/{vid}/voice/"), o, json!({}))
            .await,
    );
}
