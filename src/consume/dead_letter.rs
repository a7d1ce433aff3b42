//! Publishes rejected records to the dead-letter topic (SPEC §5): original key and value
//! bytes, with headers saying why and where from.

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
}

/// Producer errors after which retrying alone cannot succeed.
fn refused(e: &KafkaError) -> bool {
    use RDKafkaErrorCode::*;
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

    fn headers(&self, l: &DeadLetter, omitted: Option<&str>) -> OwnedHeaders {
        let partition = l.origin.tp.partition.to_string();
        let offset = l.origin.offset.to_string();
        let headers = OwnedHeaders::new()
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
        let omitted: Vec<Option<String>> = letters.iter().map(|l| self.too_large(l)).collect();
        let sends = letters.iter().zip(&omitted).map(|(l, omitted)| {
            let headers = self.headers(l, omitted.as_deref());
            let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic).headers(headers);
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
                message: format!("topic {}: {e}", self.topic),
                refused: refused(&e),
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
