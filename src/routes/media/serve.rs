//! `GET {prefix}/{store}/{name}` and `GET {prefix}/default-avatar/{id}` (spec §10.5, §10.6):
//! objects streamed from the backend with safe headers, conditional and single-range requests,
//! and `?w=&h=` variants generated once and cached in the backend.

use std::ops::Range;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::entities::media as index;
use crate::error::Error;
use crate::functions::images;
use crate::functions::media::{self, Store};
use crate::functions::rate_limit::Bucket;
use crate::middlewares::client_ip::ClientIp;
use crate::middlewares::rate_limit::set_headers;
use crate::state::AppState;

/// `Content-Security-Policy` of every media response (spec §10.5).
const MEDIA_CSP: &str = "default-src 'none'; sandbox";
const CACHE_CONTROL: &str = "public, max-age=31536000, immutable";
/// Bumped whenever the identicon drawing changes, so cached default avatars are refetched.
const IDENTICON_VERSION: &str = "identicon-v1";

/// How an object is presented.
struct Presentation {
    content_type: String,
    filename: String,
    etag: String,
}

pub async fn object(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    RawQuery(query): RawQuery,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let Ok(Path((store, name))) = path else {
        return Err(Error::not_found());
    };
    let store = Store::parse(&store).ok_or_else(Error::not_found)?;
    if !media::valid_name(&name) {
        return Err(Error::not_found());
    }
    let key = format!("{store}/{name}");
    let (content_type, filename, size) = match index::find(&state.db, &key).await? {
        Some(row) => (row.content_type, row.filename, u64::try_from(row.size).ok()),
        // Objects that predate alterego (spec §10.9): served if the backend has them.
        None => (media::content_type_for_extension(&name).to_string(), name.clone(), None),
    };
    let size = match size {
        Some(s) => s,
        None => state
            .media
            .size(&key)
            .await
            .map_err(Error::internal)?
            .ok_or_else(Error::not_found)?,
    };
    let variant = requested_variant(query.as_deref()).filter(|_| media::is_raster_image(&content_type));
    if let Some((w, h)) = variant {
        return variant_response(
            &state,
            &key,
            &content_type,
            &filename,
            (w, h),
            &ip.to_string(),
            &headers,
        )
        .await;
    }
    let shown = Presentation {
        etag: media::etag(&key, None),
        content_type,
        filename,
    };
    stored_response(&state, &key, Some(size), &shown, &headers)
        .await?
        .ok_or_else(Error::not_found)
}

/// `?w=&h=`: both present and integers, clamped to 1–1024; otherwise ignored.
fn requested_variant(query: Option<&str>) -> Option<(u32, u32)> {
    let mut w = None;
    let mut h = None;
    for pair in query?.split('&') {
        match pair.split_once('=') {
            Some(("w", v)) if w.is_none() => w = Some(media::parse_dimension(v)),
            Some(("h", v)) if h.is_none() => h = Some(media::parse_dimension(v)),
            _ => {}
        }
    }
    Some((w??, h??))
}

/// A cached variant, or a new one (counted in `media-resize`). An original that cannot be
/// turned into a variant (too large to read, or not decodable) is served as it is.
async fn variant_response(
    state: &AppState,
    key: &str,
    content_type: &str,
    filename: &str,
    (w, h): (u32, u32),
    ip: &str,
    headers: &HeaderMap,
) -> Result<Response, Error> {
    let vkey = media::variant_key(key, w, h);
    let shown = Presentation {
        content_type: "image/png".into(),
        filename: png_name(filename),
        etag: media::etag(key, Some((w, h))),
    };
    if is_not_modified(headers, &shown.etag) {
        return Ok(not_modified(&shown));
    }
    if let Some(res) = stored_response(state, &vkey, None, &shown, headers).await? {
        return Ok(res);
    }
    let decisions = state.limiter.check_all(&[(Bucket::MediaResize, ip)]).await;
    if let Some(d) = decisions.iter().find(|d| !d.allowed) {
        metrics::counter!("alterego_rate_limited_total", "bucket" => d.bucket).increment(1);
        let mut res = Error::rate_limited(d.retry_after.as_secs_f64()).into_response();
        set_headers(res.headers_mut(), d);
        return Ok(res);
    }
    let original = Presentation {
        content_type: content_type.to_string(),
        filename: filename.to_string(),
        etag: media::etag(key, None),
    };
    let Some(format) = images::format_of(content_type) else {
        return serve_original(state, key, &original, headers).await;
    };
    let cap = state.config.media_max_attachment_bytes.max(16 * 1024 * 1024);
    let bytes = match state.media.read_all(key, cap).await {
        Ok(Some(b)) => b,
        Ok(None) => return Err(Error::not_found()),
        Err(media::StoreError::TooLarge(_)) => {
            return serve_original(state, key, &original, headers).await;
        }
        Err(e) => return Err(Error::internal(e)),
    };
    let generated = state.images.run(move || images::variant(&bytes, format, w, h)).await;
    let png = match generated {
        Ok(png) => Bytes::from(png),
        Err(e) => {
            tracing::debug!(key, error = %e, "variant not generated; serving the original");
            return serve_original(state, key, &original, headers).await;
        }
    };
    if let Err(e) = state
        .media
        .put(&vkey, media::Payload::Bytes(png.clone()), "image/png")
        .await
    {
        tracing::warn!(key = %vkey, error = %e, "variant could not be cached");
    }
    let mut res = bytes_response(png, &shown, headers);
    if let Some(d) = decisions.first() {
        set_headers(res.headers_mut(), d);
    }
    Ok(res)
}

