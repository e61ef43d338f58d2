//! `/ws` clients, run in worker processes so that one run can hold more sockets than one
//! process's file descriptors allow (20,000 here) and use several 127.0.0.X source addresses
//! (each has its own ephemeral port range).
//!
//! A worker connects its share of the members at a paced rate (each socket sends
//! `authenticate` and waits for `ready`), reports `{"connected","failed"}` on stdout, then keeps
//! every socket reading (which also answers the server's heartbeat Pings) and counts the
//! messages of the current run: their content carries `lg:<run>:<index>:<sent unix ns>`. On
//! `finish <expected> <graceMs>` from stdin it waits until every live socket has seen `expected`
//! messages (or the grace ends) and prints its tally; stdin closing ends the worker.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::population::State;
use crate::report::SharedHistogram;
use crate::{Failure, Options};

/// How long connecting and authenticating one socket may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a socket the server closed keeps trying to come back.
const RECONNECT_FOR: Duration = Duration::from_secs(120);

pub fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The content of message `index` of run `run`, stamped with the time it is sent.
pub fn stamped(run: &str, index: u64) -> String {
    format!("lg:{run}:{index}:{}.", unix_ns())
}

/// A gateway endpoint: `ws://host:port/ws`, and the address to open the socket to.
#[derive(Clone)]
struct Endpoint {
    url: String,
    addr: SocketAddr,
}

impl Endpoint {
    fn parse(url: &str) -> Result<Endpoint, Failure> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or("gateway URLs must be ws:// (loopback only)")?;
        let host = rest.split('/').next().unwrap_or(rest);
        let addr: SocketAddr = host
            .parse()
            .map_err(|_| format!("`{host}` must be an IP:port (the generator runs on loopback only)"))?;
        Ok(Endpoint {
            url: url.to_string(),
            addr,
        })
    }
}

type Socket = WebSocketStream<TcpStream>;

/// Source ports the workers bind explicitly: the kernel's search for a free port (`bind` to
/// port 0) scans every bound socket, which dominated the ramp-up at thousands of sockets.
const PORTS: std::ops::Range<u16> = 10_000..60_000;

/// A socket bound to `source` and a free port near `hint`.
fn bound(source: Ipv4Addr, hint: usize) -> Result<TcpSocket, Failure> {
    let span = usize::from(PORTS.end - PORTS.start);
    let mut last = None;
    for attempt in 0..16 {
        let port = PORTS.start + u16::try_from((hint + attempt * 7919) % span).unwrap_or(0);
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        match socket.bind(SocketAddr::new(source.into(), port)) {
            Ok(()) => return Ok(socket),
            Err(e) => last = Some(e),
        }
    }
    Err(format!("no free source port on {source}: {last:?}").into())
}

/// Opens a socket from `source` and sends `first` (`authenticate` or `resume`).
async fn connect(endpoint: &Endpoint, source: Ipv4Addr, port_hint: usize, first: &Value) -> Result<Socket, Failure> {
    let stream = bound(source, port_hint)?.connect(endpoint.addr).await?;
    stream.set_nodelay(true)?;
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(endpoint.url.as_str(), stream, Some(config)).await?;
    ws.send(Message::text(first.to_string())).await?;
    Ok(ws)
}

fn authenticate(token: &str) -> Value {
    json!({"op": "authenticate", "data": {"token": token}})
}

/// Opens a socket, authenticates with `token` and waits for `ready`; returns the session id.
async fn open(
    endpoint: &Endpoint,
    source: Ipv4Addr,
    port_hint: usize,
    token: &str,
) -> Result<(Socket, String), Failure> {
    let mut ws = connect(endpoint, source, port_hint, &authenticate(token)).await?;
    while let Some(msg) = ws.next().await {
        if let Message::Text(t) = msg?
            && let Some(session) = ready_session(t.as_str())
        {
            return Ok((ws, session));
        }
    }
    Err("closed before ready".into())
}

/// The session id of a `ready` frame.
fn ready_session(text: &str) -> Option<String> {
    if !text.contains("\"op\":\"ready\"") {
        return None;
    }
    let frame: Value = serde_json::from_str(text).ok()?;
    Some(frame["data"]["sessionId"].as_str().unwrap_or_default().to_string())
}

