//! `policy-push dead-letters list|redrive`: what was dead-lettered, and putting it back.
//!
//! Both read the dead-letter topic from its start to the end offsets seen when they
//! begin, without a consumer group (nothing is committed), and select letters by
//! integration, origin topic, when they were dead-lettered (`--since`) and position in
//! the dead-letter topic (`--at PARTITION:OFFSET`, as `list` prints it).
//!
//! A redrive publishes each selected letter's original key, value and headers again to
//! its origin topic and partition, so that it keeps its place among its key's records
//! (tombstones depend on that order). Every integration consumes it again, and an entity
//! applies a record only when it is newer than the state it holds (the version guard,
//! and the tombstone rule): a letter superseded since, or already applied by another
//! integration, is a no-op there. Letters whose value was too large to keep are not
//! redriven: the record is still at its origin, if retention kept it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::config::Config;
use crate::consume::dead_letter as dl;

/// Which dead letters a command acts on; every given criterion must hold.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Filter {
    /// Only letters of this integration.
    #[arg(long)]
    pub integration: Option<String>,
    /// Only letters from this origin topic.
    #[arg(long)]
    pub topic: Option<String>,
    /// Only letters dead-lettered at or after this time (RFC 3339, or ms since the epoch).
    #[arg(long, value_parser = crate::commands::timestamp::parse_ms)]
    pub since: Option<i64>,
    /// Only the letter at this position of the dead-letter topic (repeatable).
    #[arg(long = "at", value_parser = parse_at)]
    pub at: Vec<(i32, i64)>,
}

fn parse_at(s: &str) -> Result<(i32, i64), String> {
    let bad = || format!("{s:?}: expected PARTITION:OFFSET of the dead-letter topic");
    let (p, o) = s.split_once(':').ok_or_else(bad)?;
    Ok((p.parse().map_err(|_| bad())?, o.parse().map_err(|_| bad())?))
}

impl Filter {
    fn is_empty(&self) -> bool {
        self.integration.is_none()
            && self.topic.is_none()
            && self.since.is_none()
            && self.at.is_empty()
    }

    fn selects(&self, l: &Letter) -> bool {
        self.integration
            .as_ref()
            .is_none_or(|i| *i == l.integration)
            && self.topic.as_ref().is_none_or(|t| *t == l.topic)
            && self
                .since
                .is_none_or(|s| l.dead_lettered_ms.is_some_and(|at| at >= s))
            && (self.at.is_empty() || self.at.contains(&(l.partition_in_dlq, l.offset_in_dlq)))
    }
}

