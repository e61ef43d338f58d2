//! Web Push (spec §4.7, §12.2, §12.3): subscriptions and their rules, and real deliveries to a
//! local HTTPS push service (tests/node/push-receiver.mjs) that decrypts every payload with
//! the `http_ece` package and checks the VAPID signature — an implementation the server does
//! not use. The receiver's host is the only exemption from the SSRF rules; everything else,
//! including DNS rebinding to 127.0.0.1, is refused as in production.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alterego::functions::push_transport::{HostResolver, PushNetwork, TrustedReceiver};
use alterego::functions::webpush::VapidKeys;
use alterego::services::push::Pusher;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};

use crate::common::fixtures::{Target, befriend, channel, set_override, space};
use crate::common::node::PushReceiver;
use crate::common::{TestApp, TestUser};

const RECEIVER_HOST: &str = "push.test";
const WAIT: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(1500);

/// A DNS the test scripts; every lookup is recorded.
#[derive(Default)]
struct ScriptedDns {
    answers: Mutex<HashMap<String, Vec<IpAddr>>>,
    lookups: Mutex<Vec<String>>,
}

impl ScriptedDns {
    fn set(&self, host: &str, ip: &str) {
        self.answers
            .lock()
            .unwrap()
            .insert(host.to_string(), vec![ip.parse().unwrap()]);
    }
    fn lookups_of(&self, host: &str) -> usize {
        self.lookups.lock().unwrap().iter().filter(|h| *h == host).count()
    }
}

impl HostResolver for ScriptedDns {
    fn lookup<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, String>> {
        Box::pin(async move {
            self.lookups.lock().unwrap().push(host.to_string());
            self.answers
                .lock()
                .unwrap()
                .get(host)
                .cloned()
                .ok_or_else(|| "the domain does not resolve".to_string())
        })
    }
}

/// A fresh VAPID key pair: (public, private), base64url.
pub fn vapid_pair() -> (String, String) {
    use aws_lc_rs::agreement::{ECDH_P256, PrivateKey};
    use aws_lc_rs::encoding::{AsBigEndian, EcPrivateKeyBin};
    let key = PrivateKey::generate(&ECDH_P256).unwrap();
    let public = key.compute_public_key().unwrap();
    let private: EcPrivateKeyBin = key.as_be_bytes().unwrap();
    (
        URL_SAFE_NO_PAD.encode(public.as_ref()),
        URL_SAFE_NO_PAD.encode(private.as_ref()),
    )
}

struct PushWorld {
    app: TestApp,
    receiver: PushReceiver,
    dns: Arc<ScriptedDns>,
    public_key: String,
}

async fn world() -> PushWorld {
    let receiver = PushReceiver::start(RECEIVER_HOST).await;
    let dns = Arc::new(ScriptedDns::default());
    let (public, private) = vapid_pair();
    let trusted = TrustedReceiver {
        host: RECEIVER_HOST.into(),
        addr: receiver.addr(),
        root_cert_pem: receiver.cert_pem.clone(),
    };
    let network = PushNetwork::with_resolver(dns.clone(), Vec::new(), Some(trusted)).expect("push network");
    let (p, k) = (public.clone(), private.clone());
    let app = TestApp::builder()
        .config(move |c| {
            c.vapid_public_key = Some(p);
            c.vapid_private_key = Some(k);
            c.vapid_subject = Some("mailto:ops@alterego.test".into());
        })
        .state(move |s| {
            let keys = VapidKeys::new(
                s.config.vapid_public_key.as_deref().unwrap(),
                s.config.vapid_private_key.as_deref().unwrap(),
                "mailto:ops@alterego.test",
            )
            .unwrap();
            s.push = Some(Pusher::start(keys, network, s.db.clone(), s.gateway.clone(), &s.config));
        })
        .spawn()
        .await;
    PushWorld {
        app,
        receiver,
        dns,
        public_key: public,
    }
}

