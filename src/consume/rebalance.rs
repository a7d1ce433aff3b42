//! The consumer's context: the rebalance protocol against the warehouse's stored
//! offsets, and the control messages it exchanges with the appliers.

use super::identity::{self, Anomaly, Checker};
use super::kafka_log::{kafka_error, log_kafka};
use super::partitions::Partitions;
use super::store::{OffsetStore, StoreError, StoredOffsets};
use crate::error::{chain, Chain};
use crate::record::TopicPartition;
use crate::retry;
use crate::telemetry;
use crate::telemetry::Health;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::Consumer;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, RebalanceProtocol};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Sent by the consumer thread to the applier, out of band from the records.
#[derive(Debug)]
pub enum Control {
    /// These partitions are being taken away: commit or drop the batch in flight, then
    /// reply. They are released only after the reply.
    Revoke {
        partitions: Vec<TopicPartition>,
        done: oneshot::Sender<()>,
    },
}

/// How long an assignment waits for the stored offsets before it retries: a warehouse
/// that accepts connections but does not answer must not hold the assignment forever.
pub(super) const LOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// The consumer's context: runs the rebalance protocol against the warehouse.
pub struct Ctx {
    pub(super) integration: String,
    pub(super) group: String,
    pub(super) warehouse: Arc<dyn OffsetStore>,
    pub(super) runtime: tokio::runtime::Handle,
    pub(super) partitions: Partitions,
    /// One per applier lane; every lane hears of every revocation.
    pub(super) control: Vec<mpsc::Sender<Control>>,
    pub(super) stop: CancellationToken,
    pub(super) health: Health,
    pub(super) assignment_changed: AtomicBool,
    pub(super) topics: std::sync::Mutex<HashMap<String, Arc<str>>>,
    /// `LOAD_TIMEOUT`; shorter in tests.
    pub(super) load_timeout: Duration,
    /// Whether each assigned partition is still the one its stored offset was taken
    /// from (`identity`); none in unit tests.
    pub(super) checker: Option<super::identity::Checker>,
}

impl Ctx {
    pub(super) fn intern(&self, topic: &str) -> Arc<str> {
        let mut t = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        // Looked up before an entry is made: this runs for every record, and `entry`
        // wants an owned key, a String made and freed each time.
        if let Some(interned) = t.get(topic) {
            return interned.clone();
        }
        t.entry(topic.to_string())
            .or_insert_with(|| Arc::from(topic))
            .clone()
    }

    /// Stored offsets, retried until the warehouse answers or the pipeline stops.
    pub(super) fn stored_offsets(&self) -> Option<StoredOffsets> {
        let mut attempt = 0;
        loop {
            // The timer is made inside the runtime: this thread is not one of its own. A
            // stop ends the wait at once: the warehouse may not answer at all.
            let load = async {
                tokio::select! {
                    loaded = tokio::time::timeout(self.load_timeout, self.warehouse.load_offsets(&self.group)) => Some(loaded),
                    _ = self.stop.cancelled() => None,
                }
            };
            let loaded = self.runtime.block_on(load)?.unwrap_or_else(|_| {
                Err(StoreError {
                    what: format!(
                        "reading the stored offsets took longer than {:?}",
                        self.load_timeout
                    ),
                    hint: "the warehouse does not answer: check that it is up and not blocked (locks on immuta_system.offsets)",
                    source: None,
                })
            });
            match loaded {
                Ok(o) => {
                    self.health.reachable(&self.integration);
                    return Some(o);
                }
                Err(e) => {
                    self.health.failing(&self.integration, &chain(&e), e.hint);
                    attempt += 1;
                    let delay = retry::delay(attempt, Duration::from_secs(10));
                    tracing::warn!(integration = %self.integration, error = %Chain(&e), ?delay, "cannot read stored offsets; retrying");
                    if retry::sleep_unless(&|| self.stop.is_cancelled(), delay) {
                        return None;
                    }
                }
            }
        }
    }

