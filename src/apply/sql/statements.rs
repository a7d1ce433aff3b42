//! The statements every batch sends that are the same in both dialects, in one place so that the Redshift ones
//! are pinned by `tests/golden/redshift_statements.sql` and checked by
//! `tests/redshift_conformance.rs`. View DDL is pinned by `redshift_views.sql`, bootstrap
//! by `redshift_bootstrap.sql`.

//! Statements that differ by dialect are in `apply/sql/dialect`.

pub const LOAD_OFFSETS: &str =
    "SELECT topic, \"partition\", next_offset FROM immuta_system.offsets WHERE consumer_group = $1";

/// The topic ids stored with a group's offsets (`consume::identity`); the same SQL in
/// both dialects (Redshift enforces no key: the NOT EXISTS keeps one row per topic).
pub const LOAD_TOPIC_IDS: &str =
    "SELECT topic, topic_id FROM immuta_system.topic_ids WHERE consumer_group = $1";
pub const REMEMBER_TOPIC_ID: &str = "INSERT INTO immuta_system.topic_ids (consumer_group, topic, topic_id) \
     SELECT $1::varchar, $2::varchar, $3::varchar WHERE NOT EXISTS (SELECT 1 FROM immuta_system.topic_ids \
     WHERE consumer_group = $1::varchar AND topic = $2::varchar)";
pub const FORGET_TOPIC_ID: &str =
    "DELETE FROM immuta_system.topic_ids WHERE consumer_group = $1 AND topic = $2";

/// The operator's `offsets --accept`, from the offset it was shown (an instance that
/// committed since moved it on: nothing is moved).
pub const MOVE_OFFSET: &str = "UPDATE immuta_system.offsets SET next_offset = $4 \
     WHERE consumer_group = $1 AND topic = $2 AND \"partition\" = $3 AND next_offset = $5";

/// Partitions held by a finding (`consume::identity`), until the operator releases them.
pub const LOAD_HOLDS: &str =
    "SELECT topic, \"partition\", observed FROM immuta_system.partition_holds WHERE consumer_group = $1";
pub const HOLD: &str = "INSERT INTO immuta_system.partition_holds (consumer_group, topic, \"partition\", observed) \
     SELECT $1::varchar, $2::varchar, $3::integer, $4::varchar WHERE NOT EXISTS (SELECT 1 FROM immuta_system.partition_holds \
     WHERE consumer_group = $1::varchar AND topic = $2::varchar AND \"partition\" = $3::integer)";
pub const RELEASE_HOLD: &str = "DELETE FROM immuta_system.partition_holds \
     WHERE consumer_group = $1 AND topic = $2 AND \"partition\" = $3";

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

/// The stored version of an entity of `table` by its key column, deleted or not.
pub fn stored_version(table: &str, key: &str) -> String {
    format!("SELECT version FROM immuta_system.{table} WHERE {key} = $1")
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
        use crate::apply::sql::dialect::Sql;
        let d = crate::apply::sql::dialect::redshift::Redshift;
        let mut all = vec![
            d.batch_lock().unwrap_or_default().to_string(),
            LOAD_OFFSETS.to_string(),
            LOAD_TOPIC_IDS.to_string(),
            REMEMBER_TOPIC_ID.to_string(),
            FORGET_TOPIC_ID.to_string(),
            MOVE_OFFSET.to_string(),
            LOAD_HOLDS.to_string(),
            HOLD.to_string(),
            RELEASE_HOLD.to_string(),
            d.offsets_insert().to_string(),
            d.offsets_update().to_string(),
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
        all.push(stored_version("profile", "user_name"));
        all.push(stored_version("policy", "id"));
        all.extend(crate::apply::txn::rebuild::redshift_statements());
        all.extend(crate::apply::txn::policy_barrier::redshift_statements());
        all.extend(crate::apply::setup::startup::redshift_statements());
        all.extend(crate::apply::txn::blocked::redshift_statements());
        all.extend(crate::apply::txn::rebuild::withheld_statements());
        all.extend(crate::apply::enforced::redshift_statements());
        all.iter().map(|s| format!("{s};\n")).collect()
    }

    #[test]
    fn redshift_statements_are_pinned() {
        crate::apply::sql::golden("redshift_statements.sql", &redshift());
    }
}
