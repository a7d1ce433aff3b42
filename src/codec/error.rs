//! What can go wrong reading a record, and what each failure means for it: most blame
//! the record (a dead letter); an unreachable Schema Registry is waited out; a schema of
//! our own that does not parse stops the integration.

use crate::error::{Class, Classify};

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("value is empty or shorter than its encoding header ({0} bytes)")]
    Truncated(usize),
    #[error("unknown encoding: first byte 0x{0:02x} is neither single-object Avro (C3 01), Confluent (00) nor JSON ({{, \", [, null or whitespace)")]
    UnknownEncoding(u8),
    #[error("unknown writer schema fingerprint {0}; it is not among the schemas under schemas/")]
    UnknownFingerprint(String),
    #[error("writer schema is record {found}, but this topic carries {expected}")]
    WrongRecord {
        expected: &'static str,
        found: String,
    },
    #[error("Avro datum does not match its writer schema: {0}")]
    Datum(String),
    #[error("Avro datum does not match its writer schema")]
    Avro(#[from] apache_avro::Error),
    #[error("schema id {id} from the Schema Registry is not a valid Avro schema")]
    RegistrySchema { id: u32, source: apache_avro::Error },
    #[error("{0} trailing bytes after the Avro datum")]
    TrailingBytes(usize),
    #[error("decoded value has an unexpected shape: {0}")]
    Shape(String),
    #[error("Confluent wire format (schema id {0}) but no [schema_registry] url is configured")]
    NoRegistry(u32),
    #[error("schema id {0} is unknown to the Schema Registry")]
    UnknownSchemaId(u32),
    #[error("Schema Registry unavailable: {message}")]
    RegistryUnavailable {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    #[error("Schema Registry settings: {message}")]
    RegistryConfig {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// `form` is what was being read: the value, an envelope, or a string's document.
    #[error("JSON {form} is not a valid {record}")]
    Json {
        form: &'static str,
        record: &'static str,
        source: serde_json::Error,
    },
    #[error("JSON value is {found}, not a {record} document, an envelope or a string holding one")]
    JsonShape {
        found: &'static str,
        record: &'static str,
    },
    #[error("{0}")]
    JsonBounds(String),
    /// `reason` says what is wrong where no Avro error does (`source` is `None`).
    #[error("invalid schema {name}{}", .reason.map(|r| format!(": {r}")).unwrap_or_default())]
    BadSchema {
        name: String,
        reason: Option<&'static str>,
        #[source]
        source: Option<apache_avro::Error>,
    },
}

impl Classify for CodecError {
    fn class(&self) -> Class {
        match self {
            CodecError::RegistryUnavailable { .. } => Class::Retryable,
            CodecError::BadSchema { .. } | CodecError::RegistryConfig { .. } => Class::Fatal,
            _ => Class::Poison,
        }
    }
}
