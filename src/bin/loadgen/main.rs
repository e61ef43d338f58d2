//! `alterego-loadgen`: measures a server the way clients load it, through the public wire
//! protocol only (REST and `/ws`). Point it at any server implementing the protocol with
//! `--base-url` (loopback only: sockets are opened from 127.0.0.X source addresses).
//!
//! ```text
//! alterego-loadgen populate --base-url URL --state FILE --members N [--concurrency 16]
//! alterego-loadgen fanout  --state FILE [--members N] [--rate 10] [--seconds 10] [--ramp 1000] [--settle 10] [--ws-urls ws://…/ws,…] [--send-url URL] [--server-pid PID,…]
//! alterego-loadgen floor   --listen IP:PORT
//! alterego-loadgen storm   --state FILE --server-pid PID --restart-cmd CMD [--members N] [--jitter-ms 0] [--wait 60]
//! alterego-loadgen idle    --state FILE --server-pid PID[,PID…] [--members N] [--settle 70] [--seconds 60] [--ramp 1000]
//! alterego-loadgen send    --state FILE [--concurrency 64] [--seconds 10] [--listeners 100]
//! alterego-loadgen history --state FILE [--requests N] [--concurrency C] [--limit 50]
//! alterego-loadgen search  --state FILE --queries a,b,"c d" [--requests N] [--concurrency C]
//! ```
//! `populate` registers the generator's own users through the API (run the server with
//! `RATE_LIMITS=off`, and a low `BCRYPT_COST` to register thousands quickly) and keeps their
//! tokens in the state file, which every other scenario reads. `send`, `history` and `search`
//! also accept `--base-url --token --space --channel` instead of `--state`. Every loop is bounded
//! in count and time. Results: one JSON line, then a readable table.

mod floor;
mod gateway;
mod live;
mod population;
mod report;
mod rest;
mod storm;

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

type Failure = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((scenario, rest)) = args.split_first() else {
        eprintln!("usage: alterego-loadgen <populate|fanout|floor|storm|idle|send|history|search> [--option value …]");
        return ExitCode::FAILURE;
    };
    let opts = match Options::parse(rest) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("alterego-loadgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match scenario.as_str() {
        "populate" => population::populate(&opts).await,
        "history" => rest::history(&opts).await,
        "search" => rest::search(&opts).await,
        "send" => rest::send(&opts).await,
        "fanout" => live::fanout(&opts).await,
        "floor" => floor::floor(&opts).await,
        "storm" => storm::storm(&opts).await,
        "idle" => live::idle(&opts).await,
        "worker" => gateway::worker(&opts).await,
        other => Err(format!("unknown scenario `{other}`").into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("alterego-loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--key value` options.
struct Options {
    values: HashMap<String, String>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut values = HashMap::new();
        let mut it = args.iter();
        while let Some(key) = it.next() {
            let name = key
                .strip_prefix("--")
                .ok_or_else(|| format!("expected an option, got `{key}`"))?;
            let value = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
            values.insert(name.to_string(), value.clone());
        }
        Ok(Options { values })
    }

    fn get(&self, key: &str) -> Result<&str, String> {
        self.values
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| format!("--{key} is required"))
    }

    fn num(&self, key: &str, default: u64) -> Result<u64, String> {
        match self.values.get(key) {
            Some(v) => v.parse().map_err(|_| format!("--{key} must be a number")),
            None => Ok(default),
        }
    }

    fn base(&self) -> Result<String, String> {
        Ok(self.get("base-url")?.trim_end_matches('/').to_string())
    }
}

fn client() -> Result<reqwest::Client, Failure> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(256)
        .build()?)
}
