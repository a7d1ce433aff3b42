//! Quoting for the only places where event data must become SQL text: DDL (view
//! definitions), which cannot take bind parameters. Identifiers reaching these helpers
//! have already been validated by `event::identifier`; quoting them anyway means that a
//! validation bug cannot become an injection.

/// `"name"`, with embedded quotes doubled.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `"schema"."name"`.
pub fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", ident(schema), ident(name))
}

/// `'value'` as a standard-conforming string literal (quotes doubled; backslashes are
/// ordinary characters). Values never contain NUL: validation rejects it.
pub fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_neutralises_hostile_text() {
        assert_eq!(
            ident("x\"; drop table t; --"),
            "\"x\"\"; drop table t; --\""
        );
        assert_eq!(literal("o'brien"), "'o''brien'");
        assert_eq!(literal("a\\'b"), "'a\\''b'");
        assert_eq!(qualified("s", "t"), "\"s\".\"t\"");
    }
}
