//! Handle syntax and the default handle derived at registration (spec §12.4).

use crate::error::{Error, ErrorCode};

/// Candidate default handles for a new user, in the order they are tried: the derived username,
/// then with 4, 6, 8 and 12 hex digits of the id's random tail.
pub fn default_candidates(display_name: &str, user_id: uuid::Uuid, handle_domain: &str) -> Vec<String> {
    let base = derive_username(display_name);
    let hex = user_id.simple().to_string();
    let tail = &hex[hex.len() - 12..];
    let mut out = vec![format!("{base}.{handle_domain}")];
    for n in [4, 6, 8, 12] {
        out.push(format!("{base}-{}.{handle_domain}", &tail[tail.len() - n..]));
    }
    out
}

/// Lowercase; map anything outside `[a-z0-9_-]` to `-`; collapse `-`; trim `-`/`_`; at most 48
/// characters; `user` when shorter than 2.
pub fn derive_username(display_name: &str) -> String {
    let mut out = String::new();
    for c in display_name.to_lowercase().chars() {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' {
            c
        } else {
            '-'
        };
        if !(c == '-' && out.ends_with('-')) {
            out.push(c);
        }
    }
    let trimmed: String = out.trim_matches(|c| c == '-' || c == '_').chars().take(48).collect();
    // Truncation may leave a trailing separator, which the username syntax forbids.
    let trimmed = trimmed.trim_end_matches(['-', '_']).to_string();
    if trimmed.chars().count() < 2 {
        "user".to_string()
    } else {
        trimmed
    }
}

/// `^[a-z0-9][a-z0-9_-]*[a-z0-9]$`, 2–64 characters.
pub fn is_valid_username(s: &str) -> bool {
    let len = s.len();
    (2..=64).contains(&len)
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && s.as_bytes().first().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.as_bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

/// What a handle given to `user.setHandle` or `spaces.update` means (spec §12.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettableHandle {
    /// A default handle `<username>.<HANDLE_DOMAIN>`, ready to store.
    Default(String),
    /// A syntactically valid custom domain: needs verification first.
    CustomDomain(String),
    Invalid,
}

/// Classifies a requested handle: a plain username or a full default handle becomes a default
/// handle; anything else must be a custom domain outside `HANDLE_DOMAIN`.
pub fn classify(input: &str, handle_domain: &str) -> SettableHandle {
    let h = input.trim().to_lowercase();
    let suffix = format!(".{handle_domain}");
    let username = match h.strip_suffix(&suffix) {
        Some(u) => u,
        None if !h.contains('.') => h.as_str(),
        None => {
            let ok = h.len() <= 253 && is_domain(&h) && h != handle_domain;
            return if ok {
                SettableHandle::CustomDomain(h)
            } else {
                SettableHandle::Invalid
            };
        }
    };
    if is_valid_username(username) {
        SettableHandle::Default(format!("{username}{suffix}"))
    } else {
        SettableHandle::Invalid
    }
}

/// A handle as stored and compared: trimmed and lowercased (spec §2.4).
pub fn normalize(input: &str) -> String {
    input.trim().to_lowercase()
}

/// 400 `InvalidHandle` on `handle`.
pub fn invalid_handle(message: &'static str) -> Error {
    Error::new(ErrorCode::InvalidHandle, message).with_field("handle")
}

/// 400 `CustomDomainRequiresVerification` on `handle`.
pub fn requires_verification() -> Error {
    Error::new(
        ErrorCode::CustomDomainRequiresVerification,
        "A custom domain must be verified before it can be used as a handle",
    )
    .with_field("handle")
}

/// 409 `HandleTaken` on `handle`.
pub fn taken() -> Error {
    Error::new(ErrorCode::HandleTaken, "This handle is already taken").with_field("handle")
}

/// The domain a verification is about: a custom domain outside `HANDLE_DOMAIN`, else 400
/// `InvalidHandle` (default handles and subdomains of `HANDLE_DOMAIN` need no verification).
pub fn verification_domain(input: &str, handle_domain: &str) -> Result<String, Error> {
    match classify(input, handle_domain) {
        SettableHandle::CustomDomain(d) => Ok(d),
        SettableHandle::Default(_) => Err(invalid_handle(
            "Handles under this instance's domain need no verification; only a custom domain can be verified",
        )),
        SettableHandle::Invalid => Err(invalid_handle("This is not a valid domain name")),
    }
}

/// `^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,}$`
fn is_domain(s: &str) -> bool {
    let labels: Vec<&str> = s.split('.').collect();
    let Some((tld, rest)) = labels.split_last() else {
        return false;
    };
    !rest.is_empty()
        && tld.len() >= 2
        && tld.bytes().all(|b| b.is_ascii_lowercase())
        && rest.iter().all(|l| {
            (1..=63).contains(&l.len())
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_usernames() {
        for (input, want) in [
            ("Misaka Mikoto", "misaka-mikoto"),
            ("  --Hello__World!!  ", "hello__world"),
            ("é", "user"),
            ("A", "user"),
            ("ab", "ab"),
            ("a---b", "a-b"),
            ("_x_", "user"),
        ] {
            assert_eq!(derive_username(input), want, "{input}");
        }
        let long = derive_username(&"ab".repeat(40));
        assert_eq!(long.len(), 48);
        assert!(is_valid_username(&derive_username("x y z !!! ")));
    }

    #[test]
    fn candidates_use_the_random_tail() {
        let id = uuid::Uuid::parse_str("01890a5d-ac96-774b-bcce-b302099a8057").unwrap();
        let c = default_candidates("Alice", id, "example.org");
        assert_eq!(
            c,
            [
                "alice.example.org",
                "alice-8057.example.org",
                "alice-9a8057.example.org",
                "alice-099a8057.example.org",
                "alice-b302099a8057.example.org",
            ]
        );
    }

    #[test]
    fn username_syntax() {
        assert!(is_valid_username("ab"));
        assert!(is_valid_username("a_b-c9"));
        assert!(!is_valid_username("a"));
        assert!(!is_valid_username("-ab"));
        assert!(!is_valid_username("ab_"));
        assert!(!is_valid_username("Ab"));
        assert!(!is_valid_username(&"a".repeat(65)));
    }

    #[test]
    fn classifies_settable_handles() {
        use SettableHandle::*;
        let d = "mikoto.example";
        assert_eq!(classify("Team", d), Default("team.mikoto.example".into()));
        assert_eq!(
            classify("team.mikoto.example", d),
            Default("team.mikoto.example".into())
        );
        assert_eq!(classify("team.example.org", d), CustomDomain("team.example.org".into()));
        assert_eq!(classify("a.b.mikoto.example", d), Invalid);
        assert_eq!(classify("x", d), Invalid);
        assert_eq!(classify("-bad-", d), Invalid);
        assert_eq!(classify("mikoto.example", d), Invalid);
        assert_eq!(classify("under_score.org", d), Invalid);
    }

    #[test]
    fn verification_domains() {
        let d = "mikoto.example";
        assert_eq!(
            verification_domain(" Team.Example.ORG ", d).unwrap(),
            "team.example.org"
        );
        for bad in [
            "team",
            "team.mikoto.example",
            "a.b.mikoto.example",
            "mikoto.example",
            "x..org",
            "",
        ] {
            let e = verification_domain(bad, d).unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidHandle, "{bad}");
        }
        let long = format!("{}.org", vec!["a".repeat(63); 4].join("."));
        assert!(long.len() > 253);
        assert!(verification_domain(&long, d).is_err());
    }
}
