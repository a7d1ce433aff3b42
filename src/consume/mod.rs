//! Kafka consumption for one integration (SPEC §5).
//!
//! A dedicated thread owns the consumer's poll loop. That lets the rebalance callback
//! block: on assignment it reads the stored offsets from the warehouse and assigns each
//! partition at its stored `next_offset` (the beginning when there is none: the warehouse,
//! not Kafka, is the source of truth); on revocation it waits until the applier has
//! committed or dropped the batch in flight. Decoded records go to the applier over a
//! bounded channel; when it stays full the thread pauses its partitions and keeps polling
//! (so the group membership stays alive) instead of buffering more.

pub mod admin;
pub mod check;
pub mod dead_letter;
pub mod partitions;
pub mod route;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the consumer thread waits for room in the channel before it pauses its
/// partitions. A full channel for a moment is the normal rhythm of batching (the applier
/// is committing); pausing each time would stop and restart fetching for every batch,
/// which measured at about a third of the throughput. Longer than this, the applier is
/// stuck (warehouse down) and the partitions are paused while polling goes on.
const WAIT_BEFORE_PAUSE: Duration = Duration::from_millis(500);

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub mod store;
use crate::record::{Item, TopicPartition};
use crate::telemetry::{self, Health};
pub use partitions::Partitions;
pub use store::{OffsetStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error("Kafka client error: {0}")]
    Kafka(#[from] KafkaError),
    #[error("cannot start the consumer thread: {0}")]
    Thread(#[from] std::io::Error),
}

impl crate::error::Classify for ConsumeError {
    fn class(&self) -> crate::error::Class {
        match self {
            ConsumeError::Kafka(KafkaError::ClientCreation(_)) | ConsumeError::Thread(_) => {
                crate::error::Class::Fatal
            }
            ConsumeError::Kafka(_) => crate::error::Class::Retryable,
        }
    }
}

/// Routes librdkafka's own logs into `tracing`, tagged with the integration.
pub struct LogContext {
    integration: String,
}

impl LogContext {
    pub fn new(integration: &str) -> Self {
        LogContext {
            integration: integration.into(),
        }
    }
}

/// The target librdkafka's lines are logged under, so that `RUST_LOG=librdkafka=debug`
/// (with `kafka.debug` set, e.g. `POLICY_PUSH_KAFKA_DEBUG=fetch`) shows them and the
/// default filter's `librdkafka=warn` quiets them.
pub const LOG_TARGET: &str = "librdkafka";

fn log_kafka(integration: &str, level: RDKafkaLogLevel, fac: &str, msg: &str) {
    use RDKafkaLogLevel::*;
    match level {
        Emerg | Alert | Critical | Error => {
            tracing::error!(target: LOG_TARGET, integration, facility = fac, "librdkafka: {msg}")
        }
        Warning => {
            tracing::warn!(target: LOG_TARGET, integration, facility = fac, "librdkafka: {msg}")
        }
        Notice | Info => {
            tracing::info!(target: LOG_TARGET, integration, facility = fac, "librdkafka: {msg}")
        }
        Debug => {
            tracing::debug!(target: LOG_TARGET, integration, facility = fac, "librdkafka: {msg}")
        }
    }
}

fn kafka_error(integration: &str, error: &rdkafka::error::KafkaError, reason: &str) {
    tracing::error!(target: LOG_TARGET, integration, "librdkafka: {error}: {reason}");
}

/// The most verbose level the tracing filter lets through for [`LOG_TARGET`]. librdkafka
/// drops lines above its `log_level` before they reach us, and rdkafka derives that level
/// from the `log` crate, which has no logger here: without this, every client logged
/// errors only, and its debug output could not be switched on.
pub fn log_level() -> RDKafkaLogLevel {
    use tracing::Level;
    if tracing::enabled!(target: LOG_TARGET, Level::DEBUG) {
        RDKafkaLogLevel::Debug
    } else if tracing::enabled!(target: LOG_TARGET, Level::INFO) {
        RDKafkaLogLevel::Info
    } else if tracing::enabled!(target: LOG_TARGET, Level::WARN) {
        RDKafkaLogLevel::Warning
    } else {
        RDKafkaLogLevel::Error
    }
}

/// librdkafka properties that only a consumer reads (scope "C" in librdkafka's
/// CONFIGURATION.md). `[kafka]` is shared by every client, and a producer or admin client
/// given one of these logs a CONFWARN warning at start for each, which an operator would
/// have to learn to ignore.
const CONSUMER_ONLY: &[&str] = &[
    "group.id",
    "group.instance.id",
    "group.protocol",
    "group.protocol.type",
    "group.remote.assignor",
    "partition.assignment.strategy",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "coordinator.query.interval.ms",
    "max.poll.interval.ms",
    "enable.auto.commit",
    "auto.commit.enable",
    "auto.commit.interval.ms",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "queued.min.messages",
    "queued.max.messages.kbytes",
    "fetch.wait.max.ms",
    "fetch.queue.backoff.ms",
    "fetch.message.max.bytes",
    "max.partition.fetch.bytes",
    "fetch.max.bytes",
    "fetch.min.bytes",
    "fetch.error.backoff.ms",
    "offset.store.method",
    "offset.store.path",
    "offset.store.sync.interval.ms",
    "isolation.level",
    "enable.partition.eof",
    "check.crcs",
    "consume.callback.max.messages",
];

/// `kafka` without the consumer-only properties, for producers and admin clients.
pub fn producer_config(kafka: &ClientConfig) -> ClientConfig {
    let mut cfg = kafka.clone();
    for key in CONSUMER_ONLY {
        cfg.remove(key);
    }
    cfg
}

impl ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_kafka(&self.integration, level, fac, log_message);
    }
    /// rdkafka's default sends these to the `log` crate, which has no logger here.
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        kafka_error(&self.integration, &error, reason);
    }
}

