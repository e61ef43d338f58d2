//! Every setting, read once from the environment (and an optional `.env`), validated at start
//! (spec Appendix A). Outside production the required keys have development defaults so that
//! `cargo run` works with no configuration at all.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use rand::RngCore;

use crate::functions::client_ip::parse_trusted_proxies;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    Any,
    List(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaStorage {
    Local,
    S3,
}

#[derive(Debug, Clone, Default)]
pub struct S3Config {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub bucket: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub force_path_style: bool,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub environment: Environment,
    pub bind_addr: SocketAddr,
    pub public_url: String,
    pub web_url: String,
    pub cors_origins: CorsOrigins,
    pub database_url: String,
    /// True when `DATABASE_URL` was not set and `database_url` is the development default: if
    /// nothing answers there, `cargo run` starts a private cluster (`embedded_postgres`).
    pub database_url_default: bool,
    /// Where that private cluster lives (`EMBEDDED_DATABASE_DIR`).
    pub embedded_database_dir: PathBuf,
    pub database_max_connections: u32,
    pub automigrate: bool,
    pub redis_url: Option<String>,
    /// Namespace of every Redis key and topic (lets tests and deployments share one Redis).
    pub redis_prefix: String,
    pub jwt_secret: Vec<u8>,
    /// True when no secret was configured and a random one was generated (development only).
    pub jwt_secret_generated: bool,
    pub jwt_issuer: String,
    pub access_token_ttl: Duration,
    pub bot_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub refresh_reuse_grace: Duration,
    /// How long a live auth session is remembered per process (`SESSION_CACHE_TTL`, 0: never).
    pub session_cache_ttl: Duration,
    /// Most message rows written by one group-commit statement (`SEND_BATCH_MAX`, 1: off).
    pub send_batch_max: usize,
    pub bcrypt_cost: u32,
    pub registration_enabled: bool,
    pub trusted_proxies: Vec<IpNet>,
    pub handle_domain: String,
    pub instance_domain: String,
    pub handle_private_key: Option<String>,
    pub handle_public_key: Option<String>,
    pub smtp_url: Option<String>,
    pub smtp_sender: Option<String>,
    pub livekit_url: Option<String>,
    pub livekit_api_key: Option<String>,
    pub livekit_api_secret: Option<String>,
    pub livekit_token_ttl: Duration,
    pub vapid_public_key: Option<String>,
    pub vapid_private_key: Option<String>,
    pub vapid_subject: Option<String>,
    pub push_endpoint_allowlist: Vec<String>,
    pub media_prefix: String,
    pub media_public_url: String,
    pub media_storage: MediaStorage,
    pub media_local_dir: PathBuf,
    pub s3: S3Config,
    pub media_max_avatar_bytes: u64,
    pub media_max_spaceicon_bytes: u64,
    pub media_max_attachment_bytes: u64,
    pub media_anonymous_uploads: bool,
    pub media_gc_grace: Duration,
    pub ws_heartbeat_interval: Duration,
    pub ws_resume_window: Duration,
    /// Presence transitions reach co-members only through spaces of at most this many members
    /// (0: no limit). Above it every connect would fan out to every member — quadratic in the
    /// space's size; friends and members of smaller shared spaces still receive it, and
    /// `users.presence` answers for anyone in the profile audience.
    pub presence_space_limit: usize,
    /// How long a new `/ws` connection may take to authenticate (spec §7.3: 10 s). Fixed by the
    /// spec, not read from the environment; tests shorten it.
    pub ws_auth_timeout: Duration,
    /// How long a user without attached sessions stays ONLINE (spec §12.8: 15 s). Fixed by the
    /// spec, not read from the environment; tests shorten it.
    pub presence_offline_debounce: Duration,
    pub shutdown_drain: Duration,
    pub request_timeout: Duration,
    /// The longest a connection may take to send a complete request header, new or idle
    /// between keep-alive requests (`HTTP_IDLE_TIMEOUT`).
    pub http_idle_timeout: Duration,
    /// Open connections per client address (`MAX_CONNECTIONS_PER_IP`, 0: no limit).
    pub max_connections_per_ip: usize,
    /// Open connections in all (`MAX_CONNECTIONS`); unset: from the descriptor limit.
    pub max_connections: Option<usize>,
    /// `RATE_LIMITS=off` disables every REST bucket and the `/ws` connect bucket (benchmarks only;
    /// refused in production).
    pub rate_limits: bool,
    pub log_format: LogFormat,
    pub rust_log: String,
    /// When set, `/metrics` answers only requests with `Authorization: Bearer <this>`.
    pub metrics_token: Option<String>,
}

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

const MIB: u64 = 1024 * 1024;

/// Where development looks for PostgreSQL when `DATABASE_URL` is unset.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/alterego";

impl Config {
    /// Reads the process environment, after loading `.env` if present.
    pub fn from_env() -> Result<Config, ConfigError> {
        // A missing .env is normal; a malformed one is reported.
        match dotenvy::dotenv() {
            Ok(_) => {}
            Err(e) if e.not_found() => {}
            Err(e) => return Err(ConfigError(format!(".env: {e}"))),
        }
        Config::from_lookup(|k| std::env::var(k).ok())
    }

    /// Builds the configuration from any key lookup (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let r = Reader { lookup: &lookup };
        let environment = match r.first(&["ENVIRONMENT", "MIKOTO_ENV"]).as_deref() {
            None | Some("development") | Some("dev") | Some("test") => Environment::Development,
            Some("production") | Some("prod") => Environment::Production,
            Some(other) => {
                return Err(ConfigError(format!(
                    "ENVIRONMENT must be `development` or `production`, not `{other}`"
                )));
            }
        };
        let prod = environment == Environment::Production;
        let required = |keys: &[&str], dev_default: &str| -> Result<String, ConfigError> {
            match r.first(keys) {
                Some(v) => Ok(v),
                None if !prod => Ok(dev_default.to_string()),
                None => Err(ConfigError(format!("{} is required in production", keys[0]))),
            }
        };

        let bind_addr = match (r.get("BIND_ADDR"), r.get("SERVER_PORT")) {
            (Some(a), _) => a
                .parse()
                .map_err(|_| ConfigError(format!("BIND_ADDR `{a}` is not a socket address")))?,
            (None, Some(p)) => {
                let port: u16 = p
                    .parse()
                    .map_err(|_| ConfigError(format!("SERVER_PORT `{p}` is not a port")))?;
                SocketAddr::from(([0, 0, 0, 0], port))
            }
            (None, None) => SocketAddr::from(([0, 0, 0, 0], 3511)),
        };
        let public_url = trim_url(required(&["PUBLIC_URL"], "http://localhost:3511")?);
        let web_url = trim_url(required(&["WEB_URL"], "http://localhost:3510")?);
        let cors_origins = match r.get("CORS_ORIGINS") {
            Some(v) if v.trim() == "*" => {
                if prod {
                    return Err(ConfigError("CORS_ORIGINS=* is not allowed in production".into()));
                }
                CorsOrigins::Any
            }
            Some(v) => CorsOrigins::List(split_list(&v).into_iter().map(trim_url).collect()),
            None if prod => {
                return Err(ConfigError("CORS_ORIGINS is required in production".into()));
            }
            None => CorsOrigins::List(vec![web_url.clone()]),
        };

        let database_url_default = r.get("DATABASE_URL").is_none();
        let database_url = required(&["DATABASE_URL"], DEFAULT_DATABASE_URL)?;
        let (jwt_secret, jwt_secret_generated) = match r.first(&["JWT_SECRET", "SECRET"]) {
            Some(s) if s.len() >= 32 => (s.into_bytes(), false),
            Some(_) => return Err(ConfigError("JWT_SECRET must be at least 32 bytes".into())),
            None if prod => return Err(ConfigError("JWT_SECRET is required in production".into())),
            None => {
                let mut key = vec![0u8; 48];
                rand::rng().fill_bytes(&mut key);
                (key, true)
            }
        };
        let jwt_issuer = r.first(&["JWT_ISSUER", "ISSUER"]).unwrap_or_else(|| public_url.clone());

        let access_token_ttl = r.secs("ACCESS_TOKEN_TTL", 3600)?;
        if access_token_ttl < Duration::from_secs(1800) {
            return Err(ConfigError("ACCESS_TOKEN_TTL must be at least 1800 seconds".into()));
        }
        let bcrypt_cost = r.num("BCRYPT_COST", 12u32)?;
        // 4–9 only outside production: the load generator registers tens of thousands of
        // accounts, which at cost 10+ takes longer than the measurement itself.
        let lowest = if prod { 10 } else { 4 };
        if !(lowest..=15).contains(&bcrypt_cost) {
            return Err(ConfigError(
                "BCRYPT_COST must be between 10 and 15 (4–9 are accepted outside production, for benchmarks)".into(),
            ));
        }
        let trusted_proxies = match r.get("TRUSTED_PROXIES") {
            Some(v) => parse_trusted_proxies(&v).map_err(|e| ConfigError(format!("TRUSTED_PROXIES: {e}")))?,
            None => Vec::new(),
        };
        let handle_domain = required(&["HANDLE_DOMAIN"], "localhost")?.trim().to_lowercase();
        let instance_domain = r.get("INSTANCE_DOMAIN").unwrap_or_else(|| handle_domain.clone());

        let media_prefix = {
            let p = r.get("MEDIA_PREFIX").unwrap_or_else(|| "/media".into());
            let p = format!("/{}", p.trim_matches('/'));
            if p == "/" {
                return Err(ConfigError("MEDIA_PREFIX must not be `/`".into()));
            }
            p
        };
        let media_public_url = r
            .get("MEDIA_PUBLIC_URL")
            .map(trim_url)
            .unwrap_or_else(|| format!("{public_url}{media_prefix}"));
        let media_storage = match r.get("MEDIA_STORAGE").as_deref() {
            None | Some("local") => MediaStorage::Local,
            Some("s3") => MediaStorage::S3,
            Some(o) => {
                return Err(ConfigError(format!("MEDIA_STORAGE must be `local` or `s3`, not `{o}`")));
            }
        };
        let s3 = S3Config {
            endpoint: r.get("S3_ENDPOINT"),
            region: r.get("S3_REGION"),
            bucket: r.get("S3_BUCKET"),
            access_key_id: r.first(&["S3_ACCESS_KEY_ID", "S3_ACCESS_KEY"]),
            secret_access_key: r.first(&["S3_SECRET_ACCESS_KEY", "S3_SECRET_KEY"]),
            force_path_style: r.bool("S3_FORCE_PATH_STYLE", true)?,
        };
        if media_storage == MediaStorage::S3 && s3.bucket.is_none() {
            return Err(ConfigError("S3_BUCKET is required when MEDIA_STORAGE=s3".into()));
        }
        let log_format = match r.get("LOG_FORMAT").as_deref() {
            None | Some("text") | Some("pretty") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(o) => {
                return Err(ConfigError(format!("LOG_FORMAT must be `text` or `json`, not `{o}`")));
            }
        };

        let rate_limits = match r.get("RATE_LIMITS").as_deref() {
            None | Some("on") => true,
            Some("off") if !prod => false,
            Some("off") => return Err(ConfigError("RATE_LIMITS=off is not allowed in production".into())),
            Some(o) => return Err(ConfigError(format!("RATE_LIMITS must be `on` or `off`, not `{o}`"))),
        };
        let metrics_token = r.get("METRICS_TOKEN");
        // The endpoint is not rate limited: a short token could be guessed.
        if metrics_token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err(ConfigError("METRICS_TOKEN must be at least 16 characters".into()));
        }
        Ok(Config {
            environment,
            metrics_token,
            rate_limits,
            bind_addr,
            cors_origins,
            database_url_default,
            embedded_database_dir: PathBuf::from(
                r.get("EMBEDDED_DATABASE_DIR")
                    .unwrap_or_else(|| "./data/postgres".into()),
            ),
            database_max_connections: r.num("DATABASE_MAX_CONNECTIONS", 20u32)?,
            automigrate: r.bool("AUTOMIGRATE", true)?,
            redis_url: r.get("REDIS_URL"),
            redis_prefix: r.get("REDIS_PREFIX").unwrap_or_else(|| "alterego".into()),
            jwt_secret,
            jwt_secret_generated,
            jwt_issuer,
            access_token_ttl,
            bot_token_ttl: r.secs("BOT_TOKEN_TTL", 86_400)?,
            refresh_token_ttl: r.secs("REFRESH_TOKEN_TTL", 2_592_000)?,
            refresh_reuse_grace: r.secs("REFRESH_REUSE_GRACE", 30)?,
            session_cache_ttl: r.secs("SESSION_CACHE_TTL", 30)?,
            send_batch_max: r.num("SEND_BATCH_MAX", 64usize)?.max(1),
            bcrypt_cost,
            registration_enabled: r.bool("REGISTRATION_ENABLED", true)?,
            trusted_proxies,
            instance_domain,
            handle_domain,
            handle_private_key: r.get("HANDLE_PRIVATE_KEY"),
            handle_public_key: r.get("HANDLE_PUBLIC_KEY"),
            smtp_url: r.get("SMTP_URL"),
            smtp_sender: r.get("SMTP_SENDER"),
            livekit_url: r.first(&["LIVEKIT_URL", "LIVEKIT_SERVER"]),
            livekit_api_key: r.first(&["LIVEKIT_API_KEY", "LIVEKIT_KEY"]),
            livekit_api_secret: r.first(&["LIVEKIT_API_SECRET", "LIVEKIT_SECRET"]),
            livekit_token_ttl: r.secs("LIVEKIT_TOKEN_TTL", 7200)?,
            vapid_public_key: r.get("VAPID_PUBLIC_KEY"),
            vapid_private_key: r.get("VAPID_PRIVATE_KEY"),
            vapid_subject: r.get("VAPID_SUBJECT"),
            push_endpoint_allowlist: r
                .get("PUSH_ENDPOINT_ALLOWLIST")
                .map(|v| split_list(&v))
                .unwrap_or_default(),
            media_prefix,
            media_public_url,
            media_storage,
            media_local_dir: PathBuf::from(r.get("MEDIA_LOCAL_DIR").unwrap_or_else(|| "./data/media".into())),
            s3,
            media_max_avatar_bytes: r.num("MEDIA_MAX_AVATAR_BYTES", 10 * MIB)?,
            media_max_spaceicon_bytes: r.num("MEDIA_MAX_SPACEICON_BYTES", 10 * MIB)?,
            media_max_attachment_bytes: r.num("MEDIA_MAX_ATTACHMENT_BYTES", 50 * MIB)?,
            media_anonymous_uploads: r.bool("MEDIA_ANONYMOUS_UPLOADS", true)?,
            media_gc_grace: r.secs("MEDIA_GC_GRACE", 86_400)?,
            ws_heartbeat_interval: Duration::from_millis(r.num("WS_HEARTBEAT_INTERVAL_MS", 30_000u64)?),
            ws_resume_window: Duration::from_millis(r.num("WS_RESUME_WINDOW_MS", 120_000u64)?),
            presence_space_limit: r.num("PRESENCE_SPACE_LIMIT", 1000usize)?,
            ws_auth_timeout: Duration::from_secs(10),
            presence_offline_debounce: Duration::from_secs(15),
            shutdown_drain: r.secs("SHUTDOWN_DRAIN", 30)?,
            request_timeout: r.secs("REQUEST_TIMEOUT", 30)?,
            http_idle_timeout: r.positive_secs("HTTP_IDLE_TIMEOUT", 20)?,
            max_connections_per_ip: r.num("MAX_CONNECTIONS_PER_IP", 1000usize)?,
            max_connections: match r.get("MAX_CONNECTIONS") {
                Some(_) => Some(r.num("MAX_CONNECTIONS", 0usize)?).filter(|&n| n > 0),
                None => None,
            },
            log_format,
            rust_log: r.get("RUST_LOG").unwrap_or_else(|| "info".into()),
            public_url,
            web_url,
            database_url,
        })
    }

    pub fn is_production(&self) -> bool {
        self.environment == Environment::Production
    }
}

