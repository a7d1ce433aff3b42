//! Codec for the four event records (SPEC §2): Avro, and JSON from an outbox (`json`).
//!
//! Three wire encodings share a topic and are told apart by their first byte:
//! - single-object encoding: `C3 01`, the 8-byte little-endian CRC-64-AVRO (Rabin)
//!   fingerprint of the writer schema's canonical form, then the datum. Writer schemas are
//!   looked up among the schemas embedded from `schemas/` (all versions).
//! - Confluent wire format: `00`, a 4-byte big-endian schema id, then the datum. Ids are
//!   resolved against the configured Schema Registry and cached.
//! - JSON: `{`, `"`, `[`, `n` or whitespace (`json/mod.rs`).
//!
//! Every datum is read with the writer schema and resolved to the reader schema (the
//! current `schemas/<Record>.avsc`), so writers may add defaulted fields.

mod bounds;
mod error;
pub use error::CodecError;
mod fast;
pub mod json;
pub use fast::{Field as ProfileField, Place as ProfilePlace, Visit as ProfileVisit};
mod registry;
mod value;

use std::collections::HashMap;
use std::sync::Arc;

use apache_avro::{rabin::Rabin, Schema};

use crate::event::{Event, Kind, UserProfile, ValidationError};
pub use registry::Registry;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/schemas.rs"));
}

const SINGLE_OBJECT_MAGIC: [u8; 2] = [0xC3, 0x01];

/// The current `UserProfile` schema's fingerprint, for writing a kept datum back out as
/// the record it came from (a dead letter). The same in every codec of a process.
static CURRENT_PROFILE_FINGERPRINT: std::sync::OnceLock<[u8; 8]> = std::sync::OnceLock::new();
const CONFLUENT_MAGIC: u8 = 0x00;

/// A writer schema plus what decoding needs to know about it.
struct Writer {
    schema: Arc<Schema>,
    record: String,
    /// True when identical to the reader schema, so resolution can be skipped.
    is_reader: bool,
}

pub struct Codec {
    readers: HashMap<Kind, Arc<Schema>>,
    /// The current `UserProfile` schema's, compared before any map lookup: nearly every
    /// record carries it.
    profile_fingerprint: [u8; 8],
    writers: HashMap<[u8; 8], Writer>,
    registry: Option<Registry>,
}

fn fingerprint(schema: &Schema) -> [u8; 8] {
    let fp = schema.fingerprint::<Rabin>().bytes;
    let mut out = [0u8; 8];
    out.copy_from_slice(&fp[..8]);
    out
}

fn record_name(schema: &Schema) -> String {
    match schema {
        Schema::Record(r) => r.name.name.clone(),
        other => format!("{other:?}").chars().take(40).collect(),
    }
}

impl Codec {
    /// The codec over the schemas compiled in from `schemas/`.
    pub fn embedded() -> Result<Self, CodecError> {
        let mut codec = Codec {
            readers: HashMap::new(),
            profile_fingerprint: [0; 8],
            writers: HashMap::new(),
            registry: None,
        };
        for (file, text) in embedded::EMBEDDED {
            let schema = Schema::parse_str(text).map_err(|e| CodecError::BadSchema {
                name: (*file).into(),
                reason: None,
                source: Some(e),
            })?;
            let name = record_name(&schema);
            if let Some(kind) = Kind::ALL
                .into_iter()
                .find(|k| format!("{}.avsc", k.record_name()) == *file)
            {
                codec.readers.insert(kind, Arc::new(schema.clone()));
            }
            codec.insert_writer(schema, name);
        }
        for kind in Kind::ALL {
            if !codec.readers.contains_key(&kind) {
                return Err(CodecError::BadSchema {
                    name: format!("{}.avsc", kind.record_name()),
                    reason: Some("missing from schemas/"),
                    source: None,
                });
            }
        }
        codec.profile_fingerprint = fingerprint(codec.reader_schema(Kind::Profile));
        let _ = CURRENT_PROFILE_FINGERPRINT.set(codec.profile_fingerprint);
        let readers: Vec<_> = codec.readers.values().map(|s| fingerprint(s)).collect();
        for fp in readers {
            if let Some(w) = codec.writers.get_mut(&fp) {
                w.is_reader = true;
            }
        }
        Ok(codec)
    }

