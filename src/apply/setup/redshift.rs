//! The warehouse objects of SPEC §3 and the view fragments of §4 in Amazon Redshift's
//! dialect. Redshift has no arrays, jsonb, `ON CONFLICT`, savepoints or `DO` blocks, and
//! does not enforce primary keys, so:
//!
//! - a profile's sets (groups, attributes, purposes, data sources) live in the
//!   normalized table `immuta_system.profile_value (user_name, kind, name, value)`, and
//!   views test membership with uncorrelated `EXISTS` / `IN` subqueries over
//!   `immuta_system.user_profile_value` (the current user's values only);
//! - procedures are version-guarded delete-then-insert;
//! - the apply transaction takes `LOCK immuta_system.offsets` before fencing, since the
//!   primary key there is not enforced;
//! - refusals are prevented by checks before the statements, not caught in savepoints;
//! - the impersonator group is created from Rust after a catalog check.
//!
//! Identifiers are case-insensitive only while `enable_case_sensitive_identifier` is off;
//! bootstrap refuses a cluster where it is on.
//!
//! Known limitation: an impersonation is bound to the backend pid and login; Redshift
//! offers no portable session start time to bind it to, so a later session of the same
//! login that gets the same pid would inherit it until `impersonate_user(NULL)`.

use super::row_security;
use crate::apply::sql::quote::{ident, redshift_literal as literal};

pub struct Names<'a> {
    pub view_schema: &'a str,
    pub impersonator_role: &'a str,
}

const MIN_VERSION: &str = "-9223372036854775808";

fn tables() -> &'static str {
    r#"
CREATE TABLE IF NOT EXISTS immuta_system.profile (
  user_name varchar(128) NOT NULL, version bigint NOT NULL, deleted boolean NOT NULL DEFAULT false,
  project_id varchar(1024), updated_at timestamp DEFAULT pg_catalog.GETDATE(), source_partition integer, source_offset bigint,
  PRIMARY KEY (user_name)
);
CREATE TABLE IF NOT EXISTS immuta_system.profile_value (
  user_name varchar(128) NOT NULL, kind varchar(32) NOT NULL, name varchar(1024) NOT NULL, value varchar(1024) NOT NULL
);
CREATE TABLE IF NOT EXISTS immuta_system.data_source (
  id varchar(1024) NOT NULL, version bigint NOT NULL, deleted boolean NOT NULL DEFAULT false,
  definition varchar(65535), updated_at timestamp DEFAULT pg_catalog.GETDATE(), source_partition integer, source_offset bigint,
  PRIMARY KEY (id)
);
CREATE TABLE IF NOT EXISTS immuta_system.policy (
  id varchar(1024) NOT NULL, version bigint NOT NULL, deleted boolean NOT NULL DEFAULT false,
  definition varchar(65535), updated_at timestamp DEFAULT pg_catalog.GETDATE(), source_partition integer, source_offset bigint,
  PRIMARY KEY (id)
);
CREATE TABLE IF NOT EXISTS immuta_system.impersonation (
  user_name varchar(128) NOT NULL, version bigint NOT NULL, deleted boolean NOT NULL DEFAULT false,
  allowed boolean NOT NULL DEFAULT false, updated_at timestamp DEFAULT pg_catalog.GETDATE(), source_partition integer,
  source_offset bigint, PRIMARY KEY (user_name)
);
CREATE TABLE IF NOT EXISTS immuta_system.view_state (
  data_source_id varchar(1024) NOT NULL, view_name varchar(128) NOT NULL, policy_ids varchar(65535) NOT NULL DEFAULT '[]',
  built_at timestamp DEFAULT pg_catalog.GETDATE(), PRIMARY KEY (data_source_id)
);
CREATE TABLE IF NOT EXISTS immuta_system.view_pending (
  data_source_id varchar(1024) NOT NULL, PRIMARY KEY (data_source_id)
);
CREATE TABLE IF NOT EXISTS immuta_system.view_stale (
  data_source_id varchar(1024) NOT NULL, PRIMARY KEY (data_source_id)
);
CREATE TABLE IF NOT EXISTS immuta_system.view_withheld (
  policy_id varchar(1024) NOT NULL, kind varchar(32) NOT NULL, value varchar(1024) NOT NULL
);
CREATE TABLE IF NOT EXISTS immuta_system.offsets (
  consumer_group varchar(256) NOT NULL, topic varchar(256) NOT NULL, "partition" integer NOT NULL,
  next_offset bigint NOT NULL, updated_at timestamp DEFAULT pg_catalog.GETDATE(), PRIMARY KEY (consumer_group, topic, "partition")
);
CREATE TABLE IF NOT EXISTS immuta_system.topic_ids (
  consumer_group varchar(256) NOT NULL, topic varchar(256) NOT NULL, topic_id varchar(64) NOT NULL,
  PRIMARY KEY (consumer_group, topic)
);
CREATE TABLE IF NOT EXISTS immuta_system.partition_holds (
  consumer_group varchar(256) NOT NULL, topic varchar(256) NOT NULL, "partition" integer NOT NULL,
  observed varchar(4096) NOT NULL, held_at timestamp DEFAULT pg_catalog.GETDATE(),
  PRIMARY KEY (consumer_group, topic, "partition")
);
CREATE TABLE IF NOT EXISTS immuta_system.impersonation_session (
  pid integer NOT NULL, login varchar(128) NOT NULL, target varchar(128) NOT NULL, started timestamp DEFAULT pg_catalog.GETDATE()
);
CREATE TABLE IF NOT EXISTS immuta_system.hash_salt (salt varchar(1024) NOT NULL);
INSERT INTO immuta_system.hash_salt (salt) SELECT '' WHERE NOT EXISTS (SELECT 1 FROM immuta_system.hash_salt);
CREATE TABLE IF NOT EXISTS immuta_system.apply_log (
  applied_at timestamp DEFAULT pg_catalog.GETDATE(), consumer_group varchar(256) NOT NULL, topic varchar(256) NOT NULL,
  "partition" integer NOT NULL, "offset" bigint NOT NULL, kind varchar(32) NOT NULL, entity_id varchar(1024) NOT NULL,
  version bigint, op varchar(16) NOT NULL
);
"#
}

