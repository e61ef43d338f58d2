//! Handles and custom-domain verification (spec §4.1, §4.4, §4.8, §12.4, §12.9) against the real
//! server. The success paths of verification run with a fake `DomainProbe` (this machine has no
//! internet); the failure paths also run with the real one, against a domain that cannot exist.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::fixtures::{assign_role, profile_topic, ranked_role, space, space_topic};
use crate::common::{Capture, TestApp};
use alterego::functions::verification::DomainProbe;
use base64::Engine;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(3);

/// A scripted probe: TXT records by name and well-known bodies by domain; it records its calls.
#[derive(Default)]
struct FakeProbe {
    txt: Mutex<HashMap<String, Vec<String>>>,
    files: Mutex<HashMap<String, Vec<u8>>>,
    calls: Mutex<Vec<String>>,
}

impl FakeProbe {
    fn set_txt(&self, name: &str, records: &[&str]) {
        let records = records.iter().map(|r| r.to_string()).collect();
        self.txt.lock().unwrap().insert(name.to_string(), records);
    }
    fn set_file(&self, domain: &str, body: &str) {
        self.files
            .lock()
            .unwrap()
            .insert(domain.to_string(), body.as_bytes().to_vec());
    }
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl DomainProbe for FakeProbe {
    fn txt<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<String>, String>> {
        Box::pin(async move {
            self.calls.lock().unwrap().push(format!("txt {name}"));
            Ok(self.txt.lock().unwrap().get(name).cloned().unwrap_or_default())
        })
    }
    fn well_known<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<Vec<u8>, String>> {
        Box::pin(async move {
            self.calls.lock().unwrap().push(format!("well-known {domain}"));
            self.files
                .lock()
                .unwrap()
                .get(domain)
                .cloned()
                .ok_or_else(|| "the server answered HTTP 404".to_string())
        })
    }
}

async fn spawn_fake() -> (TestApp, Arc<FakeProbe>) {
    let probe = Arc::new(FakeProbe::default());
    let p = probe.clone();
    let app = TestApp::builder().state(move |s| s.domain_probe = p).spawn().await;
    (app, probe)
}

fn is_wire_time(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.len() == 24 && s.ends_with('Z') && s.as_bytes()[10] == b'T' && s.as_bytes()[19] == b'.')
}

#[tokio::test]
async fn instance_info_publishes_the_configured_domains_and_key() {
    let app = TestApp::spawn().await;
    let r = app.get("/.well-known/mikoto/instance.json", None).await;
    r.expect(200, None);
    assert_eq!(
        r.body,
        json!({
            "domain": "alterego.test",
            "handleDomain": "alterego.test",
            "publicKey": null,
            "apiEndpoint": "http://alterego.test",
        })
    );
    assert_eq!(r.header("x-ratelimit-bucket"), Some("anonymous"));

    let public = base64::engine::general_purpose::STANDARD.encode([3u8; 32]);
    let key = public.clone();
    let app = TestApp::builder()
        .without_redis()
        .config(move |c| {
            c.instance_domain = "chat.example.org".into();
            c.handle_public_key = Some(key);
        })
        .spawn()
        .await;
    let r = app.get("/.well-known/mikoto/instance.json", None).await;
    assert_eq!(r.body["domain"], "chat.example.org");
    assert_eq!(r.body["handleDomain"], "alterego.test");
    assert_eq!(r.body["publicKey"], public);
}

#[tokio::test]
async fn handles_resolve_case_insensitively_for_users_and_spaces() {
    let app = TestApp::spawn().await;
    let alice = app.register("Alice").await;
    let r = app.get("/handles/ALICE.Alterego.Test", None).await;
    r.expect(200, None);
    assert_eq!(r.body["handle"], "alice.alterego.test");
    assert_eq!(r.body["owner"], json!({"type": "user", "id": alice.id}));
    assert_eq!(r.body["verifiedAt"], Value::Null);
    assert!(is_wire_time(&r.body["createdAt"]), "{}", r.text);
    assert_eq!(r.header("x-ratelimit-bucket"), Some("anonymous"));
    assert_eq!(
        app.get("/handles/@alice.alterego.test", None).await.body["handle"],
        "alice.alterego.test"
    );
    app.get("/handles/nobody.alterego.test", None)
        .await
        .expect(404, Some("NotFound"));

    let (sid, _) = space(&app, &alice, &[]).await;
    app.patch(
        &format!("/spaces/{sid}"),
        Some(&alice.access),
        json!({"handle": "Team"}),
    )
    .await
    .expect(200, None);
    let r = app.get("/handles/team.alterego.test", None).await;
    r.expect(200, None);
    assert_eq!(r.body["owner"], json!({"type": "space", "id": sid}));
}

