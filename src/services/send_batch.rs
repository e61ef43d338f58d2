//! Group commit of message sends. A plain send (no attachments, no `Idempotency-Key`) hands its
//! validated row to a few writer tasks; each writer takes every row queued at that moment (up
//! to `SEND_BATCH_MAX`) and stores them with one multi-row `INSERT … RETURNING`, so concurrent
//! sends share one statement and one commit instead of paying for their own. Nothing waits for
//! a batch to fill: under light load a batch is one row, under heavy load rows queue while the
//! writers are busy and the next batch takes them all.
//!
//! Each send still gets its own answer: its row as stored, after the commit. A batch that fails
//! (a channel deleted meanwhile, say) is retried row by row, so one bad row fails alone.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::entities::messages::{self, MessageExt, NewMessage};
use crate::error::{Error, Result};

/// Writer tasks: enough to keep a batch in flight while the next one forms.
const WRITERS: usize = 4;

struct Job {
    message: NewMessage,
    reply: oneshot::Sender<Result<MessageExt>>,
}

#[derive(Clone)]
pub struct SendBatcher {
    db: PgPool,
    /// `None` when batching is off (`SEND_BATCH_MAX=1`): each send inserts its own row.
    queue: Option<mpsc::UnboundedSender<Job>>,
}

impl SendBatcher {
    /// Starts the writers; `max` rows per statement, 1 turns batching off.
    pub fn start(db: PgPool, max: usize) -> Self {
        if max <= 1 {
            return SendBatcher { db, queue: None };
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..WRITERS {
            tokio::spawn(writer(db.clone(), rx.clone(), max));
        }
        SendBatcher { db, queue: Some(tx) }
    }

    /// Stores one message; returns it as stored, once committed.
    pub async fn insert(&self, message: NewMessage) -> Result<MessageExt> {
        let Some(queue) = &self.queue else {
            return messages::insert(&self.db, &message).await;
        };
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError(job)) = queue.send(Job { message, reply }) {
            // The writers are gone (shutting down): write it here.
            return messages::insert(&self.db, &job.message).await;
        }
        answer
            .await
            .map_err(|_| Error::internal("a send batch writer stopped before answering"))?
    }

    /// Stores `batch` with one statement (row by row if that fails); one result per row, in
    /// order. What the writers do with each batch they take.
    pub async fn insert_all(&self, batch: &[NewMessage]) -> Vec<Result<MessageExt>> {
        write(&self.db, batch).await
    }
}

async fn writer(db: PgPool, queue: Arc<Mutex<mpsc::UnboundedReceiver<Job>>>, max: usize) {
    loop {
        let mut jobs = Vec::new();
        {
            let mut rx = queue.lock().await;
            match rx.recv().await {
                Some(job) => jobs.push(job),
                None => return,
            }
            while jobs.len() < max {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
        }
        let (rows, replies): (Vec<NewMessage>, Vec<_>) = jobs.into_iter().map(|j| (j.message, j.reply)).unzip();
        for (reply, result) in replies.into_iter().zip(write(&db, &rows).await) {
            // A sender that gave up (its request was cancelled) no longer listens.
            let _ = reply.send(result);
        }
    }
}

async fn write(db: &PgPool, rows: &[NewMessage]) -> Vec<Result<MessageExt>> {
    if rows.len() == 1 {
        return vec![messages::insert(db, &rows[0]).await];
    }
    metrics::histogram!("alterego_send_batch_rows").record(rows.len() as f64);
    match messages::insert_many(db, rows).await {
        Ok(stored) => {
            let mut by_id: HashMap<_, _> = stored.into_iter().map(|m| (m.id, m)).collect();
            rows.iter()
                .map(|r| {
                    by_id
                        .remove(&r.id)
                        .ok_or_else(|| Error::internal("a batched message was not returned"))
                })
                .collect()
        }
        Err(e) => {
            tracing::debug!(error = %e, rows = rows.len(), "send batch failed; writing its rows one by one");
            let mut results = Vec::with_capacity(rows.len());
            for row in rows {
                results.push(messages::insert(db, row).await);
            }
            results
        }
    }
}
