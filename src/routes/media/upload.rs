//! `POST {prefix}/{store}` (spec §10.3): a multipart upload streamed to a temporary file,
//! sniffed, processed per store (§10.2) on the blocking pool, stored, and indexed.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Serialize;
use tempfile::TempPath;
use tokio::io::AsyncWriteExt;

use crate::entities::media::{self as index, MediaObject};
use crate::error::{Error, ErrorCode};
use crate::functions::images::{self, ImageError};
use crate::functions::media::sniff::{self, TextCheck};
use crate::functions::media::{self, MULTIPART_OVERHEAD, Payload, Store};
use crate::functions::rate_limit::{Bucket, Decision, governing};
use crate::middlewares::auth::OptionalAuth;
use crate::middlewares::client_ip::ClientIp;
use crate::middlewares::rate_limit::set_headers;
use crate::state::AppState;

/// `UploadResponse`: the relative URL exactly as Mikoto's media server returned it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadResponse {
    pub url: String,
    pub content_type: String,
    pub size: u64,
}

pub async fn upload(
    State(state): State<AppState>,
    store: Result<Path<String>, PathRejection>,
    OptionalAuth(auth): OptionalAuth,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut decisions = Vec::new();
    let store = store.ok().and_then(|Path(s)| Store::parse(&s));
    let result = match store {
        Some(store) => {
            let uploader = Uploader {
                user: auth.map(|a| a.user_id),
                ip: ip.to_string(),
            };
            accept(&state, store, &uploader, &headers, body, &mut decisions).await
        }
        None => Err(Error::not_found()),
    };
    let mut res = match result {
        Ok(r) => axum::Json(r).into_response(),
        Err(e) => e.into_response(),
    };
    if let Some(d) = governing(&decisions) {
        set_headers(res.headers_mut(), d);
    }
    res
}

/// `GET {prefix}/{store}`: 405 on a store (it takes uploads only), 404 on anything else.
pub async fn not_served(store: Result<Path<String>, PathRejection>) -> Error {
    match store.ok().and_then(|Path(s)| Store::parse(&s)) {
        Some(_) => Error::new(ErrorCode::MethodNotAllowed, "This method is not allowed on this route"),
        None => Error::not_found(),
    }
}

struct Uploader {
    user: Option<crate::functions::ids::UserId>,
    ip: String,
}

impl Uploader {
    /// The request and byte buckets of this uploader and their key (spec §11.2).
    fn buckets(&self) -> (Bucket, Bucket, String) {
        match self.user {
            Some(u) => (Bucket::Upload, Bucket::UploadBytes, u.to_string()),
            None => (Bucket::UploadAnonymous, Bucket::UploadAnonymousBytes, self.ip.clone()),
        }
    }
}

/// Checks and consumes, recording the decisions for the response headers.
async fn charge(state: &AppState, checks: &[(Bucket, &str, u32)], taken: &mut Vec<Decision>) -> Result<(), Error> {
    let decisions = state.limiter.check_all_with_cost(checks).await;
    let refused = decisions
        .iter()
        .filter(|d| !d.allowed)
        .map(|d| (d.bucket, d.retry_after))
        .max_by_key(|(_, r)| *r);
    taken.extend(decisions);
    match refused {
        Some((bucket, retry_after)) => {
            metrics::counter!("alterego_rate_limited_total", "bucket" => bucket).increment(1);
            Err(Error::rate_limited(retry_after.as_secs_f64()))
        }
        None => Ok(()),
    }
}

fn too_large(max: u64) -> Error {
    Error::new(
        ErrorCode::PayloadTooLarge,
        format!("The upload exceeds this store's limit of {max} bytes"),
    )
}

fn malformed() -> Error {
    Error::validation("file", "The multipart body is malformed")
}

/// The client stopped sending: 408, as for a stalled JSON body (not a 503: the server is fine).
fn stalled() -> Error {
    Error::new(ErrorCode::RequestTimeout, "The upload stalled and was cancelled")
}

