//! A realistic workload (SPEC §6 `simulate`): N users, M data sources with raw tables to
//! match, P policies, then a stream of changes where a few hot users take most of the
//! updates. Deterministic for a seed, so tests, the demo and benchmarks can rebuild the
//! expected state from the same records.

use crate::event::{Event, Kind, Status};

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use crate::codec::Codec;
use crate::config::Topics;

mod generate;
use generate::Gen;

#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error("Kafka")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("warehouse")]
    Db(#[from] tokio_postgres::Error),
    #[error("encode")]
    Codec(#[from] crate::codec::CodecError),
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub users: usize,
    pub data_sources: usize,
    pub policies: usize,
    pub changes: usize,
    /// Share of changes that go to the hot users (0.0 to 1.0).
    pub hot_share: f64,
    /// How many users are hot.
    pub hot_users: usize,
    pub seed: u64,
    pub host: String,
    pub database: String,
    /// Schema of the raw tables.
    pub raw_schema: String,
    pub rows_per_table: usize,
    /// Emit impersonation grants (the users need login roles for them to apply).
    pub impersonation: bool,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            users: 1000,
            data_sources: 20,
            policies: 10,
            changes: 10_000,
            hot_share: 0.8,
            hot_users: 10,
            seed: 42,
            host: "127.0.0.1".into(),
            database: "immuta".into(),
            raw_schema: "sim_raw".into(),
            rows_per_table: 50,
            impersonation: false,
        }
    }
}

/// One record to publish: a value, or a tombstone when `value` is None.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub kind: Kind,
    pub key: String,
    pub value: Option<Event>,
}

pub fn user_name(i: usize) -> String {
    format!("sim_user_{i:06}")
}

pub fn ds_id(i: usize) -> String {
    format!("sim-ds-{i:04}")
}

pub fn table_name(i: usize) -> String {
    format!("sim_t{i:04}")
}

/// The full workload: initial state, then the change stream.
pub fn workload(spec: &Spec) -> Vec<Record> {
    let mut g = Gen::new(spec);
    let mut out = Vec::with_capacity(spec.users + spec.data_sources + spec.policies + spec.changes);
    out.extend((0..spec.data_sources).map(|i| g.data_source(i, Status::Active)));
    out.extend((0..spec.policies).map(|i| g.policy(i, Status::Active)));
    out.extend((0..spec.users).map(|i| g.profile(i)));
    out.extend((0..spec.changes).map(|_| g.change()));
    out
}

/// Profile changes only: `per_user` versions of each of `spec.users` users, each round
/// in a shuffled order, so every entity changes `per_user` times across the stream (the
/// load harness's backlog; `per_user = 1` gives all-unique keys). Made as it is read: a
/// stream of any length holds only the users' order and versions.
pub fn profile_stream(spec: &Spec, per_user: usize) -> ProfileStream {
    ProfileStream {
        g: Gen::new(spec),
        order: (0..spec.users).collect(),
        at: spec.users,
        rounds_left: per_user,
    }
}

/// The records of [`profile_stream`].
pub struct ProfileStream {
    g: Gen,
    order: Vec<usize>,
    /// The next position in `order`; at its end, the next round is shuffled.
    at: usize,
    rounds_left: usize,
}

impl Iterator for ProfileStream {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        if self.at == self.order.len() {
            if self.rounds_left == 0 || self.order.is_empty() {
                return None;
            }
            self.rounds_left -= 1;
            self.g.rng.shuffle(&mut self.order);
            self.at = 0;
        }
        let i = self.order[self.at];
        self.at += 1;
        Some(self.g.profile(i))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.rounds_left * self.order.len() + (self.order.len() - self.at);
        (left, Some(left))
    }
}

impl ExactSizeIterator for ProfileStream {}

/// The state the warehouse must end in: the newest value per entity (None: deleted).
pub fn expected_state(records: &[Record]) -> BTreeMap<(Kind, String), Option<Event>> {
    let mut state: BTreeMap<(Kind, String), Option<Event>> = BTreeMap::new();
    for r in records {
        let slot = state.entry((r.kind, r.key.clone())).or_insert(None);
        match (&r.value, slot.as_ref()) {
            (None, _) => *slot = None,
            (Some(v), Some(old)) if old.version() >= v.version() => {}
            (Some(v), _) => *slot = Some(v.clone()),
        }
    }
    state
}

/// Creates the raw tables the simulated data sources point at, with rows, if missing.
pub async fn create_raw_tables(
    client: &tokio_postgres::Client,
    spec: &Spec,
) -> Result<(), SimulateError> {
    let schema = crate::apply::sql::quote::ident(&spec.raw_schema);
    client
        .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
        .await?;
    // A few hundred tables per statement list (one implicit transaction each): one
    // commit per table takes minutes for thousands, one for all runs out of locks.
    let tables: Vec<usize> = (0..spec.data_sources).collect();
    for chunk in tables.chunks(200) {
        let mut sql = String::new();
        for i in chunk {
            let table = format!(
                "{schema}.{}",
                crate::apply::sql::quote::ident(&table_name(*i))
            );
            sql += &format!(
                "CREATE TABLE IF NOT EXISTS {table} (id integer PRIMARY KEY, email text, region text, department text, amount numeric);\n\
                 INSERT INTO {table} SELECT g, 'user' || g || '@example.com', (ARRAY['eu','us','apac'])[1 + g % 3], \
                 (ARRAY['sales','finance','eng'])[1 + g % 3], g * 10.5 FROM generate_series(1, {}) AS g ON CONFLICT DO NOTHING;\n",
                spec.rows_per_table
            );
        }
        client.batch_execute(&sql).await?;
    }
    Ok(())
}

