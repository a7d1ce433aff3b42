//! The warehouse objects of SPEC §3 in PostgreSQL's dialect.
//!
//! The integration's *system role* is the role in the integration URL: it owns every
//! object created here, so only it (and superusers) can read or write the tables. The
//! apply procedures run as their caller (SECURITY INVOKER) and EXECUTE on them is revoked
//! from PUBLIC, so an analyst can neither call them nor reach the tables through them.
//! Only `impersonate_user` and `effective_user` are SECURITY DEFINER, both with a fixed
//! `search_path`, and both check the caller themselves.

use super::roles;
use crate::apply::sql::quote::ident;

pub struct Names<'a> {
    pub database: &'a str,
    pub view_schema: &'a str,
    pub impersonator_role: &'a str,
    /// The role `bootstrap` runs the system part as (the integration URL's).
    pub system_role: &'a str,
}

/// Version-guarded upsert and tombstone procedures for a definitions table.
/// `applied` tells the caller whether the stored state changed, which decides what views
/// to rebuild.
fn definition_procedures(entity: &str) -> String {
    format!(
        r#"
CREATE OR REPLACE PROCEDURE immuta_procedures.upsert_{entity}(p_id text, p_version bigint, p_definition text,
  p_partition integer, p_offset bigint, INOUT applied boolean DEFAULT NULL)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $p$
DECLARE n bigint;
BEGIN
  INSERT INTO immuta_system.{entity} AS d (id, version, deleted, definition, updated_at, source_partition, source_offset)
  VALUES (p_id, p_version, false, p_definition::jsonb, now(), p_partition, p_offset)
  ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, deleted = false,
    definition = EXCLUDED.definition, updated_at = now(), source_partition = EXCLUDED.source_partition,
    source_offset = EXCLUDED.source_offset
  WHERE d.version < EXCLUDED.version;
  GET DIAGNOSTICS n = ROW_COUNT;
  applied := n > 0;
END $p$;

CREATE OR REPLACE PROCEDURE immuta_procedures.delete_{entity}(p_id text, p_floor bigint,
  p_partition integer, p_offset bigint, INOUT applied boolean DEFAULT NULL)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $p$
DECLARE was_live boolean;
BEGIN
  applied := false;
  IF {stale} THEN RETURN; END IF;
  SELECT NOT deleted INTO was_live FROM immuta_system.{entity} WHERE id = p_id FOR UPDATE;
  INSERT INTO immuta_system.{entity} AS d (id, version, deleted, definition, updated_at, source_partition, source_offset)
  VALUES (p_id, COALESCE(p_floor, -9223372036854775808), true, NULL, now(), p_partition, p_offset)
  ON CONFLICT (id) DO UPDATE SET deleted = true, definition = NULL,
    version = GREATEST(d.version, EXCLUDED.version), updated_at = now(),
    source_partition = EXCLUDED.source_partition, source_offset = EXCLUDED.source_offset;
  applied := COALESCE(was_live, false);
END $p$;
"#,
        stale = stale_tombstone(entity, "id = p_id")
    )
}

/// True inside a delete procedure when the tombstone is older than the record that wrote
/// the stored state. Records of one key share a partition, so their offsets order them:
/// a tombstone read again (a replay from a timestamp, a lost offsets row, a renamed
/// consumer group) after its entity was re-created must not delete the newer state. A
/// state written on another partition (the topic was repartitioned) or before positions
/// were stored does not block the tombstone.
pub(crate) fn stale_tombstone(table: &str, key: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM immuta_system.{table} WHERE {key} \
         AND source_partition = p_partition AND source_offset >= p_offset)"
    )
}

/// The position of the record that wrote each stored state (see `stale_tombstone`).
/// Hosts bootstrapped before positions were stored get the columns here.
fn position_columns() -> &'static str {
    r#"
ALTER TABLE immuta_system.profile ADD COLUMN IF NOT EXISTS source_partition integer,
  ADD COLUMN IF NOT EXISTS source_offset bigint;
ALTER TABLE immuta_system.data_source ADD COLUMN IF NOT EXISTS source_partition integer,
  ADD COLUMN IF NOT EXISTS source_offset bigint;
