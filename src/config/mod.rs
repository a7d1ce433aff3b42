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
    /// Consume only these kinds' topics (replay's first phase). Not a configuration key.
    #[serde(skip)]
    pub only: Option<Vec<crate::event::Kind>>,
    /// Read exactly these partitions without joining the consumer group (replay, which
    /// would otherwise wait for a group join per phase). Not a configuration key.
    #[serde(skip)]
    pub assign: Option<Vec<(String, i32)>>,
}

impl ConsumerSettings {
    /// The input topics this consumer subscribes to.
    pub fn subscriptions(&self, topics: &Topics) -> Vec<String> {
        crate::event::Kind::ALL
            .into_iter()
            .filter(|k| self.only.as_ref().is_none_or(|only| only.contains(k)))
            .map(|k| topics.topic(k).to_string())
            .collect()
    }
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        ConsumerSettings {
            group_prefix: "policy-push".into(),
            channel_capacity: 10_000,
            only: None,
            assign: None,
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
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            listen: "127.0.0.1:9464".into(),
            lag_refresh_ms: 5000,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    Postgres,
    Redshift,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Integration {
    pub name: String,
    pub host: String,
    pub url: String,
    #[serde(default = "default_dialect")]
    pub dialect: Dialect,
    #[serde(default = "default_view_schema")]
    pub view_schema: String,
    /// Group whose members may call `impersonate_user`. Roles are cluster-wide, so two
    /// integrations on one cluster should use different names.
    #[serde(default = "default_impersonator_role")]
    pub impersonator_role: String,
    /// Record every applied change in `immuta_system.apply_log` (an audit of exactly-once).
    #[serde(default)]
    pub audit: bool,
    /// Warehouse connections kept for this integration.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// PostgreSQL's `synchronous_commit` for policy-push's own sessions; `off` unless set,
    /// which is safe only because a batch's offsets are in its own transaction (README,
    /// "Commits without waiting for the WAL flush"). Redshift has no such setting, so it is
    /// refused there.
    #[serde(default)]
    pub synchronous_commit: Option<SynchronousCommit>,
    /// Set from `POLICY_PUSH_INTEGRATION_<NAME>_PASSWORD`; never read from the file.
    #[serde(skip)]
    pub password: Option<String>,
    /// PostgreSQL: roll back a refused record alone in a savepoint (the default). Off, it
    /// behaves as Redshift, which has none: a refusal fails the batch and the applier
    /// isolates the refused records by splitting it. For testing that path.
    #[serde(default = "yes")]
    pub savepoints: bool,
    /// The setup user's connection, used by `bootstrap` only: the role that creates the
    /// impersonator role and owns the procedures that change its membership (README,
    /// "Two roles"). Without it, bootstrap does everything through `url`, whose role then
    /// needs those rights itself.
    #[serde(default)]
    pub setup_url: Option<String>,
    /// Set from `POLICY_PUSH_INTEGRATION_<NAME>_SETUP_PASSWORD`; never read from the file.
    #[serde(skip)]
    pub setup_password: Option<String>,
    /// libpq's `sslmode` for both connections, unless their URL has one (`warehouse`).
    #[serde(default)]
    pub sslmode: Option<SslMode>,
    /// The root certificate(s) a verifying `sslmode` checks the server against; the
    /// system's trust store without it.
    #[serde(default)]
    pub sslrootcert: Option<std::path::PathBuf>,
    /// Where the system account's password comes from at each new connection, when it
    /// is not in the URL (`secrets`).
    #[serde(skip)]
    pub password_source: secrets::Source,
    /// A command whose standard output is the system account's password, run for each new
    /// connection (temporary credentials; README, "Secrets").
    #[serde(default)]
    pub password_command: Option<String>,
}

/// The values of PostgreSQL's `synchronous_commit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SynchronousCommit {
    On,
    Off,
    Local,
    RemoteWrite,
    RemoteApply,
}

impl SynchronousCommit {
    pub fn as_sql(self) -> &'static str {
        match self {
            SynchronousCommit::On => "on",
            SynchronousCommit::Off => "off",
            SynchronousCommit::Local => "local",
            SynchronousCommit::RemoteWrite => "remote_write",
            SynchronousCommit::RemoteApply => "remote_apply",
        }
    }
}

