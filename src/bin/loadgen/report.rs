//! Figures of a run: percentiles over exact samples (REST requests) or over a histogram
//! (deliveries, counted in several worker processes and merged), printed as one JSON line and
//! a readable table.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

/// The latencies and errors of a REST run.
pub struct Run {
    pub latencies: Vec<Duration>,
    pub errors: u64,
    pub elapsed: Duration,
}

impl Run {
    /// `scenario`, counts, rate and percentiles, with `params` attached.
    pub fn summary(mut self, scenario: &str, params: Value) -> Value {
        self.latencies.sort();
        let n = self.latencies.len();
        let pct = |p: f64| -> f64 {
            if n == 0 {
                return 0.0;
            }
            let i = ((p / 100.0) * n as f64).ceil() as usize;
            ms(self.latencies[i.clamp(1, n) - 1])
        };
        json!({
            "scenario": scenario, "requests": n, "errors": self.errors, "seconds": self.elapsed.as_secs_f64(),
            "requestsPerSecond": round(n as f64 / self.elapsed.as_secs_f64().max(1e-9)),
            "p50Ms": round(pct(50.0)), "p99Ms": round(pct(99.0)), "maxMs": round(pct(100.0)), "params": params,
        })
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Two decimals are all a table needs.
pub fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Prints `summary` as one JSON line, then the `columns` (JSON keys) as a Markdown table.
pub fn print(summary: &Value, columns: &[&str]) {
    println!("{summary}");
    println!("| {} |", columns.join(" | "));
    println!("|{}", "---|".repeat(columns.len()));
    let cells: Vec<String> = columns
        .iter()
        .map(|c| match &summary[*c] {
            Value::String(s) => s.clone(),
            Value::Null => "-".into(),
            v => v.to_string(),
        })
        .collect();
    println!("| {} |", cells.join(" | "));
}

/// Width of a histogram bucket, and how many there are (the last one holds everything slower).
const BUCKET_US: u64 = 100;
const BUCKETS: usize = 300_000;

fn bucket(latency_us: u64) -> usize {
    usize::try_from(latency_us / BUCKET_US).map_or(BUCKETS - 1, |b| b.min(BUCKETS - 1))
}

/// A latency histogram many tasks record into at once (0.1 ms buckets up to 30 s).
pub struct SharedHistogram {
    counts: Vec<AtomicU64>,
    max_us: AtomicU64,
}

impl SharedHistogram {
    pub fn new() -> SharedHistogram {
        SharedHistogram {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max_us: AtomicU64::new(0),
        }
    }

    pub fn record(&self, latency_us: u64) {
        self.counts[bucket(latency_us)].fetch_add(1, Ordering::Relaxed);
        self.max_us.fetch_max(latency_us, Ordering::Relaxed);
    }

    /// Non-empty buckets as `[bucket, count]` pairs, and the maximum.
    pub fn snapshot(&self) -> Value {
        let pairs: Vec<[u64; 2]> = self
            .counts
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let c = c.load(Ordering::Relaxed);
                (c > 0).then_some([i as u64, c])
            })
            .collect();
        json!({"buckets": pairs, "maxUs": self.max_us.load(Ordering::Relaxed)})
    }
}

/// Snapshots of several workers merged.
#[derive(Default)]
pub struct Histogram {
    counts: std::collections::BTreeMap<u64, u64>,
    max_us: u64,
}

impl Histogram {
    pub fn merge(&mut self, snapshot: &Value) {
        for pair in snapshot["buckets"].as_array().into_iter().flatten() {
            if let (Some(b), Some(c)) = (pair[0].as_u64(), pair[1].as_u64()) {
                *self.counts.entry(b).or_insert(0) += c;
            }
        }
        self.max_us = self.max_us.max(snapshot["maxUs"].as_u64().unwrap_or(0));
    }

    /// The upper edge of the bucket holding the `p`th percentile, in ms.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        let total: u64 = self.counts.values().sum();
        if total == 0 {
            return 0.0;
        }
        let rank = ((p / 100.0) * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, c) in &self.counts {
            seen += c;
            if seen >= rank {
                let edge_us = ((b + 1) * BUCKET_US).min(self.max_us.max(BUCKET_US));
                return round(edge_us as f64 / 1000.0);
            }
        }
        round(self.max_us as f64 / 1000.0)
    }

    pub fn max_ms(&self) -> f64 {
        round(self.max_us as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_percentiles() {
        let a = SharedHistogram::new();
        let b = SharedHistogram::new();
        for us in 1..=99 {
            a.record(us * 100);
        }
        b.record(50_000);
        let mut h = Histogram::default();
        h.merge(&a.snapshot());
        h.merge(&b.snapshot());
        assert_eq!(h.percentile_ms(50.0), 5.1);
        assert_eq!(h.percentile_ms(99.0), 10.0);
        assert_eq!(h.percentile_ms(100.0), 50.0);
        assert_eq!(h.max_ms(), 50.0);
    }
}
