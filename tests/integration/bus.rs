//! The Redis bus across instances (spec §8.2): one process's publish reaches another's
//! subscribers, only on subscribed topics, in order.

use std::time::Duration;

use alterego::functions::bus::{Bus, Inbound, Topic};
use alterego::functions::ids::UserId;
use serde_json::Value;

async fn bus(prefix: &str) -> Bus {
    let client = redis::Client::open(crate::common::redis_url()).expect("redis url");
    Bus::redis(client, prefix.to_string())
        .await
        .expect("connect to Redis (is it running?)")
}

async fn next_op(rx: &mut tokio::sync::broadcast::Receiver<Inbound>) -> Option<(Topic, String)> {
    match tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
        Ok(Ok(Inbound::Message(m))) => {
            let v: Value = serde_json::from_slice(&m.payload).ok()?;
            Some((m.topic, v["op"].as_str()?.to_string()))
        }
        _ => None,
    }
}

#[tokio::test]
async fn events_cross_instances_in_order() {
    let prefix = format!("t{}", uuid::Uuid::now_v7().simple());
    let (a, b) = (bus(&prefix).await, bus(&prefix).await);
    let topic = Topic::user(UserId::new());
    let other = Topic::user(UserId::new());
    let mut rx = b.inbound();
    b.subscribe(&topic).await;
    a.publish(&other, "not.subscribed", &1).await;
    for i in 0..50 {
        a.publish(&topic, &format!("op.{i}"), &i).await;
    }
    for i in 0..50 {
        assert_eq!(next_op(&mut rx).await, Some((topic.clone(), format!("op.{i}"))));
    }
    // Unsubscribed topics stop arriving.
    b.unsubscribe(&topic).await;
    a.publish(&topic, "after", &1).await;
    assert_eq!(next_op(&mut rx).await, None);
}

#[tokio::test]
async fn namespaces_are_isolated() {
    let topic = Topic::user(UserId::new());
    let a = bus(&format!("t{}", uuid::Uuid::now_v7().simple())).await;
    let b = bus(&format!("t{}", uuid::Uuid::now_v7().simple())).await;
    let mut rx = b.inbound();
    b.subscribe(&topic).await;
    a.publish(&topic, "elsewhere", &1).await;
    assert_eq!(next_op(&mut rx).await, None);
}

#[tokio::test]
async fn a_user_update_reaches_a_second_instance() {
    // Two app instances sharing PostgreSQL and Redis: the write on one is seen on the other.
    let app = crate::common::TestApp::spawn().await;
    let alice = app.register("Alice").await;
    let other = bus(&app.state.config.redis_prefix).await;
    let topic = Topic::profile(UserId(uuid::Uuid::parse_str(&alice.id).unwrap()));
    let mut rx = other.inbound();
    other.subscribe(&topic).await;
    app.patch("/users/me", Some(&alice.access), serde_json::json!({"name": "Alicia"}))
        .await
        .expect(200, None);
    assert_eq!(next_op(&mut rx).await, Some((topic, "users.onUpdate".to_string())));
}
