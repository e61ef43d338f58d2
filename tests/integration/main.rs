//! The integration tests: one test binary (crates.io's layout), so the crate and the harness
//! are linked once instead of once per file.
//!
//! `common` is the harness (a real server per test, its database, Redis namespace, media
//! storage and clients) and the shared fixture builders; every other module is one area of
//! the spec.

mod common;

mod account;
mod authorization;
mod bots;
mod bus;
mod chaos;
mod collab;
mod collab_client;
mod community;
mod constraints;
mod contract;
mod conversations;
mod docs_browser;
mod fuzz;
mod gateway;
mod handles;
mod hardening;
mod http_contract;
mod import;
mod media;
mod node_checks;
mod openapi_validator;
mod ops;
mod pagination;
mod push;
mod rate_limit;
mod ts_client;
mod users;
