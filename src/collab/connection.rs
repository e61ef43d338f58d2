//! One `/collab` socket (spec §9.2, §9.3): binary y-protocols frames in, the room's frames out,
//! with the frame-size, frame-rate, liveness and revocation rules.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message as Ws, WebSocket};
use bytes::Bytes;
use yrs::Update;
use yrs::encoding::read::Cursor;
use yrs::sync::{Message, SyncMessage};
use yrs::updates::decoder::{Decode, Decoder, DecoderV1};

use super::room::{self, CloseCode, Link, Peer};
use super::{Collab, Slot, lock};
use crate::functions::bus::Topic;
use crate::functions::ids::{ChannelId, SpaceId};
use crate::services::auth::Auth;

/// The largest inbound frame (spec §9.2, §13).
pub const MAX_FRAME: usize = 8 * 1024 * 1024;
/// Frames a connection may send per minute (spec §9.3).
const FRAMES_PER_MINUTE: u32 = 1200;
const PING_EVERY: Duration = Duration::from_secs(30);
/// A connection that sends nothing for this long is closed.
const IDLE: Duration = Duration::from_secs(60);
/// Frames queued for a peer before it counts as too slow.
const QUEUE: usize = 1024;
/// An empty Y update (no structs, no deletions): the answer of a client with nothing new.
const EMPTY_UPDATE: &[u8] = &[0, 0];

/// What the upgrade route established before the upgrade (spec §9.1).
pub struct Ticket {
    pub auth: Auth,
    pub space: SpaceId,
    pub channel: ChannelId,
    /// SEND_MESSAGES in the channel at upgrade time.
    pub writer: bool,
}

pub async fn run(collab: Collab, mut socket: WebSocket, ticket: Ticket) {
    let key = ticket.auth.revocation_key();
    let session_topic = Topic::session(key);
    collab.bus().subscribe(&session_topic).await;
    let code = match session(&collab, &mut socket, &ticket).await {
        Ok(code) | Err(code) => code,
    };
    collab.bus().unsubscribe(&session_topic).await;
    let frame = CloseFrame {
        code: code.code,
        reason: code.reason.into(),
    };
    let _ = socket.send(Ws::Close(Some(frame))).await;
}

/// The connection's life; returns how it ends.
async fn session(collab: &Collab, socket: &mut WebSocket, ticket: &Ticket) -> Result<CloseCode, CloseCode> {
    // A revocation published before the session topic was subscribed was missed: check.
    if !ticket.auth.is_live(collab.db()).await {
        return Err(CloseCode::REVOKED);
    }
    let conn = collab.next_conn();
    let (link, mut frames, closer) = Link::new(QUEUE);
    let slot = join(collab, ticket, conn, link.clone()).await?;
    let mut peer = Local {
        collab,
        ticket,
        slot: &slot,
        conn,
        link: &link,
        told: Told::default(),
    };
    let ended = pump(&mut peer, socket, &mut frames, &closer).await;
    let (removal, empty) = {
        let mut room = lock(&slot);
        let removal = room.leave(conn);
        (removal, room.peer_count() == 0)
    };
    if let Some(removal) = removal {
        collab.relay(ticket.channel, removal).await;
    }
    if empty {
        let idle_compaction = lock(&slot).pending_updates > 0;
        collab.forget(ticket.channel, &slot).await;
        if idle_compaction {
            collab.compact(slot);
        }
    }
    ended
}

/// Adds the connection to its room (a room that was just closed is made again).
async fn join(collab: &Collab, ticket: &Ticket, conn: room::ConnId, link: Link) -> Result<Arc<Slot>, CloseCode> {
    for _ in 0..3 {
        let slot = collab.open(ticket.channel, ticket.space).await.map_err(|e| {
            tracing::warn!(channel = %ticket.channel, error = %e, "collab room could not be loaded");
            CloseCode::INTERNAL
        })?;
        let mut room = lock(&slot);
        if room.closed {
            continue;
        }
        room.join(
            conn,
            Peer::new(
                link.clone(),
                ticket.auth.user_id,
                ticket.auth.revocation_key(),
                ticket.writer,
            ),
        );
        drop(room);
        return Ok(slot);
    }
    Err(CloseCode::INTERNAL)
}

