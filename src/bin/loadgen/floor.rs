//! `floor`: the least a server can do for the `fanout` scenario, to measure what this machine's
//! kernel costs by itself (issue 18). It accepts the same WebSocket connections, answers
//! `authenticate` with `ready`, and writes every posted message to every socket as one text
//! frame shaped like alterego's `messages.onCreate`, encoded once — nothing else: no tokens, no
//! database, no bus, no sessions, no WebSocket library after the handshake, one `write` per
//! socket per message (or per burst of queued messages).
//!
//! ```text
//! alterego-loadgen floor --listen 127.0.0.1:4000
//! alterego-loadgen fanout --state FILE --ws-urls ws://127.0.0.1:4000/ws \
//!     --send-url http://127.0.0.1:4000/messages --server-pid <floor pid>
//! ```
//! One port serves both: a request starting `GET` is a WebSocket upgrade, anything else a
//! plain HTTP/1.1 request (keep-alive) whose JSON body's `content` is broadcast; it answers
//! `200 {}` once the frame is queued to every socket.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::{Failure, Options};

/// Frames a slow socket may fall behind before it skips some (the workers would count them
/// as lost, so a run shows it).
const BACKLOG: usize = 4096;

static SEQ: AtomicU64 = AtomicU64::new(0);

pub async fn floor(opts: &Options) -> Result<(), Failure> {
    let listen: SocketAddr = opts.get("listen")?.parse().map_err(|_| "--listen must be an IP:port")?;
    let listener = TcpListener::bind(listen).await?;
    eprintln!(
        "alterego-loadgen floor: listening on {listen} (pid {})",
        std::process::id()
    );
    let (frames, _) = broadcast::channel::<Bytes>(BACKLOG);
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("alterego-loadgen floor: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let frames = frames.clone();
        tokio::spawn(async move {
            let mut first = [0u8; 4];
            let upgrade = matches!(tcp.peek(&mut first).await, Ok(n) if n >= 3 && &first[..3] == b"GET");
            let result = if upgrade {
                socket(tcp, frames.subscribe()).await
            } else {
                http(tcp, frames).await
            };
            if let Err(e) = result {
                eprintln!("alterego-loadgen floor: connection: {e}");
            }
        });
    }
}

/// A WebSocket with no library above the socket: the handshake answered by hand, the client's
/// `authenticate` frame read and ignored, `ready` written; then each broadcast frame — encoded
/// once for all sockets — goes out with one `write`, together with any frames queued behind it.
async fn socket(tcp: TcpStream, mut frames: broadcast::Receiver<Bytes>) -> Result<(), Failure> {
    let mut reader = BufReader::new(tcp);
    let Some(key) = read_head(&mut reader, "sec-websocket-key").await? else {
        return Ok(());
    };
    let accept = derive_accept_key(key.ok_or("no Sec-WebSocket-Key")?.as_bytes());
    let mut tcp = reader.into_inner();
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await?;
    // The client sends `authenticate` and waits for `ready`: one read holds it (its bytes are
    // not needed).
    let mut scratch = [0u8; 4096];
    if tcp.read(&mut scratch).await? == 0 {
        return Ok(());
    }
    tcp.write_all(&encode(br#"{"op":"ready","data":{}}"#)).await?;
    let (mut rd, mut wr) = tcp.split();
    let mut out = Vec::new();
    loop {
        tokio::select! {
            frame = frames.recv() => {
                out.clear();
                match frame {
                    Ok(frame) => out.extend_from_slice(&frame),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                }
                while let Ok(more) = frames.try_recv() {
                    out.extend_from_slice(&more);
                }
                wr.write_all(&out).await?;
            }
            read = rd.read(&mut scratch) => {
                // Nothing but a close (or the end) is expected from the client.
                if read? == 0 {
                    return Ok(());
                }
            }
        }
    }
}

/// Reads a request line and headers up to the blank line; returns the value of header `wanted`
/// (if present), or `None` when the connection ended first.
async fn read_head(reader: &mut BufReader<TcpStream>, wanted: &str) -> Result<Option<Option<String>>, Failure> {
    let mut found = None;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(None);
        }
        let header = line.trim_end();
        if header.is_empty() {
            return Ok(Some(found));
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case(wanted)
        {
            found = Some(value.trim().to_string());
        }
    }
}

/// An unmasked server text frame holding `payload`.
fn encode(payload: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(payload.len() + 10);
    frame.push(0x81);
    match payload.len() {
        n if n < 126 => frame.push(n as u8),
        n if n <= usize::from(u16::MAX) => {
            frame.push(126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    frame.into()
}

/// Plain HTTP/1.1 requests on one connection: each body's `content` becomes one frame.
async fn http(tcp: TcpStream, frames: broadcast::Sender<Bytes>) -> Result<(), Failure> {
    let mut reader = BufReader::new(tcp);
    loop {
        let Some(length) = read_head(&mut reader, "content-length").await? else {
            return Ok(());
        };
        let length: usize = length.map_or(Ok(0), |v| v.parse().map_err(|_| "bad content-length"))?;
        let mut body = vec![0u8; length.min(1 << 20)];
        reader.read_exact(&mut body).await?;
        let content = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["content"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let _ = frames.send(encode(frame(&content).as_bytes()));
        reader
            .get_mut()
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
            .await?;
    }
}

/// A `messages.onCreate` frame with the fields and sizes of alterego's (ids, author, timestamps).
fn frame(content: &str) -> String {
    let seq = SEQ.fetch_add(1, Ordering::Relaxed) + 1;
    let id = "01a24b94-0a23-7349-b425-14422f070a6c";
    let user = "01a24b94-093c-736b-a305-d25dbc75c8a8";
    json!({
        "op": "messages.onCreate",
        "data": {
            "id": id,
            "channelId": "01a24b94-09c5-7583-9d53-dfb554d40754",
            "authorId": user,
            "timestamp": "2026-12-06T13:38:42.865Z",
            "editedTimestamp": null,
            "content": content,
            "author": {"id": user, "name": "Owner", "avatar": null, "description": null, "category": null},
            "attachments": [],
        },
        "seq": seq,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_use_the_shortest_length_encoding() {
        assert_eq!(&encode(b"hi")[..], &[0x81, 2, b'h', b'i']);
        let medium = encode(&[b'x'; 300]);
        assert_eq!(&medium[..4], &[0x81, 126, 1, 44]);
        assert_eq!(medium.len(), 304);
        let large = encode(&vec![b'x'; 70_000]);
        assert_eq!(&large[..2], &[0x81, 127]);
        assert_eq!(u64::from_be_bytes(large[2..10].try_into().unwrap()), 70_000);
    }

    #[test]
    fn the_frame_is_shaped_like_alteregos() {
        let text = frame("lg:run:1:2.");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["op"], "messages.onCreate");
        assert_eq!(v["data"]["content"], "lg:run:1:2.");
        assert!(v["seq"].as_u64().is_some());
    }
}
