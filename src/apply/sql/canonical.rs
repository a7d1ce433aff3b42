//! The canonical text of a raw value (SPEC §4): what a MATCHING_ATTRIBUTE filter compares
//! with the user's attribute values and what a HASH mask hashes. It is the text
//! PostgreSQL prints under its default settings (shortest exact floats, ISO dates,
//! timestamps with time zone in UTC, `postgres` intervals, hex bytea, money in the C
//! locale), and it is fixed by policy-push, never by the querying session: `col::text`
//! follows `extra_float_digits`, `DateStyle`, `TimeZone`, `IntervalStyle`,
//! `bytea_output` and `lc_monetary`, which any analyst may `SET`, and with
//! `extra_float_digits = -14` a filter on `1` matched 1.2 and 0.96 as well.
//!
//! A view is built knowing each raw column's type, read from the catalog (never from the
//! event, which only claims one). Each dialect turns a [`TextForm`] into an expression
//! (`ViewDialect::canonical`): a plain cast where no setting changes the text, an
//! expression of fixed-format functions where one exists, and on PostgreSQL, for the
//! rest, a function of policy-push's whose own `SET` clauses pin every such setting for
//! the duration of the call (`setup::postgres::CANONICAL_FUNCTIONS`). Where a dialect has no
//! fixed form for a type (Redshift's floats and intervals), there is none: a filter on
//! such a column matches no row and a HASH mask shows NULL (fail closed).

use std::collections::BTreeMap;

use crate::event::DataSource;

/// How a column of some type becomes its canonical text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextForm {
    /// No setting changes its text: strings, integers, numeric, boolean, uuid, json,
    /// times of day, network addresses.
    Plain,
    /// Binary strings: `\x` and lower-case hex (`bytea_output`).
    Bytes,
    /// `YYYY-MM-DD` (`DateStyle`).
    Date,
    /// `YYYY-MM-DD HH24:MI:SS[.ffffff]` (`DateStyle`).
    Timestamp,
    /// As `Timestamp`, in UTC, with `+00` (`DateStyle`, `TimeZone`).
    TimestampTz,
    /// Shortest exact single-precision float (`extra_float_digits`).
    Float4,
    /// Shortest exact double-precision float (`extra_float_digits`).
    Float8,
    /// The `postgres` interval style (`IntervalStyle`).
    Interval,
    /// Money in the C locale (`lc_monetary`).
    Money,
    /// Anything else (arrays, ranges, composites, domains, extension types), or a type
    /// the catalog did not name: whatever its text depends on is pinned, or there is no
    /// fixed form.
    Other,
}

/// A raw table's column types as the warehouse's catalog names them, by column name
/// (`None`: a type outside the system catalog, such as a domain or an extension's).
pub type ColumnTypes = BTreeMap<String, Option<String>>;

/// The types the data source's own record claims, for planning a view without a
/// warehouse (the worked examples, golden files and benchmarks).
pub fn declared(ds: &DataSource) -> ColumnTypes {
    ds.columns
        .iter()
        .map(|c| (c.name.clone(), Some(c.data_type.to_ascii_lowercase())))
        .collect()
}

/// PostgreSQL: the form of a type of `pg_catalog`, by its `typname`.
pub fn postgres_form(typname: Option<&str>) -> TextForm {
    match typname.unwrap_or_default() {
        "bool" | "char" | "name" | "int2" | "int4" | "int8" | "text" | "oid" | "varchar"
        | "bpchar" | "numeric" | "uuid" | "json" | "jsonb" | "time" | "timetz" | "inet"
        | "cidr" | "macaddr" | "macaddr8" => TextForm::Plain,
        "bytea" => TextForm::Bytes,
        "date" => TextForm::Date,
        "timestamp" => TextForm::Timestamp,
        "timestamptz" => TextForm::TimestampTz,
        "float4" => TextForm::Float4,
        "float8" => TextForm::Float8,
        "interval" => TextForm::Interval,
        "money" => TextForm::Money,
        _ => TextForm::Other,
    }
}

/// Amazon Redshift: the form of a type as `SVV_COLUMNS.data_type` names it, for local
/// tables (`character varying(256)`, `timestamp with time zone`) and Spectrum external
/// ones (`varchar(256)`, `string`, `int`, `double`). A TIMETZ is stored in UTC and the
/// guide does not say that its text ignores the session's zone: it has no form here.
pub fn redshift_form(data_type: Option<&str>) -> TextForm {
    let lower = data_type.unwrap_or_default().trim().to_ascii_lowercase();
    let base = lower.split('(').next().unwrap_or_default().trim();
    match base {
        "character varying"
        | "varchar"
        | "character"
        | "char"
        | "bpchar"
        | "nchar"
        | "nvarchar"
        | "text"
        | "string"
        | "smallint"
        | "integer"
        | "bigint"
        | "int"
        | "int2"
        | "int4"
        | "int8"
        | "tinyint"
        | "numeric"
        | "decimal"
        | "boolean"
        | "bool"
        | "time"
        | "time without time zone" => TextForm::Plain,
        "varbyte" | "binary varying" | "varbinary" | "binary" => TextForm::Bytes,
        "date" => TextForm::Date,
        "timestamp" | "timestamp without time zone" => TextForm::Timestamp,
        "timestamptz" | "timestamp with time zone" => TextForm::TimestampTz,
        "real" | "float4" => TextForm::Float4,
        "double precision" | "float8" | "float" | "double" => TextForm::Float8,
        b if b.starts_with("interval") => TextForm::Interval,
        _ => TextForm::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_type_outside_the_catalog_has_no_known_form() {
        assert_eq!(postgres_form(None), TextForm::Other);
        assert_eq!(postgres_form(Some("_float8")), TextForm::Other);
        assert_eq!(postgres_form(Some("float8")), TextForm::Float8);
        assert_eq!(
            redshift_form(Some("character varying(256)")),
            TextForm::Plain
        );
        assert_eq!(redshift_form(Some("varchar(256)")), TextForm::Plain);
        assert_eq!(redshift_form(Some("double precision")), TextForm::Float8);
        assert_eq!(
            redshift_form(Some("timestamp with time zone")),
            TextForm::TimestampTz
        );
        assert_eq!(redshift_form(Some("super")), TextForm::Other);
        assert_eq!(redshift_form(None), TextForm::Other);
    }
}
