//! The readers that make serde as strict as the Avro path: a string bounded before it
//! is copied, a record only from an object, an enum only from its symbol, a map whose
//! keys are distinct.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, value::MapAccessDeserializer, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use crate::event::MAX_VALUE_LEN;

/// A string of at most [`MAX_VALUE_LEN`] bytes, refused before it is copied out of the
/// parser (which unescapes an escaped string into its scratch buffer first, bounded by
/// the value's size).
pub(super) struct Text(pub(super) String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Bounded;
        impl Visitor<'_> for Bounded {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a string of at most {MAX_VALUE_LEN} bytes")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Text, E> {
                if s.len() > MAX_VALUE_LEN {
                    return Err(E::custom(format_args!(
                        "a string of {} bytes, longer than the {MAX_VALUE_LEN} any field accepts",
                        s.len()
                    )));
                }
                Ok(Text(s.to_owned()))
            }
        }
        d.deserialize_str(Bounded)
    }
}

/// A record read from a JSON object only.
pub(super) struct Obj<T>(pub(super) T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Object<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Object<T> {
            type Value = Obj<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Obj<T>, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(Obj)
            }
        }
        d.deserialize_map(Object(std::marker::PhantomData))
    }
}

/// An enum symbol: a string naming one of `symbols`.
pub(super) fn symbol<T: Copy>(text: Text, symbols: &[(&str, T)]) -> Result<T, String> {
    symbols
        .iter()
        .find(|(name, _)| *name == text.0)
        .map(|(_, value)| *value)
        .ok_or_else(|| {
            let names: Vec<&str> = symbols.iter().map(|(name, _)| *name).collect();
            format!(
                "unknown symbol {}, expected one of {}",
                crate::event::quote_capped(&text.0),
                names.join(", ")
            )
        })
}

pub(super) fn texts(v: Vec<Text>) -> Vec<String> {
    v.into_iter().map(|t| t.0).collect()
}

/// `attributes`: a map of arrays of strings whose keys are all distinct.
#[derive(Default)]
pub(super) struct Attributes(pub(super) BTreeMap<String, Vec<String>>);

impl<'de> Deserialize<'de> for Attributes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Distinct;
        impl<'de> Visitor<'de> for Distinct {
            type Value = Attributes;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of arrays of strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Attributes, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(Text(key)) = map.next_key()? {
                    let values: Vec<Text> = map.next_value()?;
                    if out.contains_key(&key) {
                        return Err(de::Error::custom(format_args!(
                            "attribute {} is named twice",
                            crate::event::quote_capped(&key)
                        )));
                    }
                    out.insert(key, texts(values));
                }
                Ok(Attributes(out))
            }
        }
        d.deserialize_map(Distinct)
    }
}
