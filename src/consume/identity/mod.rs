//! Whether a partition is still the one the stored offsets were taken from.
//!
//! The stored offsets say where to go on in a partition. If the topic was deleted and
//! created again (a broker that lost its data, an operator's mistake), they point into a
//! different log: past its end while it is smaller, and, once it has grown past them,
//! at records that are not the ones that followed the last applied. Reading on from there
//! skips every record before the stored offset, silently. Two things are compared:
//!
//! - the topic's id, where the broker has them (Kafka 2.8 and later; librdkafka's mock
//!   cluster): stored with the offsets the first time it is seen, and compared at every
//!   assignment. A different id is a recreated topic, whatever its size;
//! - the stored offset with the partition's low and high watermarks, at assignment and at
//!   every lag refresh: above the end, the topic was recreated or truncated (or the
//!   broker under-reports its end: Tansu reports the first offset of the last batch plus
//!   one, so a stored offset above the reported end is confirmed by reading the log from
//!   the last offset the broker admits up to the record just before it); below the
//!   start, records were deleted before they were applied.
//!
//! Either finding stops the partition and is kept in the warehouse
//! (`immuta_system.partition_holds`), so that neither a restart nor a rebalance lifts it
//! (a recreated topic that has grown past the stored offsets looks healthy to the
//! watermarks): nothing more is applied from it until the operator rebuilds the host
//! (`replay`) or accepts the partition as it is (`offsets --accept`). A topic whose id is
//! stored but cannot be read now is not read either, until it can be compared.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;

use super::partitions::Stop;
use crate::record::TopicPartition;

mod checker;
pub use checker::Checker;

/// What is wrong with a partition under the stored offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Anomaly {
    /// The topic's id is not the one stored with the offsets.
    Recreated { stored: String, now: String },
    /// The stored offset is past the partition's end.
    AboveEnd { stored: i64, end: i64 },
    /// Records between the stored offset and the partition's start were deleted.
    BelowStart { stored: i64, start: i64 },
    /// The broker moved the consumer below the stored offset (its offset reset): the
    /// partition ends before it.
    ResetBelow { stored: i64, offset: i64 },
    /// Found earlier and held in the warehouse until the operator releases it.
    Held { observed: String },
    /// The topic's id is stored but could not be read to compare.
    Unverified { reason: String },
}

impl Anomaly {
    /// The `kind` label of `policy_push_partition_anomalies_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            Anomaly::Recreated { .. } => "recreated",
            Anomaly::AboveEnd { .. } => "above_end",
            Anomaly::BelowStart { .. } => "below_start",
            Anomaly::ResetBelow { .. } => "reset_below",
            Anomaly::Held { .. } => "held",
            Anomaly::Unverified { .. } => "unverified",
        }
    }

    /// How the partition is stopped for it.
    pub fn stop(&self, tp: &TopicPartition) -> Stop {
        match self {
            Anomaly::Unverified { .. } => Stop::Unverified,
            Anomaly::Held { observed } => Stop::Held {
                observed: observed.clone(),
                persisted: true,
            },
            found => Stop::Held {
                observed: found.describe(tp),
                persisted: false,
            },
        }
    }

    /// What was observed, for /health and the logs.
    pub fn describe(&self, tp: &TopicPartition) -> String {
        match self {
            Anomaly::Recreated { stored, now } => format!(
                "topic {} has id {now}, not {stored} as when its offsets were stored: it was deleted and created again, so the stored offset of {tp} points into another log",
                tp.topic
            ),
            Anomaly::AboveEnd { stored, end } => format!(
                "stored offset {stored} of {tp} is past the partition's end {end} as the broker reports it. Either the topic was recreated or truncated, or the broker under-reports its end (some report the first offset of the last batch); the second is ruled out, since no record at {} can be read: the topic was recreated or truncated",
                stored - 1
            ),
            Anomaly::BelowStart { stored, start } => format!(
                "stored offset {stored} of {tp} is before the partition's start {start}: records {stored} to {} were deleted before they were applied",
                start - 1
            ),
            Anomaly::ResetBelow { stored, offset } => format!(
                "stored offset {stored} of {tp} is past the partition's end: the broker moved the consumer back to offset {offset}, so the topic was recreated or truncated"
            ),
            Anomaly::Held { observed } => observed.clone(),
            Anomaly::Unverified { reason } => format!(
                "the id of topic {} could not be read to compare it with the one stored with its offsets ({reason}); nothing is applied from {tp} until it can",
                tp.topic
            ),
        }
    }
}