async fn accept(
    state: &AppState,
    store: Store,
    uploader: &Uploader,
    headers: &HeaderMap,
    body: Body,
    taken: &mut Vec<Decision>,
) -> Result<UploadResponse, Error> {
    let config = &state.config;
    // Authentication (spec §2.9 order: 401, then 429, then decoding).
    if uploader.user.is_none() && !config.media_anonymous_uploads {
        return Err(Error::new(
            ErrorCode::Unauthorized,
            "Anonymous uploads are disabled: sign in to upload",
        ));
    }
    let max = store.max_bytes(config);
    let request_limit = max.saturating_add(MULTIPART_OVERHEAD);
    let declared_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());

    // The byte quota is charged with the declared length up front; a body without a length is
    // charged once its size is known, and a declared length past the limit (a 413 below) is not
    // charged at all.
    let (requests, bytes, key) = uploader.buckets();
    let upfront = declared_length.filter(|l| *l <= request_limit).unwrap_or(0);
    let upfront = u32::try_from(upfront).unwrap_or(u32::MAX);
    let mut checks = vec![(requests, key.as_str(), 1)];
    if upfront > 0 {
        checks.push((bytes, key.as_str(), upfront));
    }
    charge(state, &checks, taken).await?;

    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let boundary = if media::essence(content_type) == "multipart/form-data" {
        multer::parse_boundary(content_type).ok()
    } else {
        None
    };
    let Some(boundary) = boundary else {
        return Err(Error::new(
            ErrorCode::UnsupportedMediaType,
            "An upload must be multipart/form-data",
        ));
    };
    if declared_length.is_some_and(|l| l > request_limit) {
        return Err(too_large(max));
    }

    let received = receive(state, body, &boundary, request_limit, max).await?;
    if upfront == 0 {
        let cost = u32::try_from(received.size.max(1)).unwrap_or(u32::MAX);
        charge(state, &[(bytes, key.as_str(), cost)], taken).await?;
    }

    let sniffed = sniff::sniff(&received.head);
    let content_type = sniff::decide(sniffed, received.declared.as_deref(), received.is_text);
    let processed = process(state, store, &received.path, &content_type).await?;

    let ext = media::extension_for(&processed.content_type);
    let key = media::new_key(store, ext);
    let object = MediaObject {
        key: key.clone(),
        store: store.name().to_string(),
        content_type: processed.content_type.clone(),
        size: i64::try_from(processed.size).unwrap_or(i64::MAX),
        filename: media::sanitize_filename(&received.filename),
        uploader_id: uploader.user,
    };
    // The row first: if storing fails or the process dies in between, the collector removes an
    // unclaimed row whose object never appeared, never an object nobody knows about.
    index::insert(&state.db, &object).await?;
    let payload_path = processed.path.as_ref().unwrap_or(&received.path);
    let stored = state
        .media
        .put(&key, Payload::File(payload_path.to_path_buf()), &processed.content_type)
        .await;
    if let Err(e) = stored {
        let _ = index::delete(&state.db, &key).await;
        return Err(Error::internal(e));
    }
    Ok(UploadResponse {
        url: key,
        content_type: processed.content_type,
        size: processed.size,
    })
}

/// The file part of an upload, in a temporary file.
struct Received {
    path: TempPath,
    size: u64,
    /// The first bytes, for sniffing.
    head: Vec<u8>,
    declared: Option<String>,
    filename: String,
    is_text: bool,
}

