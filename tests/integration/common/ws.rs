//! A `/ws` test client (spec §7) and the multi-instance harness: a second server sharing an
//! existing [`TestApp`]'s database and Redis namespace.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{MediaFixture, TestApp, TestUser, random_ip};

pub type Stream = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub const WAIT: Duration = Duration::from_secs(5);

/// One server frame.
#[derive(Debug, Clone)]
pub struct Frame {
    pub op: String,
    pub data: Value,
    pub seq: Option<u64>,
}

/// What reading the socket produced.
#[derive(Debug)]
pub enum Read {
    Frame(Frame),
    /// The server closed with this code (`None`: without a close frame).
    Closed(Option<u16>),
    Timeout,
}

/// A client that checks the `seq` of every dispatched event: gapless and increasing.
pub struct WsClient {
    pub stream: Stream,
    pub session_id: Option<String>,
    /// The last `seq` processed.
    pub seq: u64,
    /// Everything received, in order (control frames included).
    pub log: Vec<Frame>,
    /// `presence.onUpdate` events are checked and logged but not returned by the readers
    /// (tests about other events would otherwise race with presence transitions).
    pub hide_presence: bool,
}

impl TestApp {
    /// Opens `/ws` (optionally with a query) from a random client address.
    pub async fn ws_open(&self, query: &str) -> WsClient {
        let url = format!("ws://{}/ws{query}", self.addr);
        let mut req = url.into_client_request().expect("ws request");
        req.headers_mut()
            .insert("x-forwarded-for", random_ip().parse().expect("header value"));
        let (stream, _) = tokio_tungstenite::connect_async(req).await.expect("ws connect");
        WsClient {
            stream,
            session_id: None,
            seq: 0,
            log: Vec::new(),
            hide_presence: true,
        }
    }

    /// A connected, authenticated client (after `ready`).
    pub async fn ws_auth(&self, user: &TestUser) -> WsClient {
        let mut c = self.ws_open("").await;
        c.authenticate(&user.access).await;
        c
    }

    /// A second server on this test's database and Redis namespace (spec §8.2): another
    /// instance of the same deployment. Its drop leaves the database alone.
    pub async fn spawn_peer(&self) -> TestApp {
        let state = Self::new_state((*self.state.config).clone()).await;
        Self::serve(
            state,
            self.admin_url.clone(),
            String::new(),
            MediaFixture::start().await,
        )
        .await
    }