/// One connection's place in its room, and the notices it has already been sent.
struct Local<'a> {
    collab: &'a Collab,
    ticket: &'a Ticket,
    slot: &'a Arc<Slot>,
    conn: room::ConnId,
    link: &'a Link,
    told: Told,
}

async fn pump(
    peer: &mut Local<'_>,
    socket: &mut WebSocket,
    frames: &mut tokio::sync::mpsc::Receiver<Bytes>,
    closer: &room::Closer,
) -> Result<CloseCode, CloseCode> {
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.reset();
    let mut last_heard = Instant::now();
    let mut window = (Instant::now(), 0u32);
    loop {
        tokio::select! {
            biased;
            code = closer.closed() => {
                if code == CloseCode::GOING_AWAY {
                    return drain(peer, socket).await;
                }
                return Err(code);
            }
            out = frames.recv() => {
                let Some(out) = out else { return Err(CloseCode::INTERNAL) };
                if socket.send(Ws::Binary(out)).await.is_err() {
                    return Ok(CloseCode::GOING_AWAY);
                }
            }
            inbound = socket.recv() => {
                let msg = match inbound {
                    None => return Ok(CloseCode::GOING_AWAY),
                    Some(Err(e)) => return Err(stop_for(e)),
                    Some(Ok(msg)) => msg,
                };
                last_heard = Instant::now();
                match msg {
                    Ws::Binary(bytes) => {
                        if window.0.elapsed() >= Duration::from_secs(60) {
                            window = (Instant::now(), 0);
                        }
                        window.1 += 1;
                        if window.1 > FRAMES_PER_MINUTE {
                            return Err(CloseCode::RATE);
                        }
                        handle(peer, bytes).await?;
                    }
                    Ws::Text(_) => return Err(CloseCode::TEXT),
                    Ws::Close(_) => return Ok(CloseCode::GOING_AWAY),
                    Ws::Ping(_) | Ws::Pong(_) => {}
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() >= IDLE {
                    return Err(CloseCode::TIMED_OUT);
                }
                if socket.send(Ws::Ping(Bytes::new())).await.is_err() {
                    return Ok(CloseCode::GOING_AWAY);
                }
            }
        }
    }
}

/// Graceful shutdown: the close frame goes out first, then the frames the client sent before it
/// saw it are still applied and persisted (nothing it believes sent is lost), until its close
/// frame arrives or 3 s pass.
async fn drain(peer: &mut Local<'_>, socket: &mut WebSocket) -> Result<CloseCode, CloseCode> {
    let code = CloseCode::GOING_AWAY;
    let frame = CloseFrame {
        code: code.code,
        reason: code.reason.into(),
    };
    if socket.send(Ws::Close(Some(frame))).await.is_err() {
        return Ok(code);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline, socket.recv()).await {
        match msg {
            Ws::Binary(bytes) => handle(peer, bytes).await?,
            Ws::Close(_) => break,
            _ => {}
        }
    }
    Ok(code)
}

/// Auth messages already sent (once per reason is enough).
#[derive(Default)]
struct Told {
    read_only: bool,
    too_large: bool,
}

/// An oversized frame (spec §9.2: 1009) is a capacity error of the WebSocket library.
fn stop_for(error: axum::Error) -> CloseCode {
    match error.into_inner().downcast::<tungstenite::Error>() {
        Ok(e) if matches!(*e, tungstenite::Error::Capacity(_)) => CloseCode::TOO_BIG,
        _ => CloseCode::PROTOCOL,
    }
}

/// Every y-protocols message of one frame (several may be concatenated); `None` when the
/// frame is malformed.
pub fn decode_frame(bytes: &[u8]) -> Option<Vec<Message>> {
    // The decoder is third-party code fed with untrusted bytes: a panic must end this frame,
    // not the process.
    std::panic::catch_unwind(|| {
        let mut decoder = DecoderV1::new(Cursor::new(bytes));
        let mut messages = Vec::new();
        // Read until the frame is used up: a message cut short is an error, not the end.
        while decoder.read_to_end().is_ok_and(|rest| !rest.is_empty()) {
            messages.push(Message::decode(&mut decoder).ok()?);
        }
        Some(messages)
    })
    .ok()
    .flatten()
}

async fn handle(peer: &mut Local<'_>, bytes: Bytes) -> Result<(), CloseCode> {
    let messages = decode_frame(&bytes).ok_or(CloseCode::PROTOCOL)?;
    let (collab, ticket, slot, conn, link) = (peer.collab, peer.ticket, peer.slot, peer.conn, peer.link);
    for message in messages {
        match message {
            Message::Sync(SyncMessage::SyncStep1(sv)) => link.send(lock(slot).step2(&sv)),
            Message::Sync(SyncMessage::SyncStep2(update) | SyncMessage::Update(update)) => {
                write(peer, update).await?;
            }
            Message::Awareness(update) => {
                let message = room::frame(&Message::Awareness(update.clone()));
                lock(slot).awareness(Some(conn), update, message.clone());
                collab.relay(ticket.channel, message).await;
            }
            Message::AwarenessQuery => {
                if let Some(all) = lock(slot).awareness_frame() {
                    link.send(all);
                }
            }
            // Clients' auth messages are ignored; unknown types too.
            Message::Auth(_) | Message::Custom(..) => {}
        }
    }
    Ok(())
}

/// A peer's update: refused for a reader or a full document; otherwise persisted, then applied
/// and sent to the other peers here and on other instances.
async fn write(peer: &mut Local<'_>, update: Vec<u8>) -> Result<(), CloseCode> {
    let (collab, ticket, slot, conn, link) = (peer.collab, peer.ticket, peer.slot, peer.conn, peer.link);
    let told = &mut peer.told;
    if update.as_slice() == EMPTY_UPDATE {
        return Ok(());
    }
    let (writer, too_large) = {
        let mut room = lock(slot);
        let writer = room.peer_mut(conn).is_some_and(|p| p.writer);
        (writer, room.too_large(update.len()))
    };
    if !writer {
        if !std::mem::replace(&mut told.read_only, true) {
            link.send(room::frame(&Message::Auth(Some("read-only".into()))));
        }
        return Ok(());
    }
    if too_large {
        if !std::mem::replace(&mut told.too_large, true) {
            link.send(room::frame(&Message::Auth(Some("document-too-large".into()))));
        }
        return Ok(());
    }
    if Update::decode_v1(&update).is_err() {
        return Err(CloseCode::PROTOCOL);
    }
    let size = update.len();
    if !collab.inner.writer.append(ticket.channel, update.clone()).await {
        return Err(CloseCode::INTERNAL);
    }
    let (relay, compact) = {
        let mut room = lock(slot);
        let relay = room.apply_local(conn, update);
        (relay, room.appended(size))
    };
    collab.relay(ticket.channel, relay).await;
    if compact {
        collab.compact(slot.clone());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use yrs::updates::encoder::Encode;

    #[test]
    fn several_messages_in_one_frame_are_all_read() {
        let mut frame = Message::AwarenessQuery.encode_v1();
        frame.extend(Message::Sync(SyncMessage::SyncStep1(Default::default())).encode_v1());
        frame.extend(Message::Auth(Some("x".into())).encode_v1());
        let messages = decode_frame(&frame).unwrap();
        assert_eq!(messages.len(), 3);
        assert!(matches!(messages[1], Message::Sync(SyncMessage::SyncStep1(_))));
    }

    #[test]
    fn truncated_and_garbage_frames_are_refused() {
        let full = Message::Sync(SyncMessage::Update(vec![1, 2, 3, 4])).encode_v1();
        assert!(decode_frame(&full[..full.len() - 1]).is_none());
        assert!(decode_frame(&[0, 9]).is_none(), "unknown sync sub-type");
        assert!(decode_frame(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]).is_none());
        assert_eq!(decode_frame(&[]).map(|m| m.len()), Some(0));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Random bytes never panic the decoder, and whatever decodes also applies (or is
        /// refused) without panicking.
        #[test]
        fn random_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Some(messages) = decode_frame(&bytes) {
                let mut room = room::Room::new(ChannelId(uuid::Uuid::nil()), SpaceId(uuid::Uuid::nil()));
                for m in messages {
                    if let Message::Sync(SyncMessage::Update(u) | SyncMessage::SyncStep2(u)) = m {
                        let _ = room.apply(&u);
                    }
                }
            }
        }
    }
}
