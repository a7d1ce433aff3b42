//! Publishes rejected records to the dead-letter topic (SPEC §5): original key, value,
//! headers and timestamp, with headers saying why and where from.
//!
//! Headers, after the record's own: the SPEC's `policy_push.error`, `.topic`,
//! `.partition`, `.offset` and `.integration`, then the error class in Kafka Connect's
//! style (`__connect.errors.*`): `__policy_push.errors.class` (always `poison`: nothing
//! else is dead-lettered), `.stage` (`consume` or `apply`, `record::Stage`) and
//! `.timestamp` (when it was dead-lettered, ms since the epoch). A record's own headers
//! under either prefix are dropped, so that a dead letter's origin cannot be forged by
//! its producer and a redriven record does not carry its last rejection.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use crate::record::{DeadLetter, DeadLetterSink, PublishError};

pub const HEADER_ERROR: &str = "policy_push.error";
pub const HEADER_TOPIC: &str = "policy_push.topic";
pub const HEADER_PARTITION: &str = "policy_push.partition";
pub const HEADER_OFFSET: &str = "policy_push.offset";
pub const HEADER_INTEGRATION: &str = "policy_push.integration";
pub const HEADER_CLASS: &str = "__policy_push.errors.class";
pub const HEADER_STAGE: &str = "__policy_push.errors.stage";
pub const HEADER_DEAD_LETTERED_AT: &str = "__policy_push.errors.timestamp";

/// Whether a header is one policy-push writes on dead letters.
pub fn is_own_header(key: &str) -> bool {
    key.starts_with("policy_push.") || key.starts_with("__policy_push.")
}

/// Set instead of the original value when key and value would not fit the producer's
/// `message.max.bytes`: the record is still at its topic, partition and offset.
pub const HEADER_VALUE_OMITTED: &str = "policy_push.value_omitted";

/// How long a dead letter may wait for delivery unless `message.timeout.ms` is set:
/// librdkafka's default (5 minutes) would hide a missing topic behind the batch timeout.
const DELIVERY_TIMEOUT_MS: &str = "30000";

/// Room left in a dead letter for its headers and the record framing.
const HEADER_ROOM: usize = 16 * 1024;

pub struct DeadLetterProducer {
    producer: FutureProducer<super::LogContext>,
    topic: String,
    integration: String,
    /// The producer's `message.max.bytes`.
    max_message_bytes: usize,
    /// Input topics with `errors.tolerance = none`: their records are never
    /// dead-lettered; publishing one fails as `intolerable`, which stops the integration.
    intolerant: Vec<String>,
}

/// Producer errors after which retrying alone cannot succeed.
fn refused(e: &KafkaError) -> bool {
    use RDKafkaErrorCode::{
        ClusterAuthorizationFailed, InvalidMessageSize, InvalidRecord, InvalidTopic,
        MessageBatchTooLarge, MessageSizeTooLarge, PolicyViolation, TopicAuthorizationFailed,
        UnknownTopic, UnknownTopicOrPartition,
    };
    matches!(
        e.rdkafka_error_code(),
        Some(
            TopicAuthorizationFailed
                | ClusterAuthorizationFailed
                | UnknownTopicOrPartition
                | UnknownTopic
                | MessageSizeTooLarge
                | MessageBatchTooLarge
                | InvalidMessageSize
                | InvalidRecord
                | InvalidTopic
                | PolicyViolation
        )
    )
}

