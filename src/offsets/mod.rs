//! End offsets and lag: how far the warehouse's stored offsets are behind Kafka.
//!
//! Lag per partition is `end offset - stored next_offset`, never negative: some
//! Kafka-compatible brokers report a high watermark below the true end, and a negative
//! lag would be a lie either way.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::ClientConfig;
use tokio_util::sync::CancellationToken;

pub mod caught_up;
pub mod report;

use crate::consume::Partitions;
use crate::consume::StoredOffsets;
use crate::record::TopicPartition;
use crate::telemetry::{names, Health};

/// Low and high watermark per (topic, partition).
pub type Watermarks = BTreeMap<TopicPartition, (i64, i64)>;

/// A client for metadata and watermark requests only (no group).
pub fn metadata_client(kafka: &ClientConfig) -> Result<BaseConsumer, KafkaError> {
    let mut cfg = kafka.clone();
    cfg.remove("group.id");
    cfg.create()
}

/// Reads the watermarks of every partition of `topics`. Blocking: call from a blocking
/// context (`spawn_blocking`).
pub fn watermarks(
    consumer: &BaseConsumer,
    topics: &[&str],
    timeout: Duration,
) -> Result<Watermarks, KafkaError> {
    let mut out = BTreeMap::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
        for t in metadata.topics() {
            for p in t.partitions() {
                let (low, high) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
                out.insert(TopicPartition::new(*topic, p.id()), (low, high));
            }
        }
    }
    Ok(out)
}

/// [`watermarks`] on the blocking pool, for async callers.
pub async fn watermarks_blocking(
    consumer: Arc<BaseConsumer>,
    topics: Vec<String>,
    timeout: Duration,
) -> Result<Watermarks, KafkaError> {
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        watermarks(&consumer, &refs, timeout)
    })
    .await
    .unwrap_or(Err(KafkaError::Canceled))
}

/// Records of one partition not yet applied: from the stored offset (the low watermark
/// when there is none, or when retention deleted past it) to the high watermark, never
/// negative.
pub fn partition_lag(low: i64, high: i64, stored: Option<i64>) -> i64 {
    (high - stored.unwrap_or(low).max(low)).max(0)
}

/// Records not yet applied, per partition.
pub fn lag(marks: &Watermarks, stored: &StoredOffsets) -> BTreeMap<TopicPartition, i64> {
    marks
        .iter()
        .map(|(tp, (low, high))| {
            (
                tp.clone(),
                partition_lag(*low, *high, stored.get(tp).copied()),
            )
        })
        .collect()
}

/// Refreshes one integration's lag gauges on a timer, also when idle.
///
/// Lag is reported for the partitions this instance owns, from the offsets its applier
/// has committed, so it needs no warehouse query and stays right while the warehouse is
/// down. Partitions owned elsewhere are reported by their owner; gauges this instance
/// stops refreshing disappear after `telemetry::GAUGE_IDLE`.
pub struct LagWatch {
    pub integration: String,
    pub partitions: Partitions,
    pub metadata: Arc<BaseConsumer>,
    pub health: Health,
    pub paused: Arc<AtomicBool>,
    pub every: Duration,
}

impl LagWatch {
    pub async fn run(self, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.every) => {}
            }
            self.refresh().await;
        }
    }

    async fn refresh(&self) {
        let owned = self.partitions.owned();
        let metadata = self.metadata.clone();
        let tps: Vec<TopicPartition> = owned.iter().map(|(tp, _)| tp.clone()).collect();
        let marks = tokio::task::spawn_blocking(move || {
            tps.into_iter()
                .filter_map(|tp| match metadata.fetch_watermarks(&tp.topic, tp.partition, Duration::from_secs(5)) {
                    Ok(m) => Some((tp, m)),
                    Err(e) => {
                        tracing::warn!(topic = %tp.topic, partition = tp.partition, error = %e, "cannot read the high watermark; lag not refreshed");
                        None
                    }
                })
                .collect::<Watermarks>()
        })
        .await
        .unwrap_or_default();
        let stored: StoredOffsets = owned
            .iter()
            .filter_map(|(tp, e)| e.map(|e| (tp.clone(), e)))
            .collect();
        let lag = lag(&marks, &stored);
        for (tp, l) in &lag {
            let labels = [
                ("integration", self.integration.clone()),
                ("topic", tp.topic.to_string()),
                ("partition", tp.partition.to_string()),
            ];
            metrics::gauge!(names::CONSUMER_LAG, &labels).set(*l as f64);
        }
        self.health.set_lag(&self.integration, lag.values().sum());
        self.health.touch(&self.integration);
        let paused = if self.paused.load(Ordering::Relaxed) {
            1.0
        } else {
            0.0
        };
        metrics::gauge!(names::CONSUMER_PAUSED, "integration" => self.integration.clone())
            .set(paused);
    }
}

/// Partition `partition` of topic `t`, for the tests of this module and its children.
#[cfg(test)]
fn tp(partition: i32) -> TopicPartition {
    TopicPartition::new("t", partition)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_never_negative_and_starts_at_the_low_watermark() {
        let marks: Watermarks = [(tp(0), (0, 10)), (tp(1), (5, 8)), (tp(2), (0, 3))].into();
        let stored: StoredOffsets = [(tp(0), 4), (tp(2), 7)].into();
        let l = lag(&marks, &stored);
        assert_eq!(l[&tp(0)], 6);
        assert_eq!(
            l[&tp(1)],
            3,
            "no stored offset: lag counts from the low watermark"
        );
        assert_eq!(
            l[&tp(2)],
            0,
            "stored beyond the reported end must not go negative"
        );
    }
}