struct Reader<'a, F: Fn(&str) -> Option<String>> {
    lookup: &'a F,
}

impl<F: Fn(&str) -> Option<String>> Reader<'_, F> {
    /// A set, non-blank value.
    fn get(&self, key: &str) -> Option<String> {
        (self.lookup)(key)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    /// The first key (the alterego name, then Mikoto aliases) that is set.
    fn first(&self, keys: &[&str]) -> Option<String> {
        keys.iter().find_map(|k| self.get(k))
    }

    fn num<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| ConfigError(format!("{key} must be a non-negative integer, not `{v}`"))),
        }
    }

    fn secs(&self, key: &str, default: u64) -> Result<Duration, ConfigError> {
        self.num(key, default).map(Duration::from_secs)
    }

    /// Seconds that must not be zero (a zero timeout would close every connection at once).
    fn positive_secs(&self, key: &str, default: u64) -> Result<Duration, ConfigError> {
        match self.num(key, default)? {
            0 => Err(ConfigError(format!("{key} must be at least 1"))),
            n => Ok(Duration::from_secs(n)),
        }
    }

    fn bool(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(key).map(|v| v.to_ascii_lowercase()).as_deref() {
            None => Ok(default),
            Some("true" | "1" | "yes" | "on") => Ok(true),
            Some("false" | "0" | "no" | "off") => Ok(false),
            Some(v) => Err(ConfigError(format!("{key} must be true or false, not `{v}`"))),
        }
    }
}