    /// Starts a graceful shutdown (as on SIGTERM, spec §8.6).
    pub fn begin_shutdown(&mut self) {
        self.state.start_draining();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl WsClient {
    pub async fn send_json(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.stream
            .send(Message::Text(text.to_string().into()))
            .await
            .expect("ws send");
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.stream
            .send(Message::Binary(Bytes::from(bytes)))
            .await
            .expect("ws send");
    }

    /// Closes with a code (1000 ends the session, spec §7.6).
    pub async fn close(mut self, code: u16) {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: "".into(),
        };
        let _ = self.stream.send(Message::Close(Some(frame))).await;
        // Wait for the server's answer so the close is processed before the test goes on.
        let _ = tokio::time::timeout(WAIT, async { while self.stream.next().await.is_some() {} }).await;
    }

    /// Drops the TCP connection without a close frame (a network failure).
    pub fn kill(self) {
        drop(self.stream);
    }

    /// The next frame within `within`. Checks `seq`: every dispatched event carries the next
    /// one, control frames none.
    pub async fn read(&mut self, within: Duration) -> Read {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return Read::Timeout,
                Ok(None) => return Read::Closed(None),
                Ok(Some(Err(_))) => return Read::Closed(None),
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("server frames are JSON");
                    let frame = Frame {
                        op: v["op"].as_str().expect("op").to_string(),
                        data: v["data"].clone(),
                        seq: v.get("seq").and_then(Value::as_u64),
                    };
                    let control = matches!(
                        frame.op.as_str(),
                        "ready" | "resumed" | "invalidSession" | "pong" | "resync"
                    );
                    if control {
                        assert!(frame.seq.is_none(), "control frame with seq: {frame:?}");
                    } else {
                        let seq = frame.seq.unwrap_or_else(|| panic!("event without seq: {frame:?}"));
                        assert_eq!(seq, self.seq + 1, "seq gap or duplicate: {frame:?}");
                        self.seq = seq;
                    }
                    self.log.push(frame.clone());
                    if self.hide_presence && frame.op == "presence.onUpdate" {
                        continue;
                    }
                    return Read::Frame(frame);
                }
                Message::Close(f) => return Read::Closed(f.map(|f| u16::from(f.code))),
                Message::Binary(_) => panic!("the server never sends binary frames"),
                _ => continue,
            }
        }
    }

    /// The next frame, which must arrive within [`WAIT`].
    pub async fn next(&mut self) -> Frame {
        match self.read(WAIT).await {
            Read::Frame(f) => f,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// The next frame, which must be `op`.
    pub async fn expect(&mut self, op: &str) -> Frame {
        let f = self.next().await;
        assert_eq!(f.op, op, "unexpected frame: {f:?}");
        f
    }

    /// Skips frames until one with `op` arrives (within [`WAIT`]); returns it and the skipped.
    pub async fn until(&mut self, op: &str) -> (Frame, Vec<Frame>) {
        let mut skipped = Vec::new();
        loop {
            let f = self.next().await;
            if f.op == op {
                return (f, skipped);
            }
            skipped.push(f);
        }
    }

    /// Every frame within `within` (asserts the connection stays open).
    pub async fn drain(&mut self, within: Duration) -> Vec<Frame> {
        let deadline = tokio::time::Instant::now() + within;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read(left).await {
                Read::Frame(f) => out.push(f),
                Read::Timeout => return out,
                Read::Closed(code) => panic!("closed ({code:?}) while draining; got {out:?}"),
            }
        }
    }

    /// Asserts nothing arrives within `within`.
    pub async fn silent(&mut self, within: Duration) {
        let got = self.drain(within).await;
        assert!(got.is_empty(), "expected silence, got {got:?}");
    }

    /// Reads until the server closes; returns the close code (frames before it are logged).
    pub async fn closed(&mut self, within: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read(left).await {
                Read::Frame(_) => continue,
                Read::Closed(code) => return code,
                Read::Timeout => panic!("the server did not close within {within:?}"),
            }
        }
    }

    /// `authenticate` and wait for `ready`.
    pub async fn authenticate(&mut self, token: &str) -> Frame {
        self.send_json(json!({"op": "authenticate", "data": {"token": token}}))
            .await;
        let ready = self.expect("ready").await;
        self.session_id = Some(ready.data["sessionId"].as_str().expect("sessionId").to_string());
        self.seq = 0;
        ready
    }

    /// `resume` from `seq`; returns the replayed events and the final control frame
    /// (`resumed` or `invalidSession`).
    pub async fn resume(&mut self, token: &str, session: &str, seq: u64) -> (Vec<Frame>, Frame) {
        self.seq = seq;
        self.session_id = Some(session.to_string());
        self.send_json(json!({"op": "resume", "data": {"token": token, "sessionId": session, "seq": seq}}))
            .await;
        let mut replayed = Vec::new();
        loop {
            let f = self.next().await;
            match f.op.as_str() {
                "resumed" | "invalidSession" => return (replayed, f),
                _ => replayed.push(f),
            }
        }
    }

    /// [`resume`](Self::resume) that must succeed: the replayed frames.
    pub async fn resumed(&mut self, token: &str, session: &str, seq: u64) -> Vec<Frame> {
        let (replayed, r) = self.resume(token, session, seq).await;
        assert_eq!(r.op, "resumed", "{r:?}");
        replayed
    }

    /// Events (not control frames) logged so far with `op`.
    pub fn events(&self, op: &str) -> Vec<&Frame> {
        self.log.iter().filter(|f| f.op == op).collect()
    }
}
