//! The checks of `identity` against the broker and the warehouse, with clients of
//! their own, never the group's consumer: blocking, so run on the consumer thread or the
//! blocking pool.

use crate::error::{chain, Chain};
use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio_util::sync::CancellationToken;

use super::{log_reaches, watermark_anomaly, Anomaly};
use crate::consume::partitions::{Partitions, Stop};
use crate::consume::{OffsetStore, StoreError, StoredOffsets, TopicIds};
use crate::record::TopicPartition;

/// Checks partitions at assignment (consumer thread) and at every lag refresh (blocking
/// pool): both with their own clients, never the group's consumer.
#[derive(Clone)]
pub struct Checker {
    /// No group: topic ids and watermarks.
    pub metadata: std::sync::Arc<BaseConsumer>,
    /// Reads the record just before a stored offset above a reported end; made once.
    pub confirm: std::sync::Arc<std::sync::Mutex<Option<BaseConsumer>>>,
    pub kafka: rdkafka::ClientConfig,
    /// Ends every wait for the warehouse at once.
    pub stop: CancellationToken,
}

/// How long one check waits for the broker.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one check waits for the warehouse.
const STORE_TIMEOUT: Duration = Duration::from_secs(10);

impl Checker {
    pub fn new(
        metadata: std::sync::Arc<BaseConsumer>,
        kafka: &rdkafka::ClientConfig,
        stop: CancellationToken,
    ) -> Self {
        // librdkafka assigns only with a group id; this one never joins a group (it is
        // assigned explicit offsets) and never commits.
        let mut kafka = kafka.clone();
        kafka
            .set("group.id", "policy-push.identity-check")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true");
        Checker {
            metadata,
            confirm: Default::default(),
            kafka,
            stop,
        }
    }

