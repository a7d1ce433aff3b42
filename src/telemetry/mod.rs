//! Metrics, health and the HTTP endpoints (SPEC §6).

pub mod names;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// How long a gauge may go without an update before it is dropped from /metrics.
pub use crate::config::GAUGE_IDLE;

/// Consecutive failures after which an integration is reported failing, not degraded.
const FAILING_AFTER: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Starting,
    Healthy,
    Degraded,
    Failing,
}

#[derive(Debug, Clone, Serialize)]
pub struct IntegrationHealth {
    pub state: State,
    pub last_applied_unix_ms: Option<u64>,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    pub hint: Option<String>,
    /// Sum of consumer lag over the integration's partitions, when known.
    pub lag: Option<i64>,
    /// Applier lanes whose last batch failed (bit per lane): one lane committing must not
    /// make a failing sibling look healthy.
    #[serde(skip)]
    failing_lanes: u32,
}

impl Default for IntegrationHealth {
    fn default() -> Self {
        IntegrationHealth {
            state: State::Starting,
            last_applied_unix_ms: None,
            consecutive_failures: 0,
            last_error: None,
            hint: None,
            lag: None,
            failing_lanes: 0,
        }
    }
}

/// Shared per-integration health, written by the pipeline and read by /health.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<Mutex<BTreeMap<String, IntegrationHealth>>>);

fn lane_bit(lane: usize) -> u32 {
    1u32.checked_shl(lane as u32).unwrap_or(0)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch, as Kafka record timestamps count them.
pub fn epoch_ms() -> i64 {
    now_ms() as i64
}

/// Seconds from a record timestamp to `now_ms`; never negative, since producers' clocks
/// may run ahead of ours.
pub fn age_seconds(now_ms: i64, timestamp_ms: i64) -> f64 {
    now_ms.saturating_sub(timestamp_ms).max(0) as f64 / 1000.0
}

impl Health {
    fn update(&self, integration: &str, f: impl FnOnce(&mut IntegrationHealth)) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let h = map.entry(integration.to_string()).or_default();
        f(h);
        let healthy = if h.state == State::Failing { 0.0 } else { 1.0 };
        metrics::gauge!(names::HEALTHY, "integration" => integration.to_string()).set(healthy);
    }

    pub fn register(&self, integration: &str) {
        self.update(integration, |_| {});
        zero_series(integration);
    }

    /// Re-emits the health gauge (gauges idle out when not refreshed).
    pub fn touch(&self, integration: &str) {
        self.update(integration, |_| {});
    }

    /// A lane committed a batch; the integration is healthy again once no lane fails.
    pub fn lane_applied(&self, integration: &str, lane: usize) {
        self.update(integration, |h| {
            h.failing_lanes &= !lane_bit(lane);
            h.last_applied_unix_ms = Some(now_ms());
            if h.failing_lanes == 0 {
                h.state = State::Healthy;
                h.consecutive_failures = 0;
                h.last_error = None;
                h.hint = None;
            }
        });
    }

    /// A lane's batch failed.
    pub fn lane_failing(&self, integration: &str, lane: usize, error: &str, hint: &str) {
        self.update(integration, |h| h.failing_lanes |= lane_bit(lane));
        self.failing(integration, error, hint);
    }

    /// A lane's batch failed on something only the operator can fix: failing at once.
    pub fn lane_failed(&self, integration: &str, lane: usize, error: &str, hint: &str) {
        self.update(integration, |h| {
            h.failing_lanes |= lane_bit(lane);
            h.consecutive_failures = h.consecutive_failures.max(FAILING_AFTER);
        });
        self.failing(integration, error, hint);
    }

    /// The warehouse answered (e.g. offsets were read) even if nothing was applied yet.
    pub fn reachable(&self, integration: &str) {
        self.update(integration, |h| {
            if h.state != State::Healthy {
                h.state = State::Healthy;
                h.consecutive_failures = 0;
                h.last_error = None;
                h.hint = None;
            }
        });
    }

    pub fn failing(&self, integration: &str, error: &str, hint: &str) {
        self.update(integration, |h| {
            h.consecutive_failures += 1;
            h.state = if h.consecutive_failures >= FAILING_AFTER {
                State::Failing
            } else {
                State::Degraded
            };
            h.last_error = Some(error.to_string());
            h.hint = Some(hint.to_string());
        });
    }

    pub fn set_lag(&self, integration: &str, lag: i64) {
        self.update(integration, |h| h.lag = Some(lag));
    }

    pub fn snapshot(&self) -> BTreeMap<String, IntegrationHealth> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The worst state over all integrations.
    pub fn overall(&self) -> State {
        let snap = self.snapshot();
        let states: Vec<State> = snap.values().map(|h| h.state).collect();
        [State::Failing, State::Degraded, State::Starting]
            .into_iter()
            .find(|s| states.contains(s))
            .unwrap_or(State::Healthy)
    }
}