    /// The assigned partitions that are not the ones their stored offsets were taken
    /// from: those held by an earlier finding, a topic id that changed or cannot be
    /// compared, then each stored offset against its watermarks.
    fn anomalies(
        &self,
        tps: &[TopicPartition],
        stored: &StoredOffsets,
    ) -> BTreeMap<TopicPartition, Anomaly> {
        let Some(checker) = &self.checker else {
            return Default::default();
        };
        let mut found = self.held(checker, tps, stored);
        let fresh: Vec<TopicPartition> = tps
            .iter()
            .filter(|tp| !found.contains_key(*tp))
            .cloned()
            .collect();
        let recreated = checker.recreated(
            &*self.warehouse,
            &self.runtime,
            &self.group,
            &fresh,
            stored,
            true,
        );
        found.extend(recreated);
        // A partition without a stored offset starts at the beginning: nothing to check.
        let rest: Vec<&TopicPartition> = fresh
            .iter()
            .filter(|tp| !found.contains_key(*tp) && stored.contains_key(*tp))
            .collect();
        for tp in rest {
            if self.stop.is_cancelled() {
                break;
            }
            let marks = match checker.watermarks(tp) {
                Ok(marks) => marks,
                Err(e) => {
                    tracing::warn!(integration = %self.integration, %tp, error = %Chain(&e), "cannot read the watermarks at assignment; checked at the next lag refresh");
                    continue;
                }
            };
            if let Some(anomaly) = checker.against(tp, stored.get(tp).copied(), marks) {
                found.insert(tp.clone(), anomaly);
            }
        }
        found
    }

    /// The partitions of `tps` held in the warehouse; when the holds cannot be read,
    /// every one with a stored offset, unverified (fail closed).
    fn held(
        &self,
        checker: &Checker,
        tps: &[TopicPartition],
        stored: &StoredOffsets,
    ) -> BTreeMap<TopicPartition, Anomaly> {
        match checker.wait(&self.runtime, self.warehouse.load_holds(&self.group)) {
            Ok(holds) => holds
                .into_iter()
                .filter(|(tp, _)| tps.contains(tp))
                .map(|(tp, observed)| (tp, Anomaly::Held { observed }))
                .collect(),
            Err(e) => {
                let reason = format!("the partition holds cannot be read: {e}");
                tps.iter()
                    .filter(|tp| stored.contains_key(*tp))
                    .map(|tp| {
                        (
                            tp.clone(),
                            Anomaly::Unverified {
                                reason: reason.clone(),
                            },
                        )
                    })
                    .collect()
            }
        }
    }

    /// Keeps `tp`'s hold in the warehouse (`identity::Checker::persist`).
    fn keep_hold(&self, tp: &TopicPartition) {
        if let Some(checker) = &self.checker {
            checker.persist(
                &*self.warehouse,
                &self.runtime,
                &self.group,
                &self.partitions,
                tp,
            );
        }
    }

    /// A partition's stored offset is past its end (the broker moved the consumer below
    /// it; `Partitions::tag` stopped it): say so and keep the hold.
    pub(super) fn past_end(&self, tp: &TopicPartition, stored: i64, offset: i64) {
        identity::report(
            &self.health,
            &self.integration,
            tp,
            &Anomaly::ResetBelow { stored, offset },
        );
        self.keep_hold(tp);
    }

    pub(super) fn on_assign(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let tps: Vec<TopicPartition> = tpl
            .elements()
            .iter()
            .map(|e| TopicPartition::new(self.intern(e.topic()), e.partition()))
            .collect();
        let stored = self.stored_offsets();
        let anomalies = match &stored {
            Some(stored) => self.anomalies(&tps, stored),
            None => Default::default(),
        };
        for tp in &tps {
            let (topic, partition) = (&*tp.topic, tp.partition);
            let expected = stored.as_ref().and_then(|s| s.get(tp).copied());
            let offset = expected.map_or(Offset::Beginning, Offset::Offset);
            if let Err(e) = tpl.set_partition_offset(topic, partition, offset) {
                tracing::error!(integration = %self.integration, %topic, partition, error = %Chain(&e), "cannot set assignment offset");
            }
            // Without stored offsets (shutting down) the partition is assigned but not
            // registered, so nothing fetched from it is applied.
            if stored.is_none() {
                continue;
            }
            match anomalies.get(tp) {
                Some(found) => {
                    identity::report(&self.health, &self.integration, tp, found);
                    self.partitions
                        .assign_stopped(tp.clone(), expected, found.stop(tp));
                    self.keep_hold(tp);
                }
                None => {
                    self.health
                        .clear_condition(&self.integration, &identity::subject(tp));
                    self.partitions.assign(tp.clone(), expected);
                }
            }
            tracing::debug!(integration = %self.integration, %topic, partition, ?expected, "partition assigned");
        }
        tracing::info!(integration = %self.integration, partitions = tps.len(), "partitions assigned at stored offsets");
        let result = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_assign(tpl),
            _ => consumer.assign(tpl),
        };
        if let Err(e) = result {
            tracing::error!(integration = %self.integration, error = %Chain(&e), "assign failed");
        }
        metrics::counter!(telemetry::names::REBALANCES, "integration" => self.integration.clone(), "kind" => "assign").increment(1);
    }

    pub(super) fn on_revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let revoked: Vec<TopicPartition> = tpl
            .elements()
            .iter()
            .map(|e| TopicPartition::new(self.intern(e.topic()), e.partition()))
            .collect();
        for tp in &revoked {
            // A hold not kept yet would be lost with the partition: the next owner must
            // find it.
            self.keep_hold(tp);
            self.partitions.revoke(tp);
            self.health
                .clear_condition(&self.integration, &identity::subject(tp));
        }
        // Only the consumer thread may block here; a close that runs elsewhere (the last
        // handle dropped on a runtime thread) must not wait for the appliers.
        let on_runtime = tokio::runtime::Handle::try_current().is_ok();
        if !on_runtime {
            let waits: Vec<_> = self
                .control
                .iter()
                .filter_map(|lane| {
                    let (done, wait) = oneshot::channel();
                    let revoke = Control::Revoke {
                        partitions: revoked.clone(),
                        done,
                    };
                    lane.blocking_send(revoke).is_ok().then_some(wait)
                })
                .collect();
            // An applier always answers: it commits once or drops the batch. A lane that
            // has stopped drops the request, which also ends the wait.
            for wait in waits {
                let _ = wait.blocking_recv();
            }
        }
        let result = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_unassign(tpl),
            _ => consumer.unassign(),
        };
        if let Err(e) = result {
            tracing::error!(integration = %self.integration, error = %Chain(&e), "unassign failed");
        }
        tracing::info!(integration = %self.integration, partitions = revoked.len(), "partitions revoked");
        metrics::counter!(telemetry::names::REBALANCES, "integration" => self.integration.clone(), "kind" => "revoke").increment(1);
    }
}

