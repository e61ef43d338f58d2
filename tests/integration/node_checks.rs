//! The Node.js checkers themselves (tests/node, tests/integration/common/node.rs): the push
//! receiver starts and is reachable over rustls with only its own certificate trusted, and
//! LiveKit's server SDK accepts a well-formed token and rejects bad ones.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::common::node::{PushReceiver, verify_livekit};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn push_receiver_ready_line_holds_the_subscription_keys() {
    let receiver = PushReceiver::start("push.test").await;
    let p256dh = URL_SAFE_NO_PAD.decode(&receiver.p256dh).expect("p256dh is base64url");
    assert_eq!(p256dh.len(), 65);
    assert_eq!(p256dh[0], 0x04, "an uncompressed P-256 point");
    let auth = URL_SAFE_NO_PAD.decode(&receiver.auth).expect("auth is base64url");
    assert_eq!(auth.len(), 16);
    assert!(receiver.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    assert_ne!(receiver.port, 0);
    assert_eq!(
        receiver.endpoint("/sub/1"),
        format!("https://push.test:{}/sub/1", receiver.port)
    );
}

#[tokio::test]
async fn push_receiver_answers_by_path_over_rustls_and_reports_each_request() {
    let mut receiver = PushReceiver::start("push.test").await;
    let client = receiver.client();
    assert!(receiver.none_within(Duration::from_millis(200)).await);

    // Not encrypted and not VAPID-signed: answered by path, reported as undecryptable.
    let res = client
        .post(receiver.endpoint("/gone/abc"))
        .header("ttl", "60")
        .header("urgency", "normal")
        .header("content-encoding", "aes128gcm")
        .body("not an aes128gcm body")
        .send()
        .await
        .expect("POST to the receiver");
    assert_eq!(res.status(), 410);
    let line = receiver.next(WAIT).await.expect("the request is reported");
    assert_eq!(line["method"], "POST");
    assert_eq!(line["path"], "/gone/abc");
    assert_eq!(line["status"], 410);
    assert_eq!(
        line["headers"],
        json!({"ttl": "60", "urgency": "normal", "contentEncoding": "aes128gcm", "contentType": null})
    );
    assert_eq!(line["vapid"]["ok"], false);
    assert!(
        line["vapid"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("no Authorization"))
    );
    assert_eq!(line["payload"], Value::Null);
    assert!(line["error"].is_string(), "decryption fails: {line}");

    let res = client
        .post(receiver.endpoint("/missing/abc"))
        .send()
        .await
        .expect("POST");
    assert_eq!(res.status(), 404);
    assert_eq!(receiver.next(WAIT).await.expect("reported")["status"], 404);

    let res = client
        .post(receiver.endpoint("/sub/1"))
        .header("authorization", "vapid t=a.b.c, k=AAAA")
        .send()
        .await
        .expect("POST");
    assert_eq!(res.status(), 201);
    let line = receiver.next(WAIT).await.expect("reported");
    assert_eq!(line["status"], 201);
    assert_eq!(line["vapid"]["ok"], false);
    assert_eq!(line["vapid"]["k"], "AAAA");
    // An empty body: nothing to decrypt, no error.
    assert_eq!(line["text"], Value::Null);
    assert_eq!(line["error"], Value::Null);

    assert!(receiver.none_within(Duration::from_millis(200)).await);
}

fn livekit_token(key: &str, secret: &str, claims: Value) -> String {
    let mut claims = claims;
    claims["iss"] = json!(key);
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign the token")
}

#[tokio::test]
async fn livekit_sdk_verifies_a_token_and_rejects_a_forged_one() {
    let (key, secret) = ("APIkey123", "a-livekit-api-secret-of-some-length");
    let exp = chrono::Utc::now().timestamp() + 600;
    let claims = json!({
        "sub": "alice",
        "name": "Alice",
        "exp": exp,
        "video": {"room": "room-1", "roomJoin": true},
    });

    let verified = verify_livekit(key, secret, &livekit_token(key, secret, claims.clone()))
        .await
        .expect("the SDK accepts the token");
    assert_eq!(verified["sub"], "alice");
    assert_eq!(verified["iss"], key);
    assert_eq!(verified["exp"], exp);
    assert_eq!(verified["video"]["room"], "room-1");
    assert_eq!(verified["video"]["roomJoin"], true);

    let err = verify_livekit(key, secret, &livekit_token(key, "another-secret", claims.clone()))
        .await
        .expect_err("a token signed with another secret is rejected");
    assert!(err.contains("signature"), "{err}");

    let err = verify_livekit("otherKey", secret, &livekit_token(key, secret, claims))
        .await
        .expect_err("a token from another API key is rejected");
    assert!(err.contains("iss"), "{err}");

    let no_exp = json!({"sub": "alice", "video": {"room": "room-1", "roomJoin": true}});
    let err = verify_livekit(key, secret, &livekit_token(key, secret, no_exp))
        .await
        .expect_err("a token without exp is rejected");
    assert!(err.contains("exp"), "{err}");
}