#[derive(Serialize)]
pub struct HealthReport {
    pub status: State,
    pub integrations: BTreeMap<String, IntegrationHealth>,
}

impl Health {
    pub fn report(&self) -> HealthReport {
        HealthReport {
            status: self.overall(),
            integrations: self.snapshot(),
        }
    }
}

/// Creates every counter series of an integration at zero, so that dashboards show 0
/// rather than "no data" until the first event of each kind.
fn zero_series(integration: &str) {
    let counters = [
        names::RECORDS_CONSUMED,
        names::RECORDS_APPLIED,
        names::RECORDS_DEDUPLICATED,
        names::RECORDS_SKIPPED,
        names::RECORDS_DEAD_LETTERED,
        names::BATCHES_COMMITTED,
        names::BATCHES_FENCED,
        names::VIEWS_REBUILT,
        names::KAFKA_ERRORS,
    ];
    for name in counters {
        metrics::counter!(name, "integration" => integration.to_string()).increment(0);
    }
    for kind in names::WAREHOUSE_ERROR_KINDS {
        metrics::counter!(names::WAREHOUSE_ERRORS, "integration" => integration.to_string(), "kind" => *kind).increment(0);
    }
    for kind in ["assign", "revoke"] {
        metrics::counter!(names::REBALANCES, "integration" => integration.to_string(), "kind" => kind).increment(0);
    }
}

/// Exponential backoff with full jitter: a random delay in [base/2, base], base doubling
/// from 200 ms up to `max`.
pub fn backoff(attempt: u32, max: Duration) -> Duration {
    let base = Duration::from_millis(200)
        .saturating_mul(1u32 << attempt.min(16))
        .min(max);
    let half = base / 2;
    half + half.mul_f64(fastrand::f64())
}

/// The process-wide Prometheus recorder (installed once; tests run many pipelines in one
/// process).
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let seconds = [
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ];
        // Finer where the latency target lies (250 ms), so quantiles read from it are
        // close (the load harness computes p50/p99 from this histogram). The exporter tries
        // Full matchers before Suffix ones.
        let latency = [
            0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.1, 0.11, 0.12, 0.13, 0.14,
            0.15, 0.16, 0.18, 0.2, 0.225, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0,
            60.0,
        ];
        let records = [1.0, 10.0, 100.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0];
        // Gauges not refreshed for a while disappear, so partitions an instance no longer
        // owns stop showing their last lag. Every gauge is refreshed by the lag task.
        let recorder = PrometheusBuilder::new()
            .idle_timeout(metrics_util::MetricKindMask::GAUGE, Some(GAUGE_IDLE))
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(names::END_TO_END_LATENCY.into()),
                &latency,
            )
            .and_then(|b| {
                b.set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(names::FETCH_DELAY.into()),
                    &latency,
                )
            })
            .and_then(|b| {
                b.set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
                    &seconds,
                )
            })
            .and_then(|b| {
                b.set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(names::BATCH_RECORDS.into()),
                    &records,
                )
            })
            .map(|b| b.build_recorder());
        match recorder {
            Ok(recorder) => {
                let handle = recorder.handle();
                if metrics::set_global_recorder(recorder).is_err() {
                    tracing::warn!(
                        "a metrics recorder was already installed; /metrics may be empty"
                    );
                }
                handle
            }
            // Bucket lists are constants and non-empty, so this does not happen; still,
            // never take the process down for metrics.
            Err(e) => {
                tracing::error!(error = %e, "cannot build the metrics recorder");
                PrometheusBuilder::new().build_recorder().handle()
            }
        }
    })
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(1);

