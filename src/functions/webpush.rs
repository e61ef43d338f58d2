//! Web Push message encryption (RFC 8291, the `aes128gcm` content coding of RFC 8188) and VAPID
//! application-server identification (RFC 8292). Pure apart from the randomness of encryption and
//! signing: no HTTP, no clock (callers pass the time).
//!
//! The VAPID key pair is decoded once at start-up ([`VapidKeys::new`]); a subscription's keys are
//! decoded (and so validated) when it is registered ([`Subscriber::decode`]).

use aws_lc_rs::{aead, agreement, hkdf, rand, signature};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// The record size written in the content-coding header.
pub const RECORD_SIZE: u32 = 4096;
/// The largest plaintext [`encrypt`] accepts: the whole encrypted body (86-byte header, the
/// plaintext, the 1-byte delimiter and the 16-byte tag) then fits the 4096 bytes every push
/// service must accept (RFC 8291 §4), which is also within one record of [`RECORD_SIZE`].
pub const MAX_PLAINTEXT: usize = 4096 - HEADER_LEN - 1 - TAG_LEN;
/// How long a VAPID token is valid (RFC 8292 allows at most 24 hours).
pub const VAPID_TTL_SECS: u64 = 12 * 3600;

const SALT_LEN: usize = 16;
const POINT_LEN: usize = 65;
const AUTH_LEN: usize = 16;
const TAG_LEN: usize = 16;
/// salt | rs | idlen | keyid (the application server's public key).
const HEADER_LEN: usize = SALT_LEN + 4 + 1 + POINT_LEN;
/// The padding delimiter of the last (only) record.
const LAST_RECORD_DELIMITER: u8 = 0x02;
const JWT_HEADER: &str = r#"{"typ":"JWT","alg":"ES256"}"#;

/// base64url, padded or not (browsers send it unpadded; some key generators pad).
const B64URL_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn decode_b64url(s: &str) -> Option<Vec<u8>> {
    B64URL_ANY_PADDING.decode(s.trim()).ok()
}

/// Whether `bytes` is an uncompressed (0x04-prefixed, 65-byte) point of P-256.
fn is_uncompressed_p256_point(bytes: &[u8]) -> bool {
    bytes.len() == POINT_LEN
        && bytes[0] == 0x04
        && agreement::ParsedPublicKey::try_from(agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, bytes)).is_ok()
}

/// Why the VAPID configuration is unusable (start-up fails with this message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VapidError {
    #[error("VAPID_PUBLIC_KEY is not a base64url uncompressed P-256 point (65 bytes)")]
    PublicKey,
    #[error("VAPID_PRIVATE_KEY is not a base64url P-256 private key (32 bytes)")]
    PrivateKey,
    #[error("VAPID_PRIVATE_KEY does not belong to VAPID_PUBLIC_KEY")]
    Mismatch,
    #[error("VAPID_SUBJECT must be a mailto: or https: URI")]
    Subject,
}

/// Why a push could not be prepared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushCryptoError {
    #[error("the push endpoint is not an absolute http(s) URL")]
    Endpoint,
    #[error("the push message is {len} bytes; at most {max} fit one record")]
    TooLarge { len: usize, max: usize },
    #[error("a cryptographic operation failed")]
    Crypto,
}

impl From<aws_lc_rs::error::Unspecified> for PushCryptoError {
    fn from(_: aws_lc_rs::error::Unspecified) -> Self {
        PushCryptoError::Crypto
    }
}

/// The application server's VAPID identity: the signing key, its public key as sent in `k=` and
/// the JWT subject.
pub struct VapidKeys {
    signing: signature::EcdsaKeyPair,
    public_b64url: String,
    subject: String,
}

