//! Configuration: one TOML file (SPEC §6) plus environment overrides.
//!
//! Environment overrides, applied on top of the file before validation:
//! - `POLICY_PUSH_KAFKA_<PROP>` sets librdkafka property `<prop>` with `_` read as `.`
//!   (`POLICY_PUSH_KAFKA_SASL_PASSWORD` sets `sasl.password`);
//! - `POLICY_PUSH_<SECTION>_<KEY>` sets a scalar key of `[topics]`, `[consumer]`, `[batch]`,
//!   `[http]`, `[schema_registry]` or `[log]` (`POLICY_PUSH_BATCH_LINGER_MS=50`);
//! - `POLICY_PUSH_INTEGRATION_<NAME>_<KEY>` sets a key of the integration called `<name>`
//!   (upper case, `-` read as `_`); `..._PASSWORD` supplies the warehouse password so it
//!   never has to be in the file.
//!
//! Secrets (passwords, SASL/SSL secrets) never appear in `Debug`, logs or errors: see
//! [`Config::redacted`].

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;

use serde::Deserialize;

use crate::error::{Class, Classify};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Parse(String),
    #[error("invalid configuration: `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

impl Classify for ConfigError {
    fn class(&self) -> Class {
        Class::Fatal
    }
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// librdkafka properties, passed through verbatim.
    #[serde(default)]
    pub kafka: BTreeMap<String, String>,
    #[serde(default)]
    pub topics: Topics,
    #[serde(default)]
    pub consumer: ConsumerSettings,
    #[serde(default)]
    pub batch: BatchSettings,
    #[serde(default)]
    pub http: HttpSettings,
    #[serde(default)]
    pub schema_registry: SchemaRegistrySettings,
    #[serde(default)]
    pub log: LogSettings,
    #[serde(default)]
    pub errors: ErrorSettings,
    #[serde(default, rename = "integration")]
    pub integrations: Vec<Integration>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Topics {
    pub profiles: String,
    pub data_sources: String,
    pub policies: String,
    pub impersonation: String,
    pub dead_letter: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            profiles: "immuta.profiles".into(),
            data_sources: "immuta.data_sources".into(),
            policies: "immuta.policies".into(),
            impersonation: "immuta.impersonation".into(),
            dead_letter: "immuta.dead_letter".into(),
        }
    }
}

impl Topics {
    pub fn kind_of(&self, topic: &str) -> Option<crate::event::Kind> {
        use crate::event::Kind;
        Kind::ALL.into_iter().find(|k| self.topic(*k) == topic)
    }

    pub fn topic(&self, kind: crate::event::Kind) -> &str {
        use crate::event::Kind;
        match kind {
            Kind::Profile => &self.profiles,
            Kind::DataSource => &self.data_sources,
            Kind::Policy => &self.policies,
            Kind::Impersonation => &self.impersonation,
        }
    }

    /// The topics of `kinds`, in `Kind::ALL` order.
    pub fn of_kinds(&self, kinds: &[crate::event::Kind]) -> Vec<String> {
        crate::event::Kind::ALL
            .into_iter()
            .filter(|k| kinds.contains(k))
            .map(|k| self.topic(k).to_string())
            .collect()
    }

    pub fn inputs(&self) -> [&str; 4] {
        [
            &self.profiles,
            &self.data_sources,
            &self.policies,
            &self.impersonation,
        ]
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsumerSettings {
    pub group_prefix: String,
    /// Decoded records buffered between the consumer thread and the applier. When full,
    /// the consumer pauses its partitions instead of buffering more.
    pub channel_capacity: usize,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        ConsumerSettings {
            group_prefix: "policy-push".into(),
            channel_capacity: 10_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
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
    pub linger_ms: u64,
    /// Longest backoff between retries of a failing batch.
    pub max_backoff_ms: u64,
    /// How long a SIGTERM may take to drain the batch in flight.
    pub shutdown_timeout_ms: u64,
    /// Longest one batch transaction may take before it is abandoned and retried (a
    /// warehouse that stops answering must not stall rebalances forever).
    pub apply_timeout_ms: u64,
    /// Concurrent batch transactions per integration. Profile partitions are spread over
    /// them (each partition always in the same one); data sources, policies and
    /// impersonation always share the first, so view rebuilds never run concurrently.
    /// Each lane batches on its own, with `max_records` and `max_bytes` per lane.
    pub lanes: usize,
    /// While a lane's batch is being applied, the next batch keeps taking records past
    /// `max_records` until it holds this many distinct entities (or `max_bytes` of
    /// records): newer records of entities it holds replace the older ones. So a backlog
    /// is written in fewer, larger transactions, with one row per entity instead of one
    /// per change. Never below `max_records`. Memory: up to two such batches per lane, at
    /// a 128-byte entry (`a_profile_entry_stays_small`) plus its key and record per entity. 20,000 drained the harness's backlog as
    /// fast as 50,000 (11.6–12.0 s against 12.1–12.2 s, from 14.7–15.3 s with batches
    /// of 5,000) at a lower peak RSS (161–190 MB against 198–201 MB).
    pub backlog_entries: usize,
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings {
            max_records: 5000,
            max_bytes: 16 * 1024 * 1024,
            max_definitions: 500,
            linger_ms: 100,
            max_backoff_ms: 30_000,
            shutdown_timeout_ms: 20_000,
            apply_timeout_ms: 120_000,
            lanes: 2,
            backlog_entries: 20_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Address for /metrics, /health and /ready; empty disables the server.
    pub listen: String,
    /// How often the consumer lag gauge is refreshed, also when idle.
    pub lag_refresh_ms: u64,
    /// How long an integration may go without being able to apply before `/health`
    /// reports it failing and `/ready` answers 503.
    pub failing_after_ms: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            listen: "127.0.0.1:9464".into(),
            lag_refresh_ms: 5000,
            failing_after_ms: FAILING_AFTER.as_millis() as u64,
        }
    }
}

#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchemaRegistrySettings {
    /// `http://` or `https://`.
    pub url: Option<String>,
    /// PEM root certificate(s) for an `https://` registry; the system's trust store
    /// without it.
    pub ssl_ca_location: Option<std::path::PathBuf>,
    /// HTTP basic auth as Confluent's `basic.auth.user.info`: `user:password`
    /// (`POLICY_PUSH_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO`, or `..._FILE`).
    pub basic_auth_user_info: Option<String>,
    /// A bearer token (`POLICY_PUSH_SCHEMA_REGISTRY_BEARER_AUTH_TOKEN`, or `..._FILE`).
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
            .field("url", &self.url.as_deref().map(redact_url))
            .field("ssl_ca_location", &self.ssl_ca_location)
            .field("basic_auth_user_info", &hidden(&self.basic_auth_user_info))
            .field("bearer_auth_token", &hidden(&self.bearer_auth_token))
            .field("basic_auth_user_info_file", &self.basic_auth_user_info_file)
            .field("bearer_auth_token_file", &self.bearer_auth_token_file)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `text`, `json`, or `auto` (text on a terminal, JSON otherwise).
    pub format: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: "auto".into(),
        }
    }
}