/// The condition, after a key match, that the stored state was written by a record
/// after the tombstone on the same partition (see `postgres::stale_tombstone`).
const STALE: &str = "AND source_partition = p_partition AND source_offset >= p_offset";

fn profile_procedures() -> String {
    let stale = STALE;
    format!(
        r#"
CREATE OR REPLACE PROCEDURE immuta_procedures.upsert_profile(p_user varchar(128), p_version bigint, p_project_id varchar(1024), p_values varchar(65535),
  p_partition integer, p_offset bigint)
AS $$
DECLARE newer integer;
BEGIN
  SELECT INTO newer pg_catalog.COUNT(*) FROM immuta_system.profile WHERE user_name = p_user AND version >= p_version;
  IF newer > 0 THEN RETURN; END IF;
  DELETE FROM immuta_system.profile WHERE user_name = p_user;
  INSERT INTO immuta_system.profile (user_name, version, deleted, project_id, updated_at, source_partition, source_offset)
  VALUES (p_user, p_version, false, p_project_id, pg_catalog.GETDATE(), p_partition, p_offset);
  DELETE FROM immuta_system.profile_value WHERE user_name = p_user;
  INSERT INTO immuta_system.profile_value (user_name, kind, name, value)
  SELECT p_user, v[0]::varchar(32), v[1]::varchar(1024), v[2]::varchar(1024)
  FROM (SELECT pg_catalog.JSON_PARSE(p_values) AS a) AS j, j.a AS v;
END;
$$ LANGUAGE plpgsql;

CREATE OR REPLACE PROCEDURE immuta_procedures.delete_profile(p_user varchar(128), p_floor bigint, p_partition integer, p_offset bigint)
AS $$
DECLARE stored bigint; newer integer;
BEGIN
  SELECT INTO newer pg_catalog.COUNT(*) FROM immuta_system.profile WHERE user_name = p_user {stale};
  IF newer > 0 THEN RETURN; END IF;
  SELECT INTO stored version FROM immuta_system.profile WHERE user_name = p_user;
  DELETE FROM immuta_system.profile WHERE user_name = p_user;
  INSERT INTO immuta_system.profile (user_name, version, deleted, project_id, updated_at, source_partition, source_offset)
  VALUES (p_user, GREATEST(COALESCE(stored, {MIN_VERSION}), COALESCE(p_floor, {MIN_VERSION})), true, NULL, pg_catalog.GETDATE(), p_partition, p_offset);
  DELETE FROM immuta_system.profile_value WHERE user_name = p_user;
END;
$$ LANGUAGE plpgsql;
"#
    )
}