#[tokio::test]
async fn users_set_and_release_their_handles() {
    let app = TestApp::spawn().await;
    let alice = app.register("Alice").await;
    let bob = app.register("Bob").await;
    let a = Some(alice.access.as_str());
    let (sid, _) = space(&app, &alice, &[&bob]).await;
    let mut profile = app.capture(&[profile_topic(&alice.id)]).await;
    let mut space = app.capture(&[space_topic(&sid)]).await;

    let r = app.post("/users/me/handle", a, json!({"handle": "  New_Name "})).await;
    r.expect(200, None);
    assert_eq!(r.body["handle"], "new_name.alterego.test");
    assert_eq!(r.body["id"], alice.id.as_str());
    assert_eq!(app.get("/users/me", a).await.body["handle"], "new_name.alterego.test");
    app.get("/handles/alice.alterego.test", None)
        .await
        .expect(404, Some("NotFound"));
    let ev = Capture::expect_op(profile.next(WAIT).await, "users.onUpdate");
    assert_eq!(ev.data["handle"], "new_name.alterego.test");
    let ev = Capture::expect_op(space.next(WAIT).await, "members.onUpdate");
    assert_eq!(ev.data["user"]["handle"], "new_name.alterego.test");

    // A full default handle is used as is.
    let r = app
        .post("/users/me/handle", a, json!({"handle": "Full.alterego.test"}))
        .await;
    assert_eq!(r.body["handle"], "full.alterego.test");
    Capture::expect_op(profile.next(WAIT).await, "users.onUpdate");

    // Taken by a user, or by a space.
    let b = Some(bob.access.as_str());
    app.post("/users/me/handle", b, json!({"handle": "full"}))
        .await
        .expect(409, Some("HandleTaken"));
    app.patch(&format!("/spaces/{sid}"), a, json!({"handle": "teamspace"}))
        .await
        .expect(200, None);
    app.post("/users/me/handle", b, json!({"handle": "teamspace.alterego.test"}))
        .await
        .expect(409, Some("HandleTaken"));
    app.patch(&format!("/spaces/{sid}"), a, json!({"handle": "bob"}))
        .await
        .expect(409, Some("HandleTaken"));
    assert_eq!(app.get("/users/me", b).await.body["handle"], "bob.alterego.test");

    // Syntax.
    for bad in [
        "-bad-",
        "a",
        "",
        "   ",
        "x.y.alterego.test",
        "alterego.test",
        "ünï",
        "a b",
    ] {
        app.post("/users/me/handle", b, json!({"handle": bad}))
            .await
            .expect(400, Some("InvalidHandle"));
    }
    app.post("/users/me/handle", b, json!({"handle": "bob.example.org"}))
        .await
        .expect(400, Some("CustomDomainRequiresVerification"));
    app.post("/users/me/handle", b, json!({}))
        .await
        .expect(422, Some("InvalidBody"));
    app.post("/users/me/handle", None, json!({"handle": "x1"}))
        .await
        .expect(401, Some("Unauthorized"));
    assert_eq!(app.get("/users/me", b).await.body["handle"], "bob.alterego.test");

    // Release: not re-assigned, and the name is free again.
    let r = app.delete("/users/me/handle", a).await;
    r.expect(200, None);
    assert_eq!(r.body["handle"], Value::Null);
    let ev = Capture::expect_op(profile.next(WAIT).await, "users.onUpdate");
    assert_eq!(ev.data["handle"], Value::Null);
    assert_eq!(app.get("/users/me", a).await.body["handle"], Value::Null);
    app.get("/handles/full.alterego.test", None)
        .await
        .expect(404, Some("NotFound"));
    app.delete("/users/me/handle", a).await.expect(200, None);
    app.post("/users/me/handle", b, json!({"handle": "full"}))
        .await
        .expect(200, None);
}