/// Sent by the consumer thread to the applier, out of band from the records.
#[derive(Debug)]
pub enum Control {
    /// These partitions are being taken away: commit or drop the batch in flight, then
    /// reply. They are released only after the reply.
    Revoke {
        partitions: Vec<TopicPartition>,
        done: oneshot::Sender<()>,
    },
}

/// The consumer's context: runs the rebalance protocol against the warehouse.
pub struct Ctx {
    integration: String,
    group: String,
    warehouse: Arc<dyn OffsetStore>,
    runtime: tokio::runtime::Handle,
    partitions: Partitions,
    /// One per applier lane; every lane hears of every revocation.
    control: Vec<mpsc::Sender<Control>>,
    stop: CancellationToken,
    health: Health,
    assignment_changed: AtomicBool,
    topics: std::sync::Mutex<HashMap<String, Arc<str>>>,
}

impl Ctx {
    fn intern(&self, topic: &str) -> Arc<str> {
        let mut t = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        t.entry(topic.to_string())
            .or_insert_with(|| Arc::from(topic))
            .clone()
    }

    /// Stored offsets, retried until the warehouse answers or the pipeline stops.
    fn stored_offsets(&self) -> Option<HashMap<(String, i32), i64>> {
        let mut attempt = 0;
        loop {
            match self
                .runtime
                .block_on(self.warehouse.load_offsets(&self.group))
            {
                Ok(o) => {
                    self.health.reachable(&self.integration);
                    return Some(o);
                }
                Err(e) => {
                    self.health
                        .failing(&self.integration, &e.to_string(), e.hint);
                    attempt += 1;
                    let delay = telemetry::backoff(attempt, Duration::from_secs(10));
                    tracing::warn!(integration = %self.integration, error = %e, ?delay, "cannot read stored offsets; retrying");
                    if self.sleep_unless_stopped(delay) {
                        return None;
                    }
                }
            }
        }
    }

    /// Sleeps on this (non-runtime) thread; true if the pipeline stopped meanwhile. Plain
    /// sleeps, not runtime timers, so a runtime that is shutting down cannot panic here.
    fn sleep_unless_stopped(&self, delay: Duration) -> bool {
        let until = std::time::Instant::now() + delay;
        while std::time::Instant::now() < until {
            if self.stop.is_cancelled() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop.is_cancelled()
    }

    fn on_assign(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let tps: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        let stored = self.stored_offsets();
        for (topic, partition) in &tps {
            let tp = TopicPartition {
                topic: self.intern(topic),
                partition: *partition,
            };
            let expected = stored
                .as_ref()
                .and_then(|s| s.get(&(topic.clone(), *partition)).copied());
            let offset = expected.map_or(Offset::Beginning, Offset::Offset);
            if let Err(e) = tpl.set_partition_offset(topic, *partition, offset) {
                tracing::error!(integration = %self.integration, %topic, partition, error = %e, "cannot set assignment offset");
            }
            // Without stored offsets (shutting down) the partition is assigned but not
            // registered, so nothing fetched from it is applied.
            if stored.is_some() {
                self.partitions.assign(tp, expected);
            }
            tracing::debug!(integration = %self.integration, %topic, partition, ?expected, "partition assigned");
        }
        tracing::info!(integration = %self.integration, partitions = tps.len(), "partitions assigned at stored offsets");
        let result = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_assign(tpl),
            _ => consumer.assign(tpl),
        };
        if let Err(e) = result {
            tracing::error!(integration = %self.integration, error = %e, "assign failed");
        }
        metrics::counter!(telemetry::names::REBALANCES, "integration" => self.integration.clone(), "kind" => "assign").increment(1);
    }

