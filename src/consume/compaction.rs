//! The compaction guard: is every input topic compacted?
//!
//! Replay and a new host rebuild views from what the input topics still hold; that is
//! complete only if each topic keeps the newest record of every key forever, which is
//! what `cleanup.policy=compact` (and only that: `compact,delete` also deletes by age)
//! promises. On a topic with the default `delete` policy, masking policies older than
//! `retention.ms` are gone, and a rebuilt view would show unmasked data.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

/// What a topic's configuration says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compaction {
    Compacted,
    /// Its `cleanup.policy`, which is not `compact`.
    NotCompacted(String),
    /// The broker cannot answer (it does not implement DescribeConfigs).
    Unsupported(String),
    /// The broker refused or failed to answer (authorization, a timeout).
    Unknown(String),
}

impl Compaction {
    /// Why a rebuild from this topic may be incomplete, if it may.
    pub fn risk(&self, topic: &str) -> Option<String> {
        match self {
            Compaction::Compacted => None,
            Compaction::NotCompacted(policy) => Some(format!(
                "topic {topic} has cleanup.policy={policy}, not compact: records older than its retention are deleted, also an entity's newest state"
            )),
            Compaction::Unsupported(e) | Compaction::Unknown(e) => Some(format!(
                "the cleanup.policy of topic {topic} cannot be read ({e})"
            )),
        }
    }

    /// What the operator should do about it.
    pub fn remedy(&self, topic: &str) -> String {
        match self {
            Compaction::Unknown(_) => format!(
                "grant this client DESCRIBE_CONFIGS on topic {topic}, and make sure it has cleanup.policy=compact"
            ),
            _ => format!(
                "set cleanup.policy=compact on topic {topic} (kafka-configs --alter --entity-type topics --entity-name {topic} --add-config cleanup.policy=compact); until then a replay or a new host may rebuild views without policies that aged out, and `replay --from earliest` refuses to run"
            ),
        }
    }
}

fn classify(policy: Option<&str>) -> Compaction {
    match policy.map(str::trim) {
        Some("compact") => Compaction::Compacted,
        Some(other) => Compaction::NotCompacted(other.to_string()),
        // Kafka's default when unset.
        None => Compaction::NotCompacted("delete".into()),
    }
}

/// The compaction of each of `topics`.
pub async fn check(kafka: &ClientConfig, topics: &[String]) -> BTreeMap<String, Compaction> {
    match describe(kafka, topics).await {
        Ok(found) => found,
        Err(e) => {
            let unsupported = matches!(
                e.rdkafka_error_code(),
                Some(RDKafkaErrorCode::UnsupportedFeature | RDKafkaErrorCode::UnsupportedVersion)
            );
            topics
                .iter()
                .map(|t| {
                    let c = if unsupported {
                        Compaction::Unsupported(e.to_string())
                    } else {
                        Compaction::Unknown(e.to_string())
                    };
                    (t.clone(), c)
                })
                .collect()
        }
    }
}

async fn describe(
    kafka: &ClientConfig,
    topics: &[String],
) -> Result<BTreeMap<String, Compaction>, KafkaError> {
    let admin: AdminClient<DefaultClientContext> = super::producer_config(kafka).create()?;
    let specs: Vec<ResourceSpecifier<'_>> =
        topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(15)));
    let results = admin.describe_configs(&specs, &opts).await?;
    Ok(topics
        .iter()
        .zip(results)
        .map(|(t, r)| {
            let c = match r {
                Ok(resource) => classify(
                    resource
                        .get("cleanup.policy")
                        .and_then(|e| e.value.as_deref()),
                ),
                Err(code) => Compaction::Unknown(code.to_string()),
            };
            (t.clone(), c)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_compact_alone_is_compacted() {
        assert_eq!(classify(Some("compact")), Compaction::Compacted);
        assert_eq!(
            classify(Some("compact,delete")),
            Compaction::NotCompacted("compact,delete".into())
        );
        assert_eq!(
            classify(Some("delete")),
            Compaction::NotCompacted("delete".into())
        );
        assert_eq!(classify(None), Compaction::NotCompacted("delete".into()));
        assert!(Compaction::Compacted.risk("t").is_none());
        assert!(classify(Some("delete"))
            .remedy("t")
            .contains("cleanup.policy=compact"));
    }
}
