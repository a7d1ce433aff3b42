//! PostgreSQL: impersonation, split between the two roles of the reference setup.
//!
//! - The *setup user* (`setup_url`) creates the impersonator role and owns the only two
//!   procedures that change its membership, `grant_impersonation` and
//!   `revoke_impersonation` (SECURITY DEFINER, EXECUTE for the system role alone). It
//!   needs `CREATEROLE` (or to be a superuser) and the right to grant `CONNECT` and
//!   `TEMPORARY` on the database.
//! - The *system account* (`url`) owns everything else and is neither a superuser nor
//!   `CREATEROLE`: it reaches group membership only through those two procedures.
//!
//! A session's impersonation is bound to its backend pid and start time, which only the
//! session's own role may read in `pg_stat_activity`: `session_start` runs as the caller
//! and hands it to the SECURITY DEFINER functions, which cannot read it themselves unless
//! their owner is a superuser.

use crate::apply::sql::quote::{ident, literal};

/// What the setup user runs: the impersonator role, the membership procedures, the
/// database privileges PUBLIC gets, and `terminate_view_blockers`. `system_role` is the
/// system account.
pub fn setup_script(role: &str, system_role: &str, database: &str, view_schema: &str) -> String {
    membership_script(role, system_role, database)
        + &terminate_view_blockers(system_role, view_schema)
}

/// Ends the sessions that hold a lock on views of the view schema whose rebuild waits
/// (`apply::txn::blocked`), for the system account alone, which may not signal other sessions
/// itself. It runs as the setup user, who must be a member of `pg_signal_backend` and of
/// `pg_read_all_stats` (or a superuser), and ends only sessions of this database, of
/// roles that are neither superusers nor the system account, holding a lock on a view
/// (not any relation) of the view schema named in `p_views`, whose transaction has been
/// open at least `p_held_ms`: a reader whose query started a moment ago is spared, and
/// without `pg_read_all_stats` the start of another role's transaction cannot be read and
/// nobody is ended.
fn terminate_view_blockers(system_role: &str, view_schema: &str) -> String {
    let (system_lit, system) = (literal(system_role), ident(system_role));
    let schema = literal(view_schema);
    format!(
        r#"
CREATE OR REPLACE FUNCTION immuta_procedures.terminate_view_blockers(p_views text[], p_held_ms bigint)
RETURNS TABLE (pid integer, role_name text, view_name text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $p$
BEGIN
  FOR pid, role_name, view_name IN
    SELECT DISTINCT l.pid, r.rolname::text, c.relname::text
    FROM pg_catalog.pg_locks l
    JOIN pg_catalog.pg_class c ON c.oid = l.relation AND c.relkind = 'v'
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
    JOIN pg_catalog.pg_roles r ON r.oid = a.usesysid
    WHERE l.granted AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())
      AND n.nspname = {schema} AND c.relname::text = ANY (p_views)
      AND a.xact_start <= pg_catalog.now() - pg_catalog.make_interval(secs => p_held_ms / 1000.0)
      AND l.pid <> pg_catalog.pg_backend_pid() AND NOT r.rolsuper AND r.rolname <> {system_lit}
  LOOP
    IF pg_catalog.pg_terminate_backend(pid) THEN
      RETURN NEXT;
    END IF;
  END LOOP;
END $p$;
REVOKE ALL ON FUNCTION immuta_procedures.terminate_view_blockers(text[], bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION immuta_procedures.terminate_view_blockers(text[], bigint) TO {system};
"#
    )
}

/// The impersonator role, the procedures that change its membership, and what PUBLIC may
/// do in the database.
fn membership_script(role: &str, system_role: &str, database: &str) -> String {
    let (role_lit, role_ident, system) = (literal(role), ident(role), ident(system_role));
    let db = ident(database);
    format!(
        r#"
DO $r$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {role_lit}) THEN CREATE ROLE {role_ident} NOLOGIN; END IF; END $r$;

-- The impersonator role is cluster-wide, so integrations of other databases grant and
-- revoke it too. A GRANT that races another's insert of the same membership fails on
-- pg_auth_members' unique index, and one that races an update of it with "tuple
-- concurrently updated": both are concurrency, not the record, so they are raised as a
-- serialization failure and the batch is retried.
CREATE OR REPLACE PROCEDURE immuta_procedures.grant_impersonation(p_user text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $p$
BEGIN
  EXECUTE format('GRANT %I TO %I', {role_lit}, lower(p_user));
EXCEPTION WHEN unique_violation OR internal_error THEN
  RAISE EXCEPTION 'concurrent change of the membership of % in %: %', lower(p_user), {role_lit}, SQLERRM
    USING ERRCODE = 'serialization_failure';
END $p$;

CREATE OR REPLACE PROCEDURE immuta_procedures.revoke_impersonation(p_user text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $p$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = lower(p_user)) THEN
    EXECUTE format('REVOKE %I FROM %I', {role_lit}, lower(p_user));
  END IF;
EXCEPTION WHEN internal_error THEN
  RAISE EXCEPTION 'concurrent change of the membership of % in %: %', lower(p_user), {role_lit}, SQLERRM
    USING ERRCODE = 'serialization_failure';
END $p$;

REVOKE ALL ON PROCEDURE immuta_procedures.grant_impersonation(text), immuta_procedures.revoke_impersonation(text) FROM PUBLIC;
GRANT EXECUTE ON PROCEDURE immuta_procedures.grant_impersonation(text), immuta_procedures.revoke_impersonation(text) TO {system};
GRANT CONNECT, TEMPORARY ON DATABASE {db} TO PUBLIC;
"#
    )
}

/// What the system account runs before the setup user: it lets the setup user create its
/// procedures in `immuta_procedures`, and drops membership procedures that an earlier
/// single-role bootstrap made it own, so that the setup user can create its own.
pub fn hand_over(setup_role: &str) -> String {
    format!(
        r#"
GRANT USAGE, CREATE ON SCHEMA immuta_procedures TO {setup};
DO $h$ BEGIN
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = 'immuta_procedures' AND p.proname IN ('grant_impersonation', 'revoke_impersonation')
               AND p.proowner = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)) THEN
    DROP PROCEDURE IF EXISTS immuta_procedures.grant_impersonation(text);
    DROP PROCEDURE IF EXISTS immuta_procedures.revoke_impersonation(text);
  END IF;
END $h$;
"#,
        setup = ident(setup_role)
    )
}