async fn serve_original(
    state: &AppState,
    key: &str,
    shown: &Presentation,
    headers: &HeaderMap,
) -> Result<Response, Error> {
    stored_response(state, key, None, shown, headers)
        .await?
        .ok_or_else(Error::not_found)
}

/// `name.ext` → `name.png`, for the filename of a variant.
fn png_name(filename: &str) -> String {
    let stem = filename.rsplit_once('.').map(|(s, _)| s).unwrap_or(filename);
    format!("{stem}.png")
}

/// Streams a stored object (or one range of it); `None` when the backend does not have it.
async fn stored_response(
    state: &AppState,
    key: &str,
    size: Option<u64>,
    shown: &Presentation,
    headers: &HeaderMap,
) -> Result<Option<Response>, Error> {
    let spec = range_spec(headers, &shown.etag);
    let range = match spec {
        None => None,
        Some(spec) => {
            let size = match size {
                Some(s) => s,
                None => match state.media.size(key).await.map_err(Error::internal)? {
                    Some(s) => s,
                    None => return Ok(None),
                },
            };
            spec.resolve(size)
        }
    };
    if is_not_modified(headers, &shown.etag) {
        return Ok(Some(not_modified(shown)));
    }
    let Some(object) = state.media.get(key, range.clone()).await.map_err(Error::internal)? else {
        return Ok(None);
    };
    let mut res = Response::new(Body::from_stream(object.body));
    decorate(res.headers_mut(), shown);
    match range {
        Some(r) => partial(&mut res, &r, object.size),
        None => put(res.headers_mut(), header::CONTENT_LENGTH, &object.size.to_string()),
    }
    Ok(Some(res))
}

/// A response from bytes in memory (a new variant, a default avatar), honouring a range.
fn bytes_response(bytes: Bytes, shown: &Presentation, headers: &HeaderMap) -> Response {
    if is_not_modified(headers, &shown.etag) {
        return not_modified(shown);
    }
    let size = bytes.len() as u64;
    let range = range_spec(headers, &shown.etag).and_then(|s| s.resolve(size));
    let body = match &range {
        Some(r) => bytes.slice(r.start as usize..r.end as usize),
        None => bytes,
    };
    let mut res = Response::new(Body::from(body));
    decorate(res.headers_mut(), shown);
    match range {
        Some(r) => partial(&mut res, &r, size),
        None => put(res.headers_mut(), header::CONTENT_LENGTH, &size.to_string()),
    }
    res
}

fn partial(res: &mut Response, r: &Range<u64>, total: u64) {
    *res.status_mut() = StatusCode::PARTIAL_CONTENT;
    let h = res.headers_mut();
    put(
        h,
        header::CONTENT_RANGE,
        &format!("bytes {}-{}/{total}", r.start, r.end.saturating_sub(1)),
    );
    put(h, header::CONTENT_LENGTH, &(r.end - r.start).to_string());
}

fn put(headers: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// The headers of §10.5 (the security-headers middleware leaves what is set here alone).
fn decorate(h: &mut HeaderMap, shown: &Presentation) {
    put(h, header::CONTENT_TYPE, &shown.content_type);
    validators(h, shown);
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if !media::served_inline(&shown.content_type) {
        put(
            h,
            header::CONTENT_DISPOSITION,
            &media::attachment_disposition(&shown.filename),
        );
    }
}

/// The headers a 304 repeats, and the security headers of every media response.
fn validators(h: &mut HeaderMap, shown: &Presentation) {
    put(h, header::ETAG, &shown.etag);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(CACHE_CONTROL));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(MEDIA_CSP));
    h.insert(
        header::HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("cross-origin"),
    );
}

fn not_modified(shown: &Presentation) -> Response {
    let mut res = StatusCode::NOT_MODIFIED.into_response();
    validators(res.headers_mut(), shown);
    res
}

/// `If-None-Match` names this ETag (weak comparison) or is `*`.
fn is_not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim())
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

