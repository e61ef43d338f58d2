//! The OpenAPI document's `websocket` vendor key (spec §4.19): every command and event of `/ws`
//! with the schema of its `data`, generated from the same types the gateway uses — Mikoto's
//! shape (`{"commands": {op: schema}, "events": {op: schema}}`), NEW ops included.

use aide::openapi::{OpenApi, SchemaObject};
use schemars::JsonSchema;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::protocol::{
    InvalidSessionPayload, Ping, Presence, ReadyPayload, ResumedPayload, ResyncPayload, TypingStart, TypingUpdate,
};
use crate::entities::channels::{Channel, ChannelUnread};
use crate::entities::members::MemberExt;
use crate::entities::messages::{MessageExt, MessageKey};
use crate::entities::relations::RelationshipExt;
use crate::entities::roles::Role;
use crate::entities::spaces::SpaceExt;
use crate::entities::users::UserExt;

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

/// An object identified by its id.
#[derive(JsonSchema)]
#[allow(dead_code)]
struct ObjectWithId {
    id: Uuid,
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
    let events: Map<String, Value> = [
        ("channels.onCreate", schema(|g| g.subschema_for::<Channel>())),
        ("channels.onDelete", schema(|g| g.subschema_for::<Channel>())),
        ("channels.onUpdate", schema(|g| g.subschema_for::<Channel>())),
        ("invalidSession", schema(|g| g.subschema_for::<InvalidSessionPayload>())),
        ("members.onCreate", schema(|g| g.subschema_for::<MemberExt>())),
        ("members.onDelete", schema(|g| g.subschema_for::<MemberExt>())),
        ("members.onUpdate", schema(|g| g.subschema_for::<MemberExt>())),
        ("messages.onCreate", schema(|g| g.subschema_for::<MessageExt>())),
        ("messages.onDelete", schema(|g| g.subschema_for::<MessageKey>())),
        ("messages.onUpdate", schema(|g| g.subschema_for::<MessageExt>())),
        ("pong", schema(|g| g.subschema_for::<Ping>())),
        ("presence.onUpdate", schema(|g| g.subschema_for::<Presence>())),
        ("ready", schema(|g| g.subschema_for::<ReadyPayload>())),
        ("relations.onCreate", schema(|g| g.subschema_for::<RelationshipExt>())),
        ("relations.onDelete", schema(|g| g.subschema_for::<ObjectWithId>())),
        ("relations.onUpdate", schema(|g| g.subschema_for::<RelationshipExt>())),
        ("resumed", schema(|g| g.subschema_for::<ResumedPayload>())),
        ("resync", schema(|g| g.subschema_for::<ResyncPayload>())),
        ("roles.onCreate", schema(|g| g.subschema_for::<Role>())),
        ("roles.onDelete", schema(|g| g.subschema_for::<Role>())),
        ("roles.onUpdate", schema(|g| g.subschema_for::<Role>())),
        ("spaces.onCreate", schema(|g| g.subschema_for::<SpaceExt>())),
        ("spaces.onDelete", schema(|g| g.subschema_for::<SpaceExt>())),
        ("spaces.onUpdate", schema(|g| g.subschema_for::<SpaceExt>())),
        ("typing.onUpdate", schema(|g| g.subschema_for::<TypingUpdate>())),
        ("unreads.onUpdate", schema(|g| g.subschema_for::<ChannelUnread>())),
        ("users.onCreate", schema(|g| g.subschema_for::<UserExt>())),
        ("users.onDelete", schema(|g| g.subschema_for::<ObjectWithId>())),
        ("users.onUpdate", schema(|g| g.subschema_for::<UserExt>())),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
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
