//! Constraint violations are mapped by name where an entity expects them, and only there: a
//! named duplicate or a row that vanished is a client error, anything else is a 500 (a bug),
//! never a silent 409 or 404.

use alterego::entities::{invites, members, messages};
use alterego::error::ErrorCode;
use alterego::functions::ids::{ChannelId, SpaceId, UserId};
use alterego::functions::time::Timestamp;

use crate::common::TestApp;
use crate::common::fixtures::{create_space, id};

fn uuid(s: &str) -> uuid::Uuid {
    uuid::Uuid::parse_str(s).unwrap()
}

#[tokio::test]
async fn a_message_to_a_vanished_channel_is_404() {
    let app = TestApp::spawn().await;
    let alice = app.register("Alice").await;
    // The channel was deleted between the caller's access check and the insert
    // (`messages_channel_id_fkey`).
    let err = messages::insert(
        app.db(),
        &new_message(ChannelId(uuid::Uuid::now_v7()), UserId(uuid(&alice.id)), "hi"),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);
}

fn new_message(channel: ChannelId, author: UserId, content: &str) -> messages::NewMessage {
    messages::NewMessage {
        id: uuid::Uuid::now_v7(),
        channel,
        author,
        at: Timestamp::now(),
        content: content.to_string(),
    }
}

/// Group commit (`services::send_batch`): a batch whose statement fails because one row's
/// channel vanished is written row by row — every other row is stored and answered, the bad one
/// alone gets 404; a clean batch is one statement whose rows come back in order.
#[tokio::test]
async fn a_send_batch_with_one_failing_row_fails_alone() {
    let app = TestApp::spawn().await;
    let alice = app.register("Alice").await;
    let (_, general) = crate::common::fixtures::space(&app, &alice, &[]).await;
    let (channel, author) = (ChannelId(uuid(&general)), UserId(uuid(&alice.id)));
    let batcher = &app.state.send_batch;

    let clean: Vec<_> = (0..5)
        .map(|i| new_message(channel, author, &format!("clean {i}")))
        .collect();
    let results = batcher.insert_all(&clean).await;
    let stored: Vec<_> = results.into_iter().map(|r| r.expect("stored")).collect();
    assert_eq!(
        stored.iter().map(|m| (m.id, m.content.as_str())).collect::<Vec<_>>(),
        clean.iter().map(|m| (m.id, m.content.as_str())).collect::<Vec<_>>()
    );
    assert!(
        stored
            .iter()
            .all(|m| m.author.as_ref().is_some_and(|u| u.name == "Alice"))
    );

    let mut mixed: Vec<_> = (0..6)
        .map(|i| new_message(channel, author, &format!("mixed {i}")))
        .collect();
    mixed[3] = new_message(ChannelId(uuid::Uuid::now_v7()), author, "to nowhere");
    let results = batcher.insert_all(&mixed).await;
    for (i, result) in results.iter().enumerate() {
        match (i, result) {
            (3, Err(e)) => assert_eq!(e.code(), ErrorCode::NotFound),
            (3, Ok(_)) => panic!("the row to a vanished channel was stored"),
            (_, r) => assert_eq!(r.as_ref().expect("stored").id, mixed[i].id),
        }
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM messages WHERE channel_id = $1")
        .bind(channel)
        .fetch_one(app.db())
        .await
        .unwrap();
    assert_eq!(count, 5 + 5);
}

#[tokio::test]
async fn named_duplicates_and_vanished_spaces_are_client_errors() {
    let app = TestApp::spawn().await;
    let alice = app.register("Alice").await;
    let space = SpaceId(uuid(&id(&create_space(&app, &alice, "Team").await)));
    let me = UserId(uuid(&alice.id));
    // `members_space_user_key`: already a member.
    let err = members::insert(app.db(), space, me).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::AlreadyMember);
    // `members_space_id_fkey`: the space is gone.
    let err = members::insert(app.db(), SpaceId(uuid::Uuid::now_v7()), me)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);
}

#[tokio::test]
async fn an_unmapped_violation_is_an_internal_error() {
    let app = TestApp::spawn().await;
    let alice = app.register("Alice").await;
    let space = SpaceId(uuid(&id(&create_space(&app, &alice, "Team").await)));
    let invite = invites::Invite {
        id: "abcdefghijkl".into(),
        space_id: space,
        created_at: Timestamp::now(),
        creator_id: UserId(uuid(&alice.id)),
        max_uses: None,
        uses: 0,
        expires_at: None,
    };
    invites::insert(app.db(), &invite).await.unwrap();
    // `invites_pkey` is not mapped (codes are random): a repeat is a bug, not a 409.
    let err = invites::insert(app.db(), &invite).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InternalError);
}