#[tokio::test]
async fn challenges_have_the_documented_shape_and_replace_earlier_ones() {
    let app = TestApp::spawn().await;
    let alice = app.register("Alice").await;
    let a = Some(alice.access.as_str());
    let r = app
        .post("/users/me/handle/verify", a, json!({"handle": " Example.ORG "}))
        .await;
    r.expect(200, None);
    let c = &r.body;
    let nonce = c["nonce"].as_str().unwrap().to_string();
    assert_eq!(nonce.len(), 32);
    assert!(nonce.bytes().all(|b| b.is_ascii_alphanumeric()));
    assert_eq!(c["handle"], "example.org");
    assert_eq!(c["entityType"], "user");
    assert_eq!(c["entityId"], alice.id.as_str());
    assert!(
        is_wire_time(&c["createdAt"]) && is_wire_time(&c["expiresAt"]),
        "{}",
        r.text
    );
    let created = chrono::DateTime::parse_from_rfc3339(c["createdAt"].as_str().unwrap()).unwrap();
    let expires = chrono::DateTime::parse_from_rfc3339(c["expiresAt"].as_str().unwrap()).unwrap();
    assert_eq!(expires - created, chrono::TimeDelta::hours(24));
    assert_eq!(c["dnsTxtName"], "_mikoto.example.org");
    assert_eq!(
        c["dnsTxtRecord"],
        format!("v=1 home=alterego.test user={} nonce={nonce}", alice.id)
    );
    assert_eq!(c["wellKnownUrl"], "https://example.org/.well-known/mikoto.json");
    assert_eq!(
        c["wellKnownContent"],
        format!(
            "{{\n  \"homeInstance\": \"alterego.test\",\n  \"entityType\": \"user\",\n  \"entityId\": \"{}\",\n  \"nonce\": \"{nonce}\"\n}}",
            alice.id
        )
    );
    let stored: (String, String) =
        sqlx::query_as("SELECT domain, nonce FROM handle_challenges WHERE user_id = $1::uuid")
            .bind(&alice.id)
            .fetch_one(app.db())
            .await
            .unwrap();
    assert_eq!(stored, ("example.org".to_string(), nonce.clone()));

    // A new start replaces the user's earlier challenge, for any domain.
    let again = app
        .post("/users/me/handle/verify", a, json!({"handle": "example.org"}))
        .await;
    assert_ne!(again.body["nonce"], nonce.as_str());
    app.post("/users/me/handle/verify", a, json!({"handle": "other.example"}))
        .await
        .expect(200, None);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM handle_challenges WHERE user_id = $1::uuid")
        .bind(&alice.id)
        .fetch_one(app.db())
        .await
        .unwrap();
    assert_eq!(count, 1);
    let r = app
        .post("/users/me/handle/verify/complete", a, json!({"handle": "example.org"}))
        .await;
    r.expect(200, None);
    assert_eq!(r.body["success"], false);
    assert!(
        r.body["error"].as_str().unwrap().contains("No verification"),
        "{}",
        r.text
    );

    // Only custom domains outside HANDLE_DOMAIN.
    for bad in [
        "alice",
        "alice.alterego.test",
        "a.b.alterego.test",
        "alterego.test",
        "not a domain",
        "x..org",
    ] {
        app.post("/users/me/handle/verify", a, json!({"handle": bad}))
            .await
            .expect(400, Some("InvalidHandle"));
        app.post("/users/me/handle/verify/complete", a, json!({"handle": bad}))
            .await
            .expect(400, Some("InvalidHandle"));
    }
    app.post("/users/me/handle/verify", a, json!({"domain": "x.org"}))
        .await
        .expect(422, Some("InvalidBody"));
}

#[tokio::test]
async fn completion_fails_softly_with_the_real_probe() {
    let app = TestApp::spawn().await;
    let alice = app.register("Alice").await;
    let a = Some(alice.access.as_str());
    // No challenge: no lookup at all.
    let r = app
        .post("/users/me/handle/verify/complete", a, json!({"handle": "example.org"}))
        .await;
    r.expect(200, None);
    assert_eq!(r.body["success"], false);
    assert_eq!(r.body["method"], Value::Null);
    assert!(r.body["error"].is_string());
    assert_eq!(r.header("x-ratelimit-bucket"), Some("verification"));

    // A domain that cannot exist (RFC 2606): both checks fail, and say why.
    app.post("/users/me/handle/verify", a, json!({"handle": "nonexistent.invalid"}))
        .await
        .expect(200, None);
    let r = app
        .post(
            "/users/me/handle/verify/complete",
            a,
            json!({"handle": "nonexistent.invalid"}),
        )
        .await;
    r.expect(200, None);
    assert_eq!(r.body["success"], false, "{}", r.text);
    assert_eq!(r.body["method"], Value::Null);
    let error = r.body["error"].as_str().unwrap();
    assert_eq!(
        error,
        "DNS: no TXT record at _mikoto.nonexistent.invalid; well-known file: the domain does not resolve"
    );
    // The challenge stays usable after a failed attempt.
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM handle_challenges WHERE user_id = $1::uuid")
        .bind(&alice.id)
        .fetch_one(app.db())
        .await
        .unwrap();
    assert_eq!(count, 1);
    assert_eq!(app.get("/users/me", a).await.body["handle"], "alice.alterego.test");
}

