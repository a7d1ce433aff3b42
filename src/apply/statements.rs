//! The statements every batch sends, by dialect, in one place so that the Redshift ones
//! are pinned by `tests/golden/redshift_statements.sql` and checked by
//! `tests/redshift_conformance.rs`. View DDL is pinned by `redshift_views.sql`, bootstrap
//! by `redshift_bootstrap.sql`.

use crate::config::Dialect;

/// The first row of a partition's offsets, unless another instance wrote it first.
pub fn offsets_insert(d: Dialect) -> &'static str {
    match d {
        Dialect::Postgres => {
            "INSERT INTO immuta_system.offsets (consumer_group, topic, \"partition\", next_offset) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING"
        }
        // Redshift does not enforce the primary key: the table lock (`LOCK_OFFSETS`) makes
        // the existence check and the insert atomic.
        Dialect::Redshift => {
            "INSERT INTO immuta_system.offsets (consumer_group, topic, \"partition\", next_offset) \
             SELECT $1::varchar, $2::varchar, $3::integer, $4::bigint WHERE NOT EXISTS (SELECT 1 FROM immuta_system.offsets \
             WHERE consumer_group = $1::varchar AND topic = $2::varchar AND \"partition\" = $3::integer)"
        }
    }
}

/// The fence: the stored offset moves only from the value this instance last saw.
pub fn offsets_update(d: Dialect) -> &'static str {
    match d {
        Dialect::Postgres => {
            "UPDATE immuta_system.offsets SET next_offset = $4, updated_at = now() \
             WHERE consumer_group = $1 AND topic = $2 AND \"partition\" = $3 AND next_offset = $5"
        }
        // NOW() is a leader-node-only function on Redshift and fails on user tables
        // (Database Developer Guide, c_SQL_functions_leader_node_only); GETDATE() runs on
        // the compute nodes.
        Dialect::Redshift => {
            "UPDATE immuta_system.offsets SET next_offset = $4, updated_at = GETDATE() \
             WHERE consumer_group = $1 AND topic = $2 AND \"partition\" = $3 AND next_offset = $5"
        }
    }
}

/// Redshift's batches take this first (LOCK has one mode there).
pub const LOCK_OFFSETS: &str = "LOCK immuta_system.offsets";

pub const LOAD_OFFSETS: &str =
    "SELECT topic, \"partition\", next_offset FROM immuta_system.offsets WHERE consumer_group = $1";

pub const DELETE_PROFILE: &str = "CALL immuta_procedures.delete_profile($1, $2, $3, $4)";
/// PostgreSQL only: a chunk of profiles as one array parameter.
pub const UPSERT_PROFILES: &str = "CALL immuta_procedures.upsert_profiles($1, $2, $3)";
/// Redshift: one profile per call.
pub const UPSERT_PROFILE: &str = "CALL immuta_procedures.upsert_profile($1, $2, $3, $4, $5, $6)";
pub const DELETE_IMPERSONATION: &str =
    "CALL immuta_procedures.delete_impersonation($1, $2, $3, $4)";
pub const UPSERT_IMPERSONATION: &str =
    "CALL immuta_procedures.upsert_impersonation($1, $2, $3, $4, $5)";
pub const USER_EXISTS: &str = "SELECT 1 FROM pg_catalog.pg_user WHERE usename = $1";

/// The tombstone call of a definitions table (`data_source` or `policy`).
pub fn delete_definition(entity: &str) -> String {
    format!("CALL immuta_procedures.delete_{entity}($1, $2, $3, $4, NULL)")
}

/// The upsert call of a definitions table (`data_source` or `policy`).
pub fn upsert_definition(entity: &str) -> String {
    format!("CALL immuta_procedures.upsert_{entity}($1, $2, $3, $4, $5, NULL)")
}

/// The audit log's multi-row insert for `rows` rows of eight parameters.
pub fn audit_insert(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO immuta_system.apply_log (consumer_group, topic, \"partition\", \"offset\", kind, entity_id, version, op) VALUES ",
    );
    for i in 0..rows {
        let b = i * 8;
        let sep = if i == 0 { "" } else { ", " };
        sql += &format!(
            "{sep}(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
            b + 1,
            b + 2,
            b + 3,
            b + 4,
            b + 5,
            b + 6,
            b + 7,
            b + 8
        );
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every statement a Redshift batch sends, barrier and view-state statements included.
    fn redshift() -> String {
        let d = Dialect::Redshift;
        let mut all = vec![
            LOCK_OFFSETS.to_string(),
            LOAD_OFFSETS.to_string(),
            offsets_insert(d).to_string(),
            offsets_update(d).to_string(),
            DELETE_PROFILE.to_string(),
            UPSERT_PROFILE.to_string(),
            USER_EXISTS.to_string(),
            DELETE_IMPERSONATION.to_string(),
            UPSERT_IMPERSONATION.to_string(),
        ];
        for entity in ["data_source", "policy"] {
            all.push(delete_definition(entity));
            all.push(upsert_definition(entity));
        }
        all.push(audit_insert(2));
        all.extend(super::super::rebuild::redshift_statements());
        all.extend(super::super::barrier::redshift_statements());
        all.iter().map(|s| format!("{s};\n")).collect()
    }

    #[test]
    fn redshift_statements_are_pinned() {
        super::super::redshift::golden("redshift_statements.sql", &redshift());
    }
}
