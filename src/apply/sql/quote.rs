//! Quoting for the only places where event data must become SQL text: DDL (view
//! definitions), which cannot take bind parameters. Identifiers reaching these helpers
//! have already been validated by `event::identifier`; quoting them anyway means that a
//! validation bug cannot become an injection.
//!
//! Literals are quoted per dialect, so that no value can end its literal early:
//! - PostgreSQL reads a backslash in an ordinary literal as an escape when
//!   `standard_conforming_strings` is off. A value holding a backslash is therefore
//!   written as an escape string (`E'…'`, backslashes doubled), which means the same under
//!   either setting; any other value is an ordinary literal, which also means the same
//!   under either setting once it holds no backslash.
//! - Amazon Redshift always reads a backslash in a literal as an escape: its own
//!   `QUOTE_LITERAL` "doubles any embedded single quotation marks and backslashes"
//!   (Database Developer Guide, r_QUOTE_LITERAL), and so does [`redshift_literal`].

/// `"name"`, with embedded quotes doubled.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `"schema"."name"`.
pub fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", ident(schema), ident(name))
}

/// A PostgreSQL string literal that evaluates to `value` whatever the session's
/// `standard_conforming_strings` (see the module docs). Values never contain NUL:
/// validation rejects it.
pub fn literal(value: &str) -> String {
    let quoted = value.replace('\'', "''");
    if value.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

/// An Amazon Redshift string literal: single quotes and backslashes doubled, as
/// Redshift's `QUOTE_LITERAL` does.
pub fn redshift_literal(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reads a Redshift literal back by the documented rules: inside the quotes `''` is a
    /// quote and a backslash escapes the next character. None if the literal ends early.
    fn redshift_unquote(lit: &str) -> Option<String> {
        let inner = lit.strip_prefix('\'')?;
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => out.push(chars.next()?),
                '\'' => match chars.next() {
                    Some('\'') => out.push('\''),
                    None => return Some(out),
                    Some(_) => return None,
                },
                c => out.push(c),
            }
        }
        None
    }

    #[test]
    fn quoting_neutralises_hostile_text() {
        assert_eq!(
            ident("x\"; drop table t; --"),
            "\"x\"\"; drop table t; --\""
        );
        assert_eq!(literal("o'brien"), "'o''brien'");
        assert_eq!(literal("a\\'b"), "E'a\\\\''b'");
        assert_eq!(literal("ends\\"), "E'ends\\\\'");
        assert_eq!(redshift_literal("a\\'b"), "'a\\\\''b'");
        assert_eq!(qualified("s", "t"), "\"s\".\"t\"");
    }

    proptest! {
        #[test]
        fn redshift_literals_read_back_as_the_value(value in "\\PC*|[\\\\'$x]*") {
            prop_assert_eq!(redshift_unquote(&redshift_literal(&value)), Some(value));
        }
    }
}
