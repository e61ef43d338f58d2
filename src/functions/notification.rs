//! What a push notification says and whom a message mentions (spec §12.2). Pure text rules.

use serde::Serialize;

/// The mentions in a message's content.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Mentions {
    /// Lowercased handle tokens (`@alice` → `alice`, `@bob.example.org` → `bob.example.org`).
    pub handles: Vec<String>,
    /// `@everyone` appears.
    pub everyone: bool,
}

/// Mentions the way Mikoto's client writes them: `@` at the start or after whitespace, then
/// `[A-Za-z0-9_.-]+`, trailing dots removed. At most 50 distinct handles are kept.
pub fn mentions(content: &str) -> Mentions {
    const MAX: usize = 50;
    let mut out = Mentions::default();
    let mut prev_is_space = true;
    for (i, c) in content.char_indices() {
        if c == '@' && prev_is_space {
            let rest = &content[i + 1..];
            let end = rest
                .find(|ch: char| !(ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | '-')))
                .unwrap_or(rest.len());
            let token = rest[..end].trim_end_matches('.').to_ascii_lowercase();
            if token == "everyone" {
                out.everyone = true;
            } else if !token.is_empty() && !out.handles.contains(&token) && out.handles.len() < MAX {
                out.handles.push(token);
            }
        }
        prev_is_space = c.is_whitespace();
    }
    out
}

/// The handles a mention token may name: the full handle, and for default handles the part
/// before `.<handle domain>`.
pub fn handle_candidates(token: &str, handle_domain: &str) -> [String; 2] {
    [token.to_string(), format!("{token}.{handle_domain}")]
}

/// The payload Mikoto's service worker shows.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PushPayload {
    pub title: String,
    pub body: String,
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icon: Option<String>,
    pub tag: String,
}

/// The body: content cut at 140 characters (plus `…`), or `[attachment]` without content.
pub fn body(content: &str) -> String {
    const MAX: usize = 140;
    let content = content.trim();
    if content.is_empty() {
        return "[attachment]".to_string();
    }
    match content.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &content[..cut]),
        None => content.to_string(),
    }
}

/// The absolute icon URL of an avatar (a media key or an absolute URL), 192×192.
pub fn icon(avatar: Option<&str>, media_public_url: &str) -> Option<String> {
    let avatar = avatar?;
    let base = if avatar.starts_with("https://") || avatar.starts_with("http://") {
        avatar.to_string()
    } else {
        format!(
            "{}/{}",
            media_public_url.trim_end_matches('/'),
            avatar.trim_start_matches('/')
        )
    };
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{sep}w=192&h=192"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_follow_the_client_syntax() {
        let m = mentions("@Alice hi @bob.example.org. and @everyone, mail@x.org @@no (@paren)\n@carol-1_2.");
        assert_eq!(m.handles, vec!["alice", "bob.example.org", "carol-1_2"]);
        assert!(m.everyone);
        assert_eq!(mentions("no mentions here").handles.len(), 0);
        assert!(!mentions("@everyones").everyone);
        assert_eq!(mentions("@alice @ALICE").handles, vec!["alice"]);
        assert_eq!(mentions("@...").handles.len(), 0);
    }

    #[test]
    fn candidates_include_the_default_handle() {
        assert_eq!(
            handle_candidates("alice", "alterego.test"),
            ["alice".to_string(), "alice.alterego.test".to_string()]
        );
    }

    #[test]
    fn body_is_truncated_at_140_characters() {
        assert_eq!(body(""), "[attachment]");
        assert_eq!(body("  hi "), "hi");
        let long = "é".repeat(141);
        assert_eq!(body(&long), format!("{}…", "é".repeat(140)));
        assert_eq!(body(&"x".repeat(140)), "x".repeat(140));
    }

    #[test]
    fn icons_are_absolute() {
        assert_eq!(icon(None, "https://m.test/media"), None);
        assert_eq!(
            icon(Some("avatar/a.png"), "https://m.test/media/").as_deref(),
            Some("https://m.test/media/avatar/a.png?w=192&h=192")
        );
        assert_eq!(
            icon(Some("https://cdn.test/a.png?v=1"), "https://m.test/media").as_deref(),
            Some("https://cdn.test/a.png?v=1&w=192&h=192")
        );
    }
}
