//! A real Kafka protocol implementation for one test: librdkafka's mock cluster, a Tansu
//! broker process, or whatever `KAFKA_BOOTSTRAP` points at; random topics; publishing,
//! and reading the dead-letter topic back.

use std::process::Child;
use std::time::Duration;

use policy_push::config::{Config, Topics};
use policy_push::simulate::{self, Record};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

use super::unique;

/// A Kafka protocol implementation for one test.
pub enum Broker {
    Mock(MockCluster<'static, DefaultProducerContext>),
    Tansu { child: Child, bootstrap: String },
    External(String),
}

fn external() -> Option<String> {
    std::env::var("KAFKA_BOOTSTRAP")
        .ok()
        .filter(|s| !s.is_empty())
}

pub fn tansu_bin() -> std::path::PathBuf {
    super::tansu::find().expect("Tansu")
}

impl Broker {
    pub fn mock() -> Self {
        match external() {
            Some(b) => Broker::External(b),
            None => Broker::Mock(MockCluster::new(3).expect("mock cluster")),
        }
    }

    pub async fn tansu() -> Self {
        if let Some(b) = external() {
            return Broker::External(b);
        }
        let (child, bootstrap) =
            tokio::task::spawn_blocking(|| super::tansu::start(&tansu_bin()).expect("start tansu"))
                .await
                .expect("start tansu");
        Broker::Tansu { child, bootstrap }
    }

    pub fn bootstrap(&self) -> String {
        match self {
            Broker::Mock(m) => m.bootstrap_servers(),
            Broker::Tansu { bootstrap, .. } | Broker::External(bootstrap) => bootstrap.clone(),
        }
    }

    /// Extra client properties this broker needs.
    pub fn kafka_props(&self) -> Vec<(&'static str, &'static str)> {
        match self {
            // Tansu's group join takes about half of session.timeout.ms.
            Broker::Tansu { .. } => vec![
                ("session.timeout.ms", "6000"),
                ("heartbeat.interval.ms", "1000"),
            ],
            _ => vec![],
        }
    }

    pub async fn create_topics(&self, topics: &Topics, partitions: i32) {
        let names = [
            &topics.profiles,
            &topics.data_sources,
            &topics.policies,
            &topics.impersonation,
            &topics.dead_letter,
        ];
        match self {
            Broker::Mock(m) => {
                for n in names {
                    m.create_topic(n, partitions, 1).expect("create topic");
                }
            }
            Broker::Tansu { bootstrap, .. } => {
                let bin = tansu_bin();
                for n in names {
                    let compacted = *n != topics.dead_letter;
                    super::tansu::create_topic(&bin, bootstrap, n, partitions, compacted)
                        .expect("tansu topic create");
                }
            }
            Broker::External(b) => {
                let mut cfg = rdkafka::ClientConfig::new();
                cfg.set("bootstrap.servers", b);
                let list: Vec<(&str, bool)> = names
                    .iter()
                    .map(|n| (n.as_str(), **n != topics.dead_letter))
                    .collect();
                policy_push::consume::admin::ensure_topics(&cfg, &list, partitions)
                    .await
                    .expect("create topics");
            }
        }
    }
}

impl Broker {
    /// A client configuration for this broker alone.
    pub fn client_config(&self) -> rdkafka::ClientConfig {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", self.bootstrap());
        c
    }

    /// Creates the input topics compacted, but `loose` (not compacted), and the
    /// dead-letter topic, through the admin API.
    pub async fn create_topics_compacted_but(&self, topics: &Topics, loose: &str, partitions: i32) {
        let list: Vec<(&str, bool)> = topics
            .inputs()
            .iter()
            .map(|t| (*t, *t != loose))
            .chain(std::iter::once((topics.dead_letter.as_str(), false)))
            .collect();
        policy_push::consume::admin::ensure_topics(&self.client_config(), &list, partitions)
            .await
            .expect("create topics");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Broker::Tansu { child, .. } = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn random_topics() -> Topics {
    let p = unique("t");
    Topics {
        profiles: format!("{p}.profiles"),
        data_sources: format!("{p}.data_sources"),
        policies: format!("{p}.policies"),
        impersonation: format!("{p}.impersonation"),
        dead_letter: format!("{p}.dead_letter"),
    }
}

pub async fn publish(config: &Config, records: &[Record]) {
    let producer =
        simulate::producer(&policy_push::pipeline::kafka_config(config)).expect("producer");
    let codec = policy_push::codec::Codec::embedded().expect("codec");
    simulate::publish(&producer, &config.topics, &codec, records)
        .await
        .expect("publish");
}

/// Publishes values as another producer would write them, byte for byte, each to its
/// kind's topic under its key, and waits for every acknowledgement. Values up to 8 MB
/// are sent (past a broker's usual limit, for oversized records).
pub async fn send_raw<'a>(
    config: &Config,
    records: impl IntoIterator<Item = (policy_push::event::Kind, &'a str, &'a [u8])>,
) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = policy_push::pipeline::kafka_config(config)
        .set("message.max.bytes", "8000000")
        .create()
        .expect("producer");
    for (kind, key, value) in records {
        let record = FutureRecord::to(config.topics.topic(kind))
            .key(key)
            .payload(value);
        producer
            .send(record, Duration::from_secs(10))
            .await
            .expect("send");
    }
}

/// A record read back from the dead-letter topic.
pub struct Letter {
    pub reason: String,
    pub topic: String,
    pub integration: String,
    pub value: Option<Vec<u8>>,
}

/// Reads `want` dead letters from the start of the dead-letter topic (60 s deadline).
pub async fn read_dead_letters(config: &policy_push::Config, want: usize) -> Vec<Letter> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    let mut cfg = policy_push::pipeline::kafka_config(config);
    cfg.set("group.id", unique("dlq-reader"))
        .set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer = cfg.create().unwrap();
    consumer.subscribe(&[&config.topics.dead_letter]).unwrap();
    let dl = config.topics.dead_letter.clone();
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        let start = std::time::Instant::now();
        while out.len() < want {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "only {} dead letters on {dl}",
                out.len()
            );
            let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let header = |name: &str| {
                m.headers()
                    .and_then(|h| {
                        h.iter()
                            .find(|x| x.key == name)
                            .and_then(|x| x.value.map(|v| String::from_utf8_lossy(v).to_string()))
                    })
                    .unwrap_or_default()
            };
            out.push(Letter {
                reason: header("policy_push.error"),
                topic: header("policy_push.topic"),
                integration: header("policy_push.integration"),
                value: m.payload().map(<[u8]>::to_vec),
            });
        }
        out
    })
    .await
    .unwrap()
}