/// A producer tuned for bulk publishing.
pub fn producer(kafka: &ClientConfig) -> Result<FutureProducer, SimulateError> {
    let mut cfg = crate::consume::producer_config(kafka);
    for (k, v) in [
        ("linger.ms", "5"),
        ("batch.num.messages", "10000"),
        ("queue.buffering.max.messages", "1000000"),
    ] {
        if cfg.get(k).is_none() {
            cfg.set(k, v);
        }
    }
    Ok(cfg.create()?)
}

/// The offset after the last record published to each partition.
pub type Ends = BTreeMap<crate::record::TopicPartition, i64>;

/// Publishes records in order (per key order is what matters: keys map to partitions).
/// Returns where each partition's published records end, as the broker acknowledged them
/// (more trustworthy than a broker's reported end offsets).
pub async fn publish(
    producer: &FutureProducer,
    topics: &Topics,
    codec: &Codec,
    records: &[Record],
) -> Result<Ends, SimulateError> {
    publish_stream(producer, topics, codec, records, |_| {}).await
}

/// [`publish`] for records made as they are read: at most a window of them is held,
/// encoded and in flight, at a time. `progress` is told how many are acknowledged after
/// each window.
pub async fn publish_stream<R: Borrow<Record>>(
    producer: &FutureProducer,
    topics: &Topics,
    codec: &Codec,
    records: impl IntoIterator<Item = R>,
    mut progress: impl FnMut(usize),
) -> Result<Ends, SimulateError> {
    const WINDOW: usize = 20_000;
    let mut ends = Ends::new();
    let mut records = records.into_iter();
    let mut done = 0;
    loop {
        let chunk: Vec<R> = records.by_ref().take(WINDOW).collect();
        if chunk.is_empty() {
            return Ok(ends);
        }
        let payloads: Vec<Option<Vec<u8>>> = chunk
            .iter()
            .map(|r| {
                r.borrow()
                    .value
                    .as_ref()
                    .map(|v| codec.encode(v))
                    .transpose()
            })
            .collect::<Result<_, _>>()?;
        let sends = chunk.iter().zip(&payloads).map(|(r, payload)| {
            let r = r.borrow();
            let mut rec = FutureRecord::<str, [u8]>::to(topics.topic(r.kind)).key(r.key.as_str());
            if let Some(p) = payload {
                rec = rec.payload(p.as_slice());
            }
            producer.send(rec, Duration::from_secs(60))
        });
        for (r, result) in chunk.iter().zip(futures::future::join_all(sends).await) {
            let delivered = result.map_err(|(e, _)| e)?;
            note_end(&mut ends, topics.topic(r.borrow().kind), &delivered);
        }
        done += chunk.len();
        progress(done);
    }
}

/// Records an acknowledged delivery in `ends`.
pub fn note_end(
    ends: &mut Ends,
    topic: &str,
    delivered: &rdkafka::producer::future_producer::Delivery,
) {
    let end = ends
        .entry(crate::record::TopicPartition::new(
            topic,
            delivered.partition,
        ))
        .or_insert(0);
    *end = (*end).max(delivered.offset + 1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{validate, Scope};

    #[test]
    fn a_profile_stream_changes_every_user_once_a_round_in_version_order() {
        let spec = Spec {
            users: 50,
            ..Spec::default()
        };
        let stream = profile_stream(&spec, 3);
        assert_eq!(stream.len(), 150);
        let records: Vec<Record> = stream.collect();
        assert_eq!(records.len(), 150);
        let mut seen: BTreeMap<String, i64> = BTreeMap::new();
        for (n, r) in records.iter().enumerate() {
            let version = r.value.as_ref().map(Event::version);
            let last = seen.entry(r.key.clone()).or_insert(0);
            assert_eq!(version, Some(*last + 1), "{}", r.key);
            *last += 1;
            assert_eq!(
                *last as usize,
                n / 50 + 1,
                "one version of each user per round"
            );
        }
        assert_eq!(records, profile_stream(&spec, 3).collect::<Vec<_>>());
    }

    #[test]
    fn workload_is_deterministic_valid_and_hot() {
        let spec = Spec {
            users: 200,
            changes: 2000,
            ..Spec::default()
        };
        let a = workload(&spec);
        assert_eq!(a, workload(&spec));
        let scope = Scope {
            database: &spec.database,
            view_schema: "immuta",
        };
        for r in &a {
            if let Some(v) = &r.value {
                validate(v.clone(), &r.key, &scope).unwrap_or_else(|e| panic!("{r:?}: {e}"));
            }
        }
        let hot: usize = a
            .iter()
            .filter(|r| r.kind == Kind::Profile && r.key < user_name(spec.hot_users))
            .count();
        assert!(hot > 1000, "hot users should take most changes, got {hot}");
        let state = expected_state(&a);
        assert!(
            state.values().any(Option::is_none),
            "some profiles are deleted"
        );
    }
}
