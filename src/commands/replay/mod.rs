//! `policy-push replay`: rebuild one host's state from the records Kafka retains.
//!
//! From the earliest records (the default), replay resets the host: it drops the views
//! policy-push manages there, 1,000 per transaction, and in the transaction that drops
//! the last of them revokes the impersonation grants it made, clears the integration's
//! state tables and deletes the group's stored offsets (`reset.rs`). Raw tables, other
//! hosts and the audit log are not touched. Then it runs the normal pipeline for that
//! integration alone until the stored offsets reach the end offsets seen when it
//! started. Replay is complete because the input topics are compacted: Kafka keeps at
//! least the newest record of every key, and each record holds the entity's whole state
//! (SPEC §2).
//!
//! Replay assigns itself every partition instead of joining the integration's consumer
//! group: a group join costs seconds per phase (about half of `session.timeout.ms` on
//! some brokers, `group.initial.rebalance.delay.ms` on Apache Kafka), and replay runs two
//! phases. A running instance of the same integration is not stopped by this. Each reset
//! transaction waits for its batch in flight and holds off the next one
//! (`hold_off_appliers`); its stored offsets vanish in the reset, so its next batch is
//! fenced and it re-reads from the start. From then on, both apply the same partitions, and the stored-offset check
//! fences whichever is behind at each commit. The result is the same, but the work is
//! done twice: stop the integration's instances during a replay for speed.
//!
//! From a timestamp, replay keeps the state and only moves the stored offsets back to
//! the first record at or after that time, so that everything since is applied again
//! (the version guard makes records already applied no-ops).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::apply::Warehouse;
use crate::config::Config;
use crate::consume::StoredOffsets;
use crate::event::Kind;
use crate::offsets::caught_up::Target;
use crate::record::TopicPartition;

mod reset;
use reset::{reset, rewind_to};

/// Where replay starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Earliest,
    /// Milliseconds since the Unix epoch.
    Timestamp(i64),
}

impl std::str::FromStr for Start {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "earliest" => Ok(Start::Earliest),
            time => crate::commands::timestamp::parse_ms(time)
                .map(Start::Timestamp)
                .map_err(|e| format!("{e}, or `earliest`")),
        }
    }
}

/// Replay from the earliest records rebuilds views from what the topics still hold, so it
/// refuses topics that may have lost records to retention unless the operator accepts it
/// (`--accept-uncompacted`). From a timestamp the state is kept; it only warns.
async fn guard_compaction(
    config: &Config,
    kafka: &rdkafka::ClientConfig,
    from: Start,
    accept_uncompacted: bool,
) -> anyhow::Result<()> {
    let topics: Vec<String> = config.topics.inputs().map(String::from).to_vec();
    use crate::consume::compaction::{check, risks};
    let risks = risks(&check(kafka, &topics).await);
    for r in &risks {
        tracing::warn!(remedy = %r.remedy, "{}", r.risk);
    }
    if risks.is_empty() || from != Start::Earliest || accept_uncompacted {
        return Ok(());
    }
    let list: Vec<&str> = risks.iter().map(|r| r.risk.as_str()).collect();
    bail!(
        "replay --from earliest refused: {}. A rebuild from such a topic can miss policies that aged out and show unmasked data. Compact the topics (cleanup.policy=compact), or pass --accept-uncompacted if you know nothing was deleted",
        list.join("; ")
    )
}

/// Offsets of the first records at or after `ms`, per partition (the end when none).
fn offsets_at(
    config: &Config,
    ms: i64,
    marks: &crate::offsets::Watermarks,
) -> anyhow::Result<StoredOffsets> {
    let client = crate::offsets::metadata_client(&crate::pipeline::kafka_config(config))?;
    let mut tpl = TopicPartitionList::new();
    for tp in marks.keys() {
        tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(ms))?;
    }
    let found = client.offsets_for_times(tpl, Duration::from_secs(30))?;
    let mut out = HashMap::new();
    for e in found.elements() {
        let tp = TopicPartition::new(e.topic(), e.partition());
        let end = marks.get(&tp).map_or(0, |m| m.1);
        let at = match e.offset() {
            Offset::Offset(o) => o,
            _ => end,
        };
        out.insert(tp, at);
    }
    Ok(out)
}

