//! One `/ws` connection (spec §7.3, §7.9): `AWAIT_AUTH` with its deadline, then `ACTIVE` —
//! draining the session's outbound queue, reading commands, and the heartbeat. Everything that
//! outlives the socket (the session, its `seq` and replay ring) lives in the hub.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures_util::SinkExt;
use tokio::time::Instant;
use uuid::Uuid;

use super::Gateway;
use super::protocol::{self, Command, InvalidSessionPayload, KnownOp};
use super::session::{Close, Conn};
use crate::functions::ids::UserId;
use crate::services::auth::Auth;

/// At most this many commands per [`COMMAND_WINDOW`] per connection (spec §7.4).
const COMMAND_LIMIT: usize = 120;
const COMMAND_WINDOW: Duration = Duration::from_secs(60);
/// How long a close frame may wait for a congested socket.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a connection stops.
enum Stop {
    /// Send this close frame.
    Close(Close),
    /// The peer is gone (or closed itself); `normal` when it closed with 1000.
    Gone { normal: bool },
}

/// Counts open sockets for the gauge and for shutdown.
struct OpenGuard(Gateway);

impl OpenGuard {
    fn new(gateway: &Gateway) -> OpenGuard {
        gateway.inner.open.fetch_add(1, Ordering::SeqCst);
        metrics::gauge!("alterego_ws_connections").increment(1.0);
        OpenGuard(gateway.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.inner.open.fetch_sub(1, Ordering::SeqCst);
        metrics::gauge!("alterego_ws_connections").decrement(1.0);
    }
}

pub async fn run(mut socket: WebSocket, gateway: Gateway, token: Option<String>) {
    let open = OpenGuard::new(&gateway);
    let conn = Conn::new();
    // Boxed: the authentication phase's state does not stay in an idle connection's task.
    let established = Box::pin(establish(&mut socket, &gateway, &conn, token)).await;
    let (sid, user) = match established {
        Ok(v) => v,
        Err(Stop::Close(close)) => {
            Box::pin(send_close(&mut socket, close)).await;
            return;
        }
        Err(Stop::Gone { .. }) => return,
    };
    // The rest of the connection's life runs in a task of its own that holds only what an
    // active connection needs (not this function's state).
    let heartbeat = gateway.config().ws_heartbeat_interval;
    tokio::spawn(async move {
        let end = match active(&mut socket, &gateway, &conn, user, heartbeat).await {
            Stop::Close(close) => {
                Box::pin(send_close(&mut socket, close)).await;
                false
            }
            Stop::Gone { normal } => normal,
        };
        gateway.detach(sid, &conn, end);
        drop(open);
    });
}

/// Sends a close frame, then waits (briefly) for the peer's: closing the TCP connection first
/// could reset it before the peer has read the close frame.
async fn send_close(socket: &mut WebSocket, close: Close) {
    let frame = CloseFrame {
        code: close.code,
        reason: Utf8Bytes::from_static(close.reason),
    };
    let deadline = Instant::now() + CLOSE_TIMEOUT;
    if tokio::time::timeout_at(deadline, socket.send(Message::Close(Some(frame))))
        .await
        .is_err()
    {
        return;
    }
    let _ = tokio::time::timeout_at(deadline, async {
        while let Some(Ok(msg)) = socket.recv().await {
            if let Message::Close(_) = msg {
                break;
            }
        }
    })
    .await;
}

/// An oversized inbound frame (spec §7.2: 1009) is a capacity error of the WebSocket library.
fn stop_for(error: axum::Error) -> Stop {
    match error.into_inner().downcast::<tungstenite::Error>() {
        Ok(e) if matches!(*e, tungstenite::Error::Capacity(_)) => Stop::Close(Close::TOO_BIG),
        _ => Stop::Gone { normal: false },
    }
}

/// A token that fails verification closes with 4004; a server error with 4000.
async fn verify(gateway: &Gateway, token: &str) -> Result<Auth, Stop> {
    gateway
        .verify(token)
        .await
        .map_err(|e| Stop::Close(super::close_for(e)))
}

/// `AWAIT_AUTH` (spec §7.3): returns the session and its user.
async fn establish(
    socket: &mut WebSocket,
    gateway: &Gateway,
    conn: &Arc<Conn>,
    token: Option<String>,
) -> Result<(Uuid, UserId), Stop> {
    if let Some(token) = token {
        return gateway.authenticate(&token, conn).await.map_err(Stop::Close);
    }
    let mut deadline = Instant::now() + gateway.config().ws_auth_timeout;
    loop {
        let msg = match tokio::time::timeout_at(deadline, socket.recv()).await {
            Err(_) => return Err(Stop::Close(Close::NOT_AUTHENTICATED)),
            Ok(None) => return Err(Stop::Gone { normal: false }),
            Ok(Some(Err(e))) => return Err(stop_for(e)),
            Ok(Some(Ok(m))) => m,
        };
        let text = match msg {
            Message::Text(t) => t,
            Message::Binary(_) => return Err(Stop::Close(Close::DECODE)),
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Close(_) => return Err(Stop::Gone { normal: false }),
        };
        match protocol::decode(text.as_str()) {
            Err(_) => return Err(Stop::Close(Close::DECODE)),
            Ok(Command::Authenticate { token }) => {
                return gateway.authenticate(&token, conn).await.map_err(Stop::Close);
            }
            Ok(Command::Resume { token, session_id, seq }) => {
                let auth = verify(gateway, &token).await?;
                match gateway.resume(auth, session_id, seq, conn).await {
                    Ok(_) => return Ok((session_id, auth.user_id)),
                    Err(reason) => {
                        let frame = protocol::control("invalidSession", &InvalidSessionPayload { reason });
                        if socket.send(Message::Text(Utf8Bytes::from(frame))).await.is_err() {
                            return Err(Stop::Gone { normal: false });
                        }
                        deadline = Instant::now() + gateway.config().ws_auth_timeout;
                    }
                }
            }
            Ok(Command::Invalid(KnownOp::Authenticate | KnownOp::Resume)) => {
                return Err(Stop::Close(Close::AUTH_FAILED));
            }
            Ok(_) => return Err(Stop::Close(Close::NOT_AUTHENTICATED)),
        }
    }
}

/// The command-rate window (spec §7.4): timestamps, in ms since the connection began, of the
/// last commands (allocated only once the connection sends commands).
#[derive(Default)]
struct CommandRate {
    recent: VecDeque<u32>,
}

impl CommandRate {
    fn allow(&mut self, start: Instant, now: Instant) -> bool {
        let at = u32::try_from(now.duration_since(start).as_millis()).unwrap_or(u32::MAX);
        let window = u32::try_from(COMMAND_WINDOW.as_millis()).unwrap_or(u32::MAX);
        let recent = &mut self.recent;
        while recent.front().is_some_and(|t| at.saturating_sub(*t) >= window) {
            recent.pop_front();
        }
        if recent.len() >= COMMAND_LIMIT {
            return false;
        }
        recent.push_back(at);
        true
    }
}

/// `ACTIVE`: until the socket or the session ends.
async fn active(
    socket: &mut WebSocket,
    gateway: &Gateway,
    conn: &Arc<Conn>,
    user: UserId,
    heartbeat: Duration,
) -> Stop {
    let heartbeat = heartbeat.max(Duration::from_millis(50));
    // Dead after 75 s of silence with the default 30 s heartbeat (spec §7.9).
    let dead_after = heartbeat * 5 / 2;
    let start = Instant::now();
    let mut ticker = tokio::time::interval_at(start + heartbeat, heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_inbound = start;
    let mut rate = CommandRate::default();
    // `ready`, or a resume's replay, is already queued.
    if let Err(stop) = Box::pin(flush(socket, conn)).await {
        return stop;
    }
    loop {
        tokio::select! {
            biased;
            _ = conn.wait() => {
                if let Err(stop) = Box::pin(flush(socket, conn)).await {
                    return stop;
                }
            }
            msg = socket.recv() => {
                let msg = match msg {
                    None => return Stop::Gone { normal: false },
                    Some(Err(e)) => return stop_for(e),
                    Some(Ok(m)) => m,
                };
                let now = Instant::now();
                last_inbound = now;
                let text = match msg {
                    Message::Text(t) => t,
                    Message::Binary(_) => return Stop::Close(Close::DECODE),
                    Message::Ping(_) | Message::Pong(_) => continue,
                    Message::Close(frame) => {
                        return Stop::Gone { normal: frame.is_some_and(|f| f.code == 1000) };
                    }
                };
                if !rate.allow(start, now) {
                    return Stop::Close(Close::RATE_LIMITED);
                }
                match protocol::decode(text.as_str()) {
                    Err(_) => return Stop::Close(Close::DECODE),
                    Ok(Command::Ping { data }) => {
                        conn.push(super::session::Item::Control(Utf8Bytes::from(protocol::pong(&data))));
                    }
                    Ok(Command::TypingStart { channel_id }) => Box::pin(gateway.typing(user, channel_id)).await,
                    // `authenticate`/`resume` once active, unknown ops, invalid data: ignored.
                    Ok(_) => {}
                }
            }
            _ = ticker.tick() => {
                if last_inbound.elapsed() >= dead_after {
                    return Stop::Close(Close::TIMED_OUT);
                }
                if let Err(stop) = Box::pin(write(socket, conn, vec![Message::Ping(Bytes::new())])).await {
                    return stop;
                }
                // The write may have taken the wake-up of frames queued meanwhile.
                if let Err(stop) = Box::pin(flush(socket, conn)).await {
                    return stop;
                }
            }
        }
    }
}

/// Writes everything queued; a close requested meanwhile (overflow, revocation, replacement,
/// shutdown) interrupts a write stuck on a congested socket.
async fn flush(socket: &mut WebSocket, conn: &Conn) -> Result<(), Stop> {
    loop {
        let (items, close) = conn.take();
        if let Some(close) = close {
            return Err(Stop::Close(close));
        }
        if items.is_empty() {
            return Ok(());
        }
        let messages = items.iter().map(|i| Message::Text(i.text())).collect();
        write(socket, conn, messages).await?;
    }
}

async fn write(socket: &mut WebSocket, conn: &Conn, messages: Vec<Message>) -> Result<(), Stop> {
    let send = async {
        for m in messages {
            socket.feed(m).await?;
        }
        socket.flush().await
    };
    let closing = async {
        loop {
            if let Some(close) = conn.closing() {
                return close;
            }
            conn.wait().await;
        }
    };
    tokio::select! {
        r = send => r.map_err(|_| Stop::Gone { normal: false }),
        close = closing => Err(Stop::Close(close)),
    }
}

#[cfg(test)]
async fn active_sized(mut socket: WebSocket, gateway: Gateway, conn: Arc<Conn>, user: UserId, heartbeat: Duration) {
    active(&mut socket, &gateway, &conn, user, heartbeat).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size5<A, B, C, D, E, F: std::future::Future>(_: fn(A, B, C, D, E) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// An idle connection's task holds this future: keep it small (the memory per idle
    /// connection is measured with `examples/ws_memory.rs`). Debug builds lay futures out
    /// larger than release builds.
    #[test]
    fn an_active_connection_is_small() {
        let size = size5(active_sized);
        assert!(size <= 1600, "the active connection's future grew to {size} bytes");
    }
}
