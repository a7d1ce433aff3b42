//! The consumer thread: creating and subscribing the consumer, the poll loop, routing
//! records to the lanes, and pausing while the appliers are full.

use super::partitions::{Partitions, Tag};
use super::rebalance::LOAD_TIMEOUT;
use super::rebalance::{Control, Ctx, KafkaConsumer};
use super::store::OffsetStore;
use super::{identity, route, ConsumeError, WAIT_BEFORE_PAUSE};
use crate::error::Chain;
use crate::record::{Item, Meta, TopicPartition};
use crate::telemetry;
use crate::telemetry::{Condition, Health, State};
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Everything the consumer thread needs.
pub struct Spawn {
    pub integration: String,
    pub group: String,
    pub kafka: ClientConfig,
    pub topics: Vec<String>,
    /// Partitions to assign directly instead of subscribing to `topics` as a group member.
    pub assign: Option<Vec<TopicPartition>>,
    pub warehouse: Arc<dyn OffsetStore>,
    pub partitions: Partitions,
    pub control: Vec<mpsc::Sender<Control>>,
    pub lanes: Lanes,
    pub router: route::Router,
    pub stop: CancellationToken,
    /// Cancelled, with the integration reported failing, if the thread panics.
    pub stop_integration: CancellationToken,
    pub health: Health,
    /// Set while the thread has paused its partitions because the applier is behind.
    pub paused: Arc<std::sync::atomic::AtomicBool>,
    /// Checks each assigned partition against its stored offset (`identity`).
    pub checker: identity::Checker,
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
        health: s.health.clone(),
        assignment_changed: AtomicBool::new(false),
        topics: Default::default(),
        load_timeout: LOAD_TIMEOUT,
        checker: Some(s.checker.clone()),
    };
    let mut cfg = super::never_committing(s.kafka, &s.group);
    for (key, default) in [
        ("auto.offset.reset", "earliest"),
        // What librdkafka prefetches; batches hold what matters. 4 MB is about 17,000
        // profile records as librdkafka counts them (about 245 bytes each with its
        // overhead), a tenth of a second of a drain.
        ("queued.max.messages.kbytes", "4096"),
        // librdkafka waits this long to fetch again once that prefetch is full. Its
        // default (1000 ms) left a draining consumer idle for a second at a time, its
        // queue long since empty (CONFIGURATION.md says to lower it with low
        // thresholds; docs/performance.md).
        ("fetch.queue.backoff.ms", "10"),
        // Brokers that do not answer a fetch as soon as data arrives (librdkafka's mock
        // cluster, some Kafka-compatible servers) otherwise add up to 500 ms of latency;
        // on Apache Kafka it only bounds how long an idle fetch waits.
        ("fetch.wait.max.ms", "50"),
        // librdkafka's default is 5 minutes: a topic recreated after the broker lost it
        // was not assigned again for that long. Within a minute, for a few metadata
        // requests more per minute.
        ("topic.metadata.refresh.interval.ms", "30000"),
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
    let held =
        metrics::counter!(telemetry::names::RECORDS_HELD, "integration" => s.integration.clone());
    let loop_state = PollLoop {
        consumed,
        held,
        fetch_delay,
        consumer: thread_consumer,
        lanes: s.lanes,
        router: s.router,
        partitions: s.partitions,
        stop: s.stop,
        paused: s.paused,
        assign: s.assign,
    };
    let guard = Guard {
        integration: s.integration.clone(),
        health: s.health,
        stop_integration: s.stop_integration,
    };
    let handle = std::thread::Builder::new()
        .name(format!("consume-{}", s.integration))
        .spawn(move || guard.run(move || loop_state.run()))?;
    Ok((consumer, handle))
}

/// Reports a consumer thread that panics: logged, its integration failing on /health
/// and stopped (its appliers would otherwise wait for records forever), the others
/// untouched.
pub struct Guard {
    pub integration: String,
    pub health: Health,
    pub stop_integration: CancellationToken,
}

