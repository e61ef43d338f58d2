//! Tables and aggregates: row types, wire models and the SQL that reads and writes them.
//! Entities know SQL and nothing of HTTP.

pub mod accounts;
pub mod handles;
pub mod media;
pub mod password_resets;
pub mod sessions;
pub mod users;
