//! Handle attestations (spec §12.4): with `HANDLE_PRIVATE_KEY` set, a verified custom domain is
//! signed with Ed25519 over `handle:entityType:entityId:HANDLE_DOMAIN:verifiedAt`, and the
//! signature is stored with the handle. `HANDLE_PUBLIC_KEY` is what `instance.info` publishes.
//!
//! The keys are decoded once at start; an invalid key, or a public key that is not the private
//! key's, stops startup with a message naming the key.

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

use crate::config::{Config, ConfigError};

/// The instance's attestation keys.
pub struct HandleKeys {
    signing: Option<Ed25519KeyPair>,
    /// `HANDLE_PUBLIC_KEY` as configured (trimmed), published by `instance.info`.
    public_key: Option<String>,
}

impl std::fmt::Debug for HandleKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandleKeys")
            .field("signing", &self.signing.is_some())
            .field("public_key", &self.public_key)
            .finish()
    }
}

/// Base64 in any of the usual alphabets, padded or not.
fn decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(s).ok())
}

impl HandleKeys {
    pub fn from_config(config: &Config) -> Result<HandleKeys, ConfigError> {
        Self::new(
            config.handle_private_key.as_deref(),
            config.handle_public_key.as_deref(),
        )
    }

    /// `private`: base64 of the 32-byte seed (or of seed ‖ public key, 64 bytes);
    /// `public`: base64 of 32 bytes.
    pub fn new(private: Option<&str>, public: Option<&str>) -> Result<HandleKeys, ConfigError> {
        let signing = match private {
            None => None,
            Some(s) => {
                let bad = || ConfigError("HANDLE_PRIVATE_KEY must be an Ed25519 key: base64 of 32 bytes".into());
                let bytes = decode(s).ok_or_else(bad)?;
                let pair = match bytes.len() {
                    32 => Ed25519KeyPair::from_seed_unchecked(&bytes),
                    64 => Ed25519KeyPair::from_seed_and_public_key(&bytes[..32], &bytes[32..]),
                    _ => return Err(bad()),
                };
                Some(pair.map_err(|_| bad())?)
            }
        };
        let public_key = match public {
            None => None,
            Some(s) => {
                let bytes = decode(s)
                    .filter(|b| b.len() == 32)
                    .ok_or_else(|| ConfigError("HANDLE_PUBLIC_KEY must be base64 of 32 bytes".into()))?;
                if let Some(pair) = &signing
                    && pair.public_key().as_ref() != bytes.as_slice()
                {
                    return Err(ConfigError(
                        "HANDLE_PUBLIC_KEY is not the public key of HANDLE_PRIVATE_KEY".into(),
                    ));
                }
                Some(s.trim().to_string())
            }
        };
        Ok(HandleKeys { signing, public_key })
    }

    /// No keys: nothing is signed, `publicKey` is `null`.
    pub fn none() -> HandleKeys {
        HandleKeys {
            signing: None,
            public_key: None,
        }
    }

    pub fn public_key(&self) -> Option<&str> {
        self.public_key.as_deref()
    }

    /// The base64 signature of [`message`], when a private key is configured.
    pub fn sign(&self, message: &str) -> Option<String> {
        self.signing
            .as_ref()
            .map(|pair| STANDARD.encode(pair.sign(message.as_bytes()).as_ref()))
    }
}

/// The signed text: `handle:entityType:entityId:HANDLE_DOMAIN:verifiedAt`.
pub fn message(
    handle: &str,
    entity_type: &str,
    entity_id: uuid::Uuid,
    handle_domain: &str,
    verified_at: &str,
) -> String {
    format!("{handle}:{entity_type}:{entity_id}:{handle_domain}:{verified_at}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{ED25519, UnparsedPublicKey};

    const SEED: [u8; 32] = [7; 32];

    fn public_of(seed: &[u8]) -> Vec<u8> {
        Ed25519KeyPair::from_seed_unchecked(seed)
            .unwrap()
            .public_key()
            .as_ref()
            .to_vec()
    }

    #[test]
    fn signs_verifiably() {
        let private = STANDARD.encode(SEED);
        let public = STANDARD.encode(public_of(&SEED));
        let keys = HandleKeys::new(Some(&private), Some(&public)).unwrap();
        assert_eq!(keys.public_key(), Some(public.as_str()));
        let msg = message(
            "team.example.org",
            "space",
            uuid::Uuid::nil(),
            "mikoto.example",
            "2026-01-02T03:04:05.000Z",
        );
        assert_eq!(
            msg,
            "team.example.org:space:00000000-0000-0000-0000-000000000000:mikoto.example:2026-01-02T03:04:05.000Z"
        );
        let sig = STANDARD.decode(keys.sign(&msg).unwrap()).unwrap();
        assert_eq!(sig.len(), 64);
        let verifier = UnparsedPublicKey::new(&ED25519, public_of(&SEED));
        assert!(verifier.verify(msg.as_bytes(), &sig).is_ok());
        assert!(verifier.verify(b"other", &sig).is_err());
    }

    #[test]
    fn accepts_seed_and_public_key_and_url_safe_base64() {
        let mut full = SEED.to_vec();
        full.extend(public_of(&SEED));
        assert!(HandleKeys::new(Some(&URL_SAFE_NO_PAD.encode(&full)), None).is_ok());
        full[40] ^= 1;
        assert!(HandleKeys::new(Some(&STANDARD.encode(&full)), None).is_err());
    }

    #[test]
    fn rejects_bad_keys() {
        assert!(HandleKeys::new(Some("not base64!"), None).is_err());
        assert!(HandleKeys::new(Some(&STANDARD.encode([1u8; 16])), None).is_err());
        assert!(HandleKeys::new(None, Some(&STANDARD.encode([1u8; 31]))).is_err());
        let other = STANDARD.encode(public_of(&[9; 32]));
        let err = HandleKeys::new(Some(&STANDARD.encode(SEED)), Some(&other)).unwrap_err();
        assert!(err.0.contains("HANDLE_PUBLIC_KEY"), "{err}");
        // A public key alone is published; nothing is signed.
        let only_public = HandleKeys::new(None, Some(&other)).unwrap();
        assert_eq!(only_public.sign("x"), None);
        assert_eq!(only_public.public_key(), Some(other.as_str()));
        assert_eq!(HandleKeys::none().public_key(), None);
    }
}
