//! Bounds a JSON value must keep before it is parsed: its size, and how deeply it nests.
//!
//! The parser recurses once per level of nesting, and skipping a field the schema lacks
//! recurses as deeply as the field nests; a record of ours nests a few levels (an envelope,
//! its schema's fields, a policy's rule), so anything deeper is refused with its position
//! instead of reaching serde_json's own limit. The scan reads bytes only and allocates
//! nothing.

use crate::codec::CodecError;

/// The largest JSON value read: four times Kafka's default `message.max.bytes` (1 MiB),
/// room for a profile naming tens of thousands of data sources, escaped inside an
/// envelope. Every allocation a document makes is bounded by a small multiple of this.
pub const MAX_JSON_BYTES: usize = 4 << 20;

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
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
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
    fn a_value_over_the_size_limit_is_refused_unread() {
        let big = vec![b' '; MAX_JSON_BYTES + 1];
        let err = check(&big).unwrap_err();
        assert!(
            err.to_string().contains("more than the 4194304 read"),
            "{err}"
        );
    }
}
