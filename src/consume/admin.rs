//! Topic creation for the demo, `simulate` and tests against a real broker.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

/// Creates the topics that do not exist yet. Compaction is on for the input topics, as
/// their records are whole entity states keyed by id (SPEC §2).
pub async fn ensure_topics(
    kafka: &ClientConfig,
    topics: &[(&str, bool)],
    partitions: i32,
) -> Result<(), rdkafka::error::KafkaError> {
    let admin: AdminClient<DefaultClientContext> = super::producer_config(kafka).create()?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, compacted)| {
            let t = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
            if *compacted {
                t.set("cleanup.policy", "compact")
            } else {
                t
            }
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics(&new, &opts).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(rdkafka::error::KafkaError::AdminOp(code))
                    .inspect_err(|_| tracing::error!(%topic, "cannot create topic"));
            }
        }
    }
    Ok(())
}
