//! The warehouse's own background work for one integration, beside its lanes: the
//! start (`apply::setup::startup`: the salt, and no unprotected view), the policy barrier's
//! watch (no view is created before the policies have caught up, `apply::txn::policy_barrier`), and
//! the views an open transaction held up (`apply::txn::blocked`): retried, reported on
//! /health with who holds them and since when, and their holders terminated after
//! `terminate_blockers_after_ms` where that is set.

use super::stop_integration;
use crate::apply::{ApplyError, Warehouse};
use crate::error::{Chain, Class, Classify};
use crate::retry;
use crate::telemetry;
use crate::telemetry::{names, Condition, Health, State};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The subject of the /health condition for views that wait to be rebuilt.
pub(super) const VIEWS_HELD: &str = "views held up";

/// The subject of the /health condition of an integration that commits nothing while
/// records wait.
pub(super) const STALLED: &str = "stalled";

/// The longest wait between two tries of a held-up rebuild. Each try makes the view's
/// readers queue behind it for up to `view_lock_timeout`, so it is not tried constantly.
const MAX_VIEW_RETRY: Duration = Duration::from_secs(10);

pub(super) struct WarehouseWatch {
    pub(super) warehouse: Arc<Warehouse>,
    pub(super) metadata: Arc<rdkafka::consumer::BaseConsumer>,
    pub(super) topic: String,
    pub(super) group: String,
    pub(super) max_backoff: Duration,
    pub(super) name: String,
    pub(super) health: Health,
    pub(super) terminate_after: Option<Duration>,
    /// Stops this integration only, after a fatal error at its start.
    pub(super) stop_integration: CancellationToken,
}

/// When a held-up rebuild is tried next.
struct Retry {
    attempt: u32,
    at: Instant,
}

