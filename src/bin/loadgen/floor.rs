//! `floor`: the least a server can do for the `fanout` scenario, to measure what this machine's
//! kernel and WebSocket library cost by themselves (issue 18). It accepts the same WebSocket
//! connections, answers `authenticate` with `ready`, and writes every posted message to every
//! socket as one text frame shaped like alterego's `messages.onCreate` — nothing else: no
//! tokens, no database, no bus, no sessions.
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

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

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
    let (frames, _) = broadcast::channel::<Utf8Bytes>(BACKLOG);
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

/// A WebSocket: `authenticate` → `ready`, then every broadcast frame, as it comes.
async fn socket(tcp: TcpStream, mut frames: broadcast::Receiver<Utf8Bytes>) -> Result<(), Failure> {
    let mut ws = tokio_tungstenite::accept_async(tcp).await?;
    match ws.next().await {
        Some(Ok(Message::Text(_))) => {
            ws.send(Message::text(r#"{"op":"ready","data":{}}"#)).await?;
        }
        _ => return Ok(()),
    }
    loop {
        tokio::select! {
            frame = frames.recv() => match frame {
                Ok(frame) => ws.send(Message::Text(frame)).await?,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ok(()),
                Some(Ok(_)) => {}
            },
        }
    }
}

/// Plain HTTP/1.1 requests on one connection: each body's `content` becomes one frame.
async fn http(tcp: TcpStream, frames: broadcast::Sender<Utf8Bytes>) -> Result<(), Failure> {
    let mut reader = BufReader::new(tcp);
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        // The request line, then headers up to the blank line.
        loop {
            line.clear();
            if reader.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().map_err(|_| "bad content-length")?;
            }
        }
        let mut body = vec![0u8; length.min(1 << 20)];
        reader.read_exact(&mut body).await?;
        let content = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["content"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let _ = frames.send(frame(&content).into());
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
