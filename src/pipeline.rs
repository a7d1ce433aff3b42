//! Wiring per integration: consumer thread → bounded channel → applier (batch, apply,
//! commit), plus the process-wide `run`.
//!
//! The applier owns the batch. It flushes on count, bytes or linger; a failing flush is
//! retried with backoff while the channel fills and the consumer pauses, so memory stays
//! bounded and other integrations carry on. After the warehouse commit, the same offsets
//! are committed to Kafka (asynchronously; they only serve lag tooling, the warehouse
//! copy is the one the pipeline trusts).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::apply::{Applied, ApplyError, Warehouse};
use crate::batch::{Batch, Item, Limits};
use crate::codec::{Codec, Registry};
use crate::config::{Config, Integration};
use crate::consume::{
    self, dead_letter::DeadLetterProducer, route::Router, Control, KafkaConsumer, Partitions,
};
use crate::telemetry::{self, names, Health};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Codec(#[from] crate::codec::CodecError),
    #[error(transparent)]
    Consume(#[from] crate::consume::ConsumeError),
    #[error(transparent)]
    KafkaConfig(#[from] crate::consume::check::KafkaConfigError),
    #[error(transparent)]
    Http(#[from] telemetry::HttpError),
    #[error("integration {0} stopped unexpectedly: {1}")]
    Task(String, String),
}

impl crate::error::Classify for PipelineError {
    fn class(&self) -> crate::error::Class {
        crate::error::Class::Fatal
    }
}

/// The librdkafka properties of the `[kafka]` table, verbatim; librdkafka's own log level
/// follows the tracing filter for the `librdkafka` target.
pub fn kafka_config(config: &Config) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set_log_level(crate::consume::log_level());
    for (k, v) in &config.kafka {
        cfg.set(k, v);
    }
    cfg
}

/// Runs every integration until `shutdown` is cancelled, then drains and returns.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), PipelineError> {
    // Refused here, with the property named and its value left out, rather than by
    // librdkafka when a client is created, whose error repeats the value.
    crate::consume::check::client_configs(&kafka_config(&config))?;
    let health = Health::default();
    let upkeep_stop = shutdown.child_token();
    tokio::spawn(telemetry::upkeep(upkeep_stop.clone()));
    // Also on the early returns below.
    let _stop_upkeep = upkeep_stop.drop_guard();
    if !config.http.listen.is_empty() {
        let addr = telemetry::serve(&config.http.listen, health.clone(), shutdown.clone()).await?;
        tracing::info!(%addr, "serving /metrics, /health and /ready");
    }
    let registry = Registry::from_settings(&config.schema_registry)?;
    let codec = Arc::new(Codec::embedded()?.with_registry(registry));
    let mut tasks = tokio::task::JoinSet::new();
    for integration in &config.integrations {
        let pipeline = IntegrationPipeline::start(
            &config,
            integration,
            codec.clone(),
            health.clone(),
            shutdown.clone(),
        )?;
        let span = tracing::info_span!("integration", integration = %integration.name);
        tasks.spawn(tracing::Instrument::instrument(pipeline.run(), span));
    }
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined {
            first_error.get_or_insert(PipelineError::Task("?".into(), e.to_string()));
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// One applier with its inputs.
struct Lane {
    applier: Applier,
    data: mpsc::Receiver<Item>,
    control: mpsc::Receiver<Control>,
}

struct IntegrationPipeline {
    lanes: Vec<Lane>,
    consumer_thread: std::thread::JoinHandle<()>,
    stop_consumer: CancellationToken,
    shutdown: CancellationToken,
    lag: crate::offsets::LagWatch,
    barrier: BarrierWatch,
}

/// Reads the policies topic's end offsets for the policy barrier, then builds the views
/// waiting for it once the policies have caught up (`apply::barrier`).
struct BarrierWatch {
    warehouse: Arc<Warehouse>,
    metadata: Arc<rdkafka::consumer::BaseConsumer>,
    topic: String,
    group: String,
    max_backoff: Duration,
}

impl BarrierWatch {
    async fn run(self, stop: CancellationToken) {
        let barrier = self.warehouse.barrier();
        let mut attempt = 0;
        while barrier.needs_ends() {
            let read = crate::offsets::watermarks_blocking(
                self.metadata.clone(),
                vec![self.topic.clone()],
                Duration::from_secs(10),
            )
            .await;
            match read {
                Ok(marks) => {
                    barrier.set_ends(
                        marks
                            .into_iter()
                            .map(|((_, p), (_, high))| (p, high))
                            .collect(),
                    );
                    continue;
                }
                Err(e) => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "cannot read the policies topic's end offsets; no view is created until they are known");
                }
            }
            let delay = telemetry::backoff(attempt, self.max_backoff);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(crate::apply::barrier::CHECK_EVERY) => {}
            }
            if let Err(e) = self.warehouse.open_views_if_caught_up(&self.group).await {
                tracing::debug!(error = %e, "pending views not built yet; retrying");
            }
        }
    }
}

