//! Where media objects live (spec §10.4): one [`Backend`] trait with two implementations, local
//! disk (the zero-configuration default) and an S3-compatible bucket through `aws-sdk-s3`.
//! [`MediaStore`] is the handle the rest of the server holds; it dispatches to the configured
//! backend and owns the temporary directory uploads are streamed into.
//!
//! Object keys are media keys (`<store>/<name>.<ext>`) and variant keys
//! (`variants/<key>/<w>x<h>.png`); both backends refuse any key with an empty, `.` or `..`
//! segment or a character outside `[A-Za-z0-9._-]`.

use std::future::Future;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::config::{Config, MediaStorage, S3Config};

/// A stream of an object's bytes.
pub type ByteChunks = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// An object being read: its total size and the requested bytes.
pub struct Object {
    /// The size of the whole object, whatever range was asked for.
    pub size: u64,
    pub body: ByteChunks,
}

/// What to store: a finished file (moved or streamed, never read whole) or bytes in memory.
pub enum Payload {
    File(PathBuf),
    Bytes(Bytes),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid object key `{0}`")]
    InvalidKey(String),
    #[error("media storage I/O: {0}")]
    Io(#[from] io::Error),
    #[error("S3: {0}")]
    S3(String),
    #[error("object larger than {0} bytes")]
    TooLarge(u64),
    #[error("media storage configuration: {0}")]
    Config(String),
}

/// The operations a storage backend provides. Reads of missing objects are `Ok(None)`; deleting
/// a missing object succeeds.
pub trait Backend: Send + Sync {
    /// Stores an object under `key`, replacing any previous one.
    fn put(
        &self,
        key: &str,
        payload: Payload,
        content_type: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Reads an object, or the byte `range` of it (which must lie inside the object).
    fn get(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> impl Future<Output = Result<Option<Object>, StoreError>> + Send;

    /// The size of an object, if it exists.
    fn size(&self, key: &str) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;

    fn delete(&self, key: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Deletes every object whose key starts with `prefix` (which ends with `/`).
    fn delete_prefix(&self, prefix: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Refuses keys that could leave the store's namespace.
fn check_key(key: &str) -> Result<(), StoreError> {
    let segment_ok = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    let body = key.strip_suffix('/').unwrap_or(key);
    if key.len() <= 512 && body.split('/').all(segment_ok) {
        Ok(())
    } else {
        Err(StoreError::InvalidKey(key.to_string()))
    }
}

// ---------------------------------------------------------------------------------------------
// Local disk.

/// Files under a root directory, laid out by key. Writes go to `<root>/.tmp` first and are
/// renamed into place, so a reader never sees a partial object.
pub struct LocalBackend {
    root: PathBuf,
    tmp: PathBuf,
}

impl LocalBackend {
    pub async fn new(root: PathBuf) -> Result<Self, StoreError> {
        let tmp = root.join(".tmp");
        tokio::fs::create_dir_all(&tmp)
            .await
            .map_err(|e| StoreError::Config(format!("cannot create MEDIA_LOCAL_DIR {}: {e}", root.display())))?;
        Ok(LocalBackend { root, tmp })
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    /// Moves `from` to `to`, copying when they are on different file systems.
    async fn move_into_place(&self, from: &Path, to: &Path) -> Result<(), StoreError> {
        if tokio::fs::rename(from, to).await.is_ok() {
            return Ok(());
        }
        let staging = self.staging_path();
        tokio::fs::copy(from, &staging).await?;
        if let Err(e) = tokio::fs::rename(&staging, to).await {
            let _ = tokio::fs::remove_file(&staging).await;
            return Err(e.into());
        }
        let _ = tokio::fs::remove_file(from).await;
        Ok(())
    }

    fn staging_path(&self) -> PathBuf {
        self.tmp.join(format!("put-{}", uuid::Uuid::new_v4().simple()))
    }
}

impl Backend for LocalBackend {
    async fn put(&self, key: &str, payload: Payload, _content_type: &str) -> Result<(), StoreError> {
        let dest = self.path(key)?;
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        match payload {
            Payload::File(path) => self.move_into_place(&path, &dest).await,
            Payload::Bytes(bytes) => {
                let staging = self.staging_path();
                let written = async {
                    let mut f = tokio::fs::File::create(&staging).await?;
                    f.write_all(&bytes).await?;
                    f.sync_all().await?;
                    tokio::fs::rename(&staging, &dest).await
                }
                .await;
                if written.is_err() {
                    let _ = tokio::fs::remove_file(&staging).await;
                }
                Ok(written?)
            }
        }
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<Option<Object>, StoreError> {
        let path = self.path(key)?;
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let meta = file.metadata().await?;
        if !meta.is_file() {
            return Ok(None);
        }
        let size = meta.len();
        let range = range.unwrap_or(0..size);
        if range.start > range.end || range.end > size {
            return Err(StoreError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "range outside the object",
            )));
        }
        file.seek(io::SeekFrom::Start(range.start)).await?;
        let reader = file.take(range.end - range.start);
        let body = tokio_util::io::ReaderStream::with_capacity(reader, 64 * 1024);
        Ok(Some(Object {
            size,
            body: Box::pin(body),
        }))
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, StoreError> {
        match tokio::fs::metadata(self.path(key)?).await {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match tokio::fs::remove_file(self.path(key)?).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), StoreError> {
        // Prefixes name directories here (`variants/<key>/`).
        match tokio::fs::remove_dir_all(self.path(prefix)?).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// S3.

/// An S3-compatible bucket: explicit endpoint, static keys, path-style addressing as
/// configured, and checksums only where the operation requires them (some S3-compatible stores
/// reject the SDK's default streamed checksums).
pub struct S3Backend {
    client: aws_sdk_s3::Client,
    bucket: String,
}

fn s3_error(e: impl std::error::Error) -> StoreError {
    StoreError::S3(DisplayErrorContext(e).to_string())
}

impl S3Backend {
    pub fn new(cfg: &S3Config) -> Result<Self, StoreError> {
        let bucket = cfg
            .bucket
            .clone()
            .ok_or_else(|| StoreError::Config("S3_BUCKET is required".into()))?;
        let (Some(key_id), Some(secret)) = (&cfg.access_key_id, &cfg.secret_access_key) else {
            return Err(StoreError::Config(
                "S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY are required when MEDIA_STORAGE=s3".into(),
            ));
        };
        let region = cfg.region.clone().unwrap_or_else(|| "us-east-1".into());
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region))
            .credentials_provider(Credentials::new(
                key_id.clone(),
                secret.clone(),
                None,
                None,
                "alterego-config",
            ))
            .force_path_style(cfg.force_path_style)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .build(),
            );
        if let Some(endpoint) = &cfg.endpoint {
            builder = builder.endpoint_url(endpoint.clone());
        }
        Ok(S3Backend {
            client: aws_sdk_s3::Client::from_conf(builder.build()),
            bucket,
        })
    }
}

/// The total size in a `Content-Range: bytes a-b/total` header.
fn total_from_content_range(value: &str) -> Option<u64> {
    value.rsplit_once('/')?.1.trim().parse().ok()
}

impl Backend for S3Backend {
    async fn put(&self, key: &str, payload: Payload, content_type: &str) -> Result<(), StoreError> {
        check_key(key)?;
        let body = match payload {
            Payload::File(path) => ByteStream::from_path(&path).await.map_err(s3_error)?,
            Payload::Bytes(bytes) => ByteStream::from(bytes),
        };
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(body)
            .send()
            .await
            .map_err(s3_error)?;
        Ok(())
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<Option<Object>, StoreError> {
        check_key(key)?;
        let mut req = self.client.get_object().bucket(&self.bucket).key(key);
        if let Some(r) = &range {
            if r.start >= r.end {
                // An empty range cannot be expressed; nothing needs to be read.
                let size = self.size(key).await?;
                return Ok(size.map(|size| Object {
                    size,
                    body: Box::pin(futures_util::stream::empty()),
                }));
            }
            req = req.range(format!("bytes={}-{}", r.start, r.end - 1));
        }
        let out = match req.send().await {
            Ok(out) => out,
            Err(e) => {
                let missing = e.as_service_error().is_some_and(|s| s.is_no_such_key())
                    || e.raw_response().is_some_and(|r| r.status().as_u16() == 404);
                return if missing { Ok(None) } else { Err(s3_error(e)) };
            }
        };
        let length = u64::try_from(out.content_length().unwrap_or(0)).unwrap_or(0);
        let size = match range {
            Some(_) => out.content_range().and_then(total_from_content_range).unwrap_or(length),
            None => length,
        };
        let body = futures_util::stream::unfold(out.body, |mut stream| async move {
            stream
                .next()
                .await
                .map(|chunk| (chunk.map_err(io::Error::other), stream))
        });
        Ok(Some(Object {
            size,
            body: Box::pin(body),
        }))
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, StoreError> {
        check_key(key)?;
        match self.client.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(out) => Ok(Some(u64::try_from(out.content_length().unwrap_or(0)).unwrap_or(0))),
            Err(e) => {
                let missing = e.as_service_error().is_some_and(|s| s.is_not_found())
                    || e.raw_response().is_some_and(|r| r.status().as_u16() == 404);
                if missing { Ok(None) } else { Err(s3_error(e)) }
            }
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        check_key(key)?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(s3_error)?;
        Ok(())
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), StoreError> {
        check_key(prefix)?;
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(s3_error)?;
            // One DeleteObject per key: a handful of variants per object, and DeleteObjects
            // needs a Content-MD5 that not every S3-compatible store accepts the same way.
            for object in page.contents() {
                if let Some(key) = object.key() {
                    self.delete(key).await?;
                }
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated().unwrap_or(false) => token = Some(t.to_string()),
                _ => return Ok(()),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The handle.

enum Backends {
    Local(LocalBackend),
    S3(S3Backend),
}

/// The media storage of this server: the configured backend, where uploads are staged, and how
/// absolute references are recognised. Cheap to clone.
#[derive(Clone)]
pub struct MediaStore {
    backend: Arc<Backends>,
    temp_dir: PathBuf,
    /// `MEDIA_PUBLIC_URL`, without a trailing slash.
    pub public_url: String,
}

impl std::fmt::Debug for MediaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.backend {
            Backends::Local(b) => write!(f, "MediaStore(local {})", b.root.display()),
            Backends::S3(b) => write!(f, "MediaStore(s3 bucket {})", b.bucket),
        }
    }
}

/// Removes staging files older than a day, left behind by a crash: no live upload or write is
/// that old, even when several instances share the directory.
async fn sweep_stale(dir: &Path) {
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
        return;
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let stale = entry
            .metadata()
            .await
            .ok()
            .filter(|m| m.is_file())
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(86_400));
        if stale {
            let _ = tokio::fs::remove_file(entry.path()).await;
        }
    }
}

macro_rules! dispatch {
    ($self:ident, $b:ident => $call:expr) => {
        match &*$self.backend {
            Backends::Local($b) => $call.await,
            Backends::S3($b) => $call.await,
        }
    };
}

impl MediaStore {
    /// Builds the configured backend. Uploads are staged next to the objects for the local
    /// backend (so storing is a rename) and in the system temporary directory for S3.
    pub async fn from_config(config: &Config) -> Result<Self, StoreError> {
        let (backend, temp_dir) = match config.media_storage {
            MediaStorage::Local => {
                let local = LocalBackend::new(config.media_local_dir.clone()).await?;
                let tmp = local.tmp.clone();
                (Backends::Local(local), tmp)
            }
            MediaStorage::S3 => {
                let tmp = std::env::temp_dir().join("alterego-uploads");
                tokio::fs::create_dir_all(&tmp).await?;
                (Backends::S3(S3Backend::new(&config.s3)?), tmp)
            }
        };
        sweep_stale(&temp_dir).await;
        Ok(MediaStore {
            backend: Arc::new(backend),
            temp_dir,
            public_url: config.media_public_url.trim_end_matches('/').to_string(),
        })
    }

    /// The directory where uploads are streamed before they are processed and stored.
    pub fn temp_dir(&self) -> &Path {
        &self.temp_dir
    }

    pub async fn put(&self, key: &str, payload: Payload, content_type: &str) -> Result<(), StoreError> {
        dispatch!(self, b => b.put(key, payload, content_type))
    }

    pub async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<Option<Object>, StoreError> {
        dispatch!(self, b => b.get(key, range))
    }

    pub async fn size(&self, key: &str) -> Result<Option<u64>, StoreError> {
        dispatch!(self, b => b.size(key))
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        dispatch!(self, b => b.delete(key))
    }

    pub async fn delete_prefix(&self, prefix: &str) -> Result<(), StoreError> {
        dispatch!(self, b => b.delete_prefix(prefix))
    }

    /// Reads a whole object into memory, refusing objects larger than `max` bytes.
    pub async fn read_all(&self, key: &str, max: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(mut object) = self.get(key, None).await? else {
            return Ok(None);
        };
        if object.size > max {
            return Err(StoreError::TooLarge(max));
        }
        let mut buf = Vec::with_capacity(usize::try_from(object.size).unwrap_or(0));
        while let Some(chunk) = object.body.next().await {
            let chunk = chunk?;
            if (buf.len() + chunk.len()) as u64 > max {
                return Err(StoreError::TooLarge(max));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(Some(buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        for ok in [
            "avatar/abc.png",
            "variants/avatar/abc.png/64x64.png",
            "variants/avatar/abc.png/",
        ] {
            assert!(check_key(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/abs", "avatar/../x", "avatar/./x", "a//b", "a/b c", "a\\b", ".."] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn content_range_total() {
        assert_eq!(total_from_content_range("bytes 0-9/100"), Some(100));
        assert_eq!(total_from_content_range("bytes */100"), Some(100));
        assert_eq!(total_from_content_range("garbage"), None);
    }

    #[tokio::test]
    async fn local_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().to_path_buf()).await.unwrap();
        b.put(
            "attachment/x.txt",
            Payload::Bytes(Bytes::from_static(b"hello world")),
            "text/plain",
        )
        .await
        .unwrap();
        assert_eq!(b.size("attachment/x.txt").await.unwrap(), Some(11));
        let mut o = b.get("attachment/x.txt", Some(6..11)).await.unwrap().unwrap();
        assert_eq!(o.size, 11);
        let mut got = Vec::new();
        while let Some(c) = o.body.next().await {
            got.extend_from_slice(&c.unwrap());
        }
        assert_eq!(got, b"world");
        b.put(
            "variants/attachment/x.txt/1x1.png",
            Payload::Bytes(Bytes::new()),
            "image/png",
        )
        .await
        .unwrap();
        b.delete_prefix("variants/attachment/x.txt/").await.unwrap();
        assert_eq!(b.size("variants/attachment/x.txt/1x1.png").await.unwrap(), None);
        b.delete("attachment/x.txt").await.unwrap();
        b.delete("attachment/x.txt").await.unwrap();
        assert!(b.get("attachment/x.txt", None).await.unwrap().is_none());
        assert!(b.get("attachment", None).await.unwrap().is_none());
    }
}