/// The `seq` of an event frame (`…,"seq":N}`), if it has one.
fn frame_seq(text: &str) -> Option<u64> {
    let at = text.rfind("\"seq\":")?;
    text[at + 6..].trim_end_matches('}').trim().parse().ok()
}

/// What a worker's sockets saw.
struct Tally {
    latency: SharedHistogram,
    /// First receipts of this run's messages, and repeated ones.
    delivered: AtomicU64,
    duplicates: AtomicU64,
    /// Sockets that ended (closed by the server or failed) after `ready`.
    dropped: AtomicU64,
    connected: AtomicU64,
    failed: AtomicU64,
    /// The last receipt of a run message (unix ns).
    last_ns: AtomicU64,
    /// `--reconnect-jitter-ms` runs: sockets the server closed, and how they came back —
    /// `resumed`, or a fresh `ready` after `invalidSession` — with the time from the close to
    /// being back, the last such moment (unix ns), and connection attempts that failed.
    disconnects: AtomicU64,
    resumed: AtomicU64,
    fresh: AtomicU64,
    reconnect_failures: AtomicU64,
    reconnect: SharedHistogram,
    last_back_ns: AtomicU64,
}

/// One socket's session, kept across reconnects.
struct Session {
    id: String,
    seq: u64,
    /// Which run messages it has seen (a bit per index).
    seen: Vec<u64>,
    /// When the server closed it, until it is back.
    closed_at: Option<Instant>,
}

