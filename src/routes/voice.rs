//! Voice (spec §4.11, §12.1): a LiveKit token for a voice channel, minted locally.

use std::time::SystemTime;

use aide::axum::ApiRouter;
use aide::axum::routing::post_with;
use axum::extract::State;
use schemars::JsonSchema;
use serde::Serialize;

use crate::entities::channels::ChannelType;
use crate::entities::users;
use crate::error::{Error, ErrorCode, Result};
use crate::functions::ids::ChannelId;
use crate::functions::livekit::{Admission, LiveKit};
use crate::functions::permissions::Permissions;
use crate::middlewares::auth::Auth;
use crate::middlewares::path::Path;
use crate::middlewares::rate_limit::Limit;
use crate::routes::{ChannelPath, RouterExt, doc};
use crate::services::access;
use crate::state::AppState;

pub fn router() -> ApiRouter<AppState> {
    ApiRouter::new().mikoto_route(
        "/spaces/{spaceId}/channels/{channelId}/voice/",
        post_with(join, doc("Voice", "voice.join", "Join Voice Channel", Limit::GENERAL)),
    )
}

#[derive(Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VoiceToken {
    /// The LiveKit server URL.
    pub url: String,
    /// A LiveKit access token for the channel's room.
    pub token: String,
    pub channel_id: ChannelId,
}

/// Members who can view a VOICE channel join its room; publishing follows SEND_MESSAGES.
async fn join(State(state): State<AppState>, auth: Auth, Path(p): Path<ChannelPath>) -> Result<axum::Json<VoiceToken>> {
    let (kind, perms) = access::channel(&state.db, p.space_id, p.channel_id, auth.user_id).await?;
    if kind != ChannelType::Voice {
        return Err(Error::new(
            ErrorCode::WrongChannelType,
            "Only voice channels can be joined",
        ));
    }
    let livekit = LiveKit::from_config(&state.config)
        .ok_or_else(|| Error::new(ErrorCode::VoiceUnavailable, "Voice is not configured on this server"))?;
    let user = users::get_ext(&state.db, auth.user_id)
        .await?
        .ok_or_else(Error::not_found)?;
    let token = livekit
        .token(
            &Admission {
                identity: auth.user_id.0,
                name: &user.name,
                room: p.channel_id.0,
                can_publish: perms.contains(Permissions::SEND_MESSAGES),
            },
            SystemTime::now(),
        )
        .map_err(Error::internal)?;
    Ok(axum::Json(VoiceToken {
        url: livekit.url,
        token,
        channel_id: p.channel_id,
    }))
}
