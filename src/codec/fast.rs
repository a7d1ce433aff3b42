//! A direct reader for `UserProfile` datums written with the current schema: the hot path.
//!
//! Profiles are nearly all of the traffic. The generic path builds an
//! `apache_avro::types::Value` tree (a `String` per field name, a `Vec` per record) and
//! then converts it; this module walks the bytes once. It is used only when the writer
//! schema *is* the reader schema (same fingerprint), so no resolution is needed; any other
//! writer takes the generic path. `tests.rs` checks both paths agree, on valid and on
//! damaged input.
//!
//! One walk serves three purposes:
//! - `check` validates a datum without allocating anything but the folded user name.
//!   The consumer does this for every record and keeps the datum's bytes; most profile
//!   records are superseded by a newer version in the same batch, so they are never
//!   decoded at all (see `ProfileDatum`).
//! - `Visit` hands a surviving datum's values to the applier, which writes them as a
//!   PostgreSQL binary record (`apply/txn/profile_rows.rs`) without decoding the profile.
//! - `user_profile` decodes a datum: for Redshift's survivors, and for tests.
//!
//! The field order below must follow `schemas/UserProfile.avsc`; a test fails if the
//! schema changes without this reader.

use std::collections::BTreeMap;

use super::CodecError;
use crate::event::{self, Project, UserProfile, ValidationError};

struct Reader<'a> {
    bytes: &'a [u8],
}

fn damaged(what: &str) -> CodecError {
    CodecError::Datum(format!("UserProfile datum is damaged: {what}"))
}

/// Where in a profile a string was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Group,
    AttributeName,
    AttributeValue,
    ProjectId,
    ProjectPurpose,
    AcknowledgedPurpose,
    DataSource,
}

impl Place {
    /// The field name validation errors report, as the decoded path reports it.
    pub fn field(self) -> &'static str {
        match self {
            Place::Group => "UserProfile.groups",
            Place::AttributeName => "UserProfile.attributes key",
            Place::AttributeValue => "UserProfile.attributes value",
            Place::ProjectId => "UserProfile.current_project.id",
            Place::ProjectPurpose => "UserProfile.current_project.purposes",
            Place::AcknowledgedPurpose => "UserProfile.acknowledged_purposes",
            Place::DataSource => "UserProfile.data_sources",
        }
    }
}

/// A field of a profile after the user and the version, in wire order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Groups,
    Attributes,
    /// `current_project`, whether present or not.
    Project,
    AcknowledgedPurposes,
    DataSources,
}

/// What a walk does with each value it reads, in wire order. Strings are handed over as
/// bytes: each visitor checks UTF-8 in the way that suits it.
pub trait Visit<'a> {
    fn user(&mut self, raw: &'a [u8]) -> Result<(), CodecError>;
    fn version(&mut self, version: i64);
    fn text(&mut self, at: Place, raw: &'a [u8]) -> Result<(), CodecError>;
    /// Called after each field, also an empty or absent one.
    fn end(&mut self, _field: Field) {}
}

fn utf8(raw: &[u8]) -> Result<&str, CodecError> {
    std::str::from_utf8(raw).map_err(|_| damaged("string is not UTF-8"))
}

/// A zig-zag varint, at most 10 bytes (Avro `long`), read off the front of `bytes`; bits
/// beyond 64 are dropped, as the generic reader drops them. None if truncated or longer.
#[inline]
pub(super) fn read_long(bytes: &mut &[u8]) -> Option<i64> {
    let mut raw: u64 = 0;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        raw |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            *bytes = &bytes[i + 1..];
            return Some((raw >> 1) as i64 ^ -((raw & 1) as i64));
        }
    }
    None
}

impl<'a> Reader<'a> {
    #[inline]
    fn long(&mut self) -> Result<i64, CodecError> {
        read_long(&mut self.bytes).ok_or_else(|| damaged("truncated or overlong varint"))
    }

    /// A length or count that must fit in what is left (every item takes at least one
    /// byte), so hostile input cannot make us allocate more than the message's size.
    #[inline]
    fn len(&mut self) -> Result<usize, CodecError> {
        let n = self.long()?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.bytes.len())
            .ok_or_else(|| damaged("length out of range"))
    }

    /// A string's bytes, not yet checked to be UTF-8.
    #[inline]
    fn str(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.len()?;
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    /// The item count of the next array or map block; 0 ends the array or map. A negative
    /// count is followed by the block's size in bytes, which we do not need.
    #[inline]
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

    #[inline]
    fn texts(&mut self, at: Place, v: &mut impl Visit<'a>) -> Result<(), CodecError> {
        loop {
            let n = self.block()?;
            if n == 0 {
                return Ok(());
            }
            for _ in 0..n {
                v.text(at, self.str()?)?;
            }
        }
    }

    #[inline]
    fn attributes(&mut self, v: &mut impl Visit<'a>) -> Result<(), CodecError> {
        loop {
            let n = self.block()?;
            if n == 0 {
                return Ok(());
            }
            for _ in 0..n {
                v.text(Place::AttributeName, self.str()?)?;
                self.texts(Place::AttributeValue, v)?;
            }
        }
    }

    #[inline]
    fn project(&mut self, v: &mut impl Visit<'a>) -> Result<(), CodecError> {
        match self.long()? {
            0 => Ok(()),
            1 => {
                v.text(Place::ProjectId, self.str()?)?;
                self.texts(Place::ProjectPurpose, v)
            }
            _ => Err(damaged("current_project: union branch out of range")),
        }
    }
}