impl PushWorld {
    /// Subscribes `user` with the receiver's keys at `path`.
    async fn subscribe(&self, user: &TestUser, path: &str) -> String {
        let r = self
            .app
            .post(
                "/push/subscribe",
                Some(&user.access),
                json!({"endpoint": self.receiver.endpoint(path), "p256dh": self.receiver.p256dh, "auth": self.receiver.auth}),
            )
            .await;
        r.expect(200, None);
        r.body["id"].as_str().unwrap().to_string()
    }

    /// The next push, checked: decrypted by http_ece, VAPID valid, the spec's headers.
    async fn next_push(&mut self) -> Value {
        let got = self.receiver.next(WAIT).await.expect("a push notification");
        assert_eq!(got["error"], Value::Null, "{got}");
        assert_eq!(got["vapid"]["ok"], true, "{got}");
        assert_eq!(got["vapid"]["k"], self.public_key.as_str());
        assert_eq!(got["vapid"]["sub"], "mailto:ops@alterego.test");
        assert_eq!(got["headers"]["ttl"], "86400");
        assert_eq!(got["headers"]["urgency"], "normal");
        assert_eq!(got["headers"]["contentEncoding"], "aes128gcm");
        got
    }

    async fn say(&self, who: &TestUser, sid: &str, cid: &str, content: &str) {
        self.app
            .post(
                &format!("/spaces/{sid}/channels/{cid}/messages/"),
                Some(&who.access),
                json!({"content": content}),
            )
            .await
            .expect(200, None);
    }
}

#[tokio::test]
async fn push_config_and_subscriptions_follow_the_rules() {
    // Without VAPID: no key, and subscribing is refused.
    let bare = TestApp::spawn().await;
    assert_eq!(bare.get("/push/config", None).await.body, json!({"publicKey": null}));
    let u = bare.register("Nobody").await;
    bare.post(
        "/push/subscribe",
        Some(&u.access),
        json!({"endpoint": "https://push.example.com/x", "p256dh": "a", "auth": "b"}),
    )
    .await
    .expect(503, Some("PushDisabled"));

    let w = world().await;
    let app = &w.app;
    assert_eq!(
        app.get("/push/config", None).await.body["publicKey"],
        w.public_key.as_str()
    );
    let ann = app.register("Ann").await;
    let bob = app.register("Bob").await;
    let (p256dh, auth) = (w.receiver.p256dh.clone(), w.receiver.auth.clone());
    let sub = |endpoint: String, p256dh: String, auth: String, who: &TestUser| {
        let token = who.access.clone();
        async move {
            app.post(
                "/push/subscribe",
                Some(&token),
                json!({"endpoint": endpoint, "p256dh": p256dh, "auth": auth}),
            )
            .await
        }
    };
    w.dns.set("internal.test", "10.0.0.7");
    w.dns.set("public.test", "93.184.216.34");
    for (endpoint, field) in [
        ("http://public.test/x".to_string(), "endpoint"),
        ("https://public.test:8443/x".into(), "endpoint"),
        ("https://127.0.0.1/x".into(), "endpoint"),
        ("https://internal.test/x".into(), "endpoint"),
        ("https://nowhere.test/x".into(), "endpoint"),
        (format!("https://public.test/{}", "a".repeat(2048)), "endpoint"),
    ] {
        let r = sub(endpoint.clone(), p256dh.clone(), auth.clone(), &ann).await;
        r.expect(400, Some("ValidationFailed"));
        assert_eq!(r.body["field"], field, "{endpoint}: {}", r.text);
    }
    let r = sub("https://public.test/x".into(), "AAAA".into(), auth.clone(), &ann).await;
    assert_eq!((r.status, r.body["field"].as_str()), (400, Some("p256dh")));
    let r = sub("https://public.test/x".into(), p256dh.clone(), "AAAA".into(), &ann).await;
    assert_eq!((r.status, r.body["field"].as_str()), (400, Some("auth")));

    // The same endpoint: another user with other keys is a conflict; with the same keys (the
    // same browser subscription) it moves over.
    let first = sub("https://public.test/shared".into(), p256dh.clone(), auth.clone(), &ann).await;
    first.expect(200, None);
    let other_auth = URL_SAFE_NO_PAD.encode([7u8; 16]);
    sub("https://public.test/shared".into(), p256dh.clone(), other_auth, &bob)
        .await
        .expect(409, Some("Conflict"));
    let moved = sub("https://public.test/shared".into(), p256dh.clone(), auth.clone(), &bob).await;
    moved.expect(200, None);
    assert_eq!(moved.body["id"], first.body["id"]);
    let owner: String = sqlx::query_scalar("SELECT user_id::text FROM push_subscriptions WHERE endpoint = $1")
        .bind("https://public.test/shared")
        .fetch_one(app.db())
        .await
        .unwrap();
    assert_eq!(owner, bob.id);

    // At most 20 per user: the oldest goes.
    for i in 0..21 {
        sub(
            format!("https://public.test/ann/{i}"),
            p256dh.clone(),
            auth.clone(),
            &ann,
        )
        .await
        .expect(200, None);
    }
    let kept: Vec<String> = sqlx::query_scalar("SELECT endpoint FROM push_subscriptions WHERE user_id = $1::uuid")
        .bind(&ann.id)
        .fetch_all(app.db())
        .await
        .unwrap();
    assert_eq!(kept.len(), 20);
    assert!(!kept.contains(&"https://public.test/ann/0".to_string()));
    app.post(
        "/push/unsubscribe",
        Some(&ann.access),
        json!({"endpoint": "https://public.test/ann/5"}),
    )
    .await
    .expect(200, None);
    app.post(
        "/push/unsubscribe",
        Some(&ann.access),
        json!({"endpoint": "https://public.test/shared"}),
    )
    .await
    .expect(200, None);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM push_subscriptions")
        .fetch_one(app.db())
        .await
        .unwrap();
    assert_eq!(count, 20, "Ann's unsubscribe removed only her own row");
    app.post("/push/unsubscribe", None, json!({"endpoint": "x"}))
        .await
        .expect(401, Some("Unauthorized"));
}