ALTER TABLE immuta_system.policy ADD COLUMN IF NOT EXISTS source_partition integer,
  ADD COLUMN IF NOT EXISTS source_offset bigint;
ALTER TABLE immuta_system.impersonation ADD COLUMN IF NOT EXISTS source_partition integer,
  ADD COLUMN IF NOT EXISTS source_offset bigint;
"#
}

fn tables() -> &'static str {
    r#"
CREATE TABLE IF NOT EXISTS immuta_system.profile (
  user_name text PRIMARY KEY,
  version bigint NOT NULL,
  deleted boolean NOT NULL DEFAULT false,
  groups text[] NOT NULL DEFAULT '{}',
  attributes jsonb NOT NULL DEFAULT '{}',
  project_id text,
  project_purposes text[] NOT NULL DEFAULT '{}',
  acknowledged_purposes text[] NOT NULL DEFAULT '{}',
  data_sources text[] NOT NULL DEFAULT '{}',
  updated_at timestamptz NOT NULL DEFAULT now()
);
-- Every profile change updates a row. Half of each page is kept free so that the new
-- version fits on the old one's page: the update is then HOT (no new index entry), and
-- the page's dead versions are pruned in place. 900,000 updates of 100,000 rows in
-- 5,000-row transactions took 10 s at the default (100; 1 % HOT, 214 MB afterwards),
-- 5.7 s at 70 and 5.1 s at 50 (100 % HOT, 46 MB). Applies to pages written from now on.
ALTER TABLE immuta_system.profile SET (fillfactor = 50);
CREATE TABLE IF NOT EXISTS immuta_system.data_source (
  id text PRIMARY KEY, version bigint NOT NULL, deleted boolean NOT NULL DEFAULT false,
  definition jsonb, updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS immuta_system.policy (
  id text PRIMARY KEY, version bigint NOT NULL, deleted boolean NOT NULL DEFAULT false,
  definition jsonb, updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS immuta_system.impersonation (
  user_name text PRIMARY KEY, version bigint NOT NULL, deleted boolean NOT NULL DEFAULT false,
  allowed boolean NOT NULL DEFAULT false, updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS immuta_system.view_state (
  data_source_id text PRIMARY KEY, view_name text NOT NULL,
  policy_ids text NOT NULL DEFAULT '[]', built_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS immuta_system.view_pending (data_source_id text PRIMARY KEY);
-- Views whose DDL an analyst's open transaction held up: rebuilt when it lets go.
CREATE TABLE IF NOT EXISTS immuta_system.view_stale (data_source_id text PRIMARY KEY);
-- The targets of policies too large to store, whose views stay dropped (rebuild::withheld).
CREATE TABLE IF NOT EXISTS immuta_system.view_withheld (policy_id text NOT NULL, kind text NOT NULL, value text NOT NULL);
CREATE TABLE IF NOT EXISTS immuta_system.offsets (
  consumer_group text NOT NULL, topic text NOT NULL, partition integer NOT NULL,
  next_offset bigint NOT NULL, updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (consumer_group, topic, partition)
);
-- The id of each topic whose offsets are stored, where the broker has topic ids
-- (consume::identity): a recreated topic has another.
CREATE TABLE IF NOT EXISTS immuta_system.topic_ids (
  consumer_group text NOT NULL, topic text NOT NULL, topic_id text NOT NULL,
  PRIMARY KEY (consumer_group, topic)
);
-- Partitions stopped by a finding (consume::identity) until the operator releases them
-- (`offsets --accept`, `replay`): neither a restart nor a rebalance lifts a hold.
CREATE TABLE IF NOT EXISTS immuta_system.partition_holds (
  consumer_group text NOT NULL, topic text NOT NULL, partition integer NOT NULL,
  observed text NOT NULL, held_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (consumer_group, topic, partition)
);
CREATE TABLE IF NOT EXISTS immuta_system.impersonation_session (
  pid integer PRIMARY KEY, backend_start timestamptz NOT NULL, login text NOT NULL, target text NOT NULL
);
-- The integration's HASH salt, one row ('' without one): views with a HASH mask join it
-- and read it as their owner, and only the system account may read it (view::SALT_JOIN).
CREATE TABLE IF NOT EXISTS immuta_system.hash_salt (
  id boolean PRIMARY KEY DEFAULT true CHECK (id), salt text NOT NULL DEFAULT ''
);
INSERT INTO immuta_system.hash_salt (id, salt) VALUES (true, '') ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS immuta_system.apply_log (
  id bigserial PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now(),
  consumer_group text NOT NULL, topic text NOT NULL, partition integer NOT NULL, "offset" bigint NOT NULL,
  kind text NOT NULL, entity_id text NOT NULL, version bigint, op text NOT NULL
);
"#
}

/// Settings of every pooled session. Notices are dropped unread, so they are not sent:
/// without this, each `DROP VIEW IF EXISTS` of a new view sent one.
/// `synchronous_commit` is the integration's (the README says why `off` is the default).
pub fn session(commit: crate::config::SynchronousCommit) -> String {
    format!(
        "SET client_min_messages = warning; SET synchronous_commit = {}",
        commit.as_sql()
    )
}

/// Settings for the rest of a transaction that rebuilds views. A view's rewrite rule is
/// stored compressed in the catalog; with lz4, where the server has it, instead of pglz,
/// which took an eighth of PostgreSQL's time in a replay.
pub const VIEW_BUILDS: &str =
    "SELECT pg_catalog.set_config('default_toast_compression', 'lz4', true)
  FROM pg_catalog.pg_settings WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)";

/// The canonical text of the types whose text a session setting changes and that no
/// fixed-format function prints exactly (`canonical`): each function's `SET` clauses
/// pin the setting for the duration of the call, whatever the querying session has set,
/// and its body names the type it casts to with its schema, since it is compiled under
/// the caller's search_path. The one for any other type pins the search path too: the
/// text of a `regclass` or `regtype` follows it. Everyone may call them; they only cast
/// their argument.
pub const CANONICAL_FUNCTIONS: &str = r#"
CREATE OR REPLACE FUNCTION immuta_functions.canonical_float4(p real) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET extra_float_digits = 1 AS $f$
BEGIN RETURN p::pg_catalog.text; END $f$;
CREATE OR REPLACE FUNCTION immuta_functions.canonical_float8(p double precision) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET extra_float_digits = 1 AS $f$
BEGIN RETURN p::pg_catalog.text; END $f$;
CREATE OR REPLACE FUNCTION immuta_functions.canonical_interval(p interval) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET IntervalStyle = 'postgres' AS $f$
BEGIN RETURN p::pg_catalog.text; END $f$;
CREATE OR REPLACE FUNCTION immuta_functions.canonical_money(p money) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET lc_monetary = 'C' AS $f$
BEGIN RETURN p::pg_catalog.text; END $f$;
CREATE OR REPLACE FUNCTION immuta_functions.canonical_text(p anyelement) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET extra_float_digits = 1 SET DateStyle = 'ISO, MDY'
  SET IntervalStyle = 'postgres' SET TimeZone = 'UTC' SET bytea_output = 'hex' SET lc_monetary = 'C'
  SET search_path = pg_catalog AS $f$
BEGIN RETURN p::pg_catalog.text; END $f$;
"#;

/// One profile as `upsert_profiles` takes it: the columns of `immuta_system.profile` that
/// an event sets. CREATE TYPE has no IF NOT EXISTS; a changed definition would need a
/// migration (none yet).
const PROFILE_ROW: &str = r#"
DO $t$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
                 WHERE n.nspname = 'immuta_procedures' AND t.typname = 'profile_row') THEN
    CREATE TYPE immuta_procedures.profile_row AS (user_name text, version bigint, groups text[],
      attributes jsonb, project_id text, project_purposes text[], acknowledged_purposes text[],
      data_sources text[]);
  END IF;
END $t$;
"#;

fn profile_procedures() -> String {
    r#"
CREATE OR REPLACE PROCEDURE immuta_procedures.upsert_profile(p_user text, p_version bigint, p_groups text[],
  p_attributes jsonb, p_project_id text, p_project_purposes text[], p_acknowledged text[], p_data_sources text[])
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $p$
BEGIN
  INSERT INTO immuta_system.profile AS p (user_name, version, deleted, groups, attributes, project_id,
    project_purposes, acknowledged_purposes, data_sources, updated_at)
  VALUES (p_user, p_version, false, p_groups, p_attributes, p_project_id, p_project_purposes, p_acknowledged,
    p_data_sources, now())
  ON CONFLICT (user_name) DO UPDATE SET version = EXCLUDED.version, deleted = false, groups = EXCLUDED.groups,
    attributes = EXCLUDED.attributes, project_id = EXCLUDED.project_id, project_purposes = EXCLUDED.project_purposes,
    acknowledged_purposes = EXCLUDED.acknowledged_purposes, data_sources = EXCLUDED.data_sources, updated_at = now()
  WHERE p.version < EXCLUDED.version;
END $p$;

-- The batch form of upsert_profile: a batch's newest profiles (one per user) in one array
-- parameter. It replaced a COPY into a temporary table emptied ON COMMIT DELETE ROWS,
-- whose truncation at every commit freed file blocks inside the commit (docs/performance.md).
CREATE OR REPLACE PROCEDURE immuta_procedures.upsert_profiles(p_rows immuta_procedures.profile_row[],
  p_partitions integer[], p_offsets bigint[])
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $p$
BEGIN
  INSERT INTO immuta_system.profile AS p (user_name, version, deleted, groups, attributes, project_id,
    project_purposes, acknowledged_purposes, data_sources, updated_at, source_partition, source_offset)
  SELECT s.user_name, s.version, false, s.groups, s.attributes, s.project_id, s.project_purposes,
    s.acknowledged_purposes, s.data_sources, now(), p_partitions[s.i], p_offsets[s.i]
  FROM unnest(p_rows) WITH ORDINALITY AS s(user_name, version, groups, attributes, project_id, project_purposes,
    acknowledged_purposes, data_sources, i)
  ON CONFLICT (user_name) DO UPDATE SET version = EXCLUDED.version, deleted = false, groups = EXCLUDED.groups,
    attributes = EXCLUDED.attributes, project_id = EXCLUDED.project_id, project_purposes = EXCLUDED.project_purposes,
    acknowledged_purposes = EXCLUDED.acknowledged_purposes, data_sources = EXCLUDED.data_sources, updated_at = now(),
    source_partition = EXCLUDED.source_partition, source_offset = EXCLUDED.source_offset
  WHERE p.version < EXCLUDED.version;
END $p$;

CREATE OR REPLACE PROCEDURE immuta_procedures.delete_profile(p_user text, p_floor bigint, p_partition integer,
  p_offset bigint)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $p$
BEGIN
  IF STALE_PROFILE_TOMBSTONE THEN RETURN; END IF;
  INSERT INTO immuta_system.profile AS p (user_name, version, deleted, source_partition, source_offset)
  VALUES (p_user, COALESCE(p_floor, -9223372036854775808), true, p_partition, p_offset)
  ON CONFLICT (user_name) DO UPDATE SET deleted = true, version = GREATEST(p.version, EXCLUDED.version),
    groups = '{}', attributes = '{}', project_id = NULL, project_purposes = '{}', acknowledged_purposes = '{}',
    data_sources = '{}', updated_at = now(), source_partition = EXCLUDED.source_partition,
    source_offset = EXCLUDED.source_offset;
END $p$;
"#
    .replace(
        "STALE_PROFILE_TOMBSTONE",
        &stale_tombstone("profile", "user_name = p_user"),
    )
}

/// Builds many views in one call (`apply::txn::rebuild`). Each view's statements run in their
/// own subtransaction, so a view the server refuses is rolled back alone and reported
/// (item, SQLSTATE, message) while the rest go on; `view_state` records each view that was
/// built. Only errors that blame the definition are caught; any other (running out of
/// locks, a deadlock, a lock timeout) is not the view's fault: it aborts the call, and
/// the batch is retried.
fn view_builder() -> &'static str {
    r#"
CREATE OR REPLACE FUNCTION immuta_procedures.build_views(p_data_sources text[], p_views text[],
  p_policy_ids text[], p_ddl text[]) RETURNS TABLE (item integer, error_code text, error_message text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $p$
BEGIN
  FOR i IN 1 .. coalesce(array_length(p_ddl, 1), 0) LOOP
    BEGIN
      EXECUTE p_ddl[i];
    EXCEPTION
      -- Only errors that blame the view's definition are caught (apply::record_sqlstate);
      -- anything else (deadlock, lock timeout, lost resources, a missing privilege) fails
      -- the batch, which is retried, instead of dropping the view and blaming its records.
      WHEN insufficient_privilege OR undefined_function OR undefined_table THEN RAISE;
      WHEN feature_not_supported OR cardinality_violation OR data_exception OR integrity_constraint_violation
        OR sql_routine_exception OR syntax_error_or_access_rule_violation OR with_check_option_violation
        OR plpgsql_error THEN
        item := i; error_code := SQLSTATE; error_message := SQLERRM;
        RETURN NEXT;
        CONTINUE;
    END;
    INSERT INTO immuta_system.view_state AS v (data_source_id, view_name, policy_ids)
    VALUES (p_data_sources[i], p_views[i], p_policy_ids[i])
    ON CONFLICT (data_source_id) DO UPDATE SET view_name = EXCLUDED.view_name,
      policy_ids = EXCLUDED.policy_ids, built_at = now();
  END LOOP;
END $p$;
"#
}

fn grants(n: &Names<'_>) -> String {
    let vs = ident(n.view_schema);
    format!(
        r#"
REVOKE ALL ON SCHEMA immuta_system, immuta_functions, immuta_procedures, {vs} FROM PUBLIC;
GRANT USAGE ON SCHEMA immuta_system, immuta_functions, immuta_procedures, {vs} TO PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA immuta_system FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA immuta_system FROM PUBLIC;
GRANT SELECT ON immuta_system.user_profile TO PUBLIC;
REVOKE ALL ON ALL PROCEDURES IN SCHEMA immuta_procedures FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA immuta_procedures FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA immuta_functions FROM PUBLIC;
{public}"#,
        public = roles::PUBLIC_EXECUTE
    )
}

/// What the system account runs in `bootstrap`, in order. All are idempotent; the caller
/// runs them in one transaction under an advisory lock, before the setup user's part
/// (`roles::setup_script`). `setup_role` is the setup user (the system account itself
/// when no `setup_url` is configured).
pub fn bootstrap_script(n: &Names<'_>, setup_role: &str) -> String {
    let mut s = String::from(
        "CREATE SCHEMA IF NOT EXISTS immuta_system;\n\
         CREATE SCHEMA IF NOT EXISTS immuta_functions;\n\
         CREATE SCHEMA IF NOT EXISTS immuta_procedures;\n",
    );
    s += &format!("CREATE SCHEMA IF NOT EXISTS {};\n", ident(n.view_schema));
    s += tables();
    s += position_columns();
    s += PROFILE_ROW;
    s += &profile_procedures();
    s += &definition_procedures("data_source");
    s += &definition_procedures("policy");
    s += &roles::system_objects(n.impersonator_role);
    s += CANONICAL_FUNCTIONS;
    s += view_builder();
    s += roles::user_profile_view();
    s += &grants(n);
    if setup_role != n.system_role {
        s += &roles::hand_over(setup_role);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_quotes_configured_names() {
        let s = bootstrap_script(
            &Names {
                database: "db",
                view_schema: "immuta",
                impersonator_role: "imp_x",
                system_role: "sys",
            },
            "setup",
        );
        assert!(s.contains("upsert_data_source") && s.contains("delete_policy"));
        assert!(s.contains("GRANT USAGE, CREATE ON SCHEMA immuta_procedures TO \"setup\""));
        assert!(!s.contains("CREATE ROLE"), "roles are the setup user's");
        let setup = super::roles::setup_script("imp_x", "sys", "db", "immuta");
        assert!(setup.contains("CREATE ROLE \"imp_x\" NOLOGIN"));
        assert!(setup.contains("GRANT CONNECT, TEMPORARY ON DATABASE \"db\" TO PUBLIC"));
        assert!(setup.contains("TO \"sys\""));
    }
}
