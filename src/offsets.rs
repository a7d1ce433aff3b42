//! End offsets and lag: how far the warehouse's stored offsets are behind Kafka.
//!
//! Lag per partition is `end offset - stored next_offset`, never negative: some
//! Kafka-compatible brokers report a high watermark below the true end, and a negative
//! lag would be a lie either way.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::ClientConfig;

/// Low and high watermark per (topic, partition).
pub type Watermarks = BTreeMap<(String, i32), (i64, i64)>;

/// Reads the watermarks of every partition of `topics`. Blocking: call from a blocking
/// context (`spawn_blocking`).
pub fn watermarks(
    kafka: &ClientConfig,
    topics: &[&str],
    timeout: Duration,
) -> Result<Watermarks, KafkaError> {
    let consumer: BaseConsumer = kafka.create()?;
    let mut out = BTreeMap::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
        for t in metadata.topics() {
            for p in t.partitions() {
                let (low, high) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
                out.insert((topic.to_string(), p.id()), (low, high));
            }
        }
    }
    Ok(out)
}

/// Records not yet applied, per partition.
pub fn lag(
    marks: &Watermarks,
    stored: &HashMap<(String, i32), i64>,
) -> BTreeMap<(String, i32), i64> {
    marks
        .iter()
        .map(|(tp, (low, high))| {
            let applied = stored.get(tp).copied().unwrap_or(*low).max(*low);
            (tp.clone(), (high - applied).max(0))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_never_negative_and_starts_at_the_low_watermark() {
        let marks: Watermarks = [
            (("t".into(), 0), (0, 10)),
            (("t".into(), 1), (5, 8)),
            (("t".into(), 2), (0, 3)),
        ]
        .into();
        let stored: HashMap<_, _> = [(("t".to_string(), 0), 4), (("t".to_string(), 2), 7)].into();
        let l = lag(&marks, &stored);
        assert_eq!(l[&("t".into(), 0)], 6);
        assert_eq!(
            l[&("t".into(), 1)],
            3,
            "no stored offset: lag counts from the low watermark"
        );
        assert_eq!(
            l[&("t".into(), 2)],
            0,
            "stored beyond the reported end must not go negative"
        );
    }
}
