//! Web Push delivery (spec §12.2): who is notified of a new message, and the background queue
//! that encrypts and sends the notifications. A request only enqueues (never waits); a full
//! queue drops the job with a warning, since pushes are best-effort.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::entities::messages::MessageExt;
use crate::entities::push_subscriptions::{self, Subscription};
use crate::entities::{access, handles, spaces, users};
use crate::error::Result;
use crate::events::{Conversation, PresenceStatus};
use crate::functions::ids::{ChannelId, SpaceId, UserId};
use crate::functions::notification::{self, PushPayload};
use crate::functions::permissions::Permissions;
use crate::functions::push_transport::{PushNetwork, SendError};
use crate::functions::webpush::{self, Subscriber, VapidKeys};
use crate::gateway::Gateway;

/// Jobs waiting for the worker; more are dropped.
const QUEUE: usize = 1024;
/// Deliveries of one job in flight at once.
const PARALLEL: usize = 16;

/// One new message to notify about.
struct Job {
    conversation: Conversation,
    channel: ChannelId,
    author: UserId,
    content: String,
}

struct Shared {
    vapid: VapidKeys,
    network: PushNetwork,
    db: PgPool,
    gateway: Gateway,
    media_public_url: String,
    handle_domain: String,
}

/// The push queue. Cheap to clone; the worker stops when the last clone is dropped.
#[derive(Clone)]
pub struct Pusher {
    shared: Arc<Shared>,
    queue: mpsc::Sender<Job>,
}

impl Pusher {
    /// Starts the worker.
    pub fn start(vapid: VapidKeys, network: PushNetwork, db: PgPool, gateway: Gateway, config: &Config) -> Pusher {
        let shared = Arc::new(Shared {
            vapid,
            network,
            db,
            gateway,
            media_public_url: config.media_public_url.clone(),
            handle_domain: config.handle_domain.clone(),
        });
        let (queue, mut jobs) = mpsc::channel::<Job>(QUEUE);
        let worker = shared.clone();
        tokio::spawn(async move {
            while let Some(job) = jobs.recv().await {
                if let Err(e) = worker.process(job).await {
                    tracing::warn!(error = %e, "push notification job failed");
                }
            }
        });
        Pusher { shared, queue }
    }

    /// The VAPID public key for `push.config`.
    pub fn public_key(&self) -> &str {
        self.shared.vapid.public_key()
    }

    pub fn network(&self) -> &PushNetwork {
        &self.shared.network
    }

    /// After a message was committed and published: queue its notifications.
    pub fn message_created(&self, conversation: Conversation, message: &MessageExt) {
        let Some(author) = message.author_id else {
            return;
        };
        let job = Job {
            conversation,
            channel: message.channel_id,
            author,
            content: message.content.clone(),
        };
        if self.queue.try_send(job).is_err() {
            metrics::counter!("alterego_push_jobs_dropped_total").increment(1);
            tracing::warn!("push queue full: a message's notifications were dropped");
        }
    }
}

impl Shared {
    async fn process(&self, job: Job) -> Result<()> {
        let Some(author) = users::get_ext(&self.db, job.author).await? else {
            return Ok(());
        };
        let body = notification::body(&job.content);
        let icon = notification::icon(author.avatar.as_deref(), &self.media_public_url);
        let (candidates, space, payload) = match job.conversation {
            Conversation::Dm(a, b) => {
                let partner = if a == job.author { b } else { a };
                let payload = PushPayload {
                    title: author.name.clone(),
                    body,
                    url: format!("/dm/{}", job.channel),
                    icon,
                    tag: format!("dm:{}", job.channel),
                };
                (vec![partner], None, payload)
            }
            Conversation::Space(space) => {
                let candidates = self.mentioned(space, job.channel, job.author, &job.content).await?;
                if candidates.is_empty() {
                    return Ok(());
                }
                let Some(row) = spaces::get(&self.db, space).await? else {
                    return Ok(());
                };
                let payload = PushPayload {
                    title: format!("{} in {}", author.name, row.name),
                    body,
                    url: format!("/space/{space}/channel/{}", job.channel),
                    icon,
                    tag: format!("channel:{}", job.channel),
                };
                (candidates, Some(space), payload)
            }
        };
        let reachable = push_subscriptions::reachable(&self.db, space, job.author, &candidates).await?;
        // Only offline users are pushed; online ones are notified in the app.
        let offline: Vec<UserId> = self
            .gateway
            .presence(&reachable)
            .await
            .into_iter()
            .filter(|p| p.status == PresenceStatus::Offline)
            .map(|p| p.user_id)
            .collect();
        if offline.is_empty() {
            return Ok(());
        }
        let subscriptions = push_subscriptions::of_users(&self.db, &offline).await?;
        let message = serde_json::to_vec(&payload).map_err(crate::error::Error::internal)?;
        futures_util::stream::iter(subscriptions)
            .for_each_concurrent(PARALLEL, |s| self.deliver(s, &message))
            .await;
        Ok(())
    }

