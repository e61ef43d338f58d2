//! Scenarios with live sockets: `fanout` (delivery latency and loss to N members) and `idle`
//! (server memory per idle authenticated connection).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::gateway::{Fleet, FleetPlan, stamped, sum, unix_ns};
use crate::population::State;
use crate::report::{self, Histogram};
use crate::{Failure, Options, client};

/// A fresh run id, so a run never counts an earlier run's messages.
fn run_id() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// The members of the state file a run uses (`--members`, at most all of them).
fn members(opts: &Options, state: &State) -> Result<usize, Failure> {
    let n = opts.num("members", state.members.len() as u64)? as usize;
    if n > state.members.len() {
        return Err(format!(
            "the state file has {} members; run `populate` first",
            state.members.len()
        )
        .into());
    }
    Ok(n)
}

fn plan<'a>(
    opts: &'a Options,
    state: &State,
    members: usize,
    run: &'a str,
    planned: u64,
) -> Result<FleetPlan<'a>, Failure> {
    Ok(FleetPlan {
        state_path: opts.get("state")?,
        members,
        ws_urls: FleetPlan::urls(opts, state),
        ramp: opts.num("ramp", 1000)?,
        per_worker: opts.num("per-worker", 10_000)? as usize,
        run,
        planned,
        reconnect_jitter_ms: None,
    })
}

/// `fanout`: N members connected; the owner posts `--rate` messages/s for `--seconds`.
pub async fn fanout(opts: &Options) -> Result<(), Failure> {
    let state = State::load(opts.get("state")?)?;
    let n = members(opts, &state)?;
    let (rate, seconds) = (opts.num("rate", 10)?.max(1), opts.num("seconds", 10)?);
    let settle = Duration::from_secs(opts.num("settle", 10)?);
    let planned = rate * seconds;
    let run = run_id();
    let connect_started = Instant::now();
    let mut fleet = Fleet::connect(&plan(opts, &state, n, &run, planned)?).await?;
    let ramp_seconds = connect_started.elapsed().as_secs_f64();
    // Presence and join traffic of the ramp-up settles before the measurement.
    tokio::time::sleep(settle).await;

    let http = client()?;
    // `--send-url`: post elsewhere than the state's server (the `floor` server, for instance).
    let url = opts
        .get("send-url")
        .map_or_else(|_| state.messages_url(), str::to_string);
    let pids = server_pids(opts);
    let cpu_before = cpu_seconds(&pids)?;
    let (sent_ok, send_errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let first_ns = unix_ns();
    let start = Instant::now();
    let mut sends = Vec::with_capacity(planned as usize);
    for i in 0..planned {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate as f64)).await;
        let (http, url, token) = (http.clone(), url.clone(), state.token.clone());
        let (ok, errors, content) = (sent_ok.clone(), send_errors.clone(), stamped(&run, i));
        sends.push(tokio::spawn(async move {
            let res = http
                .post(&url)
                .bearer_auth(&token)
                .json(&json!({"content": content}))
                .send()
                .await;
            match res {
                Ok(r) if r.status().is_success() => ok.fetch_add(1, Ordering::Relaxed),
                _ => errors.fetch_add(1, Ordering::Relaxed),
            };
        }));
    }
    for s in sends {
        let _ = s.await;
    }
    let grace = Duration::from_secs(opts.num("grace", 60)?);
    let ok = sent_ok.load(Ordering::Relaxed);
    let tallies = fleet.finish(ok, grace).await?;
    let server_cpu = cpu_seconds(&pids)? - cpu_before;
    let mut latency = Histogram::default();
    for t in &tallies {
        latency.merge(&t["latency"]);
    }
    let delivered = sum(&tallies, "delivered");
    let expected = ok * (fleet.connected);
    let last_ns = tallies
        .iter()
        .filter_map(|t| t["lastNs"].as_u64())
        .max()
        .unwrap_or(first_ns);
    let span = (last_ns.saturating_sub(first_ns) as f64 / 1e9).max(1e-9);
    let summary = json!({
        "scenario": "fanout", "members": n, "connected": fleet.connected, "failed": fleet.failed,
        "rampSeconds": report::round(ramp_seconds), "rate": rate, "seconds": seconds,
        "sent": ok, "sendErrors": send_errors.load(Ordering::Relaxed),
        "expected": expected, "delivered": delivered, "lost": expected.saturating_sub(delivered),
        "duplicates": sum(&tallies, "duplicates"), "dropped": sum(&tallies, "dropped"),
        "p50Ms": latency.percentile_ms(50.0), "p99Ms": latency.percentile_ms(99.0), "maxMs": latency.max_ms(),
        "deliveriesPerSecond": report::round(delivered as f64 / span),
        "workers": tallies.len(), "gateways": FleetPlan::urls(opts, &state),
        "deliveredPerWorker": tallies.iter().map(|t| t["delivered"].clone()).collect::<Vec<_>>(),
        "graceSeconds": grace.as_secs(),
        "serverCpuSeconds": if pids.is_empty() { Value::Null } else { json!(report::round(server_cpu)) },
        "serverCpuUsPerDelivery": if pids.is_empty() || delivered == 0 { Value::Null } else {
            json!(report::round(server_cpu * 1e6 / delivered as f64))
        },
    });
    fleet.close().await;
    report::print(
        &summary,
        &[
            "scenario",
            "members",
            "connected",
            "rate",
            "seconds",
            "expected",
            "delivered",
            "lost",
            "dropped",
            "p50Ms",
            "p99Ms",
            "maxMs",
            "deliveriesPerSecond",
            "serverCpuUsPerDelivery",
        ],
    );
    Ok(())
}

