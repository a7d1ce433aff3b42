//! A pass over an Avro datum, guided by its writer schema, that refuses it before the
//! generic decoder allocates anything for it.
//!
//! apache-avro reserves room for as many array or map items as a block claims before it
//! reads any (`items.reserve(len)`), and allocates a string's bytes before reading them,
//! up to limits far beyond any record (512 Mi items): a 40-byte record can ask for tens
//! of gigabytes. This pass checks every string, bytes, array and map length against the
//! bytes left in the datum (every item takes at least one byte; an item that could take
//! none, such as `null`, is refused in counts larger than that too, which no record of
//! ours writes), reading nothing but varints. The fast profile reader makes the same
//! check itself (`fast::Reader::len`).

use std::collections::HashMap;

use apache_avro::schema::{Name, Schema};

use super::CodecError;

/// Deeper nesting than this is refused: recursive schemas could otherwise recurse once
/// per byte of a hostile datum.
const MAX_DEPTH: usize = 64;

fn bomb(what: &str) -> CodecError {
    CodecError::Datum(format!(
        "{what} claims more than the record holds; refused before decoding"
    ))
}

struct Scan<'s, 'd> {
    bytes: &'d [u8],
    root: &'s Schema,
    /// The schema's named types, collected at the first reference to one (most schemas
    /// have none, and this runs once per record).
    names: Option<HashMap<String, &'s Schema>>,
}

/// Checks `datum` against `schema`; an error means the generic decoder must not see it.
pub(super) fn check(schema: &Schema, datum: &[u8]) -> Result<(), CodecError> {
    let mut scan = Scan {
        bytes: datum,
        root: schema,
        names: None,
    };
    scan.value(schema, 0)
}

fn collect_names<'s>(schema: &'s Schema, names: &mut HashMap<String, &'s Schema>) {
    let mut add = |name: &Name| {
        names.insert(name.fullname(None), schema);
        names.insert(name.name.clone(), schema);
    };
    match schema {
        Schema::Record(r) => {
            add(&r.name);
            for f in &r.fields {
                collect_names(&f.schema, names);
            }
        }
        Schema::Enum(e) => add(&e.name),
        Schema::Fixed(f) => add(&f.name),
        Schema::Array(a) => collect_names(&a.items, names),
        Schema::Map(m) => collect_names(&m.types, names),
        Schema::Union(u) => u.variants().iter().for_each(|v| collect_names(v, names)),
        Schema::Decimal(d) => collect_names(&d.inner, names),
        _ => {}
    }
}

impl<'s> Scan<'s, '_> {
    fn long(&mut self) -> Result<i64, CodecError> {
        super::fast::read_long(&mut self.bytes)
            .ok_or_else(|| CodecError::Datum("truncated or overlong varint".into()))
    }

    fn skip(&mut self, n: usize, what: &str) -> Result<(), CodecError> {
        if n > self.bytes.len() {
            return Err(bomb(what));
        }
        self.bytes = &self.bytes[n..];
        Ok(())
    }

    /// A length or count that must fit in what is left.
    fn fitting(&mut self, what: &str) -> Result<usize, CodecError> {
        let n = self.long()?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.bytes.len())
            .ok_or_else(|| bomb(what))
    }

    fn sized(&mut self, what: &str) -> Result<(), CodecError> {
        let n = self.fitting(what)?;
        self.skip(n, what)
    }

    /// Array or map blocks, each item read by `item`.
    fn blocks(
        &mut self,
        what: &str,
        depth: usize,
        mut item: impl FnMut(&mut Self, usize) -> Result<(), CodecError>,
    ) -> Result<(), CodecError> {
        loop {
            let count = self.long()?;
            if count == 0 {
                return Ok(());
            }
            if count < 0 {
                // A negative count is followed by the block's size in bytes.
                self.fitting(what)?;
            }
            let n = count
                .checked_abs()
                .and_then(|n| usize::try_from(n).ok())
                .filter(|&n| n <= self.bytes.len())
                .ok_or_else(|| bomb(what))?;
            for _ in 0..n {
                item(self, depth + 1)?;
            }
        }
    }

    fn value(&mut self, schema: &'s Schema, depth: usize) -> Result<(), CodecError> {
        if depth > MAX_DEPTH {
            return Err(CodecError::Datum(format!(
                "nested deeper than {MAX_DEPTH} levels"
            )));
        }
        match schema {
            Schema::Null => Ok(()),
            Schema::Boolean => self.skip(1, "a boolean"),
            Schema::Int
            | Schema::Long
            | Schema::Date
            | Schema::TimeMillis
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos
            | Schema::Enum(_) => self.long().map(drop),
            Schema::Float => self.skip(4, "a float"),
            Schema::Double => self.skip(8, "a double"),
            Schema::Bytes | Schema::String | Schema::Uuid | Schema::BigDecimal => {
                self.sized("a string or bytes length")
            }
            Schema::Fixed(f) => self.skip(f.size, "a fixed"),
            Schema::Duration => self.skip(12, "a duration"),
            Schema::Decimal(d) => self.value(&d.inner, depth + 1),
            Schema::Array(a) => self.blocks("an array length", depth, |s, d| s.value(&a.items, d)),
            Schema::Map(m) => self.blocks("a map length", depth, |s, d| {
                s.sized("a map key length")?;
                s.value(&m.types, d)
            }),
            Schema::Union(u) => {
                let index = self.long()?;
                let branch = usize::try_from(index)
                    .ok()
                    .and_then(|i| u.variants().get(i))
                    .ok_or_else(|| {
                        CodecError::Datum(format!("union branch {index} out of range"))
                    })?;
                self.value(branch, depth + 1)
            }
            Schema::Record(r) => r
                .fields
                .iter()
                .try_for_each(|f| self.value(&f.schema, depth + 1)),
            Schema::Ref { name } => {
                let root = self.root;
                let names = self.names.get_or_insert_with(|| {
                    let mut names = HashMap::new();
                    collect_names(root, &mut names);
                    names
                });
                let target = names
                    .get(&name.fullname(None))
                    .or_else(|| names.get(&name.name))
                    .copied()
                    .ok_or_else(|| {
                        CodecError::Datum(format!("unknown named type {}", name.name))
                    })?;
                self.value(target, depth + 1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A list whose tail refers to its own record by name.
    const LIST: &str = r#"{"type": "record", "name": "Node", "fields": [
        {"name": "label", "type": "string"},
        {"name": "next", "type": ["null", "Node"]}]}"#;

    fn zigzag(n: i64) -> Vec<u8> {
        let mut z = ((n << 1) ^ (n >> 63)) as u64;
        let mut out = Vec::new();
        loop {
            let b = (z & 0x7f) as u8;
            z >>= 7;
            if z == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }

    #[test]
    fn named_references_are_followed_and_checked_too() {
        let schema = Schema::parse_str(LIST).unwrap();
        // "a", then branch 1 (a Node) "b", then branch 0 (null).
        let good = [
            zigzag(1),
            b"a".to_vec(),
            zigzag(1),
            zigzag(1),
            b"b".to_vec(),
            zigzag(0),
        ]
        .concat();
        assert!(check(&schema, &good).is_ok());
        // The second node's label claims 400 MB.
        let bomb = [zigzag(1), b"a".to_vec(), zigzag(1), zigzag(400_000_000)].concat();
        let e = check(&schema, &bomb).unwrap_err().to_string();
        assert!(e.contains("claims more than the record holds"), "{e}");
    }
}
