//! Applying records straight to the warehouse, without Kafka.

use policy_push::config::Config;
use policy_push::simulate::Record;

use super::broker::{random_topics, Broker};
use super::pipeline::{config, HOST};
use super::warehouse::Database;

/// Collects dead letters instead of publishing them.
#[derive(Default)]
pub struct Collect(pub std::sync::Mutex<Vec<policy_push::batch::DeadLetter>>);

impl policy_push::apply::DeadLetterSink for Collect {
    async fn publish(
        &self,
        letters: &[policy_push::batch::DeadLetter],
    ) -> Result<(), policy_push::apply::PublishError> {
        self.0.lock().unwrap().extend_from_slice(letters);
        Ok(())
    }
}

/// A bootstrapped database whose batches are applied by calling the warehouse directly,
/// one partition, offsets counting up.
pub struct Direct {
    pub db: Database,
    pub config: Config,
    pub warehouse: policy_push::apply::Warehouse,
    pub dead: Collect,
    offset: std::sync::atomic::AtomicI64,
}

impl Direct {
    pub async fn new(raw_sql: &str) -> Self {
        Self::with(raw_sql, |_| {}).await
    }

    /// `new`, with the integration's config changed by `edit` before bootstrap.
    pub async fn with(raw_sql: &str, edit: impl FnOnce(&mut Config)) -> Self {
        let mut db = Database::create().await;
        let mut config = config(
            &Broker::External("127.0.0.1:9".into()),
            &random_topics(),
            &mut db,
            "d",
            HOST,
        );
        edit(&mut config);
        let warehouse =
            policy_push::apply::Warehouse::new(&config.integrations[0]).expect("warehouse");
        warehouse.bootstrap().await.expect("bootstrap");
        if !raw_sql.is_empty() {
            db.client()
                .await
                .batch_execute(raw_sql)
                .await
                .expect("raw tables");
        }
        Direct {
            db,
            config,
            warehouse,
            dead: Collect::default(),
            offset: Default::default(),
        }
    }

    pub fn impersonator_role(&self) -> &str {
        &self.config.integrations[0].impersonator_role
    }

    /// A warehouse whose new sessions start with `setting = value` (a database default
    /// set by the superuser), as a server configured that way would give them.
    pub async fn warehouse_with(
        &self,
        setting: &str,
        value: &str,
    ) -> policy_push::apply::Warehouse {
        self.db
            .client()
            .await
            .batch_execute(&format!(
                "ALTER DATABASE {} SET {setting} = {value}",
                self.db.name
            ))
            .await
            .expect("database default");
        policy_push::apply::Warehouse::new(&self.config.integrations[0]).expect("warehouse")
    }

    /// The offset the next `batch` starts at.
    pub fn next_offset(&self) -> i64 {
        self.offset.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The batch these records make, starting at the next offset.
    pub fn batch(&self, records: &[Record]) -> policy_push::batch::Batch {
        use std::sync::atomic::Ordering;
        let start = self
            .offset
            .fetch_add(records.len() as i64, Ordering::SeqCst);
        self.batch_at(records, start, (start > 0).then_some(start))
    }

    /// The batch these records make at offsets from `start`, expecting the stored
    /// offset `expected` (None: no offsets row yet), as a re-read would make it.
    pub fn batch_at(
        &self,
        records: &[Record],
        start: i64,
        expected: Option<i64>,
    ) -> policy_push::batch::Batch {
        use policy_push::batch::{Body, Item, Raw, TopicPartition};
        let tp = TopicPartition {
            topic: std::sync::Arc::from("t"),
            partition: 0,
        };
        let mut b = policy_push::batch::Batch::default();
        for (i, r) in records.iter().enumerate() {
            let raw = Raw {
                key: Some(r.key.clone().into_bytes().into()),
                value: Some(Box::from(&[0u8][..])),
                meta: None,
            };
            let body = match &r.value {
                Some(e) => Body::Upsert(e.clone(), raw),
                None => Body::Delete {
                    kind: r.kind,
                    key: r.key.clone(),
                    raw,
                },
            };
            let item = Item {
                tp: tp.clone(),
                generation: 1,
                offset: start + i as i64,
                timestamp_ms: None,
                size: 1,
                body,
            };
            b.push(item, expected);
        }
        b
    }

    pub async fn apply(&self, records: &[Record]) -> policy_push::apply::Applied {
        self.warehouse
            .apply("direct", &self.batch(records), &self.dead)
            .await
            .expect("apply")
    }
}
