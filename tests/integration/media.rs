//! Media API (spec §10, §11.2 upload buckets): every test body runs against the local backend
//! and against a real S3-protocol server (s3s-fs, SigV4 verified), over real HTTP.

use std::io::Cursor;
use std::time::Duration;

use crate::common::{TestApp, random_ip};
use alterego::config::MediaStorage;
use alterego::functions::rate_limit::Bucket;
use image::{DynamicImage, GenericImageView, ImageFormat, Rgb, RgbImage};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs each listed test body once per backend: `local::name` and `s3::name`.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(alterego::config::MediaStorage::Local).await;
                }
            )*
        }
        mod s3 {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(alterego::config::MediaStorage::S3).await;
                }
            )*
        }
    };
}

both_backends!(
    mikoto_client_shape,
    avatar_references,
    store_types_and_rules,
    store_size_limits,
    exif_is_removed,
    variants_are_sized_and_cached,
    conditional_and_range_requests,
    traversal_and_odd_names,
    default_avatars,
    decompression_bomb_is_refused,
    garbage_collection,
    streamed_upload_of_several_mib,
    anonymous_uploads_can_be_disabled,
    upload_rate_limits_and_byte_quota,
);

// ---------------------------------------------------------------------------------------------
// Fixtures.

fn encode(img: DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), format).expect("encode");
    out
}

/// A `w`×`h` RGB gradient.
fn gradient(w: u32, h: u32) -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| {
        Rgb([(x * 255 / w.max(1)) as u8, (y * 255 / h.max(1)) as u8, 128])
    }))
}

fn png(w: u32, h: u32) -> Vec<u8> {
    encode(gradient(w, h), ImageFormat::Png)
}

fn decode(bytes: &[u8]) -> DynamicImage {
    image::load_from_memory(bytes).expect("a decodable image")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = 0xffff_ffffu32;
    for &b in &out[start..] {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    out.extend_from_slice(&(!crc).to_be_bytes());
}

/// A PNG whose header claims `w`×`h` pixels, with a few bytes of (valid, tiny) zlib data.
fn bomb_png(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    // zlib: a stored block of 16 zero bytes; a real bomb would deflate gigabytes of zeros.
    let mut idat = vec![0x78, 0x01, 1, 16, 0, 0xef, 0xff];
    idat.extend_from_slice(&[0; 16]);
    idat.extend_from_slice(&[0, 0x10, 0, 1]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png_chunk(&mut png, b"IHDR", &ihdr);
    png_chunk(&mut png, b"IDAT", &idat);
    png_chunk(&mut png, b"IEND", &[]);
    png
}

/// A little-endian TIFF/EXIF block: IFD0 with Orientation = 6 (rotate 90° clockwise) and a
/// GPSInfo pointer to a GPS IFD holding GPSLatitudeRef "N" and a latitude marker.
fn exif_with_gps() -> Vec<u8> {
    let mut t = b"II*\0".to_vec();
    t.extend_from_slice(&8u32.to_le_bytes());
    // IFD0 at 8: two entries.
    t.extend_from_slice(&2u16.to_le_bytes());
    // Orientation, SHORT, 1, 6
    t.extend_from_slice(&0x0112u16.to_le_bytes());
    t.extend_from_slice(&3u16.to_le_bytes());
    t.extend_from_slice(&1u32.to_le_bytes());
    t.extend_from_slice(&[6, 0, 0, 0]);
    // GPSInfo, LONG, 1, offset of the GPS IFD (8 + 2 + 24 + 4 = 38)
    t.extend_from_slice(&0x8825u16.to_le_bytes());
    t.extend_from_slice(&4u16.to_le_bytes());
    t.extend_from_slice(&1u32.to_le_bytes());
    t.extend_from_slice(&38u32.to_le_bytes());
    t.extend_from_slice(&0u32.to_le_bytes());
    // GPS IFD at 38: GPSLatitudeRef "N", and GPSAreaInformation with a recognisable marker.
    let marker = b"GPSSECRET-52.5200N-13.4050E\0";
    let marker_offset = 38 + 2 + 2 * 12 + 4;
    t.extend_from_slice(&2u16.to_le_bytes());
    t.extend_from_slice(&0x0001u16.to_le_bytes());
    t.extend_from_slice(&2u16.to_le_bytes());
    t.extend_from_slice(&2u32.to_le_bytes());
    t.extend_from_slice(b"N\0\0\0");
    t.extend_from_slice(&0x001cu16.to_le_bytes());
    t.extend_from_slice(&7u16.to_le_bytes());
    t.extend_from_slice(&(marker.len() as u32).to_le_bytes());
    t.extend_from_slice(&(marker_offset as u32).to_le_bytes());
    t.extend_from_slice(&0u32.to_le_bytes());
    t.extend_from_slice(marker);
    t
}

/// A 40×20 JPEG with an APP1 EXIF segment (orientation 6 and GPS data) right after SOI.
fn jpeg_with_gps_exif() -> Vec<u8> {
    let plain = encode(gradient(40, 20), ImageFormat::Jpeg);
    let mut payload = b"Exif\0\0".to_vec();
    payload.extend_from_slice(&exif_with_gps());
    let mut out = plain[..2].to_vec();
    out.extend_from_slice(&[0xff, 0xe1]);
    out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&plain[2..]);
    out
}

/// The JPEG markers present before the image data.
fn jpeg_markers(bytes: &[u8]) -> Vec<u8> {
    let mut markers = Vec::new();
    let mut i = 2;
    while i + 4 <= bytes.len() && bytes[i] == 0xff {
        let marker = bytes[i + 1];
        markers.push(marker);
        if marker == 0xda {
            break;
        }
        let len = u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]) as usize;
        i += 2 + len;
    }
    markers
}