#[tokio::test]
async fn users_verify_by_dns_and_the_domain_moves_between_holders() {
    let (app, probe) = spawn_fake().await;
    let alice = app.register("Alice").await;
    let bob = app.register("Bob").await;
    let a = Some(alice.access.as_str());
    let (sid, _) = space(&app, &alice, &[&bob]).await;
    let mut alice_profile = app.capture(&[profile_topic(&alice.id)]).await;
    let mut space = app.capture(&[space_topic(&sid)]).await;

    let c = app
        .post("/users/me/handle/verify", a, json!({"handle": "example.org"}))
        .await;
    let record = c.body["dnsTxtRecord"].as_str().unwrap();
    // A wrong record fails; whitespace differences do not matter.
    probe.set_txt(
        "_mikoto.example.org",
        &["v=spf1 -all", &record.replace("nonce=", "nonce=x")],
    );
    let r = app
        .post("/users/me/handle/verify/complete", a, json!({"handle": "example.org"}))
        .await;
    assert_eq!(r.body["success"], false, "{}", r.text);
    assert!(r.body["error"].as_str().unwrap().contains("matches"), "{}", r.text);
    assert_eq!(probe.calls(), ["txt _mikoto.example.org", "well-known example.org"]);
    let spaced = format!("  {}  ", record.replace(' ', "   "));
    probe.set_txt("_mikoto.example.org", &[&spaced]);
    let r = app
        .post("/users/me/handle/verify/complete", a, json!({"handle": "Example.org"}))
        .await;
    r.expect(200, None);
    assert_eq!(r.body, json!({"success": true, "method": "dns", "error": null}));
    assert_eq!(app.get("/users/me", a).await.body["handle"], "example.org");
    let resolved = app.get("/handles/example.org", None).await;
    assert_eq!(resolved.body["owner"], json!({"type": "user", "id": alice.id}));
    assert!(is_wire_time(&resolved.body["verifiedAt"]), "{}", resolved.text);
    app.get("/handles/alice.alterego.test", None)
        .await
        .expect(404, Some("NotFound"));
    let ev = Capture::expect_op(alice_profile.next(WAIT).await, "users.onUpdate");
    assert_eq!(ev.data["handle"], "example.org");
    let ev = Capture::expect_op(space.next(WAIT).await, "members.onUpdate");
    assert_eq!(ev.data["user"]["handle"], "example.org");

    // The challenge was consumed.
    let r = app
        .post("/users/me/handle/verify/complete", a, json!({"handle": "example.org"}))
        .await;
    assert_eq!(r.body["success"], false);
    // Setting the verified domain one holds is a no-op; it is still not settable by others.
    let r = app.post("/users/me/handle", a, json!({"handle": "EXAMPLE.org"})).await;
    r.expect(200, None);
    assert_eq!(r.body["handle"], "example.org");
    let b = Some(bob.access.as_str());
    app.post("/users/me/handle", b, json!({"handle": "example.org"}))
        .await
        .expect(400, Some("CustomDomainRequiresVerification"));

    // Bob proves control too: the domain moves to him, and Alice hears of it.
    let mut bob_profile = app.capture(&[profile_topic(&bob.id)]).await;
    let c = app
        .post("/users/me/handle/verify", b, json!({"handle": "example.org"}))
        .await;
    probe.set_txt("_mikoto.example.org", &[c.body["dnsTxtRecord"].as_str().unwrap()]);
    let r = app
        .post("/users/me/handle/verify/complete", b, json!({"handle": "example.org"}))
        .await;
    assert_eq!(r.body["success"], true, "{}", r.text);
    assert_eq!(app.get("/users/me", b).await.body["handle"], "example.org");
    assert_eq!(app.get("/users/me", a).await.body["handle"], Value::Null);
    let ev = Capture::expect_op(bob_profile.next(WAIT).await, "users.onUpdate");
    assert_eq!(ev.data["handle"], "example.org");
    let ev = Capture::expect_op(alice_profile.next(WAIT).await, "users.onUpdate");
    assert_eq!(ev.data["id"], alice.id.as_str());
    assert_eq!(ev.data["handle"], Value::Null);
    assert_eq!(
        app.get("/handles/example.org", None).await.body["owner"],
        json!({"type": "user", "id": bob.id})
    );
}

