//! Wiring per integration: consumer thread → bounded channel → applier (batch, apply,
//! commit), plus the process-wide `run`.
//!
//! The applier owns the batch. It flushes on count, bytes or linger, or at once when its
//! consumer has nothing more ready and no batch is in flight; a failing flush is
//! retried with backoff while the channel fills and the consumer pauses, so memory stays
//! bounded and other integrations carry on. After the warehouse commit, the same offsets
//! are committed to Kafka (asynchronously; they only serve lag tooling, the warehouse
//! copy is the one the pipeline trusts).

use crate::error::chain;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::apply::{ApplyError, Warehouse};
use crate::batch::{Item, Limits};
use crate::codec::{Codec, Registry};
use crate::config::{Config, Integration};
use crate::consume::STOPPED;
use crate::consume::{self, dead_letter::DeadLetterProducer, route::Router, Control, Partitions};
use crate::telemetry::{self, Condition, Health, State};

mod applier;
mod isolate;
mod seam;
mod topics;
mod watch;
use applier::Applier;
use topics::watch_topics;
use watch::WarehouseWatch;

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
    #[error("integration {integration} stopped unexpectedly")]
    Task {
        integration: String,
        source: tokio::task::JoinError,
    },
    /// Each stopped integration with its reason.
    #[error("stopped on a fatal error: {0}")]
    Stopped(String),
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

/// What a run consumes. The default: every input topic, as a member of each
/// integration's consumer group. Replay narrows it (`replay::replay`).
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Only these kinds' topics (replay's first phase).
    pub kinds: Option<Vec<crate::event::Kind>>,
    /// Read exactly these partitions without joining the consumer group (replay, which
    /// would otherwise wait for a group join per phase).
    pub assign: Option<Vec<crate::record::TopicPartition>>,
    /// Return as soon as every integration has stopped on a fatal error, instead of
    /// serving /health until SIGTERM (replay, which would otherwise wait forever).
    pub exit_when_stopped: bool,
    /// The caller has checked the topics' compaction itself (replay, before it starts),
    /// so the run does not ask the broker again.
    pub compaction_checked: bool,
}

impl Plan {
    /// The input topics this plan consumes.
    pub fn subscriptions(&self, topics: &crate::config::Topics) -> Vec<String> {
        match &self.kinds {
            Some(kinds) => topics.of_kinds(kinds),
            None => topics.of_kinds(&crate::event::Kind::ALL),
        }
    }
}

/// Runs every integration until `shutdown` is cancelled, then drains and returns.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), PipelineError> {
    run_plan(config, Plan::default(), shutdown).await
}

