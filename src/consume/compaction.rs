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
    /// The broker refused to answer: this client lacks DESCRIBE_CONFIGS on the topic.
    Denied(String),
    /// The topic does not exist.
    Missing(String),
    /// No answer within the request timeout (librdkafka's mock cluster never answers).
    NoAnswer(String),
    /// The broker answered with an error of its own.
    Unknown(String),
}

impl Compaction {
    /// The broker cannot say, or did not say in time: nothing is known to be wrong, so
    /// only worth a warning at start (replay refuses it all the same).
    pub fn unanswered(&self) -> bool {
        matches!(self, Compaction::Unsupported(_) | Compaction::NoAnswer(_))
    }

    /// Why a rebuild from this topic may be incomplete, if it may.
    pub fn risk(&self, topic: &str) -> Option<String> {
        match self {
            Compaction::Compacted => None,
            Compaction::NotCompacted(policy) => Some(format!(
                "topic {topic} has cleanup.policy={policy}, not compact: records older than its retention are deleted, also an entity's newest state"
            )),
            Compaction::Missing(e) => Some(format!("topic {topic} does not exist ({e})")),
            Compaction::Unsupported(e)
            | Compaction::Denied(e)
            | Compaction::NoAnswer(e)
            | Compaction::Unknown(e) => Some(format!(
                "the cleanup.policy of topic {topic} cannot be read ({e})"
            )),
        }
    }

    /// What the operator should do about it.
    pub fn remedy(&self, topic: &str) -> String {
        match self {
            Compaction::Denied(_) => format!(
                "grant this client DESCRIBE_CONFIGS on topic {topic}, and make sure it has cleanup.policy=compact"
            ),
            Compaction::Missing(_) => format!(
                "create topic {topic} with cleanup.policy=compact, or correct its name in [topics]"
            ),
            Compaction::NoAnswer(_) | Compaction::Unknown(_) => format!(
                "check the broker (it is asked every minute and before a replay), and make sure topic {topic} has cleanup.policy=compact"
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
        Err(e) => topics.iter().map(|t| (t.clone(), unanswered(&e))).collect(),
    }
}

/// A request the broker did not answer: it cannot (an old broker, the mock cluster), or
/// it would not (authorization) or failed to (a timeout). Only the first is not the
/// operator's to fix.
fn unanswered(e: &KafkaError) -> Compaction {
    // An admin request's own error is `AdminOp`, whose code rdkafka does not report
    // through `rdkafka_error_code`.
    let code = match e {
        KafkaError::AdminOp(code) => Some(*code),
        e => e.rdkafka_error_code(),
    };
    match code {
        Some(code) => refused(code, e.to_string()),
        None => Compaction::Unknown(e.to_string()),
    }
}

/// A request or a topic's answer that carries an error code.
fn refused(code: RDKafkaErrorCode, text: String) -> Compaction {
    use RDKafkaErrorCode::{
        ClusterAuthorizationFailed, OperationTimedOut, RequestTimedOut, TopicAuthorizationFailed,
        UnknownTopic, UnknownTopicOrPartition, UnsupportedFeature, UnsupportedVersion,
    };
    match code {
        UnsupportedFeature | UnsupportedVersion => Compaction::Unsupported(text),
        TopicAuthorizationFailed | ClusterAuthorizationFailed => Compaction::Denied(text),
        UnknownTopicOrPartition | UnknownTopic => Compaction::Missing(text),
        OperationTimedOut | RequestTimedOut => Compaction::NoAnswer(text),
        _ => Compaction::Unknown(text),
    }
}

/// A topic a rebuild may not be complete from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Risk {
    pub topic: String,
    pub risk: String,
    pub remedy: String,
    /// `Compaction::unanswered`: a warning at start, not a degraded integration; replay
    /// still refuses without `--accept-uncompacted`.
    pub unanswered: bool,
}

/// The risks among checked topics, in topic order.
pub fn risks(checked: &BTreeMap<String, Compaction>) -> Vec<Risk> {
    checked
        .iter()
        .filter_map(|(topic, c)| {
            Some(Risk {
                risk: c.risk(topic)?,
                remedy: c.remedy(topic),
                unanswered: c.unanswered(),
                topic: topic.clone(),
            })
        })
        .collect()
}

async fn describe(
    kafka: &ClientConfig,
    topics: &[String],
) -> Result<BTreeMap<String, Compaction>, KafkaError> {
    let admin: AdminClient<DefaultClientContext> = super::producer_config(kafka).create()?;
    let specs: Vec<ResourceSpecifier<'_>> =
        topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(15)));
    let results = admin.describe_configs(&specs, &opts).await;
    // Destroying a client waits for its threads: not on a runtime worker.
    tokio::task::spawn_blocking(move || drop(admin));
    let results = results?;
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
                Err(code) => refused(code, code.to_string()),
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

    /// A client without DESCRIBE_CONFIGS is told to get it, and its risk degrades the
    /// integration; a broker that cannot or did not answer is only warned about.
    #[test]
    fn a_refused_describe_is_the_operators_to_fix_and_an_unsupported_one_is_not() {
        let denied = KafkaError::AdminOp(RDKafkaErrorCode::TopicAuthorizationFailed);
        let old = KafkaError::AdminOp(RDKafkaErrorCode::UnsupportedVersion);
        let slow = KafkaError::AdminOp(RDKafkaErrorCode::OperationTimedOut);
        assert!(matches!(unanswered(&denied), Compaction::Denied(_)));
        assert!(matches!(unanswered(&old), Compaction::Unsupported(_)));
        assert!(matches!(unanswered(&slow), Compaction::NoAnswer(_)));
        let broken = KafkaError::AdminOp(RDKafkaErrorCode::PolicyViolation);
        assert!(matches!(unanswered(&broken), Compaction::Unknown(_)));
        assert!(!unanswered(&slow).remedy("t").contains("DESCRIBE_CONFIGS"));
        let missing = refused(RDKafkaErrorCode::UnknownTopicOrPartition, "unknown".into());
        assert!(
            missing.remedy("t").contains("create topic t"),
            "{missing:?}"
        );
        let checked: BTreeMap<String, Compaction> = [
            ("a".to_string(), unanswered(&denied)),
            ("b".to_string(), unanswered(&old)),
            ("c".to_string(), Compaction::Compacted),
            ("d".to_string(), classify(Some("delete"))),
            ("e".to_string(), unanswered(&slow)),
            ("f".to_string(), unanswered(&broken)),
        ]
        .into();
        let found = risks(&checked);
        let topics: Vec<(&str, bool)> = found
            .iter()
            .map(|r| (r.topic.as_str(), r.unanswered))
            .collect();
        assert_eq!(
            topics,
            [
                ("a", false),
                ("b", true),
                ("d", false),
                ("e", true),
                ("f", false)
            ]
        );
        assert!(
            found[0].remedy.contains("DESCRIBE_CONFIGS on topic a"),
            "{found:?}"
        );
        assert!(found[0].risk.contains("cannot be read"), "{found:?}");
    }
}