impl std::fmt::Debug for VapidKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VapidKeys")
            .field("public_key", &self.public_b64url)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl VapidKeys {
    /// Decodes and checks the configured pair: `public_b64url` is the base64url (padded or not) of
    /// an uncompressed P-256 point, `private_b64url` that of the matching 32-byte scalar, and
    /// `subject` a `mailto:` or `https:` URI.
    pub fn new(public_b64url: &str, private_b64url: &str, subject: &str) -> Result<VapidKeys, VapidError> {
        let public = decode_b64url(public_b64url)
            .filter(|p| is_uncompressed_p256_point(p))
            .ok_or(VapidError::PublicKey)?;
        let private = decode_b64url(private_b64url)
            .filter(|p| p.len() == 32)
            .ok_or(VapidError::PrivateKey)?;
        // A scalar out of range (zero, or not below the group order) is not a key at all.
        if agreement::PrivateKey::from_private_key(&agreement::ECDH_P256, &private).is_err() {
            return Err(VapidError::PrivateKey);
        }
        let signing = signature::EcdsaKeyPair::from_private_key_and_public_key(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &private,
            &public,
        )
        .map_err(|_| VapidError::Mismatch)?;
        let subject = subject.trim();
        let scheme_ok = ["mailto:", "https:"].iter().any(|prefix| {
            subject.len() > prefix.len()
                && subject
                    .get(..prefix.len())
                    .is_some_and(|s| s.eq_ignore_ascii_case(prefix))
        });
        if !scheme_ok {
            return Err(VapidError::Subject);
        }
        Ok(VapidKeys {
            signing,
            public_b64url: URL_SAFE_NO_PAD.encode(&public),
            subject: subject.to_string(),
        })
    }

    /// The public key, base64url without padding (the `applicationServerKey` clients subscribe
    /// with).
    pub fn public_key(&self) -> &str {
        &self.public_b64url
    }

    /// The `Authorization` header value for a push to `endpoint` (RFC 8292 §3):
    /// `vapid t=<ES256 JWT>, k=<public key>`, the JWT's audience being the endpoint's origin and
    /// its expiry [`VAPID_TTL_SECS`] after `now_unix`.
    pub fn authorization(&self, endpoint: &str, now_unix: u64) -> Result<String, PushCryptoError> {
        let aud = origin(endpoint)?;
        let claims = serde_json::json!({
            "aud": aud,
            "exp": now_unix.saturating_add(VAPID_TTL_SECS),
            "sub": self.subject,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(JWT_HEADER),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self
            .signing
            .sign(&rand::SystemRandom::new(), signing_input.as_bytes())?;
        Ok(format!(
            "vapid t={signing_input}.{}, k={}",
            URL_SAFE_NO_PAD.encode(sig.as_ref()),
            self.public_b64url
        ))
    }
}

/// `scheme://host[:port]` of an absolute http(s) URL (the default port is omitted).
fn origin(endpoint: &str) -> Result<String, PushCryptoError> {
    let url = reqwest::Url::parse(endpoint).map_err(|_| PushCryptoError::Endpoint)?;
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
        return Err(PushCryptoError::Endpoint);
    }
    Ok(url.origin().ascii_serialization())
}

/// Why a subscription's keys were refused: the field (`p256dh` or `auth`) and a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct KeyError {
    field: &'static str,
    message: &'static str,
}

impl KeyError {
    /// `p256dh` or `auth`.
    pub fn field(&self) -> &'static str {
        self.field
    }

    pub fn message(&self) -> &'static str {
        self.message
    }
}

/// A subscription's keys (RFC 8291 §2): the user agent's ECDH public key and its authentication
/// secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Subscriber {
    p256dh: [u8; POINT_LEN],
    auth: [u8; AUTH_LEN],
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("p256dh", &URL_SAFE_NO_PAD.encode(self.p256dh))
            .finish_non_exhaustive()
    }
}

impl Subscriber {
    /// Decodes a subscription's `keys`: `p256dh` must be the base64url of an uncompressed P-256
    /// point, `auth` that of exactly 16 bytes.
    pub fn decode(p256dh_b64url: &str, auth_b64url: &str) -> Result<Subscriber, KeyError> {
        let p256dh = decode_b64url(p256dh_b64url).ok_or(KeyError {
            field: "p256dh",
            message: "p256dh is not base64url",
        })?;
        let p256dh: [u8; POINT_LEN] = p256dh.try_into().map_err(|_| KeyError {
            field: "p256dh",
            message: "p256dh must be an uncompressed P-256 public key (65 bytes)",
        })?;
        if !is_uncompressed_p256_point(&p256dh) {
            return Err(KeyError {
                field: "p256dh",
                message: "p256dh is not a valid uncompressed P-256 public key",
            });
        }
        let auth = decode_b64url(auth_b64url).ok_or(KeyError {
            field: "auth",
            message: "auth is not base64url",
        })?;
        let auth: [u8; AUTH_LEN] = auth.try_into().map_err(|_| KeyError {
            field: "auth",
            message: "auth must be 16 bytes",
        })?;
        Ok(Subscriber { p256dh, auth })
    }
}

