//! One place per operational event of an integration's batches: its metrics, its log
//! line and its `/health` update together, with the metric names of `names`. The
//! applier says what happened; how that is reported is decided here, so a metric, a log
//! line or a health state cannot be forgotten at one of the places an event happens.

use std::collections::BTreeMap;
use std::time::Duration;

use metrics::{Counter, Histogram};

use super::{age_seconds, epoch_ms, names, Health};

/// What a committed batch did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Committed {
    pub lane: usize,
    /// Records in the batch.
    pub records: usize,
    /// Procedure calls that changed the warehouse.
    pub changes: u64,
    pub deduplicated: u64,
    pub skipped: u64,
    pub dead_lettered: u64,
    pub views_rebuilt: u64,
    pub views_deferred: u64,
}

/// A failed attempt to apply a batch, retried after `delay`.
#[derive(Clone, Copy)]
pub struct Failed<'a> {
    pub lane: usize,
    pub error: &'a (dyn std::error::Error + 'static),
    /// `policy_push_warehouse_errors_total`'s `kind`.
    pub kind: &'static str,
    pub hint: &'static str,
    /// The operator must act (a permission, a missing object), rather than wait.
    pub needs_operator: bool,
    pub attempt: u32,
    pub delay: Duration,
}

/// The events of one integration's batches, with its metric handles looked up once.
#[derive(Clone)]
pub struct Events {
    integration: String,
    health: Health,
    applied: Counter,
    deduplicated: Counter,
    skipped: Counter,
    dead_lettered: Counter,
    batches: Counter,
    fenced: Counter,
    views_rebuilt: Counter,
    views_deferred: Counter,
    batch_records: Histogram,
    latency: Histogram,
    apply_duration: Histogram,
}

impl Events {
    pub fn new(integration: &str, health: Health) -> Self {
        let label = || ("integration", integration.to_string());
        let counter = |name: &'static str| metrics::counter!(name, &[label()]);
        let histogram = |name: &'static str| metrics::histogram!(name, &[label()]);
        Events {
            integration: integration.to_string(),
            health,
            applied: counter(names::RECORDS_APPLIED),
            deduplicated: counter(names::RECORDS_DEDUPLICATED),
            skipped: counter(names::RECORDS_SKIPPED),
            dead_lettered: counter(names::RECORDS_DEAD_LETTERED),
            batches: counter(names::BATCHES_COMMITTED),
            fenced: counter(names::BATCHES_FENCED),
            views_rebuilt: counter(names::VIEWS_REBUILT),
            views_deferred: counter(names::VIEWS_DEFERRED),
            batch_records: histogram(names::BATCH_RECORDS),
            latency: histogram(names::END_TO_END_LATENCY),
            apply_duration: histogram(names::APPLY_DURATION),
        }
    }

    /// A batch committed; `timestamps_ms` counts its records by their Kafka timestamp
    /// (end-to-end latency).
    pub fn batch_committed(&self, done: Committed, timestamps_ms: &BTreeMap<i64, usize>) {
        self.health.lane_applied(&self.integration, done.lane);
        self.applied.increment(done.changes);
        self.deduplicated.increment(done.deduplicated);
        self.skipped.increment(done.skipped);
        self.dead_lettered.increment(done.dead_lettered);
        self.batches.increment(1);
        self.views_rebuilt.increment(done.views_rebuilt);
        self.views_deferred.increment(done.views_deferred);
        self.batch_records.record(done.records as f64);
        let now_ms = epoch_ms();
        for (&ts, &records) in timestamps_ms {
            self.latency.record_many(age_seconds(now_ms, ts), records);
        }
        tracing::debug!(integration = %self.integration, lane = done.lane, records = done.records, changes = done.changes, views = done.views_rebuilt, "batch committed");
    }

    /// An attempt to apply a batch failed; it is retried.
    pub fn batch_failed(&self, failed: Failed<'_>) {
        let Failed {
            lane,
            error,
            kind,
            hint,
            needs_operator,
            attempt,
            delay,
        } = failed;
        let error = crate::error::chain(error);
        tracing::warn!(integration = %self.integration, lane, %error, attempt, ?delay, "batch failed; retrying");
        metrics::counter!(names::WAREHOUSE_ERRORS, "integration" => self.integration.clone(), "kind" => kind).increment(1);
        if needs_operator {
            self.health
                .lane_failed(&self.integration, lane, &error, hint);
        } else {
            self.health
                .lane_failing(&self.integration, lane, &error, hint);
        }
    }

    /// Another instance moved the stored offsets under a batch: it is re-read.
    pub fn batch_fenced(&self, partitions: &dyn std::fmt::Debug) {
        tracing::warn!(integration = %self.integration, ?partitions, "batch fenced by another instance; re-reading stored offsets");
        self.fenced.increment(1);
    }

    /// One transaction of a batch ended, committed or not.
    pub fn apply_ended(&self, lane: usize, records: usize, took: Duration) {
        self.apply_duration.record(took.as_secs_f64());
        tracing::debug!(integration = %self.integration, lane, records, ?took, "batch apply ended");
    }
}