#[tokio::test]
async fn dms_and_mentions_push_offline_users_only() {
    let mut w = world().await;
    let ann = w.app.register("Ann").await;
    let bee = w.app.register("Bee").await;
    let cat = w.app.register("Cat").await;
    w.subscribe(&bee, "/bee").await;
    w.subscribe(&cat, "/cat").await;
    let (sid, general) = space(&w.app, &ann, &[&bee, &cat]).await;

    // A DM to an offline partner.
    let dm = befriend(&w.app, &ann, &bee).await;
    w.app
        .post(
            &format!("/dm/{dm}/messages/"),
            Some(&ann.access),
            json!({"content": "psst"}),
        )
        .await
        .expect(200, None);
    let got = w.next_push().await;
    assert_eq!(got["path"], "/bee");
    assert_eq!(
        got["payload"],
        json!({"title": "Ann", "body": "psst", "url": format!("/dm/{dm}"), "tag": format!("dm:{dm}")})
    );

    // Cat is online: a mention does not push her. Bee, offline, is mentioned by the part of her
    // default handle before the handle domain.
    let cat_ws = w.app.ws_auth(&cat).await;
    wait_online(&w.app, &cat).await;
    let long = "x".repeat(150);
    w.say(&ann, &sid, &general, &format!("@bee. and @cat look {long}"))
        .await;
    let got = w.next_push().await;
    assert_eq!(got["path"], "/bee");
    let space_name = w.app.get(&format!("/spaces/{sid}"), Some(&ann.access)).await.body["name"]
        .as_str()
        .unwrap()
        .to_string();
    let payload = &got["payload"];
    assert_eq!(payload["title"], format!("Ann in {space_name}"));
    assert_eq!(payload["url"], format!("/space/{sid}/channel/{general}"));
    assert_eq!(payload["tag"], format!("channel:{general}"));
    assert_eq!(payload["body"].as_str().unwrap().chars().count(), 141);
    assert!(payload["body"].as_str().unwrap().ends_with('…'));
    assert!(w.receiver.none_within(QUIET).await, "online Cat was pushed");

    // The full handle works too; a message without a mention pushes no one.
    w.say(&ann, &sid, &general, "hey @Bee.alterego.test").await;
    assert_eq!(w.next_push().await["path"], "/bee");
    w.say(&ann, &sid, &general, "no mention, bee").await;
    assert!(w.receiver.none_within(QUIET).await);

    // Offline again, Cat is pushed; an absolute icon appears once Ann has an avatar.
    cat_ws.close(1000).await;
    sqlx::query("UPDATE users SET avatar = 'avatar/ann.png' WHERE id = $1::uuid")
        .bind(&ann.id)
        .execute(w.app.db())
        .await
        .unwrap();
    wait_offline(&w.app, &ann, &cat).await;
    w.say(&ann, &sid, &general, "@cat").await;
    let got = w.next_push().await;
    assert_eq!(got["path"], "/cat");
    assert_eq!(
        got["payload"]["icon"],
        format!("{}/avatar/ann.png?w=192&h=192", w.app.state.config.media_public_url)
    );
}