impl ClientContext for Ctx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_kafka(&self.integration, level, fac, log_message);
    }
    /// rdkafka's default sends these to the `log` crate, which has no logger here.
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        kafka_error(&self.integration, &error, reason);
    }
}

impl ConsumerContext for Ctx {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        self.assignment_changed.store(true, Ordering::SeqCst);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.on_assign(consumer, tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => self.on_revoke(consumer, tpl),
            other => {
                tracing::error!(integration = %self.integration, error = ?other, "rebalance error; dropping assignment");
                let snapshot = tpl.clone();
                self.on_revoke(consumer, &snapshot);
            }
        }
    }
}

pub type KafkaConsumer = BaseConsumer<Ctx>;

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::consume::store::{Loading, StoreError};

    /// Hangs on its first read, as a warehouse does whose offsets table is locked;
    /// answers the next, and notes what `/health` said in between.
    struct Hanging {
        calls: AtomicUsize,
        health: Health,
        seen: std::sync::Mutex<Option<String>>,
    }

    impl OffsetStore for Hanging {
        fn load_offsets<'a>(&'a self, _group: &'a str) -> Loading<'a> {
            let call = self.calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                if call == 0 {
                    return futures::future::pending::<Result<_, StoreError>>().await;
                }
                let error = self
                    .health
                    .snapshot()
                    .get("i")
                    .and_then(|h| h.last_error.clone());
                *self.seen.lock().unwrap() = error;
                Ok([(TopicPartition::new("t", 0), 7)].into())
            })
        }
    }

    #[test]
    fn a_warehouse_that_does_not_answer_holds_the_assignment_only_until_the_timeout() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .unwrap();
        let health = Health::new(Duration::from_secs(30));
        let store = Arc::new(Hanging {
            calls: AtomicUsize::new(0),
            health: health.clone(),
            seen: Default::default(),
        });
        let ctx = Ctx {
            integration: "i".into(),
            group: "g".into(),
            warehouse: store.clone(),
            runtime: runtime.handle().clone(),
            partitions: Partitions::default(),
            control: Vec::new(),
            stop: CancellationToken::new(),
            health,
            assignment_changed: AtomicBool::new(false),
            topics: Default::default(),
            load_timeout: Duration::from_millis(100),
            checker: None,
        };
        let (done, got) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(ctx.stored_offsets());
        });
        let loaded = got
            .recv_timeout(Duration::from_secs(20))
            .expect("the assignment is still waiting for a warehouse that does not answer");
        assert_eq!(loaded, Some([(TopicPartition::new("t", 0), 7)].into()));
        assert_eq!(store.calls.load(Ordering::SeqCst), 2);
        let seen = store.seen.lock().unwrap().clone().unwrap_or_default();
        assert!(seen.contains("took longer than 100ms"), "{seen:?}");
    }
}
