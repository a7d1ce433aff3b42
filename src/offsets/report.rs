//! `policy-push offsets --integration NAME [--json] [--accept]`: per partition, the
//! offset stored in the warehouse (where the pipeline resumes), the one committed to
//! Kafka (what lag tools see; informational), the partition's start and end, the lag,
//! and whether the stored offset belongs to the partition (`consume::identity`): the
//! topic's id is the one stored with the offsets, and the stored offset is between the
//! start and the end. A stored offset above the end the broker reports is checked by
//! reading the record just before it: some Kafka-compatible brokers report their end
//! below the true end (the first offset of the last batch, plus one), and there the
//! record exists; after a recreated or truncated topic it does not.
//!
//! `--accept` takes each flagged partition as it is now: the topic's current id is
//! stored, a stored offset outside the partition is moved to its nearest end (the
//! records in between are skipped: said per partition; only from the offset shown, so
//! an instance's commit in between is never undone), and its hold is released. Running
//! instances resume the partition at their next lag refresh. `replay` is the other remedy, which rebuilds the
//! host from the topics as they are.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Serialize;

use crate::apply::Warehouse;
use crate::config::Config;
use crate::consume::identity::{Anomaly, Checker};
use crate::consume::{OffsetStore, StoredOffsets};
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
    /// `recreated`, `above_end`, `below_start`, `held` (found earlier, kept until
    /// accepted) or `unverified` (`consume::identity::Anomaly::kind`).
    pub problem: Option<&'static str>,
    /// What was observed, when there is a problem.
    pub observed: Option<String>,
    #[serde(skip)]
    pub anomaly: Option<Anomaly>,
}

impl Row {
    fn new(
        tp: &TopicPartition,
        marks: (i64, i64),
        stored: Option<i64>,
        committed: Option<i64>,
        anomaly: Option<Anomaly>,
    ) -> Row {
        let (start, end) = marks;
        Row {
            topic: tp.topic.to_string(),
            partition: tp.partition,
            stored,
            committed,
            start,
            end,
            lag: super::partition_lag(start, end, stored),
            problem: anomaly.as_ref().map(Anomaly::kind),
            observed: anomaly.as_ref().map(|a| a.describe(tp)),
            anomaly,
        }
    }

    fn tp(&self) -> TopicPartition {
        TopicPartition::new(self.topic.as_str(), self.partition)
    }
}

const TIMEOUT: Duration = Duration::from_secs(30);

/// The warehouse of the integration `name`, and its consumer group.
fn warehouse_of(config: &Config, name: &str) -> anyhow::Result<(Warehouse, String)> {
    let integration = config
        .integrations
        .iter()
        .find(|i| i.name == name)
        .with_context(|| format!("no integration named {name}"))?;
    let group = integration.consumer_group(&config.consumer.group_prefix);
    Ok((Warehouse::new(integration)?, group))
}

/// Every partition of the integration's input topics, sorted. `kafka` is the `[kafka]`
/// client configuration (`pipeline::kafka_config`).
pub async fn rows(config: &Config, kafka: &ClientConfig, name: &str) -> anyhow::Result<Vec<Row>> {
    let (warehouse, group) = warehouse_of(config, name)?;
    let warehouse = std::sync::Arc::new(warehouse);
    let stored = warehouse
        .load_offsets(&group)
        .await
        .context("cannot read the stored offsets from the warehouse")?;
    let holds = warehouse
        .load_holds(&group)
        .await
        .context("cannot read the partition holds from the warehouse")?;
    let topics: Vec<String> = config.topics.inputs().map(String::from).to_vec();
    let kafka = kafka.clone();
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let consumer = crate::consume::assign_only(&kafka, &group)?;
        let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        let marks = super::watermarks(&consumer, &refs, TIMEOUT)
            .context("cannot read the partitions' end offsets")?;
        let committed = committed(&consumer, &marks)?;
        let metadata = std::sync::Arc::new(super::metadata_client(&kafka)?);
        let checker = Checker::new(metadata, &kafka, Default::default());
        let tps: Vec<TopicPartition> = marks.keys().cloned().collect();
        let mut anomalies = checker.recreated(&*warehouse, &runtime, &group, &tps, &stored, false);
        let mut holds = holds;
        Ok(marks
            .iter()
            .map(|(tp, m)| {
                let at = stored.get(tp).copied();
                // What is wrong now, else the hold of what was found before.
                let anomaly = anomalies
                    .remove(tp)
                    .or_else(|| checker.against(tp, at, *m))
                    .or_else(|| holds.remove(tp).map(|observed| Anomaly::Held { observed }));
                Row::new(tp, *m, at, committed.get(tp).copied(), anomaly)
            })
            .collect())
    })
    .await
    .context("the offsets reader stopped")?
}