fn trim_url(s: String) -> String {
    s.trim().trim_end_matches('/').to_string()
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn zero_configuration_defaults() {
        let c = load(&[]).expect("defaults load");
        assert_eq!(c.environment, Environment::Development);
        assert_eq!(c.database_url, "postgres://postgres@127.0.0.1:5432/alterego");
        assert!(c.database_url_default);
        assert_eq!(c.embedded_database_dir, PathBuf::from("./data/postgres"));
        let set = load(&[("DATABASE_URL", "postgres://u:p@db/alterego")]).expect("loads");
        assert!(!set.database_url_default);
        assert_eq!(c.public_url, "http://localhost:3511");
        assert_eq!(c.media_public_url, "http://localhost:3511/media");
        assert!(c.jwt_secret_generated && c.jwt_secret.len() >= 32);
        assert_eq!(c.cors_origins, CorsOrigins::List(vec!["http://localhost:3510".into()]));
        assert_eq!(c.access_token_ttl, Duration::from_secs(3600));
        assert_eq!(c.bind_addr.port(), 3511);
    }

    #[test]
    fn production_requires_explicit_keys() {
        let err = load(&[("ENVIRONMENT", "production")]).unwrap_err();
        assert!(err.0.contains("PUBLIC_URL"), "{err}");
    }

    #[test]
    fn mikoto_aliases_are_accepted() {
        let c = load(&[
            ("SECRET", "0123456789abcdef0123456789abcdef"),
            ("SERVER_PORT", "9000"),
            ("MIKOTO_ENV", "development"),
        ])
        .expect("loads");
        assert!(!c.jwt_secret_generated);
        assert_eq!(c.bind_addr.port(), 9000);
    }

    #[test]
    fn rejects_bad_values() {
        assert!(load(&[("JWT_SECRET", "short")]).is_err());
        assert!(load(&[("ACCESS_TOKEN_TTL", "600")]).is_err());
        assert!(load(&[("BCRYPT_COST", "3")]).is_err());
        assert!(load(&[("BCRYPT_COST", "16")]).is_err());
        assert!(load(&[("ENVIRONMENT", "production"), ("BCRYPT_COST", "4")]).is_err());
        assert!(load(&[("AUTOMIGRATE", "maybe")]).is_err());
        assert!(load(&[("TRUSTED_PROXIES", "not-a-cidr")]).is_err());
        assert!(load(&[("ENVIRONMENT", "production"), ("CORS_ORIGINS", "*")]).is_err());
        assert!(load(&[("METRICS_TOKEN", "too-short")]).is_err());
        let token = "0123456789abcdef0123";
        assert_eq!(
            load(&[("METRICS_TOKEN", token)]).map(|c| c.metrics_token).ok(),
            Some(Some(token.into()))
        );
    }
}
