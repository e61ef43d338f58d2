//! `storm`: a reconnect storm after a restart (issue 18). N members are connected to one local
//! server; the owner posts 1 message/s throughout; the server is stopped gracefully (SIGTERM)
//! and started again with `--restart-cmd`; every socket the server closed reconnects with
//! `resume` after a random 0–`--jitter-ms` ms (0: all at once). Reported: how long until every
//! socket was back, how many resumed and how many had to start a fresh session, failed connection
//! attempts, and the messages each socket missed across the restart.
//!
//! ```text
//! alterego-loadgen storm --state FILE --members N --server-pid PID \
//!     --restart-cmd 'CMD starting the server in the background' [--jitter-ms 5000] [--wait 60]
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use crate::gateway::{Fleet, FleetPlan, stamped, sum, unix_ns};
use crate::population::State;
use crate::report::{self, Histogram};
use crate::{Failure, Options, client};

pub async fn storm(opts: &Options) -> Result<(), Failure> {
    let state = State::load(opts.get("state")?)?;
    let members = opts.num("members", state.members.len() as u64)? as usize;
    if members > state.members.len() {
        return Err(format!("the state file has {} members", state.members.len()).into());
    }
    let pid = opts.get("server-pid")?.to_string();
    let restart = opts.get("restart-cmd")?.to_string();
    let jitter_ms = opts.num("jitter-ms", 0)?;
    let wait = Duration::from_secs(opts.num("wait", 60)?);
    // One message a second for as long as the run can take, so each socket has room for all.
    let planned = 30 + wait.as_secs() + 120;
    let run = format!("{:08x}", rand::random::<u32>());
    let plan = FleetPlan {
        state_path: opts.get("state")?,
        members,
        ws_urls: FleetPlan::urls(opts, &state),
        ramp: opts.num("ramp", 1000)?,
        per_worker: opts.num("per-worker", 10_000)? as usize,
        run: &run,
        planned,
        reconnect_jitter_ms: Some(jitter_ms),
    };
    let mut fleet = Fleet::connect(&plan).await?;
    tokio::time::sleep(Duration::from_secs(opts.num("settle", 10)?)).await;

    // The owner's messages, 1/s, from before the stop until the end.
    let sent = Arc::new(AtomicU64::new(0));
    let failed_sends = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (http, url, token) = (client()?, state.messages_url(), state.token.clone());
        let (sent, failed_sends, stop, run) = (sent.clone(), failed_sends.clone(), stop.clone(), run.clone());
        tokio::spawn(async move {
            let mut index = 0;
            while !stop.load(Ordering::Relaxed) && index < planned {
                let ok = http
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"content": stamped(&run, index)}))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    sent.fetch_add(1, Ordering::Relaxed);
                    index += 1;
                } else {
                    failed_sends.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;

    let stop_ns = unix_ns();
    let stopping = Instant::now();
    let status = std::process::Command::new("kill").args(["-TERM", &pid]).status()?;
    if !status.success() {
        return Err(format!("kill -TERM {pid} failed").into());
    }
    while std::path::Path::new(&format!("/proc/{pid}")).exists() && stopping.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopped_seconds = stopping.elapsed().as_secs_f64();
    let restart_ns = unix_ns();
    let status = std::process::Command::new("sh").args(["-c", &restart]).status()?;
    if !status.success() {
        return Err(format!("--restart-cmd failed: {status}").into());
    }
    tokio::time::sleep(wait).await;
    stop.store(true, Ordering::Relaxed);
    let _ = sender.await;

    let ok = sent.load(Ordering::Relaxed);
    let tallies = fleet.finish(ok, Duration::from_secs(opts.num("grace", 30)?)).await?;
    let mut away = Histogram::default();
    let mut latency = Histogram::default();
    for t in &tallies {
        away.merge(&t["reconnect"]);
        latency.merge(&t["latency"]);
    }
    let last_back = tallies
        .iter()
        .filter_map(|t| t["lastBackNs"].as_u64())
        .max()
        .unwrap_or(0);
    let seconds_after = |from: u64| report::round(last_back.saturating_sub(from) as f64 / 1e9);
    let (resumed, fresh, disconnects) = (
        sum(&tallies, "resumed"),
        sum(&tallies, "fresh"),
        sum(&tallies, "disconnects"),
    );
    let expected = ok * fleet.connected;
    let delivered = sum(&tallies, "delivered");
    let summary = json!({
        "scenario": "storm", "members": members, "connected": fleet.connected, "failed": fleet.failed,
        "jitterMs": jitter_ms, "stopSeconds": report::round(stopped_seconds),
        "disconnects": disconnects, "resumed": resumed, "fresh": fresh,
        "notBack": disconnects.saturating_sub(resumed + fresh), "dropped": sum(&tallies, "dropped"),
        "reconnectFailures": sum(&tallies, "reconnectFailures"),
        "allBackAfterStopSeconds": seconds_after(stop_ns), "allBackAfterRestartSeconds": seconds_after(restart_ns),
        "awayP50Ms": away.percentile_ms(50.0), "awayP99Ms": away.percentile_ms(99.0), "awayMaxMs": away.max_ms(),
        "sent": ok, "failedSends": failed_sends.load(Ordering::Relaxed),
        "expected": expected, "delivered": delivered, "lost": expected.saturating_sub(delivered),
        "duplicates": sum(&tallies, "duplicates"), "p99Ms": latency.percentile_ms(99.0),
    });
    fleet.close().await;
    report::print(
        &summary,
        &[
            "scenario",
            "connected",
            "jitterMs",
            "disconnects",
            "resumed",
            "fresh",
            "notBack",
            "reconnectFailures",
            "allBackAfterRestartSeconds",
            "awayP99Ms",
            "sent",
            "lost",
        ],
    );
    Ok(())
}