/// [`run`], consuming what `plan` says.
pub async fn run_plan(
    config: Config,
    plan: Plan,
    shutdown: CancellationToken,
) -> Result<(), PipelineError> {
    // Refused here, with the property named and its value left out, rather than by
    // librdkafka when a client is created, whose error repeats the value.
    crate::consume::check::client_configs(&kafka_config(&config))?;
    let health = Health::new(config.http.failing_after);
    // The recorder is installed before any metric handle is made (`telemetry::Events`
    // keeps its handles): one made before it would count nowhere.
    telemetry::prometheus();
    let upkeep_stop = shutdown.child_token();
    tokio::spawn(telemetry::upkeep(upkeep_stop.clone()));
    let topics_stop = upkeep_stop.clone();
    // Also on the early returns below.
    let _stop_upkeep = upkeep_stop.drop_guard();
    if !config.http.listen.is_empty() {
        let addr = telemetry::serve(&config.http.listen, health.clone(), shutdown.clone()).await?;
        tracing::info!(%addr, "serving /metrics, /health and /ready");
    }
    let registry = Registry::from_settings(&config.schema_registry)?;
    let codec = Arc::new(Codec::embedded()?.with_registry(registry));
    if !plan.compaction_checked {
        tokio::spawn(watch_topics(
            kafka_config(&config),
            plan.subscriptions(&config.topics),
            config.integrations.iter().map(|i| i.name.clone()).collect(),
            health.clone(),
            config.consumer.topic_check,
            topics_stop,
        ));
    }
    let mut tasks = tokio::task::JoinSet::new();
    let mut names = HashMap::new();
    for integration in &config.integrations {
        let pipeline = IntegrationPipeline::start(
            &config,
            &plan,
            integration,
            codec.clone(),
            health.clone(),
            shutdown.clone(),
        )?;
        let span = tracing::info_span!("integration", integration = %integration.name);
        let task = tasks.spawn(tracing::Instrument::instrument(pipeline.run(), span));
        names.insert(task.id(), integration.name.clone());
    }
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        if let Err(source) = joined {
            let integration = names.get(&source.id()).cloned().unwrap_or_default();
            first_error.get_or_insert(PipelineError::Task {
                integration,
                source,
            });
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    // Every integration may have stopped on a fatal error: /health keeps saying why
    // until SIGTERM, and the exit status says it too.
    if !plan.exit_when_stopped {
        shutdown.cancelled().await;
    }
    let stopped: Vec<String> = health
        .snapshot()
        .into_iter()
        .filter_map(|(name, h)| Some(format!("{name}: {}", h.conditions.get(STOPPED)?.error)))
        .collect();
    if stopped.is_empty() {
        Ok(())
    } else {
        Err(PipelineError::Stopped(stopped.join("; ")))
    }
}

/// A fatal error: the integration stops, says why on /health (condition `stopped`), and
/// leaves the others running.
fn stop_integration(health: &Health, name: &str, stop: &CancellationToken, e: &ApplyError) {
    let condition = Condition {
        severity: State::Failing,
        error: chain(e),
        hint: e.hint().to_string(),
    };
    health.set_condition(name, STOPPED, condition);
    stop.cancel();
}

/// One applier with its inputs.
struct Lane {
    applier: Applier,
    data: mpsc::Receiver<Item>,
    control: mpsc::Receiver<Control>,
}

/// How long stopping waits for the consumer to close (leave its group) once the lanes
/// have stopped.
const CONSUMER_CLOSE: Duration = Duration::from_secs(1);

struct IntegrationPipeline {
    lanes: Vec<Lane>,
    consumer_thread: std::thread::JoinHandle<()>,
    stop_consumer: CancellationToken,
    shutdown: CancellationToken,
    lag: crate::offsets::LagWatch,
    watch: WarehouseWatch,
}

/// The consumer's router: what each record is, and what a record that waits for the
/// Schema Registry tells `/health`.
fn router(
    config: &Config,
    integration: &Integration,
    codec: Arc<Codec>,
    health: &Health,
) -> Result<Router, PipelineError> {
    let (health, name) = (health.clone(), integration.name.clone());
    Ok(Router {
        codec,
        topics: config.topics.clone(),
        host: integration.host.clone(),
        database: integration.database()?,
        view_schema: integration.view_schema.to_ascii_lowercase(),
        on_wait: Arc::new(move |e| {
            health.failing(
                &name,
                &chain(e),
                "records wait for the Schema Registry and none is dead-lettered for it: check schema_registry.url, its TLS and its credentials",
            )
        }),
    })
}

impl IntegrationPipeline {
    fn start(
        config: &Config,
        plan: &Plan,
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
        // Cancelled by SIGTERM, or by a fatal error of this integration alone.
        let shutdown = shutdown.child_token();
        let router = router(config, integration, codec, &health)?;
        let dlq = DeadLetterProducer::new(&kafka, &config.topics.dead_letter, &name)?
            .refusing(config.topics.intolerant(&config.errors));
        let paused = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let metadata =
            crate::offsets::metadata_client(&kafka).map_err(crate::consume::ConsumeError::from)?;
        let metadata = Arc::new(metadata);
        let subscriptions = plan.subscriptions(&config.topics);
        if subscriptions.contains(&config.topics.policies) {
            warehouse.barrier().wait_for(&config.topics.policies);
        }
        let watch = WarehouseWatch {
            warehouse: warehouse.clone(),
            metadata: metadata.clone(),
            topic: config.topics.policies.clone(),
            group: group.clone(),
            max_backoff: config.batch.max_backoff,
            name: name.clone(),
            health: health.clone(),
            terminate_after: integration.terminate_blockers_after,
            stop_integration: shutdown.clone(),
        };
        let checker = consume::identity::Checker::new(metadata.clone(), &kafka, shutdown.clone());
        let lag = crate::offsets::LagWatch {
            integration: name.clone(),
            group: group.clone(),
            topics: subscriptions.clone(),
            partitions: partitions.clone(),
            checker: checker.clone(),
            store: warehouse.clone(),
            group_client: Default::default(),
            kafka: kafka.clone(),
            health: health.clone(),
            paused: paused.clone(),
            every: config.http.lag_refresh,
            idle: Default::default(),
        };
        let (consumer, consumer_thread) = consume::spawn(consume::Spawn {
            integration: name.clone(),
            group: group.clone(),
            kafka,
            topics: subscriptions,
            assign: plan.assign.clone(),
            warehouse: warehouse.clone(),
            partitions: partitions.clone(),
            control: control_tx,
            lanes: consume::Lanes {
                data: data_tx,
                profiles_topic: config.topics.profiles.clone(),
            },
            router,
            stop: stop_consumer.clone(),
            stop_integration: shutdown.clone(),
            health: health.clone(),
            paused,
            checker: checker.clone(),
        })?;
        let template = Applier {
            events: crate::telemetry::Events::new(&name, health.clone()),
            name,
            lane: 0,
            group,
            warehouse,
            partitions,
            consumer,
            dlq: Arc::new(dlq),
            health,
            limits: Limits {
                max_records: config.batch.max_records,
                max_bytes: config.batch.max_bytes,
                max_definitions: config.batch.max_definitions,
                linger: config.batch.linger,
                backlog_entries: config.batch.backlog_entries,
                backlog_wait: config.batch.backlog_wait,
            },
            max_backoff: config.batch.max_backoff,
            shutdown_timeout: config.batch.shutdown_timeout,
            apply_timeout: config.batch.apply_timeout,
            stop_by: std::sync::OnceLock::new(),
            stop_integration: shutdown.clone(),
        };
        let lanes = data_rx
            .into_iter()
            .zip(control_rx)
            .enumerate()
            .map(|(lane, (data, control))| Lane {
                applier: template.for_lane(lane),
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
            watch,
        })
    }

    async fn run(self) {
        let name = self.lanes[0].applier.name.clone();
        let lag_stop = CancellationToken::new();
        let lag = tokio::spawn(self.lag.run(lag_stop.clone()));
        // Stops at SIGTERM (or this integration's fatal stop), not after the lanes: it
        // waits for nothing the lanes need.
        let watch = tokio::spawn(self.watch.run(self.shutdown.clone()));
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
        let _ = watch.await;
        // The appliers (and their consumer handles) are gone; the consumer thread now
        // holds the last handle, so closing the consumer and leaving the group happen there.
        self.stop_consumer.cancel();
        // A panic of the consumer thread is caught and reported where it happens
        // (`consume::poll`); joining only waits for the thread to end, and not past
        // `CONSUMER_CLOSE`: a broker that does not answer must not hold SIGTERM back (the
        // group then notices the member gone when its session times out).
        let thread = self.consumer_thread;
        let join = tokio::task::spawn_blocking(move || thread.join());
        if tokio::time::timeout(CONSUMER_CLOSE, join).await.is_err() {
            tracing::warn!(integration = %name, "the consumer did not close within {CONSUMER_CLOSE:?}; leaving it");
        }
        tracing::info!(integration = %name, "integration stopped");
    }
}