#[tokio::test]
async fn everyone_preferences_blocks_and_channel_visibility_decide_who_is_pushed() {
    let mut w = world().await;
    let owner = w.app.register("Owner").await;
    let bee = w.app.register("Bee").await;
    let member = w.app.register("Member").await;
    w.subscribe(&bee, "/bee").await;
    let (sid, general) = space(&w.app, &owner, &[&bee, &member]).await;

    // @everyone needs MENTION_EVERYONE (the owner has it, a plain member does not).
    w.say(&member, &sid, &general, "@everyone hello").await;
    assert!(
        w.receiver.none_within(QUIET).await,
        "@everyone without MENTION_EVERYONE pushed"
    );
    w.say(&owner, &sid, &general, "@everyone hello").await;
    assert_eq!(w.next_push().await["path"], "/bee");

    // A channel Bee cannot view: no push, even when mentioned.
    let hidden = channel(&w.app, &owner, &sid, "hidden").await;
    set_override(&w.app, &owner, &sid, &hidden, Target::Member(&bee.id), 0, 1 << 12).await;
    w.say(&owner, &sid, &hidden, "@bee @everyone secret").await;
    assert!(
        w.receiver.none_within(QUIET).await,
        "pushed from a channel Bee cannot view"
    );

    // MENTIONS still pushes mentions; NOTHING silences the space.
    set_preference(&w.app, &bee, &sid, "MENTIONS").await.expect(200, None);
    w.say(&owner, &sid, &general, "@bee").await;
    assert_eq!(w.next_push().await["path"], "/bee");
    set_preference(&w.app, &bee, &sid, "NOTHING").await.expect(200, None);
    w.say(&owner, &sid, &general, "@bee @everyone").await;
    assert!(w.receiver.none_within(QUIET).await, "NOTHING did not silence the space");
    set_preference(&w.app, &bee, &sid, "ALL").await.expect(200, None);

    // Bee blocks Member: Member's mentions no longer reach her; the owner's still do.
    w.app
        .post(&format!("/relations/{}/block", member.id), Some(&bee.access), json!({}))
        .await
        .expect(200, None);
    w.say(&member, &sid, &general, "@bee").await;
    assert!(w.receiver.none_within(QUIET).await, "a blocked author's mention pushed");
    w.say(&owner, &sid, &general, "@bee").await;
    assert_eq!(w.next_push().await["path"], "/bee");
}

