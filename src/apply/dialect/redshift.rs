//! Amazon Redshift's side of the dialect seam; each rule is cited from the Database
//! Developer Guide (docs/redshift.md has the table).

use super::Sql;
use crate::apply::row_security;
use crate::apply::sql::redshift_literal as literal;
use crate::apply::view::ViewDialect;

/// The fragments of policy views over `immuta_system.user_profile_value`.
pub struct Redshift;

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
    fn attribute_matches(&self, column: &str, attribute: &str) -> String {
        format!(
            "{} IN (SELECT v.value FROM immuta_system.user_profile_value v WHERE v.kind = 'attribute' AND v.name = {attribute})",
            self.text(column)
        )
    }
    fn text(&self, expr: &str) -> String {
        // A bare VARCHAR cast means VARCHAR(256) on Redshift and would truncate.
        format!("{expr}::varchar(65535)")
    }
    fn sha256_hex(&self, text: &str) -> String {
        format!("SHA2({text}, 256)")
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
        "UPDATE immuta_system.offsets SET next_offset = $4, updated_at = GETDATE() \
         WHERE consumer_group = $1 AND topic = $2 AND \"partition\" = $3 AND next_offset = $5"
    }
    fn remember_pending(&self) -> &'static str {
        "INSERT INTO immuta_system.view_pending (data_source_id) SELECT $1::varchar \
         WHERE NOT EXISTS (SELECT 1 FROM immuta_system.view_pending WHERE data_source_id = $1::varchar)"
    }
    /// SVV_COLUMNS lists the columns of local and of Spectrum external tables;
    /// information_schema.columns has no external ones (r_SVV_COLUMNS).
    fn columns_query(&self) -> &'static str {
        "SELECT column_name::varchar FROM svv_columns \
         WHERE table_schema = $1 AND table_name = $2"
    }
    fn definition_text(&self) -> &'static str {
        "definition"
    }
    fn state_tables(&self) -> &'static [&'static str] {
        &[
            "view_state",
            "view_pending",
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
}
