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
//! - `profile_record` writes a surviving datum as a PostgreSQL binary record (`profile_row`).
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
enum Place {
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
    fn field(self) -> &'static str {
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
enum Field {
    Groups,
    Attributes,
    /// `current_project`, whether present or not.
    Project,
    AcknowledgedPurposes,
    DataSources,
}

/// What a walk does with each value it reads, in wire order. Strings are handed over as
/// bytes: each visitor checks UTF-8 in the way that suits it.
trait Visit<'a> {
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
    fn long(&mut self) -> Result<i64, CodecError> {
        read_long(&mut self.bytes).ok_or_else(|| damaged("truncated or overlong varint"))
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

    /// A string's bytes, not yet checked to be UTF-8.
    fn str(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.len()?;
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
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

/// Reads a whole datum, handing every value to `v`.
fn walk<'a>(datum: &'a [u8], v: &mut impl Visit<'a>) -> Result<(), CodecError> {
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

/// Writes a checked datum as one value of PostgreSQL's binary record format, with the
/// columns of `immuta_procedures.profile_row`: the folded user name, version, groups, attributes (jsonb, the
/// same bytes `tokio_postgres::types::Json` writes for the decoded map), project id,
/// project purposes, acknowledged purposes and data sources. This skips building a
/// `UserProfile` for each applied profile, which was a fifth of policy-push's CPU in a
/// backlog drain (docs/performance.md).
///
/// The datum passed `check` when it was consumed, so its strings are UTF-8 and valid;
/// PostgreSQL checks the encoding of what it receives anyway.
pub(super) fn profile_record(
    datum: &[u8],
    user: &str,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    let start = out.len();
    out.extend_from_slice(&8i32.to_be_bytes());
    put_field(out, TEXT_OID, user.as_bytes());
    let mut row = RecordWriter {
        out,
        array: None,
        attributes: Vec::new(),
        project: false,
    };
    let result = walk(datum, &mut row);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// A record field: its type, length and bytes.
fn put_field(out: &mut Vec<u8>, oid: u32, value: &[u8]) {
    out.extend_from_slice(&oid.to_be_bytes());
    // Fields are bounded by the message size, far below 2 GiB.
    out.extend_from_slice(&(value.len() as i32).to_be_bytes());
    out.extend_from_slice(value);
}

/// The built-in types of a profile record's fields (fixed oids, pg_type.dat).
const TEXT_OID: u32 = 25;
const INT8_OID: u32 = 20;
const TEXT_ARRAY_OID: u32 = 1009;
const JSONB_OID: u32 = 3802;

/// Builds the record; arrays are written as their elements arrive, with the length and
/// count patched at the end of the field.
struct RecordWriter<'a, 'o> {
    out: &'o mut Vec<u8>,
    /// Where the open array's field starts, and its element count.
    array: Option<(usize, i32)>,
    attributes: Vec<(&'a [u8], Vec<&'a [u8]>)>,
    /// The project id was written (absent projects get NULL at the field's end).
    project: bool,
}

impl RecordWriter<'_, '_> {
    fn element(&mut self, raw: &[u8]) {
        let (_, count) = match &mut self.array {
            Some(open) => open,
            None => {
                let at = self.array_header();
                self.array.insert((at, 0))
            }
        };
        *count += 1;
        self.out
            .extend_from_slice(&(raw.len() as i32).to_be_bytes());
        self.out.extend_from_slice(raw);
    }

    /// Field type, length placeholder, one dimension, no nulls, text elements, count
    /// placeholder, lower bound 1. Returns where the length goes.
    fn array_header(&mut self) -> usize {
        self.out.extend_from_slice(&TEXT_ARRAY_OID.to_be_bytes());
        let at = self.out.len();
        for word in [0i32, 1, 0, TEXT_OID as i32, 0, 1] {
            self.out.extend_from_slice(&word.to_be_bytes());
        }
        at
    }

    fn close_array(&mut self) {
        let (at, count) = match self.array.take() {
            Some(open) => open,
            None => (self.array_header(), 0),
        };
        let len = (self.out.len() - at - 4) as i32;
        self.out[at..at + 4].copy_from_slice(&len.to_be_bytes());
        self.out[at + 16..at + 20].copy_from_slice(&count.to_be_bytes());
    }

    /// The attributes as the decoded path stores them: a map sorted by name in which a
    /// repeated name keeps its last values, serialized by serde_json, after jsonb's
    /// version byte.
    fn attributes_json(&mut self) {
        let mut attrs = std::mem::take(&mut self.attributes);
        // Stable: among equal names the last one read stays last.
        attrs.sort_by(|a, b| a.0.cmp(b.0));
        self.out.extend_from_slice(&JSONB_OID.to_be_bytes());
        let at = self.out.len();
        self.out.extend_from_slice(&[0, 0, 0, 0, 1, b'{']);
        let mut first = true;
        for (i, (name, values)) in attrs.iter().enumerate() {
            if attrs.get(i + 1).is_some_and(|next| next.0 == *name) {
                continue;
            }
            if !first {
                self.out.push(b',');
            }
            first = false;
            json_string(self.out, name);
            self.out.extend_from_slice(b":[");
            for (j, v) in values.iter().enumerate() {
                if j > 0 {
                    self.out.push(b',');
                }
                json_string(self.out, v);
            }
            self.out.push(b']');
        }
        self.out.push(b'}');
        let len = (self.out.len() - at - 4) as i32;
        self.out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }
}

fn json_string(out: &mut Vec<u8>, raw: &[u8]) {
    // Checked UTF-8 when consumed; a lossy conversion never allocates for valid input.
    let s = String::from_utf8_lossy(raw);
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s.as_ref());
}

impl<'a> Visit<'a> for RecordWriter<'a, '_> {
    fn user(&mut self, _raw: &'a [u8]) -> Result<(), CodecError> {
        Ok(())
    }

    fn version(&mut self, version: i64) {
        put_field(self.out, INT8_OID, &version.to_be_bytes());
    }

    fn text(&mut self, at: Place, raw: &'a [u8]) -> Result<(), CodecError> {
        match at {
            Place::AttributeName => self.attributes.push((raw, Vec::new())),
            Place::AttributeValue => {
                if let Some((_, values)) = self.attributes.last_mut() {
                    values.push(raw);
                }
            }
            Place::ProjectId => {
                self.project = true;
                put_field(self.out, TEXT_OID, raw);
            }
            Place::ProjectPurpose
            | Place::Group
            | Place::AcknowledgedPurpose
            | Place::DataSource => self.element(raw),
        }
        Ok(())
    }

    fn end(&mut self, field: Field) {
        match field {
            Field::Attributes => self.attributes_json(),
            Field::Project => {
                if !self.project {
                    self.out.extend_from_slice(&TEXT_OID.to_be_bytes());
                    self.out.extend_from_slice(&(-1i32).to_be_bytes());
                }
                self.close_array()
            }
            Field::Groups | Field::AcknowledgedPurposes | Field::DataSources => self.close_array(),
        }
    }
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
