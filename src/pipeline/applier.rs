//! One lane's applier: batches what its consumer routes to it, applies each batch in one
//! warehouse transaction with its offsets, retries with backoff, isolates refused records
//! and answers revokes.

use super::seam::{Committer, Store};
use super::stop_integration;
use crate::apply::{Applied, ApplyError};
use crate::batch::{Batch, Item, Limits};
use crate::consume::dead_letter::DeadLetterProducer;
use crate::consume::{Control, Partitions};
use crate::error::{Chain, Class, Classify};
use crate::retry;
use crate::telemetry::{Committed, Events, Failed, Health};
use rdkafka::{Offset, TopicPartitionList};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long an empty channel must stay empty before the consumer counts as having
/// nothing more ready. Not zero: in a backlog the applier empties the channel faster
/// than the consumer thread decodes, and flushing at each such gap cut batches short
/// (the 1M-change drain 5 % slower, docs/performance.md); a consumer that is keeping
/// up delivers its next record within microseconds.
const QUIET: Duration = Duration::from_millis(2);

pub(super) struct Applier {
    pub(super) name: String,
    /// Which lane this applier is (health is tracked per lane).
    pub(super) lane: usize,
    pub(super) group: String,
    pub(super) warehouse: Arc<dyn Store>,
    pub(super) partitions: Partitions,
    pub(super) consumer: Arc<dyn Committer>,
    pub(super) dlq: Arc<DeadLetterProducer>,
    pub(super) health: Health,
    /// Metrics, log lines and health of each batch event, together.
    pub(super) events: Events,
    pub(super) limits: Limits,
    pub(super) max_backoff: Duration,
    pub(super) shutdown_timeout: Duration,
    pub(super) apply_timeout: Duration,
    /// When shutdown was first seen, plus `shutdown_timeout`: everything this applier
    /// still does after SIGTERM (the batch in flight, the last one) ends by then.
    pub(super) stop_by: std::sync::OnceLock<Instant>,
    /// Stops this integration only (its lanes and consumer), after a fatal error.
    pub(super) stop_integration: CancellationToken,
}

impl Applier {
    /// This applier's settings for lane `lane`, with nothing done yet.
    pub(super) fn for_lane(&self, lane: usize) -> Applier {
        Applier {
            name: self.name.clone(),
            lane,
            group: self.group.clone(),
            warehouse: self.warehouse.clone(),
            partitions: self.partitions.clone(),
            consumer: self.consumer.clone(),
            dlq: self.dlq.clone(),
            health: self.health.clone(),
            events: self.events.clone(),
            limits: self.limits,
            max_backoff: self.max_backoff,
            shutdown_timeout: self.shutdown_timeout,
            apply_timeout: self.apply_timeout,
            stop_by: std::sync::OnceLock::new(),
            stop_integration: self.stop_integration.clone(),
        }
    }