#[tokio::test]
async fn gone_subscriptions_are_pruned_and_dns_rebinding_is_refused_at_send() {
    let mut w = world().await;
    let ann = w.app.register("Ann").await;
    let bee = w.app.register("Bee").await;
    let (sid, general) = space(&w.app, &ann, &[&bee]).await;

    // 410 from the push service deletes the subscription.
    let gone = w.subscribe(&bee, "/gone/1").await;
    w.say(&ann, &sid, &general, "@bee").await;
    let got = w.receiver.next(WAIT).await.expect("a push to the gone endpoint");
    assert_eq!(
        (got["path"].as_str(), got["status"].as_u64()),
        (Some("/gone/1"), Some(410))
    );
    let mut left = 1;
    for _ in 0..50 {
        left = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM push_subscriptions WHERE id = $1::uuid")
            .bind(&gone)
            .fetch_one(w.app.db())
            .await
            .unwrap();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, 0, "the 410 did not prune the subscription");

    // DNS rebinding: public when subscribing, loopback when sending — refused at send.
    w.dns.set("rebind.test", "93.184.216.34");
    w.app
        .post(
            "/push/subscribe",
            Some(&bee.access),
            json!({"endpoint": "https://rebind.test/x", "p256dh": w.receiver.p256dh, "auth": w.receiver.auth}),
        )
        .await
        .expect(200, None);
    w.dns.set("rebind.test", "127.0.0.1");
    let before = w.dns.lookups_of("rebind.test");
    w.say(&ann, &sid, &general, "@bee").await;
    let mut refused = false;
    for _ in 0..100 {
        if w.app.state.metrics.render().contains("outcome=\"refused\"") {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "the rebound endpoint was not refused at send time");
    assert!(
        w.dns.lookups_of("rebind.test") > before,
        "the host was not resolved again at send time"
    );
    assert!(w.receiver.none_within(QUIET).await);
}

async fn presence_of(app: &TestApp, viewer: &TestUser, user: &TestUser) -> String {
    let r = app
        .get(&format!("/users/presence?ids={}", user.id), Some(&viewer.access))
        .await;
    r.body[0]["status"].as_str().unwrap_or_default().to_string()
}

async fn wait_online(app: &TestApp, user: &TestUser) {
    for _ in 0..100 {
        if presence_of(app, user, user).await == "ONLINE" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never came online", user.name);
}

/// Offline comes after the 15 s debounce (spec §12.8).
async fn wait_offline(app: &TestApp, viewer: &TestUser, user: &TestUser) {
    for _ in 0..400 {
        if presence_of(app, viewer, user).await == "OFFLINE" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{} never went offline", user.name);
}

async fn set_preference(app: &TestApp, user: &TestUser, sid: &str, level: &str) -> crate::common::Resp {
    app.post(
        &format!("/spaces/{sid}/notification-preference"),
        Some(&user.access),
        json!({"level": level}),
    )
    .await
}

/// Bad VAPID keys stop start-up with a message naming the key; a partial configuration too.
#[tokio::test]
async fn bad_vapid_keys_fail_start_up_clearly() {
    let (public, private) = vapid_pair();
    let (other_public, _) = vapid_pair();
    let cases = [
        (Some("not-a-key".to_string()), Some(private.clone()), "VAPID_PUBLIC_KEY"),
        (Some(public.clone()), Some("AAAA".to_string()), "VAPID_PRIVATE_KEY"),
        (Some(other_public), Some(private.clone()), "VAPID"),
        (Some(public.clone()), None, "must be set together"),
    ];
    for (public, private, expected) in cases {
        let mut config = crate::common::test_config(&crate::common::database_url(), false);
        config.vapid_public_key = public;
        config.vapid_private_key = private;
        config.vapid_subject = Some("mailto:ops@alterego.test".into());
        let pool = sqlx::PgPool::connect_lazy(&crate::common::database_url()).unwrap();
        match alterego::state::AppState::new(config, pool, None).await {
            Ok(_) => panic!("start-up accepted bad VAPID configuration ({expected})"),
            Err(e) => assert!(e.to_string().contains(expected), "{e}"),
        }
    }
}
