//! Publishes rejected records to the dead-letter topic (SPEC §5): original key and value
//! bytes, with headers saying why and where from.

use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use crate::apply::DeadLetterSink;
use crate::batch::DeadLetter;

pub const HEADER_ERROR: &str = "policy_push.error";
pub const HEADER_TOPIC: &str = "policy_push.topic";
pub const HEADER_PARTITION: &str = "policy_push.partition";
pub const HEADER_OFFSET: &str = "policy_push.offset";
pub const HEADER_INTEGRATION: &str = "policy_push.integration";

pub struct DeadLetterProducer {
    producer: FutureProducer<super::LogContext>,
    topic: String,
    integration: String,
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
        let producer = cfg.create_with_context(super::LogContext::new(integration))?;
        Ok(DeadLetterProducer {
            producer,
            topic: topic.into(),
            integration: integration.into(),
        })
    }

    fn headers(&self, l: &DeadLetter) -> OwnedHeaders {
        let partition = l.origin.tp.partition.to_string();
        let offset = l.origin.offset.to_string();
        OwnedHeaders::new()
            .insert(Header {
                key: HEADER_ERROR,
                value: Some(l.reason.as_str()),
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
    }
}

impl DeadLetterSink for DeadLetterProducer {
    async fn publish(&self, letters: &[DeadLetter]) -> Result<(), String> {
        let sends = letters.iter().map(|l| {
            let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic).headers(self.headers(l));
            if let Some(k) = &l.raw.key {
                record = record.key(&k[..]);
            }
            if let Some(v) = &l.raw.value {
                record = record.payload(&v[..]);
            }
            self.producer.send(record, Duration::from_secs(30))
        });
        for result in futures::future::join_all(sends).await {
            result.map_err(|(e, _)| e.to_string())?;
        }
        for l in letters {
            tracing::warn!(
                topic = %l.origin.tp.topic, partition = l.origin.tp.partition, offset = l.origin.offset,
                reason = %l.reason, "record dead-lettered"
            );
        }
        Ok(())
    }
}
