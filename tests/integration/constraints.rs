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
        uuid::Uuid::now_v7(),
        ChannelId(uuid::Uuid::now_v7()),
        UserId(uuid(&alice.id)),
        Timestamp::now(),
        "hi",
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);
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