fn url_of(r: &crate::common::Resp) -> String {
    r.body["url"].as_str().expect("url").to_string()
}

/// The resident set size of this process (the test server runs in it), in bytes.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

// ---------------------------------------------------------------------------------------------
// Tests.

/// The Mikoto web client's request (field `file`, no token) gets `{url:"avatar/<name>.png"}`,
/// the object serves with the §10.5 headers, and `?w=64&h=64` is a 64×64 PNG.
async fn mikoto_client_shape(storage: MediaStorage) {
    let app = TestApp::builder().media(storage).spawn().await;
    let r = app.upload("avatar", None, "me.jpg", "image/jpeg", png(300, 200)).await;
    r.expect(200, None);
    let url = url_of(&r);
    let name = url.strip_prefix("avatar/").expect("relative avatar url");
    assert!(name.ends_with(".png"), "{url}");
    assert_eq!(name.len(), 22 + 4, "{url}");
    assert_eq!(r.body["contentType"], "image/png");
    assert_eq!(r.header("x-ratelimit-bucket"), Some("upload-anonymous"));

    let got = app.get_raw(&format!("/media/{url}"), &[]).await;
    assert_eq!(got.status, 200);
    assert_eq!(r.body["size"].as_u64(), Some(got.bytes.len() as u64));
    assert_eq!(got.header("content-type"), Some("image/png"));
    assert_eq!(got.header("content-length"), Some(got.bytes.len().to_string().as_str()));
    assert_eq!(got.header("cache-control"), Some("public, max-age=31536000, immutable"));
    assert_eq!(got.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(
        got.header("content-security-policy"),
        Some("default-src 'none'; sandbox")
    );
    assert_eq!(got.header("cross-origin-resource-policy"), Some("cross-origin"));
    let etag = got.header("etag").expect("etag");
    assert!(etag.starts_with('"') && !etag.starts_with("W/"), "{etag}");
    assert!(got.header("content-disposition").is_none());
    assert_eq!(decode(&got.bytes).dimensions(), (512, 512));

    let small = app.get_raw(&format!("/media/{url}?w=64&h=64"), &[]).await;
    assert_eq!(small.status, 200);
    assert_eq!(small.header("content-type"), Some("image/png"));
    assert_eq!(image::guess_format(&small.bytes).expect("format"), ImageFormat::Png);
    assert_eq!(decode(&small.bytes).dimensions(), (64, 64));
    assert_ne!(small.header("etag"), Some(etag));

    // The info route, with and without the trailing slash.
    for path in ["/media", "/media/"] {
        let info = app.get(path, None).await;
        info.expect(200, None);
        assert_eq!(info.body["name"], "media-server");
        assert!(info.body["version"].is_string());
    }
}

/// `user.update` accepts an uploaded avatar (relative or absolute) and refuses anything else
/// with 400 `InvalidMediaReference`; the reference claims the object.
async fn avatar_references(storage: MediaStorage) {
    let app = TestApp::builder().media(storage).spawn().await;
    let user = app.register("Avatar Owner").await;
    let token = Some(user.access.as_str());
    let url = url_of(
        app.upload("avatar", token, "a.png", "image/png", png(64, 64))
            .await
            .expect(200, None),
    );
    let r = app.patch("/users/me", token, json!({"avatar": url})).await;
    r.expect(200, None);
    assert_eq!(r.body["avatar"], url.as_str());
    let claimed: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT claimed_at FROM media_objects WHERE key = $1")
            .bind(&url)
            .fetch_one(app.db())
            .await
            .expect("index row");
    assert!(claimed.is_some(), "the avatar is claimed");
    let uploader: Option<uuid::Uuid> = sqlx::query_scalar("SELECT uploader_id FROM media_objects WHERE key = $1")
        .bind(&url)
        .fetch_one(app.db())
        .await
        .expect("index row");
    assert_eq!(uploader.map(|u| u.to_string()), Some(user.id.clone()));

    // The absolute form under MEDIA_PUBLIC_URL is stored relative.
    let absolute = format!("http://alterego.test/media/{url}");
    let r = app.patch("/users/me", token, json!({"avatar": absolute})).await;
    r.expect(200, None);
    assert_eq!(r.body["avatar"], url.as_str());

    let attachment = url_of(
        app.upload("attachment", token, "a.png", "image/png", png(8, 8))
            .await
            .expect(200, None),
    );
    let other_store = attachment.replacen("attachment/", "avatar/", 1);
    for bad in [
        "https://evil.example/avatar/x.png".to_string(),
        "avatar/AAAAAAAAAAAAAAAAAAAAAA.png".to_string(),
        attachment.clone(),
        other_store,
        format!("/{url}"),
        format!("{url}/x"),
        "avatar/../attachment/x.png".to_string(),
    ] {
        let r = app.patch("/users/me", token, json!({"avatar": bad})).await;
        r.expect(400, Some("InvalidMediaReference"));
        assert_eq!(r.body["field"], "avatar", "{bad}");
    }
    // Nothing changed, and null clears.
    let me = app.get("/users/me", token).await;
    assert_eq!(me.body["avatar"], url.as_str());
    let r = app.patch("/users/me", token, json!({"avatar": null})).await;
    r.expect(200, None);
    assert!(r.body["avatar"].is_null());

    // An object that predates alterego (in the backend, no index row) may be referenced.
    let legacy = "avatar/legacyMikotoObject01.png";
    app.state
        .media
        .put(
            legacy,
            alterego::functions::media::Payload::Bytes(png(16, 16).into()),
            "image/png",
        )
        .await
        .expect("put legacy object");
    let r = app.patch("/users/me", token, json!({"avatar": legacy})).await;
    r.expect(200, None);
    let served = app.get_raw(&format!("/media/{legacy}"), &[]).await;
    assert_eq!(served.status, 200);
    assert_eq!(served.header("content-type"), Some("image/png"));
}

/// Type rules per store (spec §10.2, §10.3, §10.5).
async fn store_types_and_rules(storage: MediaStorage) {
    let app = TestApp::builder().media(storage).spawn().await;

    // Avatars and space icons: images only, normalised to 512×512 PNG.
    for store in ["avatar", "spaceicon"] {
        let r = app
            .upload(store, None, "x.png", "image/png", b"just text".to_vec())
            .await;
        r.expect(415, Some("UnsupportedFileType"));
        let r = app
            .upload(store, None, "x.png", "image/png", b"\x89PNG\r\n\x1a\nbroken".to_vec())
            .await;
        r.expect(415, Some("UnsupportedFileType"));
        let gif = encode(gradient(30, 10), ImageFormat::Gif);
        let r = app.upload(store, None, "x.gif", "image/gif", gif).await;
        r.expect(200, None);
        let url = url_of(&r);
        assert!(url.starts_with(&format!("{store}/")) && url.ends_with(".png"));
        let got = app.get_raw(&format!("/media/{url}"), &[]).await;
        assert_eq!(decode(&got.bytes).dimensions(), (512, 512));
    }
    let webp = encode(DynamicImage::ImageRgba8(gradient(20, 40).to_rgba8()), ImageFormat::WebP);
    let r = app
        .upload("spaceicon", None, "i.webp", "image/webp", webp.clone())
        .await;
    r.expect(200, None);

    // Attachments: the sniffed type decides, never the declared one or the name.
    let cases: Vec<(&str, &str, Vec<u8>, &str, &str)> = vec![
        (
            "notes.txt",
            "text/plain",
            "héllo\n".as_bytes().to_vec(),
            "text/plain",
            "txt",
        ),
        (
            "doc.md",
            "text/markdown; charset=utf-8",
            b"# Title\n".to_vec(),
            "text/markdown",
            "md",
        ),
        ("d.csv", "text/csv", b"a,b\n1,2\n".to_vec(), "text/csv", "csv"),
        (
            "d.json",
            "application/json",
            b"{\"a\":1}".to_vec(),
            "application/json",
            "json",
        ),
        (
            "x.txt",
            "text/plain",
            b"bin\0ary".to_vec(),
            "application/octet-stream",
            "bin",
        ),
        (
            "page.html",
            "text/html",
            b"<html><script>alert(1)</script>".to_vec(),
            "application/octet-stream",
            "bin",
        ),
        (
            "pic.svg",
            "image/svg+xml",
            b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>".to_vec(),
            "application/octet-stream",
            "bin",
        ),
        (
            "fake.png",
            "image/png",
            b"not a png at all".to_vec(),
            "application/octet-stream",
            "bin",
        ),
        (
            "x.bin",
            "application/octet-stream",
            b"%PDF-1.7\n%...".to_vec(),
            "application/pdf",
            "pdf",
        ),
        (
            "x.txt",
            "text/plain",
            b"PK\x03\x04zipdata".to_vec(),
            "application/zip",
            "zip",
        ),
        (
            "v.mp4",
            "video/mp4",
            b"\0\0\0\x18ftypisom\0\0\0\0isomavc1".to_vec(),
            "video/mp4",
            "mp4",
        ),
        (
            "s.mp3",
            "audio/mpeg",
            b"ID3\x04\0\0\0\0\0\0".to_vec(),
            "audio/mpeg",
            "mp3",
        ),
        (
            "a.gif",
            "application/octet-stream",
            encode(gradient(8, 8), ImageFormat::Gif),
            "image/gif",
            "gif",
        ),
        ("w.webp", "image/webp", webp, "image/webp", "webp"),
        ("p.png", "image/png", png(10, 10), "image/png", "png"),
    ];
    for (filename, declared, bytes, expected, ext) in cases {
        let gif_original = (expected == "image/gif").then(|| bytes.clone());
        let r = app.upload("attachment", None, filename, declared, bytes).await;
        r.expect(200, None);
        let url = url_of(&r);
        assert_eq!(r.body["contentType"], expected, "{filename} ({declared})");
        assert!(url.ends_with(&format!(".{ext}")), "{url}");
        let got = app.get_raw(&format!("/media/{url}"), &[]).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.header("content-type"), Some(expected));
        let inline = matches!(
            expected,
            "image/png" | "image/jpeg" | "image/gif" | "image/webp" | "video/mp4" | "audio/mpeg" | "text/plain"
        );
        match got.header("content-disposition") {
            None => assert!(inline, "{expected} must be an attachment"),
            Some(d) => {
                assert!(!inline, "{expected} must be inline");
                assert_eq!(d, format!("attachment; filename*=UTF-8''{filename}"));
            }
        }
        if let Some(original) = gif_original {
            assert_eq!(got.bytes, original, "GIF stored byte-for-byte");
        }
    }

    // A filename with odd characters is sanitised and percent-encoded.
    let r = app
        .upload(
            "attachment",
            None,
            "../../dir/naïve report.pdf",
            "application/pdf",
            b"%PDF-1.4 x".to_vec(),
        )
        .await;
    r.expect(200, None);
    let got = app.get_raw(&format!("/media/{}", url_of(&r)), &[]).await;
    assert_eq!(
        got.header("content-disposition"),
        Some("attachment; filename*=UTF-8''na%C3%AFve%20report.pdf")
    );

    // Request shape errors.
    let not_multipart = app
        .http
        .post(app.url("/media/attachment"))
        .header("x-forwarded-for", random_ip())
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("send");
    TestApp::read(not_multipart)
        .await
        .expect(415, Some("UnsupportedMediaType"));
    let no_file = app
        .http
        .post(app.url("/media/attachment"))
        .header("x-forwarded-for", random_ip())
        .multipart(reqwest::multipart::Form::new().text("file", "no filename"))
        .send()
        .await
        .expect("send");
    TestApp::read(no_file).await.expect(400, Some("ValidationFailed"));
    let broken = app
        .http
        .post(app.url("/media/attachment"))
        .header("x-forwarded-for", random_ip())
        .header("content-type", "multipart/form-data; boundary=XYZ")
        .body("--XYZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\ntruncated")
        .send()
        .await
        .expect("send");
    TestApp::read(broken).await.expect(400, Some("ValidationFailed"));
    for store in ["default-avatar", "variants", "other"] {
        app.upload(store, None, "a.txt", "text/plain", b"x".to_vec())
            .await
            .expect(404, Some("NotFound"));
    }
    // GET on the upload path is a known path with another method.
    app.get("/media/avatar", None)
        .await
        .expect(405, Some("MethodNotAllowed"));
}