impl IntegrationPipeline {
    fn start(
        config: &Config,
        integration: &Integration,
        codec: Arc<Codec>,
        health: Health,
        shutdown: CancellationToken,
    ) -> Result<Self, PipelineError> {
        let name = integration.name.clone();
        health.register(&name);
        let warehouse = Arc::new(Warehouse::new(integration)?);
        let group = integration.consumer_group(&config.consumer.group_prefix);
        let kafka = kafka_config(config);
        let lanes = config.batch.lanes;
        let (data_tx, data_rx): (Vec<_>, Vec<_>) = (0..lanes)
            .map(|_| mpsc::channel(config.consumer.channel_capacity.div_ceil(lanes)))
            .unzip();
        let (control_tx, control_rx): (Vec<_>, Vec<_>) =
            (0..lanes).map(|_| mpsc::channel(16)).unzip();
        let partitions = Partitions::default();
        let stop_consumer = CancellationToken::new();
        let router = Router {
            codec,
            topics: config.topics.clone(),
            host: integration.host.clone(),
            database: integration.database()?,
            view_schema: integration.view_schema.to_ascii_lowercase(),
            on_wait: {
                let (health, name) = (health.clone(), name.clone());
                Arc::new(move |e| {
                    health.failing(
                        &name,
                        &e.to_string(),
                        "records wait for the Schema Registry and none is dead-lettered for it: check schema_registry.url, its TLS and its credentials",
                    )
                })
            },
        };
        let dlq = DeadLetterProducer::new(&kafka, &config.topics.dead_letter, &name)?;
        let paused = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let metadata =
            crate::offsets::metadata_client(&kafka).map_err(crate::consume::ConsumeError::from)?;
        let metadata = Arc::new(metadata);
        let subscriptions = config.consumer.subscriptions(&config.topics);
        if subscriptions.contains(&config.topics.policies) {
            warehouse.barrier().wait_for(&config.topics.policies);
        }
        let barrier = BarrierWatch {
            warehouse: warehouse.clone(),
            metadata: metadata.clone(),
            topic: config.topics.policies.clone(),
            group: group.clone(),
            max_backoff: Duration::from_millis(config.batch.max_backoff_ms),
        };
        let lag = crate::offsets::LagWatch {
            integration: name.clone(),
            partitions: partitions.clone(),
            metadata,
            health: health.clone(),
            paused: paused.clone(),
            every: Duration::from_millis(config.http.lag_refresh_ms),
        };
        let (consumer, consumer_thread) = consume::spawn(consume::Spawn {
            integration: name.clone(),
            group: group.clone(),
            kafka,
            topics: subscriptions,
            assign: config.consumer.assign.clone(),
            warehouse: warehouse.clone(),
            partitions: partitions.clone(),
            control: control_tx,
            lanes: consume::Lanes {
                data: data_tx,
                profiles_topic: config.topics.profiles.clone(),
            },
            router,
            stop: stop_consumer.clone(),
            health: health.clone(),
            paused,
        })?;
        let limits = Limits {
            max_records: config.batch.max_records,
            max_bytes: config.batch.max_bytes,
            max_definitions: config.batch.max_definitions,
            linger: Duration::from_millis(config.batch.linger_ms),
            backlog_entries: config.batch.backlog_entries,
        };
        let dlq = Arc::new(dlq);
        let lanes = data_rx
            .into_iter()
            .zip(control_rx)
            .enumerate()
            .map(|(lane, (data, control))| Lane {
                applier: Applier {
                    name: name.clone(),
                    lane,
                    group: group.clone(),
                    warehouse: warehouse.clone(),
                    partitions: partitions.clone(),
                    consumer: consumer.clone(),
                    dlq: dlq.clone(),
                    health: health.clone(),
                    limits,
                    max_backoff: Duration::from_millis(config.batch.max_backoff_ms),
                    shutdown_timeout: Duration::from_millis(config.batch.shutdown_timeout_ms),
                    apply_timeout: Duration::from_millis(config.batch.apply_timeout_ms),
                },
                data,
                control,
            })
            .collect();
        Ok(IntegrationPipeline {
            lanes,
            consumer_thread,
            stop_consumer,
            shutdown,
            lag,
            barrier,
        })
    }

