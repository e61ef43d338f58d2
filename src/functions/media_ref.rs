//! References from entities to stored media (spec §10.7): relative `store/name.ext`, or absolute
//! under `MEDIA_PUBLIC_URL`; always stored relative. This checks the form and the store only;
//! entities store references through `entities::media::claim_reference`, which also requires the
//! object to exist and claims it.

use crate::error::{Error, ErrorCode};

/// Normalises a reference to `store/name.ext`, or refuses it.
pub fn normalize(store: &str, value: &str, media_public_url: &str, field: &str) -> Result<String, Error> {
    let base = format!("{}/", media_public_url.trim_end_matches('/'));
    let relative = value.strip_prefix(&base).unwrap_or(value);
    let refuse = || refusal(store, field);
    let (s, file) = relative.split_once('/').ok_or_else(refuse)?;
    let (name, ext) = file.rsplit_once('.').ok_or_else(refuse)?;
    let name_ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let ext_ok = (1..=8).contains(&ext.len()) && ext.bytes().all(|b| b.is_ascii_alphanumeric());
    if s != store || !name_ok || !ext_ok {
        return Err(refuse());
    }
    Ok(relative.to_string())
}

/// 400 `InvalidMediaReference` for `field`, which must name an upload in `store`.
pub fn refusal(store: &str, field: &str) -> Error {
    Error::new(
        ErrorCode::InvalidMediaReference,
        format!("`{field}` must reference an upload in the `{store}` store"),
    )
    .with_field(field)
}

/// The `attachment/<name>.<ext>` keys a document's Markdown mentions, relative or under
/// `MEDIA_PUBLIC_URL` (spec §10.8: the web client embeds uploaded images), at most 100.
pub fn attachment_keys(content: &str) -> Vec<String> {
    const MAX: usize = 100;
    const PREFIX: &str = "attachment/";
    let mut keys: Vec<String> = Vec::new();
    let mut rest = content;
    while let Some(at) = rest.find(PREFIX) {
        let tail = &rest[at + PREFIX.len()..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
            .unwrap_or(tail.len());
        let file = tail[..end].trim_end_matches('.');
        if let Some((name, ext)) = file.rsplit_once('.') {
            let name_ok = (1..=64).contains(&name.len()) && !name.contains('.');
            let ext_ok = (1..=8).contains(&ext.len()) && ext.bytes().all(|b| b.is_ascii_alphanumeric());
            let key = format!("{PREFIX}{file}");
            if name_ok && ext_ok && !keys.contains(&key) {
                keys.push(key);
                if keys.len() == MAX {
                    break;
                }
            }
        }
        rest = &tail[end..];
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "https://api.example.org/media";

    #[test]
    fn accepts_relative_and_absolute() {
        assert_eq!(
            normalize("avatar", "avatar/Ab3_x-Y.png", BASE, "avatar").unwrap(),
            "avatar/Ab3_x-Y.png"
        );
        assert_eq!(
            normalize("avatar", "https://api.example.org/media/avatar/abc.png", BASE, "avatar").unwrap(),
            "avatar/abc.png"
        );
    }

    #[test]
    fn refuses_other_stores_and_external_urls() {
        for bad in [
            "spaceicon/abc.png",
            "https://evil.example/avatar/abc.png",
            "avatar/../x.png",
            "avatar/abc",
            "avatar/a/b.png",
            "avatar/.png",
            "",
            "/avatar/abc.png",
        ] {
            let e = normalize("avatar", bad, BASE, "avatar").unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidMediaReference, "{bad}");
        }
    }

    #[test]
    fn document_attachment_keys() {
        let md = "![a](attachment/abc.png) and ![b](https://m.test/media/attachment/x-y_z.webp). \
                  not attachment/noext nor attachment/a.b.c; again attachment/abc.png";
        assert_eq!(attachment_keys(md), vec!["attachment/abc.png", "attachment/x-y_z.webp"]);
    }
}