    /// `work` on `runtime`, from a thread of its own, for at most `STORE_TIMEOUT` and
    /// never past a stop. Blocking.
    pub fn wait<T>(
        &self,
        runtime: &tokio::runtime::Handle,
        work: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, String> {
        let bounded = async {
            tokio::select! {
                done = tokio::time::timeout(STORE_TIMEOUT, work) => Some(done),
                _ = self.stop.cancelled() => None,
            }
        };
        match runtime.block_on(bounded) {
            Some(Ok(done)) => done.map_err(|e| chain(&e)),
            Some(Err(_)) => Err(format!(
                "the warehouse did not answer within {STORE_TIMEOUT:?}"
            )),
            None => Err("stopping".into()),
        }
    }

    /// Keeps `tp`'s hold in the warehouse (`Stop::Held`), so that neither a restart nor
    /// a rebalance lifts it; marks it kept. Blocking. Not kept now, it is kept at a later
    /// lag refresh (`offsets::watch`).
    pub fn persist(
        &self,
        store: &dyn OffsetStore,
        runtime: &tokio::runtime::Handle,
        group: &str,
        partitions: &Partitions,
        tp: &TopicPartition,
    ) {
        let observed = match partitions.stopped(tp) {
            Some(Stop::Held {
                observed,
                persisted: false,
            }) => observed,
            _ => return,
        };
        match self.wait(runtime, store.hold(group, tp, &observed)) {
            Ok(()) => partitions.persisted(tp),
            Err(e) => {
                tracing::warn!(%tp, error = %e, "cannot keep the partition's hold in the warehouse; retried at the next lag refresh")
            }
        }
    }

    /// The partitions of `tps` whose topic's id is not the one stored for `group`: every
    /// partition of such a topic when any of its partitions has a stored offset
    /// (`stored`, the group's); a topic none of whose partitions has one has its new id
    /// stored instead, since no offset points into it. With `remember`, ids not stored
    /// yet are stored. Blocking. A broker without topic ids, or one that does not answer,
    /// gives no finding.
    pub fn recreated(
        &self,
        store: &dyn OffsetStore,
        runtime: &tokio::runtime::Handle,
        group: &str,
        tps: &[TopicPartition],
        stored_offsets: &StoredOffsets,
        remember: bool,
    ) -> BTreeMap<TopicPartition, Anomaly> {
        let has_offsets = |topic: &str| stored_offsets.keys().any(|tp| &*tp.topic == topic);
        // A topic whose id cannot be compared is not read past: fail closed.
        let unverified = |topics: &dyn Fn(&str) -> bool, reason: String| {
            tps.iter()
                .filter(|tp| topics(&tp.topic) && has_offsets(&tp.topic))
                .map(|tp| {
                    (
                        tp.clone(),
                        Anomaly::Unverified {
                            reason: reason.clone(),
                        },
                    )
                })
                .collect()
        };
        let stored = match self.wait(runtime, store.load_topic_ids(group)) {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the stored topic ids");
                return unverified(&|_| true, format!("the stored ids cannot be read: {e}"));
            }
        };
        let mut topics: Vec<String> = tps.iter().map(|tp| tp.topic.to_string()).collect();
        topics.sort();
        topics.dedup();
        let now = match crate::consume::topic_ids::topic_ids(&self.metadata, &topics, CHECK_TIMEOUT)
        {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "the broker gives no topic ids; topics with stored ids are not read until it does");
                return unverified(&|t| stored.contains_key(t), e);
            }
        };
        let changed: Vec<&String> = now
            .keys()
            .filter(|t| stored.get(*t).is_some_and(|old| old != &now[*t]))
            .collect();
        if remember {
            self.remember(store, runtime, group, &now, &stored, &changed, &has_offsets);
        }
        tps.iter()
            .filter(|tp| changed.iter().any(|t| ***t == *tp.topic) && has_offsets(&tp.topic))
            .map(|tp| {
                let found = Anomaly::Recreated {
                    stored: stored[&*tp.topic].clone(),
                    now: now[&*tp.topic].clone(),
                };
                (tp.clone(), found)
            })
            .collect()
    }

    /// Stores the ids not stored yet, and the new id of a changed topic none of whose
    /// partitions has a stored offset.
    #[allow(clippy::too_many_arguments)]
    fn remember(
        &self,
        store: &dyn OffsetStore,
        runtime: &tokio::runtime::Handle,
        group: &str,
        now: &TopicIds,
        stored: &TopicIds,
        changed: &[&String],
        has_offsets: &dyn Fn(&str) -> bool,
    ) {
        let new: TopicIds = now
            .iter()
            .filter(|(t, _)| !stored.contains_key(*t))
            .map(|(t, id)| (t.clone(), id.clone()))
            .collect();
        let replaced: TopicIds = changed
            .iter()
            .filter(|t| !has_offsets(t))
            .map(|t| ((*t).clone(), now[*t].clone()))
            .collect();
        for (ids, replace) in [(&new, false), (&replaced, true)] {
            if ids.is_empty() {
                continue;
            }
            if let Err(e) = self.wait(runtime, store.store_topic_ids(group, ids, replace)) {
                tracing::warn!(error = %e, "cannot store topic ids; compared from the next assignment on");
            }
        }
    }

    /// The partition's watermarks. Blocking.
    pub fn watermarks(
        &self,
        tp: &TopicPartition,
    ) -> Result<(i64, i64), rdkafka::error::KafkaError> {
        self.metadata
            .fetch_watermarks(&tp.topic, tp.partition, CHECK_TIMEOUT)
    }

    /// The watermark finding for `stored` in `tp`, given its watermarks. Blocking (it may
    /// read a record).
    pub fn against(
        &self,
        tp: &TopicPartition,
        stored: Option<i64>,
        marks: (i64, i64),
    ) -> Option<Anomaly> {
        let (low, high) = marks;
        let from = (high - 1).max(low);
        watermark_anomaly(stored, marks, |stored| {
            self.log_reaches(tp, from, stored - 1)
        })
    }

    fn log_reaches(&self, tp: &TopicPartition, from: i64, target: i64) -> Option<bool> {
        let mut client = self.confirm.lock().unwrap_or_else(|e| e.into_inner());
        if client.is_none() {
            match self.kafka.create::<BaseConsumer>() {
                Ok(c) => *client = Some(c),
                Err(e) => {
                    tracing::warn!(error = %Chain(&e), "cannot make a client to read one record");
                    return None;
                }
            }
        }
        client
            .as_ref()
            .and_then(|c| log_reaches(c, tp, from, target, CHECK_TIMEOUT))
    }
}