fn yes() -> bool {
    true
}

fn default_dialect() -> Dialect {
    Dialect::Postgres
}
fn default_view_schema() -> String {
    "immuta".into()
}
fn default_impersonator_role() -> String {
    "immuta_impersonator".into()
}
fn default_pool_size() -> usize {
    4
}

impl std::fmt::Debug for Integration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Integration")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("url", &redact_url(&self.url))
            .field("dialect", &self.dialect)
            .field("view_schema", &self.view_schema)
            .field("impersonator_role", &self.impersonator_role)
            .field("audit", &self.audit)
            .field("synchronous_commit", &self.synchronous_commit)
            .field("savepoints", &self.savepoints)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("setup_url", &self.setup_url.as_deref().map(redact_url))
            .field(
                "setup_password",
                &self.setup_password.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Integration {
    /// Connection settings, with the password from the environment when the URL has none.
    pub fn pg_config(&self) -> Result<tokio_postgres::Config, ConfigError> {
        self.connection("url", &self.url, self.password.as_deref())
    }

    /// The setup user's connection settings (`setup_url`), or the system role's.
    pub fn setup_config(&self) -> Result<tokio_postgres::Config, ConfigError> {
        match &self.setup_url {
            Some(url) => self.connection("setup_url", url, self.setup_password.as_deref()),
            None => self.pg_config(),
        }
    }

    /// The system account's TLS settings.
    pub fn tls(&self) -> Result<Tls, ConfigError> {
        self.tls_of("url", &self.url)
    }

    /// The setup user's TLS settings.
    pub fn setup_tls(&self) -> Result<Tls, ConfigError> {
        match &self.setup_url {
            Some(url) => self.tls_of("setup_url", url),
            None => self.tls(),
        }
    }

    fn tls_of(&self, key: &str, url: &str) -> Result<Tls, ConfigError> {
        let at = format!("integration.{}.{key}", self.name);
        let split = warehouse::split_tls(url).map_err(|e| invalid(&at, e))?;
        let mode = match split.sslmode {
            Some(m) => {
                let mode = SslMode::parse(&m).ok_or_else(|| {
                    invalid(
                        &at,
                        format!(
                            "sslmode={m}: use disable, prefer, require, verify-ca or verify-full"
                        ),
                    )
                })?;
                if self.sslmode.is_some_and(|s| s != mode) {
                    return Err(invalid(
                        &at,
                        "sslmode differs from the integration's sslmode key; set one",
                    ));
                }
                mode
            }
            None => self.sslmode.unwrap_or(SslMode::Prefer),
        };
        let root_cert = split
            .sslrootcert
            .map(std::path::PathBuf::from)
            .or_else(|| self.sslrootcert.clone());
        Ok(Tls { mode, root_cert })
    }

    fn connection(
        &self,
        key: &str,
        url: &str,
        password: Option<&str>,
    ) -> Result<tokio_postgres::Config, ConfigError> {
        let at = format!("integration.{}.{key}", self.name);
        let split = warehouse::split_tls(url).map_err(|e| invalid(&at, e))?;
        let mut cfg = tokio_postgres::Config::from_str(&split.rest)
            .map_err(|e| invalid(&at, format!("not a PostgreSQL URL: {e}")))?;
        cfg.ssl_mode(match self.tls_of(key, url)?.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        if cfg.get_password().is_none() {
            if let Some(pw) = password {
                cfg.password(pw.as_bytes());
            }
        }
        if cfg.get_application_name().is_none() {
            cfg.application_name("policy-push");
        }
        if cfg.get_connect_timeout().is_none() {
            cfg.connect_timeout(std::time::Duration::from_secs(10));
        }
        // Detect a warehouse that vanished without closing the connection.
        cfg.keepalives(true)
            .keepalives_idle(std::time::Duration::from_secs(30));
        Ok(cfg)
    }

    /// The database the views live in (lower case).
    pub fn database(&self) -> Result<String, ConfigError> {
        let cfg = self.pg_config()?;
        let db = cfg.get_dbname().or(cfg.get_user()).ok_or_else(|| {
            invalid(
                format!("integration.{}.url", self.name),
                "names no database",
            )
        })?;
        Ok(db.to_ascii_lowercase())
    }

    pub fn consumer_group(&self, prefix: &str) -> String {
        format!("{prefix}.{}", self.name)
    }
}

/// How long a gauge that is not refreshed stays in /metrics (the telemetry recorder's
/// idle timeout); here because `http.lag_refresh_ms` must stay below it.
pub const GAUGE_IDLE: std::time::Duration = std::time::Duration::from_secs(30);

mod redact;
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

    fn validate_registry(&self) -> Result<(), ConfigError> {
        let r = &self.schema_registry;
        let Some(url) = &r.url else {
            return Ok(());
        };
        if !url.starts_with("http://") && !url.starts_with("https://") {
            return Err(invalid(
                "schema_registry.url",
                "must be http:// or https://",
            ));
        }
        if r.ssl_ca_location.is_some() && !url.starts_with("https://") {
            return Err(invalid(
                "schema_registry.ssl_ca_location",
                "needs an https:// url",
            ));
        }
        let ways = [
            r.basic_auth_user_info.is_some(),
            r.bearer_auth_token.is_some(),
            r.basic_auth_user_info_file.is_some(),
            r.bearer_auth_token_file.is_some(),
        ];
        if ways.iter().filter(|w| **w).count() > 1 {
            return Err(invalid(
                "schema_registry",
                "set one of basic_auth_user_info, bearer_auth_token and their _file forms",
            ));
        }
        for path in [&r.basic_auth_user_info_file, &r.bearer_auth_token_file]
            .into_iter()
            .flatten()
        {
            secrets::read_file(path).map_err(|e| invalid("schema_registry", e.to_string()))?;
        }
        if r.basic_auth_user_info
            .as_ref()
            .is_some_and(|u| !u.contains(':'))
        {
            return Err(invalid(
                "schema_registry.basic_auth_user_info",
                "must be user:password",
            ));
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let t = &self.topics;
        for (key, v) in [
            ("topics.profiles", &t.profiles),
            ("topics.data_sources", &t.data_sources),
            ("topics.policies", &t.policies),
            ("topics.impersonation", &t.impersonation),
            ("topics.dead_letter", &t.dead_letter),
        ] {
            if v.is_empty() {
                return Err(invalid(key, "must not be empty"));
            }
        }
        let mut inputs = t.inputs().to_vec();
        inputs.push(&t.dead_letter);
        inputs.sort();
        if inputs.windows(2).any(|w| w[0] == w[1]) {
            return Err(invalid("topics", "every topic must be distinct"));
        }
        if self.consumer.group_prefix.is_empty() {
            return Err(invalid("consumer.group_prefix", "must not be empty"));
        }
        if self.consumer.channel_capacity == 0 {
            return Err(invalid("consumer.channel_capacity", "must be at least 1"));
        }
        if !(1..=16).contains(&self.batch.lanes) {
            return Err(invalid("batch.lanes", "must be between 1 and 16"));
        }
        if self.batch.max_definitions == 0 {
            return Err(invalid("batch.max_definitions", "must be at least 1"));
        }
        if self.batch.max_records == 0 {
            return Err(invalid("batch.max_records", "must be at least 1"));
        }
        if self.http.lag_refresh_ms == 0
            || self.http.lag_refresh_ms >= GAUGE_IDLE.as_millis() as u64
        {
            return Err(invalid(
                "http.lag_refresh_ms",
                "must be between 1 and 29999",
            ));
        }
        if self.batch.apply_timeout_ms == 0 {
            return Err(invalid("batch.apply_timeout_ms", "must be at least 1"));
        }
        if self.batch.max_bytes == 0 {
            return Err(invalid("batch.max_bytes", "must be at least 1"));
        }
        if !self.http.listen.is_empty() && self.http.listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(invalid(
                "http.listen",
                "must be host:port, e.g. 127.0.0.1:9464",
            ));
        }
        self.validate_registry()?;
        if !["auto", "text", "json"].contains(&self.log.format.as_str()) {
            return Err(invalid("log.format", "must be auto, text or json"));
        }
        if self.integrations.is_empty() {
            return Err(invalid(
                "integration",
                "at least one [[integration]] is required",
            ));
        }
        let mut names = std::collections::HashSet::new();
        for i in &self.integrations {
            self.validate_integration(i)?;
            if !names.insert(&i.name) {
                return Err(invalid(
                    format!("integration.{}.name", i.name),
                    "names must be unique",
                ));
            }
        }
        Ok(())
    }

    fn validate_integration(&self, i: &Integration) -> Result<(), ConfigError> {
        let key = |k: &str| format!("integration.{}.{k}", i.name);
        if i.name.is_empty()
            || !i
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid(
                "integration.name",
                format!("{:?}: use letters, digits, - and _", i.name),
            ));
        }
        if i.host.is_empty() {
            return Err(invalid(key("host"), "must not be empty"));
        }
        crate::event::identifier(&key("view_schema"), &i.view_schema)
            .map_err(|e| invalid(key("view_schema"), e.to_string()))?;
        crate::event::identifier(&key("impersonator_role"), &i.impersonator_role)
            .map_err(|e| invalid(key("impersonator_role"), e.to_string()))?;
        if i.view_schema.starts_with("immuta_") {
            return Err(invalid(
                key("view_schema"),
                "the immuta_* schemas are reserved for the integration",
            ));
        }
        // One connection per lane, plus one for reading offsets at assignment.
        if i.pool_size < self.batch.lanes + 1 {
            return Err(invalid(
                key("pool_size"),
                format!(
                    "must be at least batch.lanes + 1 ({})",
                    self.batch.lanes + 1
                ),
            ));
        }
        if i.dialect == Dialect::Redshift && i.synchronous_commit.is_some() {
            return Err(invalid(
                key("synchronous_commit"),
                "Redshift has no synchronous_commit; remove the key",
            ));
        }
        i.database()?;
        Ok(())
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

/// librdkafka takes every value as a string; accept TOML numbers and booleans too.
fn stringify_kafka(doc: &mut toml::Table) -> Result<(), ConfigError> {
    let Some(kafka) = doc.get_mut("kafka") else {
        return Ok(());
    };
    let table = kafka
        .as_table_mut()
        .ok_or_else(|| invalid("kafka", "must be a table"))?;
    for (k, v) in table.iter_mut() {
        let s = match v {
            toml::Value::String(_) => continue,
            toml::Value::Integer(n) => n.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Float(f) => f.to_string(),
            _ => {
                return Err(invalid(
                    format!("kafka.{k}"),
                    "must be a string, number or boolean",
                ))
            }
        };
        *v = toml::Value::String(s);
    }
    Ok(())
}

fn env_name(name: &str) -> String {
    name.to_ascii_uppercase().replace('-', "_")
}

const SECTIONS: [&str; 6] = [
    "schema_registry",
    "consumer",
    "topics",
    "batch",
    "http",
    "log",
];

/// Integration passwords from the environment, by (integration, `password` or
/// `setup_password`).
type Passwords = BTreeMap<(String, &'static str), String>;

/// Applies `POLICY_PUSH_*` variables to the document; returns integration passwords by
/// upper-cased integration name.
fn apply_env(
    doc: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Passwords, ConfigError> {
    let mut passwords: Passwords = BTreeMap::new();
    for (var, val) in env {
        let Some(rest) = var.strip_prefix("POLICY_PUSH_") else {
            continue;
        };
        // A secret from a file. The warehouse passwords' and the registry credentials'
        // files are kept as paths and read again for each connection or request
        // (`secrets`); any other is read now.
        let (rest, val) = match rest.strip_suffix("_FILE") {
            Some(base) if !kept_as_path(base) => {
                let text = secrets::read_file(Path::new(&val))
                    .map_err(|e| invalid(&var, e.to_string()))?;
                (base, text)
            }
            _ => (rest, val),
        };
        let lower = rest.to_ascii_lowercase();
        if let Some(prop) = lower.strip_prefix("kafka_") {
            let table = section(doc, "kafka")?;
            table.insert(prop.replace('_', "."), toml::Value::String(val));
        } else if let Some(tail) = rest.strip_prefix("INTEGRATION_") {
            apply_integration_env(doc, tail, val, &mut passwords, &var)?;
        } else if let Some(sec) = SECTIONS
            .iter()
            .find(|s| lower.starts_with(&format!("{s}_")))
        {
            let key = &lower[sec.len() + 1..];
            section(doc, sec)?.insert(key.to_string(), scalar(&val));
        }
    }
    Ok(passwords)
}

fn apply_integration_env(
    doc: &mut toml::Table,
    tail: &str,
    val: String,
    passwords: &mut Passwords,
    var: &str,
) -> Result<(), ConfigError> {
    let Some(list) = doc.get_mut("integration").and_then(|v| v.as_array_mut()) else {
        return Err(invalid(var, "there is no [[integration]] to override"));
    };
    for item in list.iter_mut() {
        let Some(table) = item.as_table_mut() else {
            continue;
        };
        let Some(name) = table.get("name").and_then(|n| n.as_str()).map(env_name) else {
            continue;
        };
        let Some(key) = tail.strip_prefix(&format!("{name}_")) else {
            continue;
        };
        let key = key.to_ascii_lowercase();
        if let Some(kind) = [
            "password",
            "setup_password",
            "password_file",
            "setup_password_file",
        ]
        .into_iter()
        .find(|k| *k == key)
        {
            passwords.insert((name, kind), val);
        } else {
            table.insert(key, scalar(&val));
        }
        return Ok(());
    }
    Err(invalid(var, "names no configured integration"))
}

/// `INTEGRATION_<NAME>_PASSWORD`, `..._SETUP_PASSWORD`, or a registry credential.
fn kept_as_path(var: &str) -> bool {
    (var.starts_with("INTEGRATION_") && var.ends_with("_PASSWORD"))
        || var == "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO"
        || var == "SCHEMA_REGISTRY_BEARER_AUTH_TOKEN"
}

fn section<'a>(doc: &'a mut toml::Table, name: &str) -> Result<&'a mut toml::Table, ConfigError> {
    doc.entry(name.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .ok_or_else(|| invalid(name, "must be a table"))
}

/// Environment values are strings; numbers and booleans are typed so that numeric keys
/// such as `batch.max_records` can be overridden.
fn scalar(v: &str) -> toml::Value {
    if let Ok(n) = v.parse::<i64>() {
        toml::Value::Integer(n)
    } else if let Ok(b) = v.parse::<bool>() {
        toml::Value::Boolean(b)
    } else {
        toml::Value::String(v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTRACT: &str = r#"
[kafka]
"bootstrap.servers" = "127.0.0.1:9092"

[topics]
profiles = "immuta.profiles"
data_sources = "immuta.data_sources"
policies = "immuta.policies"
impersonation = "immuta.impersonation"
dead_letter = "immuta.dead_letter"

[consumer]
group_prefix = "policy-push"

[batch]
max_records = 5000
linger_ms = 100

[http]
listen = "127.0.0.1:9464"

[schema_registry]

[[integration]]
name = "primary"
host = "127.0.0.1"
url = "postgres://postgres@127.0.0.1:5432/immuta"
dialect = "postgres"
view_schema = "immuta"
"#;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_spec_contract_file_parses() {
        let c = Config::from_toml(CONTRACT, vec![]).unwrap();
        assert_eq!(c.kafka["bootstrap.servers"], "127.0.0.1:9092");
        assert_eq!(
            c.integrations[0].consumer_group(&c.consumer.group_prefix),
            "policy-push.primary"
        );
        assert_eq!(c.integrations[0].database().unwrap(), "immuta");
        assert_eq!(c.batch.max_records, 5000);
    }

    #[test]
    fn shipped_config_files_parse() {
        for text in [
            include_str!("../../policy-push.example.toml"),
            include_str!("../../deploy/policy-push.toml"),
        ] {
            let c = Config::from_toml(text, vec![]).unwrap();
            assert_eq!(c.integrations[0].name, "primary");
        }
    }

    #[test]
    fn environment_overrides_every_section() {
        let c = Config::from_toml(
            CONTRACT,
            env(&[
                ("POLICY_PUSH_KAFKA_SASL_PASSWORD", "hunter2"),
                ("POLICY_PUSH_BATCH_LINGER_MS", "7"),
                ("POLICY_PUSH_SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081"),
                ("POLICY_PUSH_INTEGRATION_PRIMARY_PASSWORD", "s3cret"),
                ("POLICY_PUSH_INTEGRATION_PRIMARY_AUDIT", "true"),
            ]),
        )
        .unwrap();
        assert_eq!(c.kafka["sasl.password"], "hunter2");
        assert_eq!(c.batch.linger_ms, 7);
        assert_eq!(
            c.schema_registry.url.as_deref(),
            Some("http://127.0.0.1:8081")
        );
        assert!(c.integrations[0].audit);
        assert_eq!(
            c.integrations[0].pg_config().unwrap().get_password(),
            Some(&b"s3cret"[..])
        );
    }

    #[test]
    fn secrets_never_show_in_display_forms() {
        let text = CONTRACT.replace("postgres://postgres@", "postgres://postgres:urlpass@");
        let c = Config::from_toml(
            &text,
            env(&[
                ("POLICY_PUSH_KAFKA_SASL_PASSWORD", "hunter2"),
                ("POLICY_PUSH_INTEGRATION_PRIMARY_PASSWORD", "s3cret"),
            ]),
        )
        .unwrap();
        let shown = c.redacted() + &format!("{c:?}");
        for secret in ["hunter2", "s3cret", "urlpass"] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn errors_name_the_offending_key() {
        let cases = [
            (
                CONTRACT.replace("linger_ms = 100", "linger_ms = \"soon\""),
                "linger_ms",
            ),
            (
                CONTRACT.replace("max_records = 5000", "max_records = 0"),
                "batch.max_records",
            ),
            (
                CONTRACT.replace("view_schema = \"immuta\"", "view_schema = \"a b\""),
                "view_schema",
            ),
            (
                CONTRACT.replace("[batch]", "[batch]\nmax_recordz = 1"),
                "max_recordz",
            ),
            (
                CONTRACT.replace("listen = \"127.0.0.1:9464\"", "listen = \"nowhere\""),
                "http.listen",
            ),
            (
                CONTRACT.replace("dialect = \"postgres\"", "dialect = \"oracle\""),
                "dialect",
            ),
            (
                CONTRACT.replace(
                    "dialect = \"postgres\"",
                    "dialect = \"redshift\"\nsynchronous_commit = \"off\"",
                ),
                "integration.primary.synchronous_commit",
            ),
            (
                CONTRACT.replace(
                    "dialect = \"postgres\"",
                    "dialect = \"postgres\"\nsynchronous_commit = \"maybe\"",
                ),
                "synchronous_commit",
            ),
        ];
        for (text, key) in cases {
            let err = Config::from_toml(&text, vec![]).unwrap_err().to_string();
            assert!(err.contains(key), "{key} not named in: {err}");
        }
    }

    #[test]
    fn synchronous_commit_is_unset_by_default_and_takes_postgres_values() {
        let c = Config::from_toml(CONTRACT, vec![]).unwrap();
        assert_eq!(c.integrations[0].synchronous_commit, None);
        let c = Config::from_toml(
            CONTRACT,
            env(&[(
                "POLICY_PUSH_INTEGRATION_PRIMARY_SYNCHRONOUS_COMMIT",
                "remote_apply",
            )]),
        )
        .unwrap();
        assert_eq!(
            c.integrations[0].synchronous_commit,
            Some(SynchronousCommit::RemoteApply)
        );
    }

    #[test]
    fn a_consumer_can_be_limited_to_some_kinds() {
        use crate::event::Kind;
        let topics = Topics::default();
        let mut c = ConsumerSettings::default();
        assert_eq!(c.subscriptions(&topics).len(), 4);
        c.only = Some(vec![Kind::Profile, Kind::Policy]);
        assert_eq!(
            c.subscriptions(&topics),
            ["immuta.profiles", "immuta.policies"]
        );
    }
}
