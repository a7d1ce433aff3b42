//! A direct reader for `UserProfile` datums written with the current schema: the hot path.
//!
//! Profiles are nearly all of the traffic. The generic path builds an
//! `apache_avro::types::Value` tree (a `String` per field name, a `Vec` per record) and
//! then converts it; this reader goes from bytes to `UserProfile` in one pass, with one
//! allocation per string it keeps. It is used only when the writer schema *is* the reader
//! schema (same fingerprint), so no resolution is needed; any other writer takes the
//! generic path. `tests.rs` checks both paths agree, on valid and on damaged input.
//!
//! The field order below must follow `schemas/UserProfile.avsc`; a test fails if the
//! schema changes without this reader.

use std::collections::BTreeMap;

use super::CodecError;
use crate::event::{Project, UserProfile};

struct Reader<'a> {
    bytes: &'a [u8],
}

fn damaged(what: &str) -> CodecError {
    CodecError::Datum(format!("UserProfile datum is damaged: {what}"))
}

impl<'a> Reader<'a> {
    /// A zig-zag varint, at most 10 bytes (Avro `long`); bits beyond 64 are dropped, as
    /// the generic reader drops them.
    fn long(&mut self) -> Result<i64, CodecError> {
        let mut raw: u64 = 0;
        for (i, &b) in self.bytes.iter().enumerate().take(10) {
            raw |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                self.bytes = &self.bytes[i + 1..];
                return Ok((raw >> 1) as i64 ^ -((raw & 1) as i64));
            }
        }
        Err(damaged("truncated or overlong varint"))
    }

    /// A length or count that must fit in what is left (every item takes at least one
    /// byte), so hostile input cannot make us allocate more than the message's size.
    fn len(&mut self) -> Result<usize, CodecError> {
        let n = self.long()?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.bytes.len())
            .ok_or_else(|| damaged("length out of range"))
    }

    fn string(&mut self) -> Result<String, CodecError> {
        let n = self.len()?;
        let (head, tail) = self.bytes.split_at(n);
        let s = std::str::from_utf8(head).map_err(|_| damaged("string is not UTF-8"))?;
        self.bytes = tail;
        Ok(s.to_owned())
    }

    /// The item count of the next array or map block; 0 ends the array or map. A negative
    /// count is followed by the block's size in bytes, which we do not need.
    fn block(&mut self) -> Result<usize, CodecError> {
        let n = self.long()?;
        if n < 0 {
            self.long()?;
        }
        let n = n.checked_abs().ok_or_else(|| damaged("block count"))?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.bytes.len())
            .ok_or_else(|| damaged("block count out of range"))
    }

    fn strings(&mut self) -> Result<Vec<String>, CodecError> {
        let mut out = Vec::new();
        loop {
            let n = self.block()?;
            if n == 0 {
                return Ok(out);
            }
            out.reserve(n);
            for _ in 0..n {
                out.push(self.string()?);
            }
        }
    }

    fn attributes(&mut self) -> Result<BTreeMap<String, Vec<String>>, CodecError> {
        let mut out = BTreeMap::new();
        loop {
            let n = self.block()?;
            if n == 0 {
                return Ok(out);
            }
            for _ in 0..n {
                let key = self.string()?;
                let values = self.strings()?;
                out.insert(key, values);
            }
        }
    }

    fn project(&mut self) -> Result<Option<Project>, CodecError> {
        match self.long()? {
            0 => Ok(None),
            1 => Ok(Some(Project {
                id: self.string()?,
                purposes: self.strings()?,
            })),
            _ => Err(damaged("current_project: union branch out of range")),
        }
    }
}

/// Decodes a `UserProfile` datum written with the current schema.
pub(super) fn user_profile(datum: &[u8]) -> Result<UserProfile, CodecError> {
    let mut r = Reader { bytes: datum };
    let profile = UserProfile {
        user: r.string()?,
        version: r.long()?,
        groups: r.strings()?,
        attributes: r.attributes()?,
        current_project: r.project()?,
        acknowledged_purposes: r.strings()?,
        data_sources: r.strings()?,
    };
    if !r.bytes.is_empty() {
        return Err(CodecError::TrailingBytes(r.bytes.len()));
    }
    Ok(profile)
}

/// The field names, in order, that `user_profile` reads.
#[cfg(test)]
pub(super) const FIELDS: [&str; 7] = [
    "user",
    "version",
    "groups",
    "attributes",
    "current_project",
    "acknowledged_purposes",
    "data_sources",
];
