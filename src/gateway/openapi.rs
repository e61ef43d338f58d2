//! The OpenAPI document's `websocket` vendor key (spec §4.19): every command and event of `/ws`
//! with the schema of its `data`, generated from the same types the gateway uses — Mikoto's
//! shape (`{"commands": {op: schema}, "events": {op: schema}}`), NEW ops included.

use aide::openapi::{OpenApi, SchemaObject};
use schemars::JsonSchema;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use schemars::SchemaGenerator;

use super::protocol::{InvalidSessionPayload, Ping, ReadyPayload, ResumedPayload, ResyncPayload, TypingStart};
use crate::entities::channels::{Channel, ChannelUnread};
use crate::entities::members::MemberExt;
use crate::entities::messages::{MessageExt, MessageKey};
use crate::entities::overrides::ChannelOverride;
use crate::entities::relations::RelationshipExt;
use crate::entities::roles::Role;
use crate::entities::spaces::SpaceExt;
use crate::entities::users::UserExt;
use crate::events::{CollabRelay, ObjectWithId, Op, OverrideKey, Presence, Revoked, TypingUpdate};

/// `authenticate` data.
#[derive(JsonSchema)]
#[allow(dead_code)]
struct AuthenticatePayload {
    token: String,
}

/// `resume` data (NEW).
#[derive(JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct ResumePayload {
    token: String,
    session_id: Uuid,
    /// The last `seq` processed (0 if none).
    seq: u64,
}

/// The schema of an event's `data`. No default arm: a new op must name its payload type.
fn event_schema(op: Op, schema: &mut impl FnMut(fn(&mut SchemaGenerator) -> schemars::Schema) -> Value) -> Value {
    match op {
        Op::SpaceCreated | Op::SpaceUpdated | Op::SpaceDeleted => schema(|g| g.subschema_for::<SpaceExt>()),
        Op::ChannelCreated | Op::ChannelUpdated | Op::ChannelDeleted => schema(|g| g.subschema_for::<Channel>()),
        Op::MemberCreated | Op::MemberUpdated | Op::MemberDeleted => schema(|g| g.subschema_for::<MemberExt>()),
        Op::RoleCreated | Op::RoleUpdated | Op::RoleDeleted => schema(|g| g.subschema_for::<Role>()),
        Op::MessageCreated | Op::MessageUpdated => schema(|g| g.subschema_for::<MessageExt>()),
        Op::MessageDeleted => schema(|g| g.subschema_for::<MessageKey>()),
        Op::TypingUpdated => schema(|g| g.subschema_for::<TypingUpdate>()),
        Op::RelationCreated | Op::RelationUpdated => schema(|g| g.subschema_for::<RelationshipExt>()),
        Op::RelationDeleted | Op::UserDeleted => schema(|g| g.subschema_for::<ObjectWithId>()),
        Op::UnreadUpdated => schema(|g| g.subschema_for::<ChannelUnread>()),
        Op::UserCreated | Op::UserUpdated => schema(|g| g.subschema_for::<UserExt>()),
        Op::PresenceUpdated => schema(|g| g.subschema_for::<Presence>()),
        Op::SessionRevoked => schema(|g| g.subschema_for::<Revoked>()),
        Op::OverrideSet => schema(|g| g.subschema_for::<ChannelOverride>()),
        Op::OverrideDeleted => schema(|g| g.subschema_for::<OverrideKey>()),
        Op::CollabRelay => schema(|g| g.subschema_for::<CollabRelay>()),
    }
}

/// Adds the `websocket` key, and the component schemas it refers to that the REST operations
/// did not already bring.
pub fn document(api: &mut OpenApi) {
    let mut settings = schemars::generate::SchemaSettings::draft2020_12();
    settings.definitions_path = "/components/schemas".into();
    let mut generator = settings.into_generator();
    let mut schema = |f: fn(&mut schemars::SchemaGenerator) -> schemars::Schema| {
        serde_json::to_value(f(&mut generator)).unwrap_or(Value::Null)
    };
    let commands: Map<String, Value> = [
        ("authenticate", schema(|g| g.subschema_for::<AuthenticatePayload>())),
        ("resume", schema(|g| g.subschema_for::<ResumePayload>())),
        ("ping", schema(|g| g.subschema_for::<Ping>())),
        ("typing.start", schema(|g| g.subschema_for::<TypingStart>())),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    // Every op a client can receive: the events of `crate::events` and the gateway's own frames.
    let mut events: Map<String, Value> = Map::new();
    for op in Op::ALL.iter().filter(|op| !op.is_internal()) {
        events.insert(op.name().to_string(), event_schema(*op, &mut schema));
    }
    for (name, value) in [
        ("invalidSession", schema(|g| g.subschema_for::<InvalidSessionPayload>())),
        ("pong", schema(|g| g.subschema_for::<Ping>())),
        ("ready", schema(|g| g.subschema_for::<ReadyPayload>())),
        ("resumed", schema(|g| g.subschema_for::<ResumedPayload>())),
        ("resync", schema(|g| g.subschema_for::<ResyncPayload>())),
    ] {
        events.insert(name.to_string(), value);
    }
    let components = api.components.get_or_insert_with(Default::default);
    for (name, definition) in generator.take_definitions(true) {
        if components.schemas.contains_key(&name) {
            continue;
        }
        if let Ok(json_schema) = serde_json::from_value::<schemars::Schema>(definition) {
            components.schemas.insert(
                name,
                SchemaObject {
                    json_schema,
                    external_docs: None,
                    example: None,
                },
            );
        }
    }
    api.extensions
        .insert("websocket".into(), json!({ "commands": commands, "events": events }));
}
