//! LiveKit access tokens (spec §12.1), minted locally: an HS256 JWT signed with the API secret
//! whose `video` grant names the room (the channel id) and what the participant may do.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use uuid::Uuid;

use crate::config::Config;

/// The configured LiveKit deployment; `None` from [`LiveKit::from_config`] when any key is missing.
pub struct LiveKit {
    pub url: String,
    api_key: String,
    secret: EncodingKey,
    ttl: Duration,
}

/// One participant's admission to one room.
pub struct Admission<'a> {
    /// The participant identity (the user id).
    pub identity: Uuid,
    /// The display name shown to others.
    pub name: &'a str,
    /// The room (the channel id).
    pub room: Uuid,
    /// Whether the participant may publish media and data (SEND_MESSAGES in the channel).
    pub can_publish: bool,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: String,
    name: &'a str,
    nbf: u64,
    iat: u64,
    exp: u64,
    jti: String,
    video: VideoGrant,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct VideoGrant {
    room: String,
    room_join: bool,
    can_subscribe: bool,
    can_publish: bool,
    can_publish_data: bool,
}

impl LiveKit {
    pub fn from_config(config: &Config) -> Option<LiveKit> {
        match (&config.livekit_url, &config.livekit_api_key, &config.livekit_api_secret) {
            (Some(url), Some(key), Some(secret)) => Some(LiveKit {
                url: url.clone(),
                api_key: key.clone(),
                secret: EncodingKey::from_secret(secret.as_bytes()),
                ttl: config.livekit_token_ttl,
            }),
            _ => None,
        }
    }

    /// Signs a token valid from `now` for the configured TTL.
    pub fn token(&self, who: &Admission<'_>, now: SystemTime) -> Result<String, jsonwebtoken::errors::Error> {
        let now = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let claims = Claims {
            iss: &self.api_key,
            sub: who.identity.to_string(),
            name: who.name,
            nbf: now,
            iat: now,
            exp: now + self.ttl.as_secs(),
            jti: Uuid::new_v4().to_string(),
            video: VideoGrant {
                room: who.room.to_string(),
                room_join: true,
                can_subscribe: true,
                can_publish: who.can_publish,
                can_publish_data: who.can_publish,
            },
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    #[test]
    fn token_carries_identity_room_and_grants() {
        let lk = LiveKit {
            url: "wss://lk.test".into(),
            api_key: "APIkey".into(),
            secret: EncodingKey::from_secret(b"secret-secret-secret"),
            ttl: Duration::from_secs(7200),
        };
        let (user, room) = (Uuid::now_v7(), Uuid::now_v7());
        let who = Admission {
            identity: user,
            name: "Ann",
            room,
            can_publish: false,
        };
        let token = lk.token(&who, SystemTime::now()).unwrap();
        let mut v = Validation::new(Algorithm::HS256);
        v.set_issuer(&["APIkey"]);
        let c =
            jsonwebtoken::decode::<serde_json::Value>(&token, &DecodingKey::from_secret(b"secret-secret-secret"), &v)
                .unwrap()
                .claims;
        assert_eq!(c["sub"], user.to_string());
        assert_eq!(c["name"], "Ann");
        assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 7200);
        assert_eq!(c["video"]["room"], room.to_string());
        assert_eq!(c["video"]["roomJoin"], true);
        assert_eq!(c["video"]["canPublish"], false);
        assert_eq!(c["video"]["canPublishData"], false);
        assert_eq!(c["video"]["canSubscribe"], true);
    }
}
