//! The append path of spec §9.4: every applied update is written to PostgreSQL before it is
//! broadcast. Appends queue here; one task writes whatever has queued in one statement, so
//! under load many rooms' updates share a round trip, and an idle server adds no delay.

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use crate::entities::documents;
use crate::functions::ids::ChannelId;

/// Appends written per statement at most.
const BATCH: usize = 256;

struct Append {
    channel: ChannelId,
    data: Vec<u8>,
    done: oneshot::Sender<bool>,
}

#[derive(Clone)]
pub struct Writer {
    queue: mpsc::Sender<Append>,
}

impl Writer {
    pub fn start(db: PgPool) -> Writer {
        let (queue, mut rx) = mpsc::channel::<Append>(4096);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                let channels: Vec<ChannelId> = batch.iter().map(|a| a.channel).collect();
                let data: Vec<Vec<u8>> = batch.iter_mut().map(|a| std::mem::take(&mut a.data)).collect();
                let ok = match documents::append(&db, &channels, &data).await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!(error = %e, updates = batch.len(), "collab updates not persisted");
                        false
                    }
                };
                metrics::counter!("alterego_collab_updates_persisted_total").increment(if ok {
                    batch.len() as u64
                } else {
                    0
                });
                for a in batch {
                    let _ = a.done.send(ok);
                }
            }
        });
        Writer { queue }
    }

    /// Persists one update; `true` once it is committed.
    pub async fn append(&self, channel: ChannelId, data: Vec<u8>) -> bool {
        let (done, rx) = oneshot::channel();
        if self.queue.send(Append { channel, data, done }).await.is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }
}