/// Reads until the socket ends, counting run messages; answers `invalidSession` with a fresh
/// `authenticate` and notes when a reconnected socket is back.
async fn listen(ws: &mut Socket, tally: &Tally, marker: &str, token: &str, session: &mut Session) {
    while let Some(Ok(msg)) = ws.next().await {
        let Message::Text(text) = msg else { continue };
        let text = text.as_str();
        if let Some(seq) = frame_seq(text) {
            session.seq = seq;
        } else if text.contains("\"op\":\"resumed\"") {
            tally.resumed.fetch_add(1, Ordering::Relaxed);
            back(tally, session);
        } else if text.contains("\"op\":\"invalidSession\"") {
            if ws.send(Message::text(authenticate(token).to_string())).await.is_err() {
                return;
            }
        } else if let Some(id) = ready_session(text) {
            tally.fresh.fetch_add(1, Ordering::Relaxed);
            (session.id, session.seq) = (id, 0);
            back(tally, session);
        }
        let Some(at) = text.find(marker) else {
            continue;
        };
        let now = unix_ns();
        let mut fields = text[at + marker.len()..].splitn(3, [':', '.']);
        let (Some(Ok(index)), Some(Ok(sent))) = (
            fields.next().map(str::parse::<u64>),
            fields.next().map(str::parse::<u64>),
        ) else {
            continue;
        };
        let (word, bit) = ((index / 64) as usize, 1u64 << (index % 64));
        let Some(w) = session.seen.get_mut(word) else { continue };
        if *w & bit != 0 {
            tally.duplicates.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        *w |= bit;
        tally.delivered.fetch_add(1, Ordering::Relaxed);
        tally.latency.record(now.saturating_sub(sent) / 1000);
        tally.last_ns.fetch_max(now, Ordering::Relaxed);
    }
}

/// A reconnected socket is back: how long it was away.
fn back(tally: &Tally, session: &mut Session) {
    if let Some(closed) = session.closed_at.take() {
        tally.reconnect.record(closed.elapsed().as_micros() as u64);
        tally.last_back_ns.fetch_max(unix_ns(), Ordering::Relaxed);
    }
}

/// After the server closed a socket: waits a random part of `jitter`, then reconnects with
/// `resume` until a connection is accepted (`listen` sees whether it resumed or started over).
async fn reconnect(
    endpoint: &Endpoint,
    source: Ipv4Addr,
    hint: usize,
    token: &str,
    session: &Session,
    jitter: Duration,
    tally: &Tally,
) -> Option<Socket> {
    let wait = jitter.mul_f64(rand::random::<f64>());
    tokio::time::sleep(wait).await;
    let resume = json!({"op": "resume", "data": {"token": token, "sessionId": session.id, "seq": session.seq}});
    let give_up = Instant::now() + RECONNECT_FOR;
    let mut attempt = 0usize;
    while Instant::now() < give_up {
        attempt += 1;
        match tokio::time::timeout(
            CONNECT_TIMEOUT,
            connect(endpoint, source, hint + attempt * 104_729, &resume),
        )
        .await
        {
            Ok(Ok(ws)) => return Some(ws),
            _ => {
                tally.reconnect_failures.fetch_add(1, Ordering::Relaxed);
                // A server still starting refuses connections: retry soon, but not in a spin.
                tokio::time::sleep(Duration::from_millis(200 + rand::random::<u64>() % 300)).await;
            }
        }
    }
    None
}

/// `worker` (started by the scenarios, not by hand).
pub async fn worker(opts: &Options) -> Result<(), Failure> {
    let state = State::load(opts.get("state")?)?;
    let (from, to) = (opts.num("from", 0)? as usize, opts.num("to", 0)? as usize);
    let tokens = state
        .members
        .get(from..to)
        .ok_or("--from/--to outside the state's members")?;
    let source: Ipv4Addr = opts
        .get("source")?
        .parse()
        .map_err(|_| "--source must be an IPv4 address")?;
    let endpoints = opts
        .get("ws-urls")?
        .split(',')
        .map(Endpoint::parse)
        .collect::<Result<Vec<_>, _>>()?;
    let per_second = opts.num("ramp", 500)?.max(1);
    let planned = opts.num("planned", 0)?;
    let marker: Arc<str> = format!("lg:{}:", opts.get("run")?).into();
    let tally = Arc::new(Tally {
        latency: SharedHistogram::new(),
        delivered: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        connected: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        last_ns: AtomicU64::new(0),
        disconnects: AtomicU64::new(0),
        resumed: AtomicU64::new(0),
        fresh: AtomicU64::new(0),
        reconnect_failures: AtomicU64::new(0),
        reconnect: SharedHistogram::new(),
        last_back_ns: AtomicU64::new(0),
    });
    // `--reconnect-jitter-ms J`: a socket the server closes comes back with `resume` after a
    // random 0–J ms (the `storm` scenario); without it, a closed socket is counted as dropped.
    let jitter = opts
        .values
        .get("reconnect-jitter-ms")
        .map(|_| opts.num("reconnect-jitter-ms", 0))
        .transpose()?
        .map(Duration::from_millis);
    // Paced ramp-up: socket i starts at i / per_second. Ports start at a random offset, so a
    // run does not collide with the previous run's sockets in TIME_WAIT.
    let start = Instant::now();
    let offset = rand::random::<u16>() as usize;
    // When the worker ends, every socket closes with 1000, which ends its session on the
    // server: otherwise the sessions would stay resumable for the resume window and the next
    // run on the same server would pay for buffering events into them.
    let (end, ending) = tokio::sync::watch::channel(false);
    let mut sockets = tokio::task::JoinSet::new();
    for (i, token) in tokens.iter().enumerate() {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / per_second as f64)).await;
        let endpoint = endpoints[(from + i) % endpoints.len()].clone();
        let (token, tally, marker) = (token.clone(), tally.clone(), marker.clone());
        let mut ending = ending.clone();
        sockets.spawn(async move {
            let (mut ws, id) =
                match tokio::time::timeout(CONNECT_TIMEOUT, open(&endpoint, source, offset + i, &token)).await {
                    Ok(Ok(opened)) => opened,
                    failure => {
                        if tally.failed.fetch_add(1, Ordering::Relaxed) < 3 {
                            let why = match failure {
                                Ok(Err(e)) => e.to_string(),
                                _ => "timed out".into(),
                            };
                            eprintln!("alterego-loadgen worker {source}: connect: {why}");
                        }
                        return;
                    }
                };
            tally.connected.fetch_add(1, Ordering::Relaxed);
            let mut session = Session {
                id,
                seq: 0,
                seen: vec![0u64; planned.div_ceil(64) as usize],
                closed_at: None,
            };
            loop {
                tokio::select! {
                    () = listen(&mut ws, &tally, &marker, &token, &mut session) => {}
                    _ = ending.changed() => {
                        let _ = ws.close(Some(CloseFrame { code: CloseCode::Normal, reason: "".into() })).await;
                        return;
                    }
                }
                let Some(jitter) = jitter else { break };
                tally.disconnects.fetch_add(1, Ordering::Relaxed);
                session.closed_at = Some(Instant::now());
                match reconnect(&endpoint, source, offset + i, &token, &session, jitter, &tally).await {
                    Some(again) => ws = again,
                    None => break,
                }
            }
            tally.dropped.fetch_add(1, Ordering::Relaxed);
        });
    }
    let total = tokens.len() as u64;
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    while tally.connected.load(Ordering::Relaxed) + tally.failed.load(Ordering::Relaxed) < total
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    say(
        &json!({"connected": tally.connected.load(Ordering::Relaxed), "failed": tally.failed.load(Ordering::Relaxed)}),
    )?;

    // Commands arrive on stdin (read on a blocking thread); its end ends the worker.
    let (tx, mut commands) = tokio::sync::mpsc::channel::<String>(4);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    while let Some(cmd) = commands.recv().await {
        let mut words = cmd.split_whitespace();
        if words.next() != Some("finish") {
            continue;
        }
        let expected: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
        let grace = Duration::from_millis(words.next().and_then(|w| w.parse().ok()).unwrap_or(10_000));
        let until = Instant::now() + grace;
        loop {
            let live = tally.connected.load(Ordering::Relaxed) - tally.dropped.load(Ordering::Relaxed);
            if tally.delivered.load(Ordering::Relaxed) >= expected * live || Instant::now() >= until {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        say(&json!({
            "connected": tally.connected.load(Ordering::Relaxed),
            "failed": tally.failed.load(Ordering::Relaxed),
            "dropped": tally.dropped.load(Ordering::Relaxed),
            "delivered": tally.delivered.load(Ordering::Relaxed),
            "duplicates": tally.duplicates.load(Ordering::Relaxed),
            "lastNs": tally.last_ns.load(Ordering::Relaxed),
            "latency": tally.latency.snapshot(),
            "disconnects": tally.disconnects.load(Ordering::Relaxed),
            "resumed": tally.resumed.load(Ordering::Relaxed),
            "fresh": tally.fresh.load(Ordering::Relaxed),
            "reconnectFailures": tally.reconnect_failures.load(Ordering::Relaxed),
            "reconnect": tally.reconnect.snapshot(),
            "lastBackNs": tally.last_back_ns.load(Ordering::Relaxed),
        }))?;
    }
    let _ = end.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), sockets.join_all()).await;
    Ok(())
}

