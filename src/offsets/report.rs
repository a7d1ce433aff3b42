//! `policy-push offsets --integration NAME [--json]`: per partition, the offset stored in
//! the warehouse (where the pipeline resumes), the one committed to Kafka (what lag tools
//! see; informational), the partition's start and end, and the lag.
//!
//! A stored offset past the end means the topic was recreated or truncated: the broker
//! would move the consumer back, and the pipeline stops applying that partition rather
//! than apply the new topic's records against old offsets (`consume::Partitions::tag`).
//! A stored offset before the start means records were deleted (retention) before this
//! host applied them, which compaction prevents. Both are flagged with the remedy.
//!
//! The end is the broker's high watermark. Some Kafka-compatible brokers report it below
//! the true end (at the first offset of the last batch, plus one); against those a
//! stored offset can look past the end by up to one batch.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Serialize;

use crate::apply::Warehouse;
use crate::config::Config;
use crate::consume::StoredOffsets;
use crate::record::TopicPartition;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    pub topic: String,
    pub partition: i32,
    /// `next_offset` in the warehouse; None before the first batch.
    pub stored: Option<i64>,
    /// The group's committed offset in Kafka.
    pub committed: Option<i64>,
    pub start: i64,
    pub end: i64,
    pub lag: i64,
    /// `past_end` or `before_start`, when the stored offset is outside the partition.
    pub problem: Option<&'static str>,
}

impl Row {
    fn new(
        tp: &TopicPartition,
        marks: (i64, i64),
        stored: Option<i64>,
        committed: Option<i64>,
    ) -> Row {
        let (start, end) = marks;
        let problem = match stored {
            Some(s) if s > end => Some("past_end"),
            Some(s) if s < start => Some("before_start"),
            _ => None,
        };
        Row {
            topic: tp.topic.to_string(),
            partition: tp.partition,
            stored,
            committed,
            start,
            end,
            lag: super::partition_lag(start, end, stored),
            problem,
        }
    }
}

const TIMEOUT: Duration = Duration::from_secs(30);

/// Every partition of the integration's input topics, sorted. `kafka` is the `[kafka]`
/// client configuration (`pipeline::kafka_config`).
pub async fn rows(config: &Config, kafka: &ClientConfig, name: &str) -> anyhow::Result<Vec<Row>> {
    let integration = config
        .integrations
        .iter()
        .find(|i| i.name == name)
        .with_context(|| format!("no integration named {name}"))?;
    let group = integration.consumer_group(&config.consumer.group_prefix);
    let warehouse = Warehouse::new(integration)?;
    let stored = warehouse
        .load_offsets(&group)
        .await
        .context("cannot read the stored offsets from the warehouse")?;
    let topics: Vec<String> = config.topics.inputs().map(String::from).to_vec();
    let kafka = kafka.clone();
    tokio::task::spawn_blocking(move || {
        let consumer = crate::consume::assign_only(&kafka, &group)?;
        let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        let marks = super::watermarks(&consumer, &refs, TIMEOUT)
            .context("cannot read the partitions' end offsets")?;
        let committed = committed(&consumer, &marks)?;
        Ok(marks
            .iter()
            .map(|(tp, m)| Row::new(tp, *m, stored.get(tp).copied(), committed.get(tp).copied()))
            .collect())
    })
    .await
    .context("the offsets reader stopped")?
}

fn committed(consumer: &BaseConsumer, marks: &super::Watermarks) -> anyhow::Result<StoredOffsets> {
    let mut tpl = TopicPartitionList::new();
    for tp in marks.keys() {
        tpl.add_partition(&tp.topic, tp.partition);
    }
    let committed = consumer
        .committed_offsets(tpl, TIMEOUT)
        .context("cannot read the group's committed offsets")?;
    Ok(committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((TopicPartition::new(e.topic(), e.partition()), o)),
            _ => None,
        })
        .collect())
}

/// The remedy for a row's problem.
pub fn remedy(problem: &str, integration: &str) -> String {
    match problem {
        "past_end" => format!("the topic was recreated or truncated; its partitions are not applied until `policy-push replay --integration {integration}` rebuilds the host from it"),
        _ => format!("records were deleted before this host applied them (retention): make the input topics compacted, then `policy-push replay --integration {integration}`"),
    }
}

/// Prints the table (or JSON); returns whether any row has a problem.
pub async fn print(
    config: &Config,
    kafka: &ClientConfig,
    name: &str,
    json: bool,
) -> anyhow::Result<bool> {
    let rows = rows(config, kafka, name).await?;
    let problems: BTreeMap<&str, usize> =
        rows.iter()
            .filter_map(|r| r.problem)
            .fold(BTreeMap::new(), |mut m, p| {
                *m.entry(p).or_default() += 1;
                m
            });
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        let dash = |o: Option<i64>| o.map_or("-".to_string(), |o| o.to_string());
        println!("topic\tpartition\tstored\tcommitted\tstart\tend\tlag\tproblem");
        for r in &rows {
            println!(
                "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                r.topic,
                r.partition,
                dash(r.stored),
                dash(r.committed),
                r.start,
                r.end,
                r.lag,
                r.problem.unwrap_or("")
            );
        }
        for p in problems.keys() {
            eprintln!("{p}: {}", remedy(p, name));
        }
    }
    Ok(!problems.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offsets::tp;

    #[test]
    fn rows_flag_stored_offsets_outside_the_partition() {
        let ok = Row::new(&tp(0), (0, 10), Some(4), Some(4));
        assert_eq!((ok.lag, ok.problem), (6, None));
        let fresh = Row::new(&tp(1), (3, 10), None, None);
        assert_eq!((fresh.lag, fresh.problem), (7, None));
        let recreated = Row::new(&tp(2), (0, 2), Some(50), Some(50));
        assert_eq!((recreated.lag, recreated.problem), (0, Some("past_end")));
        let aged_out = Row::new(&tp(3), (20, 30), Some(5), None);
        assert_eq!((aged_out.lag, aged_out.problem), (10, Some("before_start")));
    }
}