    pub fn with_registry(mut self, registry: Option<Registry>) -> Self {
        self.registry = registry;
        self
    }

    fn insert_writer(&mut self, schema: Schema, record: String) -> [u8; 8] {
        let fp = fingerprint(&schema);
        self.writers.insert(
            fp,
            Writer {
                schema: Arc::new(schema),
                record,
                is_reader: false,
            },
        );
        fp
    }

    /// Makes another writer schema known by fingerprint (used for schema-evolution tests
    /// and by producers that register a newer version at run time).
    pub fn add_writer_schema(&mut self, json: &str) -> Result<[u8; 8], CodecError> {
        let schema = Schema::parse_str(json).map_err(|e| CodecError::BadSchema {
            name: "added".into(),
            reason: None,
            source: Some(e),
        })?;
        let name = record_name(&schema);
        Ok(self.insert_writer(schema, name))
    }

    pub fn reader_schema(&self, kind: Kind) -> &Schema {
        // Presence of every kind is checked in `embedded()`.
        &self.readers[&kind]
    }

    /// Decodes a non-null record value from `kind`'s topic.
    pub fn decode(&self, kind: Kind, bytes: &[u8]) -> Result<Event, CodecError> {
        let first = *bytes.first().ok_or(CodecError::Truncated(0))?;
        let reader = self.reader_schema(kind);
        let value = if bytes.starts_with(&SINGLE_OBJECT_MAGIC) {
            let header: [u8; 8] = bytes
                .get(2..10)
                .and_then(|s| s.try_into().ok())
                .ok_or(CodecError::Truncated(bytes.len()))?;
            let writer = self
                .writers
                .get(&header)
                .ok_or_else(|| CodecError::UnknownFingerprint(hex(&header)))?;
            if writer.record != kind.record_name() {
                return Err(CodecError::WrongRecord {
                    expected: kind.record_name(),
                    found: writer.record.clone(),
                });
            }
            if writer.is_reader && kind == Kind::Profile {
                return fast::user_profile(&bytes[10..]).map(Event::Profile);
            }
            let resolve_to = (!writer.is_reader).then_some(reader);
            read_datum(&writer.schema, &bytes[10..], resolve_to)?
        } else if first == CONFLUENT_MAGIC {
            let id_bytes: [u8; 4] = bytes
                .get(1..5)
                .and_then(|s| s.try_into().ok())
                .ok_or(CodecError::Truncated(bytes.len()))?;
            let id = u32::from_be_bytes(id_bytes);
            let registry = self.registry.as_ref().ok_or(CodecError::NoRegistry(id))?;
            let writer = registry.schema(id)?;
            let found = record_name(&writer.schema);
            if found != kind.record_name() {
                return Err(CodecError::WrongRecord {
                    expected: kind.record_name(),
                    found,
                });
            }
            if kind == Kind::Profile && writer.fingerprint == self.profile_fingerprint {
                return fast::user_profile(&bytes[5..]).map(Event::Profile);
            }
            read_datum(&writer.schema, &bytes[5..], Some(reader))?
        } else if json::starts_json(first) {
            return json::decode(kind, bytes);
        } else {
            return Err(CodecError::UnknownEncoding(first));
        };
        value::event(kind, value)
    }

    /// Validates a `UserProfile` value without decoding it, when it was written with the
    /// current schema in single-object encoding (None otherwise: use `decode`). What
    /// this accepts, `decode` followed by `event::validate` accepts too.
    pub fn check_profile(&self, bytes: &[u8]) -> Option<CheckedProfile> {
        let header: [u8; 8] = bytes
            .strip_prefix(&SINGLE_OBJECT_MAGIC)?
            .get(..8)?
            .try_into()
            .ok()?;
        if header != self.profile_fingerprint {
            return None;
        }
        let datum = &bytes[10..];
        Some(match fast::check(datum) {
            Err(e) => CheckedProfile::Damaged(e),
            Ok(Err(e)) => CheckedProfile::Invalid(e),
            Ok(Ok((user, version))) => CheckedProfile::Valid {
                user,
                datum: ProfileDatum {
                    version,
                    datum: datum.into(),
                },
            },
        })
    }

