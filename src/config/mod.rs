//! Configuration: one TOML file (SPEC §6) plus environment overrides.
//!
//! Environment overrides, applied on top of the file before validation:
//! - `POLICY_PUSH_KAFKA_<PROP>` sets librdkafka property `<prop>` with `_` read as `.`
//!   (`POLICY_PUSH_KAFKA_SASL_PASSWORD` sets `sasl.password`);
//! - `POLICY_PUSH_<SECTION>_<KEY>` sets a scalar key of `[topics]`, `[consumer]`, `[batch]`,
//!   `[http]`, `[schema_registry]` or `[log]` (`POLICY_PUSH_BATCH_LINGER_MS=50`);
//! - `POLICY_PUSH_ERRORS_TOLERANCE_<TOPIC>` sets `[errors.tolerance]` for one input topic
//!   (`POLICY_PUSH_ERRORS_TOLERANCE_POLICIES=none`), `POLICY_PUSH_ERRORS_TOLERANCE` for all;
//! - `POLICY_PUSH_INTEGRATION_<NAME>_<KEY>` sets a key of the integration called `<name>`
//!   (upper case, `-` read as `_`); `..._PASSWORD` supplies the warehouse password so it
//!   never has to be in the file.
//!
//! Secrets (passwords, SASL/SSL secrets) never appear in `Debug`, logs or errors: see
//! [`Config::redacted`].

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Class, Classify};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid configuration")]
    Parse(#[from] toml::de::Error),
    #[error("invalid configuration: `{key}`: {reason}")]
    Invalid { key: String, reason: String },
    /// `key` names something that cannot be used (a file that cannot be read, a URL that
    /// does not parse); `source` says why.
    #[error("invalid configuration: `{key}`")]
    Unusable {
        key: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
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

pub fn unusable(
    key: impl Into<String>,
    source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> ConfigError {
    ConfigError::Unusable {
        key: key.into(),
        source: source.into(),
    }
}

#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// librdkafka properties, passed through verbatim.
    #[serde(default, serialize_with = "redact::write_kafka")]
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

#[derive(Debug, Clone, Deserialize, Serialize)]
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

    /// Every topic, each with whether it should be compacted: the input topics are (each
    /// record is an entity's whole state), the dead-letter topic is not.
    pub fn with_compaction(&self) -> [(&str, bool); 5] {
        [
            (&self.profiles, true),
            (&self.data_sources, true),
            (&self.policies, true),
            (&self.impersonation, true),
            (&self.dead_letter, false),
        ]
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

mod env;
use env::{apply_env, env_name, stringify_kafka};
mod tolerance;
pub use tolerance::{ErrorSettings, Tolerance, ToleranceByTopic};
mod integration;
mod millis;
mod sections;
pub use sections::{
    BatchSettings, ConsumerSettings, HttpSettings, LogFormat, LogSettings, SchemaRegistrySettings,
    FAILING_AFTER, GAUGE_IDLE,
};
mod redact;
mod validate;
pub use integration::{Dialect, Integration, SynchronousCommit};
pub use redact::{is_secret_property, redact_registry_url, redact_url};
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
        let mut doc: toml::Table = text.parse().map_err(ConfigError::Parse)?;
        stringify_kafka(&mut doc)?;
        let passwords = apply_env(&mut doc, env)?;
        let mut config: Config = toml::Value::Table(doc)
            .try_into()
            .map_err(ConfigError::Parse)?;
        for i in &mut config.integrations {
            let get = |kind| passwords.get(&(env_name(&i.name), kind)).cloned();
            i.password = get("password");
            i.setup_password = get("setup_password");
            i.hash_salt = get("hash_salt");
            if let Some(path) = get("password_file") {
                // Read now too, so that a missing file is reported at start.
                let path = std::path::PathBuf::from(path);
                i.password =
                    Some(secrets::read_file(&path).map_err(|e| {
                        unusable(format!("integration.{}.password_file", i.name), e)
                    })?);
                i.password_source = secrets::Source::File(path);
            }
            if let Some(path) = get("setup_password_file") {
                i.setup_password = Some(secrets::read_file(std::path::Path::new(&path)).map_err(
                    |e| unusable(format!("integration.{}.setup_password_file", i.name), e),
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

impl Config {
    /// The configuration as `run` takes it, in the file's own keys (`linger_ms = 100`),
    /// defaults and `POLICY_PUSH_*` overrides included, every secret shown as
    /// `<redacted>` (`check-config`). It parses as a configuration file; a redacted value
    /// (a password in a URL, `password_command`) must be put back before it is used. The
    /// secrets that come only from the environment are named in comments.
    pub fn effective_toml(&self) -> Result<String, toml::ser::Error> {
        let mut text = toml::to_string(self)?;
        for i in &self.integrations {
            let set = |s: &Option<String>| if s.is_some() { "set" } else { "not set" };
            text += &format!(
                "# integration {}: password {}, setup_password {}, hash_salt {} (from the environment)\n",
                i.name,
                set(&i.password),
                set(&i.setup_password),
                set(&i.hash_salt)
            );
        }
        Ok(text)
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