/// Each store's configured limit: 413 `PayloadTooLarge` past it (spec §10.3, §13).
async fn store_size_limits(storage: MediaStorage) {
    let app = TestApp::builder()
        .media(storage)
        .config(|c| {
            c.media_max_avatar_bytes = 20_000;
            c.media_max_spaceicon_bytes = 30_000;
            c.media_max_attachment_bytes = 100_000;
        })
        .spawn()
        .await;
    let noise = |n: usize| -> Vec<u8> { (0..n).map(|i| (i * 7919 % 251) as u8).collect() };
    // A PNG of noise (incompressible, about 43 KB) is past the avatar and space-icon limits
    // and within the attachment limit.
    let hash = |x: u32, y: u32, c: u32| {
        ((x.wrapping_mul(73_856_093) ^ y.wrapping_mul(19_349_663) ^ c.wrapping_mul(83_492_791))
            .wrapping_mul(2_654_435_761)
            >> 24) as u8
    };
    let big_png = encode(
        DynamicImage::ImageRgb8(RgbImage::from_fn(120, 120, |x, y| {
            Rgb([hash(x, y, 0), hash(x, y, 1), hash(x, y, 2)])
        })),
        ImageFormat::Png,
    );
    assert!(
        (30_000..100_000).contains(&big_png.len()),
        "fixture size {}",
        big_png.len()
    );
    app.upload("avatar", None, "big.png", "image/png", big_png.clone())
        .await
        .expect(413, Some("PayloadTooLarge"));
    app.upload("spaceicon", None, "big.png", "image/png", big_png.clone())
        .await
        .expect(413, Some("PayloadTooLarge"));
    app.upload("attachment", None, "big.png", "image/png", big_png)
        .await
        .expect(200, None);
    // Exactly the limit passes; one byte more does not, even inside the multipart overhead.
    app.upload("attachment", None, "a.bin", "application/octet-stream", noise(100_000))
        .await
        .expect(200, None);
    app.upload("attachment", None, "a.bin", "application/octet-stream", noise(100_001))
        .await
        .expect(413, Some("PayloadTooLarge"));
    // A body far past the limit is cut off while streaming (no Content-Length).
    let chunks = futures_util::stream::iter((0..64).map(|_| Ok::<Vec<u8>, std::io::Error>(vec![b'x'; 16 * 1024])));
    let part = reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(chunks))
        .file_name("big.txt")
        .mime_str("text/plain")
        .expect("mime");
    let res = app
        .http
        .post(app.url("/media/attachment"))
        .header("x-forwarded-for", random_ip())
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await;
    // The server may answer before the client has sent everything.
    if let Ok(res) = res {
        TestApp::read(res).await.expect(413, Some("PayloadTooLarge"));
    }
    // A declared Content-Length past the limit is refused before reading.
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.expect("tcp");
    stream
        .write_all(
            format!(
                "POST /media/avatar HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: {}\r\n\
                 Content-Type: multipart/form-data; boundary=B\r\nContent-Length: 999999999\r\n\
                 Connection: close\r\n\r\n--B\r\n",
                random_ip()
            )
            .as_bytes(),
        )
        .await
        .expect("write");
    let mut head = vec![0u8; 12];
    stream.read_exact(&mut head).await.expect("read");
    assert_eq!(&head, b"HTTP/1.1 413");
}