    pub(super) async fn run(
        &mut self,
        data: &mut mpsc::Receiver<Item>,
        control: &mut mpsc::Receiver<Control>,
        shutdown: &CancellationToken,
    ) {
        let mut batch = Batch::default();
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        let mut quiet = false;
        loop {
            // Checked before waiting: the batch that replaces an applied one may already
            // be due or full, and then no record or timer would wake this loop. A batch
            // that is not ready has room for the next record.
            if self.ready(&batch, std::mem::take(&mut quiet)) {
                if self.flush(&mut batch, data, control, shutdown).await {
                    break;
                }
                continue;
            }
            let deadline = batch.deadline(&self.limits);
            // No batch is in flight here: one whose consumer has nothing more ready goes
            // at once. Records that arrive during its apply fill the next batch (group
            // commit); `linger` only bounds how long a batch waits while records keep
            // coming. A batch at `max_records` in a backlog goes on taking it in
            // (`Batch::absorbs`) until its consumer runs dry, it is full or
            // `backlog_wait` has passed: superseded records cost the warehouse nothing.
            let waiting = !batch.is_empty() && data.is_empty();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(c) = control.recv() => self.on_control(c, &mut batch).await,
                item = data.recv() => match item {
                    Some(item) => self.accept(item, &mut batch, None),
                    None => break,
                },
                () = tokio::time::sleep(QUIET), if waiting => quiet = true,
                _ = tokio::time::sleep_until(deadline.unwrap_or(far).into()), if deadline.is_some() => {}
            }
        }
        self.drain(&mut batch).await;
    }

    /// Whether `batch` goes now: its consumer has nothing more ready (`quiet`), its
    /// deadline has passed, or it is full and may not take in more of a backlog.
    fn ready(&self, batch: &Batch, quiet: bool) -> bool {
        let now = Instant::now();
        let due = batch.deadline(&self.limits).is_some_and(|d| now >= d);
        let full = batch.is_full(&self.limits) && !batch.absorbs(&self.limits, now);
        !batch.is_empty() && (due || quiet || full)
    }

    /// Adds a record to `batch`, unless it is stale. `after` is the batch in flight, if
    /// any: a partition it covers continues where it ends, not at the stored offset.
    fn accept(&self, item: Item, batch: &mut Batch, after: Option<&Batch>) {
        match self.partitions.accepts(&item.tp, item.generation) {
            Some(stored) => {
                let in_flight = after.and_then(|b| b.partitions.get(&item.tp));
                let expected = in_flight.map_or(stored, |span| Some(span.next_offset));
                batch.push(item, expected)
            }
            None => {
                tracing::trace!(topic = %item.tp.topic, partition = item.tp.partition, offset = item.offset, "dropping stale record")
            }
        }
    }

    /// Applies `batch` while the next batch fills from `data`. The longer the warehouse
    /// takes, the more the next batch takes in (past `max_records`, up to
    /// `backlog_entries` entities: `Batch::has_room_while_waiting`), and the more of it
    /// deduplication removes: a backlog drains in fewer, larger transactions, while a
    /// quiet stream flushes as soon as nothing more is ready.
    ///
    /// Shutdown during the apply leaves it until [`Applier::stop_deadline`], then abandons
    /// it (dropping the transaction rolls it back): SIGTERM does not wait `apply_timeout`
    /// for a warehouse that hangs.
    async fn apply_while_filling(
        &self,
        batch: &Batch,
        next: &mut Batch,
        data: &mut mpsc::Receiver<Item>,
        shutdown: &CancellationToken,
    ) -> Result<Applied, ApplyError> {
        let apply = self.try_apply(batch);
        tokio::pin!(apply);
        loop {
            tokio::select! {
                biased;
                result = &mut apply => return result,
                _ = shutdown.cancelled() => {
                    let deadline = self.stop_deadline();
                    return tokio::time::timeout_at(deadline.into(), &mut apply)
                        .await
                        .unwrap_or(Err(ApplyError::Timeout(self.shutdown_timeout)));
                }
                Some(item) = data.recv(), if next.has_room_while_waiting(&self.limits) => {
                    self.accept(item, next, Some(batch))
                }
            }
        }
    }

    /// `work`, abandoned once shutdown has been seen and its deadline has passed
    /// (dropping it rolls back what is in flight).
    async fn until_stopped(
        &self,
        work: impl std::future::Future<Output = Result<Applied, ApplyError>>,
        shutdown: &CancellationToken,
    ) -> Result<Applied, ApplyError> {
        tokio::pin!(work);
        tokio::select! {
            biased;
            result = &mut work => result,
            _ = shutdown.cancelled() => {
                tokio::time::timeout_at(self.stop_deadline().into(), &mut work)
                    .await
                    .unwrap_or(Err(ApplyError::Timeout(self.shutdown_timeout)))
            }
        }
    }

    /// The moment by which this applier stops, counted from when it first saw shutdown.
    fn stop_deadline(&self) -> Instant {
        *self
            .stop_by
            .get_or_init(|| Instant::now() + self.shutdown_timeout)
    }

    /// SIGTERM: one last attempt within the deadline; otherwise abandon the batch (the
    /// stored offsets make that safe).
    async fn drain(&self, batch: &mut Batch) {
        if batch.is_empty() {
            return;
        }
        let deadline = self.stop_deadline();
        match tokio::time::timeout_at(deadline.into(), self.try_apply(batch)).await {
            Ok(Ok(applied)) => self.committed(batch, applied),
            Ok(Err(e)) => {
                tracing::warn!(integration = %self.name, error = %Chain(&e), "final batch abandoned; it will be re-read")
            }
            Err(_) => {
                tracing::warn!(integration = %self.name, "final batch timed out; it will be re-read")
            }
        }
    }

    async fn on_control(&self, control: Control, batch: &mut Batch) {
        let Control::Revoke { partitions, done } = control;
        if partitions
            .iter()
            .any(|tp| batch.partitions.contains_key(tp))
        {
            // One attempt: commit now, or drop and let the next owner re-read.
            match tokio::time::timeout(Duration::from_secs(10), self.try_apply(batch)).await {
                Ok(Ok(applied)) => self.committed(batch, applied),
                _ => self.drop_batch(batch, "partitions revoked"),
            }
            *batch = Batch::default();
        }
        let _ = done.send(());
    }

    /// Applies the batch, retrying with backoff. Returns true when interrupted by
    /// shutdown with the batch still pending; otherwise it was committed, or dropped and
    /// its partitions rewound.
    ///
    /// Records received meanwhile form the next batch, which replaces `batch` once it is
    /// committed. When `batch` is dropped instead, the next one is dropped with it: its
    /// records follow the dropped ones on their partitions.
    async fn flush(
        &self,
        batch: &mut Batch,
        data: &mut mpsc::Receiver<Item>,
        control: &mut mpsc::Receiver<Control>,
        shutdown: &CancellationToken,
    ) -> bool {
        let mut attempt = 0;
        let mut next = Batch::default();
        loop {
            let result = match self
                .apply_while_filling(batch, &mut next, data, shutdown)
                .await
            {
                Err(e) if e.refused_by_record() => {
                    tracing::warn!(integration = %self.name, error = %Chain(&e), "the warehouse refused a record of the batch; isolating it");
                    self.until_stopped(self.isolate(batch), shutdown).await
                }
                other => other,
            };
            match result {
                Ok(applied) => {
                    self.committed(batch, applied);
                    *batch = next;
                    return false;
                }
                Err(ApplyError::Fenced(tps)) => {
                    // The stored offsets moved behind this instance's back (another
                    // instance, or a replay's reset): views wait for the policies again.
                    self.warehouse.fenced();
                    self.events.batch_fenced(&tps);
                    self.reload_and_rewind(batch).await;
                    self.drop_batch(&next, "the batch before it was fenced");
                    *batch = Batch::default();
                    return false;
                }
                Err(e) if e.class() == Class::Fatal => {
                    self.stop(&e);
                    *batch = Batch::default();
                    return true;
                }
                Err(e) if shutdown.is_cancelled() => {
                    // Shutting down: abandon both batches; the stored offsets, which
                    // they did not move, are where the next owner starts.
                    tracing::warn!(integration = %self.name, error = %Chain(&e), "batch abandoned at shutdown; it will be re-read");
                    *batch = Batch::default();
                    return true;
                }
                Err(e) => {
                    attempt += 1;
                    let delay = retry::delay(attempt, self.max_backoff);
                    self.events.batch_failed(Failed {
                        lane: self.lane,
                        error: &e,
                        kind: e.kind(),
                        hint: e.hint(),
                        needs_operator: e.needs_operator(),
                        attempt,
                        delay,
                    });
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.cancelled() => return true,
                        Some(c) = control.recv() => {
                            let Control::Revoke { partitions: _, done } = c;
                            self.drop_batch(batch, "partitions revoked while retrying");
                            self.drop_batch(&next, "partitions revoked while retrying");
                            *batch = Batch::default();
                            let _ = done.send(());
                            return false;
                        }
                    }
                }
            }
        }
    }

    /// A fatal error: this integration stops, says why on /health, and leaves the
    /// others running. Its batch is abandoned; the stored offsets have not moved.
    fn stop(&self, e: &ApplyError) {
        tracing::error!(integration = %self.name, lane = self.lane, error = %Chain(e), hint = e.hint(), "fatal error; stopping this integration");
        stop_integration(&self.health, &self.name, &self.stop_integration, e);
    }

    pub(super) async fn try_apply(&self, batch: &Batch) -> Result<Applied, ApplyError> {
        let started = Instant::now();
        let apply = self.warehouse.apply(&self.group, batch, &self.dlq);
        // Dropping the transaction on timeout rolls it back.
        let result = tokio::time::timeout(self.apply_timeout, apply)
            .await
            .unwrap_or(Err(ApplyError::Timeout(self.apply_timeout)));
        self.events
            .apply_ended(self.lane, batch.len(), started.elapsed());
        result
    }

    /// After a warehouse commit: remember the offsets, tell Kafka, count.
    fn committed(&self, batch: &Batch, applied: Applied) {
        let mut tpl = TopicPartitionList::new();
        for (tp, span) in &batch.partitions {
            self.partitions
                .committed(tp, span.generation, span.next_offset);
            if let Err(e) =
                tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(span.next_offset))
            {
                tracing::warn!(error = %Chain(&e), "cannot build Kafka commit");
            }
        }
        if let Err(e) = self.consumer.commit(&tpl) {
            tracing::debug!(integration = %self.name, error = %Chain(&e), "Kafka offset commit failed (informational only)");
        }
        let s = &batch.stats;
        let done = Committed {
            lane: self.lane,
            records: batch.len(),
            changes: applied.changes.saturating_sub(applied.rejected) as u64,
            deduplicated: s.deduplicated,
            skipped: s.skipped,
            dead_lettered: s.dead_lettered + applied.rejected as u64,
            views_rebuilt: applied.views_rebuilt as u64,
            views_deferred: applied.views_deferred as u64,
        };
        self.events.batch_committed(done, &batch.timestamps_ms);
    }

    /// Forgets a batch that was not committed and re-reads its partitions (those still
    /// owned) from the offsets stored before it.
    fn drop_batch(&self, batch: &Batch, why: &str) {
        if batch.is_empty() {
            return;
        }
        tracing::info!(integration = %self.name, records = batch.len(), why, "batch dropped; it will be re-read");
        for (tp, span) in &batch.partitions {
            if self.partitions.accepts(tp, span.generation).is_some() {
                self.partitions.rewind(tp, span.expected);
            }
        }
    }

    async fn reload_and_rewind(&self, batch: &Batch) {
        let load = self.warehouse.load_offsets(&self.group);
        let loaded = tokio::time::timeout(self.apply_timeout, load)
            .await
            .unwrap_or(Err(ApplyError::Timeout(self.apply_timeout)));
        match loaded {
            Ok(stored) => {
                for (tp, span) in &batch.partitions {
                    if self.partitions.accepts(tp, span.generation).is_some() {
                        let at = stored.get(tp).copied();
                        self.partitions.rewind(tp, at);
                    }
                }
            }
            // Cannot learn the new offsets (also when the warehouse does not answer within
            // apply_timeout): rewind to what we knew; the next commit is fenced again if
            // that is stale, and we retry the reload then.
            Err(_) => self.drop_batch(batch, "fenced; offsets unreadable"),
        }
    }
}

#[cfg(test)]
#[path = "applier_tests.rs"]
mod tests;