/// `--server-pid PID[,PID…]`: local server processes whose CPU time a run reports.
fn server_pids(opts: &Options) -> Vec<String> {
    opts.get("server-pid")
        .map(|list| list.split(',').map(str::to_string).collect())
        .unwrap_or_default()
}

/// User plus system CPU seconds of local processes so far, from `/proc/<pid>/stat`.
fn cpu_seconds(pids: &[String]) -> Result<f64, Failure> {
    // USER_HZ, the unit of `/proc/<pid>/stat` times, is 100 on every common Linux architecture.
    const TICKS_PER_SECOND: f64 = 100.0;
    let mut total = 0.0;
    for pid in pids {
        let stat =
            std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| format!("server pid {pid}: {e}"))?;
        // Fields after the command name (which may hold spaces) start at the state, field 3.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or("malformed /proc stat")?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or("malformed /proc stat")
        };
        // utime and stime are fields 14 and 15: indexes 11 and 12 after the command name.
        total += (ticks(11)? + ticks(12)?) as f64 / TICKS_PER_SECOND;
    }
    Ok(total)
}

/// The resident memory of a local process, from `/proc`.
fn rss_bytes(pid: &str) -> Result<u64, Failure> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| format!("server pid {pid}: {e}"))?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or("no VmRSS in /proc")?;
    Ok(kib * 1024)
}

/// `idle`: N authenticated connections that only answer heartbeats; the server's RSS before
/// and after (`--server-pid`, a local process).
pub async fn idle(opts: &Options) -> Result<(), Failure> {
    let state = State::load(opts.get("state")?)?;
    let n = members(opts, &state)?;
    let pids: Vec<String> = opts.get("server-pid")?.split(',').map(str::to_string).collect();
    let rss = |pids: &[String]| -> Result<u64, Failure> { pids.iter().map(|p| rss_bytes(p)).sum() };
    let (settle, hold) = (opts.num("settle", 70)?, opts.num("seconds", 60)?);
    let before = rss(&pids)?;
    let run = run_id();
    let started = Instant::now();
    let mut fleet = Fleet::connect(&plan(opts, &state, n, &run, 0)?).await?;
    let ramp_seconds = started.elapsed().as_secs_f64();
    // Presence fan-out of the ramp-up and the 60 s replay window pass before the reading.
    tokio::time::sleep(Duration::from_secs(settle)).await;
    let settled = rss(&pids)?;
    // Heartbeats keep the sockets alive meanwhile; the reading is taken again at the end.
    tokio::time::sleep(Duration::from_secs(hold)).await;
    let after = rss(&pids)?;
    let tallies = fleet.finish(0, Duration::ZERO).await?;
    let per = |bytes: u64| -> Value {
        json!(report::round(
            bytes.saturating_sub(before) as f64 / fleet.connected.max(1) as f64
        ))
    };
    let summary = json!({
        "scenario": "idle", "members": n, "connected": fleet.connected, "failed": fleet.failed,
        "dropped": sum(&tallies, "dropped"), "rampSeconds": report::round(ramp_seconds),
        "rssBeforeMiB": report::round(before as f64 / 1048576.0), "rssSettledMiB": report::round(settled as f64 / 1048576.0),
        "rssAfterMiB": report::round(after as f64 / 1048576.0),
        "bytesPerConnectionSettled": per(settled), "bytesPerConnection": per(after),
        "settleSeconds": settle, "holdSeconds": hold,
    });
    fleet.close().await;
    report::print(
        &summary,
        &[
            "scenario",
            "connected",
            "failed",
            "dropped",
            "rssBeforeMiB",
            "rssAfterMiB",
            "bytesPerConnectionSettled",
            "bytesPerConnection",
        ],
    );
    Ok(())
}

/// Members connected as listeners while another scenario runs (`--listeners`, default none).
pub async fn listeners(opts: &Options) -> Result<Option<Fleet>, Failure> {
    let n = opts.num("listeners", 0)? as usize;
    if n == 0 {
        return Ok(None);
    }
    let state = State::load(opts.get("state")?)?;
    if n > state.members.len() {
        return Err(format!("--listeners {n}: the state file has {} members", state.members.len()).into());
    }
    let run = run_id();
    Ok(Some(Fleet::connect(&plan(opts, &state, n, &run, 0)?).await?))
}
