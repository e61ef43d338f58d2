//! Extractors and layers between HTTP and the handlers.

pub mod access_log;
pub mod auth;
pub mod client_ip;
pub mod idempotency;
pub mod json;
pub mod metrics;
pub mod nul;
pub mod path;
pub mod rate_limit;
pub mod request_id;
pub mod security;
