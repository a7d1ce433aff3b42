//! PostgreSQL's side of the dialect seam.

use super::Sql;
use crate::apply::sql;
use crate::apply::view::ViewDialect;

/// PostgreSQL: the profile's sets are arrays and `attributes` is jsonb.
pub struct Postgres;

fn text_array(values: &[String]) -> String {
    let items: Vec<_> = values.iter().map(|v| sql::literal(v)).collect();
    format!("ARRAY[{}]::text[]", items.join(", "))
}

impl ViewDialect for Postgres {
    fn subscribed(&self, id: &str) -> String {
        format!("{id} = ANY (up.data_sources)")
    }
    fn in_group(&self, group: &str) -> String {
        format!("{group} = ANY (up.groups)")
    }
    fn in_any_group(&self, groups: &[String]) -> String {
        format!("up.groups && {}", text_array(groups))
    }
    fn acknowledged_purpose(&self, purposes: &[String]) -> String {
        format!(
            "EXISTS (SELECT 1 FROM unnest(up.project_purposes) AS pp(purpose) \
             WHERE pp.purpose = ANY ({}) AND pp.purpose = ANY (up.acknowledged_purposes))",
            text_array(purposes)
        )
    }
    fn attribute_matches(&self, column: &str, attribute: &str) -> String {
        format!(
            "{column}::text IN (SELECT jsonb_array_elements_text(up.attributes -> {attribute}))"
        )
    }
    fn text(&self, expr: &str) -> String {
        format!("{expr}::text")
    }
    fn sha256_hex(&self, text: &str) -> String {
        format!("encode(sha256(convert_to({text}, 'UTF8')), 'hex')")
    }
    fn literal(&self, value: &str) -> String {
        sql::literal(value)
    }
    /// A security barrier: the planner evaluates the view's own conditions (subscription,
    /// row filters) before any condition of the query over it that is not leakproof, so a
    /// user's function, a failing cast or a division by zero only ever sees the rows and
    /// the (masked) values the view shows. Only a superuser can mark a function
    /// leakproof. See docs/policies.md, "Why views cannot be probed".
    fn create_view(&self, qualified_name: &str) -> String {
        format!("CREATE VIEW {qualified_name} WITH (security_barrier) AS")
    }
}

impl Sql for Postgres {
    fn lock_offsets(&self) -> &'static str {
        "LOCK TABLE immuta_system.offsets IN ROW EXCLUSIVE MODE"
    }
    /// Row locks and `ON CONFLICT` serialize batches; nothing to take first.
    fn batch_lock(&self) -> Option<&'static str> {
        None
    }
    fn hold_off_batches(&self) -> &'static str {
        "LOCK TABLE immuta_system.offsets IN SHARE ROW EXCLUSIVE MODE"
    }
    fn lock_pending(&self) -> &'static str {
        "LOCK TABLE immuta_system.view_pending IN EXCLUSIVE MODE"
    }
    fn offsets_insert(&self) -> &'static str {
        "INSERT INTO immuta_system.offsets (consumer_group, topic, \"partition\", next_offset) VALUES ($1, $2, $3, $4) \
         ON CONFLICT DO NOTHING"
    }
    fn offsets_update(&self) -> &'static str {
        "UPDATE immuta_system.offsets SET next_offset = $4, updated_at = now() \
         WHERE consumer_group = $1 AND topic = $2 AND \"partition\" = $3 AND next_offset = $5"
    }
    fn remember_pending(&self) -> &'static str {
        "INSERT INTO immuta_system.view_pending (data_source_id) VALUES ($1) ON CONFLICT DO NOTHING"
    }
    /// `information_schema.columns` takes tens of milliseconds per call once a database
    /// has thousands of tables (it is a view over every column), which dominated replays;
    /// the catalog query is an index lookup with the same answer.
    fn columns_query(&self) -> &'static str {
        "SELECT a.attname::text FROM pg_catalog.pg_attribute a \
         JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped \
         AND pg_catalog.has_column_privilege(c.oid, a.attnum, 'SELECT')"
    }
    fn definition_text(&self) -> &'static str {
        "definition::text"
    }
    fn state_tables(&self) -> &'static [&'static str] {
        &[
            "view_state",
            "view_pending",
            "profile",
            "data_source",
            "policy",
            "impersonation",
            "impersonation_session",
        ]
    }
    fn stored_limit(&self) -> Option<usize> {
        None
    }
    fn savepoints(&self) -> bool {
        true
    }
    fn before_view_builds(&self) -> Option<&'static str> {
        Some(crate::apply::postgres::VIEW_BUILDS)
    }
    fn columns_of_tables(&self) -> Option<&'static str> {
        Some(
            "SELECT n.nspname::text, c.relname::text, a.attname::text \
             FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             JOIN unnest($1::text[], $2::text[]) AS w(schema_name, table_name) \
               ON n.nspname = w.schema_name AND c.relname = w.table_name \
             WHERE a.attnum > 0 AND NOT a.attisdropped \
             AND pg_catalog.has_column_privilege(c.oid, a.attnum, 'SELECT')",
        )
    }
    fn session(&self, commit: crate::config::SynchronousCommit) -> Option<String> {
        Some(crate::apply::postgres::session(commit))
    }
    fn reserved_column(&self) -> Option<&'static str> {
        None
    }
}
