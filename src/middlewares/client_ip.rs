//! The client IP (spec §11.4): the TCP peer, or for a trusted proxy the first untrusted
//! `X-Forwarded-For` hop from the right. Computed once per request by [`layer`] and kept in the
//! request's extensions, where rate limiting, `/ws`, uploads and media serving read it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;

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
        ClientIp(client_ip(peer, header, &state.config.trusted_proxies))
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
