//! Content-type detection from the bytes (spec §10.3). The declared part type and the filename
//! are never trusted; the only exception is plain text without a magic number.

/// How many leading bytes [`sniff`] looks at.
pub const HEAD_LEN: usize = 64;

/// The type named by the magic number at the start of `head`, if any.
pub fn sniff(head: &[u8]) -> Option<&'static str> {
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    if at(0, b"\x89PNG\r\n\x1a\n") {
        return Some("image/png");
    }
    if at(0, b"\xff\xd8\xff") {
        return Some("image/jpeg");
    }
    if at(0, b"GIF87a") || at(0, b"GIF89a") {
        return Some("image/gif");
    }
    if at(0, b"RIFF") && at(8, b"WEBP") {
        return Some("image/webp");
    }
    if at(0, b"RIFF") && at(8, b"WAVE") {
        return Some("audio/wav");
    }
    if at(0, b"fLaC") {
        return Some("audio/flac");
    }
    if at(0, b"OggS") {
        return Some("audio/ogg");
    }
    if at(0, b"%PDF-") {
        return Some("application/pdf");
    }
    if at(0, b"PK\x03\x04") || at(0, b"PK\x05\x06") || at(0, b"PK\x07\x08") {
        return Some("application/zip");
    }
    if at(4, b"ftyp") {
        let brand = head.get(8..12)?;
        return match brand {
            b"qt  " => Some("video/quicktime"),
            // HEIF/AVIF stills share the container; they are not video.
            b"heic" | b"heix" | b"hevc" | b"mif1" | b"msf1" | b"avif" | b"avis" => None,
            _ => Some("video/mp4"),
        };
    }
    if at(0, b"\x1a\x45\xdf\xa3") {
        // EBML: WebM names its DocType near the start; other Matroska files are not WebM.
        return head.windows(4).any(|w| w == b"webm").then_some("video/webm");
    }
    if at(0, b"ID3") || is_mpeg_audio_frame(head) {
        return Some("audio/mpeg");
    }
    None
}

/// An MPEG audio frame header: 11 sync bits, a defined version and layer, a usable bitrate.
fn is_mpeg_audio_frame(head: &[u8]) -> bool {
    let [a, b, c, ..] = head else {
        return false;
    };
    let sync = *a == 0xff && b & 0xe0 == 0xe0;
    let version_ok = (b >> 3) & 0b11 != 0b01;
    let layer_ok = (b >> 1) & 0b11 != 0b00;
    let bitrate_ok = c >> 4 != 0b1111;
    let rate_ok = (c >> 2) & 0b11 != 0b11;
    sync && version_ok && layer_ok && bitrate_ok && rate_ok
}

/// Declared types that are kept for valid UTF-8 without NUL bytes and no magic number.
const TEXT_TYPES: [&str; 4] = ["text/plain", "text/markdown", "text/csv", "application/json"];

/// The stored type: the sniffed one; else the declared text type when the content is text;
/// else `application/octet-stream`.
pub fn decide(sniffed: Option<&'static str>, declared: Option<&str>, is_text: bool) -> String {
    if let Some(t) = sniffed {
        return t.to_string();
    }
    let declared = declared.map(super::essence).unwrap_or_default();
    if is_text && TEXT_TYPES.contains(&declared.as_str()) {
        return declared;
    }
    "application/octet-stream".to_string()
}

/// Checks, chunk by chunk, that a stream is UTF-8 without NUL bytes.
#[derive(Debug, Default)]
pub struct TextCheck {
    carry: Vec<u8>,
    failed: bool,
}

impl TextCheck {
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.failed {
            return;
        }
        if chunk.contains(&0) {
            self.failed = true;
            return;
        }
        let mut buf = std::mem::take(&mut self.carry);
        buf.extend_from_slice(chunk);
        match std::str::from_utf8(&buf) {
            Ok(_) => {}
            // An incomplete sequence at the end continues in the next chunk.
            Err(e) if e.error_len().is_none() => {
                self.carry = buf[e.valid_up_to()..].to_vec();
            }
            Err(_) => self.failed = true,
        }
    }

    /// Whether everything fed was UTF-8 without NUL bytes.
    pub fn finish(self) -> bool {
        !self.failed && self.carry.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_numbers() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n...."), Some("image/png"));
        assert_eq!(sniff(b"\xff\xd8\xff\xe0"), Some("image/jpeg"));
        assert_eq!(sniff(b"GIF89a.."), Some("image/gif"));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(sniff(b"RIFF\0\0\0\0WAVEfmt "), Some("audio/wav"));
        assert_eq!(sniff(b"\0\0\0\x18ftypisom"), Some("video/mp4"));
        assert_eq!(sniff(b"\0\0\0\x14ftypqt  "), Some("video/quicktime"));
        assert_eq!(sniff(b"\0\0\0\x18ftypheic"), None);
        assert_eq!(
            sniff(b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm"),
            Some("video/webm")
        );
        assert_eq!(sniff(b"ID3\x04"), Some("audio/mpeg"));
        assert_eq!(sniff(b"\xff\xfb\x90\x64"), Some("audio/mpeg"));
        assert_eq!(sniff(b"%PDF-1.7"), Some("application/pdf"));
        assert_eq!(sniff(b"PK\x03\x04"), Some("application/zip"));
        assert_eq!(sniff(b"OggS"), Some("audio/ogg"));
        assert_eq!(sniff(b"fLaC"), Some("audio/flac"));
        assert_eq!(sniff(b"<svg xmlns="), None);
        assert_eq!(sniff(b"<!doctype html>"), None);
        assert_eq!(sniff(b""), None);
    }

    #[test]
    fn declared_text_only_when_text() {
        assert_eq!(decide(None, Some("text/plain; charset=utf-8"), true), "text/plain");
        assert_eq!(decide(None, Some("TEXT/CSV"), true), "text/csv");
        assert_eq!(decide(None, Some("text/plain"), false), "application/octet-stream");
        assert_eq!(decide(None, Some("text/html"), true), "application/octet-stream");
        assert_eq!(decide(None, Some("image/svg+xml"), true), "application/octet-stream");
        assert_eq!(decide(Some("image/png"), Some("text/plain"), true), "image/png");
    }

    #[test]
    fn text_check_across_chunks() {
        let s = "héllo wörld ✓".as_bytes();
        for split in 0..s.len() {
            let mut t = TextCheck::default();
            t.feed(&s[..split]);
            t.feed(&s[split..]);
            assert!(t.finish(), "split at {split}");
        }
        let mut t = TextCheck::default();
        t.feed(b"abc\0");
        assert!(!t.finish());
        let mut t = TextCheck::default();
        t.feed(b"abc\xff");
        assert!(!t.finish());
        let mut t = TextCheck::default();
        t.feed("é".as_bytes().split_at(1).0);
        assert!(!t.finish());
    }
}
