//! PostgreSQL's binary format for `immuta_procedures.profile_row[]`, the parameter of
//! the set-based profile upsert: records written straight from a kept Avro datum (the
//! hot path, without decoding it) or, for a decoded profile, through the driver's own
//! encoders. Both give the same bytes (tested below).

use tokio_postgres::types::ToSql;

use super::{position, project};
use crate::apply::ApplyError;
use crate::batch::Profile;
use crate::codec::{CodecError, ProfileDatum, ProfileField, ProfilePlace, ProfileVisit};
use crate::record::Origin;

/// An `immuta_procedures.profile_row[]` in PostgreSQL's binary array format, built one
/// record at a time. The element type's oid differs per database, so the header is written
/// when the driver says which type the parameter is.
#[derive(Debug, Default)]
pub struct ProfileRows {
    count: i32,
    /// Each element: its length, then the record.
    elements: Vec<u8>,
    /// Where each record came from, in the same order (`upsert_profiles`' position
    /// arrays; see `setup::postgres::stale_tombstone`).
    pub(crate) partitions: Vec<i32>,
    pub(crate) offsets: Vec<i64>,
}

impl ProfileRows {
    pub fn with_capacity(bytes: usize) -> Self {
        ProfileRows {
            count: 0,
            elements: Vec::with_capacity(bytes),
            partitions: Vec::new(),
            offsets: Vec::new(),
        }
    }

    /// Appends `profile` under `user` (folded), read at `origin`.
    pub fn push(
        &mut self,
        user: &str,
        profile: &Profile,
        origin: &Origin,
    ) -> Result<(), ApplyError> {
        let at = self.elements.len();
        self.elements.extend_from_slice(&[0; 4]);
        let written = match profile {
            Profile::Datum(d) => record_datum(d, user, &mut self.elements).map_err(Into::into),
            Profile::Decoded(v) => record_decoded(v, &mut self.elements),
        };
        if let Err(e) = written {
            self.elements.truncate(at);
            return Err(e);
        }
        // A record is bounded by the message size, far below 2 GiB.
        let len = (self.elements.len() - at - 4) as i32;
        self.elements[at..at + 4].copy_from_slice(&len.to_be_bytes());
        self.count += 1;
        let (partition, offset) = position(origin);
        self.partitions.push(partition);
        self.offsets.push(offset);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of the records so far.
    pub fn bytes(&self) -> usize {
        self.elements.len()
    }
}

impl ToSql for ProfileRows {
    fn to_sql(
        &self,
        ty: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let tokio_postgres::types::Kind::Array(member) = ty.kind() else {
            return Err(format!("profile rows sent as {ty}, not as an array").into());
        };
        // One dimension, no nulls, the element type, the count, lower bound 1.
        for word in [1i32, 0, member.oid() as i32, self.count, 1] {
            out.extend_from_slice(&word.to_be_bytes());
        }
        out.extend_from_slice(&self.elements);
        Ok(tokio_postgres::types::IsNull::No)
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        matches!(ty.kind(), tokio_postgres::types::Kind::Array(m) if m.name() == "profile_row")
    }

