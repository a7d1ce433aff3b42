//! Reading the whole dead-letter topic, to its true end.
//!
//! The end offsets a broker reports are where reading starts to be done, not where it
//! is: some brokers report the high watermark of a partition as the first offset of its
//! last batch plus one (Tansu), and records of that batch lie past it. So each partition
//! is read until it reaches the reported end *and* librdkafka says it has no more
//! (`enable.partition.eof`), and the scan says how far it read.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::letter::{Entry, Letter};
use crate::config::Config;

const TIMEOUT: Duration = Duration::from_secs(30);
/// How long the read may go without a record or an end of partition before it gives up:
/// a large topic takes as long as it takes, a broker that stops answering does not.
const QUIET: Duration = Duration::from_secs(30);

/// Everything the dead-letter topic holds, with each letter's last redrive.
pub struct Scan {
    pub topic: String,
    pub letters: Vec<Letter>,
    /// How far each partition was read.
    pub extents: Vec<Extent>,
    /// Where the redrive markers are (`PARTITION`, `OFFSET`).
    pub markers: std::collections::BTreeSet<(i32, i64)>,
}

/// One partition of the dead-letter topic as read: offsets `from..to`, and the end the
/// broker reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub partition: i32,
    pub from: i64,
    pub to: i64,
    pub reported_end: i64,
}

impl fmt::Display for Scan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "read {}", self.topic)?;
        if self.extents.is_empty() {
            return f.write_str(": every partition is empty");
        }
        for (i, e) in self.extents.iter().enumerate() {
            let sep = if i == 0 { ": " } else { ", " };
            write!(
                f,
                "{sep}partition {} offsets {}..{}",
                e.partition, e.from, e.to
            )?;
            if e.reported_end != e.to {
                write!(f, " (the broker reported its end as {})", e.reported_end)?;
            }
        }
        Ok(())
    }
}

impl Scan {
    /// Whether `at` (`PARTITION:OFFSET`) was read; where not, why.
    pub fn missing(&self, at: (i32, i64)) -> Option<String> {
        let (partition, offset) = at;
        if self
            .letters
            .iter()
            .any(|l| (l.partition_in_dlq, l.offset_in_dlq) == at)
        {
            return None;
        }
        Some(match self.markers.contains(&at) {
            true => format!(
                "{partition}:{offset} of {} is not a dead letter but a redrive's marker",
                self.topic
            ),
            false => format!(
                "no dead letter at {partition}:{offset} of {}: {self}",
                self.topic
            ),
        })
    }
}

/// Reads the whole dead-letter topic of `config`.
pub async fn scan(config: &Config) -> anyhow::Result<Scan> {
    let mut kafka = crate::pipeline::kafka_config(config);
    kafka.set("enable.partition.eof", "true");
    let topic = config.topics.dead_letter.clone();
    tokio::task::spawn_blocking(move || {
        let consumer = crate::consume::assign_only(&kafka, "policy-push.dead-letters")?;
        let marks = crate::offsets::watermarks(&consumer, &[&topic], TIMEOUT)
            .with_context(|| format!("cannot read the end offsets of {topic}"))?;
        let mut reading = BTreeMap::new();
        let mut tpl = TopicPartitionList::new();
        for (tp, (low, high)) in marks {
            if high > low {
                tpl.add_partition_offset(&topic, tp.partition, Offset::Offset(low))?;
                reading.insert(tp.partition, Reading::new(low, high));
            }
        }
        let mut entries = Vec::new();
        if !reading.is_empty() {
            consumer.assign(&tpl)?;
            read_to_the_end(&consumer, &topic, &mut reading, &mut entries)?;
        }
        Ok(assemble(topic, reading, entries))
    })
    .await
    .context("the dead-letter reader stopped")?
}

/// One partition being read.
struct Reading {
    from: i64,
    next: i64,
    reported_end: i64,
    done: bool,
}

impl Reading {
    fn new(from: i64, reported_end: i64) -> Self {
        Reading {
            from,
            next: from,
            reported_end,
            done: false,
        }
    }
}

fn read_to_the_end(
    consumer: &BaseConsumer,
    topic: &str,
    reading: &mut BTreeMap<i32, Reading>,
    entries: &mut Vec<Entry>,
) -> anyhow::Result<()> {
    let mut last_heard = Instant::now();
    while reading.values().any(|r| !r.done) {
        if last_heard.elapsed() > QUIET {
            let unread: Vec<_> = reading
                .iter()
                .filter(|(_, r)| !r.done)
                .map(|(p, _)| p)
                .collect();
            bail!("reading {topic}: nothing arrived for {QUIET:?}, with partitions {unread:?} not read to their end");
        }
        let polled = consumer.poll(Duration::from_millis(200));
        if polled.is_some() {
            last_heard = Instant::now();
        }
        match polled {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                // The position, not the last record: it is past transaction markers,
                // which count in the end offset but are never delivered.
                let position = consumer.position().ok().and_then(|tpl| {
                    tpl.find_partition(topic, p)
                        .and_then(|e| e.offset().to_raw())
                });
                if let Some(r) = reading.get_mut(&p) {
                    r.next = r.next.max(position.unwrap_or(r.next));
                    r.done = r.next >= r.reported_end;
                }
            }
            Some(Err(e)) => return Err(e).with_context(|| format!("reading {topic}")),
            Some(Ok(m)) => {
                if let Some(r) = reading.get_mut(&m.partition()) {
                    r.next = r.next.max(m.offset() + 1);
                }
                entries.push(Entry::from_message(&m));
            }
        }
    }
    Ok(())
}

/// The letters in topic order per partition, each with its last redrive.
fn assemble(topic: String, reading: BTreeMap<i32, Reading>, entries: Vec<Entry>) -> Scan {
    let mut letters = Vec::new();
    let mut redrives = BTreeMap::new();
    let mut markers = std::collections::BTreeSet::new();
    for entry in entries {
        match entry {
            Entry::Letter(l) => letters.push(*l),
            Entry::Marker(at, m) => {
                markers.insert(at);
                redrives.insert(m.of, m);
            }
        }
    }
    for l in &mut letters {
        l.redriven = redrives.remove(&(l.partition_in_dlq, l.offset_in_dlq));
    }
    let extents = reading
        .into_iter()
        .map(|(partition, r)| Extent {
            partition,
            from: r.from,
            to: r.next,
            reported_end: r.reported_end,
        })
        .collect();
    Scan {
        topic,
        letters,
        extents,
        markers,
    }
}