#[tokio::test]
async fn spaces_verify_by_well_known_file_and_take_a_domain_from_a_user() {
    let (app, probe) = spawn_fake().await;
    let owner = app.register("Owner").await;
    let holder = app.register("Holder").await;
    let t = Some(owner.access.as_str());
    let (sid, _) = space(&app, &owner, &[]).await;
    app.patch(&format!("/spaces/{sid}"), t, json!({"handle": "team"}))
        .await
        .expect(200, None);

    // The holder owns team.example.org first.
    let h = Some(holder.access.as_str());
    let c = app
        .post("/users/me/handle/verify", h, json!({"handle": "team.example.org"}))
        .await;
    probe.set_file("team.example.org", c.body["wellKnownContent"].as_str().unwrap());
    let r = app
        .post(
            "/users/me/handle/verify/complete",
            h,
            json!({"handle": "team.example.org"}),
        )
        .await;
    assert_eq!(r.body, json!({"success": true, "method": "well-known", "error": null}));

    let mut space = app.capture(&[space_topic(&sid)]).await;
    let mut holder_profile = app.capture(&[profile_topic(&holder.id)]).await;
    let c = app
        .post(
            &format!("/spaces/{sid}/handle/verify"),
            t,
            json!({"handle": "team.example.org"}),
        )
        .await;
    c.expect(200, None);
    assert_eq!(c.body["entityType"], "space");
    assert_eq!(c.body["entityId"], sid.as_str());
    assert!(
        c.body["dnsTxtRecord"]
            .as_str()
            .unwrap()
            .contains(&format!(" space={sid} "))
    );
    // The user's file does not prove the space's challenge.
    let r = app
        .post(
            &format!("/spaces/{sid}/handle/verify/complete"),
            t,
            json!({"handle": "team.example.org"}),
        )
        .await;
    assert_eq!(r.body["success"], false, "{}", r.text);
    assert!(r.body["error"].as_str().unwrap().contains("entityType"), "{}", r.text);
    probe.set_file("team.example.org", c.body["wellKnownContent"].as_str().unwrap());
    let r = app
        .post(
            &format!("/spaces/{sid}/handle/verify/complete"),
            t,
            json!({"handle": "team.example.org"}),
        )
        .await;
    assert_eq!(r.body, json!({"success": true, "method": "well-known", "error": null}));
    let got = app.get(&format!("/spaces/{sid}"), t).await;
    assert_eq!(got.body["handle"], "team.example.org");
    let ev = Capture::expect_op(space.next(WAIT).await, "spaces.onUpdate");
    assert_eq!(ev.data["handle"], "team.example.org");
    let ev = Capture::expect_op(holder_profile.next(WAIT).await, "users.onUpdate");
    assert_eq!(ev.data["handle"], Value::Null);
    app.get("/handles/team.alterego.test", None)
        .await
        .expect(404, Some("NotFound"));
    let resolved = app.get("/handles/team.example.org", None).await;
    assert_eq!(resolved.body["owner"], json!({"type": "space", "id": sid}));
    assert!(is_wire_time(&resolved.body["verifiedAt"]));
    // spaces.update with the verified domain it holds is a no-op; a plain name replaces it.
    app.patch(&format!("/spaces/{sid}"), t, json!({"handle": "team.example.org"}))
        .await
        .expect(200, None);
    let r = app.patch(&format!("/spaces/{sid}"), t, json!({"handle": "team"})).await;
    assert_eq!(r.body["handle"], "team.alterego.test");
    app.get("/handles/team.example.org", None)
        .await
        .expect(404, Some("NotFound"));
}

