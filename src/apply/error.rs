//! The applier's errors and how each is classified (retryable, poison or fatal).

use std::time::Duration;

use tokio_postgres::error::SqlState;

use super::txn::refusal::{caused_by_record, warehouse_reason};
use crate::batch::TopicPartition;
use crate::error::{Class, Classify};
use crate::record::PublishError;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("cannot get a warehouse connection{}", .detail.as_ref().map(|t| format!(" ({t})")).unwrap_or_default())]
    Pool {
        /// Whose connection, or what the TLS settings make of a refused certificate
        /// (`connect::Connector::explain`).
        detail: Option<String>,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// Shown with what the warehouse said (`error::describe_sql`).
    #[error("warehouse error")]
    Db(#[from] tokio_postgres::Error),
    #[error("offsets of {0:?} were moved by another instance; the batch was rolled back")]
    Fenced(Vec<TopicPartition>),
    #[error("dead-letter publish failed")]
    DeadLetter(#[source] PublishError),
    #[error("stored definition is unreadable")]
    Corrupt(#[source] serde_json::Error),
    /// Writing a value in the form the warehouse takes failed (a definition as JSON, a
    /// profile as a binary record): a bug, never the record's fault, since every decoded
    /// value has both forms.
    #[error("cannot write {what}")]
    Encode {
        what: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The warehouse's procedures answered what this version does not ask.
    #[error("the warehouse's procedures answered outside their contract: {0}")]
    Unexpected(String),
    #[error("a profile that passed its check when consumed does not decode")]
    Undecodable(#[from] crate::codec::CodecError),
    /// A setting of the warehouse that policy-push cannot work with, named.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Config(crate::config::ConfigError),
    #[error("the batch transaction took longer than {0:?} and was abandoned")]
    Timeout(Duration),
    /// View DDL waited `view_lock_timeout` for a lock an open transaction holds
    /// (`blocked`).
    #[error("view DDL waited too long for a lock another session holds on the view")]
    ViewsBlocked(#[source] tokio_postgres::Error),
    /// Views of policy-push's schemas without their protection (`startup`).
    #[error("views without their protection (row-level security on Redshift, a security barrier on PostgreSQL): {}", .0.join(", "))]
    Unprotected(Vec<String>),
}

impl ApplyError {
    /// The `kind` label of `policy_push_warehouse_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            ApplyError::Pool { .. } => "connection",
            ApplyError::Db(_) => "sql",
            ApplyError::Fenced(_) => "fenced",
            ApplyError::Timeout(_) => "timeout",
            ApplyError::DeadLetter(_) => "dead_letter",
            ApplyError::Corrupt(_)
            | ApplyError::Encode { .. }
            | ApplyError::Unexpected(_)
            | ApplyError::Undecodable(_) => "corrupt",
            ApplyError::Refused(_) | ApplyError::Config(_) | ApplyError::Unprotected(_) => "config",
            ApplyError::ViewsBlocked(_) => "blocked",
        }
    }

    /// The warehouse refused the batch because of what one of its records holds
    /// (`record_sqlstate`): its records can be isolated (`batch::split`).
    pub fn refused_by_record(&self) -> bool {
        matches!(self, ApplyError::Db(e) if caused_by_record(e))
    }

    /// The dead-letter reason for a record the warehouse refused.
    pub fn refusal(&self) -> String {
        match self {
            ApplyError::Db(e) => warehouse_reason(e),
            other => crate::error::chain(other),
        }
    }

    /// What the operator should do, for /health.
    pub fn hint(&self) -> &'static str {
        match self {
            ApplyError::Pool { .. } => "check that the warehouse is reachable and the integration url and password are right",
            ApplyError::Db(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) || e.code() == Some(&SqlState::UNDEFINED_FUNCTION) => {
                "the integration objects are missing: run `policy-push bootstrap`"
            }
            ApplyError::Db(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {
                "the system role lacks a privilege: see the README's warehouse privileges"
            }
            ApplyError::Db(e) if e.code() == Some(&SqlState::OUT_OF_MEMORY) => {
                "the batch rebuilds more views than PostgreSQL's lock table holds: raise max_locks_per_transaction, or lower batch.max_definitions"
            }
            ApplyError::Db(_) => "check the warehouse log for this error; the batch is retried with backoff",
            ApplyError::Fenced(_) => "another instance owns these partitions now; nothing to do",
            ApplyError::DeadLetter(e) if e.intolerable => "errors.tolerance = none for this topic stops the integration rather than dead-letter a record: fix the cause the message names (the record, or the warehouse object it needs), or set errors.tolerance to all for the topic; then restart policy-push",
            ApplyError::DeadLetter(e) if e.refused => "the dead-letter topic refuses writes: create it (not compacted) or grant this client WRITE on it (and DESCRIBE); this lane applies nothing until the rejected records are published",
            ApplyError::DeadLetter(_) => "check that the dead-letter topic exists and is writable",
            ApplyError::Corrupt(_) => "a stored definition was edited by hand; restore it or replay the host",
            ApplyError::Encode { .. } => "a bug in policy-push: report it with this message",
            ApplyError::Unexpected(_) => "the integration's procedures are not this version's: run `policy-push bootstrap`",
            ApplyError::Undecodable(_) => "a bug in policy-push's profile reader: report it with this message; pinning the producer to the previous schema version avoids the fast path",
            ApplyError::Refused(_) => "fix the warehouse setting named in the message, then bootstrap again",
            ApplyError::Config(_) => "fix the integration's configuration key named in the message",
            ApplyError::Timeout(_) => "the warehouse is slow or unresponsive: check its load and locks (pg_stat_activity)",
            ApplyError::ViewsBlocked(_) => "an open transaction holds the view: it is rebuilt when that session commits, rolls back or is terminated (integration key terminate_blockers_after_ms)",
            ApplyError::Unprotected(_) => "nothing is applied until every view is protected: run `policy-push bootstrap`, which protects every view in policy-push's schemas (drop a view made there by hand), then restart policy-push",
        }
    }
}

impl ApplyError {
    /// Failing at once rather than after a few retries: only the operator can fix it.
    pub fn needs_operator(&self) -> bool {
        matches!(self, ApplyError::DeadLetter(e) if e.refused)
    }
}

impl Classify for ApplyError {
    fn class(&self) -> Class {
        match self {
            ApplyError::Refused(_) | ApplyError::Config(_) | ApplyError::Unprotected(_) => {
                Class::Fatal
            }
            ApplyError::DeadLetter(e) if e.intolerable => Class::Fatal,
            // A host that is failing keeps retrying: the operator may fix it (bootstrap,
            // grants) without restarting, and other hosts are not affected.
            _ => Class::Retryable,
        }
    }
}

impl ApplyError {
    pub(super) fn json(what: &str, e: serde_json::Error) -> ApplyError {
        ApplyError::Encode {
            what: format!("{what} as JSON"),
            source: e.into(),
        }
    }
}
