//! The hub's runtime: executes the [`Effect`]s the hub decides (bus subscriptions, state loads,
//! presence and registry commands, take-over replies). The hub itself does no I/O.

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::Inner;
use super::hub::{Effect, Effects, Hub, Relation, UserState};
use super::view::SpaceView;
use crate::error::Error;
use crate::functions::bus::Topic;
use crate::functions::ids::{SpaceId, UserId};

/// How a load learns that the subscription it needs is in effect.
type Subscribed = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

impl Inner {
    /// Runs `f` on the hub and then the effects it asked for, under the hub lock: subscriptions
    /// are registered in the order the hub decided them, before the next bus message is applied.
    pub(super) fn with_hub<R>(self: &Arc<Self>, f: impl FnOnce(&mut Hub, &mut Effects) -> R) -> R {
        let mut hub = self.lock();
        let mut fx = Effects::new();
        let result = f(&mut hub, &mut fx);
        self.run(fx);
        result
    }

    fn run(self: &Arc<Self>, effects: Effects) {
        for effect in effects {
            match effect {
                Effect::Subscribe(topic) => drop(self.bus.subscribe_now(&topic)),
                Effect::Unsubscribe(topic) => self.bus.unsubscribe_now(&topic),
                Effect::LoadUser {
                    user,
                    generation,
                    subscribe,
                } => {
                    let subscribed: Option<Subscribed> =
                        subscribe.then(|| Box::pin(self.bus.subscribe_now(&Topic::user(user))) as Subscribed);
                    tokio::spawn(load_user(self.clone(), user, generation, subscribed));
                }
                Effect::LoadView {
                    space,
                    generation,
                    subscribe,
                } => {
                    let subscribed: Option<Subscribed> =
                        subscribe.then(|| Box::pin(self.bus.subscribe_now(&Topic::space(space.0))) as Subscribed);
                    tokio::spawn(load_view(self.clone(), space, generation, subscribed));
                }
                Effect::Presence(cmd) => {
                    let _ = self.presence.send(cmd);
                }
                Effect::Registry(cmd) => {
                    let _ = self.registry.send(cmd);
                }
                Effect::Reply(to, reply) => {
                    let bus = self.bus.clone();
                    tokio::spawn(async move {
                        bus.publish(&Topic::instance(to), super::TAKEOVER_REPLY, &reply).await;
                    });
                }
                Effect::Replied(reply) => {
                    let waiter = self.takeover_waiter(reply.request_id);
                    if let Some(w) = waiter {
                        let _ = w.send(reply);
                    }
                }
            }
        }
    }

    fn takeover_waiter(&self, request: Uuid) -> Option<tokio::sync::oneshot::Sender<super::hub::TakeoverReply>> {
        self.takeovers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&request)
    }
}

/// Retries a load a few times (the database may blip); `Err` after the last attempt.
async fn with_retries<T, F, Fut>(mut f: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let mut delay = Duration::from_millis(50);
    let mut attempt = 0;
    loop {
        attempt += 1;
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt >= 4 => return Err(e),
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay *= 4;
            }
        }
    }
}

/// Loads a local user's spaces and relations once its topic subscription is in effect.
async fn load_user(inner: Arc<Inner>, user: UserId, generation: u64, subscribed: Option<Subscribed>) {
    if let Some(s) = subscribed {
        s.await;
    }
    let db = inner.db.clone();
    let loaded = with_retries(|| {
        let db = db.clone();
        async move { crate::entities::relations::spaces_and_rows(&db, user).await }
    })
    .await;
    let loaded: Option<UserState> = match loaded {
        Ok((spaces, relations)) => Some((
            spaces,
            relations
                .into_iter()
                .map(|r| {
                    let relation = Relation {
                        other: r.relation_id,
                        state: r.state,
                        channel: r.channel_id,
                    };
                    (r.id, relation)
                })
                .collect(),
        )),
        Err(e) => {
            tracing::error!(error = %e, %user, "gateway: cannot load a user's state");
            None
        }
    };
    if !inner.with_hub(|hub, fx| hub.user_loaded(fx, user, generation, loaded)) {
        return;
    }
    // The space subscriptions registered above are in effect after this barrier.
    inner.bus.barrier().await;
    inner.with_hub(|hub, _| hub.user_subscribed(user, generation));
}

/// Loads a space view once the space topic's subscription is in effect; the hub then applies
/// what arrived meanwhile.
async fn load_view(inner: Arc<Inner>, space: SpaceId, generation: u64, subscribed: Option<Subscribed>) {
    if let Some(s) = subscribed {
        s.await;
    }
    let db = inner.db.clone();
    let loaded = with_retries(|| {
        let db = db.clone();
        async move { SpaceView::load(&db, space).await }
    })
    .await;
    let loaded = match loaded {
        Ok(view) => Some(view),
        Err(e) => {
            tracing::error!(error = %e, %space, "gateway: cannot load a space view");
            None
        }
    };
    inner.with_hub(|hub, fx| hub.view_loaded(fx, space, generation, loaded));
}