/// One line to the scenario that started this worker.
fn say(line: &Value) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// One worker process, driven over its stdin and stdout (small, rare lines: blocking I/O on
/// the blocking pool).
struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Option<BufReader<ChildStdout>>,
}

impl Worker {
    async fn read(&mut self) -> Result<Value, Failure> {
        let mut stdout = self.stdout.take().ok_or("worker stdout")?;
        let (stdout, line) = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            let read = stdout.read_line(&mut line);
            (stdout, read.map(|_| line))
        })
        .await?;
        self.stdout = Some(stdout);
        let line = line?;
        if line.is_empty() {
            return Err("a worker exited early".into());
        }
        Ok(serde_json::from_str(&line)?)
    }

    fn write(&mut self, line: &str) -> Result<(), Failure> {
        let stdin = self.stdin.as_mut().ok_or("worker stdin")?;
        stdin.write_all(line.as_bytes())?;
        stdin.flush()?;
        Ok(())
    }
}

/// Sockets held by worker processes for the length of a scenario.
pub struct Fleet {
    workers: Vec<Worker>,
    pub connected: u64,
    pub failed: u64,
}

/// The sockets of a run and how to reach the gateway.
pub struct FleetPlan<'a> {
    pub state_path: &'a str,
    pub members: usize,
    /// Gateway URLs; members are spread over them in turn.
    pub ws_urls: Vec<String>,
    /// Connections per second, over all workers.
    pub ramp: u64,
    pub per_worker: usize,
    pub run: &'a str,
    pub planned: u64,
    /// Sockets the server closes reconnect with `resume` after a random 0–this many ms.
    pub reconnect_jitter_ms: Option<u64>,
}

