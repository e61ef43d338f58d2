//! Logic with no HTTP and no SQL in it.

pub mod attestation;
pub mod bus;
pub mod client_ip;
pub mod handles;
pub mod ids;
pub mod images;
pub mod jwt;
pub mod livekit;
pub mod mail;
pub mod media;
pub mod media_ref;
pub mod notification;
pub mod passwords;
pub mod patch;
pub mod permissions;
pub mod process_stats;
pub mod push_transport;
pub mod query;
pub mod rate_limit;
pub mod ssrf;
pub mod time;
pub mod tokens;
pub mod validation;
pub mod verification;
pub mod webpush;
