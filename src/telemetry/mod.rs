//! Metrics, health and the HTTP endpoints (SPEC §6).

mod events;
mod health;
pub mod names;

pub use events::{Committed, Events, Failed};
pub use health::{Condition, Health, HealthReport, IntegrationHealth, State, FAILING_AFTER};

use crate::error::Chain;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

/// How long a gauge may go without an update before it is dropped from /metrics.
pub use crate::config::GAUGE_IDLE;

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch, as Kafka record timestamps count them.
pub fn epoch_ms() -> i64 {
    now_ms() as i64
}

/// The Unix time, in seconds, of an earlier moment.
pub fn unix_seconds(at: std::time::Instant) -> f64 {
    epoch_ms() as f64 / 1000.0 - at.elapsed().as_secs_f64()
}

/// Seconds from a record timestamp to `now_ms`; never negative, since producers' clocks
/// may run ahead of ours.
pub fn age_seconds(now_ms: i64, timestamp_ms: i64) -> f64 {
    now_ms.saturating_sub(timestamp_ms).max(0) as f64 / 1000.0
}

/// Creates every counter series of an integration at zero, so that dashboards show 0
/// rather than "no data" until the first event of each kind.
fn zero_series(integration: &str) {
    let counters = [
        names::RECORDS_CONSUMED,
        names::RECORDS_APPLIED,
        names::RECORDS_DEDUPLICATED,
        names::RECORDS_SKIPPED,
        names::RECORDS_HELD,
        names::RECORDS_DEAD_LETTERED,
        names::BATCHES_COMMITTED,
        names::BATCHES_FENCED,
        names::VIEWS_REBUILT,
        names::VIEWS_DEFERRED,
        names::VIEW_BLOCKERS_TERMINATED,
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
                tracing::error!(error = %Chain(&e), "cannot build the metrics recorder");
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
            _ = every.tick() => {
                // A gauge, so it idles out unless refreshed.
                metrics::gauge!(names::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
                handle.run_upkeep();
            }
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
    #[error("cannot listen on {addr}")]
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
            tracing::error!(error = %Chain(&e), "HTTP server stopped");
        }
    });
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