/// Encrypts a push message for `sub` (RFC 8291): a fresh ephemeral ECDH key and a random salt,
/// one `aes128gcm` record. The result is the request body (header, then the record).
pub fn encrypt(sub: &Subscriber, plaintext: &[u8]) -> Result<Vec<u8>, PushCryptoError> {
    check_size(plaintext)?;
    let ephemeral = agreement::PrivateKey::generate(&agreement::ECDH_P256)?;
    let mut salt = [0u8; SALT_LEN];
    rand::fill(&mut salt)?;
    encrypt_with(sub, plaintext, &ephemeral, salt)
}

fn check_size(plaintext: &[u8]) -> Result<(), PushCryptoError> {
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(PushCryptoError::TooLarge {
            len: plaintext.len(),
            max: MAX_PLAINTEXT,
        });
    }
    Ok(())
}

/// An HKDF output length.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn expand<const N: usize>(prk: &hkdf::Prk, info: &[&[u8]]) -> Result<[u8; N], PushCryptoError> {
    let mut out = [0u8; N];
    prk.expand(info, Len(N))?.fill(&mut out)?;
    Ok(out)
}

/// The content-encryption key and nonce (RFC 8291 §3.3–3.4, RFC 8188 §2.2–2.3).
fn derive(
    ecdh_secret: &[u8],
    auth: &[u8; AUTH_LEN],
    ua_public: &[u8],
    as_public: &[u8],
    salt: &[u8; SALT_LEN],
) -> Result<([u8; 16], [u8; 12]), PushCryptoError> {
    // PRK_key = HMAC-SHA-256(auth_secret, ecdh_secret), i.e. HKDF-Extract with the auth secret as salt.
    let prk_key = hkdf::Salt::new(hkdf::HKDF_SHA256, auth).extract(ecdh_secret);
    let ikm: [u8; 32] = expand(&prk_key, &[b"WebPush: info\0", ua_public, as_public])?;
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(&ikm);
    let cek: [u8; 16] = expand(&prk, &[b"Content-Encoding: aes128gcm\0"])?;
    let nonce: [u8; 12] = expand(&prk, &[b"Content-Encoding: nonce\0"])?;
    Ok((cek, nonce))
}

