//! PostgreSQL's side of the dialect seam.

use super::Sql;
use crate::apply::sql::canonical::{self, TextForm};
use crate::apply::sql::quote;
use crate::apply::sql::view::ViewDialect;

/// PostgreSQL: the profile's sets are arrays and `attributes` is jsonb.
pub struct Postgres;

fn text_array(values: &[String]) -> String {
    let items: Vec<_> = values.iter().map(|v| quote::literal(v)).collect();
    format!("ARRAY[{}]::pg_catalog.text[]", items.join(", "))
}

/// An operator of `pg_catalog`, whatever else an analyst created with its name: an
/// exact match of theirs (`public.&&(text[], text[])`) would beat the polymorphic
/// built-in when a view is created, and the view would keep it.
fn op(name: &str) -> String {
    format!("OPERATOR(pg_catalog.{name})")
}

/// `to_char` fragments of a `timestamp` expression that no setting changes: the date
/// and time, the fraction of a second without its trailing zeros (none when whole), and
/// ` BC` before the common era, as PostgreSQL prints them with `DateStyle = ISO`.
fn iso_timestamp(ts: &str, zone: &str) -> String {
    let concat = op("||");
    let zone = match zone {
        "" => String::new(),
        z => format!("'{z}' {concat} "),
    };
    format!(
        "(pg_catalog.to_char({ts}, 'YYYY-MM-DD HH24:MI:SS') {concat} \
         pg_catalog.rtrim(pg_catalog.rtrim(pg_catalog.to_char({ts}, '.US'), '0'), '.') {concat} \
         {zone}pg_catalog.replace(pg_catalog.to_char({ts}, ' BC'), ' AD', ''))"
    )
}

/// `infinity` and `-infinity` print the same under every setting.
fn finite_or_text(expr: &str, finite: String) -> String {
    format!("CASE WHEN pg_catalog.isfinite({expr}) THEN {finite} ELSE {expr}::pg_catalog.text END")
}