/// JPEG EXIF (GPS included) is really removed, and the orientation applied (spec §10.2).
async fn exif_is_removed(storage: MediaStorage) {
    let app = TestApp::builder().media(storage).spawn().await;
    let original = jpeg_with_gps_exif();
    assert!(contains(&original, b"GPSSECRET"));
    assert!(jpeg_markers(&original).contains(&0xe1));
    // The fixture really carries orientation 6 as the decoder sees it.
    {
        use image::ImageDecoder;
        let mut d = image::codecs::jpeg::JpegDecoder::new(Cursor::new(&original)).expect("jpeg");
        assert_eq!(
            d.orientation().expect("orientation"),
            image::metadata::Orientation::Rotate90
        );
    }

    let r = app
        .upload("attachment", None, "holiday.jpg", "image/jpeg", original.clone())
        .await;
    r.expect(200, None);
    assert_eq!(r.body["contentType"], "image/jpeg");
    let url = url_of(&r);
    assert!(url.ends_with(".jpg"));
    let got = app.get_raw(&format!("/media/{url}"), &[]).await;
    assert_eq!(got.status, 200);
    assert_eq!(&got.bytes[..2], b"\xff\xd8");
    let markers = jpeg_markers(&got.bytes);
    assert!(!markers.contains(&0xe1), "no APP1 segment: {markers:x?}");
    assert!(!contains(&got.bytes, b"Exif"));
    assert!(!contains(&got.bytes, b"GPSSECRET"));
    // Rotated by the orientation: 40×20 becomes 20×40.
    assert_eq!(decode(&got.bytes).dimensions(), (20, 40));

    // As an avatar: a PNG without metadata chunks.
    let r = app.upload("avatar", None, "me.jpg", "image/jpeg", original).await;
    r.expect(200, None);
    let got = app.get_raw(&format!("/media/{}", url_of(&r)), &[]).await;
    assert!(!contains(&got.bytes, b"eXIf"));
    assert!(!contains(&got.bytes, b"Exif"));
    assert!(!contains(&got.bytes, b"GPSSECRET"));

    // A PNG with an eXIf chunk and text chunks loses them on re-encoding.
    let mut tagged = png(12, 12);
    let iend = tagged.len() - 12;
    let mut extra = Vec::new();
    png_chunk(&mut extra, b"tEXt", b"Comment\0GPSSECRET in a PNG");
    png_chunk(&mut extra, b"eXIf", &exif_with_gps());
    tagged.splice(iend..iend, extra);
    assert!(contains(&tagged, b"GPSSECRET"));
    let r = app.upload("attachment", None, "t.png", "image/png", tagged).await;
    r.expect(200, None);
    let got = app.get_raw(&format!("/media/{}", url_of(&r)), &[]).await;
    assert!(!contains(&got.bytes, b"GPSSECRET"));
    assert!(!contains(&got.bytes, b"eXIf"));
    assert!(!contains(&got.bytes, b"tEXt"));
}

