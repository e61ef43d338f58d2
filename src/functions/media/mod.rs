//! Media (spec §10): the stores, object keys and names, content types, and the serving rules
//! that do not depend on HTTP. The storage backends are in [`storage`], type detection in
//! [`sniff`]; image work is in `functions::images`.

pub mod sniff;
pub mod storage;

use rand::Rng;
use sha2::{Digest, Sha256};

use crate::config::Config;

pub use storage::{MediaStore, Object, Payload, StoreError};

/// The upload stores of spec §10.2. `default-avatar` is a route, not a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Store {
    Avatar,
    SpaceIcon,
    Attachment,
}

impl Store {
    pub const ALL: [Store; 3] = [Store::Avatar, Store::SpaceIcon, Store::Attachment];

    pub fn name(self) -> &'static str {
        match self {
            Store::Avatar => "avatar",
            Store::SpaceIcon => "spaceicon",
            Store::Attachment => "attachment",
        }
    }

    pub fn parse(s: &str) -> Option<Store> {
        Store::ALL.into_iter().find(|st| st.name() == s)
    }

    /// Avatars and space icons accept images only and are normalised to a 512×512 PNG.
    pub fn requires_image(self) -> bool {
        matches!(self, Store::Avatar | Store::SpaceIcon)
    }

    /// The configured upload limit of the store, in bytes.
    pub fn max_bytes(self, config: &Config) -> u64 {
        match self {
            Store::Avatar => config.media_max_avatar_bytes,
            Store::SpaceIcon => config.media_max_spaceicon_bytes,
            Store::Attachment => config.media_max_attachment_bytes,
        }
    }
}

impl std::fmt::Display for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Multipart overhead allowed on top of a store's limit (spec §10.3).
pub const MULTIPART_OVERHEAD: u64 = 64 * 1024;

