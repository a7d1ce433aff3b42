//! What an applier needs from the warehouse and from Kafka, as two small interfaces:
//! `apply::Warehouse` and the Kafka consumer implement them, and the applier's unit tests
//! drive it through fakes (`pipeline/applier_tests.rs`).

use futures::future::BoxFuture;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::TopicPartitionList;

use crate::apply::{Applied, ApplyError, Warehouse};
use crate::batch::Batch;
use crate::consume::StoredOffsets;
use crate::consume::{dead_letter::DeadLetterProducer, KafkaConsumer};

/// Stored offsets, being read.
pub(super) type Loading<'a> = BoxFuture<'a, Result<StoredOffsets, ApplyError>>;

/// The warehouse side of an applier.
pub(super) trait Store: Send + Sync {
    /// Applies `batch` in one transaction with its offsets (`Warehouse::apply`).
    fn apply<'a>(
        &'a self,
        group: &'a str,
        batch: &'a Batch,
        dlq: &'a DeadLetterProducer,
    ) -> BoxFuture<'a, Result<Applied, ApplyError>>;

    /// The offsets stored for `group`.
    fn load_offsets<'a>(&'a self, group: &'a str) -> Loading<'a>;

    /// Another instance moved the stored offsets: views wait for the policies again.
    fn fenced(&self);
}

impl Store for Warehouse {
    fn apply<'a>(
        &'a self,
        group: &'a str,
        batch: &'a Batch,
        dlq: &'a DeadLetterProducer,
    ) -> BoxFuture<'a, Result<Applied, ApplyError>> {
        Box::pin(Warehouse::apply(self, group, batch, dlq))
    }

    fn load_offsets<'a>(&'a self, group: &'a str) -> Loading<'a> {
        Box::pin(Warehouse::load_offsets(self, group))
    }

    fn fenced(&self) {
        self.barrier().reclose();
    }
}

/// Where an applier tells Kafka what it committed (informational: lag tooling).
pub(super) trait Committer: Send + Sync {
    fn commit(&self, offsets: &TopicPartitionList) -> Result<(), KafkaError>;
}

impl Committer for KafkaConsumer {
    fn commit(&self, offsets: &TopicPartitionList) -> Result<(), KafkaError> {
        Consumer::commit(self, offsets, CommitMode::Async)
    }
}