/// Replays one integration and returns the number of records applied.
pub async fn replay(
    config: &Config,
    name: &str,
    from: Start,
    accept_uncompacted: bool,
    shutdown: CancellationToken,
) -> anyhow::Result<i64> {
    let integration = config
        .integrations
        .iter()
        .find(|i| i.name == name)
        .with_context(|| format!("no integration named {name}"))?
        .clone();
    let group = integration.consumer_group(&config.consumer.group_prefix);
    let kafka = crate::pipeline::kafka_config(config);
    guard_compaction(config, &kafka, from, accept_uncompacted).await?;
    let metadata = Arc::new(crate::offsets::metadata_client(&kafka)?);
    let topics: Vec<String> = config
        .topics
        .inputs()
        .iter()
        .map(|t| t.to_string())
        .collect();
    let marks =
        crate::offsets::watermarks_blocking(metadata, topics, Duration::from_secs(30)).await?;

    let start = starting_point(config, &integration, &group, from, &marks).await?;
    // From `start` to the end offsets seen now, of every partition or of one phase's.
    let target = |marks: &crate::offsets::Watermarks| Target {
        start: start.clone(),
        ..Target::watermarks(marks)
    };
    let total = target(&marks).reached(&StoredOffsets::new()).total;
    tracing::info!(integration = name, records = total, ?from, "replay started");

    let mut single = config.clone();
    single.integrations = vec![integration.clone()];
    single.http.listen = String::new();
    let warehouse = Warehouse::new(&integration)?;
    let mut done = 0;
    for (phase, only) in PHASES.iter().enumerate() {
        let mut plan = crate::pipeline::Plan {
            kinds: only.map(<[Kind]>::to_vec),
            assign: None,
            exit_when_stopped: true,
            compaction_checked: true,
        };
        let topics = plan.subscriptions(&config.topics);
        let marks: crate::offsets::Watermarks = marks
            .iter()
            .filter(|(tp, _)| topics.iter().any(|t| **t == *tp.topic))
            .map(|(tp, m)| (tp.clone(), *m))
            .collect();
        plan.assign = Some(marks.keys().cloned().collect());
        tracing::info!(phase = phase + 1, ?topics, "replay phase started");
        let running = Phase {
            config: &single,
            warehouse: &warehouse,
            group: &group,
            shutdown: &shutdown,
        };
        done = running.run(plan, &target(&marks)).await?;
    }
    Ok(done)
}

/// Where replay starts each partition: its start (the host's state and offsets are
/// reset), or the first offset at the timestamp (the offsets are moved back to it).
async fn starting_point(
    config: &Config,
    integration: &crate::config::Integration,
    group: &str,
    from: Start,
    marks: &crate::offsets::Watermarks,
) -> anyhow::Result<StoredOffsets> {
    Ok(match from {
        Start::Earliest => {
            reset(integration, group).await?;
            marks
                .iter()
                .map(|(tp, (low, _))| (tp.clone(), *low))
                .collect()
        }
        Start::Timestamp(ms) => {
            let at = offsets_at(config, ms, marks)?;
            rewind_to(integration, group, &at).await?;
            at
        }
    })
}

/// One phase of a replay: the pipeline runs until the stored offsets reach the target.
struct Phase<'a> {
    config: &'a Config,
    warehouse: &'a Warehouse,
    group: &'a str,
    shutdown: &'a CancellationToken,
}

impl Phase<'_> {
    /// Records applied so far, once the phase caught up.
    async fn run(&self, plan: crate::pipeline::Plan, target: &Target) -> anyhow::Result<i64> {
        let stop = self.shutdown.child_token();
        let mut pipeline = tokio::spawn(crate::pipeline::run_plan(
            self.config.clone(),
            plan,
            stop.clone(),
        ));
        let result = tokio::select! {
            r = watch_progress(self.warehouse, self.group, target, self.shutdown) => r,
            // Before catching up, the pipeline only ends when its integration stopped on a
            // fatal error (an errors.tolerance = none topic, a refused setting).
            ended = &mut pipeline => {
                ended??;
                bail!("replay's pipeline stopped before it caught up; see the log for why")
            }
        };
        stop.cancel();
        pipeline.await??;
        result
    }
}

/// Replay runs the pipeline twice. First profiles and policies alone: with no data
/// sources yet, a policy builds no view; and impersonation grants, which need their
/// users, come later. Then every topic: each data source's view is built once, with every
/// policy already known. In one phase, each batch of policies rebuilt every view it
/// covers again (about three builds per view for 10,000 data sources and 1,000 policies;
/// docs/performance.md). The result is the same state either way; only the work differs.
const PHASES: [Option<&[Kind]>; 2] = [Some(&[Kind::Profile, Kind::Policy]), None];

/// Reports progress until the stored offsets reach the end offsets seen at the start.
async fn watch_progress(
    warehouse: &Warehouse,
    group: &str,
    target: &Target,
    shutdown: &CancellationToken,
) -> anyhow::Result<i64> {
    let began = Instant::now();
    let bar = crate::commands::progress::bar("replay", 0);
    let mut last_log = Instant::now();
    let every = Duration::from_millis(250);
    let reached = crate::offsets::caught_up::wait(warehouse, group, target, every, |r| {
        let (done, total) = (r.done, r.total);
        let rate = done as f64 / began.elapsed().as_secs_f64().max(0.001);
        if let Some(bar) = &bar {
            bar.set_length(u64::try_from(total).unwrap_or(0));
            bar.set_position(u64::try_from(done).unwrap_or(0));
        } else if last_log.elapsed() >= Duration::from_secs(1) || r.caught_up() {
            tracing::info!(done, total, rate = rate.round(), "replay progress");
            last_log = Instant::now();
        }
        if !r.caught_up() && shutdown.is_cancelled() {
            bail!("replay interrupted after {done} of {total} records; run it again to finish");
        }
        Ok(())
    })
    .await;
    if let Some(bar) = bar {
        match &reached {
            Ok(_) => bar.finish(),
            Err(_) => bar.abandon(),
        }
    }
    Ok(reached?.done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_parses_earliest_and_timestamps() {
        assert_eq!("earliest".parse::<Start>(), Ok(Start::Earliest));
        assert_eq!(
            "1700000000000".parse::<Start>(),
            Ok(Start::Timestamp(1_700_000_000_000))
        );
        assert!("yesterday".parse::<Start>().is_err());
    }
}