/// Streams the first part that has a filename into a temporary file, enforcing the request
/// limit (whole body) and the store limit (the file) as the bytes arrive.
async fn receive(
    state: &AppState,
    body: Body,
    boundary: &str,
    request_limit: u64,
    max: u64,
) -> Result<Received, Error> {
    let exceeded = Arc::new(AtomicBool::new(false));
    let counted = {
        let exceeded = exceeded.clone();
        let mut total = 0u64;
        body.into_data_stream().map(move |chunk| {
            let chunk = chunk?;
            total = total.saturating_add(chunk.len() as u64);
            if total > request_limit {
                exceeded.store(true, Ordering::SeqCst);
                return Err(axum::Error::new("request body limit exceeded"));
            }
            Ok::<Bytes, axum::Error>(chunk)
        })
    };
    let mut multipart = multer::Multipart::new(counted, boundary);
    let idle = state.config.request_timeout;
    let read_error = |e: multer::Error| {
        if exceeded.load(Ordering::SeqCst) {
            too_large(max)
        } else {
            tracing::debug!(error = %e, "malformed upload");
            malformed()
        }
    };

    let mut field = loop {
        let next = tokio::time::timeout(idle, multipart.next_field())
            .await
            .map_err(|_| stalled())?;
        match next.map_err(read_error)? {
            Some(f) if f.file_name().is_some_and(|n| !n.is_empty()) => break f,
            Some(_) => continue,
            None => return Err(Error::validation("file", "The upload has no file part")),
        }
    };
    let filename = field.file_name().unwrap_or_default().to_string();
    let declared = field.content_type().map(|m| m.to_string());

    let temp = tempfile::Builder::new()
        .prefix("upload-")
        .tempfile_in(state.media.temp_dir())
        .map_err(Error::internal)?;
    let (file, path) = temp.into_parts();
    let mut file = tokio::fs::File::from_std(file);
    let mut size = 0u64;
    let mut head = Vec::with_capacity(sniff::HEAD_LEN);
    let mut text = TextCheck::default();
    loop {
        let chunk = tokio::time::timeout(idle, field.chunk())
            .await
            .map_err(|_| stalled())?
            .map_err(read_error)?;
        let Some(chunk) = chunk else { break };
        size = size.saturating_add(chunk.len() as u64);
        if size > max {
            return Err(too_large(max));
        }
        if head.len() < sniff::HEAD_LEN {
            let take = (sniff::HEAD_LEN - head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..take]);
        }
        text.feed(&chunk);
        file.write_all(&chunk).await.map_err(Error::internal)?;
    }
    file.flush().await.map_err(Error::internal)?;
    drop(file);
    Ok(Received {
        path,
        size,
        head,
        declared,
        filename,
        is_text: text.finish(),
    })
}

/// The result of §10.2 processing: a new file, or `None` to store the upload byte-for-byte.
struct Processed {
    path: Option<TempPath>,
    content_type: String,
    size: u64,
}

fn image_error(e: ImageError) -> Error {
    match e {
        ImageError::TooLarge => Error::validation("file", e.to_string()),
        ImageError::Undecodable => Error::new(ErrorCode::UnsupportedFileType, e.to_string()),
        other => Error::internal(other),
    }
}

async fn process(state: &AppState, store: Store, src: &FsPath, content_type: &str) -> Result<Processed, Error> {
    let format = images::format_of(content_type);
    if store.requires_image() && format.is_none() {
        return Err(Error::new(
            ErrorCode::UnsupportedFileType,
            format!("The `{store}` store accepts PNG, JPEG, GIF and WebP images only"),
        ));
    }
    let Some(format) = format else {
        // Not an image: stored byte-for-byte.
        let size = tokio::fs::metadata(src).await.map_err(Error::internal)?.len();
        return Ok(Processed {
            path: None,
            content_type: content_type.to_string(),
            size,
        });
    };
    let dst = tempfile::Builder::new()
        .prefix("processed-")
        .tempfile_in(state.media.temp_dir())
        .map_err(Error::internal)?
        .into_temp_path();
    let src_owned: PathBuf = src.to_path_buf();
    let dst_owned: PathBuf = dst.to_path_buf();
    let (out_type, keep_original) = match (store.requires_image(), content_type) {
        (true, _) => ("image/png", false),
        (false, "image/gif") => ("image/gif", true),
        (false, t) => (t, false),
    };
    let out_type = out_type.to_string();
    let job_type = out_type.clone();
    let size = state
        .images
        .run(move || {
            if store.requires_image() {
                images::normalise_avatar(&src_owned, format, &dst_owned)
            } else {
                match job_type.as_str() {
                    "image/jpeg" => images::reencode_jpeg(&src_owned, &dst_owned),
                    "image/png" => images::reencode_png(&src_owned, &dst_owned),
                    "image/webp" => images::strip_webp(&src_owned, &dst_owned),
                    // GIF: checked against the caps, stored byte-for-byte.
                    _ => images::check_file(&src_owned, format).and_then(|_| Ok(std::fs::metadata(&src_owned)?.len())),
                }
            }
        })
        .await
        .map_err(image_error)?;
    Ok(Processed {
        path: (!keep_original).then_some(dst),
        content_type: out_type,
        size,
    })
}
