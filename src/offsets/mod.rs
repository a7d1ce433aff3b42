//! End offsets and lag: how far the warehouse's stored offsets are behind Kafka.
//!
//! Lag per partition is `end offset - stored next_offset`, never negative: some
//! Kafka-compatible brokers report a high watermark below the true end, and a negative
//! lag would be a lie either way.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::ClientConfig;

pub mod caught_up;
pub mod report;
mod watch;

use crate::consume::StoredOffsets;
use crate::record::TopicPartition;

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

pub use watch::LagWatch;

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
