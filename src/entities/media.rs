//! The media index (spec §10.3, §10.7, §10.8): one row per upload, the reference check that
//! every entity storing a media URL goes through, and garbage collection of unclaimed uploads.

use std::time::Duration;

use sqlx::{FromRow, PgConnection, PgExecutor, PgPool};

use crate::error::Error;
use crate::functions::ids::UserId;
use crate::functions::media::{MediaStore, Store, variant_prefix};
use crate::functions::media_ref;

/// A row of the media index.
#[derive(Debug, Clone, FromRow)]
pub struct MediaObject {
    pub key: String,
    pub store: String,
    pub content_type: String,
    pub size: i64,
    pub filename: String,
    pub uploader_id: Option<UserId>,
}

/// Records a new, unclaimed upload.
pub async fn insert(db: impl PgExecutor<'_>, object: &MediaObject) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO media_objects (key, store, content_type, size, filename, uploader_id) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&object.key)
    .bind(&object.store)
    .bind(&object.content_type)
    .bind(object.size)
    .bind(&object.filename)
    .bind(object.uploader_id)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn find(db: impl PgExecutor<'_>, key: &str) -> Result<Option<MediaObject>, Error> {
    Ok(sqlx::query_as::<_, MediaObject>(
        "SELECT key, store, content_type, size, filename, uploader_id \
         FROM media_objects WHERE key = $1",
    )
    .bind(key)
    .fetch_optional(db)
    .await?)
}

/// Removes an index row (an upload whose object could not be stored).
pub async fn delete(db: impl PgExecutor<'_>, key: &str) -> Result<(), Error> {
    sqlx::query("DELETE FROM media_objects WHERE key = $1")
        .bind(key)
        .execute(db)
        .await?;
    Ok(())
}

/// Validates a media reference a client wants to store and claims the object it names
/// (spec §10.7, §10.8). This is THE check for every field that holds media:
///
/// | caller | `store` | `field` |
/// |---|---|---|
/// | `user.update`, `bots.update` (`avatar`) | [`Store::Avatar`] | `"avatar"` |
/// | `spaces.update` (`icon`) | [`Store::SpaceIcon`] | `"icon"` |
/// | `messages.create` (each attachment `url`) | [`Store::Attachment`] | e.g. `"attachments[0].url"` |
///
/// `value` may be relative (`avatar/<name>.png`) or absolute under `MEDIA_PUBLIC_URL`; the
/// relative form is returned and is what the caller stores. The object must exist in `store`:
/// it has an index row, or (objects that predate alterego, §10.9) the backend has the key.
/// Anything else is 400 `InvalidMediaReference` with `field` set.
///
/// Call it inside the transaction that stores the reference, passing that transaction's
/// connection (`&mut *tx`): the row's `claimed_at` is set in the same transaction, and the row
/// lock it takes makes the garbage collector (which skips locked rows and locks what it
/// deletes) and the claim exclude each other. `null` (clearing a field) needs no call.
pub async fn claim_reference(
    conn: &mut PgConnection,
    media: &MediaStore,
    store: Store,
    value: &str,
    field: &str,
) -> Result<String, Error> {
    let key = media_ref::normalize(store.name(), value, &media.public_url, field)?;
    let claimed: Option<String> = sqlx::query_scalar(
        "UPDATE media_objects SET claimed_at = COALESCE(claimed_at, now()) \
         WHERE key = $1 RETURNING store",
    )
    .bind(&key)
    .fetch_optional(&mut *conn)
    .await?;
    let exists = match claimed {
        Some(s) => s == store.name(),
        // No row: only an object that predates alterego can be referenced.
        None => media.size(&key).await.map_err(Error::internal)?.is_some(),
    };
    if exists {
        Ok(key)
    } else {
        Err(media_ref::refusal(store.name(), field))
    }
}

/// What one garbage-collection pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GcReport {
    pub deleted: u64,
    pub failed: u64,
}

/// How many rows one transaction of the collector handles.
const GC_BATCH: i64 = 100;

/// Deletes the objects that are still unclaimed `grace` after their upload (spec §10.8), with
/// their variants and index rows. Each batch locks its rows (`FOR UPDATE SKIP LOCKED`) while it
/// deletes from the backend, so a concurrent [`claim_reference`] either claims first (and the
/// row is skipped) or waits and then finds nothing. Objects the backend fails to delete keep
/// their row and are retried on the next pass.
pub async fn collect_garbage(db: &PgPool, media: &MediaStore, grace: Duration) -> Result<GcReport, Error> {
    let mut report = GcReport::default();
    loop {
        let mut tx = db.begin().await?;
        let keys: Vec<String> = sqlx::query_scalar(
            "SELECT key FROM media_objects \
             WHERE claimed_at IS NULL AND created_at < now() - make_interval(secs => $1) \
             ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(grace.as_secs_f64())
        .bind(GC_BATCH)
        .fetch_all(&mut *tx)
        .await?;
        let mut deleted = Vec::with_capacity(keys.len());
        for key in &keys {
            let removed = async {
                media.delete_prefix(&variant_prefix(key)).await?;
                media.delete(key).await
            }
            .await;
            match removed {
                Ok(()) => deleted.push(key.clone()),
                Err(e) => {
                    report.failed += 1;
                    tracing::warn!(key = %key, error = %e, "media GC could not delete an object");
                }
            }
        }
        sqlx::query("DELETE FROM media_objects WHERE key = ANY($1)")
            .bind(&deleted)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        report.deleted += deleted.len() as u64;
        if (keys.len() as i64) < GC_BATCH || deleted.is_empty() {
            return Ok(report);
        }
    }
}

/// Claims the objects a document's content names (spec §10.8). Unknown keys are ignored: a
/// document is free text.
pub async fn claim_keys(db: impl PgExecutor<'_>, keys: &[String]) -> Result<(), Error> {
    if keys.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE media_objects SET claimed_at = COALESCE(claimed_at, now()) \
         WHERE key = ANY($1) AND store = 'attachment'",
    )
    .bind(keys)
    .execute(db)
    .await?;
    Ok(())
}
