//! `check-config --connect`, the topics: every configured topic exists and has
//! partitions, every input topic is compacted (`consume::compaction`) and the dead-letter
//! topic is not. A topic that does not exist is matched against the cluster's topics, so
//! that a misspelt name in `[topics]` is named with the one it probably means.

use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::metadata::Metadata;

use crate::config::Config;
use crate::consume::compaction::{self, Compaction};
use crate::error::chain;

const TIMEOUT: Duration = Duration::from_secs(10);

/// One line per configured topic: its target and what was found.
pub async fn check(config: &Config) -> Vec<(String, Result<String, String>)> {
    let kafka = crate::pipeline::kafka_config(config);
    let listing = kafka.clone();
    let metadata = tokio::task::spawn_blocking(move || {
        let consumer = crate::consume::assign_only(&listing, "policy-push.check-config")
            .map_err(|e| chain(&e))?;
        consumer
            .fetch_metadata(None, TIMEOUT)
            .map_err(|e| chain(&e))
    })
    .await
    .map_err(|e| chain(&e))
    .and_then(|r| r);
    let metadata = match metadata {
        Ok(m) => m,
        Err(e) => return vec![("kafka topics".into(), Err(format!("cannot list them: {e}")))],
    };
    let topics = config.topics.with_compaction();
    let names: Vec<String> = topics.iter().map(|(t, _)| t.to_string()).collect();
    let compaction = compaction::check(&kafka, &names).await;
    topics
        .into_iter()
        .map(|(topic, input)| {
            let found = partitions(&metadata, topic).and_then(|n| match input {
                true => compacted(topic, n, compaction.get(topic)),
                false => not_compacted(topic, n, compaction.get(topic)),
            });
            (format!("topic {topic}"), found)
        })
        .collect()
}

/// The dead-letter topic must not be compacted: letters of one key would replace each
/// other, and a redrive's marker, which has no key, would be refused.
fn not_compacted(topic: &str, n: usize, found: Option<&Compaction>) -> Result<String, String> {
    let compacted = || {
        Err(format!(
        "the dead-letter topic {topic} is compacted: dead letters of one key replace each other, and a redrive's marker (no key) is refused; set cleanup.policy=delete on it"
    ))
    };
    match found {
        Some(Compaction::Compacted) => compacted(),
        // `compact,delete` compacts too.
        Some(Compaction::NotCompacted(policy)) if policy.contains("compact") => compacted(),
        Some(Compaction::NotCompacted(_)) => Ok(format!(" ({n} partitions, not compacted)")),
        Some(c) => Ok(format!(
            " ({n} partitions; whether it is compacted cannot be told: {})",
            c.risk(topic).unwrap_or_default()
        )),
        None => Ok(format!(" ({n} partitions)")),
    }
}

/// The number of partitions of `topic`, or why it has none.
fn partitions(metadata: &Metadata, topic: &str) -> Result<usize, String> {
    let listed = metadata.topics().iter().find(|t| t.name() == topic);
    let unknown = rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
    match listed.and_then(|t| t.error()) {
        Some(e) if e != unknown => {
            let code = rdkafka::types::RDKafkaErrorCode::from(e);
            return Err(format!("the broker answers with an error for it: {code}"));
        }
        Some(_) => return Err(missing(metadata, topic)),
        None => {}
    }
    match listed.map(|t| t.partitions().len()) {
        Some(0) => Err("has no partitions".into()),
        Some(n) => Ok(n),
        None => Err(missing(metadata, topic)),
    }
}

/// That `topic` does not exist, and the existing topic it probably means.
fn missing(metadata: &Metadata, topic: &str) -> String {
    let names = metadata.topics().iter().map(|t| t.name());
    match closest(topic, names) {
        Some(near) => format!("does not exist; did you mean {near}? (set it in [topics])"),
        None => "does not exist: create it, or correct its name in [topics]".into(),
    }
}

fn compacted(topic: &str, n: usize, found: Option<&Compaction>) -> Result<String, String> {
    match found {
        Some(Compaction::Compacted) => Ok(format!(" ({n} partitions, compacted)")),
        Some(c) if c.unanswered() => Ok(format!(
            " ({n} partitions; the broker does not say whether it is compacted: {})",
            c.risk(topic).unwrap_or_default()
        )),
        Some(c) => Err(format!(
            "{}; {}",
            c.risk(topic).unwrap_or_default(),
            c.remedy(topic)
        )),
        None => Err("its cleanup.policy was not reported".into()),
    }
}

/// The existing topic `name` is most probably a misspelling of: at most a third of its
/// characters differ.
fn closest<'a>(name: &str, topics: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    topics
        .filter(|t| !t.starts_with("__"))
        .map(|t| (distance(name, t), t))
        .filter(|(d, _)| *d > 0 && *d <= name.chars().count().div_ceil(3))
        .min()
        .map(|(_, t)| t)
}

/// Levenshtein distance between `a` and `b`, in characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substituted = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substituted.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::{closest, distance};

    #[test]
    fn a_misspelt_topic_is_matched_to_the_one_it_means() {
        assert_eq!(distance("immuta.policys", "immuta.policies"), 2);
        assert_eq!(distance("", "ab"), 2);
        let topics = ["immuta.policies", "immuta.profiles", "__consumer_offsets"];
        assert_eq!(
            closest("immuta.policys", topics.into_iter()),
            Some("immuta.policies")
        );
        assert_eq!(closest("orders", topics.into_iter()), None);
    }
}
