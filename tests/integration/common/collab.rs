//! Real y-websocket clients for the collaborative-document socket (`/collab/<channelId>`):
//! `tests/node/collab-client.mjs` runs yjs 13 and y-websocket 2.x's `WebsocketProvider` (the
//! pair Mikoto's web client uses) in one Node process that hosts any number of named clients.
//!
//! ```ignore
//! let mut node = CollabNode::start().await;
//! let base = format!("ws://{}", app.addr);
//! assert_eq!(node.open("a", &base, &channel, &alice.access).await["ok"], true);
//! node.insert("a", 0, "hi").await;
//! ```
//!
//! Every client is a `Y.Doc` whose shared `Y.Text` is named `content` (pass `"type"` to
//! [`call`](CollabNode::call) for another one); clients in the process meet only through the
//! server (y-websocket's BroadcastChannel is off). The command and event lines are described at
//! the top of the script.
//!
//! Like [`super::node`], a broken environment (node missing, the script dying or printing
//! garbage, a reply that does not come) panics instead of returning an error.

// A toolkit: not every test uses every helper.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::Instant;

const SCRIPT: &str = "collab-client.mjs";
/// How long the script may take to start (node's start-up on a busy two-core machine included).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a command may take beyond its own time-out.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The time-out of the `wait_*` helpers.
pub const WAIT: Duration = Duration::from_secs(5);

/// A running `collab-client.mjs`. Killed when dropped (its clients' sockets close with it).
pub struct CollabNode {
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    /// Notifications (`{"event": ...}`) read while waiting for something else.
    events: VecDeque<Value>,
    next_id: u64,
    _child: Child,
}