/// `--accept`: takes each flagged partition of `rows` as it is now (see the module docs);
/// returns what was done, a line per partition.
pub async fn accept(config: &Config, name: &str, rows: &[Row]) -> anyhow::Result<Vec<String>> {
    let (warehouse, group) = warehouse_of(config, name)?;
    let mut done = Vec::new();
    let mut ids = crate::consume::TopicIds::new();
    let mut release = Vec::new();
    for row in rows.iter().filter(|r| r.anomaly.is_some()) {
        let tp = row.tp();
        if let Some(Anomaly::Recreated { now, .. }) = &row.anomaly {
            ids.insert(row.topic.clone(), now.clone());
            done.push(format!("{tp}: the topic's id {now} is stored"));
        }
        match row.stored {
            Some(stored) if stored > row.end || stored < row.start => {
                let to = if stored > row.end { row.end } else { row.start };
                if !warehouse.move_offset(&group, &tp, stored, to).await? {
                    done.push(format!("{tp}: its stored offset moved on since it was read; nothing done, run again"));
                    continue;
                }
                done.push(moved(&tp, stored, to));
            }
            at => done.push(format!(
                "{tp}: applying goes on from offset {}",
                at.unwrap_or(row.start)
            )),
        }
        release.push(tp);
    }
    // The ids first: a lag refresh between the two would otherwise find the partition
    // recreated again, and hold it again.
    warehouse
        .store_topic_ids(&group, &ids, true)
        .await
        .context("cannot store the topics' ids")?;
    for tp in &release {
        warehouse
            .release_hold(&group, tp)
            .await
            .context("cannot release the partition's hold")?;
    }
    Ok(done)
}

fn moved(tp: &TopicPartition, from: i64, to: i64) -> String {
    if to < from {
        format!("{tp}: stored offset moved from {from} back to the end, {to}; records from {to} on are applied")
    } else {
        format!(
            "{tp}: stored offset moved from {from} to the start, {to}; records {from} to {} are skipped",
            to - 1
        )
    }
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
    let accept = format!("or take the partitions as they are now with `policy-push offsets --integration {integration} --accept`");
    match problem {
        "below_start" => format!("records were deleted before this host applied them (retention): make the input topics compacted, then `policy-push replay --integration {integration}`; {accept}"),
        _ => format!("the topic was recreated or truncated: its partitions are not applied until `policy-push replay --integration {integration}` rebuilds the host from it, {accept}"),
    }
}

/// Prints the table (or JSON), and with `accept` takes the flagged partitions as they
/// are; returns whether any row had a problem that was not accepted.
pub async fn print(
    config: &Config,
    kafka: &ClientConfig,
    name: &str,
    json: bool,
    accept_them: bool,
) -> anyhow::Result<bool> {
    let rows = rows(config, kafka, name).await?;
    if accept_them {
        for line in accept(config, name, &rows).await? {
            eprintln!("accepted {line}");
        }
        return Ok(false);
    }
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
        for r in rows.iter().filter_map(|r| r.observed.as_ref()) {
            eprintln!("{r}");
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
    fn rows_carry_what_was_observed() {
        let ok = Row::new(&tp(0), (0, 10), Some(4), Some(4), None);
        assert_eq!((ok.lag, ok.problem, ok.observed), (6, None, None));
        let fresh = Row::new(&tp(1), (3, 10), None, None, None);
        assert_eq!((fresh.lag, fresh.problem), (7, None));
        let above = Anomaly::AboveEnd { stored: 50, end: 2 };
        let recreated = Row::new(&tp(2), (0, 2), Some(50), Some(50), Some(above));
        assert_eq!((recreated.lag, recreated.problem), (0, Some("above_end")));
        assert!(recreated
            .observed
            .unwrap()
            .contains("past the partition's end 2"));
    }
}