/// Variants: fitted, never upscaled, PNG, cached in the backend; only new ones count in
/// `media-resize` (spec §10.5, §11.2).
async fn variants_are_sized_and_cached(storage: MediaStorage) {
    let app = TestApp::builder().media(storage).spawn().await;
    let r = app
        .upload("attachment", None, "wide.png", "image/png", png(300, 150))
        .await;
    r.expect(200, None);
    let url = url_of(&r);
    let ip = random_ip();
    let fetch = |q: &'static str| {
        let path = format!("/media/{url}{q}");
        let ip = ip.clone();
        let app = &app;
        async move { app.get_raw(&path, &[("x-forwarded-for", &ip)]).await }
    };

    let started = std::time::Instant::now();
    let first = fetch("?w=64&h=64").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("content-type"), Some("image/png"));
    assert_eq!(decode(&first.bytes).dimensions(), (64, 32));
    assert_eq!(first.header("x-ratelimit-bucket"), Some("media-resize"));
    assert_eq!(first.header("x-ratelimit-remaining"), Some("59"));
    let variant_key = format!("variants/{url}/64x64.png");
    assert!(app.media_has(&variant_key).await, "variant cached in the backend");

    // Served from the cache: same bytes and ETag, not counted.
    let second = fetch("?w=64&h=64").await;
    assert_eq!(second.status, 200);
    assert_eq!(second.bytes, first.bytes);
    assert_eq!(second.header("etag"), first.header("etag"));
    assert!(second.header("x-ratelimit-bucket").is_none());
    assert_eq!(
        second.header("content-length"),
        Some(first.bytes.len().to_string().as_str())
    );
    let third = fetch("?w=100&h=10").await;
    assert_eq!(decode(&third.bytes).dimensions(), (20, 10));
    // The bucket refills one request per second; within that, two generations leave 58.
    if started.elapsed() < Duration::from_millis(900) {
        assert_eq!(
            third.header("x-ratelimit-remaining"),
            Some("58"),
            "the cached fetch did not count"
        );
    }

    // Clamped to 1024 and never upscaled; one parameter alone or a non-integer is ignored.
    let big = fetch("?w=5000&h=2000").await;
    assert_eq!(decode(&big.bytes).dimensions(), (300, 150));
    assert!(app.media_has(&format!("variants/{url}/1024x1024.png")).await);
    let tiny = fetch("?w=0&h=-3").await;
    assert_eq!(decode(&tiny.bytes).dimensions(), (1, 1));
    let original = fetch("").await;
    for q in ["?w=64", "?h=64", "?w=64&h=abc", "?w=6.5&h=7"] {
        let r = fetch(q).await;
        assert_eq!(r.bytes, original.bytes, "{q}");
        assert_eq!(r.header("etag"), original.header("etag"), "{q}");
    }

    // Non-images ignore the parameters.
    let text = app
        .upload("attachment", None, "t.txt", "text/plain", b"hello".to_vec())
        .await;
    let got = app.get_raw(&format!("/media/{}?w=10&h=10", url_of(&text)), &[]).await;
    assert_eq!(got.bytes, b"hello");

    // An exhausted media-resize bucket refuses new variants but still serves cached ones.
    let limited = random_ip();
    for _ in 0..60 {
        app.state.limiter.check(Bucket::MediaResize, &limited, 1).await;
    }
    let refused = app
        .get_raw(&format!("/media/{url}?w=33&h=33"), &[("x-forwarded-for", &limited)])
        .await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.json()["code"], "RateLimited");
    assert!(refused.header("retry-after").is_some());
    let cached = app
        .get_raw(&format!("/media/{url}?w=64&h=64"), &[("x-forwarded-for", &limited)])
        .await;
    assert_eq!(cached.status, 200);
}