fn definition_procedures(entity: &str) -> String {
    let stale = STALE;
    format!(
        r#"
CREATE OR REPLACE PROCEDURE immuta_procedures.upsert_{entity}(p_id varchar(1024), p_version bigint, p_definition varchar(65535),
  p_partition integer, p_offset bigint, INOUT applied boolean)
AS $$
DECLARE newer integer;
BEGIN
  SELECT INTO newer pg_catalog.COUNT(*) FROM immuta_system.{entity} WHERE id = p_id AND version >= p_version;
  IF newer > 0 THEN applied := false; RETURN; END IF;
  DELETE FROM immuta_system.{entity} WHERE id = p_id;
  INSERT INTO immuta_system.{entity} (id, version, deleted, definition, updated_at, source_partition, source_offset)
  VALUES (p_id, p_version, false, p_definition, pg_catalog.GETDATE(), p_partition, p_offset);
  applied := true;
END;
$$ LANGUAGE plpgsql;

CREATE OR REPLACE PROCEDURE immuta_procedures.delete_{entity}(p_id varchar(1024), p_floor bigint, p_partition integer,
  p_offset bigint, INOUT applied boolean)
AS $$
DECLARE stored bigint; live integer; newer integer;
BEGIN
  SELECT INTO newer pg_catalog.COUNT(*) FROM immuta_system.{entity} WHERE id = p_id {stale};
  IF newer > 0 THEN applied := false; RETURN; END IF;
  SELECT INTO live pg_catalog.COUNT(*) FROM immuta_system.{entity} WHERE id = p_id AND NOT deleted;
  SELECT INTO stored version FROM immuta_system.{entity} WHERE id = p_id;
  DELETE FROM immuta_system.{entity} WHERE id = p_id;
  INSERT INTO immuta_system.{entity} (id, version, deleted, definition, updated_at, source_partition, source_offset)
  VALUES (p_id, GREATEST(COALESCE(stored, {MIN_VERSION}), COALESCE(p_floor, {MIN_VERSION})), true, NULL, pg_catalog.GETDATE(), p_partition, p_offset);
  applied := live > 0;
END;
$$ LANGUAGE plpgsql;
"#
    )
}

fn impersonation_objects(role: &str) -> String {
    let role_lit = literal(role);
    let stale = STALE;
    format!(
        r#"
CREATE OR REPLACE PROCEDURE immuta_procedures.upsert_impersonation(p_user varchar(128), p_version bigint, p_allowed boolean,
  p_partition integer, p_offset bigint)
AS $$
DECLARE newer integer;
BEGIN
  SELECT INTO newer pg_catalog.COUNT(*) FROM immuta_system.impersonation WHERE user_name = p_user AND version >= p_version;
  IF newer > 0 THEN RETURN; END IF;
  DELETE FROM immuta_system.impersonation WHERE user_name = p_user;
  INSERT INTO immuta_system.impersonation (user_name, version, deleted, allowed, updated_at, source_partition, source_offset)
  VALUES (p_user, p_version, false, p_allowed, pg_catalog.GETDATE(), p_partition, p_offset);
  IF p_allowed THEN CALL immuta_procedures.grant_impersonation(p_user);
  ELSE
    CALL immuta_procedures.revoke_impersonation(p_user);
    DELETE FROM immuta_system.impersonation_session WHERE login = pg_catalog.lower(p_user);
  END IF;
END;
$$ LANGUAGE plpgsql;

CREATE OR REPLACE PROCEDURE immuta_procedures.delete_impersonation(p_user varchar(128), p_floor bigint, p_partition integer,
  p_offset bigint)
AS $$
DECLARE stored bigint; newer integer;
BEGIN
  SELECT INTO newer pg_catalog.COUNT(*) FROM immuta_system.impersonation WHERE user_name = p_user {stale};
  IF newer > 0 THEN RETURN; END IF;
  SELECT INTO stored version FROM immuta_system.impersonation WHERE user_name = p_user;
  DELETE FROM immuta_system.impersonation WHERE user_name = p_user;
  INSERT INTO immuta_system.impersonation (user_name, version, deleted, allowed, updated_at, source_partition, source_offset)
  VALUES (p_user, GREATEST(COALESCE(stored, {MIN_VERSION}), COALESCE(p_floor, {MIN_VERSION})), true, false, pg_catalog.GETDATE(), p_partition, p_offset);
  CALL immuta_procedures.revoke_impersonation(p_user);
  DELETE FROM immuta_system.impersonation_session WHERE login = pg_catalog.lower(p_user);
END;
$$ LANGUAGE plpgsql;

-- Impersonators are checked against the integration's own grant table, which is
-- maintained together with the group membership, before anything is changed. A SECURITY
-- DEFINER procedure runs as its owner: its search_path is fixed to a schema only the
-- system account may write, and EXECUTE goes to the impersonator group, not to PUBLIC
-- (Database Developer Guide, stored-procedure-security-and-privileges). Optional RAISE
-- arguments must be simple variables (c_PLpgSQL-statements), and no variable may share
-- a name with a column of a query it is used beside.
CREATE OR REPLACE PROCEDURE immuta_procedures.impersonate_user(p_target varchar(128))
AS $$
DECLARE n_allowed integer; v_login varchar(128); v_group varchar(128);
BEGIN
  v_login := session_user;
  v_group := {role_lit};
  SELECT INTO n_allowed pg_catalog.COUNT(*) FROM immuta_system.impersonation i
  WHERE i.user_name = v_login AND i.allowed AND NOT i.deleted;
  IF n_allowed = 0 THEN
    RAISE EXCEPTION 'permission denied: % may not impersonate (not a member of %)', v_login, v_group;
  END IF;
  DELETE FROM immuta_system.impersonation_session WHERE pid = pg_catalog.pg_backend_pid();
  IF p_target IS NULL THEN RETURN; END IF;
  INSERT INTO immuta_system.impersonation_session (pid, login, target, started)
  VALUES (pg_catalog.pg_backend_pid(), v_login, pg_catalog.lower(p_target), pg_catalog.GETDATE());
END;
$$ LANGUAGE plpgsql SECURITY DEFINER SET search_path TO immuta_system;
"#
    )
}