/// Folds recorded histogram samples into their buckets until `stop`. The recorder keeps
/// every sample until this runs (or until /metrics is scraped), so without it an instance
/// nobody scrapes grows by two samples per record; with it, by at most a second's worth.
pub async fn upkeep(stop: tokio_util::sync::CancellationToken) {
    let handle = prometheus();
    let mut every = tokio::time::interval(UPKEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => handle.run_upkeep(),
        }
    }
}

/// GETs `path` from a policy-push HTTP endpoint at `addr` (`host:port`); returns the
/// status code and body. Small on purpose: it only talks to our own server.
pub async fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = addr.replace("0.0.0.0", "127.0.0.1");
    let mut stream = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(&addr),
    )
    .await
    .map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("connect to {addr} timed out"),
        )
    })??;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "response timed out"))??;
    let text = String::from_utf8_lossy(&raw);
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response");
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// Serves /metrics, /health and /ready until `shutdown`. Returns the bound address.
pub async fn serve(
    listen: &str,
    health: Health,
    shutdown: CancellationToken,
) -> Result<SocketAddr, HttpError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| HttpError::Bind {
            addr: listen.into(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| HttpError::Bind {
        addr: listen.into(),
        source,
    })?;
    let metrics = prometheus().clone();
    let h1 = health.clone();
    let h2 = health;
    let app = Router::new()
        .route(
            "/metrics",
            get(move || std::future::ready(metrics.render())),
        )
        .route(
            "/health",
            get(move || std::future::ready(Json(h1.report()))),
        )
        .route(
            "/ready",
            get(move || {
                let ready = h2.overall() != State::Failing;
                std::future::ready(
                    if ready {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                    }
                    .into_response(),
                )
            }),
        );
    tokio::spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let max = Duration::from_secs(5);
        for attempt in 0..30 {
            let d = backoff(attempt, max);
            assert!(d <= max, "{d:?}");
        }
        assert!(backoff(1, max) <= Duration::from_millis(400));
        assert!(backoff(10, max) >= Duration::from_millis(2500));
    }

    #[tokio::test]
    async fn upkeep_runs_until_stopped() {
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(upkeep(stop.clone()));
        // Its first tick is immediate; let it run that one.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!task.is_finished());
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("upkeep stops when cancelled")
            .expect("upkeep does not panic");
    }

    #[test]
    fn ages_are_in_seconds_and_never_negative() {
        assert_eq!(age_seconds(10_250, 10_000), 0.25);
        // A producer whose clock runs ahead.
        assert_eq!(age_seconds(10_000, 12_000), 0.0);
        assert_eq!(age_seconds(0, i64::MAX), 0.0);
        assert_eq!(age_seconds(i64::MAX, i64::MIN), i64::MAX as f64 / 1000.0);
    }

    #[test]
    fn health_degrades_then_fails_then_recovers() {
        let h = Health::default();
        h.register("a");
        assert_eq!(h.overall(), State::Starting);
        h.failing("a", "down", "start it");
        assert_eq!(h.overall(), State::Degraded);
        h.failing("a", "down", "start it");
        h.failing("a", "down", "start it");
        assert_eq!(h.overall(), State::Failing);
        assert_eq!(h.snapshot()["a"].hint.as_deref(), Some("start it"));
        h.lane_applied("a", 0);
        assert_eq!(h.overall(), State::Healthy);
        assert!(h.snapshot()["a"].last_error.is_none());
    }

    #[test]
    fn a_committing_lane_does_not_hide_a_failing_one() {
        let h = Health::default();
        h.register("a");
        for _ in 0..3 {
            h.lane_failing("a", 0, "out of shared memory", "raise locks");
        }
        h.lane_applied("a", 1);
        assert_eq!(h.overall(), State::Failing);
        assert!(h.snapshot()["a"].last_applied_unix_ms.is_some());
        h.lane_applied("a", 0);
        assert_eq!(h.overall(), State::Healthy);
    }
}
