//! Opaque secrets (refresh and reset tokens): 32 random bytes, base64url without padding.
//! Only their SHA-256 digest is ever stored (spec §6.3, §6.5).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// A fresh 43-character token.
pub fn generate() -> String {
    generate_len(32)
}

/// A fresh token of `bytes` random bytes (4 characters per 3 bytes).
pub fn generate_len(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// Compares two digests in constant time (a bot secret's digest is compared, not looked up).
pub fn digests_equal(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

/// The digest stored in place of a token.
pub fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_43_url_safe_chars_and_unique() {
        let a = generate();
        assert_eq!(a.len(), 43);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_ne!(a, generate());
        assert_eq!(generate_len(24).len(), 32);
        assert_eq!(digest(&a), digest(&a));
        assert_eq!(digest(&a).len(), 32);
    }
}