    tokio_postgres::types::to_sql_checked!();
}

/// A decoded profile (an older writer schema, or the Confluent wire format) as one
/// `profile_row` record, through the driver's own encoders.
pub(crate) fn record_decoded(
    v: &crate::event::UserProfile,
    out: &mut Vec<u8>,
) -> Result<(), ApplyError> {
    use tokio_postgres::types::{IsNull, Json, Type};
    let (project_id, purposes) = project(v);
    let attributes = Json(&v.attributes);
    let row: [(&(dyn ToSql + Sync), Type); 8] = [
        (&v.user, Type::TEXT),
        (&v.version, Type::INT8),
        (&v.groups, Type::TEXT_ARRAY),
        (&attributes, Type::JSONB),
        (&project_id, Type::TEXT),
        (&purposes, Type::TEXT_ARRAY),
        (&v.acknowledged_purposes, Type::TEXT_ARRAY),
        (&v.data_sources, Type::TEXT_ARRAY),
    ];
    out.extend_from_slice(&(row.len() as i32).to_be_bytes());
    let mut field = bytes::BytesMut::new();
    for (value, ty) in &row {
        field.clear();
        out.extend_from_slice(&ty.oid().to_be_bytes());
        // The driver refuses only values its types cannot carry: a bug here.
        let is_null =
            value
                .to_sql_checked(ty, &mut field)
                .map_err(|source| ApplyError::Encode {
                    what: format!("the profile of {} as a record", v.user),
                    source,
                })?;
        match is_null {
            IsNull::Yes => out.extend_from_slice(&(-1i32).to_be_bytes()),
            IsNull::No => {
                out.extend_from_slice(&(field.len() as i32).to_be_bytes());
                out.extend_from_slice(&field);
            }
        }
    }
    Ok(())
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
fn record_datum(datum: &ProfileDatum, user: &str, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let start = out.len();
    out.extend_from_slice(&8i32.to_be_bytes());
    put_field(out, TEXT_OID, user.as_bytes());
    let mut row = RecordWriter {
        out,
        array: None,
        attributes: Vec::new(),
        project: false,
    };
    let result = datum.visit(&mut row);
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

impl<'a> ProfileVisit<'a> for RecordWriter<'a, '_> {
    fn user(&mut self, _raw: &'a [u8]) -> Result<(), CodecError> {
        Ok(())
    }

    fn version(&mut self, version: i64) {
        put_field(self.out, INT8_OID, &version.to_be_bytes());
    }

    fn text(&mut self, at: ProfilePlace, raw: &'a [u8]) -> Result<(), CodecError> {
        match at {
            ProfilePlace::AttributeName => self.attributes.push((raw, Vec::new())),
            ProfilePlace::AttributeValue => {
                if let Some((_, values)) = self.attributes.last_mut() {
                    values.push(raw);
                }
            }
            ProfilePlace::ProjectId => {
                self.project = true;
                put_field(self.out, TEXT_OID, raw);
            }
            ProfilePlace::ProjectPurpose
            | ProfilePlace::Group
            | ProfilePlace::AcknowledgedPurpose
            | ProfilePlace::DataSource => self.element(raw),
        }
        Ok(())
    }

    fn end(&mut self, field: ProfileField) {
        match field {
            ProfileField::Attributes => self.attributes_json(),
            ProfileField::Project => {
                if !self.project {
                    self.out.extend_from_slice(&TEXT_OID.to_be_bytes());
                    self.out.extend_from_slice(&(-1i32).to_be_bytes());
                }
                self.close_array()
            }
            ProfileField::Groups
            | ProfileField::AcknowledgedPurposes
            | ProfileField::DataSources => self.close_array(),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::codec::tests::fast_reader::profiles;
    use crate::codec::Codec;
    use crate::event::Event;

    /// A datum's record written directly, and by the driver's encoders from the decoded
    /// profile, both under the folded user name.
    fn records(datum: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let datum = ProfileDatum::unchecked(0, datum);
        let p = datum.decode().unwrap();
        let (mut direct, mut driver) = (Vec::new(), Vec::new());
        record_datum(&datum, &p.user, &mut direct).unwrap();
        record_decoded(&p, &mut driver).unwrap();
        (direct, driver)
    }

    proptest! {
        /// The record written from the datum is, byte for byte, the record the driver's
        /// encoders write for the decoded profile.
        #[test]
        fn the_datums_record_is_the_decoded_profiles_record(p in profiles()) {
            let codec = Codec::embedded().unwrap();
            let bytes = codec.encode(&Event::Profile(p)).unwrap();
            let (direct, driver) = records(&bytes[10..]);
            prop_assert_eq!(direct, driver);
        }
    }

    #[test]
    fn the_field_types_are_the_drivers() {
        use tokio_postgres::types::Type;
        let ours = [TEXT_OID, INT8_OID, TEXT_ARRAY_OID, JSONB_OID];
        let drivers = [Type::TEXT, Type::INT8, Type::TEXT_ARRAY, Type::JSONB].map(|t| t.oid());
        assert_eq!(ours, drivers);
    }

    #[test]
    fn record_of_unsorted_and_repeated_attribute_names_keeps_the_last() {
        let mut datum = vec![0x0a];
        datum.extend_from_slice(b"Alice");
        datum.push(0x02); // version 1
        datum.push(0x00); // no groups
                          // attributes in two blocks: z -> [1], a -> [2]; then a -> [3, "q\"]
        datum.extend_from_slice(&[0x04, 0x02, b'z', 0x02, 0x02, b'1', 0x00]);
        datum.extend_from_slice(&[0x02, b'a', 0x02, 0x02, b'2', 0x00]);
        datum.push(0x02); // a second block of one entry
        datum.extend_from_slice(&[0x02, b'a', 0x04, 0x02, b'3', 0x04, b'q', b'"', 0x00, 0x00]);
        datum.extend_from_slice(&[0x02, 0x02, b'p', 0x02, 0x02, b'x', 0x00]); // project p, purposes [x]
        datum.extend_from_slice(&[0x00, 0x00]); // two empty arrays
        let p = ProfileDatum::unchecked(1, &datum).decode().unwrap();
        assert_eq!(p.attributes.len(), 2, "{p:?}");
        assert_eq!(p.attributes["a"], ["3", "q\""]);
        let (direct, driver) = records(&datum);
        assert_eq!(direct, driver);
        let mut invalid = vec![0x00; 3];
        let truncated = ProfileDatum::unchecked(1, &[0x0a, b'a']);
        assert!(record_datum(&truncated, "a", &mut invalid).is_err());
        assert_eq!(invalid, [0x00; 3], "a failed record leaves nothing behind");
    }
}
