//! Access tokens (spec §6.1): HS256 JWTs carrying the auth-session id (`sid`) for users, or
//! `category: "bot"` and the token generation (`gen`) for bots. Pure: signing and checking only;
//! whether the session is still live is the auth middleware's question.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const AUDIENCE: &str = "alterego";
const LEEWAY_SECS: u64 = 30;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: Uuid,
    pub iat: u64,
    pub exp: u64,
    pub jti: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#gen: Option<i64>,
}

impl Claims {
    pub fn is_bot(&self) -> bool {
        self.category.as_deref() == Some("bot")
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Invalid,
    Expired,
}

/// Signs and verifies tokens with one secret and issuer.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
}

impl JwtKeys {
    pub fn new(secret: &[u8], issuer: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECS;
        JwtKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer: issuer.to_string(),
        }
    }

    /// A user token bound to an auth session.
    pub fn user_token(&self, user: Uuid, session: Uuid, ttl: Duration) -> Result<String, jsonwebtoken::errors::Error> {
        self.sign(self.claims(user, ttl, Some(session), None))
    }

    /// A bot token bound to the bot's current token generation.
    pub fn bot_token(&self, bot: Uuid, generation: i64, ttl: Duration) -> Result<String, jsonwebtoken::errors::Error> {
        self.sign(self.claims(bot, ttl, None, Some(generation)))
    }

    fn claims(&self, sub: Uuid, ttl: Duration, sid: Option<Uuid>, generation: Option<i64>) -> Claims {
        let iat = chrono::Utc::now().timestamp().max(0) as u64;
        Claims {
            iss: self.issuer.clone(),
            aud: AUDIENCE.to_string(),
            sub,
            iat,
            exp: iat + ttl.as_secs(),
            jti: Uuid::new_v4(),
            sid,
            category: generation.map(|_| "bot".to_string()),
            r#gen: generation,
        }
    }

    fn sign(&self, claims: Claims) -> Result<String, jsonwebtoken::errors::Error> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// Checks signature, algorithm, issuer, audience and expiry (with leeway).
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        match jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation) {
            Ok(data) => {
                let c = data.claims;
                // A user token must name its session; a bot token its generation.
                let well_formed = if c.is_bot() {
                    c.r#gen.is_some()
                } else {
                    c.sid.is_some() && c.category.is_none()
                };
                if well_formed { Ok(c) } else { Err(TokenError::Invalid) }
            }
            Err(e) if matches!(e.kind(), ErrorKind::ExpiredSignature) => Err(TokenError::Expired),
            Err(_) => Err(TokenError::Invalid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn keys() -> JwtKeys {
        JwtKeys::new(SECRET, "http://issuer.test")
    }

    #[test]
    fn user_token_round_trip() {
        let (u, s) = (Uuid::now_v7(), Uuid::now_v7());
        let t = keys().user_token(u, s, Duration::from_secs(3600)).unwrap();
        let c = keys().verify(&t).unwrap();
        assert_eq!((c.sub, c.sid, c.is_bot()), (u, Some(s), false));
        assert_eq!(c.exp - c.iat, 3600);
    }

    #[test]
    fn bot_token_carries_generation() {
        let t = keys().bot_token(Uuid::now_v7(), 3, Duration::from_secs(60)).unwrap();
        let c = keys().verify(&t).unwrap();
        assert!(c.is_bot());
        assert_eq!(c.r#gen, Some(3));
    }

    #[test]
    fn rejects_wrong_secret_issuer_and_garbage() {
        let t = keys()
            .user_token(Uuid::now_v7(), Uuid::now_v7(), Duration::from_secs(60))
            .unwrap();
        let other = JwtKeys::new(b"ffffffffffffffffffffffffffffffff", "http://issuer.test");
        assert_eq!(other.verify(&t), Err(TokenError::Invalid));
        let other_iss = JwtKeys::new(SECRET, "http://elsewhere.test");
        assert_eq!(other_iss.verify(&t), Err(TokenError::Invalid));
        assert_eq!(keys().verify("not.a.jwt"), Err(TokenError::Invalid));
        assert_eq!(keys().verify(""), Err(TokenError::Invalid));
    }

    #[test]
    fn rejects_alg_none() {
        let t = keys()
            .user_token(Uuid::now_v7(), Uuid::now_v7(), Duration::from_secs(60))
            .unwrap();
        let payload = t.split('.').nth(1).unwrap();
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        assert_eq!(keys().verify(&format!("{header}.{payload}.")), Err(TokenError::Invalid));
    }

    #[test]
    fn expired_beyond_leeway() {
        let k = keys();
        let mut c = k.claims(Uuid::now_v7(), Duration::from_secs(0), Some(Uuid::now_v7()), None);
        c.exp = c.iat.saturating_sub(LEEWAY_SECS + 5);
        let t = k.sign(c).unwrap();
        assert_eq!(k.verify(&t), Err(TokenError::Expired));
    }
}
