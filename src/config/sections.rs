//! The settings sections of the file besides `[kafka]`, `[topics]`, `[errors]` and the
//! integrations, with their defaults.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::millis::{millis, write_millis};
use super::redact::redact_registry_url;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsumerSettings {
    pub group_prefix: String,
    /// Decoded records buffered between the consumer thread and the applier. When full,
    /// the consumer pauses its partitions instead of buffering more.
    pub channel_capacity: usize,
    /// How often the input topics' existence and compaction are checked again.
    #[serde(
        rename = "topic_check_ms",
        deserialize_with = "millis",
        serialize_with = "write_millis"
    )]
    pub topic_check: Duration,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        ConsumerSettings {
            group_prefix: "policy-push".into(),
            channel_capacity: 10_000,
            topic_check: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchSettings {
    /// Records (consumed, superseded ones included) after which a batch is flushed.
    pub max_records: usize,
    /// Bytes of the records a batch holds (key and value as consumed); a record replaced
    /// by a newer one of the same entity no longer counts.
    pub max_bytes: usize,
    /// Data sources plus policies per batch. Every view a batch rebuilds holds locks until
    /// it commits, and PostgreSQL's lock table is sized by max_locks_per_transaction.
    pub max_definitions: usize,
    /// The longest a batch waits for more records while they keep coming. A lane with no
    /// batch in flight applies its batch as soon as its consumer has nothing more ready;
    /// records that arrive during an apply form the next batch (group commit).
    #[serde(
        rename = "linger_ms",
        deserialize_with = "millis",
        serialize_with = "write_millis"
    )]
    pub linger: Duration,
    /// Longest backoff between retries of a failing batch.
    #[serde(
        rename = "max_backoff_ms",
        deserialize_with = "millis",
        serialize_with = "write_millis"
    )]
    pub max_backoff: Duration,
    /// How long a SIGTERM may take to drain the batch in flight.
    #[serde(
        rename = "shutdown_timeout_ms",
        deserialize_with = "millis",
        serialize_with = "write_millis"
    )]
    pub shutdown_timeout: Duration,
    /// Longest one batch transaction may take before it is abandoned and retried (a
    /// warehouse that stops answering must not stall rebalances forever).
    #[serde(
        rename = "apply_timeout_ms",
        deserialize_with = "millis",
        serialize_with = "write_millis"
    )]
    pub apply_timeout: Duration,
    /// Concurrent batch transactions per integration. Profile partitions are spread over
    /// them (each partition always in the same one); data sources, policies and
    /// impersonation always share the first, so view rebuilds never run concurrently.
    /// Each lane batches on its own, with `max_records` and `max_bytes` per lane.
    pub lanes: usize,
    /// How many distinct entities a lane's batch may take in from a backlog: while the
    /// batch before it is applied, or for `backlog_wait` once it holds `max_records`.
    /// Newer records of entities it holds replace the older ones, so a backlog is
    /// written in fewer, larger transactions, one row per entity instead of one per
    /// change. Never below `max_records`. Memory: up to two such batches per lane, at a
    /// 128-byte entry (`a_profile_entry_stays_small`) plus its key and record per
    /// entity. The default holds a 100,000-user directory's share of each of two lanes,
    /// and its hash table stays at 65,536 slots (hashbrown fills 7/8 of them before it
    /// doubles: 60,000 entities took 131,072, 19 MB a batch).
    pub backlog_entries: usize,
    /// How long a batch that has reached `max_records` may go on taking in records while
    /// its consumer has more ready (a backlog), counted from its first record: up to
    /// `backlog_entries` entities, newer records of an entity replacing older ones. The
    /// longer it absorbs, the fewer rows a backlog costs the warehouse; a change in a
    /// backlog waits at most this long for its batch to be applied. 0 applies a batch as
    /// soon as it holds `max_records` and no batch is in flight.
    #[serde(
        rename = "backlog_wait_ms",
        deserialize_with = "millis",
        serialize_with = "write_millis"
    )]
    pub backlog_wait: Duration,
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings {
            max_records: 5000,
            max_bytes: 16 * 1024 * 1024,
            max_definitions: 500,
            linger: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(20),
            apply_timeout: Duration::from_secs(120),
            lanes: 2,
            backlog_entries: 56_000,
            backlog_wait: Duration::from_millis(2000),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Address for /metrics, /health and /ready; empty disables the server.
    pub listen: String,
    /// How often the consumer lag gauge is refreshed, also when idle.
    #[serde(
        rename = "lag_refresh_ms",
        deserialize_with = "millis",
        serialize_with = "write_millis"
    )]
    pub lag_refresh: Duration,
    /// How long an integration may go without being able to apply before `/health`
    /// reports it failing and `/ready` answers 503.
    #[serde(
        rename = "failing_after_ms",
        deserialize_with = "millis",
        serialize_with = "write_millis"
    )]
    pub failing_after: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            listen: "127.0.0.1:9464".into(),
            lag_refresh: Duration::from_secs(5),
            failing_after: FAILING_AFTER,
        }
    }
}

#[derive(Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchemaRegistrySettings {
    /// `http://` or `https://`.
    #[serde(serialize_with = "super::redact::write_registry_url")]
    pub url: Option<String>,
    /// PEM root certificate(s) for an `https://` registry; the system's trust store
    /// without it.
    pub ssl_ca_location: Option<std::path::PathBuf>,
    /// HTTP basic auth as Confluent's `basic.auth.user.info`: `user:password`
    /// (`POLICY_PUSH_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO`, or `..._FILE`).
    #[serde(serialize_with = "super::redact::write_secret")]
    pub basic_auth_user_info: Option<String>,
    /// A bearer token (`POLICY_PUSH_SCHEMA_REGISTRY_BEARER_AUTH_TOKEN`, or `..._FILE`).
    #[serde(serialize_with = "super::redact::write_secret")]
    pub bearer_auth_token: Option<String>,
    /// A file holding `basic_auth_user_info`, read again for every request, so that
    /// rotated credentials are used without a restart (`..._BASIC_AUTH_USER_INFO_FILE`).
    pub basic_auth_user_info_file: Option<std::path::PathBuf>,
    /// A file holding the bearer token, read again for every request
    /// (`..._BEARER_AUTH_TOKEN_FILE`).
    pub bearer_auth_token_file: Option<std::path::PathBuf>,
}

/// A registry URL may carry credentials in its user info; the others are secrets.
impl std::fmt::Debug for SchemaRegistrySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("SchemaRegistrySettings")
            .field("url", &self.url.as_deref().map(redact_registry_url))
            .field("ssl_ca_location", &self.ssl_ca_location)
            .field("basic_auth_user_info", &hidden(&self.basic_auth_user_info))
            .field("bearer_auth_token", &hidden(&self.bearer_auth_token))
            .field("basic_auth_user_info_file", &self.basic_auth_user_info_file)
            .field("bearer_auth_token_file", &self.bearer_auth_token_file)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `text`, `json`, or `auto` (text on a terminal, JSON otherwise).
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Text on a terminal, JSON otherwise.
    Auto,
    Text,
    Json,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: LogFormat::Auto,
        }
    }
}

/// How long a gauge that is not refreshed stays in /metrics (the telemetry recorder's
/// idle timeout); here because `http.lag_refresh_ms` must stay below it.
pub const GAUGE_IDLE: Duration = Duration::from_secs(30);

/// The default of `http.failing_after_ms`.
pub const FAILING_AFTER: Duration = Duration::from_secs(30);