    fn on_revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let revoked: Vec<TopicPartition> = tpl
            .elements()
            .iter()
            .map(|e| TopicPartition {
                topic: self.intern(e.topic()),
                partition: e.partition(),
            })
            .collect();
        for tp in &revoked {
            self.partitions.revoke(tp);
        }
        // Only the consumer thread may block here; a close that runs elsewhere (the last
        // handle dropped on a runtime thread) must not wait for the appliers.
        let on_runtime = tokio::runtime::Handle::try_current().is_ok();
        if !on_runtime {
            let waits: Vec<_> = self
                .control
                .iter()
                .filter_map(|lane| {
                    let (done, wait) = oneshot::channel();
                    let revoke = Control::Revoke {
                        partitions: revoked.clone(),
                        done,
                    };
                    lane.blocking_send(revoke).is_ok().then_some(wait)
                })
                .collect();
            // An applier always answers: it commits once or drops the batch. A lane that
            // has stopped drops the request, which also ends the wait.
            for wait in waits {
                let _ = wait.blocking_recv();
            }
        }
        let result = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_unassign(tpl),
            _ => consumer.unassign(),
        };
        if let Err(e) = result {
            tracing::error!(integration = %self.integration, error = %e, "unassign failed");
        }
        tracing::info!(integration = %self.integration, partitions = revoked.len(), "partitions revoked");
        metrics::counter!(telemetry::names::REBALANCES, "integration" => self.integration.clone(), "kind" => "revoke").increment(1);
    }
}

impl ClientContext for Ctx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_kafka(&self.integration, level, fac, log_message);
    }
    /// rdkafka's default sends these to the `log` crate, which has no logger here.
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        kafka_error(&self.integration, &error, reason);
    }
}

impl ConsumerContext for Ctx {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        self.assignment_changed.store(true, Ordering::SeqCst);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.on_assign(consumer, tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => self.on_revoke(consumer, tpl),
            other => {
                tracing::error!(integration = %self.integration, error = ?other, "rebalance error; dropping assignment");
                let snapshot = tpl.clone();
                self.on_revoke(consumer, &snapshot);
            }
        }
    }
}

pub type KafkaConsumer = BaseConsumer<Ctx>;

/// Everything the consumer thread needs.
pub struct Spawn {
    pub integration: String,
    pub group: String,
    pub kafka: ClientConfig,
    pub topics: Vec<String>,
    /// Partitions to assign directly instead of subscribing to `topics` as a group member.
    pub assign: Option<Vec<(String, i32)>>,
    pub warehouse: Arc<dyn OffsetStore>,
    pub partitions: Partitions,
    pub control: Vec<mpsc::Sender<Control>>,
    pub lanes: Lanes,
    pub router: route::Router,
    pub stop: CancellationToken,
    pub health: Health,
    /// Set while the thread has paused its partitions because the applier is behind.
    pub paused: Arc<std::sync::atomic::AtomicBool>,
}