/// The watermark finding for a stored offset, if any. `confirmed_end` is called only for
/// a stored offset above the reported end, and says whether the record just before it
/// exists (a broker that under-reports its end), or None when that could not be told (a
/// read that timed out is no evidence either way: unverified, never held).
pub fn watermark_anomaly(
    stored: Option<i64>,
    (low, high): (i64, i64),
    confirmed_end: impl FnOnce(i64) -> Option<bool>,
) -> Option<Anomaly> {
    let stored = stored?;
    if stored > high {
        match confirmed_end(stored) {
            Some(true) => {}
            Some(false) => return Some(Anomaly::AboveEnd { stored, end: high }),
            None => {
                let reason = format!("the record before stored offset {stored}, past the reported end {high}, could not be read");
                return Some(Anomaly::Unverified { reason });
            }
        }
    }
    (stored < low).then_some(Anomaly::BelowStart { stored, start: low })
}

/// Whether `tp`'s log holds a record at `target` or later, read with a client of its
/// own from `from` (the last offset the broker admits: on Tansu, the first offset of its
/// last batch, whose records go past its reported end), waiting at most `timeout`: None
/// when the broker neither sent it nor said the log ends before it.
pub fn log_reaches(
    client: &BaseConsumer,
    tp: &TopicPartition,
    from: i64,
    target: i64,
    timeout: Duration,
) -> Option<bool> {
    let mut list = rdkafka::TopicPartitionList::new();
    if list
        .add_partition_offset(&tp.topic, tp.partition, rdkafka::Offset::Offset(from))
        .is_err()
        || client.assign(&list).is_err()
    {
        return None;
    }
    let until = std::time::Instant::now() + timeout;
    let mut reached = None;
    while std::time::Instant::now() < until {
        match client.poll(Duration::from_millis(100)) {
            Some(Ok(m))
                if m.partition() == tp.partition
                    && &*tp.topic == m.topic()
                    && m.offset() >= target =>
            {
                reached = Some(true);
                break;
            }
            // The end of what the broker sends: the record is not there.
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => {
                reached = Some(false);
                break;
            }
            _ => {}
        }
    }
    let _ = client.unassign();
    reached
}

/// The `/health` subject of a partition's condition.
pub fn subject(tp: &TopicPartition) -> String {
    format!("partition {tp}")
}

/// A finding: the partition is stopped (by the caller), and the integration is failing
/// with what was observed and the remedy, counted in
/// `policy_push_partition_anomalies_total`.
pub fn report(
    health: &crate::telemetry::Health,
    integration: &str,
    tp: &TopicPartition,
    anomaly: &Anomaly,
) {
    use crate::telemetry::{Condition, State};
    let error = anomaly.describe(tp);
    tracing::error!(%integration, topic = %tp.topic, partition = tp.partition, %error, "nothing more is applied from this partition");
    let condition = match anomaly {
        Anomaly::Unverified { .. } => Condition {
            severity: State::Degraded,
            error,
            hint: format!("{tp} is read again once it can be checked, at a lag refresh: see the error for what could not be read (the broker's DescribeTopics or a record, or the warehouse's partition_holds, which `policy-push bootstrap` creates); `policy-push offsets --integration {integration}` shows each partition"),
        },
        _ => Condition {
            severity: State::Failing,
            error,
            hint: format!(
                "nothing more is applied from {tp}, also after a restart: rebuild the host from the topic as it is now with `policy-push replay --integration {integration}`; or, if the topic goes on from the stored offsets (restored with its offsets) or the gap is accepted, `policy-push offsets --integration {integration} --accept`"
            ),
        },
    };
    health.set_condition(integration, &subject(tp), condition);
    // A hold found again (a restart, a rebalance) was counted when it was found.
    if !matches!(anomaly, Anomaly::Held { .. }) {
        metrics::counter!(crate::telemetry::names::PARTITION_ANOMALIES, "integration" => integration.to_string(), "kind" => anomaly.kind())
            .increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_offset_is_checked_against_both_watermarks() {
        let never = |_| -> Option<bool> { panic!("asked for a record below the end") };
        assert_eq!(watermark_anomaly(None, (5, 9), never), None);
        assert_eq!(watermark_anomaly(Some(7), (5, 9), never), None);
        assert_eq!(watermark_anomaly(Some(9), (5, 9), never), None);
        assert_eq!(
            watermark_anomaly(Some(3), (5, 9), never),
            Some(Anomaly::BelowStart {
                stored: 3,
                start: 5
            })
        );
        assert_eq!(
            watermark_anomaly(Some(12), (0, 9), |_| Some(false)),
            Some(Anomaly::AboveEnd { stored: 12, end: 9 })
        );
        assert_eq!(
            watermark_anomaly(Some(12), (0, 9), |at| Some(at == 12)),
            None,
            "a broker that under-reports its end"
        );
        assert!(
            matches!(
                watermark_anomaly(Some(12), (0, 9), |_| None),
                Some(Anomaly::Unverified { .. })
            ),
            "a read that could not tell is no finding to hold"
        );
    }
}