/// [`encrypt`] with the ephemeral key and salt given (deterministic; the RFC 8291 example).
fn encrypt_with(
    sub: &Subscriber,
    plaintext: &[u8],
    ephemeral: &agreement::PrivateKey,
    salt: [u8; SALT_LEN],
) -> Result<Vec<u8>, PushCryptoError> {
    check_size(plaintext)?;
    let as_public = ephemeral.compute_public_key()?;
    let as_public = as_public.as_ref();
    if as_public.len() != POINT_LEN {
        return Err(PushCryptoError::Crypto);
    }
    let peer = agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, &sub.p256dh[..]);
    let (cek, nonce) = agreement::agree(ephemeral, peer, PushCryptoError::Crypto, |secret| {
        derive(secret, &sub.auth, &sub.p256dh, as_public, &salt)
    })?;

    let mut body = Vec::with_capacity(HEADER_LEN + plaintext.len() + 1 + TAG_LEN);
    body.extend_from_slice(&salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(POINT_LEN as u8);
    body.extend_from_slice(as_public);

    let mut record = Vec::with_capacity(plaintext.len() + 1 + TAG_LEN);
    record.extend_from_slice(plaintext);
    record.push(LAST_RECORD_DELIMITER);
    let key = aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_128_GCM, &cek)?);
    key.seal_in_place_append_tag(
        aead::Nonce::assume_unique_for_key(nonce),
        aead::Aad::empty(),
        &mut record,
    )?;
    body.extend_from_slice(&record);
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> Vec<u8> {
        decode_b64url(s).unwrap()
    }

    // RFC 8291 Appendix A.
    const PLAINTEXT: &str = "When I grow up, I want to be a watermelon";
    const AS_PUBLIC: &str = "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8";
    const AS_PRIVATE: &str = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw";
    const UA_PUBLIC: &str = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    const UA_PRIVATE: &str = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94";
    const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";
    const SALT: &str = "DGv6ra1nlYgDCS1FRnbzlw";
    const ECDH_SECRET: &str = "kyrL1jIIOHEzg3sM2ZWRHDRB62YACZhhSlknJ672kSs";
    const CEK: &str = "oIhVW04MRdy2XN9CiKLxTg";
    const NONCE: &str = "4h_95klXJ5E_qnoN";
    const MESSAGE: &str = "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN";

    #[test]
    fn rfc8291_appendix_a() {
        let sub = Subscriber::decode(UA_PUBLIC, AUTH).unwrap();
        let ephemeral = agreement::PrivateKey::from_private_key(&agreement::ECDH_P256, &b64(AS_PRIVATE)).unwrap();
        assert_eq!(ephemeral.compute_public_key().unwrap().as_ref(), &b64(AS_PUBLIC)[..]);
        let salt: [u8; 16] = b64(SALT).try_into().unwrap();

        let (cek, nonce) = derive(&b64(ECDH_SECRET), &sub.auth, &b64(UA_PUBLIC), &b64(AS_PUBLIC), &salt).unwrap();
        assert_eq!(URL_SAFE_NO_PAD.encode(cek), CEK);
        assert_eq!(URL_SAFE_NO_PAD.encode(nonce), NONCE);

        let body = encrypt_with(&sub, PLAINTEXT.as_bytes(), &ephemeral, salt).unwrap();
        assert_eq!(URL_SAFE_NO_PAD.encode(&body), MESSAGE);
    }

    /// An independent receiver (the user agent's side), for round trips.
    fn decrypt(ua_private: &agreement::PrivateKey, auth: &[u8; 16], body: &[u8]) -> Vec<u8> {
        let salt: [u8; 16] = body[..16].try_into().unwrap();
        assert_eq!(u32::from_be_bytes(body[16..20].try_into().unwrap()), RECORD_SIZE);
        let idlen = body[20] as usize;
        assert_eq!(idlen, 65);
        let as_public = &body[21..21 + idlen];
        let ua_public = ua_private.compute_public_key().unwrap();
        let secret = agreement::agree(
            ua_private,
            agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, as_public),
            (),
            |s| Ok(s.to_vec()),
        )
        .unwrap();
        let (cek, nonce) = derive(&secret, auth, ua_public.as_ref(), as_public, &salt).unwrap();
        let mut record = body[21 + idlen..].to_vec();
        assert!(record.len() <= RECORD_SIZE as usize);
        let key = aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_128_GCM, &cek).unwrap());
        let plain = key
            .open_in_place(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::empty(),
                &mut record,
            )
            .unwrap();
        assert_eq!(plain.last(), Some(&LAST_RECORD_DELIMITER));
        plain[..plain.len() - 1].to_vec()
    }

    #[test]
    fn rfc8291_example_decrypts() {
        let ua_private = agreement::PrivateKey::from_private_key(&agreement::ECDH_P256, &b64(UA_PRIVATE)).unwrap();
        let auth: [u8; 16] = b64(AUTH).try_into().unwrap();
        assert_eq!(decrypt(&ua_private, &auth, &b64(MESSAGE)), PLAINTEXT.as_bytes());
    }

    fn fresh_subscriber() -> (agreement::PrivateKey, [u8; 16], Subscriber) {
        let ua_private = agreement::PrivateKey::generate(&agreement::ECDH_P256).unwrap();
        let mut auth = [0u8; 16];
        rand::fill(&mut auth).unwrap();
        let public = ua_private.compute_public_key().unwrap();
        let sub = Subscriber::decode(&URL_SAFE_NO_PAD.encode(public.as_ref()), &URL_SAFE_NO_PAD.encode(auth)).unwrap();
        (ua_private, auth, sub)
    }

    #[test]
    fn encryption_round_trips_with_fresh_keys_and_salt() {
        let (ua_private, auth, sub) = fresh_subscriber();
        let message = br#"{"title":"hello","body":"world"}"#;
        let a = encrypt(&sub, message).unwrap();
        let b = encrypt(&sub, message).unwrap();
        assert_ne!(a[..16], b[..16], "a fresh salt per message");
        assert_ne!(a[21..86], b[21..86], "a fresh ephemeral key per message");
        assert_eq!(a.len(), HEADER_LEN + message.len() + 1 + TAG_LEN);
        assert_eq!(decrypt(&ua_private, &auth, &a), message);
        assert_eq!(decrypt(&ua_private, &auth, &b), message);
        assert_eq!(decrypt(&ua_private, &auth, &encrypt(&sub, b"").unwrap()), b"");
    }

    #[test]
    fn the_largest_message_fits_4096_bytes_and_a_larger_one_is_refused() {
        let (ua_private, auth, sub) = fresh_subscriber();
        let largest = vec![b'x'; MAX_PLAINTEXT];
        let body = encrypt(&sub, &largest).unwrap();
        assert_eq!(body.len(), 4096);
        assert_eq!(decrypt(&ua_private, &auth, &body), largest);
        assert_eq!(
            encrypt(&sub, &vec![b'x'; MAX_PLAINTEXT + 1]),
            Err(PushCryptoError::TooLarge {
                len: MAX_PLAINTEXT + 1,
                max: MAX_PLAINTEXT
            })
        );
    }

    #[test]
    fn subscriber_keys_are_checked() {
        let field = |p: &str, a: &str| Subscriber::decode(p, a).unwrap_err().field();
        assert!(Subscriber::decode(UA_PUBLIC, AUTH).is_ok());
        // Padded base64url is accepted too.
        assert!(Subscriber::decode(&format!("{UA_PUBLIC}="), &format!("{AUTH}==")).is_ok());
        assert_eq!(field("not base64!", AUTH), "p256dh");
        // 64 bytes (no 0x04 prefix), and a compressed point.
        assert_eq!(field(&URL_SAFE_NO_PAD.encode(&b64(UA_PUBLIC)[1..]), AUTH), "p256dh");
        let mut compressed = b64(UA_PUBLIC)[..33].to_vec();
        compressed[0] = 0x02;
        assert_eq!(field(&URL_SAFE_NO_PAD.encode(&compressed), AUTH), "p256dh");
        // 65 bytes, but not on the curve.
        let mut off_curve = b64(UA_PUBLIC);
        off_curve[64] ^= 1;
        let err = Subscriber::decode(&URL_SAFE_NO_PAD.encode(&off_curve), AUTH).unwrap_err();
        assert_eq!(err.field(), "p256dh");
        assert_eq!(err.message(), "p256dh is not a valid uncompressed P-256 public key");
        // The right length with a wrong prefix.
        let mut hybrid = b64(UA_PUBLIC);
        hybrid[0] = 0x06;
        assert_eq!(field(&URL_SAFE_NO_PAD.encode(&hybrid), AUTH), "p256dh");
        let err = Subscriber::decode(UA_PUBLIC, &URL_SAFE_NO_PAD.encode([0u8; 15])).unwrap_err();
        assert_eq!((err.field(), err.message()), ("auth", "auth must be 16 bytes"));
        assert_eq!(field(UA_PUBLIC, &URL_SAFE_NO_PAD.encode([0u8; 17])), "auth");
        assert_eq!(field(UA_PUBLIC, "@@@"), "auth");
        assert_eq!(err.to_string(), "auth must be 16 bytes");
    }

    fn vapid() -> VapidKeys {
        VapidKeys::new(AS_PUBLIC, AS_PRIVATE, "mailto:admin@example.com").unwrap()
    }

    #[test]
    fn vapid_keys_are_checked() {
        assert_eq!(vapid().public_key(), AS_PUBLIC);
        let padded = VapidKeys::new(
            &format!("{AS_PUBLIC}="),
            &format!("{AS_PRIVATE}="),
            "https://example.com",
        );
        assert_eq!(padded.unwrap().public_key(), AS_PUBLIC);
        let new = |p: &str, k: &str, s: &str| VapidKeys::new(p, k, s).map(|_| ()).unwrap_err();
        let sub = "mailto:a@example.com";
        assert_eq!(new("", AS_PRIVATE, sub), VapidError::PublicKey);
        assert_eq!(new(&AS_PUBLIC[..40], AS_PRIVATE, sub), VapidError::PublicKey);
        let mut off_curve = b64(AS_PUBLIC);
        off_curve[64] ^= 1;
        assert_eq!(
            new(&URL_SAFE_NO_PAD.encode(off_curve), AS_PRIVATE, sub),
            VapidError::PublicKey
        );
        assert_eq!(new(AS_PUBLIC, "", sub), VapidError::PrivateKey);
        assert_eq!(
            new(AS_PUBLIC, &URL_SAFE_NO_PAD.encode([7u8; 31]), sub),
            VapidError::PrivateKey
        );
        assert_eq!(
            new(AS_PUBLIC, &URL_SAFE_NO_PAD.encode([0u8; 32]), sub),
            VapidError::PrivateKey
        );
        assert_eq!(
            new(AS_PUBLIC, &URL_SAFE_NO_PAD.encode([0xffu8; 32]), sub),
            VapidError::PrivateKey
        );
        // A valid pair, crossed: the user agent's private key with the server's public key.
        assert_eq!(new(AS_PUBLIC, UA_PRIVATE, sub), VapidError::Mismatch);
        for bad in ["", "admin@example.com", "http://example.com", "mailto:", "ftp://x"] {
            assert_eq!(new(AS_PUBLIC, AS_PRIVATE, bad), VapidError::Subject, "{bad}");
        }
        assert_eq!(
            VapidError::PublicKey.to_string(),
            "VAPID_PUBLIC_KEY is not a base64url uncompressed P-256 point (65 bytes)"
        );
        assert_eq!(
            VapidError::Mismatch.to_string(),
            "VAPID_PRIVATE_KEY does not belong to VAPID_PUBLIC_KEY"
        );
    }

    fn parse_authorization(header: &str) -> (serde_json::Value, serde_json::Value, String, String) {
        let rest = header.strip_prefix("vapid t=").unwrap();
        let (jwt, k) = rest.split_once(", k=").unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let head: serde_json::Value = serde_json::from_slice(&b64(parts[0])).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(&b64(parts[1])).unwrap();
        let sig = b64(parts[2]);
        assert_eq!(sig.len(), 64, "raw r||s");
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, b64(k))
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
            .expect("the signature verifies with k");
        (head, claims, k.to_string(), parts[0].to_string())
    }

    #[test]
    fn vapid_authorization_is_a_signed_es256_jwt() {
        let keys = vapid();
        let header = keys
            .authorization("https://push.example.com/abc?x=1#f", 1_700_000_000)
            .unwrap();
        let (head, claims, k, head_b64) = parse_authorization(&header);
        assert_eq!(head, serde_json::json!({"typ": "JWT", "alg": "ES256"}));
        assert_eq!(head_b64, URL_SAFE_NO_PAD.encode(JWT_HEADER));
        assert_eq!(
            claims,
            serde_json::json!({
                "aud": "https://push.example.com",
                "exp": 1_700_000_000u64 + 12 * 3600,
                "sub": "mailto:admin@example.com",
            })
        );
        assert_eq!(k, AS_PUBLIC);
        // ECDSA is randomised: two headers differ, both verify.
        let again = keys
            .authorization("https://push.example.com/abc?x=1#f", 1_700_000_000)
            .unwrap();
        assert_ne!(header, again);
        parse_authorization(&again);
    }

    #[test]
    fn vapid_audience_is_the_endpoint_origin() {
        let keys = vapid();
        let aud = |endpoint: &str| {
            let header = keys.authorization(endpoint, 0).unwrap();
            parse_authorization(&header).1["aud"].as_str().unwrap().to_string()
        };
        assert_eq!(aud("https://push.example.com/abc"), "https://push.example.com");
        assert_eq!(aud("https://h.test:8443/x"), "https://h.test:8443");
        assert_eq!(aud("https://h.test:443/x"), "https://h.test");
        assert_eq!(aud("https://user:pw@H.Test/x/y"), "https://h.test");
        assert_eq!(aud("https://[2001:db8::1]:9000/x"), "https://[2001:db8::1]:9000");
        for bad in [
            "",
            "/relative",
            "push.example.com/abc",
            "mailto:x@example.com",
            "data:text/plain,x",
        ] {
            assert_eq!(keys.authorization(bad, 0), Err(PushCryptoError::Endpoint), "{bad}");
        }
    }
}