/// The system account's impersonation objects: the state procedures and the functions
/// the views and analysts call.
pub fn system_objects(role: &str) -> String {
    let role_lit = literal(role);
    let stale = super::postgres::stale_tombstone("impersonation", "user_name = p_user");
    format!(
        r#"
CREATE OR REPLACE PROCEDURE immuta_procedures.upsert_impersonation(p_user text, p_version bigint, p_allowed boolean,
  p_partition integer, p_offset bigint)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $p$
DECLARE n bigint;
BEGIN
  INSERT INTO immuta_system.impersonation AS i (user_name, version, deleted, allowed, updated_at, source_partition,
    source_offset)
  VALUES (p_user, p_version, false, p_allowed, now(), p_partition, p_offset)
  ON CONFLICT (user_name) DO UPDATE SET version = EXCLUDED.version, deleted = false, allowed = EXCLUDED.allowed,
    updated_at = now(), source_partition = EXCLUDED.source_partition, source_offset = EXCLUDED.source_offset
  WHERE i.version < EXCLUDED.version;
  GET DIAGNOSTICS n = ROW_COUNT;
  IF n > 0 THEN
    IF p_allowed THEN CALL immuta_procedures.grant_impersonation(p_user);
    ELSE
      CALL immuta_procedures.revoke_impersonation(p_user);
      DELETE FROM immuta_system.impersonation_session WHERE login = lower(p_user);
    END IF;
  END IF;
END $p$;

CREATE OR REPLACE PROCEDURE immuta_procedures.delete_impersonation(p_user text, p_floor bigint, p_partition integer,
  p_offset bigint)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $p$
BEGIN
  IF {stale} THEN RETURN; END IF;
  INSERT INTO immuta_system.impersonation AS i (user_name, version, deleted, allowed, source_partition, source_offset)
  VALUES (p_user, COALESCE(p_floor, -9223372036854775808), true, false, p_partition, p_offset)
  ON CONFLICT (user_name) DO UPDATE SET deleted = true, allowed = false,
    version = GREATEST(i.version, EXCLUDED.version), updated_at = now(),
    source_partition = EXCLUDED.source_partition, source_offset = EXCLUDED.source_offset;
  CALL immuta_procedures.revoke_impersonation(p_user);
  DELETE FROM immuta_system.impersonation_session WHERE login = lower(p_user);
END $p$;

-- The start time of the caller's own session: every role may read its own sessions in
-- pg_stat_activity, which the SECURITY DEFINER objects below may not (their owner is
-- not a superuser), so it runs as the caller.
CREATE OR REPLACE FUNCTION immuta_functions.session_start() RETURNS timestamptz
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $f$
  SELECT backend_start FROM pg_catalog.pg_stat_activity WHERE pid = pg_catalog.pg_backend_pid()
$f$;

-- The user the views enforce policies for: the caller, or whom the caller's session is
-- impersonating. The session row is bound to this backend's pid and start time, so a
-- later session reusing the pid does not inherit it, and it stops counting the moment
-- the login loses the impersonator group.
CREATE OR REPLACE FUNCTION immuta_functions.effective_user(p_caller text, p_session_start timestamptz) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
  SELECT COALESCE(
    (SELECT s.target FROM immuta_system.impersonation_session s
      WHERE s.pid = pg_catalog.pg_backend_pid() AND s.backend_start = p_session_start
        AND s.login = session_user::text AND pg_catalog.pg_has_role(session_user, {role_lit}, 'MEMBER')),
    p_caller)
$f$;

CREATE OR REPLACE PROCEDURE immuta_procedures.start_impersonation(p_target text, p_session_start timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $p$
BEGIN
  IF p_target IS NULL THEN
    DELETE FROM immuta_system.impersonation_session WHERE pid = pg_backend_pid();
    RETURN;
  END IF;
  IF NOT pg_has_role(session_user, {role_lit}, 'MEMBER') THEN
    RAISE EXCEPTION 'permission denied: % may not impersonate (not a member of %)', session_user, {role_lit}
      USING ERRCODE = '42501';
  END IF;
  IF p_session_start IS NULL THEN
    RAISE EXCEPTION 'permission denied: the start of this session cannot be read (SET ROLE?)' USING ERRCODE = '42501';
  END IF;
  INSERT INTO immuta_system.impersonation_session (pid, backend_start, login, target)
  VALUES (pg_backend_pid(), p_session_start, session_user::text, lower(p_target))
  ON CONFLICT (pid) DO UPDATE SET backend_start = EXCLUDED.backend_start, login = EXCLUDED.login,
    target = EXCLUDED.target;
END $p$;

CREATE OR REPLACE PROCEDURE immuta_procedures.impersonate_user(p_target text)
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $p$
BEGIN
  CALL immuta_procedures.start_impersonation(p_target, immuta_functions.session_start());
END $p$;
"#
    )
}

/// The profile view analysts read, and the grants of the impersonation objects. The view
/// moves to the two-argument `effective_user` before the old one is dropped.
pub fn user_profile_view() -> &'static str {
    r#"
CREATE OR REPLACE VIEW immuta_system.user_profile WITH (security_barrier = true) AS
SELECT user_name, version, groups, attributes, project_id, project_purposes, acknowledged_purposes, data_sources
FROM immuta_system.profile
WHERE NOT deleted
  AND user_name = immuta_functions.effective_user(current_user::text, immuta_functions.session_start());
DROP FUNCTION IF EXISTS immuta_functions.effective_user(text);
"#
}

/// What PUBLIC may execute (after everything else is revoked from it).
pub const PUBLIC_EXECUTE: &str = "
GRANT EXECUTE ON PROCEDURE immuta_procedures.impersonate_user(text),
  immuta_procedures.start_impersonation(text, timestamptz) TO PUBLIC;
GRANT EXECUTE ON FUNCTION immuta_functions.effective_user(text, timestamptz), immuta_functions.session_start(),
  immuta_functions.canonical_float4(real), immuta_functions.canonical_float8(double precision),
  immuta_functions.canonical_interval(interval), immuta_functions.canonical_money(money),
  immuta_functions.canonical_text(anyelement) TO PUBLIC;
";