/// One dead letter as read back.
#[derive(Debug, Clone, Serialize)]
pub struct Letter {
    pub partition_in_dlq: i32,
    pub offset_in_dlq: i64,
    pub integration: String,
    pub topic: String,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    pub error: String,
    pub class: String,
    pub stage: String,
    pub dead_lettered_ms: Option<i64>,
    /// The original record's timestamp.
    pub timestamp_ms: Option<i64>,
    pub value_omitted: Option<String>,
    #[serde(skip)]
    pub key: Option<Vec<u8>>,
    #[serde(skip)]
    pub value: Option<Vec<u8>>,
    /// The original record's headers (not the ones policy-push added).
    #[serde(skip)]
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Letter {
    fn from_message(m: &BorrowedMessage<'_>) -> Letter {
        let mut own = BTreeMap::new();
        let mut headers = Vec::new();
        for h in m.headers().into_iter().flat_map(|h| h.iter()) {
            if dl::is_own_header(h.key) {
                let text = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
                own.insert(h.key.to_string(), text.unwrap_or_default());
            } else {
                headers.push((h.key.to_string(), h.value.map(<[u8]>::to_vec)));
            }
        }
        let text = |k: &str| own.get(k).cloned().unwrap_or_default();
        let number = |k: &str| own.get(k).and_then(|v| v.parse().ok());
        Letter {
            partition_in_dlq: m.partition(),
            offset_in_dlq: m.offset(),
            integration: text(dl::HEADER_INTEGRATION),
            topic: text(dl::HEADER_TOPIC),
            partition: number(dl::HEADER_PARTITION).map(|p: i64| p as i32),
            offset: number(dl::HEADER_OFFSET),
            error: text(dl::HEADER_ERROR),
            class: text(dl::HEADER_CLASS),
            stage: text(dl::HEADER_STAGE),
            dead_lettered_ms: number(dl::HEADER_DEAD_LETTERED_AT),
            timestamp_ms: m.timestamp().to_millis(),
            value_omitted: own.get(dl::HEADER_VALUE_OMITTED).cloned(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers,
        }
    }
}

const TIMEOUT: Duration = Duration::from_secs(30);

/// Every dead letter `filter` selects, in topic order per partition.
pub async fn read(config: &Config, filter: &Filter) -> anyhow::Result<Vec<Letter>> {
    let kafka = crate::pipeline::kafka_config(config);
    let topic = config.topics.dead_letter.clone();
    let filter = filter.clone();
    tokio::task::spawn_blocking(move || {
        let consumer = crate::consume::assign_only(&kafka, "policy-push.dead-letters")?;
        let marks = crate::offsets::watermarks(&consumer, &[&topic], TIMEOUT)
            .with_context(|| format!("cannot read the end offsets of {topic}"))?;
        let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
        let mut tpl = TopicPartitionList::new();
        for (tp, (low, high)) in marks {
            if high > low {
                tpl.add_partition_offset(&topic, tp.partition, Offset::Offset(low))?;
                ends.insert(tp.partition, high);
            }
        }
        let mut out = Vec::new();
        if ends.is_empty() {
            return Ok(out);
        }
        consumer.assign(&tpl)?;
        let deadline = Instant::now() + TIMEOUT;
        while !ends.is_empty() {
            if Instant::now() > deadline {
                bail!(
                    "reading {topic} timed out with partitions {:?} unread",
                    ends.keys()
                );
            }
            let Some(m) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let m = m.with_context(|| format!("reading {topic}"))?;
            if ends
                .get(&m.partition())
                .is_some_and(|end| m.offset() + 1 >= *end)
            {
                ends.remove(&m.partition());
            }
            let letter = Letter::from_message(&m);
            if filter.selects(&letter) {
                out.push(letter);
            }
        }
        Ok(out)
    })
    .await
    .context("the dead-letter reader stopped")?
}

/// `dead-letters list`: one line per letter, or one JSON object per line.
pub async fn list(config: &Config, filter: &Filter, json: bool) -> anyhow::Result<usize> {
    let letters = read(config, filter).await?;
    for l in &letters {
        if json {
            println!("{}", serde_json::to_string(l)?);
        } else {
            println!(
                "{}:{}\t{}\t{}\t{}/{}@{}\t{}\t{}",
                l.partition_in_dlq,
                l.offset_in_dlq,
                l.dead_lettered_ms.map_or("-".into(), |t| t.to_string()),
                l.integration,
                l.topic,
                l.partition.map_or("?".into(), |p| p.to_string()),
                l.offset.map_or("?".into(), |o| o.to_string()),
                l.stage,
                l.error
            );
        }
    }
    Ok(letters.len())
}

/// What a redrive did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Redriven {
    pub published: usize,
    /// Selected but not publishable: value omitted, or an origin that is not an input
    /// topic of this configuration.
    pub skipped: usize,
}

/// `dead-letters redrive`: publishes the selected letters to their origin topics.
/// Refuses an empty filter unless `all`, so that a typo does not redrive everything.
pub async fn redrive(
    config: &Config,
    filter: &Filter,
    all: bool,
    dry_run: bool,
) -> anyhow::Result<Redriven> {
    if filter.is_empty() && !all {
        bail!("select dead letters (--integration, --topic, --since, --at) or pass --all");
    }
    let letters = read(config, filter).await?;
    let producer: FutureProducer =
        crate::consume::producer_config(&crate::pipeline::kafka_config(config)).create()?;
    let mut done = Redriven::default();
    for l in &letters {
        let target = match (l.partition, &l.value_omitted) {
            (Some(p), None) if config.topics.kind_of(&l.topic).is_some() => p,
            (_, Some(why)) => {
                println!("{}:{}\tskipped: {why}", l.partition_in_dlq, l.offset_in_dlq);
                done.skipped += 1;
                continue;
            }
            _ => {
                println!(
                    "{}:{}\tskipped: origin {:?} is not an input topic",
                    l.partition_in_dlq, l.offset_in_dlq, l.topic
                );
                done.skipped += 1;
                continue;
            }
        };
        if !dry_run {
            publish(&producer, l, target).await?;
        }
        println!(
            "{}:{}\t{}redriven to {}/{target}",
            l.partition_in_dlq,
            l.offset_in_dlq,
            if dry_run { "would be " } else { "" },
            l.topic
        );
        done.published += 1;
    }
    Ok(done)
}

async fn publish(producer: &FutureProducer, l: &Letter, partition: i32) -> anyhow::Result<()> {
    let mut headers = OwnedHeaders::new();
    for (key, value) in &l.headers {
        headers = headers.insert(Header {
            key: key.as_str(),
            value: value.as_deref(),
        });
    }
    let mut record = FutureRecord::<[u8], [u8]>::to(&l.topic)
        .partition(partition)
        .headers(headers);
    if let Some(k) = &l.key {
        record = record.key(&k[..]);
    }
    if let Some(v) = &l.value {
        record = record.payload(&v[..]);
    }
    producer
        .send(record, TIMEOUT)
        .await
        .map_err(|(e, _)| anyhow::anyhow!("cannot publish to {}/{partition}: {e}", l.topic))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter() -> Letter {
        Letter {
            partition_in_dlq: 0,
            offset_in_dlq: 4,
            integration: "a".into(),
            topic: "t".into(),
            partition: Some(1),
            offset: Some(9),
            error: "bad".into(),
            class: "poison".into(),
            stage: "apply".into(),
            dead_lettered_ms: Some(1000),
            timestamp_ms: Some(5),
            value_omitted: None,
            key: None,
            value: None,
            headers: vec![],
        }
    }

    #[test]
    fn every_criterion_of_a_filter_must_hold() {
        let l = letter();
        assert!(Filter::default().selects(&l));
        let by = |f: Filter| f.selects(&l);
        assert!(by(Filter {
            integration: Some("a".into()),
            ..Default::default()
        }));
        assert!(!by(Filter {
            integration: Some("b".into()),
            ..Default::default()
        }));
        assert!(by(Filter {
            since: Some(1000),
            ..Default::default()
        }));
        assert!(!by(Filter {
            since: Some(1001),
            ..Default::default()
        }));
        assert!(by(Filter {
            at: vec![(0, 4)],
            ..Default::default()
        }));
        assert!(!by(Filter {
            at: vec![(0, 5)],
            topic: Some("t".into()),
            ..Default::default()
        }));
        assert_eq!(parse_at("2:17"), Ok((2, 17)));
        assert!(parse_at("2").is_err() && parse_at("a:1").is_err());
    }
}