/// Whether `{name}` of `GET {prefix}/{store}/{name}` is acceptable:
/// `^[A-Za-z0-9_-]{1,64}(\.[a-z0-9]{1,8})?$` (spec §10.1). This rules out traversal.
pub fn valid_name(name: &str) -> bool {
    let (stem, ext) = match name.split_once('.') {
        Some((stem, ext)) => (stem, Some(ext)),
        None => (name, None),
    };
    let stem_ok = (1..=64).contains(&stem.len())
        && stem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let ext_ok = ext
        .is_none_or(|e| (1..=8).contains(&e.len()) && e.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    stem_ok && ext_ok
}

/// Whether `{id}` of `GET {prefix}/default-avatar/{id}` is acceptable: `^[A-Za-z0-9-]{1,64}$`.
pub fn valid_avatar_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

const KEY_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";

/// A new object key `<store>/<22 URL-safe random characters>.<ext>` (spec §10.3), 132 bits from
/// the OS-seeded CSPRNG: never reused.
pub fn new_key(store: Store, ext: &str) -> String {
    let mut rng = rand::rng();
    let name: String = (0..22)
        .map(|_| char::from(KEY_ALPHABET[rng.random_range(0..KEY_ALPHABET.len())]))
        .collect();
    format!("{}/{name}.{ext}", store.name())
}

/// Where the `w×h` variant of `key` is cached in the backend. Outside every store, so the
/// serving route can never name it.
pub fn variant_key(key: &str, w: u32, h: u32) -> String {
    format!("{}{w}x{h}.png", variant_prefix(key))
}

/// The prefix under which every variant of `key` lives (deleted with the object).
pub fn variant_prefix(key: &str) -> String {
    format!("variants/{key}/")
}

/// A strong ETag from the key and the variant (spec §10.5); objects are immutable.
pub fn etag(key: &str, variant: Option<(u32, u32)>) -> String {
    let mut h = Sha256::new();
    h.update(key.as_bytes());
    if let Some((w, h2)) = variant {
        h.update(format!("?w={w}&h={h2}").as_bytes());
    }
    let digest = h.finalize();
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// The file extension of a (sniffed or kept) content type (spec §10.3).
pub fn extension_for(content_type: &str) -> &'static str {
    match content_type {
        "image/png" => "png",
        "image/jpeg" => "jpg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        "video/mp4" => "mp4",
        "video/webm" => "webm",
        "video/quicktime" => "mov",
        "audio/mpeg" => "mp3",
        "audio/ogg" => "ogg",
        "audio/wav" => "wav",
        "audio/flac" => "flac",
        "application/pdf" => "pdf",
        "application/zip" => "zip",
        "text/plain" => "txt",
        "text/markdown" => "md",
        "text/csv" => "csv",
        "application/json" => "json",
        _ => "bin",
    }
}

/// The type of an object without an index row, guessed from its extension (spec §10.5, §10.9).
pub fn content_type_for_extension(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match ext {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mov" => "video/quicktime",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "wav" => "audio/wav",
        "flac" => "audio/flac",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "txt" => "text/plain",
        "md" => "text/markdown",
        "csv" => "text/csv",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "html" | "htm" => "text/html",
        _ => "application/octet-stream",
    }
}

/// The raster formats that variants and image processing apply to.
pub fn is_raster_image(content_type: &str) -> bool {
    matches!(content_type, "image/png" | "image/jpeg" | "image/gif" | "image/webp")
}

/// Whether a type is served inline (spec §10.5). Everything else, SVG and HTML included, is
/// served as an attachment.
pub fn served_inline(content_type: &str) -> bool {
    let essence = essence(content_type);
    is_raster_image(&essence)
        || matches!(essence.as_str(), "video/mp4" | "video/webm" | "text/plain")
        || essence.starts_with("audio/")
}

/// The lowercase `type/subtype` of a content type, without parameters.
pub fn essence(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// The maximum length of a stored filename, in characters (spec §13).
pub const MAX_FILENAME_CHARS: usize = 255;

/// The original filename as stored: without any directory part, control characters or
/// surrounding whitespace, at most 255 characters; `file` when nothing is left.
pub fn sanitize_filename(raw: &str) -> String {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = base
        .chars()
        .filter(|c| {
            !c.is_control() && !matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        })
        .collect();
    let trimmed = cleaned.trim();
    let short: String = trimmed.chars().take(MAX_FILENAME_CHARS).collect();
    if short.is_empty() || short == "." || short == ".." {
        "file".to_string()
    } else {
        short
    }
}

/// `attachment; filename*=UTF-8''<percent-encoded name>` (RFC 6266 / RFC 8187).
pub fn attachment_disposition(filename: &str) -> String {
    let mut out = String::from("attachment; filename*=UTF-8''");
    for b in filename.bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#' | b'$' | b'&' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
            );
        if keep {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A `?w=&h=` value: an integer (optionally signed), clamped to 1–1024 (spec §10.5). Anything
/// that is not an integer is `None`, and the parameters are then ignored.
pub fn parse_dimension(raw: &str) -> Option<u32> {
    let (negative, digits) = match raw.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, raw.strip_prefix('+').unwrap_or(raw)),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if negative {
        return Some(1);
    }
    let significant = digits.trim_start_matches('0');
    let value: u32 = match significant.len() {
        0 => 0,
        1..=6 => significant.parse().unwrap_or(u32::MAX),
        _ => u32::MAX,
    };
    Some(value.clamp(1, 1024))
}

/// Whether a request is an upload to one of the stores under `prefix` (the media routes): such
/// requests are exempt from the REST request timeout, the upload bounding the time between
/// chunks instead.
pub fn is_upload(prefix: &str, method: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    method == "POST"
        && path
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|store| Store::parse(store.trim_end_matches('/')).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["abc", "A_b-9", "x.png", "x.mp4", &"a".repeat(64), "a.12345678"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            ".png",
            "..",
            "../etc",
            "a..png",
            "a.PNG",
            "a.b.c",
            "a/b",
            "a%2Fb",
            "a b",
            &"a".repeat(65),
            "a.123456789",
            "a.",
            "ä",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert!(valid_avatar_id("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"));
        assert!(!valid_avatar_id("a_b"));
        assert!(!valid_avatar_id(""));
    }

    #[test]
    fn keys_are_random_and_well_formed() {
        let a = new_key(Store::Avatar, "png");
        let b = new_key(Store::Avatar, "png");
        assert_ne!(a, b);
        let (store, name) = a.split_once('/').unwrap();
        assert_eq!(store, "avatar");
        assert!(valid_name(name));
        assert_eq!(name.len(), 22 + 4);
    }

    #[test]
    fn dimensions_are_clamped() {
        assert_eq!(parse_dimension("64"), Some(64));
        assert_eq!(parse_dimension("0"), Some(1));
        assert_eq!(parse_dimension("000"), Some(1));
        assert_eq!(parse_dimension("-5"), Some(1));
        assert_eq!(parse_dimension("5000"), Some(1024));
        assert_eq!(parse_dimension("99999999999999999999999"), Some(1024));
        assert_eq!(parse_dimension("1.5"), None);
        assert_eq!(parse_dimension(""), None);
        assert_eq!(parse_dimension("abc"), None);
    }

    #[test]
    fn dispositions() {
        assert!(served_inline("image/png"));
        assert!(served_inline("audio/ogg"));
        assert!(served_inline("text/plain; charset=utf-8"));
        assert!(!served_inline("image/svg+xml"));
        assert!(!served_inline("text/html"));
        assert!(!served_inline("application/pdf"));
        assert_eq!(
            attachment_disposition("naïve file.pdf"),
            "attachment; filename*=UTF-8''na%C3%AFve%20file.pdf"
        );
    }

    #[test]
    fn filenames() {
        assert_eq!(sanitize_filename("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_filename("C:\\x\\y.txt"), "y.txt");
        assert_eq!(sanitize_filename(" a\u{0}b\n.png "), "ab.png");
        assert_eq!(sanitize_filename("evil\u{202e}gpj.exe"), "evilgpj.exe");
        assert_eq!(sanitize_filename(""), "file");
        assert_eq!(sanitize_filename(".."), "file");
        assert_eq!(sanitize_filename(&"x".repeat(300)).chars().count(), 255);
    }

    #[test]
    fn etags_differ_by_variant() {
        let a = etag("avatar/x.png", None);
        let b = etag("avatar/x.png", Some((64, 64)));
        assert_ne!(a, b);
        assert!(a.starts_with('"') && a.ends_with('"'));
    }
}
