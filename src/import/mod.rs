//! `alterego import-mikoto`: copies a Mikoto server's PostgreSQL database into alterego's
//! (spec §1.7). The source is read in one read-only snapshot; the target is written in one
//! transaction, so an interrupted import leaves the target as it was and a re-run starts over
//! (see docs/import.md for the mapping and the measurements behind that choice).
//!
//! `source` reads Mikoto's tables, `convert` maps values, `steps` maps each table and checks
//! references, `write` inserts batches, `report` and `progress` tell the operator.

pub mod cli;
pub mod convert;
mod progress;
pub mod report;
mod source;
mod steps;
mod write;

use std::time::Instant;

use sqlx::PgPool;

pub use progress::Progress;
pub use report::{Report, TableReport};

/// What the operator asked for.
#[derive(Debug, Clone)]
pub struct Options {
    /// The Mikoto database (`postgres://…`).
    pub source_url: String,
    /// Import, report and roll back.
    pub dry_run: bool,
    /// Import into a target that already holds users (colliding rows are skipped and reported).
    pub allow_non_empty: bool,
    /// Rows per insert batch of the large tables (messages, attachments).
    pub batch_size: usize,
    /// No progress output (library use).
    pub quiet: bool,
}

pub const DEFAULT_BATCH: usize = 5_000;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read the Mikoto database: {0}")]
    Source(sqlx::Error),
    #[error("the source is not a Mikoto database: missing tables {0}")]
    NotMikoto(String),
    #[error("cannot write alterego's database: {0}")]
    Target(sqlx::Error),
    #[error(
        "alterego's database already holds data ({0} users); import into an empty database, or pass --allow-non-empty to merge (colliding rows are skipped)"
    )]
    TargetNotEmpty(i64),
}

/// Serialises imports into one target (a second one waits, then finds the target non-empty).
const IMPORT_LOCK: i64 = 0x6d696b6f746f;

/// Runs the import into `target` (migrated) and returns the report.
async fn search_index_pending_list(tx: &mut sqlx::PgConnection, on: bool) -> Result<(), ImportError> {
    let sql = if on {
        "ALTER INDEX messages_search_idx SET (fastupdate = on)"
    } else {
        "ALTER INDEX messages_search_idx SET (fastupdate = off)"
    };
    sqlx::query(sql).execute(tx).await.map_err(ImportError::Target)?;
    Ok(())
}

pub async fn run(target: &PgPool, options: &Options) -> Result<Report, ImportError> {
    let started = Instant::now();
    let mut src = source::connect(&options.source_url)
        .await
        .map_err(ImportError::Source)?;
    let missing = source::missing_tables(&mut src).await.map_err(ImportError::Source)?;
    if !missing.is_empty() {
        return Err(ImportError::NotMikoto(missing.join(", ")));
    }
    let mut tx = target.begin().await.map_err(ImportError::Target)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(IMPORT_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(ImportError::Target)?;
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&mut *tx)
        .await
        .map_err(ImportError::Target)?;
    if users > 0 && !options.allow_non_empty {
        return Err(ImportError::TargetNotEmpty(users));
    }
    let mut report = Report {
        dry_run: options.dry_run,
        ..Report::default()
    };
    let mut progress = Progress::new(options.quiet);
    let batch = options.batch_size.max(1);
    // The search index takes a bulk load faster through its pending list, which a live server
    // does without (migration 20261206000300); both settings are part of this transaction.
    search_index_pending_list(&mut tx, true).await?;
    steps::run(&mut src, &mut tx, &mut report, &mut progress, batch).await?;
    search_index_pending_list(&mut tx, false).await?;
    if options.dry_run {
        tx.rollback().await.map_err(ImportError::Target)?;
    } else {
        tx.commit().await.map_err(ImportError::Target)?;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