/// `If-None-Match` gives 304; a single `Range` gives 206; other forms the full content.
async fn conditional_and_range_requests(storage: MediaStorage) {
    let app = TestApp::builder().media(storage).spawn().await;
    let content: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    let r = app
        .upload("attachment", None, "d.bin", "application/octet-stream", content.clone())
        .await;
    r.expect(200, None);
    let path = format!("/media/{}", url_of(&r));
    let full = app.get_raw(&path, &[]).await;
    assert_eq!(full.bytes, content);
    assert_eq!(full.header("accept-ranges"), Some("bytes"));
    let etag = full.header("etag").expect("etag").to_string();

    let nm = app.get_raw(&path, &[("if-none-match", &etag)]).await;
    assert_eq!(nm.status, 304);
    assert!(nm.bytes.is_empty());
    assert_eq!(nm.header("etag"), Some(etag.as_str()));
    assert_eq!(nm.header("cache-control"), Some("public, max-age=31536000, immutable"));
    let listed = format!("\"other\", W/{etag}");
    assert_eq!(app.get_raw(&path, &[("if-none-match", &listed)]).await.status, 304);
    assert_eq!(app.get_raw(&path, &[("if-none-match", "\"other\"")]).await.status, 200);

    let cases: [(&str, u16, std::ops::Range<usize>); 7] = [
        ("bytes=0-9", 206, 0..10),
        ("bytes=990-", 206, 990..1000),
        ("bytes=-5", 206, 995..1000),
        ("bytes=500-20000", 206, 500..1000),
        ("bytes=0-1,5-6", 200, 0..1000),
        ("bytes=1000-", 200, 0..1000),
        ("lines=1-2", 200, 0..1000),
    ];
    for (range, status, expected) in cases {
        let got = app.get_raw(&path, &[("range", range)]).await;
        assert_eq!(got.status, status, "{range}");
        assert_eq!(got.bytes, &content[expected.clone()], "{range}");
        if status == 206 {
            assert_eq!(
                got.header("content-range"),
                Some(format!("bytes {}-{}/1000", expected.start, expected.end - 1).as_str())
            );
            assert_eq!(got.header("content-length"), Some(expected.len().to_string().as_str()));
        }
    }
    // If-Range with another validator: the full content.
    let got = app
        .get_raw(&path, &[("range", "bytes=0-9"), ("if-range", "\"stale\"")])
        .await;
    assert_eq!(got.status, 200);
    let got = app.get_raw(&path, &[("range", "bytes=0-9"), ("if-range", &etag)]).await;
    assert_eq!(got.status, 206);

    // Variants have their own ETag and honour both too.
    let img = app.upload("attachment", None, "p.png", "image/png", png(40, 40)).await;
    let vpath = format!("/media/{}?w=20&h=20", url_of(&img));
    let v = app.get_raw(&vpath, &[]).await;
    let vetag = v.header("etag").expect("etag").to_string();
    assert_eq!(app.get_raw(&vpath, &[("if-none-match", &vetag)]).await.status, 304);
    let part = app.get_raw(&vpath, &[("range", "bytes=0-7")]).await;
    assert_eq!(part.status, 206);
    assert_eq!(part.bytes, &v.bytes[..8]);
}