/// How long a gauge that is not refreshed stays in /metrics (the telemetry recorder's
/// idle timeout); here because `http.lag_refresh_ms` must stay below it.
pub const GAUGE_IDLE: std::time::Duration = std::time::Duration::from_secs(30);

/// The default of `http.failing_after_ms`.
pub const FAILING_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

mod env;
mod errors;
pub use errors::{ErrorSettings, Tolerance, ToleranceByTopic};
mod integration;
mod redact;
mod validate;
use env::*;
pub use integration::{Dialect, Integration, SynchronousCommit};
pub use redact::{is_secret_property, redact_url};
pub mod secrets;
pub mod warehouse;
pub use warehouse::{SslMode, Tls};

impl Config {
    /// Reads the file, applies the process environment, validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_toml(&text, std::env::vars())
    }

    /// Parses TOML text, applies `env` overrides, validates.
    pub fn from_toml(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut doc: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        stringify_kafka(&mut doc)?;
        let passwords = apply_env(&mut doc, env)?;
        let mut config: Config = toml::Value::Table(doc)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        for i in &mut config.integrations {
            let get = |kind| passwords.get(&(env_name(&i.name), kind)).cloned();
            i.password = get("password");
            i.setup_password = get("setup_password");
            if let Some(path) = get("password_file") {
                // Read now too, so that a missing file is reported at start.
                let path = std::path::PathBuf::from(path);
                i.password = Some(secrets::read_file(&path).map_err(|e| {
                    invalid(
                        format!("integration.{}.password_file", i.name),
                        e.to_string(),
                    )
                })?);
                i.password_source = secrets::Source::File(path);
            }
            if let Some(path) = get("setup_password_file") {
                i.setup_password = Some(secrets::read_file(std::path::Path::new(&path)).map_err(
                    |e| {
                        invalid(
                            format!("integration.{}.setup_password_file", i.name),
                            e.to_string(),
                        )
                    },
                )?);
            }
            if let Some(cmd) = &i.password_command {
                if i.password_source != secrets::Source::Fixed {
                    return Err(invalid(
                        format!("integration.{}.password_command", i.name),
                        "the password comes from a file already (..._PASSWORD_FILE); set one",
                    ));
                }
                i.password_source = secrets::Source::Command(cmd.clone());
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Kafka properties with secret values hidden, for display.
    pub fn redacted_kafka(&self) -> BTreeMap<String, String> {
        self.kafka
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    if is_secret_property(k) {
                        "<redacted>".into()
                    } else {
                        v.clone()
                    },
                )
            })
            .collect()
    }

    /// A human-readable summary safe to print or log.
    pub fn redacted(&self) -> String {
        let mut out = format!("kafka = {:?}\n", self.redacted_kafka());
        out += &format!(
            "topics = {:?}\nconsumer = {:?}\nbatch = {:?}\n",
            self.topics, self.consumer, self.batch
        );
        out += &format!(
            "http = {:?}\nschema_registry = {:?}\n",
            self.http, self.schema_registry
        );
        for i in &self.integrations {
            out += &format!("{i:?}\n");
        }
        out
    }
}

/// Debug output goes through the redacted form, so a `{:?}` in a log line cannot leak a
/// Kafka or warehouse secret.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

#[cfg(test)]
mod tests;