    /// The members of `space` a message mentions and who can view the channel: handles, and
    /// `@everyone` when the author holds MENTION_EVERYONE there. The author is never included.
    async fn mentioned(
        &self,
        space: SpaceId,
        channel: ChannelId,
        author: UserId,
        content: &str,
    ) -> Result<Vec<UserId>> {
        let mentions = notification::mentions(content);
        let mut candidates = BTreeSet::new();
        if !mentions.handles.is_empty() {
            let names: Vec<String> = mentions
                .handles
                .iter()
                .flat_map(|h| notification::handle_candidates(h, &self.handle_domain))
                .collect();
            candidates.extend(handles::users_holding(&self.db, &names).await?);
        }
        if mentions.everyone {
            let author_perms = access::channel_access(&self.db, space, channel, author).await?;
            if author_perms.is_some_and(|(_, p)| p.contains(Permissions::MENTION_EVERYONE)) {
                candidates.extend(push_subscriptions::subscribed_members(&self.db, space).await?);
            }
        }
        candidates.remove(&author);
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let users: Vec<UserId> = candidates.into_iter().collect();
        let mut conn = self.db.acquire().await?;
        let visible = access::visibility(&mut conn, space, Some(&users)).await?;
        Ok(users
            .into_iter()
            .filter(|u| visible.get(u).is_some_and(|seen| seen.contains(&channel)))
            .collect())
    }

    /// Encrypts and sends one notification; a 404/410 answer deletes the subscription.
    async fn deliver(&self, sub: Subscription, message: &[u8]) {
        let outcome = self.try_deliver(&sub, message).await;
        metrics::counter!("alterego_push_deliveries_total", "outcome" => outcome).increment(1);
    }

    async fn try_deliver(&self, sub: &Subscription, message: &[u8]) -> &'static str {
        let prepared = Subscriber::decode(&sub.p256dh, &sub.auth)
            .map_err(|e| e.to_string())
            .and_then(|keys| webpush::encrypt(&keys, message).map_err(|e| e.to_string()))
            .and_then(|body| {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let auth = self
                    .vapid
                    .authorization(&sub.endpoint, now)
                    .map_err(|e| e.to_string())?;
                Ok((body, auth))
            });
        let (body, auth) = match prepared {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(subscription = %sub.id, error = %e, "push notification not prepared");
                return "failed";
            }
        };
        match self.network.send(&sub.endpoint, &auth, body).await {
            Ok(404 | 410) => {
                if let Err(e) = push_subscriptions::prune(&self.db, sub.id).await {
                    tracing::warn!(subscription = %sub.id, error = %e, "could not prune a push subscription");
                }
                "pruned"
            }
            Ok(status) if (200..300).contains(&status) => "sent",
            Ok(status) => {
                tracing::warn!(subscription = %sub.id, status, "push service refused a notification");
                "failed"
            }
            Err(SendError::Refused(reason)) => {
                tracing::warn!(subscription = %sub.id, %reason, "push endpoint refused at send time");
                "refused"
            }
            Err(SendError::Failed(reason)) => {
                tracing::warn!(subscription = %sub.id, %reason, "push notification not delivered");
                "failed"
            }
        }
    }
}