/// Traversal attempts, unknown stores and names outside the pattern are 404 (spec §10.1).
async fn traversal_and_odd_names(storage: MediaStorage) {
    let app = TestApp::builder().media(storage).spawn().await;
    // A real file next to the media directory that traversal would reach.
    std::fs::write(app.media.local_dir.path().join("secret.txt"), "secret").expect("write");
    let r = app.upload("avatar", None, "a.png", "image/png", png(8, 8)).await;
    let url = url_of(&r);
    let name = url.strip_prefix("avatar/").expect("avatar url");
    let stem = name.strip_suffix(".png").expect("png");
    for path in [
        "/media/avatar/..%2Fsecret.txt".to_string(),
        "/media/avatar/..%2F..%2Fsecret.txt".to_string(),
        "/media/avatar/%2e%2e%2fsecret.txt".to_string(),
        "/media/avatar/..%5csecret.txt".to_string(),
        "/media/avatar/.png".to_string(),
        "/media/avatar/a..png".to_string(),
        format!("/media/avatar/{stem}.PNG"),
        format!("/media/avatar/{stem}.png.png"),
        format!("/media/avatar/{}", "a".repeat(65)),
        "/media/avatar/a.123456789".to_string(),
        "/media/avatar/a%20b.png".to_string(),
        "/media/avatar/AAAAAAAAAAAAAAAAAAAAAA.png".to_string(),
        format!("/media/attachment/{name}"),
        format!("/media/spaceicons/{name}"),
        format!("/media/variants/avatar/{name}"),
        format!("/media/{name}"),
        "/media/.tmp/x".to_string(),
        "/media/default-avatar/a_b".to_string(),
        "/media/default-avatar/a.png".to_string(),
        format!("/media/default-avatar/{}", "a".repeat(65)),
    ] {
        let got = app.get_raw(&path, &[]).await;
        assert_eq!(got.status, 404, "{path}");
        assert_eq!(got.json()["code"], "NotFound", "{path}");
    }
    // NUL is refused at the edge, before any route (spec §13).
    let got = app.get_raw("/media/avatar/%00.png", &[]).await;
    assert_eq!(
        (got.status, got.json()["code"].as_str()),
        (400, Some("ValidationFailed"))
    );
    // Literal dot segments (clients normally resolve them; send them raw).
    for raw in [
        "/media/avatar/../../secret.txt",
        "/media/avatar/../avatar/x.png",
        "/media/../secret.txt",
        "/media/avatar/./x.png",
    ] {
        let mut stream = tokio::net::TcpStream::connect(app.addr).await.expect("tcp");
        stream
            .write_all(format!("GET {raw} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.expect("read");
        let text = String::from_utf8_lossy(&response);
        assert!(text.starts_with("HTTP/1.1 404"), "{raw}: {text}");
        assert!(!text.contains("secret"), "{raw}");
    }
    // The real object is still served.
    assert_eq!(app.get_raw(&format!("/media/{url}"), &[]).await.status, 200);
}

/// Default avatars: deterministic 256×256 PNG identicons with the media headers (spec §10.6).
async fn default_avatars(storage: MediaStorage) {
    let app = TestApp::builder().media(storage).spawn().await;
    let id = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
    let path = format!("/media/default-avatar/{id}");
    let a = app.get_raw(&path, &[]).await;
    let b = app.get_raw(&path, &[]).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-type"), Some("image/png"));
    assert_eq!(a.bytes, b.bytes, "byte-identical");
    assert_eq!(a.header("etag"), b.header("etag"));
    assert_eq!(a.header("cache-control"), Some("public, max-age=31536000, immutable"));
    assert_eq!(a.header("content-security-policy"), Some("default-src 'none'; sandbox"));
    let img = decode(&a.bytes);
    assert_eq!(img.dimensions(), (256, 256));
    // The expected bytes for this id are fixed for the release (and should stay so).
    let digest = hex(&Sha256::digest(&a.bytes));
    assert_eq!(
        digest,
        hex(&Sha256::digest(alterego::functions::images::identicon(id, 256)))
    );
    let other = app.get_raw("/media/default-avatar/someone-else", &[]).await;
    assert_ne!(other.bytes, a.bytes);

    let small = app.get_raw(&format!("{path}?w=64&h=64"), &[]).await;
    assert_eq!(decode(&small.bytes).dimensions(), (64, 64));
    assert_ne!(small.header("etag"), a.header("etag"));
    let big = app.get_raw(&format!("{path}?w=1024&h=512"), &[]).await;
    assert_eq!(decode(&big.bytes).dimensions(), (256, 256), "never upscaled");

    let etag = a.header("etag").expect("etag");
    let nm = app.get_raw(&path, &[("if-none-match", etag)]).await;
    assert_eq!(nm.status, 304);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A decompression bomb is refused from its header, before any pixel buffer (spec §10.2).
async fn decompression_bomb_is_refused(storage: MediaStorage) {
    let app = TestApp::builder().media(storage).spawn().await;
    let bomb = bomb_png(60_000, 60_000);
    assert!(bomb.len() < 200);
    let before = rss_bytes();
    for store in ["avatar", "spaceicon", "attachment"] {
        let r = app.upload(store, None, "bomb.png", "image/png", bomb.clone()).await;
        r.expect(400, Some("ValidationFailed"));
        assert_eq!(r.body["field"], "file");
    }
    // Under the side cap but over 40 megapixels.
    app.upload("attachment", None, "wide.png", "image/png", bomb_png(16_000, 3_000))
        .await
        .expect(400, Some("ValidationFailed"));
    // The same caps guard GIF and WebP attachments, which are stored without decoding.
    let mut gif = encode(gradient(4, 4), ImageFormat::Gif);
    gif[6..8].copy_from_slice(&60_000u16.to_le_bytes());
    gif[8..10].copy_from_slice(&60_000u16.to_le_bytes());
    app.upload("attachment", None, "bomb.gif", "image/gif", gif)
        .await
        .expect(400, Some("ValidationFailed"));
    let grown = rss_bytes().saturating_sub(before);
    assert!(grown < 100 * 1024 * 1024, "memory grew by {} MiB", grown / 1024 / 1024);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM media_objects")
        .fetch_one(app.db())
        .await
        .expect("count");
    assert_eq!(rows, 0, "nothing was stored");
}

/// GC deletes unclaimed uploads past the grace, with their variants and rows, and keeps
/// claimed ones (spec §10.8).
async fn garbage_collection(storage: MediaStorage) {
    let app = TestApp::builder().media(storage).spawn().await;
    let user = app.register("Collector").await;
    let token = Some(user.access.as_str());
    let unclaimed = url_of(
        app.upload("avatar", token, "a.png", "image/png", png(32, 32))
            .await
            .expect(200, None),
    );
    let claimed = url_of(
        app.upload("avatar", token, "b.png", "image/png", png(32, 32))
            .await
            .expect(200, None),
    );
    app.patch("/users/me", token, json!({"avatar": claimed}))
        .await
        .expect(200, None);
    for url in [&unclaimed, &claimed] {
        let v = app.get_raw(&format!("/media/{url}?w=16&h=16"), &[]).await;
        assert_eq!(v.status, 200);
        assert!(app.media_has(&format!("variants/{url}/16x16.png")).await);
    }

    // Within the grace nothing goes.
    let report = alterego::entities::media::collect_garbage(app.db(), &app.state.media, Duration::from_secs(3600))
        .await
        .expect("gc");
    assert_eq!(report.deleted, 0);
    assert!(app.media_has(&unclaimed).await);

    let report = alterego::entities::media::collect_garbage(app.db(), &app.state.media, Duration::ZERO)
        .await
        .expect("gc");
    assert_eq!(report.deleted, 1);
    assert_eq!(report.failed, 0);
    assert!(!app.media_has(&unclaimed).await);
    assert!(!app.media_has(&format!("variants/{unclaimed}/16x16.png")).await);
    assert_eq!(app.get_raw(&format!("/media/{unclaimed}"), &[]).await.status, 404);
    let row: Option<String> = sqlx::query_scalar("SELECT key FROM media_objects WHERE key = $1")
        .bind(&unclaimed)
        .fetch_optional(app.db())
        .await
        .expect("query");
    assert!(row.is_none());
    // A deleted object can no longer be referenced.
    app.patch("/users/me", token, json!({"avatar": unclaimed}))
        .await
        .expect(400, Some("InvalidMediaReference"));

    assert!(app.media_has(&claimed).await);
    assert!(app.media_has(&format!("variants/{claimed}/16x16.png")).await);
    assert_eq!(app.get_raw(&format!("/media/{claimed}"), &[]).await.status, 200);
}

/// A streamed (chunked, no Content-Length) upload of several MiB arrives intact.
async fn streamed_upload_of_several_mib(storage: MediaStorage) {
    let app = TestApp::builder().media(storage).spawn().await;
    let total = 6 * 1024 * 1024 + 12_345;
    let content: Vec<u8> = (0..total)
        .map(|i: usize| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let expected = Sha256::digest(&content);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = content.chunks(256 * 1024).map(|c| Ok(c.to_vec())).collect();
    let part = reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .file_name("big.dat")
        .mime_str("application/octet-stream")
        .expect("mime");
    let user = app.register("Streamer").await;
    let res = app
        .http
        .post(app.url("/media/attachment"))
        .header("x-forwarded-for", random_ip())
        .bearer_auth(&user.access)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .expect("upload");
    let r = TestApp::read(res).await;
    r.expect(200, None);
    assert_eq!(r.body["size"].as_u64(), Some(total as u64));
    assert_eq!(r.body["contentType"], "application/octet-stream");
    assert_eq!(r.header("x-ratelimit-bucket"), Some("upload"));
    let url = url_of(&r);
    let got = app.get_raw(&format!("/media/{url}"), &[]).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.bytes.len(), total);
    assert_eq!(Sha256::digest(&got.bytes), expected);
    let tail = app.get_raw(&format!("/media/{url}"), &[("range", "bytes=-1000")]).await;
    assert_eq!(tail.status, 206);
    assert_eq!(tail.bytes, &content[total - 1000..]);
}

/// `MEDIA_ANONYMOUS_UPLOADS=false`: uploads without a valid token get 401 (spec §10.3).
async fn anonymous_uploads_can_be_disabled(storage: MediaStorage) {
    let app = TestApp::builder()
        .media(storage)
        .config(|c| c.media_anonymous_uploads = false)
        .spawn()
        .await;
    app.upload("avatar", None, "a.png", "image/png", png(8, 8))
        .await
        .expect(401, Some("Unauthorized"));
    app.upload("avatar", Some("not-a-token"), "a.png", "image/png", png(8, 8))
        .await
        .expect(401, Some("Unauthorized"));
    let user = app.register("Signed In").await;
    let r = app
        .upload("avatar", Some(&user.access), "a.png", "image/png", png(8, 8))
        .await;
    r.expect(200, None);
    assert_eq!(r.header("x-ratelimit-bucket"), Some("upload"));
}

/// `upload-anonymous` per IP: 10 requests per minute and a byte quota (spec §11.2).
async fn upload_rate_limits_and_byte_quota(storage: MediaStorage) {
    let app = TestApp::builder().media(storage).spawn().await;
    let ip = random_ip();
    for i in 0..10 {
        let r = app
            .upload_from(&ip, "attachment", None, "a.txt", "text/plain", b"x".to_vec())
            .await;
        r.expect(200, None);
        assert_eq!(r.header("x-ratelimit-bucket"), Some("upload-anonymous"));
        assert_eq!(r.header("x-ratelimit-remaining"), Some((9 - i).to_string().as_str()));
    }
    let r = app
        .upload_from(&ip, "attachment", None, "a.txt", "text/plain", b"x".to_vec())
        .await;
    r.expect(429, Some("RateLimited"));
    assert!(r.header("retry-after").is_some());
    assert_eq!(r.header("x-ratelimit-bucket"), Some("upload-anonymous"));

    // The byte quota: a client that has nearly used its 200 MiB is refused a larger upload.
    let heavy = random_ip();
    let d = app
        .state
        .limiter
        .check(Bucket::UploadAnonymousBytes, &heavy, 200 * 1024 * 1024 - 1000)
        .await;
    assert!(d.allowed);
    let r = app
        .upload_from(
            &heavy,
            "attachment",
            None,
            "a.bin",
            "application/octet-stream",
            vec![7; 5000],
        )
        .await;
    r.expect(429, Some("RateLimited"));
    // Another client is unaffected, and a user's uploads count in `upload`, not per IP.
    app.upload_from(&random_ip(), "attachment", None, "a.txt", "text/plain", b"x".to_vec())
        .await
        .expect(200, None);
    let user = app.register("Uploader").await;
    let r = app
        .upload_from(
            &ip,
            "attachment",
            Some(&user.access),
            "a.txt",
            "text/plain",
            b"x".to_vec(),
        )
        .await;
    r.expect(200, None);
    assert_eq!(r.header("x-ratelimit-bucket"), Some("upload"));
}

/// The S3 test server really verifies signatures: a backend with the wrong secret is refused.
#[tokio::test]
async fn s3_server_verifies_signatures() {
    let app = TestApp::builder()
        .media(MediaStorage::S3)
        .config(|c| c.s3.secret_access_key = Some("not-the-secret".into()))
        .spawn()
        .await;
    let r = app
        .upload("attachment", None, "a.txt", "text/plain", b"hello".to_vec())
        .await;
    r.expect(500, Some("InternalError"));
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM media_objects")
        .fetch_one(app.db())
        .await
        .expect("count");
    assert_eq!(rows, 0, "the index row of a failed upload is removed");
}
