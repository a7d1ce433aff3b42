//! JSON input (SPEC §2), for feeds from a transactional outbox. A value is JSON when its
//! first byte is `{`, `"`, JSON whitespace, or `[` or `n` (null), none of which begins an
//! Avro encoding (the last two only to be refused with a clear reason), and it takes one
//! of three forms:
//! - an object: the document itself (Kafka Connect's JsonConverter with
//!   `schemas.enable=false`, or Debezium's outbox event router with an expanded payload);
//! - an object with exactly the keys `schema` and `payload`, each once: JsonConverter's
//!   envelope (`schemas.enable=true`), whose payload is the document or a string holding
//!   it. The schema is skipped unread: the document is checked against our own schema;
//! - a string holding the document: a text or `json`/`jsonb` payload column passed through
//!   JsonConverter without schemas.
//!
//! A string holds a document, never another string or an envelope. Bounds are checked on
//! the value and again on a document found inside a string (`scan`), before either is
//! parsed.

mod document;
mod scan;
mod strict;

use std::fmt;

use serde::de::{
    value::MapAccessDeserializer, DeserializeSeed, Deserializer, Error as _, IgnoredAny, MapAccess,
    SeqAccess, Visitor,
};
use serde::Deserialize;

use super::CodecError;
use crate::event::{Event, Kind};
pub use document::to_json;
pub use scan::{MAX_JSON_BYTES, MAX_JSON_DEPTH, MAX_JSON_VALUES};

/// Whether a value's first byte starts JSON rather than an Avro encoding.
pub(super) fn starts_json(first: u8) -> bool {
    matches!(
        first,
        b'{' | b'"' | b'[' | b'n' | b' ' | b'\t' | b'\n' | b'\r'
    )
}

/// Decodes a JSON value from `kind`'s topic.
pub(super) fn decode(kind: Kind, bytes: &[u8]) -> Result<Event, CodecError> {
    scan::check(bytes)?;
    match parse(kind, "value", bytes, |d| Shape::deserialize(d))? {
        Shape::Document => document(kind, bytes),
        Shape::Envelope => match parse(kind, "envelope", bytes, |d| Envelope(kind).deserialize(d))?
        {
            Payload::Document(event) => Ok(event),
            Payload::Text(text) => held(kind, &text),
        },
        Shape::Text(text) => held(kind, &text),
        Shape::Other(found) => Err(CodecError::JsonShape {
            found,
            record: kind.record_name(),
        }),
    }
}

/// The document a string holds.
fn held(kind: Kind, text: &str) -> Result<Event, CodecError> {
    scan::check(text.as_bytes())?;
    parse(kind, "string's document", text.as_bytes(), |d| {
        document::Document(kind).deserialize(d)
    })
}

fn document(kind: Kind, bytes: &[u8]) -> Result<Event, CodecError> {
    parse(kind, "document", bytes, |d| {
        document::Document(kind).deserialize(d)
    })
}

/// Parses all of `bytes` with `read`; `form` names what was read in an error.
fn parse<T>(
    kind: Kind,
    form: &'static str,
    bytes: &[u8],
    read: impl FnOnce(&mut serde_json::Deserializer<serde_json::de::SliceRead>) -> serde_json::Result<T>,
) -> Result<T, CodecError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    read(&mut de)
        .and_then(|value| de.end().map(|()| value))
        .map_err(|source| CodecError::Json {
            form,
            record: kind.record_name(),
            source,
        })
}

/// Why a JSON null deletes nothing, and how an outbox makes a delete.
const NULL_IS_NO_DELETE: &str = "null (a delete is a tombstone, a null Kafka value; Debezium's outbox event router writes one with route.tombstone.on.empty.payload=true)";

/// Which form a value takes, read without keeping any of it but a top-level string.
enum Shape {
    Document,
    Envelope,
    Text(String),
    Other(&'static str),
}

/// A top-level key, compared without being copied.
enum Key {
    Schema,
    Payload,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Name;
        impl Visitor<'_> for Name {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Key, E> {
                Ok(match s {
                    "schema" => Key::Schema,
                    "payload" => Key::Payload,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_str(Name)
    }
}

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ShapeVisitor)
    }
}

struct ShapeVisitor;

impl<'de> Visitor<'de> for ShapeVisitor {
    type Value = Shape;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object or string")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        let (mut schema, mut payload, mut others) = (false, false, false);
        while let Some(key) = map.next_key::<Key>()? {
            map.next_value::<IgnoredAny>()?;
            match key {
                Key::Schema => schema = true,
                Key::Payload => payload = true,
                Key::Other => others = true,
            }
        }
        Ok(match (schema, payload, others) {
            (true, true, false) => Shape::Envelope,
            _ => Shape::Document,
        })
    }
    fn visit_str<E>(self, s: &str) -> Result<Shape, E> {
        Ok(Shape::Text(s.to_owned()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Shape::Other("an array"))
    }
    fn visit_unit<E>(self) -> Result<Shape, E> {
        Ok(Shape::Other(NULL_IS_NO_DELETE))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Shape, E> {
        Ok(Shape::Other("a boolean"))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Shape, E> {
        Ok(Shape::Other("a number"))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Shape, E> {
        Ok(Shape::Other("a number"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Shape, E> {
        Ok(Shape::Other("a number"))
    }
}

/// An envelope's payload: the document, or a string holding it.
enum Payload {
    Document(Event),
    Text(String),
}

/// Reads an envelope (`Shape::Envelope` has made sure of its two keys).
struct Envelope(Kind);

impl<'de> DeserializeSeed<'de> for Envelope {
    type Value = Payload;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Payload, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Envelope {
    type Value = Payload;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object with the keys schema and payload")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Payload, A::Error> {
        let (mut payload, mut schema) = (None, false);
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Payload if payload.is_some() => {
                    return Err(A::Error::duplicate_field("payload"))
                }
                Key::Payload => payload = Some(map.next_value_seed(PayloadSeed(self.0))?),
                Key::Schema if schema => return Err(A::Error::duplicate_field("schema")),
                Key::Schema | Key::Other => {
                    schema = true;
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        payload.ok_or_else(|| serde::de::Error::missing_field("payload"))
    }
}

struct PayloadSeed(Kind);

impl<'de> DeserializeSeed<'de> for PayloadSeed {
    type Value = Payload;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Payload, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PayloadSeed {
    type Value = Payload;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "a payload holding the {} document, or a string holding it",
            self.0.record_name()
        )
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Payload, A::Error> {
        document::Document(self.0)
            .deserialize(MapAccessDeserializer::new(map))
            .map(Payload::Document)
    }
    fn visit_str<E>(self, s: &str) -> Result<Payload, E> {
        Ok(Payload::Text(s.to_owned()))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Payload, E> {
        Err(E::custom(format_args!("payload is {NULL_IS_NO_DELETE}")))
    }
}

#[cfg(test)]
mod tests;
