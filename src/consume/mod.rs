//! Kafka consumption for one integration (SPEC §5).
//!
//! A dedicated thread owns the consumer's poll loop. That lets the rebalance callback
//! block: on assignment it reads the stored offsets from the warehouse and assigns each
//! partition at its stored `next_offset` (the beginning when there is none: the warehouse,
//! not Kafka, is the source of truth); on revocation it waits until the applier has
//! committed or dropped the batch in flight. Decoded records go to the applier over a
//! bounded channel; when it stays full the thread pauses its partitions and keeps polling
//! (so the group membership stays alive) instead of buffering more.

pub mod admin;
pub mod check;
pub mod compaction;
pub mod dead_letter;
pub mod identity;
pub mod partitions;
pub mod route;
pub mod topic_ids;

use std::time::Duration;

/// How long the consumer thread waits for room in the channel before it pauses its
/// partitions. A full channel for a moment is the normal rhythm of batching (the applier
/// is committing); pausing each time would stop and restart fetching for every batch,
/// which measured at about a third of the throughput. Longer than this, the applier is
/// stuck (warehouse down) and the partitions are paused while polling goes on.
const WAIT_BEFORE_PAUSE: Duration = Duration::from_millis(500);

use rdkafka::consumer::BaseConsumer;
use rdkafka::error::KafkaError;
use rdkafka::ClientConfig;

mod kafka_log;
mod poll;
mod rebalance;
pub mod store;
pub use kafka_log::{log_level, producer_config, LogContext, LOG_TARGET};
pub use partitions::{Partitions, Tag};
pub use poll::{spawn, Guard, Lanes, Spawn, STOPPED};
pub use rebalance::{Control, Ctx, KafkaConsumer};
pub use store::{Holds, OffsetStore, StoreError, StoredOffsets, TopicIds};

#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error("Kafka client error")]
    Kafka(#[from] KafkaError),
    #[error("cannot start the consumer thread")]
    Thread(#[from] std::io::Error),
}

impl crate::error::Classify for ConsumeError {
    fn class(&self) -> crate::error::Class {
        match self {
            ConsumeError::Kafka(KafkaError::ClientCreation(_)) | ConsumeError::Thread(_) => {
                crate::error::Class::Fatal
            }
            ConsumeError::Kafka(_) => crate::error::Class::Retryable,
        }
    }
}

/// A consumer for reading with `assign` under `group`: librdkafka assigns partitions
/// and reads a group's committed offsets only with a group id. It never subscribes, so
/// it never joins the group, and it never commits or stores an offset (the dead-letter
/// commands, the `offsets` report).
pub fn assign_only(kafka: &ClientConfig, group: &str) -> Result<BaseConsumer, KafkaError> {
    never_committing(kafka.clone(), group).create()
}

/// `kafka` as a consumer of `group` that never commits or stores an offset on its own:
/// the warehouse holds the offsets (the pipeline's consumer commits to Kafka only after
/// the warehouse has, for monitoring).
fn never_committing(mut kafka: ClientConfig, group: &str) -> ClientConfig {
    kafka
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    kafka
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::config::RDKafkaLogLevel;

    #[test]
    fn producers_are_not_given_consumer_properties() {
        let mut kafka = ClientConfig::new();
        for (k, v) in [
            ("bootstrap.servers", "b:9092"),
            ("sasl.password", "x"),
            ("linger.ms", "5"),
            ("session.timeout.ms", "6000"),
            ("fetch.wait.max.ms", "50"),
            ("group.id", "g"),
        ] {
            kafka.set(k, v);
        }
        let producer = producer_config(&kafka);
        let keys: Vec<&str> = producer.config_map().into_keys().collect();
        assert_eq!(keys, ["bootstrap.servers", "linger.ms", "sasl.password"]);
        assert_eq!(
            kafka.config_map().len(),
            6,
            "the consumer's table is untouched"
        );
    }

    #[test]
    fn librdkafka_log_level_follows_the_filter_on_its_target() {
        for (filter, want) in [
            ("info,librdkafka=warn", RDKafkaLogLevel::Warning),
            ("warn,librdkafka=debug", RDKafkaLogLevel::Debug),
            ("info", RDKafkaLogLevel::Info),
            ("policy_push=debug,error", RDKafkaLogLevel::Error),
        ] {
            let subscriber = tracing_subscriber::fmt().with_env_filter(filter).finish();
            let got = tracing::subscriber::with_default(subscriber, log_level);
            assert_eq!(got as i32, want as i32, "filter {filter:?}");
        }
    }
}
