//! The HTTP/1.1 accept loop. alterego runs its own rather than `axum::serve` because that one
//! has no header-read or idle timeout and no cap on connections, so a client that opens
//! connections and never finishes a request held them for ever (issue 17, slowloris).

mod admission;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tower::ServiceExt;
use tower_http::normalize_path::NormalizePath;

use crate::error::{ErrorBody, ErrorCode};
pub use admission::{Admission, Refusal};

/// How the accept loop limits connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// The longest a connection may take to send a complete request header: a new
    /// connection, and a keep-alive connection waiting between requests.
    pub idle_timeout: Duration,
    /// Open connections per peer address (0: no limit).
    pub per_ip: usize,
    /// Open connections in all.
    pub total: usize,
}

/// Refusals answered at once: a flood of refused connections cannot pile up writers.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;

/// Serves `app` on `listener` until `stop` resolves; then stops accepting, asks every
/// connection to finish its request in flight and close, and returns when all have.
/// Upgraded connections (`/ws`, `/collab`) have left hyper by then; their subsystems close them.
pub async fn run(
    listener: TcpListener,
    app: NormalizePath<Router>,
    limits: ConnectionLimits,
    stop: impl Future<Output = ()>,
) {
    let admission = Admission::new(limits.per_ip, limits.total);
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
    let (stopping_tx, stopping) = watch::channel(false);
    // Every connection task holds a clone of `open`; `closed.recv()` returns once all are gone.
    let (open, mut closed) = mpsc::channel::<()>(1);
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let slot = match admission.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                refuse(tcp, peer, refusal, &refusals);
                continue;
            }
        };
        // Events are small frames that must leave at once: no Nagle delay.
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let stopping = stopping.clone();
        let open = open.clone();
        tokio::spawn(async move {
            serve_connection(Counted { tcp, _slot: slot }, peer, app, limits.idle_timeout, stopping).await;
            drop(open);
        });
    }
    drop(listener);
    let _ = stopping_tx.send(true);
    drop(open);
    let _ = closed.recv().await;
}

async fn serve_connection(
    tcp: Counted,
    peer: SocketAddr,
    app: NormalizePath<Router>,
    idle_timeout: Duration,
    mut stopping: watch::Receiver<bool>,
) {
    let service = app.map_request(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        req
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(idle_timeout)
        .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service))
        .with_upgrades();
    tokio::pin!(conn);
    let stop = async move {
        // The guard `wait_for` returns must not live across the await below (it is not Send).
        let _ = stopping.wait_for(|s| *s).await.is_ok();
    };
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stop => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        // Timeouts, resets and malformed requests are the client's business, not the operator's.
        tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
    }
}

/// An admitted connection with its place: the place is freed when the socket is dropped, which
/// for an upgraded `/ws` or `/collab` connection is when the WebSocket closes, not when hyper
/// hands it over — so WebSockets count against the limits too.
struct Counted {
    tcp: TcpStream,
    _slot: admission::Slot,
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// Answers a connection that may not be served with a JSON error and closes it.
fn refuse(mut tcp: TcpStream, peer: SocketAddr, refusal: Refusal, refusals: &Arc<Semaphore>) {
    let reason = match refusal {
        Refusal::PerAddress => "per_address",
        Refusal::Total => "total",
    };
    metrics::counter!("alterego_connections_refused_total", "reason" => reason).increment(1);
    tracing::debug!(peer = %peer, reason, "connection refused");
    // Without a free writer the connection is simply closed.
    let Ok(permit) = refusals.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let response = refusal_response(refusal);
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            tcp.write_all(&response).await?;
            tcp.shutdown().await
        })
        .await;
        drop(permit);
    });
}

/// The whole HTTP response for a refused connection, in the API's error shape.
fn refusal_response(refusal: Refusal) -> Vec<u8> {
    let (status, code, message) = match refusal {
        Refusal::PerAddress => (
            "429 Too Many Requests",
            ErrorCode::RateLimited,
            "too many open connections from this address",
        ),
        Refusal::Total => (
            "503 Service Unavailable",
            ErrorCode::ServiceUnavailable,
            "the server holds as many connections as it can",
        ),
    };
    let body = ErrorBody {
        code,
        message: message.into(),
        field: None,
        retry_after: Some(1.0),
        request_id: None,
    };
    let body = serde_json::to_string(&body).unwrap_or_default();
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Errors of one incoming connection (reset before it was accepted) are skipped; others — out
/// of descriptors above all — are logged and the loop pauses instead of spinning.
async fn accept_failed(e: &std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(e.kind(), ConnectionAborted | ConnectionReset | ConnectionRefused) {
        return;
    }
    tracing::warn!(error = %e, "accept failed; pausing");
    metrics::counter!("alterego_accept_errors_total").increment(1);
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_complete_json_responses() {
        let text = String::from_utf8(refusal_response(Refusal::PerAddress)).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 429 "));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["code"], "RateLimited");
        assert_eq!(json["retryAfter"], 1.0);
        let text = String::from_utf8(refusal_response(Refusal::Total)).unwrap();
        assert!(text.starts_with("HTTP/1.1 503 "));
        assert!(text.contains("\"ServiceUnavailable\""));
    }
}
