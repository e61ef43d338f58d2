//! Value rules of spec §13 that several operations share. Each returns the normalised value or a
//! `ValidationFailed` naming the field.

use crate::error::Error;

pub const NAME_MAX: usize = 64;
pub const DESCRIPTION_MAX: usize = 2048;
pub const EMAIL_MAX: usize = 254;

/// A display name (user, bot, space, channel, role): trimmed, 1–64 characters, no control characters.
pub fn display_name(field: &str, raw: &str) -> Result<String, Error> {
    let name = raw.trim();
    let len = name.chars().count();
    if len == 0 || len > NAME_MAX {
        return Err(Error::validation(
            field,
            format!("`{field}` must be 1 to {NAME_MAX} characters long"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::validation(
            field,
            format!("`{field}` must not contain control characters"),
        ));
    }
    Ok(name.to_string())
}

/// An email: trimmed, lowercased, ≤ 254 characters, `local@domain.tld`.
pub fn email(raw: &str) -> Result<String, Error> {
    let email = raw.trim().to_lowercase();
    let invalid = || Error::validation("email", "`email` must be a valid email address");
    if email.chars().count() > EMAIL_MAX || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid());
    }
    let (local, domain) = email.rsplit_once('@').ok_or_else(invalid)?;
    let domain_ok = domain.contains('.') && !domain.contains('@') && domain.split('.').all(|label| !label.is_empty());
    if local.is_empty() || !domain_ok {
        return Err(invalid());
    }
    Ok(email)
}

/// A description: ≤ 2048 characters; `""` means none.
pub fn description(raw: &str) -> Result<Option<String>, Error> {
    if raw.chars().count() > DESCRIPTION_MAX {
        return Err(Error::validation(
            "description",
            format!("`description` must be at most {DESCRIPTION_MAX} characters long"),
        ));
    }
    Ok(if raw.is_empty() { None } else { Some(raw.to_string()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(display_name("name", "  Alice ").unwrap(), "Alice");
        assert!(display_name("name", "   ").is_err());
        assert!(display_name("name", "").is_err());
        assert!(display_name("name", &"x".repeat(64)).is_ok());
        assert!(display_name("name", &"é".repeat(64)).is_ok());
        assert!(display_name("name", &"x".repeat(65)).is_err());
        assert!(display_name("name", "a\u{0007}b").is_err());
        assert_eq!(
            display_name("name", "").unwrap_err().body.field.as_deref(),
            Some("name")
        );
    }

    #[test]
    fn emails() {
        assert_eq!(email("  Misaka@Tokiwadai.AC.jp ").unwrap(), "misaka@tokiwadai.ac.jp");
        for bad in ["", "plain", "@x.org", "a@b", "a@.org", "a@b.", "a b@c.org", "a@b..org"] {
            assert!(email(bad).is_err(), "{bad}");
        }
        let long = format!("{}@example.org", "a".repeat(243));
        assert!(email(&long).is_err());
        let ok = format!("{}@example.org", "a".repeat(242));
        assert!(email(&ok).is_ok());
    }

    #[test]
    fn descriptions() {
        assert_eq!(description("").unwrap(), None);
        assert_eq!(description("hi").unwrap().as_deref(), Some("hi"));
        assert!(description(&"x".repeat(2049)).is_err());
    }
}