/// A single `Range: bytes=…` request. Several ranges, other units, or an `If-Range` that does
/// not name the current ETag mean the full content is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeSpec {
    From(u64, Option<u64>),
    Suffix(u64),
}

impl RangeSpec {
    fn parse(value: &str) -> Option<RangeSpec> {
        let spec = value.trim().strip_prefix("bytes=")?.trim();
        if spec.contains(',') {
            return None;
        }
        let (start, end) = spec.split_once('-')?;
        let (start, end) = (start.trim(), end.trim());
        let number = |s: &str| {
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<u64>().ok())
                .flatten()
        };
        match (start.is_empty(), end.is_empty()) {
            (true, false) => number(end).filter(|n| *n > 0).map(RangeSpec::Suffix),
            (false, true) => number(start).map(|s| RangeSpec::From(s, None)),
            (false, false) => {
                let (s, e) = (number(start)?, number(end)?);
                (e >= s).then_some(RangeSpec::From(s, Some(e)))
            }
            (true, true) => None,
        }
    }

    /// The byte range within an object of `size` bytes; `None` when unsatisfiable (the full
    /// content is sent).
    fn resolve(self, size: u64) -> Option<Range<u64>> {
        match self {
            RangeSpec::From(start, _) if start >= size => None,
            RangeSpec::From(start, end) => {
                let end = end.map_or(size, |e| e.saturating_add(1).min(size));
                Some(start..end)
            }
            RangeSpec::Suffix(_) if size == 0 => None,
            RangeSpec::Suffix(n) => Some(size.saturating_sub(n)..size),
        }
    }
}

fn range_spec(headers: &HeaderMap, etag: &str) -> Option<RangeSpec> {
    if let Some(if_range) = headers.get(header::IF_RANGE)
        && if_range.to_str().ok().map(str::trim) != Some(etag)
    {
        return None;
    }
    let mut ranges = headers.get_all(header::RANGE).iter();
    let first = ranges.next()?;
    if ranges.next().is_some() {
        return None;
    }
    RangeSpec::parse(first.to_str().ok()?)
}

/// `GET {prefix}/default-avatar/{id}`: a deterministic identicon, 256×256 or the `?w=&h=`
/// fit of it.
pub async fn default_avatar(
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let Ok(Path(id)) = path else {
        return Err(Error::not_found());
    };
    if !media::valid_avatar_id(&id) {
        return Err(Error::not_found());
    }
    let variant = requested_variant(query.as_deref());
    let side = variant.map_or(images::IDENTICON_SIDE, |(w, h)| w.min(h).min(images::IDENTICON_SIDE));
    let shown = Presentation {
        content_type: "image/png".into(),
        filename: format!("{id}.png"),
        etag: media::etag(&format!("{IDENTICON_VERSION}/{id}"), variant),
    };
    if is_not_modified(&headers, &shown.etag) {
        return Ok(not_modified(&shown));
    }
    let png = images::identicon(&id, side);
    Ok(bytes_response(Bytes::from(png), &shown, &headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(RangeSpec::parse("bytes=0-9"), Some(RangeSpec::From(0, Some(9))));
        assert_eq!(RangeSpec::parse("bytes=10-"), Some(RangeSpec::From(10, None)));
        assert_eq!(RangeSpec::parse("bytes=-5"), Some(RangeSpec::Suffix(5)));
        assert_eq!(RangeSpec::parse("bytes=0-1,3-4"), None);
        assert_eq!(RangeSpec::parse("bytes=5-1"), None);
        assert_eq!(RangeSpec::parse("items=0-1"), None);
        assert_eq!(RangeSpec::parse("bytes=-0"), None);
        assert_eq!(RangeSpec::parse("bytes=-"), None);
        assert_eq!(RangeSpec::From(0, Some(9)).resolve(5), Some(0..5));
        assert_eq!(RangeSpec::From(5, None).resolve(5), None);
        assert_eq!(RangeSpec::Suffix(3).resolve(10), Some(7..10));
        assert_eq!(RangeSpec::Suffix(30).resolve(10), Some(0..10));
    }

    #[test]
    fn variants_need_both_integers() {
        assert_eq!(requested_variant(Some("w=64&h=64")), Some((64, 64)));
        assert_eq!(requested_variant(Some("h=2000&w=0")), Some((1, 1024)));
        assert_eq!(requested_variant(Some("w=64")), None);
        assert_eq!(requested_variant(Some("w=64&h=x")), None);
        assert_eq!(requested_variant(None), None);
    }

    #[test]
    fn conditional() {
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"a\", W/\"b\""));
        assert!(is_not_modified(&h, "\"b\""));
        assert!(!is_not_modified(&h, "\"c\""));
    }
}
