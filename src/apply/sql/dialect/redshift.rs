//! Amazon Redshift's side of the dialect seam; each rule is cited from the Database
//! Developer Guide (docs/redshift.md has the table).

use super::Sql;
use crate::apply::setup::row_security;
use crate::apply::sql::canonical::{self, TextForm};
use crate::apply::sql::quote::redshift_literal as literal;
use crate::apply::sql::view::ViewDialect;

/// The fragments of policy views over `immuta_system.user_profile_value`.
pub struct Redshift;

/// A timestamp expression's text as PostgreSQL prints it with `DateStyle = ISO`, from
/// fixed-format `TO_CHAR` parts: the fraction of a second without trailing zeros, `zone`,
/// and ` BC` before the common era.
fn iso_timestamp(ts: &str, zone: &str) -> String {
    let zone = match zone {
        "" => String::new(),
        z => format!("'{z}' || "),
    };
    format!(
        "(pg_catalog.to_char({ts}, 'YYYY-MM-DD HH24:MI:SS') || \
         pg_catalog.rtrim(pg_catalog.rtrim(pg_catalog.to_char({ts}, '.US'), '0'), '.') || \
         {zone}pg_catalog.replace(pg_catalog.to_char({ts}, ' BC'), ' AD', ''))"
    )
}

fn values_in(kind: &str, values: &[String]) -> String {
    let items: Vec<_> = values.iter().map(|v| literal(v)).collect();
    format!(
        "EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = '{kind}' AND v.value IN ({}))",
        items.join(", ")
    )
}

impl ViewDialect for Redshift {
    fn subscribed(&self, id: &str) -> String {
        format!("EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'data_source' AND v.value = {id})")
    }
    fn in_group(&self, group: &str) -> String {
        format!("EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'group' AND v.value = {group})")
    }
    fn in_any_group(&self, groups: &[String]) -> String {
        values_in("group", groups)
    }
    fn acknowledged_purpose(&self, purposes: &[String]) -> String {
        let items: Vec<_> = purposes.iter().map(|v| literal(v)).collect();
        format!(
            "EXISTS (SELECT 1 FROM immuta_system.user_profile_value pp \
             JOIN immuta_system.user_profile_value ack ON ack.kind = 'acknowledged_purpose' AND ack.value = pp.value \
             WHERE pp.kind = 'project_purpose' AND pp.value IN ({}))",
            items.join(", ")
        )
    }
    fn attribute_matches(&self, text: &str, attribute: &str) -> String {
        format!(
            "{text} IN (SELECT v.value FROM immuta_system.user_profile_value v WHERE v.kind = 'attribute' AND v.name = {attribute})"
        )
    }
    fn text_form(&self, catalog_type: Option<&str>) -> TextForm {
        canonical::redshift_form(catalog_type)
    }
    /// Casts where no setting changes the text, fixed-format `TO_CHAR` for dates and
    /// timestamps (r_FORMAT_strings; a TIMESTAMPTZ goes to UTC with `AT TIME ZONE`, which
    /// returns a TIMESTAMP, r_AT_TIME_ZONE), hex for VARBYTE (r_TO_HEX: a VARBYTE cast to
    /// VARCHAR decodes UTF-8 instead, r_VARBYTE_type). Floats and intervals have no form
    /// the session cannot change: any user may `SET extra_float_digits`
    /// (r_extra_float_digits) and `IntervalStyle` (r_interval_data_types), and the guide
    /// offers no exact float format (r_Numeric_formating).
    fn canonical(&self, e: &str, form: TextForm) -> Option<String> {
        match form {
            TextForm::Plain => Some(self.text(e)),
            TextForm::Bytes => Some(format!(
                "({} || pg_catalog.lower(pg_catalog.to_hex({e})))",
                literal("\\x")
            )),
            TextForm::Date => Some(format!(
                "pg_catalog.replace(pg_catalog.to_char({e}::timestamp, 'YYYY-MM-DD BC'), ' AD', '')"
            )),
            TextForm::Timestamp => Some(iso_timestamp(e, "")),
            TextForm::TimestampTz => {
                Some(iso_timestamp(&format!("({e} AT TIME ZONE 'UTC')"), "+00"))
            }
            TextForm::Float4
            | TextForm::Float8
            | TextForm::Interval
            | TextForm::Money
            | TextForm::Other => None,
        }
    }
    fn text(&self, expr: &str) -> String {
        // A bare VARCHAR cast means VARCHAR(256) on Redshift and would truncate.
        format!("{expr}::varchar(65535)")
    }
    fn sha256_hex(&self, text: &str) -> String {
        format!("pg_catalog.sha2(hs.salt || {text}, 256)")
    }
    fn literal(&self, value: &str) -> String {
        literal(value)
    }
    /// Redshift has no security-barrier views: row-level security protects the rows
    /// instead (`row_security`).
    fn create_view(&self, qualified_name: &str) -> String {
        format!("CREATE VIEW {qualified_name} AS")
    }
    fn row_visible(&self, condition: &str) -> Option<String> {
        Some(row_security::visible_column(condition))
    }
    fn after_create(&self, schema: &str, view: &str) -> Option<String> {
        Some(row_security::protect(schema, view))
    }
    fn before_drop(&self, schema: &str, view: &str) -> Option<String> {
        Some(row_security::release(schema, view))
    }
    /// Late-binding: a view over a Spectrum external table must be one (r_CREATE_VIEW,
    /// "Late-binding views"), and every view is, so that local and external tables are
    /// treated alike. Its tables are not checked when it is created, which
    /// `rebuild::column_problem` does beforehand from SVV_COLUMNS.
    fn view_end(&self) -> &'static str {
        "\nWITH NO SCHEMA BINDING"
    }
}