    async fn run(self) {
        let name = self.lanes[0].applier.name.clone();
        let lag_stop = CancellationToken::new();
        let lag = tokio::spawn(self.lag.run(lag_stop.clone()));
        let barrier = tokio::spawn(self.barrier.run(lag_stop.clone()));
        let shutdown = &self.shutdown;
        futures::future::join_all(self.lanes.into_iter().map(|lane| async move {
            let Lane {
                mut applier,
                mut data,
                mut control,
            } = lane;
            applier.run(&mut data, &mut control, shutdown).await;
            // Dropped at once, so that a revocation does not wait for a stopped lane.
            drop(control);
        }))
        .await;
        lag_stop.cancel();
        let _ = lag.await;
        let _ = barrier.await;
        // The appliers (and their consumer handles) are gone; the consumer thread now
        // holds the last handle, so closing the consumer and leaving the group happen there.
        self.stop_consumer.cancel();
        let thread = self.consumer_thread;
        if tokio::task::spawn_blocking(move || thread.join())
            .await
            .is_err()
        {
            tracing::error!(integration = %name, "consumer thread panicked");
        }
        tracing::info!(integration = %name, "integration stopped");
    }
}

struct Applier {
    name: String,
    /// Which lane this applier is (health is tracked per lane).
    lane: usize,
    group: String,
    warehouse: Arc<Warehouse>,
    partitions: Partitions,
    consumer: Arc<KafkaConsumer>,
    dlq: Arc<DeadLetterProducer>,
    health: Health,
    limits: Limits,
    max_backoff: Duration,
    shutdown_timeout: Duration,
    apply_timeout: Duration,
}