impl Guard {
    pub fn run(self, body: impl FnOnce()) {
        let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) else {
            return;
        };
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        tracing::error!(integration = %self.integration, panic = %what, "the consumer thread panicked; stopping this integration");
        let condition = Condition {
            severity: State::Failing,
            error: format!("the consumer thread panicked: {what}"),
            hint: "a bug in policy-push: report it with the log around this message; restart to resume (the stored offsets are where it stopped)".into(),
        };
        self.health
            .set_condition(&self.integration, STOPPED, condition);
        self.stop_integration.cancel();
    }
}

/// The `/health` condition of an integration stopped by a fatal error.
pub const STOPPED: &str = "stopped";

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

pub(super) struct PollLoop {
    consumer: Arc<KafkaConsumer>,
    lanes: Lanes,
    router: route::Router,
    partitions: Partitions,
    stop: CancellationToken,
    paused: Arc<std::sync::atomic::AtomicBool>,
    /// Looked up once: a labelled lookup per message is measurable at high rates.
    consumed: metrics::Counter,
    held: metrics::Counter,
    fetch_delay: metrics::Histogram,
    /// Partitions to assign at start instead of a group subscription.
    assign: Option<Vec<TopicPartition>>,
}

/// The headers and timestamp a dead letter of `msg` keeps. Only for records whose bytes
/// are kept anyway (not the profiles the fast path takes, which are never refused alone).
fn meta(
    msg: &rdkafka::message::BorrowedMessage<'_>,
    timestamp_ms: Option<i64>,
) -> Option<Box<Meta>> {
    use rdkafka::message::Headers;
    let headers = msg
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_string(), h.value.map(Box::from)))
                .collect()
        })
        .unwrap_or_default();
    Some(Box::new(Meta {
        headers,
        timestamp_ms,
    }))
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
            for tp in partitions {
                tpl.add_partition(&tp.topic, tp.partition);
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
                    tracing::warn!(%integration, error = %Chain(&e), "Kafka consumer error");
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
                    // A plain sleep, not a runtime timer (see `retry::sleep_unless`).
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
        let generation = match self.partitions.tag(&tp, msg.offset()) {
            Tag::Current(generation) => generation,
            Tag::Drop => return None,
            Tag::Stopped => {
                self.held.increment(1);
                return None;
            }
            Tag::PastEnd { stored } => {
                ctx.past_end(&tp, stored, msg.offset());
                return None;
            }
        };
        let stop = || self.stop.is_cancelled();
        let mut body = self
            .router
            .route(msg.topic(), msg.key(), msg.payload(), &stop)?;
        self.consumed.increment(1);
        let timestamp_ms = msg.timestamp().to_millis();
        if let Some(raw) = body
            .raw_mut()
            .filter(|r| r.key.is_some() || r.value.is_some())
        {
            raw.meta = meta(msg, timestamp_ms);
        }
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
            tracing::warn!(error = %Chain(&e), pause, "cannot pause/resume partitions");
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
                tracing::error!(topic = %r.tp.topic, partition = r.tp.partition, error = %Chain(&e), "seek failed; re-requesting");
                self.partitions.rewind(&r.tp, r.to);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_consumer_thread_stops_only_its_integration_and_says_why() {
        let health = Health::new(Duration::from_secs(3600));
        let (a, b) = (CancellationToken::new(), CancellationToken::new());
        for (name, stop) in [("a", &a), ("b", &b)] {
            health.register(name);
            health.reachable(name);
            let guard = Guard {
                integration: name.into(),
                health: health.clone(),
                stop_integration: stop.clone(),
            };
            let body = move || {
                if name == "a" {
                    panic!("index out of bounds");
                }
            };
            std::thread::spawn(move || guard.run(body)).join().unwrap();
        }
        assert!(a.is_cancelled());
        assert!(!b.is_cancelled());
        let snap = health.snapshot();
        assert_eq!(snap["a"].state, State::Failing);
        assert!(snap["a"].conditions[STOPPED]
            .error
            .contains("index out of bounds"));
        assert_eq!(snap["b"].state, State::Healthy);
    }
}
