//! Bounds a JSON value must keep before it is parsed: its size, how many values it holds,
//! and how deeply it nests.
//!
//! Each value a document holds becomes at least one allocation once parsed (a string in
//! an array is 24 bytes of `String` plus its heap block, for 3 bytes of input), so the
//! count of values bounds a record's memory where its size alone would allow ten times
//! as much. A record of ours nests a few levels (an envelope, its schema's fields, a
//! policy's rule): anything deeper is refused with its position, before serde_json's own
//! limit of 128 would refuse it with less to say. The scan reads bytes only and
//! allocates nothing.

use crate::codec::CodecError;

/// The largest JSON value read: four times Kafka's default `message.max.bytes` (1 MiB),
/// room for a profile naming tens of thousands of data sources, escaped inside an
/// envelope.
pub const MAX_JSON_BYTES: usize = 4 << 20;

/// The most values (array items and object members, counted by the commas between them)
/// a JSON value may hold: a profile naming 50,000 data sources, or a data source of
/// 20,000 columns, fits; a parsed document stays within a few megabytes.
pub const MAX_JSON_VALUES: usize = 100_000;

/// The deepest nesting of objects and arrays read. The deepest record, a policy inside
/// the `schema`/`payload` envelope with its inferred schema, nests fewer than 16 levels.
pub const MAX_JSON_DEPTH: usize = 32;

/// Checks `bytes` against [`MAX_JSON_BYTES`] and [`MAX_JSON_DEPTH`].
pub fn check(bytes: &[u8]) -> Result<(), CodecError> {
    if bytes.len() > MAX_JSON_BYTES {
        return Err(CodecError::JsonBounds(format!(
            "{} bytes of JSON, more than the {MAX_JSON_BYTES} read",
            bytes.len()
        )));
    }
    let (mut depth, mut in_string, mut escaped, mut commas) = (0usize, false, false, 0usize);
    for (at, &b) in bytes.iter().enumerate() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(CodecError::JsonBounds(format!(
                        "JSON nests deeper than {MAX_JSON_DEPTH} levels (at byte {at})"
                    )));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b',' => {
                commas += 1;
                if commas >= MAX_JSON_VALUES {
                    return Err(CodecError::JsonBounds(format!(
                        "JSON holds more than {MAX_JSON_VALUES} values (at byte {at})"
                    )));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(levels: usize) -> String {
        format!("{}{}", "[".repeat(levels), "]".repeat(levels))
    }

    #[test]
    fn nesting_up_to_the_limit_passes_and_one_more_is_refused() {
        assert!(check(nested(MAX_JSON_DEPTH).as_bytes()).is_ok());
        let err = check(nested(MAX_JSON_DEPTH + 1).as_bytes()).unwrap_err();
        assert!(
            err.to_string()
                .contains("deeper than 32 levels (at byte 32)"),
            "{err}"
        );
    }

    #[test]
    fn brackets_inside_strings_do_not_count() {
        let inside = format!(r#"{{"a": "{}\"{}"}}"#, "[".repeat(100), "{".repeat(100));
        assert!(check(inside.as_bytes()).is_ok());
        // An escaped backslash ends the escape: the quote after it closes the string.
        let closed = format!(r#"["\\"{}"#, "[".repeat(MAX_JSON_DEPTH));
        assert!(check(closed.as_bytes()).is_err());
    }

    #[test]
    fn values_up_to_the_limit_pass_and_one_more_is_refused() {
        let list = |n: usize| format!("[{}]", vec!["1"; n].join(","));
        assert!(check(list(MAX_JSON_VALUES).as_bytes()).is_ok());
        let err = check(list(MAX_JSON_VALUES + 1).as_bytes()).unwrap_err();
        assert!(err.to_string().contains("more than 100000 values"), "{err}");
        // Commas inside strings are text, not values.
        assert!(check(format!(r#"["{}"]"#, ",".repeat(MAX_JSON_VALUES)).as_bytes()).is_ok());
    }

    #[test]
    fn a_value_over_the_size_limit_is_refused_unread() {
        let big = vec![b' '; MAX_JSON_BYTES + 1];
        let err = check(&big).unwrap_err();
        assert!(
            err.to_string().contains("more than the 4194304 read"),
            "{err}"
        );
    }
}
