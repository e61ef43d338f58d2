//! Checks against software nobody on this project wrote: the Node.js packages in `tests/node`,
//! installed from its committed lockfile by `./scripts/test.sh`.
//!
//! - [`verify_livekit`]: LiveKit's server SDK (`TokenVerifier`) verifies a token the server minted.
//! - [`PushReceiver`]: an HTTPS Web Push service stand-in (`tests/node/push-receiver.mjs`) that
//!   decrypts RFC 8291 payloads with `http_ece` and checks RFC 8292 VAPID headers.
//!
//! A broken environment (node missing, a script that dies or prints garbage, a timeout) panics
//! instead of returning an error, so a test that expects a rejection cannot pass by accident.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// How long a script may take to start (node's start-up on a busy two-core machine included).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// `tests/node`, after checking that its packages are installed.
pub fn node_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("node");
    assert!(
        dir.join("node_modules").is_dir(),
        "{}/node_modules is missing: run ./scripts/test.sh (it installs tests/node from its lockfile)",
        dir.display()
    );
    dir
}

/// `node <script>` in `tests/node`, with stderr passed through to the test's output.
fn node_command(script: &str) -> Command {
    let dir = node_dir();
    let mut cmd = Command::new("node");
    cmd.arg(dir.join(script))
        .current_dir(&dir)
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    cmd
}

fn spawn_error(script: &str, e: std::io::Error) -> String {
    format!("could not run `node {script}` (is Node.js 20+ on PATH? ./scripts/test.sh requires it): {e}")
}

/// Verifies `token` with LiveKit's `TokenVerifier` for the API key/secret pair.
///
/// `Ok`: the verified claims (`{"iss", "sub", "exp", "video": {...}, ...}`); `Err`: why the SDK
/// rejected the token (for example a bad signature, another issuer, no `exp`).
pub async fn verify_livekit(api_key: &str, api_secret: &str, token: &str) -> Result<Value, String> {
    const SCRIPT: &str = "verify-livekit.mjs";
    let mut cmd = node_command(SCRIPT);
    cmd.env("LK_API_KEY", api_key)
        .env("LK_API_SECRET", api_secret)
        .env("LK_TOKEN", token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let child = cmd.spawn().unwrap_or_else(|e| panic!("{}", spawn_error(SCRIPT, e)));
    let output = tokio::time::timeout(START_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("`node {SCRIPT}` did not finish within {START_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("`node {SCRIPT}`: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_else(|| panic!("`node {SCRIPT}` printed nothing (exit status {})", output.status));
    let value: Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("`node {SCRIPT}` printed a line that is not JSON ({e}): {line}"));
    match (output.status.code(), value.get("error")) {
        (Some(0), _) => Ok(value),
        (Some(1), Some(Value::String(error))) => Err(error.clone()),
        _ => panic!(
            "`node {SCRIPT}` failed unexpectedly (exit status {}): {line}",
            output.status
        ),
    }
}

/// A running `tests/node/push-receiver.mjs`: an HTTPS push service on `127.0.0.1:<port>` whose
/// self-signed certificate names [`host`](Self::host), with one subscription's keys.
///
/// Each request it receives becomes one JSON value from [`next`](Self::next):
/// `{"method", "path", "status", "headers": {"ttl", "urgency", "contentEncoding", "contentType"},
/// "bodyLength", "vapid": {"ok", "aud", "exp", "sub", "k", "error"?}, "payload", "text", "error"}`
/// (see the script's header). Paths under `/gone/` answer 410, under `/missing/` 404, others 201.
///
/// The process is killed when this is dropped.
pub struct PushReceiver {
    /// The host name the certificate is for; map it to [`addr`](Self::addr) to reach the receiver.
    pub host: String,
    pub port: u16,
    /// The self-signed certificate (PEM): trust it as the only root.
    pub cert_pem: String,
    /// The subscription's public key: a base64url 65-byte uncompressed P-256 point.
    pub p256dh: String,
    /// The subscription's auth secret: base64url, 16 bytes.
    pub auth: String,
    lines: Lines<BufReader<ChildStdout>>,
    /// Lines read by [`none_within`](Self::none_within), handed out by the next `next`.
    pending: VecDeque<Value>,
    // The receiver exits when its stdin closes; held so it does not.
    _stdin: ChildStdin,
    _child: Child,
}

impl PushReceiver {
    /// Starts a receiver whose certificate is for `host` (a DNS name such as `push.test`).
    pub async fn start(host: &str) -> PushReceiver {
        const SCRIPT: &str = "push-receiver.mjs";
        let mut cmd = node_command(SCRIPT);
        cmd.arg("--host").arg(host).stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{}", spawn_error(SCRIPT, e)));
        let stdin = child.stdin.take().expect("piped stdin");
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let line = tokio::time::timeout(START_TIMEOUT, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("`node {SCRIPT}` was not ready within {START_TIMEOUT:?}"))
            .unwrap_or_else(|e| panic!("reading `node {SCRIPT}`: {e}"))
            .unwrap_or_else(|| panic!("`node {SCRIPT}` exited before it was ready (see its stderr)"));
        let ready: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("`node {SCRIPT}`'s ready line is not JSON ({e}): {line}"));
        let field = |name: &str| -> String {
            ready[name]
                .as_str()
                .unwrap_or_else(|| panic!("`node {SCRIPT}`'s ready line has no string {name:?}: {line}"))
                .to_owned()
        };
        let port = ready["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or_else(|| panic!("`node {SCRIPT}`'s ready line has no port: {line}"));
        PushReceiver {
            host: host.to_owned(),
            port,
            cert_pem: field("cert"),
            p256dh: field("p256dh"),
            auth: field("auth"),
            lines,
            pending: VecDeque::new(),
            _stdin: stdin,
            _child: child,
        }
    }

    /// `https://<host>:<port><path>`: a subscription endpoint on this receiver.
    pub fn endpoint(&self, path: &str) -> String {
        format!("https://{}:{}{path}", self.host, self.port)
    }

    /// Where the receiver listens: `127.0.0.1:<port>` (what [`host`](Self::host) must resolve to).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// A client that trusts only this receiver's certificate and resolves its host to it.
    pub fn client(&self) -> reqwest::Client {
        let cert = reqwest::Certificate::from_pem(self.cert_pem.as_bytes()).expect("receiver certificate");
        reqwest::Client::builder()
            .tls_certs_only([cert])
            .resolve(&self.host, self.addr())
            .timeout(Duration::from_secs(10))
            .build()
            .expect("push receiver client")
    }

    /// The next request the receiver answered, or `None` when none arrives within `timeout`.
    /// Panics if the receiver has exited.
    pub async fn next(&mut self, timeout: Duration) -> Option<Value> {
        if let Some(value) = self.pending.pop_front() {
            return Some(value);
        }
        // `Lines::next_line` is cancel safe: a timed-out read loses nothing.
        let line = match tokio::time::timeout(timeout, self.lines.next_line()).await {
            Err(_) => return None,
            Ok(Err(e)) => panic!("reading the push receiver's output: {e}"),
            Ok(Ok(None)) => panic!("the push receiver exited (see its stderr)"),
            Ok(Ok(Some(line))) => line,
        };
        let value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the push receiver printed a line that is not JSON ({e}): {line}"));
        Some(value)
    }

    /// True when no request arrives within `d`. A request that does arrive is kept for
    /// [`next`](Self::next).
    pub async fn none_within(&mut self, d: Duration) -> bool {
        if !self.pending.is_empty() {
            return false;
        }
        match self.next(d).await {
            None => true,
            Some(value) => {
                self.pending.push_back(value);
                false
            }
        }
    }
}