/// The login the current session acts as: its impersonation target, when the login may
/// impersonate, or the login itself.
const EFFECTIVE_USER: &str = "COALESCE(
  (SELECT s.target FROM immuta_system.impersonation_session s
   JOIN immuta_system.impersonation i ON i.user_name = s.login AND i.allowed AND NOT i.deleted
   WHERE s.pid = pg_catalog.pg_backend_pid() AND s.login = session_user),
  current_user)";

/// The views every user reads their own profile through; each exposes its row condition
/// for row-level security (`row_security`), which `after_setup` attaches.
fn profile_views() -> String {
    let own = format!("NOT p.deleted AND p.user_name = {EFFECTIVE_USER}");
    let column = row_security::COLUMN;
    format!(
        r#"
CREATE OR REPLACE VIEW immuta_system.user_profile AS
SELECT p.user_name, p.version, p.project_id, ({own}) AS {column}
FROM immuta_system.profile p
WHERE {own};

CREATE OR REPLACE VIEW immuta_system.user_profile_value AS
SELECT v.kind, v.name, v.value, (v.user_name = up.user_name) AS {column}
FROM immuta_system.profile_value v
CROSS JOIN immuta_system.user_profile up
WHERE v.user_name = up.user_name;
"#
    )
}

fn grants(view_schema: &str) -> String {
    let vs = ident(view_schema);
    format!(
        r#"
REVOKE ALL ON SCHEMA immuta_system, immuta_functions, immuta_procedures, {vs} FROM PUBLIC;
GRANT USAGE ON SCHEMA immuta_system, immuta_functions, immuta_procedures, {vs} TO PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA immuta_system FROM PUBLIC;
REVOKE ALL ON ALL PROCEDURES IN SCHEMA immuta_procedures FROM PUBLIC;
"#
    )
}

/// What the system account runs after the setup user's part, once the impersonator group
/// and `protect_view` exist: only the group's members may call `impersonate_user`, and the
/// profile views are protected by row-level security and only then readable by everyone.
/// The system part revoked them (`grants`), so a setup part that fails leaves them
/// unreadable rather than unprotected.
pub fn after_setup(role: &str) -> String {
    format!(
        "GRANT EXECUTE ON PROCEDURE immuta_procedures.impersonate_user(varchar) TO GROUP {};\n{};\n{};\n\
         GRANT SELECT ON immuta_system.user_profile, immuta_system.user_profile_value TO PUBLIC;\n",
        ident(role),
        row_security::protect("immuta_system", "user_profile"),
        row_security::protect("immuta_system", "user_profile_value"),
    )
}

