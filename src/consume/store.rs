//! What the consumer needs from the warehouse: the offsets stored with the last applied
//! batch, which are where consumption resumes after an assignment (the warehouse, not
//! Kafka, holds them). `apply::Warehouse` implements it; the consumer depends on this
//! interface only.

use std::collections::HashMap;

use futures::future::BoxFuture;

use crate::record::TopicPartition;

/// Why the stored offsets could not be read, and what the operator can do.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    pub message: String,
    pub hint: &'static str,
}

/// Next offset to consume per (topic, partition).
pub type StoredOffsets = HashMap<TopicPartition, i64>;

pub type Loading<'a> = BoxFuture<'a, Result<StoredOffsets, StoreError>>;

pub trait OffsetStore: Send + Sync {
    /// The offsets stored for `group`.
    fn load_offsets<'a>(&'a self, group: &'a str) -> Loading<'a>;
}