/// The statement every Redshift batch takes first (`Sql::batch_lock`).
pub const LOCK_OFFSETS: &str = "LOCK immuta_system.offsets";

/// The most bytes a `varchar` holds (r_Character_types): the definitions and a profile's
/// value set travel and are stored as `varchar(65535)`.
pub const VARCHAR_MAX: usize = 65_535;

impl Sql for Redshift {
    /// Redshift has one lock mode (r_LOCK).
    fn lock_offsets(&self) -> &'static str {
        LOCK_OFFSETS
    }
    /// Primary keys are not enforced: the table lock makes the existence check and the
    /// insert of `offsets_insert` atomic.
    fn batch_lock(&self) -> Option<&'static str> {
        Some(LOCK_OFFSETS)
    }
    fn hold_off_batches(&self) -> &'static str {
        LOCK_OFFSETS
    }
    fn lock_pending(&self) -> &'static str {
        "LOCK immuta_system.view_pending"
    }
    fn offsets_insert(&self) -> &'static str {
        "INSERT INTO immuta_system.offsets (consumer_group, topic, \"partition\", next_offset) \
         SELECT $1::varchar, $2::varchar, $3::integer, $4::bigint WHERE NOT EXISTS (SELECT 1 FROM immuta_system.offsets \
         WHERE consumer_group = $1::varchar AND topic = $2::varchar AND \"partition\" = $3::integer)"
    }
    /// NOW() is a leader-node-only function and fails on user tables
    /// (c_SQL_functions_leader_node_only); GETDATE() runs on the compute nodes.
    fn offsets_update(&self) -> &'static str {
        "UPDATE immuta_system.offsets SET next_offset = $4, updated_at = pg_catalog.GETDATE() \
         WHERE consumer_group = $1 AND topic = $2 AND \"partition\" = $3 AND next_offset = $5 \
         AND NOT EXISTS (SELECT 1 FROM immuta_system.partition_holds h \
         WHERE h.consumer_group = $1 AND h.topic = $2 AND h.\"partition\" = $3)"
    }
    fn remember_stale(&self) -> &'static str {
        "INSERT INTO immuta_system.view_stale (data_source_id) SELECT $1::varchar \
         WHERE NOT EXISTS (SELECT 1 FROM immuta_system.view_stale WHERE data_source_id = $1::varchar)"
    }
    /// Every transaction that builds views holds `LOCK immuta_system.offsets` already.
    fn lock_views(&self) -> Option<&'static str> {
        None
    }
    /// Redshift has no lock timeout; `statement_timeout` counts planning, queueing and
    /// execution (r_statement_timeout), so it bounds a wait for a lock too, together with
    /// the statement's own run time. `SET LOCAL` lasts until the transaction ends (r_SET).
    fn bound_lock_waits(&self, limit: std::time::Duration) -> String {
        format!(
            "SET LOCAL statement_timeout TO {}",
            limit.as_millis().max(1)
        )
    }
    fn unbound_lock_waits(&self) -> &'static str {
        "SET LOCAL statement_timeout TO DEFAULT"
    }
    /// `statement_timeout` also counts queueing in WLM: around the view statements only,
    /// so that a busy cluster's queue does not fail the reads of a rebuild.
    fn bounds_each_ddl(&self) -> bool {
        true
    }
    /// query_canceled (statement_timeout), and lock_not_available should a cluster
    /// report a lock wait so.
    fn lock_wait_ended(&self) -> &'static [&'static str] {
        &["57014", "55P03"]
    }
    /// Other users' locks are visible to superusers only (r_STV_LOCKS; SVV_TRANSACTIONS
    /// shows a regular user its own, r_SVV_TRANSACTIONS).
    fn view_blockers(&self) -> Option<&'static str> {
        None
    }
    /// A regular user sees only their own transactions and locks (r_SVV_TRANSACTIONS,
    /// r_STV_LOCKS): not who holds what they wait for.
    fn lock_waits(&self) -> Option<&'static str> {
        None
    }
    /// PG_TERMINATE_BACKEND ends another user's session only for a superuser
    /// (PG_TERMINATE_BACKEND), and the system account is none.
    fn terminate_view_blockers(&self) -> Option<&'static str> {
        None
    }
    fn remember_pending(&self) -> &'static str {
        "INSERT INTO immuta_system.view_pending (data_source_id) SELECT $1::varchar \
         WHERE NOT EXISTS (SELECT 1 FROM immuta_system.view_pending WHERE data_source_id = $1::varchar)"
    }
    /// SVV_COLUMNS lists the columns of local and of Spectrum external tables;
    /// information_schema.columns has no external ones (r_SVV_COLUMNS).
    fn columns_query(&self) -> &'static str {
        "SELECT column_name::varchar, data_type::varchar FROM pg_catalog.svv_columns \
         WHERE table_schema = $1 AND table_name = $2"
    }
    fn definition_text(&self) -> &'static str {
        "definition"
    }
    fn state_tables(&self) -> &'static [&'static str] {
        &[
            "view_state",
            "view_pending",
            "view_stale",
            "view_withheld",
            "profile",
            "profile_value",
            "data_source",
            "policy",
            "impersonation",
            "impersonation_session",
        ]
    }
    fn stored_limit(&self) -> Option<usize> {
        Some(VARCHAR_MAX)
    }
    /// No savepoints (c_unsupported-postgresql-features): refused records are isolated
    /// by bisection instead (`batch/split.rs`).
    fn savepoints(&self) -> bool {
        false
    }
    fn before_view_builds(&self) -> Option<&'static str> {
        None
    }
    /// No arrays (c_unsupported-postgresql-datatypes): one lookup per table.
    fn columns_of_tables(&self) -> Option<&'static str> {
        None
    }
    fn session(&self, _commit: crate::config::SynchronousCommit) -> Option<String> {
        None
    }
    fn reserved_column(&self) -> Option<&'static str> {
        Some(row_security::COLUMN)
    }
    fn views_query(&self) -> &'static str {
        "SELECT n.nspname::varchar, c.relname::varchar, NULL::boolean \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'v' AND n.nspname IN ('immuta_system', $1)"
    }
    /// SVV_RLS_RELATION lists the RLS-protected relations; a regular user sees their own,
    /// and the system account owns every view it checks (r_SVV_RLS_RELATION).
    /// `protect_view` attaches the policy in the call that turns RLS on; which policies are
    /// attached only a security administrator may read (r_SVV_RLS_ATTACHED_POLICY).
    fn protected_views_query(&self) -> Option<&'static str> {
        Some(
            "SELECT relschema::varchar, relname::varchar FROM pg_catalog.svv_rls_relation \
             WHERE is_rls_on AND relschema IN ('immuta_system', $1)",
        )
    }
}