/// Every statement of `bootstrap` except the group creation (see the module docs).
pub fn bootstrap_script(n: &Names<'_>) -> String {
    let mut s = String::from(
        "CREATE SCHEMA IF NOT EXISTS immuta_system;\n\
         CREATE SCHEMA IF NOT EXISTS immuta_functions;\n\
         CREATE SCHEMA IF NOT EXISTS immuta_procedures;\n",
    );
    s += &format!("CREATE SCHEMA IF NOT EXISTS {};\n", ident(n.view_schema));
    s += tables();
    s += &profile_procedures();
    s += &definition_procedures("data_source");
    s += &definition_procedures("policy");
    s += &impersonation_objects(n.impersonator_role);
    s += &profile_views();
    s += &grants(n.view_schema);
    s
}

/// What the setup user runs after the system account's part (see `roles` for the
/// split): the only procedures that change the impersonator group's membership, owned by
/// the group's owner and executable by the system account alone, with a fixed search_path
/// and qualified built-ins (stored-procedure-security-and-privileges).
pub fn setup_script(role: &str, system_role: &str, database: &str, view_schema: &str) -> String {
    group_procedures(role, system_role, database)
        + &row_security::protect_procedure(view_schema, system_role)
}

fn group_procedures(role: &str, system_role: &str, database: &str) -> String {
    let role_lit = literal(role);
    let system = ident(system_role);
    let db = ident(database);
    format!(
        r#"
CREATE OR REPLACE PROCEDURE immuta_procedures.grant_impersonation(p_user varchar(128))
AS $$
BEGIN
  EXECUTE 'ALTER GROUP ' || pg_catalog.quote_ident({role_lit}) || ' ADD USER ' || pg_catalog.quote_ident(pg_catalog.lower(p_user));
END;
$$ LANGUAGE plpgsql SECURITY DEFINER SET search_path TO immuta_system;

CREATE OR REPLACE PROCEDURE immuta_procedures.revoke_impersonation(p_user varchar(128))
AS $$
DECLARE n integer;
BEGIN
  SELECT INTO n pg_catalog.COUNT(*) FROM pg_catalog.pg_user WHERE usename = pg_catalog.lower(p_user);
  IF n > 0 THEN
    EXECUTE 'ALTER GROUP ' || pg_catalog.quote_ident({role_lit}) || ' DROP USER ' || pg_catalog.quote_ident(pg_catalog.lower(p_user));
  END IF;
END;
$$ LANGUAGE plpgsql SECURITY DEFINER SET search_path TO immuta_system;

REVOKE ALL ON PROCEDURE immuta_procedures.grant_impersonation(varchar), immuta_procedures.revoke_impersonation(varchar) FROM PUBLIC;
GRANT EXECUTE ON PROCEDURE immuta_procedures.grant_impersonation(varchar), immuta_procedures.revoke_impersonation(varchar) TO {system};
-- A Spectrum query needs TEMP on the database (c-spectrum-external-tables).
GRANT TEMP ON DATABASE {db} TO PUBLIC;
"#
    )
}

/// The statement that creates the impersonator group (run when `pg_group` lacks it).
pub fn create_group(role: &str) -> String {
    format!("CREATE GROUP {}", ident(role))
}

#[cfg(test)]
mod golden_tests {
    use super::*;
    use crate::apply::sql::golden;

    #[test]
    fn bootstrap_script_is_pinned() {
        let script = bootstrap_script(&Names {
            view_schema: "immuta",
            impersonator_role: "immuta_impersonator",
        }) + "\n-- As the setup user:\n"
            + &row_security::create_policy()
            + ";\n"
            + &row_security::alter_policy()
            + ";\n"
            + &setup_script(
                "immuta_impersonator",
                "policy_push_system",
                "analytics",
                "immuta",
            )
            + "\n-- As the system account again:\n"
            + &after_setup("immuta_impersonator");
        for forbidden in [
            "ON CONFLICT",
            "jsonb",
            "text[]",
            "SAVEPOINT",
            "DO $",
            "ANY (",
        ] {
            assert!(
                !script.contains(forbidden),
                "Redshift does not accept {forbidden}"
            );
        }
        golden("redshift_bootstrap.sql", &script);
        assert_eq!(
            create_group("immuta_impersonator"),
            "CREATE GROUP \"immuta_impersonator\""
        );
    }
}