impl CollabNode {
    /// Starts the script and waits until it is ready.
    pub async fn start() -> CollabNode {
        let dir = super::node::node_dir();
        let mut child = Command::new("node")
            .arg(dir.join(SCRIPT))
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("could not run `node {SCRIPT}` (is Node.js 20+ on PATH? ./scripts/test.sh requires it): {e}")
            });
        let stdin = child.stdin.take().expect("piped stdin");
        let lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let mut node = CollabNode {
            stdin,
            lines,
            events: VecDeque::new(),
            next_id: 1,
            _child: child,
        };
        let ready = node
            .read_line(Instant::now() + START_TIMEOUT)
            .await
            .unwrap_or_else(|| panic!("`node {SCRIPT}` was not ready within {START_TIMEOUT:?}"));
        assert_eq!(
            ready["event"], "ready",
            "`node {SCRIPT}`'s first line is not its ready line: {ready}"
        );
        node
    }

    /// The next line of the script's output, or `None` at `deadline`. Panics if the script has
    /// exited or printed something that is not a JSON object.
    async fn read_line(&mut self, deadline: Instant) -> Option<Value> {
        // `Lines::next_line` is cancel safe: a timed-out read loses nothing.
        let line = match tokio::time::timeout_at(deadline, self.lines.next_line()).await {
            Err(_) => return None,
            Ok(Err(e)) => panic!("reading `node {SCRIPT}`'s output: {e}"),
            Ok(Ok(None)) => panic!("`node {SCRIPT}` exited (see its stderr)"),
            Ok(Ok(Some(line))) => line,
        };
        let value: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("`node {SCRIPT}` printed a line that is not JSON ({e}): {line}"));
        assert!(
            value.is_object(),
            "`node {SCRIPT}` printed a line that is not an object: {line}"
        );
        if value["event"] == "uncaught" {
            eprintln!("collab-client: uncaught exception in node: {}", value["message"]);
        }
        Some(value)
    }

    /// Sends `cmd` (a JSON object with `"cmd"`; its `"id"` is set here) and returns the reply
    /// (`{"id", "ok": true, ...}` or `{"id", "ok": false, "error", ...}`). Notifications that
    /// arrive meanwhile are kept for [`next_event`](Self::next_event) and
    /// [`next_close`](Self::next_close). Panics when no reply comes within 30 s (plus the
    /// command's own `timeoutMs`).
    pub async fn call(&mut self, mut cmd: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        assert!(cmd.is_object(), "a collab-client command must be a JSON object: {cmd}");
        let object = cmd.as_object_mut().expect("object");
        object.insert("id".into(), json!(id));
        let own = object.get("timeoutMs").and_then(Value::as_u64).unwrap_or(0);
        let line = format!("{cmd}\n");
        self.stdin
            .write_all(line.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("writing to `node {SCRIPT}` (has it exited? see its stderr): {e}"));
        self.stdin
            .flush()
            .await
            .unwrap_or_else(|e| panic!("writing to `node {SCRIPT}`: {e}"));
        let limit = CALL_TIMEOUT + Duration::from_millis(own);
        let deadline = Instant::now() + limit;
        loop {
            let value = self
                .read_line(deadline)
                .await
                .unwrap_or_else(|| panic!("`node {SCRIPT}` did not answer within {limit:?}: {cmd}"));
            if value.get("event").is_some() {
                self.events.push_back(value);
            } else if value["id"] == json!(id) {
                return value;
            } else if value["id"].as_u64().is_some_and(|other| other < id) {
                // The reply to a call whose future was dropped.
            } else {
                panic!("`node {SCRIPT}` answered {value} to {cmd}");
            }
        }
    }

    /// [`call`](Self::call), panicking with the script's error unless the reply is ok.
    #[track_caller]
    fn expect_ok(reply: Value, what: &str) -> Value {
        assert_eq!(reply["ok"], true, "collab-client {what} failed: {reply}");
        reply
    }

    /// Opens client `name` on `<base_ws_url>/collab/<channel_id>?token=<token>` (base such as
    /// `ws://127.0.0.1:1234`) without reconnection, and waits until it has synced (10 s).
    ///
    /// The reply: `{"ok": true, "clientId"}`, or `{"ok": false, "error", "code", "reason",
    /// "lastError"}` when the socket closed first (`code` 1006 with `lastError` "Unexpected
    /// server response: 401" for a refused upgrade) or it did not sync in time. A client whose
    /// open failed keeps its name until [`close`](Self::close).
    pub async fn open(&mut self, name: &str, base_ws_url: &str, channel_id: &str, token: &str) -> Value {
        self.open_with(name, base_ws_url, channel_id, Some(token), false).await
    }

    /// [`open`](Self::open) with no token parameter at all when `token` is `None`, and with
    /// y-websocket's reconnection (exponential backoff up to 2.5 s) when `reconnect` is set.
    pub async fn open_with(
        &mut self,
        name: &str,
        base_ws_url: &str,
        channel_id: &str,
        token: Option<&str>,
        reconnect: bool,
    ) -> Value {
        let url = format!("{}/collab", base_ws_url.trim_end_matches('/'));
        self.call(json!({
            "cmd": "open",
            "name": name,
            "url": url,
            "room": channel_id,
            "token": token,
            "reconnect": reconnect,
        }))
        .await
    }

    /// Inserts `text` at `index` into the client's `content` text.
    pub async fn insert(&mut self, name: &str, index: usize, text: &str) {
        let reply = self
            .call(json!({"cmd": "insert", "name": name, "index": index, "text": text}))
            .await;
        Self::expect_ok(reply, "insert");
    }

    /// Deletes `length` characters at `index` from the client's `content` text.
    pub async fn delete(&mut self, name: &str, index: usize, length: usize) {
        let reply = self
            .call(json!({"cmd": "delete", "name": name, "index": index, "length": length}))
            .await;
        Self::expect_ok(reply, "delete");
    }

    /// The client's `content` text now.
    pub async fn text(&mut self, name: &str) -> String {
        let reply = Self::expect_ok(self.call(json!({"cmd": "text", "name": name})).await, "text");
        reply["text"].as_str().expect("text").to_owned()
    }

    /// Whether the client's `content` text becomes `text` within 5 s.
    pub async fn wait_text(&mut self, name: &str, text: &str) -> bool {
        self.wait_text_within(name, text, WAIT).await
    }

    /// Whether the client's `content` text becomes `text` within `timeout`. On a miss, the
    /// text it had is printed to stderr.
    pub async fn wait_text_within(&mut self, name: &str, text: &str, timeout: Duration) -> bool {
        let reply = self
            .call(json!({"cmd": "waitText", "name": name, "text": text, "timeoutMs": millis(timeout)}))
            .await;
        if reply["ok"] != true {
            eprintln!("collab-client {name}: waitText {text:?}: {reply}");
        }
        reply["ok"] == true
    }

    /// Sets the client's local awareness state (`Value::Null` clears it, which tells the
    /// others the client left).
    pub async fn set_awareness(&mut self, name: &str, state: Value) {
        let reply = self
            .call(json!({"cmd": "awareness", "name": name, "state": state}))
            .await;
        Self::expect_ok(reply, "awareness");
    }

    /// The awareness states the client knows, its own included: `{"states": {"<clientId>":
    /// state, ...}, "self": <its clientId>}` (a client's state is `{}` until it sets one).
    pub async fn peers(&mut self, name: &str) -> Value {
        let mut reply = Self::expect_ok(self.call(json!({"cmd": "peers", "name": name})).await, "peers");
        json!({"states": reply["states"].take(), "self": reply["self"].take()})
    }

    /// Whether the client comes to know at least `n` awareness states (its own included)
    /// within 5 s.
    pub async fn wait_peers(&mut self, name: &str, n: usize) -> bool {
        self.wait_peers_cmd(name, n, false).await
    }

    /// Whether the client comes to know exactly `n` awareness states (its own included) within
    /// 5 s: for waiting until a peer that left is gone.
    pub async fn wait_peers_exact(&mut self, name: &str, n: usize) -> bool {
        self.wait_peers_cmd(name, n, true).await
    }

    async fn wait_peers_cmd(&mut self, name: &str, n: usize, exact: bool) -> bool {
        let reply = self
            .call(json!({
                "cmd": "waitPeers", "name": name, "count": n, "exact": exact, "timeoutMs": millis(WAIT),
            }))
            .await;
        if reply["ok"] != true {
            eprintln!("collab-client {name}: waitPeers {n}: {reply}");
        }
        reply["ok"] == true
    }

    /// The client's connection: `{"status": "connecting|connected|disconnected", "synced",
    /// "closes": [{"code", "reason"}], "lastError", "clientId"}`.
    pub async fn status(&mut self, name: &str) -> Value {
        Self::expect_ok(self.call(json!({"cmd": "status", "name": name})).await, "status")
    }

    /// Sends `bytes` as one binary frame on the client's socket, under y-websocket's feet.
    /// False when the socket is not open.
    pub async fn raw_send(&mut self, name: &str, bytes: &[u8]) -> bool {
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        let reply = self.call(json!({"cmd": "rawSend", "name": name, "base64": b64})).await;
        reply["ok"] == true
    }

    /// Sends `text` as one text frame on the client's socket. False when it is not open.
    pub async fn raw_send_text(&mut self, name: &str, text: &str) -> bool {
        let reply = self.call(json!({"cmd": "rawSend", "name": name, "text": text})).await;
        reply["ok"] == true
    }

    /// Destroys the client's provider and doc (its socket closes; its name is free again).
    pub async fn close(&mut self, name: &str) {
        Self::expect_ok(self.call(json!({"cmd": "close", "name": name})).await, "close");
    }

    /// The next notification (`{"event": "status|synced|close|error|uncaught", "name"?, ...}`),
    /// kept ones first, or `None` when none arrives within `timeout`.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<Value> {
        if let Some(value) = self.events.pop_front() {
            return Some(value);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.read_line(deadline).await?;
            if value.get("event").is_some() {
                return Some(value);
            }
            // A reply to a call whose future was dropped.
        }
    }

    /// The close code of the next time the server closed client `name`'s socket (looking at
    /// kept notifications first), or `None` when it does not within `timeout`. Closes the
    /// client made itself (`close`) are skipped; other notifications are kept.
    pub async fn next_close(&mut self, name: &str, timeout: Duration) -> Option<u16> {
        let is_close = |v: &Value| v["event"] == "close" && v["name"] == name && v["code"].is_u64();
        if let Some(i) = self.events.iter().position(is_close) {
            let value = self.events.remove(i).expect("index");
            return Some(close_code(&value));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.read_line(deadline).await?;
            if is_close(&value) {
                return Some(close_code(&value));
            }
            if value.get("event").is_some() {
                self.events.push_back(value);
            }
        }
    }
}

fn close_code(value: &Value) -> u16 {
    value["code"]
        .as_u64()
        .and_then(|c| u16::try_from(c).ok())
        .unwrap_or_else(|| panic!("collab-client: close event with a bad code: {value}"))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
