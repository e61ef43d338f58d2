//! AppState: everything a handler needs, shared by cheap clones.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

use crate::config::Config;
use crate::functions::attestation::HandleKeys;
use crate::functions::bus::Bus;
use crate::functions::images::ImageWorkers;
use crate::functions::jwt::JwtKeys;
use crate::functions::mail::Mailer;
use crate::functions::media::{MediaStore, StoreError};
use crate::functions::passwords::Hasher;
use crate::functions::rate_limit::RateLimiter;
use crate::functions::verification::{NetworkProbe, SharedProbe};
use crate::gateway::Gateway;

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
}

impl AppState {
    /// Builds the state on an open pool: connects Redis (when configured) for the bus and the
    /// rate limiter, otherwise uses their in-process backends.
    pub async fn new(config: Config, db: PgPool, mailer: Option<Mailer>) -> Result<Self, StateError> {
        let (redis, bus, limiter) = match &config.redis_url {
            Some(url) => {
                let client = redis::Client::open(url.as_str())?;
                let conn = client.get_connection_manager().await?;
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
        let gateway = Gateway::start(config.clone(), db.clone(), jwt.clone(), bus.clone(), redis.clone());
        Ok(AppState {
            jwt,
            hasher: Hasher::new(config.bcrypt_cost)?,
            metrics: crate::middlewares::metrics::recorder(),
            config,
            gateway,
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

    /// Marks the instance as draining: `/readyz` answers 503 from now on (spec §8.6).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}
