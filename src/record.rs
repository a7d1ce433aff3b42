//! The record types every stage shares: what the consumer makes of a Kafka message, where
//! it came from, and how a rejected one is dead-lettered. A leaf: it depends on the event
//! model and the codec's undecoded profile only, so the consumer, the batcher and the
//! applier can all use it without depending on each other.

use std::sync::Arc;

use crate::codec::ProfileDatum;
use crate::event::{Event, Kind};

/// A topic-partition, the one type every stage keys partitions by (records, stored and
/// end offsets, lag, assignments). Topic names are shared, not copied per record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: Arc<str>,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<Arc<str>>, partition: i32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// Where a record came from: enough to audit it and to dead-letter it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub tp: TopicPartition,
    pub offset: i64,
}

/// A record's original bytes, kept for records that may still be dead-lettered by the
/// warehouse (data sources and policies, whose views can fail to build).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Raw {
    pub key: Option<Box<[u8]>>,
    pub value: Option<Box<[u8]>>,
    /// The record's own headers and timestamp, which its dead letter keeps (and a redrive
    /// restores).
    pub meta: Option<Box<Meta>>,
}

/// A record's headers and timestamp. Boxed apart from the bytes: most records carry
/// neither into a dead letter, and their `Raw` stays small.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    pub headers: Vec<(String, Option<Box<[u8]>>)>,
    pub timestamp_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub stage: Stage,
    pub origin: Origin,
    pub reason: String,
    pub raw: Raw,
}

/// Where a dead letter was refused: its `__policy_push.errors.stage` header. A record
/// refused when consumed must be fixed by its producer; one refused when applied may
/// apply once the warehouse is fixed (a raw table or column created), and is worth a
/// redrive then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// It could not be decoded or validated.
    Consume,
    /// The policy compiler or the warehouse refused it.
    Apply,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Consume => "consume",
            Stage::Apply => "apply",
        }
    }
}

/// The most of a reason a dead letter carries. Reasons quote capped values already
/// (`event::quote_capped`); this is the last guard, for reasons from elsewhere (a decoder,
/// the warehouse), so that a dead letter always fits the producer's limit.
pub const MAX_REASON_BYTES: usize = 2048;

impl DeadLetter {
    /// The reason, cut at a character boundary to at most [`MAX_REASON_BYTES`].
    pub fn capped_reason(&self) -> &str {
        let mut end = self.reason.len().min(MAX_REASON_BYTES);
        while !self.reason.is_char_boundary(end) {
            end -= 1;
        }
        &self.reason[..end]
    }
}

/// What the consumer made of one Kafka message.
#[derive(Debug)]
pub enum Body {
    Upsert(Event, Raw),
    /// A profile checked but not decoded (the usual case); `user` is folded.
    Profile {
        user: String,
        datum: ProfileDatum,
    },
    Delete {
        kind: Kind,
        key: String,
        raw: Raw,
    },
    /// A data source that belongs to another host. It is counted as skipped, and acts on
    /// this host as a delete in case the data source used to live here.
    ForeignDataSource {
        id: String,
        version: i64,
    },
    Poison {
        reason: String,
        raw: Raw,
    },
}

impl Body {
    /// The original bytes this body keeps for a dead letter, if any.
    pub fn raw_mut(&mut self) -> Option<&mut Raw> {
        match self {
            Body::Upsert(_, raw) | Body::Delete { raw, .. } | Body::Poison { raw, .. } => Some(raw),
            Body::Profile { .. } | Body::ForeignDataSource { .. } => None,
        }
    }
}

/// One consumed message on its way from the consumer thread to the applier.
#[derive(Debug)]
pub struct Item {
    pub tp: TopicPartition,
    /// Assignment generation the message was fetched under; stale ones are dropped.
    pub generation: u64,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    pub size: usize,
    pub body: Body,
}

/// Where dead letters go. Publishing must be acknowledged before the transaction that
/// advances the offsets past the records commits, so that nothing is lost.
pub trait DeadLetterSink {
    fn publish(
        &self,
        letters: &[DeadLetter],
    ) -> impl std::future::Future<Output = Result<(), PublishError>> + Send;
}

/// Why dead letters could not be published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PublishError {
    pub message: String,
    /// The topic refuses the writes (it does not exist, this client may not write to it,
    /// or the broker refuses the record): retrying alone will not help, the operator must.
    pub refused: bool,
    /// Not attempted: the record's topic has `errors.tolerance = none`, so its
    /// integration stops instead.
    pub intolerable: bool,
    /// The producer's error, when the broker refused or the send timed out.
    #[source]
    pub source: Option<rdkafka::error::KafkaError>,
}
