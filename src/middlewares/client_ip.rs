//! The client IP (spec §11.4): the TCP peer, or for a trusted proxy the first untrusted
//! `X-Forwarded-For` hop from the right. Computed once per request by [`layer`] and kept in the
//! request's extensions, where rate limiting, `/ws`, uploads and media serving read it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;

use crate::functions::client_ip::client_ip;
use crate::state::AppState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl ClientIp {
    /// The address [`layer`] recorded (the TCP peer if the layer did not run).
    pub fn of(parts: &Parts) -> ClientIp {
        parts
            .extensions
            .get::<ClientIp>()
            .copied()
            .unwrap_or_else(|| ClientIp(peer(&parts.extensions)))
    }

    fn compute(parts: &Parts, state: &AppState) -> ClientIp {
        let peer = peer(&parts.extensions);
        let forwarded: Vec<&str> = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let joined = forwarded.join(", ");
        let header = if forwarded.is_empty() {
            None
        } else {
            Some(joined.as_str())
        };
        let trusted = &state.config.trusted_proxies;
        if FORWARDED_WARNING.first(header.is_some(), trusted) {
            tracing::warn!(
                peer = %peer,
                "requests carry X-Forwarded-For but TRUSTED_PROXIES is unset, so the header is ignored: \
                 behind a proxy every user shares the proxy's address and so its per-IP rate-limit \
                 buckets. Set TRUSTED_PROXIES to the proxy's address or network (docs/operations.md). \
                 Logged once."
            );
        }
        ClientIp(client_ip(peer, header, trusted))
    }
}

/// Whether the warning about an ignored `X-Forwarded-For` has been logged in this process.
pub fn forwarded_warning_given() -> bool {
    FORWARDED_WARNING.0.load(Ordering::Relaxed)
}

static FORWARDED_WARNING: ForwardedWarning = ForwardedWarning(AtomicBool::new(false));

/// The once-per-process warning about `X-Forwarded-For` with no trusted proxy configured: the
/// usual sign of a deployment behind a proxy that forgot `TRUSTED_PROXIES`.
struct ForwardedWarning(AtomicBool);

impl ForwardedWarning {
    /// True exactly once: for the first request carrying the header while no proxy is trusted.
    fn first(&self, has_header: bool, trusted: &[IpNet]) -> bool {
        // A plain load first: the common case must not write to a shared cache line.
        has_header && trusted.is_empty() && !self.0.load(Ordering::Relaxed) && !self.0.swap(true, Ordering::Relaxed)
    }
}

fn peer(extensions: &axum::http::Extensions) -> IpAddr {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// Computes the client IP once and records it in the request's extensions.
pub async fn layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let ip = ClientIp::compute(&parts, &state);
    parts.extensions.insert(ip);
    next.run(Request::from_parts(parts, body)).await
}

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp::of(parts))
    }
}

impl aide::OperationInput for ClientIp {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forwarded_warning_fires_once_and_only_without_trusted_proxies() {
        let warning = ForwardedWarning(AtomicBool::new(false));
        let proxy: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("test net")];
        assert!(!warning.first(false, &[]), "no header, nothing to warn about");
        assert!(!warning.first(true, &proxy), "a trusted proxy is configured");
        assert!(warning.first(true, &[]));
        assert!(!warning.first(true, &[]), "once per process");
    }
}
