//! AppState: everything a handler needs, shared by cheap clones.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

use crate::collab::Collab;
use crate::config::Config;
use crate::functions::attestation::HandleKeys;
use crate::functions::bus::Bus;
use crate::functions::images::ImageWorkers;
use crate::functions::jwt::JwtKeys;
use crate::functions::mail::Mailer;
use crate::functions::media::{MediaStore, StoreError};
use crate::functions::passwords::Hasher;
use crate::functions::push_transport::PushNetwork;
use crate::functions::rate_limit::RateLimiter;
use crate::functions::verification::{NetworkProbe, SharedProbe};
use crate::functions::webpush::VapidKeys;
use crate::gateway::Gateway;
use crate::services::messages::Outlets;
use crate::services::push::Pusher;
use crate::services::send_batch::SendBatcher;
use crate::services::session_cache::SessionCache;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: PgPool,
    pub redis: Option<redis::aio::ConnectionManager>,
    pub bus: Bus,
    pub limiter: RateLimiter,
    /// The state is cloned several times per request, so fields that own heap data sit behind
    /// an `Arc` (cloning the JWT validation rules alone was ~5 % of the server's CPU per send).
    pub jwt: Arc<JwtKeys>,
    /// Live auth sessions this process has checked (see `services::session_cache`).
    pub sessions: SessionCache,
    /// The group-commit writers of message sends (`services::send_batch`).
    pub send_batch: SendBatcher,
    pub hasher: Hasher,
    pub mailer: Arc<Mailer>,
    /// Media objects: the configured backend (local disk or S3).
    pub media: Arc<MediaStore>,
    /// The blocking-pool slots for image decoding and encoding.
    pub images: ImageWorkers,
    pub metrics: PrometheusHandle,
    /// The handle-attestation keys (spec §12.4, §12.9).
    pub handle_keys: Arc<HandleKeys>,
    /// DNS TXT and well-known look-ups of custom-domain verification. Tests replace it before
    /// serving to exercise the success paths without the internet.
    pub domain_probe: SharedProbe,
    /// The `/ws` gateway: sessions, the hub, presence (spec §7, §8).
    pub gateway: Gateway,
    /// The `/collab` rooms of this instance (spec §9).
    pub collab: Collab,
    /// Web Push (spec §12.2); `None` when VAPID is not configured. Tests replace it to send to
    /// a local receiver.
    pub push: Option<Pusher>,
    draining: Arc<AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot connect to Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("bcrypt: {0}")]
    Bcrypt(#[from] bcrypt::BcryptError),
    #[error("media storage: {0}")]
    Media(#[from] StoreError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("Web Push: {0}")]
    Vapid(String),
}

impl AppState {
    /// Builds the state on an open pool: connects Redis (when configured) for the bus and the
    /// rate limiter, otherwise uses their in-process backends.
    pub async fn new(config: Config, db: PgPool, mailer: Option<Mailer>) -> Result<Self, StateError> {
        let (redis, bus, limiter) = match &config.redis_url {
            Some(url) => {
                let client = redis::Client::open(url.as_str())?;
                let conn = client
                    .get_connection_manager_with_config(crate::functions::bus::redis_manager_config())
                    .await?;
                let bus = Bus::redis(client, config.redis_prefix.clone()).await?;
                let limiter = RateLimiter::redis(conn.clone(), config.redis_prefix.clone());
                (Some(conn), bus, limiter)
            }
            None => (None, Bus::in_process(), RateLimiter::in_memory()),
        };
        let mailer = match mailer {
            Some(m) => m,
            None => Mailer::from_config(&config)?,
        };
        let media = MediaStore::from_config(&config).await?;
        let handle_keys = Arc::new(HandleKeys::from_config(&config)?);
        let config = Arc::new(config);
        let jwt = Arc::new(JwtKeys::new(&config.jwt_secret, &config.jwt_issuer));
        let sessions = SessionCache::start(bus.clone(), config.session_cache_ttl);
        let gateway = Gateway::start(
            config.clone(),
            db.clone(),
            jwt.clone(),
            sessions.clone(),
            bus.clone(),
            redis.clone(),
        );
        let collab = Collab::start(db.clone(), bus.clone(), redis.clone(), config.redis_prefix.clone());
        let push = match (
            &config.vapid_public_key,
            &config.vapid_private_key,
            &config.vapid_subject,
        ) {
            (None, None, None) => None,
            (Some(public), Some(private), Some(subject)) => {
                let keys = VapidKeys::new(public, private, subject).map_err(|e| StateError::Vapid(e.to_string()))?;
                let network = PushNetwork::new(config.push_endpoint_allowlist.clone());
                Some(Pusher::start(keys, network, db.clone(), gateway.clone(), &config))
            }
            _ => {
                return Err(StateError::Vapid(
                    "VAPID_PUBLIC_KEY, VAPID_PRIVATE_KEY and VAPID_SUBJECT must be set together".into(),
                ));
            }
        };
        Ok(AppState {
            jwt,
            sessions,
            send_batch: SendBatcher::start(db.clone(), config.send_batch_max),
            hasher: Hasher::new(config.bcrypt_cost)?,
            metrics: crate::middlewares::metrics::recorder(),
            config,
            collab,
            gateway,
            push,
            db,
            redis,
            bus,
            limiter,
            mailer: Arc::new(mailer),
            media: Arc::new(media),
            images: ImageWorkers::default(),
            handle_keys,
            domain_probe: Arc::new(NetworkProbe::new()),
            draining: Arc::new(AtomicBool::new(false)),
        })
    }

    /// What a message send reaches besides its row (`services::messages::send`).
    pub fn outlets(&self) -> Outlets<'_> {
        Outlets {
            bus: &self.bus,
            store: &self.media,
            push: self.push.as_ref(),
            batch: &self.send_batch,
        }
    }

    /// Marks the instance as draining: `/readyz` answers 503 from now on (spec §8.6).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}
