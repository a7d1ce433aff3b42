//! librdkafka's logs and errors into `tracing`, and the client configuration shared by
//! the consumer and the producers.

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::{ClientConfig, ClientContext};

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

pub(super) fn log_kafka(integration: &str, level: RDKafkaLogLevel, fac: &str, msg: &str) {
    use RDKafkaLogLevel::{Alert, Critical, Debug, Emerg, Error, Info, Notice, Warning};
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

pub(super) fn kafka_error(integration: &str, error: &rdkafka::error::KafkaError, reason: &str) {
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
pub(super) const CONSUMER_ONLY: &[&str] = &[
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