    /// Encodes an event in single-object encoding with the current schema (what
    /// `simulate` and the tests publish).
    pub fn encode(&self, event: &Event) -> Result<Vec<u8>, CodecError> {
        let schema = self.reader_schema(event.kind());
        encode_single_object(schema, value::to_avro(event))
    }
}

/// The outcome of `Codec::check_profile`.
#[derive(Debug)]
pub enum CheckedProfile {
    /// The user name is folded, as `event::validate` folds it.
    Valid {
        user: String,
        datum: ProfileDatum,
    },
    Invalid(ValidationError),
    Damaged(CodecError),
}

/// A validated `UserProfile` kept as its Avro datum (current schema) until it is applied.
/// Most profile records are superseded within their batch, so most are never decoded;
/// and the bytes take a fraction of the memory of the decoded profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileDatum {
    pub version: i64,
    datum: Box<[u8]>,
}

impl ProfileDatum {
    /// A datum as tests write it by hand; the consumer keeps only datums that passed
    /// `check_profile`.
    #[cfg(test)]
    pub(crate) fn unchecked(version: i64, datum: &[u8]) -> Self {
        ProfileDatum {
            version,
            datum: datum.into(),
        }
    }

    /// The profile, with its user name folded. It was checked when consumed, so an error
    /// here means the checker and the decoder disagree: a bug, not bad input.
    pub fn decode(&self) -> Result<UserProfile, CodecError> {
        let mut p = fast::user_profile(&self.datum)?;
        p.user.make_ascii_lowercase();
        Ok(p)
    }

    /// The record this datum was read from: single-object encoding with the current
    /// schema, which is the only one a kept datum can have been written with.
    pub fn single_object(&self) -> Option<Vec<u8>> {
        let fp = CURRENT_PROFILE_FINGERPRINT.get()?;
        let mut out = Vec::with_capacity(10 + self.datum.len());
        out.extend_from_slice(&SINGLE_OBJECT_MAGIC);
        out.extend_from_slice(fp);
        out.extend_from_slice(&self.datum);
        Some(out)
    }

    /// Hands every value of the profile to `v` in wire order, without decoding it: how
    /// the applier writes a kept datum in the warehouse's own format. The user name is
    /// the datum's, as written (not folded).
    pub fn visit<'a>(&'a self, v: &mut impl ProfileVisit<'a>) -> Result<(), CodecError> {
        fast::walk(&self.datum, v)
    }
}

/// Encodes any Avro value as a single-object message for the given writer schema.
pub fn encode_single_object(
    schema: &Schema,
    value: apache_avro::types::Value,
) -> Result<Vec<u8>, CodecError> {
    let datum = apache_avro::to_avro_datum(schema, value).map_err(CodecError::Avro)?;
    let mut out = Vec::with_capacity(10 + datum.len());
    out.extend_from_slice(&SINGLE_OBJECT_MAGIC);
    out.extend_from_slice(&fingerprint(schema));
    out.extend_from_slice(&datum);
    Ok(out)
}

/// Encodes a value in the Confluent wire format under a registry schema id.
pub fn encode_confluent(
    schema: &Schema,
    id: u32,
    value: apache_avro::types::Value,
) -> Result<Vec<u8>, CodecError> {
    let datum = apache_avro::to_avro_datum(schema, value).map_err(CodecError::Avro)?;
    let mut out = Vec::with_capacity(5 + datum.len());
    out.push(CONFLUENT_MAGIC);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&datum);
    Ok(out)
}

pub use value::to_avro;

fn read_datum(
    writer: &Schema,
    mut datum: &[u8],
    reader: Option<&Schema>,
) -> Result<apache_avro::types::Value, CodecError> {
    bounds::check(writer, datum)?;
    let value =
        apache_avro::from_avro_datum(writer, &mut datum, reader).map_err(CodecError::Avro)?;
    if !datum.is_empty() {
        return Err(CodecError::TrailingBytes(datum.len()));
    }
    Ok(value)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
pub(crate) mod tests;
