//! `dead-letters redrive`: publishes each selected letter's original key, value and
//! headers again to its origin topic and partition, then a marker to the dead-letter
//! topic saying which letter went where, so that `list` shows it redriven.

use std::time::Duration;

use anyhow::bail;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::letter::{Letter, HEADER_REDRIVEN_TO, HEADER_REDRIVE_OF};
use super::{select, Filter};
use crate::config::Config;
use crate::error::Chain;

const TIMEOUT: Duration = Duration::from_secs(30);

/// What a redrive did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Redriven {
    pub published: usize,
    /// Selected but not publishable: value omitted, or an origin that is not an input
    /// topic of this configuration.
    pub skipped: usize,
}

/// Publishes the selected letters to their origin topics. Refuses an empty filter unless
/// `all`, so that a typo does not redrive everything.
pub async fn redrive(
    config: &Config,
    filter: &Filter,
    all: bool,
    dry_run: bool,
) -> anyhow::Result<Redriven> {
    if filter.is_empty() && !all {
        bail!("select dead letters (--integration, --topic, --since, --at) or pass --all");
    }
    let (scan, letters) = select(config, filter).await?;
    eprintln!("{scan}");
    let producer: FutureProducer =
        crate::consume::producer_config(&crate::pipeline::kafka_config(config)).create()?;
    let mut done = Redriven::default();
    for l in &letters {
        let place = format!("{}:{}", l.partition_in_dlq, l.offset_in_dlq);
        let target = match (l.partition, &l.value_omitted) {
            (Some(p), None) if config.topics.kind_of(&l.topic).is_some() => p,
            (_, Some(why)) => {
                println!("{place}\tskipped: {why}");
                done.skipped += 1;
                continue;
            }
            _ => {
                println!(
                    "{place}\tskipped: origin {:?} is not an input topic",
                    l.topic
                );
                done.skipped += 1;
                continue;
            }
        };
        if dry_run {
            println!("{place}\twould be redriven to {}/{target}", l.topic);
        } else {
            let to = publish(&producer, l, target).await?;
            mark(&producer, &scan.topic, l, &to).await?;
            println!("{place}\tredriven to {to}");
        }
        done.published += 1;
    }
    Ok(done)
}

/// Publishes `l` again to its origin; returns where it went (`TOPIC/PARTITION@OFFSET`).
async fn publish(producer: &FutureProducer, l: &Letter, partition: i32) -> anyhow::Result<String> {
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
    let delivered = producer.send(record, TIMEOUT).await.map_err(|(e, _)| {
        anyhow::anyhow!("cannot publish to {}/{partition}: {}", l.topic, Chain(&e))
    })?;
    Ok(format!(
        "{}/{}@{}",
        l.topic, delivered.partition, delivered.offset
    ))
}

/// The marker of `l`'s redrive, after it in its own partition of the dead-letter topic.
async fn mark(producer: &FutureProducer, topic: &str, l: &Letter, to: &str) -> anyhow::Result<()> {
    let of = format!("{}:{}", l.partition_in_dlq, l.offset_in_dlq);
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: HEADER_REDRIVE_OF,
            value: Some(of.as_str()),
        })
        .insert(Header {
            key: HEADER_REDRIVEN_TO,
            value: Some(to),
        });
    let record = FutureRecord::<[u8], [u8]>::to(topic)
        .partition(l.partition_in_dlq)
        .headers(headers);
    producer.send(record, TIMEOUT).await.map_err(|(e, _)| {
        anyhow::anyhow!(
            "{of} was redriven to {to}, but its marker could not be written to {topic}: {}",
            Chain(&e)
        )
    })?;
    Ok(())
}
