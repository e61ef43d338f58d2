//! Prometheus metrics: the process-wide recorder and the per-request layer (requests by route and
//! status, latency histograms). Gauges of other subsystems are set where they live.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::middlewares::access_log;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide recorder, installed on first use (tests build many apps in one process).
pub fn recorder() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full("http_request_duration_seconds".into()), &buckets)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed; then ours simply renders nothing.
            if metrics::set_global_recorder(recorder).is_ok() {
                describe();
            }
            handle
        })
        .clone()
}

pub async fn layer(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().as_str().to_owned();
    let route = access_log::route_of(&req).to_owned();
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
    res
}

/// The `# HELP` text (and unit) of every metric alterego records; `/metrics` shows it next to
/// the metric once it has a value. The `process_*` metrics are rendered by
/// `functions::process_stats` instead.
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "http_requests_total",
        "HTTP requests answered, by method, route template and status"
    );
    describe_histogram!(
        "http_request_duration_seconds",
        Unit::Seconds,
        "Time to answer an HTTP request (a WebSocket upgrade until the 101), by method and route template"
    );
    describe_gauge!(
        "alterego_db_pool_connections",
        "PostgreSQL connections in the pool, busy or idle"
    );
    describe_gauge!(
        "alterego_db_pool_idle_connections",
        "PostgreSQL connections idle in the pool"
    );
    describe_counter!(
        "alterego_rate_limited_total",
        "Requests and connections refused with 429, by rate-limit bucket"
    );
    describe_counter!(
        "alterego_events_published_total",
        "Events this instance published on the bus"
    );
    describe_counter!(
        "alterego_events_delivered_total",
        "Event frames queued to this instance's /ws sessions"
    );
    describe_gauge!("alterego_ws_connections", "Open /ws sockets on this instance");
    describe_gauge!(
        "alterego_ws_sessions",
        "Gateway sessions held by this instance, attached to a socket or detached and resumable"
    );
    describe_counter!(
        "alterego_ws_queue_overflows_total",
        "Sockets closed with 4010 because their outbound queue overflowed (slow consumers)"
    );
    describe_counter!(
        "alterego_ws_resumes_total",
        "Session resumes, by result (succeeded or failed)"
    );
    describe_counter!(
        "alterego_collab_updates_persisted_total",
        "Collaborative-document updates written to PostgreSQL"
    );
    describe_counter!(
        "alterego_collab_compactions_total",
        "Collaborative documents folded into one snapshot"
    );
    describe_counter!(
        "alterego_push_deliveries_total",
        "Web Push notifications, by outcome (sent, pruned, refused, failed)"
    );
    describe_counter!(
        "alterego_connections_refused_total",
        "Connections refused on accept, by reason (per_address: MAX_CONNECTIONS_PER_IP, total: MAX_CONNECTIONS)"
    );
    describe_counter!(
        "alterego_accept_errors_total",
        "Failed accepts other than a connection reset before it was accepted (e.g. out of descriptors)"
    );
    describe_counter!(
        "alterego_push_jobs_dropped_total",
        "Messages whose notifications were dropped because the push queue was full"
    );
    describe_counter!(
        "alterego_session_cache_total",
        "Session checks answered by the session cache (hit) or left to PostgreSQL (miss)"
    );
    describe_histogram!(
        "alterego_send_batch_rows",
        "Messages written by one group-commit statement (batches of two or more)"
    );
}