impl FleetPlan<'_> {
    /// The `ws://…/ws` URLs of `--ws-urls`, or of the state's server.
    pub fn urls(opts: &Options, state: &State) -> Vec<String> {
        match opts.get("ws-urls") {
            Ok(list) => list.split(',').map(str::to_string).collect(),
            Err(_) => vec![format!("{}/ws", state.base_url.replacen("http://", "ws://", 1))],
        }
    }
}

impl Fleet {
    /// Starts the workers (worker i uses source address 127.0.0.(2+i)) and waits until each has
    /// connected its share.
    pub async fn connect(plan: &FleetPlan<'_>) -> Result<Fleet, Failure> {
        let exe = std::env::current_exe()?;
        let shares = plan.members.div_ceil(plan.per_worker.max(1)).max(1);
        let mut workers = Vec::new();
        for i in 0..shares {
            let from = i * plan.per_worker;
            let to = plan.members.min(from + plan.per_worker);
            if from >= to {
                break;
            }
            let source = Ipv4Addr::new(127, 0, 0, u8::try_from(2 + i).map_err(|_| "too many workers")?);
            let mut child = Command::new(&exe)
                .arg("worker")
                .args(["--state", plan.state_path, "--run", plan.run])
                .args(["--from", &from.to_string(), "--to", &to.to_string()])
                .args(["--source", &source.to_string(), "--ws-urls", &plan.ws_urls.join(",")])
                .args(["--ramp", &(plan.ramp / shares as u64).max(1).to_string()])
                .args(["--planned", &plan.planned.to_string()])
                .args(
                    plan.reconnect_jitter_ms
                        .map(|j| ["--reconnect-jitter-ms".to_string(), j.to_string()])
                        .into_iter()
                        .flatten(),
                )
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()?;
            let stdin = child.stdin.take();
            let stdout = child.stdout.take().map(BufReader::new);
            workers.push(Worker { child, stdin, stdout });
        }
        let mut fleet = Fleet {
            workers,
            connected: 0,
            failed: 0,
        };
        for w in &mut fleet.workers {
            let line = w.read().await?;
            fleet.connected += line["connected"].as_u64().unwrap_or(0);
            fleet.failed += line["failed"].as_u64().unwrap_or(0);
        }
        Ok(fleet)
    }

    /// Asks every worker for its tally once each socket saw `expected` run messages (or after
    /// `grace`).
    pub async fn finish(&mut self, expected: u64, grace: Duration) -> Result<Vec<Value>, Failure> {
        let cmd = format!("finish {expected} {}\n", grace.as_millis());
        for w in &mut self.workers {
            w.write(&cmd)?;
        }
        let mut tallies = Vec::new();
        for w in &mut self.workers {
            tallies.push(w.read().await?);
        }
        Ok(tallies)
    }

    /// Closes every socket: the workers exit when their stdin closes.
    pub async fn close(mut self) {
        for w in &mut self.workers {
            w.stdin = None;
        }
        let workers = std::mem::take(&mut self.workers);
        let _ = tokio::task::spawn_blocking(move || {
            for mut w in workers {
                let _ = w.child.wait();
            }
        })
        .await;
    }
}

/// Workers never outlive their scenario, even when it fails.
impl Drop for Fleet {
    fn drop(&mut self) {
        for w in &mut self.workers {
            let _ = w.child.kill();
            let _ = w.child.wait();
        }
    }
}

/// The sum of one field over the workers' tallies.
pub fn sum(tallies: &[Value], key: &str) -> u64 {
    tallies.iter().map(|t| t[key].as_u64().unwrap_or(0)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frames_seq_is_its_last_seq_field() {
        // A message's content may itself contain `"seq":`; the frame's own comes last.
        let frame = r#"{"op":"messages.onCreate","data":{"content":"\"seq\":5"},"seq":42}"#;
        assert_eq!(frame_seq(frame), Some(42));
        assert_eq!(frame_seq(r#"{"op":"resumed","data":{"replayed":3}}"#), None);
    }

    #[test]
    fn ready_frames_give_their_session() {
        let ready = r#"{"op":"ready","data":{"sessionId":"0190d3b4-2a9e-7000-8000-000000000000"}}"#;
        assert_eq!(
            ready_session(ready).as_deref(),
            Some("0190d3b4-2a9e-7000-8000-000000000000")
        );
        assert_eq!(ready_session(r#"{"op":"resumed","data":{}}"#), None);
    }
}