impl WarehouseWatch {
    pub(super) async fn run(self, stop: CancellationToken) {
        if !self.start(&stop).await {
            return;
        }
        self.read_policy_ends(&stop).await;
        let mut retry = Retry {
            attempt: 0,
            at: Instant::now(),
        };
        let mut pending = Retry {
            attempt: 0,
            at: Instant::now(),
        };
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(crate::apply::txn::policy_barrier::CHECK_EVERY) => {}
            }
            // Every step waits for the warehouse, which may not answer: SIGTERM does not
            // wait for it.
            let step = async {
                self.report_stall().await;
                if Instant::now() >= pending.at {
                    self.open_pending_views(&mut pending).await;
                }
                if self.warehouse.has_stale_views() && Instant::now() >= retry.at {
                    self.rebuild_stale(&mut retry).await;
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = step => {}
            }
            let since = self
                .warehouse
                .stale_since()
                .map_or(0.0, telemetry::unix_seconds);
            metrics::gauge!(names::VIEWS_STALE_SINCE, "integration" => self.name.clone())
                .set(since);
        }
    }

    /// Runs the warehouse's start until it succeeds (true) or fails for good: then this
    /// integration stops, with the reason on /health.
    async fn start(&self, stop: &CancellationToken) -> bool {
        let mut attempt = 0;
        loop {
            let started = tokio::select! {
                _ = stop.cancelled() => return false,
                started = self.warehouse.started() => started,
            };
            let e = match started {
                Ok(()) => return true,
                Err(e) => e,
            };
            if e.class() == Class::Fatal {
                tracing::error!(integration = %self.name, error = %Chain(&e), hint = e.hint(), "refusing to run; stopping this integration");
                stop_integration(&self.health, &self.name, &self.stop_integration, &e);
                return false;
            }
            attempt += 1;
            tracing::warn!(integration = %self.name, error = %Chain(&e), attempt, "warehouse start failed; retrying");
            if retry::wait_unless(stop, retry::delay(attempt, self.max_backoff)).await {
                return false;
            }
        }
    }

    /// Reads the policies topic's end offsets for the policy barrier.
    async fn read_policy_ends(&self, stop: &CancellationToken) {
        let barrier = self.warehouse.barrier();
        let mut attempt = 0;
        while barrier.needs_ends() {
            let read = crate::offsets::watermarks_blocking(
                self.metadata.clone(),
                vec![self.topic.clone()],
                Duration::from_secs(10),
            )
            .await;
            match read {
                Ok(marks) => {
                    barrier.set_ends(
                        marks
                            .into_iter()
                            .map(|(tp, (_, high))| (tp.partition, high))
                            .collect(),
                    );
                    continue;
                }
                Err(e) => {
                    attempt += 1;
                    tracing::warn!(error = %Chain(&e), attempt, "cannot read the policies topic's end offsets; no view is created until they are known");
                }
            }
            if retry::wait_unless(stop, retry::delay(attempt, self.max_backoff)).await {
                return;
            }
        }
    }

    /// Failing, with the reason when the warehouse shows it, while no batch has been
    /// committed for `http.failing_after_ms` and records wait, whatever keeps them (a
    /// lock on the offsets table, a warehouse that accepts and never answers).
    async fn report_stall(&self) {
        let Some((idle, lag)) = self.health.stalled(&self.name) else {
            self.health.clear_condition(&self.name, STALLED);
            return;
        };
        let waits = tokio::time::timeout(Duration::from_secs(5), self.warehouse.lock_waits()).await;
        let reason = match waits {
            Ok(Ok(waits)) if !waits.is_empty() => format!(": {}", waits.join("; ")),
            Ok(Ok(_)) => String::new(),
            Ok(Err(e)) => format!(" (what it waits for cannot be read: {})", Chain(&e)),
            Err(_) => " (the warehouse does not answer)".into(),
        };
        let condition = Condition {
            severity: State::Failing,
            error: format!(
                "no batch committed for {}s while {lag} records wait{reason}",
                idle.as_secs()
            ),
            hint: "find what holds the warehouse (the lock named, pg_stat_activity): policy-push applies again as soon as it lets go".into(),
        };
        self.health.set_condition(&self.name, STALLED, condition);
    }

    /// Builds the views that waited for the policy barrier once it opens. Held up by a
    /// lock, it backs off as held-up views do, so that readers do not queue behind it
    /// every half second.
    async fn open_pending_views(&self, pending: &mut Retry) {
        match self.warehouse.open_views_if_caught_up(&self.group).await {
            Ok(_) => pending.attempt = 0,
            Err(e) => {
                pending.attempt += 1;
                pending.at = Instant::now() + retry::delay(pending.attempt, MAX_VIEW_RETRY);
                tracing::debug!(error = %Chain(&e), "pending views not built yet; retrying");
            }
        }
    }

    /// One try of the views an open transaction held up.
    async fn rebuild_stale(&self, retry: &mut Retry) {
        match self.warehouse.rebuild_stale(&self.group).await {
            Ok(views) => {
                retry.attempt = 0;
                self.health.clear_condition(&self.name, VIEWS_HELD);
                tracing::info!(integration = %self.name, views, "held-up views rebuilt");
            }
            Err(ApplyError::ViewsBlocked(_)) => {
                retry.attempt += 1;
                retry.at = Instant::now() + retry::delay(retry.attempt, MAX_VIEW_RETRY);
                self.held_up(retry).await;
            }
            Err(e) => {
                retry.attempt += 1;
                retry.at = Instant::now() + retry::delay(retry.attempt, MAX_VIEW_RETRY);
                tracing::warn!(integration = %self.name, error = %Chain(&e), "held-up views not rebuilt; retrying");
                let condition = Condition {
                    severity: State::Degraded,
                    error: format!(
                        "views wait to be rebuilt with the policies applied since: {}",
                        Chain(&e)
                    ),
                    hint: e.hint().to_string(),
                };
                self.health.set_condition(&self.name, VIEWS_HELD, condition);
            }
        }
    }

    /// Reports the held-up views with who holds them, and terminates the holders once
    /// they have held them `terminate_after`.
    async fn held_up(&self, retry: &mut Retry) {
        let since = self.warehouse.stale_since().unwrap_or_else(Instant::now);
        let held = since.elapsed();
        let blockers = match self.warehouse.view_blockers().await {
            Ok(b) if b.is_empty() => "sessions the system account cannot see".to_string(),
            Ok(b) => b
                .iter()
                .map(|b| b.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            Err(e) => format!("sessions not known ({})", Chain(&e)),
        };
        let error = format!(
            "views wait {}s to be rebuilt with the policies applied since; held up by {blockers}",
            held.as_secs()
        );
        tracing::warn!(integration = %self.name, %error, "views held up");
        let hint = match self.terminate_after {
            Some(after) => format!("sessions whose transaction has been open {}s and still holds a view are terminated (terminate_blockers_after_ms; the setup user needs pg_signal_backend and pg_read_all_stats); they can also commit or roll back", after.as_secs()),
            None => "the sessions named hold the views in open transactions: they must commit or roll back, or be terminated (pg_terminate_backend); set terminate_blockers_after_ms to have policy-push terminate them".into(),
        };
        let condition = Condition {
            severity: State::Degraded,
            error,
            hint,
        };
        self.health.set_condition(&self.name, VIEWS_HELD, condition);
        if let Some(after) = self.terminate_after.filter(|after| held >= *after) {
            self.terminate(after, retry).await;
        }
    }

    async fn terminate(&self, after: Duration, retry: &mut Retry) {
        match self.warehouse.terminate_view_blockers(after).await {
            Ok(ended) => {
                for b in &ended {
                    tracing::warn!(integration = %self.name, blocker = %b, "terminated a session holding up a view rebuild");
                }
                metrics::counter!(names::VIEW_BLOCKERS_TERMINATED, "integration" => self.name.clone())
                    .increment(ended.len() as u64);
                // Try again as soon as they are gone.
                retry.attempt = 0;
                retry.at = Instant::now() + Duration::from_millis(100);
            }
            Err(e) => {
                tracing::warn!(integration = %self.name, error = %Chain(&e), hint = e.hint(), "cannot terminate the sessions holding up a view rebuild (the setup user needs pg_signal_backend and pg_read_all_stats; bootstrap again with a setup_url)");
            }
        }
    }
}