/// Creates the consumer, subscribes, and starts its thread. The returned consumer is
/// shared with the applier, which commits offsets to Kafka through it.
pub fn spawn(s: Spawn) -> Result<(Arc<KafkaConsumer>, std::thread::JoinHandle<()>), ConsumeError> {
    let ctx = Ctx {
        integration: s.integration.clone(),
        group: s.group.clone(),
        warehouse: s.warehouse,
        runtime: tokio::runtime::Handle::current(),
        partitions: s.partitions.clone(),
        control: s.control,
        stop: s.stop.clone(),
        health: s.health,
        assignment_changed: AtomicBool::new(false),
        topics: Default::default(),
    };
    let mut cfg = s.kafka;
    cfg.set("group.id", &s.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    for (key, default) in [
        ("auto.offset.reset", "earliest"),
        ("queued.max.messages.kbytes", "16384"),
        // Brokers that do not answer a fetch as soon as data arrives (librdkafka's mock
        // cluster, some Kafka-compatible servers) otherwise add up to 500 ms of latency;
        // on Apache Kafka it only bounds how long an idle fetch waits.
        ("fetch.wait.max.ms", "50"),
    ] {
        if cfg.get(key).is_none() {
            cfg.set(key, default);
        }
    }
    let consumer: KafkaConsumer = cfg.create_with_context(ctx)?;
    if s.assign.is_none() {
        let topics: Vec<&str> = s.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
    }
    let consumer = Arc::new(consumer);
    let thread_consumer = consumer.clone();
    let consumed = metrics::counter!(telemetry::names::RECORDS_CONSUMED, "integration" => s.integration.clone());
    let fetch_delay =
        metrics::histogram!(telemetry::names::FETCH_DELAY, "integration" => s.integration.clone());
    let loop_state = PollLoop {
        consumed,
        fetch_delay,
        consumer: thread_consumer,
        lanes: s.lanes,
        router: s.router,
        partitions: s.partitions,
        stop: s.stop,
        paused: s.paused,
        assign: s.assign,
    };
    let handle = std::thread::Builder::new()
        .name(format!("consume-{}", s.integration))
        .spawn(move || loop_state.run())?;
    Ok((consumer, handle))
}

/// The appliers' channels. Profile partitions are spread over the lanes (a partition
/// always to the same one, so its records stay in order and its offsets have one writer);
/// everything else goes to lane 0, because view rebuilds must not run concurrently.
pub struct Lanes {
    pub data: Vec<mpsc::Sender<Item>>,
    pub profiles_topic: String,
}

impl Lanes {
    pub fn lane(&self, tp: &TopicPartition) -> usize {
        let lanes = self.data.len();
        if lanes > 1 && *tp.topic == *self.profiles_topic {
            tp.partition.unsigned_abs() as usize % lanes
        } else {
            0
        }
    }
}

struct PollLoop {
    consumer: Arc<KafkaConsumer>,
    lanes: Lanes,
    router: route::Router,
    partitions: Partitions,
    stop: CancellationToken,
    paused: Arc<std::sync::atomic::AtomicBool>,
    /// Looked up once: a labelled lookup per message is measurable at high rates.
    consumed: metrics::Counter,
    fetch_delay: metrics::Histogram,
    /// Partitions to assign at start instead of a group subscription.
    assign: Option<Vec<(String, i32)>>,
}

impl PollLoop {
    fn run(self) {
        let mut stash: VecDeque<Item> = VecDeque::new();
        let mut paused = false;
        let integration = self.consumer.context().integration.clone();
        let _span = tracing::info_span!("consume", integration = %integration).entered();
        if let Some(partitions) = &self.assign {
            // Without group membership the rebalance callback never runs; the assignment
            // takes its path (stored offsets, registration) here, on this thread, because
            // reading the offsets blocks.
            let mut tpl = TopicPartitionList::new();
            for (topic, partition) in partitions {
                tpl.add_partition(topic, *partition);
            }
            self.consumer.context().on_assign(&self.consumer, &mut tpl);
        }
        while !self.stop.is_cancelled() {
            self.rewind();
            if !self.deliver(&mut stash, !paused) {
                break;
            }
            let changed = self
                .consumer
                .context()
                .assignment_changed
                .swap(false, Ordering::SeqCst);
            let want_pause = !stash.is_empty();
            if want_pause != paused || (changed && paused) {
                self.set_paused(want_pause);
                paused = want_pause;
            }
            let timeout = Duration::from_millis(if paused { 20 } else { 100 });
            match self.consumer.poll(timeout) {
                None => {}
                Some(Err(e)) => {
                    tracing::warn!(%integration, error = %e, "Kafka consumer error");
                    metrics::counter!(telemetry::names::KAFKA_ERRORS, "integration" => integration.clone()).increment(1);
                }
                Some(Ok(msg)) => {
                    if let Some(item) = self.item(&msg) {
                        stash.push_back(item);
                    }
                }
            }
        }
        // Revokes during close find the applier gone; that is fine, it has already
        // committed or dropped its last batch.
        self.consumer.unsubscribe();
        tracing::info!(%integration, "consumer stopped");
    }

    /// Hands stashed items to the applier; false once the applier is gone. Unless
    /// already paused, waits up to `WAIT_BEFORE_PAUSE` for room first.
    fn deliver(&self, stash: &mut VecDeque<Item>, may_wait: bool) -> bool {
        let mut give_up = None;
        while let Some(item) = stash.pop_front() {
            match self.lanes.data[self.lanes.lane(&item.tp)].try_send(item) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(item)) => {
                    stash.push_front(item);
                    let until = *give_up.get_or_insert_with(|| Instant::now() + WAIT_BEFORE_PAUSE);
                    if !may_wait || Instant::now() >= until || self.stop.is_cancelled() {
                        return true;
                    }
                    // A plain sleep, not a runtime timer (see `sleep_unless_stopped`).
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
            }
        }
        true
    }

    fn item(&self, msg: &rdkafka::message::BorrowedMessage<'_>) -> Option<Item> {
        let ctx = self.consumer.context();
        let tp = TopicPartition {
            topic: ctx.intern(msg.topic()),
            partition: msg.partition(),
        };
        let generation = self.partitions.tag(&tp)?;
        let stop = || self.stop.is_cancelled();
        let body = self
            .router
            .route(msg.topic(), msg.key(), msg.payload(), &stop)?;
        self.consumed.increment(1);
        let timestamp_ms = msg.timestamp().to_millis();
        if let Some(ts) = timestamp_ms {
            self.fetch_delay
                .record(telemetry::age_seconds(telemetry::epoch_ms(), ts));
        }
        Some(Item {
            tp,
            generation,
            offset: msg.offset(),
            timestamp_ms,
            size: msg.payload_len() + msg.key().map_or(0, <[u8]>::len),
            body,
        })
    }

    fn set_paused(&self, pause: bool) {
        let Ok(assignment) = self.consumer.assignment() else {
            return;
        };
        let result = if pause {
            self.consumer.pause(&assignment)
        } else {
            self.consumer.resume(&assignment)
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, pause, "cannot pause/resume partitions");
        }
        self.paused.store(pause, Ordering::Relaxed);
        let integration = self.consumer.context().integration.clone();
        metrics::gauge!(telemetry::names::CONSUMER_PAUSED, "integration" => integration)
            .set(if pause { 1.0 } else { 0.0 });
    }

    fn rewind(&self) {
        for r in self.partitions.take_rewinds() {
            let offset = r.to.map_or(Offset::Beginning, Offset::Offset);
            if let Err(e) =
                self.consumer
                    .seek(&r.tp.topic, r.tp.partition, offset, Duration::from_secs(10))
            {
                tracing::error!(topic = %r.tp.topic, partition = r.tp.partition, error = %e, "seek failed; re-requesting");
                self.partitions.rewind(&r.tp, r.to);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producers_are_not_given_consumer_properties() {
        let mut kafka = ClientConfig::new();
        for (k, v) in [
            ("bootstrap.servers", "b:9092"),
            ("sasl.password", "x"),
            ("linger.ms", "5"),
            ("session.timeout.ms", "6000"),
            ("fetch.wait.max.ms", "50"),
            ("group.id", "g"),
        ] {
            kafka.set(k, v);
        }
        let producer = producer_config(&kafka);
        let keys: Vec<&str> = producer.config_map().into_keys().collect();
        assert_eq!(keys, ["bootstrap.servers", "linger.ms", "sasl.password"]);
        assert_eq!(
            kafka.config_map().len(),
            6,
            "the consumer's table is untouched"
        );
    }

    #[test]
    fn librdkafka_log_level_follows_the_filter_on_its_target() {
        for (filter, want) in [
            ("info,librdkafka=warn", RDKafkaLogLevel::Warning),
            ("warn,librdkafka=debug", RDKafkaLogLevel::Debug),
            ("info", RDKafkaLogLevel::Info),
            ("policy_push=debug,error", RDKafkaLogLevel::Error),
        ] {
            let subscriber = tracing_subscriber::fmt().with_env_filter(filter).finish();
            let got = tracing::subscriber::with_default(subscriber, log_level);
            assert_eq!(got as i32, want as i32, "filter {filter:?}");
        }
    }
}
