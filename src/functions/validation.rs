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
    // A spoofing tool: text that reads in another order than it is stored.
    if name.chars().any(is_bidi_control) {
        return Err(Error::validation(
            field,
            format!("`{field}` must not contain bidirectional control characters"),
        ));
    }
    if name.chars().all(is_invisible) {
        return Err(Error::validation(
            field,
            format!("`{field}` must contain a visible character"),
        ));
    }
    Ok(name.to_string())
}

/// The bidirectional embedding, override and isolate controls (U+202A–U+202E, U+2066–U+2069).
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Characters that show nothing: whitespace, zero-width spaces and joiners, the word joiner and
/// invisible operators, the byte-order mark, soft hyphen, fillers, variation selectors, tags and
/// the bidi controls.
pub fn is_invisible(c: char) -> bool {
    c.is_whitespace()
        || is_bidi_control(c)
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{061C}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{17B4}'
                | '\u{17B5}'
                | '\u{180B}'..='\u{180F}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2060}'..='\u{2064}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{E0000}'..='\u{E007F}'
        )
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

    #[test]
    fn names_need_a_visible_character_and_no_bidi_controls() {
        for bad in [
            "\u{200B}\u{200B}",
            "\u{FEFF}",
            " \u{2060} ",
            "a\u{202E}b",
            "x\u{2066}y\u{2069}",
        ] {
            assert!(display_name("name", bad).is_err(), "{bad:?}");
        }
        for good in ["Ada", "a\u{200D}b", "👩\u{200D}💻", "日本"] {
            assert!(display_name("name", good).is_ok(), "{good:?}");
        }
    }
}