/// Reads a whole datum, handing every value to `v`. The reader's steps are `#[inline]`:
/// a visitor defined in another module (the applier's record writer) instantiates this
/// walk in that module's code unit, where steps that are not could not be inlined.
pub(super) fn walk<'a>(datum: &'a [u8], v: &mut impl Visit<'a>) -> Result<(), CodecError> {
    let mut r = Reader { bytes: datum };
    v.user(r.str()?)?;
    v.version(r.long()?);
    r.texts(Place::Group, v)?;
    v.end(Field::Groups);
    r.attributes(v)?;
    v.end(Field::Attributes);
    r.project(v)?;
    v.end(Field::Project);
    r.texts(Place::AcknowledgedPurpose, v)?;
    v.end(Field::AcknowledgedPurposes);
    r.texts(Place::DataSource, v)?;
    v.end(Field::DataSources);
    if !r.bytes.is_empty() {
        return Err(CodecError::TrailingBytes(r.bytes.len()));
    }
    Ok(())
}

/// Builds the `UserProfile`.
#[derive(Default)]
struct Decode {
    user: String,
    version: i64,
    groups: Vec<String>,
    /// In wire order; a repeated name replaces the earlier one, as the generic reader does.
    attributes: Vec<(String, Vec<String>)>,
    project: Option<Project>,
    acknowledged_purposes: Vec<String>,
    data_sources: Vec<String>,
}

impl<'a> Visit<'a> for Decode {
    fn user(&mut self, raw: &'a [u8]) -> Result<(), CodecError> {
        self.user = utf8(raw)?.to_owned();
        Ok(())
    }

    fn version(&mut self, version: i64) {
        self.version = version;
    }

    fn text(&mut self, at: Place, raw: &'a [u8]) -> Result<(), CodecError> {
        let s = utf8(raw)?.to_owned();
        match at {
            Place::Group => self.groups.push(s),
            Place::AttributeName => self.attributes.push((s, Vec::new())),
            Place::AttributeValue => {
                if let Some((_, values)) = self.attributes.last_mut() {
                    values.push(s);
                }
            }
            Place::ProjectId => {
                self.project = Some(Project {
                    id: s,
                    purposes: Vec::new(),
                })
            }
            Place::ProjectPurpose => {
                if let Some(p) = &mut self.project {
                    p.purposes.push(s);
                }
            }
            Place::AcknowledgedPurpose => self.acknowledged_purposes.push(s),
            Place::DataSource => self.data_sources.push(s),
        }
        Ok(())
    }
}

/// Decodes a `UserProfile` datum written with the current schema. The user name is as
/// written, not yet folded.
pub(super) fn user_profile(datum: &[u8]) -> Result<UserProfile, CodecError> {
    let mut d = Decode::default();
    walk(datum, &mut d)?;
    let mut attributes = BTreeMap::new();
    for (name, values) in d.attributes {
        attributes.insert(name, values);
    }
    Ok(UserProfile {
        user: d.user,
        version: d.version,
        groups: d.groups,
        attributes,
        current_project: d.project,
        acknowledged_purposes: d.acknowledged_purposes,
        data_sources: d.data_sources,
    })
}

/// Validates every value the way `UserProfile::validate` does, without keeping any.
#[derive(Default)]
struct Check<'a> {
    user: &'a str,
    version: i64,
    invalid: Option<ValidationError>,
}

impl<'a> Visit<'a> for Check<'a> {
    fn user(&mut self, raw: &'a [u8]) -> Result<(), CodecError> {
        self.user = utf8(raw)?;
        Ok(())
    }

    fn version(&mut self, version: i64) {
        self.version = version;
    }

    fn text(&mut self, at: Place, raw: &'a [u8]) -> Result<(), CodecError> {
        // Nearly every value is short ASCII without NUL: then it is UTF-8 and valid, and
        // one pass over its bytes shows it. Anything else gets the full checks.
        let plain = !raw.is_empty()
            && raw.len() <= event::MAX_VALUE_LEN
            && raw.iter().all(|&b| (1..0x80).contains(&b));
        if !plain {
            let s = utf8(raw)?;
            if self.invalid.is_none() {
                self.invalid = event::check_value(at.field(), s).err();
            }
        }
        Ok(())
    }
}

/// A datum that decodes, and whether its values are valid. Damage is reported before
/// invalid values, and the user name before other values, as on the decoded path.
pub(super) fn check(datum: &[u8]) -> Result<Result<(String, i64), ValidationError>, CodecError> {
    let mut c = Check::default();
    walk(datum, &mut c)?;
    let checked = event::user_name("UserProfile.user", c.user).and_then(|user| match c.invalid {
        Some(e) => Err(e),
        None => Ok((user, c.version)),
    });
    Ok(checked)
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
