//! What the consumer needs from the warehouse: the offsets stored with the last applied
//! batch, which are where consumption resumes after an assignment (the warehouse, not
//! Kafka, holds them). `apply::Warehouse` implements it; the consumer depends on this
//! interface only.

use std::collections::HashMap;

use futures::future::BoxFuture;

use crate::record::TopicPartition;

/// Why the warehouse could not read or keep what the consumer asked, and what the
/// operator can do.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct StoreError {
    /// What could not be done ("cannot read the stored offsets").
    pub what: String,
    pub hint: &'static str,
    /// The warehouse's error; none when it did not answer at all.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// Next offset to consume per (topic, partition).
pub type StoredOffsets = HashMap<TopicPartition, i64>;

pub type Loading<'a> = BoxFuture<'a, Result<StoredOffsets, StoreError>>;

/// The id of each topic whose offsets are stored, by topic (`identity`).
pub type TopicIds = std::collections::BTreeMap<String, String>;

/// Partitions stopped by a finding (`identity`) until the operator releases them, with
/// what was observed.
pub type Holds = HashMap<TopicPartition, String>;

pub trait OffsetStore: Send + Sync {
    /// The offsets stored for `group`.
    fn load_offsets<'a>(&'a self, group: &'a str) -> Loading<'a>;

    /// The topic ids stored with `group`'s offsets. None by default: a store that keeps
    /// no ids checks only watermarks.
    fn load_topic_ids<'a>(
        &'a self,
        _group: &'a str,
    ) -> BoxFuture<'a, Result<TopicIds, StoreError>> {
        Box::pin(async { Ok(TopicIds::new()) })
    }

    /// Stores the ids of topics that have none stored for `group` yet; `replace` stores
    /// them over those there are (the operator's `offsets --accept`).
    fn store_topic_ids<'a>(
        &'a self,
        _group: &'a str,
        _ids: &'a TopicIds,
        _replace: bool,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    /// The partitions held for `group` (`identity`). None by default.
    fn load_holds<'a>(&'a self, _group: &'a str) -> BoxFuture<'a, Result<Holds, StoreError>> {
        Box::pin(async { Ok(Holds::new()) })
    }

    /// Holds `tp` for `group` with what was observed, unless it is held already.
    fn hold<'a>(
        &'a self,
        _group: &'a str,
        _tp: &'a TopicPartition,
        _observed: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
}
