//! Domain operations that more than one caller needs (routes, the gateway, background tasks).
//! They take plain types — ids, `Option<&str>` — never extractors, and reach sockets only through
//! events on the bus.

pub mod access;
pub mod auth;
pub mod bots;
pub mod members;
pub mod messages;
pub mod profiles;
pub mod push;
pub mod send_batch;
pub mod session_cache;