impl ViewDialect for Postgres {
    fn subscribed(&self, id: &str) -> String {
        format!("{id} {} ANY (up.data_sources)", op("="))
    }
    fn in_group(&self, group: &str) -> String {
        format!("{group} {} ANY (up.groups)", op("="))
    }
    fn in_any_group(&self, groups: &[String]) -> String {
        format!("up.groups {} {}", op("&&"), text_array(groups))
    }
    fn acknowledged_purpose(&self, purposes: &[String]) -> String {
        let eq = op("=");
        format!(
            "EXISTS (SELECT 1 FROM pg_catalog.unnest(up.project_purposes) AS pp(purpose) \
             WHERE pp.purpose {eq} ANY ({}) AND pp.purpose {eq} ANY (up.acknowledged_purposes))",
            text_array(purposes)
        )
    }
    fn attribute_matches(&self, text: &str, attribute: &str) -> String {
        format!(
            "{text} {} ANY (SELECT pg_catalog.jsonb_array_elements_text(up.attributes {} {attribute}))",
            op("="),
            op("->")
        )
    }
    fn text_form(&self, catalog_type: Option<&str>) -> TextForm {
        canonical::postgres_form(catalog_type)
    }
    /// Plain casts and `to_char` where they are exact (cheap); elsewhere a function of
    /// `immuta_functions` whose `SET` clauses pin the settings (`setup::postgres::CANONICAL_FUNCTIONS`),
    /// which costs a few microseconds a row.
    fn canonical(&self, e: &str, form: TextForm) -> Option<String> {
        Some(match form {
            TextForm::Plain => format!("{e}::pg_catalog.text"),
            TextForm::Bytes => format!(
                "({} {} pg_catalog.encode({e}, 'hex'))",
                quote::literal("\\x"),
                op("||")
            ),
            TextForm::Date => finite_or_text(
                e,
                format!(
                    "pg_catalog.replace(pg_catalog.to_char({e}::pg_catalog.timestamp, 'YYYY-MM-DD BC'), ' AD', '')"
                ),
            ),
            TextForm::Timestamp => finite_or_text(e, iso_timestamp(e, "")),
            TextForm::TimestampTz => {
                finite_or_text(e, iso_timestamp(&format!("pg_catalog.timezone('UTC', {e})"), "+00"))
            }
            TextForm::Float4 => format!("immuta_functions.canonical_float4({e})"),
            TextForm::Float8 => format!("immuta_functions.canonical_float8({e})"),
            TextForm::Interval => format!("immuta_functions.canonical_interval({e})"),
            TextForm::Money => format!("immuta_functions.canonical_money({e})"),
            TextForm::Other => format!("immuta_functions.canonical_text({e})"),
        })
    }
    fn text(&self, expr: &str) -> String {
        format!("{expr}::pg_catalog.text")
    }
    fn sha256_hex(&self, text: &str) -> String {
        format!(
            "pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(hs.salt {} {text}, 'UTF8')), 'hex')",
            op("||")
        )
    }
    fn literal(&self, value: &str) -> String {
        quote::literal(value)
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
         WHERE consumer_group = $1 AND topic = $2 AND \"partition\" = $3 AND next_offset = $5 \
         AND NOT EXISTS (SELECT 1 FROM immuta_system.partition_holds h \
         WHERE h.consumer_group = $1 AND h.topic = $2 AND h.\"partition\" = $3)"
    }
    fn remember_pending(&self) -> &'static str {
        "INSERT INTO immuta_system.view_pending (data_source_id) VALUES ($1) ON CONFLICT DO NOTHING"
    }
    fn remember_stale(&self) -> &'static str {
        "INSERT INTO immuta_system.view_stale (data_source_id) VALUES ($1) ON CONFLICT DO NOTHING"
    }
    /// A batch, the barrier's pending views and the held-up views are built in separate
    /// transactions that may overlap; EXCLUSIVE still lets everyone read `view_state`.
    fn lock_views(&self) -> Option<&'static str> {
        Some("LOCK TABLE immuta_system.view_state IN EXCLUSIVE MODE")
    }
    /// `lock_timeout`: a DDL statement waiting for an analyst's lock also makes every
    /// later reader of that view queue behind it, for as long as it waits.
    fn bound_lock_waits(&self, limit: std::time::Duration) -> String {
        format!("SET LOCAL lock_timeout = '{}ms'", limit.as_millis().max(1))
    }
    fn unbound_lock_waits(&self) -> &'static str {
        "SET LOCAL lock_timeout TO DEFAULT"
    }
    /// `lock_timeout` bounds only lock waits, and what else a rebuild reads takes no
    /// lock an analyst holds.
    fn bounds_each_ddl(&self) -> bool {
        false
    }
    /// lock_not_available.
    fn lock_wait_ended(&self) -> &'static [&'static str] {
        &["55P03"]
    }
    /// Everyone may read `pg_locks`, and the role of every session in
    /// `pg_stat_activity` (what else a session does only its role may see). A prepared
    /// transaction holds its locks without a session: its owner and name are given.
    fn view_blockers(&self) -> Option<&'static str> {
        Some(
            "SELECT DISTINCT l.pid, COALESCE(a.usename::text, \
               p.owner::text || ' (prepared transaction ' || p.gid || ')'), c.relname::text \
             FROM pg_catalog.pg_locks l \
             JOIN pg_catalog.pg_class c ON c.oid = l.relation \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid \
             LEFT JOIN pg_catalog.pg_prepared_xacts p \
               ON l.pid IS NULL AND l.virtualtransaction = '-1/' || p.transaction::text \
             WHERE l.granted AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d \
               WHERE d.datname = pg_catalog.current_database()) \
             AND n.nspname = $1 AND c.relname::text = ANY ($2::text[]) \
             AND l.pid IS DISTINCT FROM pg_catalog.pg_backend_pid() ORDER BY 1, 3",
        )
    }
    /// A role sees its own sessions whole, and every session's role.
    fn lock_waits(&self) -> Option<&'static str> {
        Some(
            "SELECT a.pid, COALESCE(n.nspname || '.' || c.relname, l.locktype), \
               bp.pid, COALESCE(b.usename::text, '?') \
             FROM pg_catalog.pg_stat_activity a \
             JOIN pg_catalog.pg_locks l ON l.pid = a.pid AND NOT l.granted \
             LEFT JOIN pg_catalog.pg_class c ON c.oid = l.relation \
             LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             CROSS JOIN LATERAL pg_catalog.unnest(pg_catalog.pg_blocking_pids(a.pid)) AS bp(pid) \
             LEFT JOIN pg_catalog.pg_stat_activity b ON b.pid = bp.pid \
             WHERE a.usename = current_user AND a.datname = pg_catalog.current_database() \
             ORDER BY 1, 3",
        )
    }
    fn terminate_view_blockers(&self) -> Option<&'static str> {
        Some("SELECT pid, role_name, view_name FROM immuta_procedures.terminate_view_blockers($1::text[], $2)")
    }
    /// `information_schema.columns` takes tens of milliseconds per call once a database
    /// has thousands of tables (it is a view over every column), which dominated replays;
    /// the catalog query is an index lookup with the same answer.
    fn columns_query(&self) -> &'static str {
        "SELECT a.attname::text, CASE WHEN tn.nspname = 'pg_catalog' THEN ty.typname::text END \
         FROM pg_catalog.pg_attribute a \
         JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_catalog.pg_type ty ON ty.oid = a.atttypid \
         JOIN pg_catalog.pg_namespace tn ON tn.oid = ty.typnamespace \
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
            "view_stale",
            "view_withheld",
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
        Some(crate::apply::setup::postgres::VIEW_BUILDS)
    }
    fn columns_of_tables(&self) -> Option<&'static str> {
        Some(
            "SELECT n.nspname::text, c.relname::text, a.attname::text, \
             CASE WHEN tn.nspname = 'pg_catalog' THEN ty.typname::text END \
             FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_catalog.pg_type ty ON ty.oid = a.atttypid \
             JOIN pg_catalog.pg_namespace tn ON tn.oid = ty.typnamespace \
             JOIN unnest($1::text[], $2::text[]) AS w(schema_name, table_name) \
               ON n.nspname = w.schema_name AND c.relname = w.table_name \
             WHERE a.attnum > 0 AND NOT a.attisdropped \
             AND pg_catalog.has_column_privilege(c.oid, a.attnum, 'SELECT')",
        )
    }
    fn session(&self, commit: crate::config::SynchronousCommit) -> Option<String> {
        Some(crate::apply::setup::postgres::session(commit))
    }
    fn reserved_column(&self) -> Option<&'static str> {
        None
    }
    /// A view is protected when it is a security barrier (`create_view`).
    fn views_query(&self) -> &'static str {
        "SELECT n.nspname::text, c.relname::text, \
         coalesce(c.reloptions @> ARRAY['security_barrier=true'], false) \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'v' AND n.nspname IN ('immuta_system', $1)"
    }
    fn protected_views_query(&self) -> Option<&'static str> {
        None
    }
}