impl DeadLetterProducer {
    pub fn new(
        kafka: &ClientConfig,
        topic: &str,
        integration: &str,
    ) -> Result<Self, super::ConsumeError> {
        let mut cfg = super::producer_config(kafka);
        if cfg.get("enable.idempotence").is_none() {
            cfg.set("enable.idempotence", "true");
        }
        if cfg.get("message.timeout.ms").is_none() {
            cfg.set("message.timeout.ms", DELIVERY_TIMEOUT_MS);
        }
        let max_message_bytes = cfg
            .get("message.max.bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000);
        let producer = cfg.create_with_context(super::LogContext::new(integration))?;
        Ok(DeadLetterProducer {
            producer,
            topic: topic.into(),
            integration: integration.into(),
            max_message_bytes,
            intolerant: Vec::new(),
        })
    }

    /// Refuses to dead-letter records of `topics` (`errors.tolerance = none`).
    pub fn refusing(mut self, topics: Vec<String>) -> Self {
        self.intolerant = topics;
        self
    }

    fn intolerable(&self, letters: &[DeadLetter]) -> Option<PublishError> {
        let l = letters
            .iter()
            .find(|l| self.intolerant.iter().any(|t| **t == *l.origin.tp.topic))?;
        Some(PublishError {
            message: format!(
                "errors.tolerance = none for topic {}: the record at partition {} offset {} was not dead-lettered, and the integration stopped: {}",
                l.origin.tp.topic,
                l.origin.tp.partition,
                l.origin.offset,
                l.capped_reason()
            ),
            refused: false,
            intolerable: true,
            source: None,
        })
    }

    /// Why the original key and value do not fit in one dead letter beside its headers,
    /// if they do not.
    fn too_large(&self, l: &DeadLetter) -> Option<String> {
        let bytes =
            l.raw.key.as_ref().map_or(0, |k| k.len()) + l.raw.value.as_ref().map_or(0, |v| v.len());
        (bytes + HEADER_ROOM > self.max_message_bytes).then(|| {
            format!(
                "key and value ({bytes} bytes) exceed message.max.bytes ({}); the record is at its topic, partition and offset",
                self.max_message_bytes
            )
        })
    }

    fn headers(&self, l: &DeadLetter, omitted: Option<&str>, now_ms: &str) -> OwnedHeaders {
        let partition = l.origin.tp.partition.to_string();
        let offset = l.origin.offset.to_string();
        let own = l.raw.meta.iter().flat_map(|m| &m.headers);
        let mut headers = OwnedHeaders::new();
        for (key, value) in own.filter(|(k, _)| !is_own_header(k)) {
            headers = headers.insert(Header {
                key: key.as_str(),
                value: value.as_deref(),
            });
        }
        let headers = headers
            .insert(Header {
                key: HEADER_ERROR,
                value: Some(l.capped_reason()),
            })
            .insert(Header {
                key: HEADER_TOPIC,
                value: Some(&*l.origin.tp.topic),
            })
            .insert(Header {
                key: HEADER_PARTITION,
                value: Some(partition.as_str()),
            })
            .insert(Header {
                key: HEADER_OFFSET,
                value: Some(offset.as_str()),
            })
            .insert(Header {
                key: HEADER_INTEGRATION,
                value: Some(self.integration.as_str()),
            })
            .insert(Header {
                key: HEADER_CLASS,
                value: Some("poison"),
            })
            .insert(Header {
                key: HEADER_STAGE,
                value: Some(l.stage.as_str()),
            })
            .insert(Header {
                key: HEADER_DEAD_LETTERED_AT,
                value: Some(now_ms),
            });
        match omitted {
            Some(why) => headers.insert(Header {
                key: HEADER_VALUE_OMITTED,
                value: Some(why),
            }),
            None => headers,
        }
    }
}

impl DeadLetterSink for DeadLetterProducer {
    async fn publish(&self, letters: &[DeadLetter]) -> Result<(), PublishError> {
        if let Some(e) = self.intolerable(letters) {
            return Err(e);
        }
        let omitted: Vec<Option<String>> = letters.iter().map(|l| self.too_large(l)).collect();
        let now_ms = crate::telemetry::epoch_ms().to_string();
        let sends = letters.iter().zip(&omitted).map(|(l, omitted)| {
            let headers = self.headers(l, omitted.as_deref(), &now_ms);
            let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic).headers(headers);
            if let Some(ts) = l.raw.meta.as_ref().and_then(|m| m.timestamp_ms) {
                record = record.timestamp(ts);
            }
            if omitted.is_none() {
                if let Some(k) = &l.raw.key {
                    record = record.key(&k[..]);
                }
                if let Some(v) = &l.raw.value {
                    record = record.payload(&v[..]);
                }
            }
            self.producer.send(record, Duration::from_secs(30))
        });
        for result in futures::future::join_all(sends).await {
            result.map_err(|(e, _)| PublishError {
                message: format!("topic {}", self.topic),
                refused: refused(&e),
                intolerable: false,
                source: Some(e),
            })?;
        }
        for l in letters {
            tracing::warn!(
                topic = %l.origin.tp.topic, partition = l.origin.tp.partition, offset = l.origin.offset,
                reason = %l.capped_reason(), "record dead-lettered"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Origin, Raw, TopicPartition};

    fn letter(value_bytes: usize, reason: String) -> DeadLetter {
        DeadLetter {
            stage: crate::record::Stage::Consume,
            origin: Origin {
                tp: TopicPartition {
                    topic: "t".into(),
                    partition: 0,
                },
                offset: 7,
            },
            reason,
            raw: Raw {
                key: Some(Box::from(&b"k"[..])),
                value: Some(vec![0u8; value_bytes].into_boxed_slice()),
                meta: None,
            },
        }
    }

    #[test]
    fn a_dead_letter_keeps_the_value_only_if_it_fits_and_caps_its_reason() {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", "127.0.0.1:9")
            .set("message.max.bytes", "100000");
        let p = DeadLetterProducer::new(&cfg, "dlq", "i").unwrap();
        assert!(p.too_large(&letter(50_000, String::new())).is_none());
        assert!(p
            .too_large(&letter(90_000, String::new()))
            .is_some_and(|why| why.contains("message.max.bytes (100000)")));
        let long = letter(0, "é".repeat(5000));
        assert!(long.capped_reason().len() <= crate::record::MAX_REASON_BYTES);
        assert!(long.capped_reason().starts_with("éé"));
    }
}