impl Applier {
    async fn run(
        &mut self,
        data: &mut mpsc::Receiver<Item>,
        control: &mut mpsc::Receiver<Control>,
        shutdown: &CancellationToken,
    ) {
        let mut batch = Batch::default();
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        loop {
            let deadline = batch.deadline(&self.limits);
            let room = !batch.is_full(&self.limits);
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(c) = control.recv() => self.on_control(c, &mut batch).await,
                item = data.recv(), if room => match item {
                    Some(item) => self.accept(item, &mut batch, None),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline.unwrap_or(far).into()), if deadline.is_some() => {}
            }
            let due = deadline.is_some_and(|d| Instant::now() >= d);
            let ready = !batch.is_empty() && (due || batch.is_full(&self.limits));
            if ready && self.flush(&mut batch, data, control, shutdown).await {
                break;
            }
        }
        self.drain(&mut batch).await;
    }

    /// Adds a record to `batch`, unless it is stale. `after` is the batch in flight, if
    /// any: a partition it covers continues where it ends, not at the stored offset.
    fn accept(&self, item: Item, batch: &mut Batch, after: Option<&Batch>) {
        match self.partitions.accepts(&item.tp, item.generation) {
            Some(stored) => {
                let in_flight = after.and_then(|b| b.partitions.get(&item.tp));
                let expected = in_flight.map_or(stored, |span| Some(span.next_offset));
                batch.push(item, expected)
            }
            None => {
                tracing::trace!(topic = %item.tp.topic, partition = item.tp.partition, offset = item.offset, "dropping stale record")
            }
        }
    }

    /// Applies `batch` while the next batch fills from `data`. The longer the warehouse
    /// takes, the more the next batch takes in (past `max_records`, up to
    /// `backlog_entries` entities: `Batch::has_room_while_waiting`), and the more of it
    /// deduplication removes: a backlog drains in fewer, larger transactions, while a
    /// quiet stream still flushes on linger.
    async fn apply_while_filling(
        &self,
        batch: &Batch,
        next: &mut Batch,
        data: &mut mpsc::Receiver<Item>,
    ) -> Result<Applied, ApplyError> {
        let apply = self.try_apply(batch);
        tokio::pin!(apply);
        loop {
            tokio::select! {
                biased;
                result = &mut apply => return result,
                Some(item) = data.recv(), if next.has_room_while_waiting(&self.limits) => {
                    self.accept(item, next, Some(batch))
                }
            }
        }
    }

    /// SIGTERM: one last attempt within the deadline; otherwise abandon the batch (the
    /// stored offsets make that safe).
    async fn drain(&self, batch: &mut Batch) {
        if batch.is_empty() {
            return;
        }
        match tokio::time::timeout(self.shutdown_timeout, self.try_apply(batch)).await {
            Ok(Ok(applied)) => self.committed(batch, applied),
            Ok(Err(e)) => {
                tracing::warn!(integration = %self.name, error = %e, "final batch abandoned; it will be re-read")
            }
            Err(_) => {
                tracing::warn!(integration = %self.name, "final batch timed out; it will be re-read")
            }
        }
    }

    async fn on_control(&self, control: Control, batch: &mut Batch) {
        let Control::Revoke { partitions, done } = control;
        if partitions
            .iter()
            .any(|tp| batch.partitions.contains_key(tp))
        {
            // One attempt: commit now, or drop and let the next owner re-read.
            match tokio::time::timeout(Duration::from_secs(10), self.try_apply(batch)).await {
                Ok(Ok(applied)) => self.committed(batch, applied),
                _ => self.drop_batch(batch, "partitions revoked"),
            }
            *batch = Batch::default();
        }
        let _ = done.send(());
    }

    /// Applies the batch, retrying with backoff. Returns true when interrupted by
    /// shutdown with the batch still pending; otherwise it was committed, or dropped and
    /// its partitions rewound.
    ///
    /// Records received meanwhile form the next batch, which replaces `batch` once it is
    /// committed. When `batch` is dropped instead, the next one is dropped with it: its
    /// records follow the dropped ones on their partitions.
    async fn flush(
        &self,
        batch: &mut Batch,
        data: &mut mpsc::Receiver<Item>,
        control: &mut mpsc::Receiver<Control>,
        shutdown: &CancellationToken,
    ) -> bool {
        let mut attempt = 0;
        let mut next = Batch::default();
        loop {
            let result = match self.apply_while_filling(batch, &mut next, data).await {
                Err(e) if e.refused_by_record() => {
                    tracing::warn!(integration = %self.name, error = %e, "the warehouse refused a record of the batch; isolating it");
                    self.isolate(batch).await
                }
                other => other,
            };
            match result {
                Ok(applied) => {
                    self.committed(batch, applied);
                    *batch = next;
                    return false;
                }
                Err(ApplyError::Fenced(tps)) => {
                    // The stored offsets moved behind this instance's back (another
                    // instance, or a replay's reset): views wait for the policies again.
                    self.warehouse.barrier().reclose();
                    tracing::warn!(integration = %self.name, ?tps, "batch fenced by another instance; re-reading stored offsets");
                    metrics::counter!(names::BATCHES_FENCED, "integration" => self.name.clone())
                        .increment(1);
                    self.reload_and_rewind(batch).await;
                    self.drop_batch(&next, "the batch before it was fenced");
                    *batch = Batch::default();
                    return false;
                }
                Err(e) => {
                    attempt += 1;
                    let delay = telemetry::backoff(attempt, self.max_backoff);
                    tracing::warn!(integration = %self.name, error = %e, attempt, ?delay, "batch failed; retrying");
                    metrics::counter!(names::WAREHOUSE_ERRORS, "integration" => self.name.clone(), "kind" => e.kind()).increment(1);
                    if e.needs_operator() {
                        self.health
                            .lane_failed(&self.name, self.lane, &e.to_string(), e.hint());
                    } else {
                        self.health
                            .lane_failing(&self.name, self.lane, &e.to_string(), e.hint());
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.cancelled() => return true,
                        Some(c) = control.recv() => {
                            let Control::Revoke { partitions: _, done } = c;
                            self.drop_batch(batch, "partitions revoked while retrying");
                            self.drop_batch(&next, "partitions revoked while retrying");
                            *batch = Batch::default();
                            let _ = done.send(());
                            return false;
                        }
                    }
                }
            }
        }
    }

    /// Applies `batch` when the warehouse refuses one of its records and cannot roll it
    /// back alone: halves of its changes in transactions of their own, halved again
    /// while a record is refused, then the offsets and the dead letters for the entities
    /// refused on their own (`batch::split`).
    async fn isolate(&self, batch: &Batch) -> Result<Applied, ApplyError> {
        let mut total = Applied::default();
        let mut refused = Vec::new();
        let mut todo = vec![batch.changes_only()];
        while let Some(part) = todo.pop() {
            if part.entries() == 0 {
                continue;
            }
            match self.try_apply(&part).await {
                Ok(a) => {
                    total.changes += a.changes;
                    total.rejected += a.rejected;
                    total.views_rebuilt += a.views_rebuilt;
                    total.views_dropped += a.views_dropped;
                }
                Err(e) if e.refused_by_record() && part.entries() == 1 => {
                    let letters = part.refused(&e.refusal());
                    tracing::warn!(integration = %self.name, error = %e, records = letters.len(), "isolated a refused record");
                    refused.extend(letters);
                }
                Err(e) if e.refused_by_record() => {
                    let (first, second) = part.halves();
                    todo.push(second);
                    todo.push(first);
                }
                Err(e) => return Err(e),
            }
        }
        let isolated = refused.len();
        let mut applied = self.try_apply(&batch.closing(refused)).await?;
        applied.changes = total.changes + isolated;
        applied.rejected = total.rejected + isolated;
        applied.views_rebuilt = total.views_rebuilt;
        applied.views_dropped = total.views_dropped;
        Ok(applied)
    }

    async fn try_apply(&self, batch: &Batch) -> Result<Applied, ApplyError> {
        let started = Instant::now();
        let apply = self.warehouse.apply(&self.group, batch, &*self.dlq);
        // Dropping the transaction on timeout rolls it back.
        let result = tokio::time::timeout(self.apply_timeout, apply)
            .await
            .unwrap_or(Err(ApplyError::Timeout(self.apply_timeout)));
        let took = started.elapsed();
        metrics::histogram!(names::APPLY_DURATION, "integration" => self.name.clone())
            .record(took.as_secs_f64());
        tracing::debug!(integration = %self.name, lane = self.lane, records = batch.len(), entries = batch.entries(), bytes = batch.bytes(), ?took, "batch apply ended");
        result
    }

    /// After a warehouse commit: remember the offsets, tell Kafka, count.
    fn committed(&self, batch: &Batch, applied: Applied) {
        let mut tpl = TopicPartitionList::new();
        for (tp, span) in &batch.partitions {
            self.partitions
                .committed(tp, span.generation, span.next_offset);
            if let Err(e) =
                tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(span.next_offset))
            {
                tracing::warn!(error = %e, "cannot build Kafka commit");
            }
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::debug!(integration = %self.name, error = %e, "Kafka offset commit failed (informational only)");
        }
        self.health.lane_applied(&self.name, self.lane);
        let n = self.name.clone();
        let s = &batch.stats;
        let changes = applied.changes.saturating_sub(applied.rejected) as u64;
        metrics::counter!(names::RECORDS_APPLIED, "integration" => n.clone()).increment(changes);
        metrics::counter!(names::RECORDS_DEDUPLICATED, "integration" => n.clone())
            .increment(s.deduplicated);
        metrics::counter!(names::RECORDS_SKIPPED, "integration" => n.clone()).increment(s.skipped);
        metrics::counter!(names::RECORDS_DEAD_LETTERED, "integration" => n.clone())
            .increment(s.dead_lettered + applied.rejected as u64);
        metrics::counter!(names::BATCHES_COMMITTED, "integration" => n.clone()).increment(1);
        metrics::counter!(names::VIEWS_REBUILT, "integration" => n.clone())
            .increment(applied.views_rebuilt as u64);
        metrics::histogram!(names::BATCH_RECORDS, "integration" => n.clone())
            .record(batch.len() as f64);
        let now_ms = telemetry::epoch_ms();
        let latency = metrics::histogram!(names::END_TO_END_LATENCY, "integration" => n);
        for (&ts, &records) in &batch.timestamps_ms {
            latency.record_many(telemetry::age_seconds(now_ms, ts), records);
        }
        tracing::debug!(integration = %self.name, lane = self.lane, records = batch.len(), changes = applied.changes, views = applied.views_rebuilt, "batch committed");
    }

    /// Forgets a batch that was not committed and re-reads its partitions (those still
    /// owned) from the offsets stored before it.
    fn drop_batch(&self, batch: &Batch, why: &str) {
        if batch.is_empty() {
            return;
        }
        tracing::info!(integration = %self.name, records = batch.len(), why, "batch dropped; it will be re-read");
        for (tp, span) in &batch.partitions {
            if self.partitions.accepts(tp, span.generation).is_some() {
                self.partitions.rewind(tp, span.expected);
            }
        }
    }

    async fn reload_and_rewind(&self, batch: &Batch) {
        match self.warehouse.load_offsets(&self.group).await {
            Ok(stored) => {
                for (tp, span) in &batch.partitions {
                    if self.partitions.accepts(tp, span.generation).is_some() {
                        let at = stored.get(&(tp.topic.to_string(), tp.partition)).copied();
                        self.partitions.rewind(tp, at);
                    }
                }
            }
            // Cannot learn the new offsets: rewind to what we knew; the next commit is
            // fenced again if that is stale, and we retry the reload then.
            Err(_) => self.drop_batch(batch, "fenced; offsets unreadable"),
        }
    }
}
