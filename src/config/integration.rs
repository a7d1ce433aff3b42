//! One `[[integration]]`: a warehouse host, its connections and its dialect.

use super::redact::redact_url;
use super::warehouse::{SslMode, Tls};
use super::{invalid, secrets, unusable, warehouse, ConfigError};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    Postgres,
    Redshift,
}

#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Integration {
    pub name: String,
    pub host: String,
    #[serde(serialize_with = "super::redact::write_conn")]
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
    #[serde(default, serialize_with = "super::redact::write_url")]
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
    #[serde(default, serialize_with = "super::redact::write_secret")]
    pub password_command: Option<String>,
    /// The secret HASH masks hash with each value (SPEC §4), from
    /// `POLICY_PUSH_INTEGRATION_<NAME>_HASH_SALT` or its `_FILE`; never read from the
    /// file, never printed. Without it a HASH is the SHA-256 of the bare value.
    #[serde(skip)]
    pub hash_salt: Option<String>,
    /// The most bytes one stored definition or profile value set may hold; more is
    /// withheld and dead-lettered (`apply::txn::definitions`). Redshift's is a varchar's
    /// 65,535 bytes, which this can only lower; on PostgreSQL there is none unless set,
    /// which is how the tests run the Redshift path there.
    #[serde(default)]
    pub max_stored_bytes: Option<usize>,
    /// How long view DDL waits for a lock an analyst's open transaction holds before it
    /// gives up and the batch applies without it (`view_lock_timeout`).
    #[serde(
        default,
        rename = "view_lock_timeout_ms",
        deserialize_with = "super::millis::optional_millis",
        serialize_with = "super::millis::write_optional_millis"
    )]
    pub view_lock_timeout: Option<Duration>,
    /// PostgreSQL: terminate the sessions that have held up a view rebuild this long
    /// (through `immuta_procedures.terminate_view_blockers`, README "Open transactions").
    /// Never, unless set.
    #[serde(
        default,
        rename = "terminate_blockers_after_ms",
        deserialize_with = "super::millis::optional_millis",
        serialize_with = "super::millis::write_optional_millis"
    )]
    pub terminate_blockers_after: Option<Duration>,
}

/// The values of PostgreSQL's `synchronous_commit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
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

impl Integration {
    /// How long view DDL waits for a lock: on PostgreSQL `lock_timeout`, so that the
    /// analysts' reads that queue behind the waiting DDL wait no longer than this; on
    /// Redshift, which has no lock timeout, `statement_timeout` of the view statements,
    /// which also counts their own run time, hence the longer default.
    pub fn view_lock_timeout(&self) -> Duration {
        self.view_lock_timeout.unwrap_or(match self.dialect {
            Dialect::Postgres => Duration::from_millis(500),
            Dialect::Redshift => Duration::from_secs(5),
        })
    }
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
            .field("hash_salt", &self.hash_salt.as_ref().map(|_| "<redacted>"))
            .field("max_stored_bytes", &self.max_stored_bytes)
            .field("view_lock_timeout", &self.view_lock_timeout())
            .field("terminate_blockers_after", &self.terminate_blockers_after)
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
        self.target(key, url).map(|(_, tls)| tls)
    }

    /// The connection string without its TLS parameters, and the TLS settings they and
    /// the integration's keys make.
    fn target(&self, key: &str, url: &str) -> Result<(String, Tls), ConfigError> {
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
        Ok((split.rest, Tls { mode, root_cert }))
    }

    fn connection(
        &self,
        key: &str,
        url: &str,
        password: Option<&str>,
    ) -> Result<tokio_postgres::Config, ConfigError> {
        let at = format!("integration.{}.{key}", self.name);
        let (rest, tls) = self.target(key, url)?;
        let mut cfg = tokio_postgres::Config::from_str(&rest).map_err(|e| unusable(&at, e))?;
        cfg.ssl_mode(match tls.mode {
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
