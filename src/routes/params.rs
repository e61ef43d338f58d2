//! Path parameters shared by the community routes. Field names match the `{camelCase}` path
//! segments; ids parse as UUIDs (a malformed one is 400 `InvalidPathParameter`).

use schemars::JsonSchema;
use serde::Deserialize;
use uuid::Uuid;

use crate::functions::ids::{ChannelId, RoleId, SpaceId, UserId};

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpacePath {
    pub space_id: SpaceId,
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelPath {
    pub space_id: SpaceId,
    pub channel_id: ChannelId,
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberPath {
    pub space_id: SpaceId,
    pub user_id: UserId,
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberRolePath {
    pub space_id: SpaceId,
    pub user_id: UserId,
    pub role_id: RoleId,
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolePath {
    pub space_id: SpaceId,
    pub role_id: RoleId,
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InvitePath {
    pub space_id: SpaceId,
    pub invite_id: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JoinPath {
    pub invite: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OverridePath {
    pub space_id: SpaceId,
    pub channel_id: ChannelId,
    pub target_id: Uuid,
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BotPath {
    pub bot_id: UserId,
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BotSpacePath {
    pub bot_id: UserId,
    pub space_id: SpaceId,
}