#[tokio::test]
async fn expired_challenges_are_refused() {
    let (app, probe) = spawn_fake().await;
    let alice = app.register("Alice").await;
    let a = Some(alice.access.as_str());
    let c = app
        .post("/users/me/handle/verify", a, json!({"handle": "example.org"}))
        .await;
    probe.set_txt("_mikoto.example.org", &[c.body["dnsTxtRecord"].as_str().unwrap()]);
    sqlx::query("UPDATE handle_challenges SET expires_at = now() - interval '1 second' WHERE user_id = $1::uuid")
        .bind(&alice.id)
        .execute(app.db())
        .await
        .unwrap();
    let r = app
        .post("/users/me/handle/verify/complete", a, json!({"handle": "example.org"}))
        .await;
    r.expect(200, None);
    assert_eq!(r.body["success"], false);
    assert!(r.body["error"].as_str().unwrap().contains("expired"), "{}", r.text);
    assert!(probe.calls().is_empty());
    assert_eq!(app.get("/users/me", a).await.body["handle"], "alice.alterego.test");
    // The janitor's purge removes it.
    assert_eq!(
        alterego::entities::handles::purge_expired_challenges(app.db())
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn verified_domains_are_attested_when_a_key_is_configured() {
    use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
    let b64 = base64::engine::general_purpose::STANDARD;
    let seed = [5u8; 32];
    let public = Ed25519KeyPair::from_seed_unchecked(&seed)
        .unwrap()
        .public_key()
        .as_ref()
        .to_vec();
    let probe = Arc::new(FakeProbe::default());
    let p = probe.clone();
    let (private_b64, public_b64) = (b64.encode(seed), b64.encode(&public));
    let published = public_b64.clone();
    let app = TestApp::builder()
        .without_redis()
        .config(move |c| {
            c.handle_private_key = Some(private_b64);
            c.handle_public_key = Some(public_b64);
        })
        .state(move |s| s.domain_probe = p)
        .spawn()
        .await;
    assert_eq!(
        app.get("/.well-known/mikoto/instance.json", None).await.body["publicKey"],
        published
    );
    let alice = app.register("Alice").await;
    let a = Some(alice.access.as_str());
    let c = app
        .post("/users/me/handle/verify", a, json!({"handle": "example.org"}))
        .await;
    probe.set_txt("_mikoto.example.org", &[c.body["dnsTxtRecord"].as_str().unwrap()]);
    let r = app
        .post("/users/me/handle/verify/complete", a, json!({"handle": "example.org"}))
        .await;
    assert_eq!(r.body["success"], true, "{}", r.text);
    let verified_at = app.get("/handles/example.org", None).await.body["verifiedAt"]
        .as_str()
        .unwrap()
        .to_string();
    let signature: String = sqlx::query_scalar("SELECT attestation FROM handles WHERE handle = 'example.org'")
        .fetch_one(app.db())
        .await
        .unwrap();
    let message = format!("example.org:user:{}:alterego.test:{verified_at}", alice.id);
    let sig = b64.decode(signature).unwrap();
    UnparsedPublicKey::new(&ED25519, &public)
        .verify(message.as_bytes(), &sig)
        .expect("the attestation verifies with the published key");
}

#[tokio::test]
async fn unsigned_without_a_key() {
    let (app, probe) = spawn_fake().await;
    let alice = app.register("Alice").await;
    let a = Some(alice.access.as_str());
    let c = app
        .post("/users/me/handle/verify", a, json!({"handle": "example.org"}))
        .await;
    probe.set_file("example.org", c.body["wellKnownContent"].as_str().unwrap());
    let r = app
        .post("/users/me/handle/verify/complete", a, json!({"handle": "example.org"}))
        .await;
    assert_eq!(r.body["success"], true, "{}", r.text);
    let signature: Option<String> = sqlx::query_scalar("SELECT attestation FROM handles WHERE handle = 'example.org'")
        .fetch_one(app.db())
        .await
        .unwrap();
    assert_eq!(signature, None);
}

#[tokio::test]
async fn space_verification_requires_membership_and_manage_space() {
    let (app, probe) = spawn_fake().await;
    let owner = app.register("Owner").await;
    let member = app.register("Member").await;
    let stranger = app.register("Stranger").await;
    let (sid, _) = space(&app, &owner, &[&member]).await;
    let body = json!({"handle": "team.example.org"});
    for suffix in ["verify", "verify/complete"] {
        let path = format!("/spaces/{sid}/handle/{suffix}");
        app.post(&path, Some(&stranger.access), body.clone())
            .await
            .expect(404, Some("NotFound"));
        app.post(&path, Some(&member.access), body.clone())
            .await
            .expect(403, Some("InsufficientPermissions"));
        let unknown = format!("/spaces/{}/handle/{suffix}", uuid::Uuid::now_v7());
        app.post(&unknown, Some(&owner.access), body.clone())
            .await
            .expect(404, Some("NotFound"));
        app.post(
            &format!("/spaces/not-a-uuid/handle/{suffix}"),
            Some(&owner.access),
            body.clone(),
        )
        .await
        .expect(400, Some("InvalidPathParameter"));
        app.post(&path, None, body.clone())
            .await
            .expect(401, Some("Unauthorized"));
        // Permission (403) is decided before the value (400).
        app.post(&path, Some(&member.access), json!({"handle": "nope"}))
            .await
            .expect(403, Some("InsufficientPermissions"));
    }
    // MANAGE_SPACE through a role is enough.
    let t = Some(owner.access.as_str());
    let manage_space = alterego::functions::permissions::Permissions::MANAGE_SPACE.bits();
    let rid = ranked_role(&app, &owner, &sid, "Admins", manage_space, 0).await;
    assign_role(&app, &owner, &sid, &member, &rid).await;
    let c = app
        .post(
            &format!("/spaces/{sid}/handle/verify"),
            Some(&member.access),
            body.clone(),
        )
        .await;
    c.expect(200, None);
    probe.set_txt("_mikoto.team.example.org", &[c.body["dnsTxtRecord"].as_str().unwrap()]);
    let r = app
        .post(
            &format!("/spaces/{sid}/handle/verify/complete"),
            Some(&member.access),
            body.clone(),
        )
        .await;
    assert_eq!(r.body, json!({"success": true, "method": "dns", "error": null}));
    assert_eq!(
        app.get(&format!("/spaces/{sid}"), t).await.body["handle"],
        "team.example.org"
    );
}

#[tokio::test]
async fn bots_cannot_verify_domains() {
    let app = TestApp::spawn().await;
    let ann = app.register("Ann").await;
    let (sid, _) = space(&app, &ann, &[]).await;
    let bot = app.create_bot(&ann.id, "Bot", false).await;
    let token = app
        .state
        .jwt
        .bot_token(uuid::Uuid::parse_str(&bot).unwrap(), 0, Duration::from_secs(60))
        .unwrap();
    // Bot tokens are not accepted until bots can log in (the bots API issue); either way these
    // user-only operations must refuse them (403 BotNotAllowed once they are).
    let body = json!({"handle": "example.org"});
    for path in [
        "/users/me/handle/verify".to_string(),
        "/users/me/handle/verify/complete".to_string(),
        format!("/spaces/{sid}/handle/verify"),
        format!("/spaces/{sid}/handle/verify/complete"),
    ] {
        let r = app.post(&path, Some(&token), body.clone()).await;
        assert!(r.status == 401 || r.status == 403, "{path}: {}", r.text);
    }
}

#[tokio::test]
async fn completion_is_limited_by_the_verification_bucket() {
    let app = TestApp::spawn().await;
    let alice = app.register("Alice").await;
    let bob = app.register("Bob").await;
    let a = Some(alice.access.as_str());
    let (sid, _) = space(&app, &alice, &[]).await;
    let body = json!({"handle": "example.org"});
    for i in 0..10 {
        // Both completion operations share the user's bucket.
        let path = if i % 2 == 0 {
            "/users/me/handle/verify/complete".to_string()
        } else {
            format!("/spaces/{sid}/handle/verify/complete")
        };
        let r = app.post(&path, a, body.clone()).await;
        r.expect(200, None);
        assert_eq!(r.header("x-ratelimit-bucket"), Some("verification"));
        assert_eq!(r.header("x-ratelimit-limit"), Some("10"));
    }
    let r = app.post("/users/me/handle/verify/complete", a, body.clone()).await;
    r.expect(429, Some("RateLimited"));
    assert_eq!(r.header("x-ratelimit-bucket"), Some("verification"));
    assert!(r.header("retry-after").is_some());
    app.post(&format!("/spaces/{sid}/handle/verify/complete"), a, body.clone())
        .await
        .expect(429, Some("RateLimited"));
    // Starting is not limited by it, and other users have their own bucket.
    let r = app.post("/users/me/handle/verify", a, body.clone()).await;
    r.expect(200, None);
    assert_eq!(r.header("x-ratelimit-bucket"), Some("general"));
    app.post("/users/me/handle/verify/complete", Some(&bob.access), body)
        .await
        .expect(200, None);
}