/// Redshift's view DDL, pinned by `tests/golden/redshift_views.sql` (checked by
/// `tests/redshift_conformance.rs`).
#[cfg(test)]
mod golden_tests {
    use super::Redshift;
    use crate::apply::sql::examples as doc_examples;
    use crate::apply::sql::golden;
    use crate::apply::sql::view::plan_with;

    #[test]
    fn policy_views_are_pinned() {
        let mut all = String::new();
        for (title, policies) in doc_examples::all() {
            let orders = doc_examples::orders();
            let types = crate::apply::sql::canonical::declared(&orders);
            let plan = plan_with(&Redshift, &orders, &policies, "immuta", &types);
            let sql = crate::apply::sql::view::replacement(
                &Redshift,
                "immuta",
                Some("old_orders"),
                "orders",
                &plan,
            );
            for forbidden in ["ANY (", "&&", "jsonb", "::text", "unnest", "sha256("] {
                assert!(
                    !sql.contains(forbidden),
                    "{title}: Redshift does not accept {forbidden}: {sql}"
                );
            }
            all += &format!("-- {title}\n{sql}\n");
        }
        // Each type's canonical text: fixed-format TO_CHAR, hex, or none (false, NULL).
        let (typed, policies) = doc_examples::every_type(crate::config::Dialect::Redshift);
        let types = crate::apply::sql::canonical::declared(&typed);
        let plan = plan_with(&Redshift, &typed, &policies, "immuta", &types);
        let sql = crate::apply::sql::view::replacement(&Redshift, "immuta", None, "typed", &plan);
        all += &format!("-- Canonical text of every type\n{sql}\n");
        golden("redshift_views.sql", &all);
    }

    #[test]
    fn a_view_is_released_from_row_level_security_before_it_is_dropped() {
        let ddl = crate::apply::sql::view::drop_view(&Redshift, "immuta", "orders");
        assert_eq!(
            ddl,
            "CALL immuta_procedures.protect_view('immuta', 'orders', false);\nDROP VIEW IF EXISTS \"immuta\".\"orders\" CASCADE;\n"
        );
        let pg = crate::apply::sql::view::drop_view(
            &crate::apply::sql::dialect::postgres::Postgres,
            "immuta",
            "orders",
        );
        assert_eq!(pg, "DROP VIEW IF EXISTS \"immuta\".\"orders\" CASCADE;\n");
    }
}
