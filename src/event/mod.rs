//! The input contract (SPEC §2) as Rust types, and the validation every record passes
//! before anything of it can reach SQL.
//!
//! Identifiers (user names, database, schema, table, view and column names) are folded to
//! lower case and must match a conservative grammar; free-text values (ids, tags, groups,
//! attributes, purposes, constants) may hold anything but NUL and are only ever bound as
//! parameters or quoted as literals. A record that fails validation is poison: it is
//! dead-lettered with the reason and the pipeline moves on.

use std::collections::BTreeMap;

/// Longest identifier accepted. PostgreSQL truncates at 63 bytes, so longer names would
/// silently collide; Redshift allows 127 but a portable limit is safer.
pub const MAX_IDENTIFIER_LEN: usize = 63;
/// Longest free-text value accepted (ids, tags, groups, attribute values).
pub const MAX_VALUE_LEN: usize = 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValidationError {
    #[error("{field}: {value} is not a valid identifier (allowed: a letter or _ then letters, digits, _ or $; at most {MAX_IDENTIFIER_LEN} bytes)")]
    Identifier { field: String, value: String },
    #[error("{field}: {value} is not a valid user name (allowed: letters, digits and _ . @ + - $; at most {MAX_IDENTIFIER_LEN} bytes)")]
    UserName { field: String, value: String },
    #[error("{field}: value is empty, longer than {MAX_VALUE_LEN} bytes, or contains NUL")]
    Value { field: String },
    #[error("record key {key} does not match the entity id {id}")]
    KeyMismatch { key: String, id: String },
    #[error("policy {id}: {reason}")]
    UnusablePolicy { id: String, reason: String },
    #[error("data source {id}: database {database:?} is not the integration's database {expected:?}; views must live beside the raw tables")]
    ForeignDatabase {
        id: String,
        database: String,
        expected: String,
    },
    #[error("data source {id}: {reason}")]
    BadDataSource { id: String, reason: String },
}

/// Which topic, and so which record type, a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Profile,
    DataSource,
    Policy,
    Impersonation,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::Profile,
        Kind::DataSource,
        Kind::Policy,
        Kind::Impersonation,
    ];

    /// The Avro record name (without namespace) that carries this kind.
    pub fn record_name(self) -> &'static str {
        match self {
            Kind::Profile => "UserProfile",
            Kind::DataSource => "DataSource",
            Kind::Policy => "Policy",
            Kind::Impersonation => "Impersonation",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Active,
    Disabled,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Project {
    pub id: String,
    pub purposes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UserProfile {
    pub user: String,
    pub version: i64,
    pub groups: Vec<String>,
    pub attributes: BTreeMap<String, Vec<String>>,
    pub current_project: Option<Project>,
    pub acknowledged_purposes: Vec<String>,
    pub data_sources: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: String,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DataSource {
    pub id: String,
    pub version: i64,
    pub host: String,
    pub database: String,
    pub schema: String,
    pub table: String,
    pub view_name: String,
    pub columns: Vec<Column>,
    pub tags: Vec<String>,
    pub status: Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RowFilterKind {
    MatchingAttribute,
    MemberOfGroup,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MaskMethod {
    Hash,
    Nullify,
    Constant,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RowFilter {
    pub kind: RowFilterKind,
    pub column_tag: Option<String>,
    pub attribute: Option<String>,
    pub group: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mask {
    pub column_tag: String,
    pub method: MaskMethod,
    pub constant: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type")]
pub enum Rule {
    RowFilter(RowFilter),
    Mask(Mask),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Target {
    pub data_source_ids: Vec<String>,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Exceptions {
    pub groups: Vec<String>,
    pub purposes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Policy {
    pub id: String,
    pub version: i64,
    pub status: Status,
    pub target: Target,
    pub rule: Rule,
    pub exceptions: Exceptions,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Impersonation {
    pub user: String,
    pub version: i64,
    pub allowed: bool,
}

/// One decoded record value.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Profile(UserProfile),
    DataSource(DataSource),
    Policy(Policy),
    Impersonation(Impersonation),
}

impl Event {
    pub fn kind(&self) -> Kind {
        match self {
            Event::Profile(_) => Kind::Profile,
            Event::DataSource(_) => Kind::DataSource,
            Event::Policy(_) => Kind::Policy,
            Event::Impersonation(_) => Kind::Impersonation,
        }
    }

    /// The entity id, which is also the record key.
    pub fn id(&self) -> &str {
        match self {
            Event::Profile(p) => &p.user,
            Event::DataSource(d) => &d.id,
            Event::Policy(p) => &p.id,
            Event::Impersonation(i) => &i.user,
        }
    }

    pub fn version(&self) -> i64 {
        match self {
            Event::Profile(p) => p.version,
            Event::DataSource(d) => d.version,
            Event::Policy(p) => p.version,
            Event::Impersonation(i) => i.version,
        }
    }
}

mod validate;
pub(crate) use validate::check_value;
pub use validate::{
    check_key, entity_key, identifier, quote_capped, reserved_schema, user_name, validate, Scope,
    OWN_SCHEMAS, QUOTED_CHARS,
};

/// A minimal valid profile, for tests across the crate.
#[cfg(test)]
pub(crate) fn test_profile(user: &str, version: i64) -> UserProfile {
    UserProfile {
        user: user.into(),
        version,
        groups: vec![],
        attributes: BTreeMap::new(),
        current_project: None,
        acknowledged_purposes: vec![],
        data_sources: vec![],
    }
}
