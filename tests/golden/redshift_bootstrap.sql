CREATE SCHEMA IF NOT EXISTS immuta_system;
CREATE SCHEMA IF NOT EXISTS immuta_functions;
CREATE SCHEMA IF NOT EXISTS immuta_procedures;
CREATE SCHEMA IF NOT EXISTS "immuta";

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
  SELECT INTO newer pg_catalog.COUNT(*) FROM immuta_system.profile WHERE user_name = p_user AND source_partition = p_partition AND source_offset >= p_offset;
  IF newer > 0 THEN RETURN; END IF;
  SELECT INTO stored version FROM immuta_system.profile WHERE user_name = p_user;
  DELETE FROM immuta_system.profile WHERE user_name = p_user;
  INSERT INTO immuta_system.profile (user_name, version, deleted, project_id, updated_at, source_partition, source_offset)
  VALUES (p_user, GREATEST(COALESCE(stored, -9223372036854775808), COALESCE(p_floor, -9223372036854775808)), true, NULL, pg_catalog.GETDATE(), p_partition, p_offset);
  DELETE FROM immuta_system.profile_value WHERE user_name = p_user;
END;
$$ LANGUAGE plpgsql;

CREATE OR REPLACE PROCEDURE immuta_procedures.upsert_data_source(p_id varchar(1024), p_version bigint, p_definition varchar(65535),
  p_partition integer, p_offset bigint, INOUT applied boolean)
AS $$
DECLARE newer integer;
BEGIN
  SELECT INTO newer pg_catalog.COUNT(*) FROM immuta_system.data_source WHERE id = p_id AND version >= p_version;
  IF newer > 0 THEN applied := false; RETURN; END IF;
  DELETE FROM immuta_system.data_source WHERE id = p_id;
  INSERT INTO immuta_system.data_source (id, version, deleted, definition, updated_at, source_partition, source_offset)
  VALUES (p_id, p_version, false, p_definition, pg_catalog.GETDATE(), p_partition, p_offset);
  applied := true;
END;
$$ LANGUAGE plpgsql;

CREATE OR REPLACE PROCEDURE immuta_procedures.delete_data_source(p_id varchar(1024), p_floor bigint, p_partition integer,
  p_offset bigint, INOUT applied boolean)
AS $$
DECLARE stored bigint; live integer; newer integer;
BEGIN
  SELECT INTO newer pg_catalog.COUNT(*) FROM immuta_system.data_source WHERE id = p_id AND source_partition = p_partition AND source_offset >= p_offset;
  IF newer > 0 THEN applied := false; RETURN; END IF;
  SELECT INTO live pg_catalog.COUNT(*) FROM immuta_system.data_source WHERE id = p_id AND NOT deleted;
  SELECT INTO stored version FROM immuta_system.data_source WHERE id = p_id;
  DELETE FROM immuta_system.data_source WHERE id = p_id;
  INSERT INTO immuta_system.data_source (id, version, deleted, definition, updated_at, source_partition, source_offset)
  VALUES (p_id, GREATEST(COALESCE(stored, -9223372036854775808), COALESCE(p_floor, -9223372036854775808)), true, NULL, pg_catalog.GETDATE(), p_partition, p_offset);
  applied := live > 0;
END;
$$ LANGUAGE plpgsql;

CREATE OR REPLACE PROCEDURE immuta_procedures.upsert_policy(p_id varchar(1024), p_version bigint, p_definition varchar(65535),
  p_partition integer, p_offset bigint, INOUT applied boolean)
AS $$
DECLARE newer integer;
BEGIN
  SELECT INTO newer pg_catalog.COUNT(*) FROM immuta_system.policy WHERE id = p_id AND version >= p_version;
  IF newer > 0 THEN applied := false; RETURN; END IF;
  DELETE FROM immuta_system.policy WHERE id = p_id;
  INSERT INTO immuta_system.policy (id, version, deleted, definition, updated_at, source_partition, source_offset)
  VALUES (p_id, p_version, false, p_definition, pg_catalog.GETDATE(), p_partition, p_offset);
  applied := true;
END;
$$ LANGUAGE plpgsql;

CREATE OR REPLACE PROCEDURE immuta_procedures.delete_policy(p_id varchar(1024), p_floor bigint, p_partition integer,
  p_offset bigint, INOUT applied boolean)
AS $$
DECLARE stored bigint; live integer; newer integer;
BEGIN
  SELECT INTO newer pg_catalog.COUNT(*) FROM immuta_system.policy WHERE id = p_id AND source_partition = p_partition AND source_offset >= p_offset;
  IF newer > 0 THEN applied := false; RETURN; END IF;
  SELECT INTO live pg_catalog.COUNT(*) FROM immuta_system.policy WHERE id = p_id AND NOT deleted;
  SELECT INTO stored version FROM immuta_system.policy WHERE id = p_id;
  DELETE FROM immuta_system.policy WHERE id = p_id;
  INSERT INTO immuta_system.policy (id, version, deleted, definition, updated_at, source_partition, source_offset)
  VALUES (p_id, GREATEST(COALESCE(stored, -9223372036854775808), COALESCE(p_floor, -9223372036854775808)), true, NULL, pg_catalog.GETDATE(), p_partition, p_offset);
  applied := live > 0;
END;
$$ LANGUAGE plpgsql;

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
  SELECT INTO newer pg_catalog.COUNT(*) FROM immuta_system.impersonation WHERE user_name = p_user AND source_partition = p_partition AND source_offset >= p_offset;
  IF newer > 0 THEN RETURN; END IF;
  SELECT INTO stored version FROM immuta_system.impersonation WHERE user_name = p_user;
  DELETE FROM immuta_system.impersonation WHERE user_name = p_user;
  INSERT INTO immuta_system.impersonation (user_name, version, deleted, allowed, updated_at, source_partition, source_offset)
  VALUES (p_user, GREATEST(COALESCE(stored, -9223372036854775808), COALESCE(p_floor, -9223372036854775808)), true, false, pg_catalog.GETDATE(), p_partition, p_offset);
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
  v_group := 'immuta_impersonator';
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

CREATE OR REPLACE VIEW immuta_system.user_profile AS
SELECT p.user_name, p.version, p.project_id, (NOT p.deleted AND p.user_name = COALESCE(
  (SELECT s.target FROM immuta_system.impersonation_session s
   JOIN immuta_system.impersonation i ON i.user_name = s.login AND i.allowed AND NOT i.deleted
   WHERE s.pid = pg_catalog.pg_backend_pid() AND s.login = session_user),
  current_user)) AS immuta_row_visible
FROM immuta_system.profile p
WHERE NOT p.deleted AND p.user_name = COALESCE(
  (SELECT s.target FROM immuta_system.impersonation_session s
   JOIN immuta_system.impersonation i ON i.user_name = s.login AND i.allowed AND NOT i.deleted
   WHERE s.pid = pg_catalog.pg_backend_pid() AND s.login = session_user),
  current_user);

CREATE OR REPLACE VIEW immuta_system.user_profile_value AS
SELECT v.kind, v.name, v.value, (v.user_name = up.user_name) AS immuta_row_visible
FROM immuta_system.profile_value v
CROSS JOIN immuta_system.user_profile up
WHERE v.user_name = up.user_name;

REVOKE ALL ON SCHEMA immuta_system, immuta_functions, immuta_procedures, "immuta" FROM PUBLIC;
GRANT USAGE ON SCHEMA immuta_system, immuta_functions, immuta_procedures, "immuta" TO PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA immuta_system FROM PUBLIC;
REVOKE ALL ON ALL PROCEDURES IN SCHEMA immuta_procedures FROM PUBLIC;

-- As the setup user:
CREATE RLS POLICY immuta_row_visible WITH (immuta_row_visible boolean) USING (immuta_row_visible AND current_user IS NOT NULL);
ALTER RLS POLICY immuta_row_visible USING (immuta_row_visible AND current_user IS NOT NULL);

CREATE OR REPLACE PROCEDURE immuta_procedures.grant_impersonation(p_user varchar(128))
AS $$
BEGIN
  EXECUTE 'ALTER GROUP ' || pg_catalog.quote_ident('immuta_impersonator') || ' ADD USER ' || pg_catalog.quote_ident(pg_catalog.lower(p_user));
END;
$$ LANGUAGE plpgsql SECURITY DEFINER SET search_path TO immuta_system;

CREATE OR REPLACE PROCEDURE immuta_procedures.revoke_impersonation(p_user varchar(128))
AS $$
DECLARE n integer;
BEGIN
  SELECT INTO n pg_catalog.COUNT(*) FROM pg_catalog.pg_user WHERE usename = pg_catalog.lower(p_user);
  IF n > 0 THEN
    EXECUTE 'ALTER GROUP ' || pg_catalog.quote_ident('immuta_impersonator') || ' DROP USER ' || pg_catalog.quote_ident(pg_catalog.lower(p_user));
  END IF;
END;
$$ LANGUAGE plpgsql SECURITY DEFINER SET search_path TO immuta_system;

REVOKE ALL ON PROCEDURE immuta_procedures.grant_impersonation(varchar), immuta_procedures.revoke_impersonation(varchar) FROM PUBLIC;
GRANT EXECUTE ON PROCEDURE immuta_procedures.grant_impersonation(varchar), immuta_procedures.revoke_impersonation(varchar) TO "policy_push_system";
-- A Spectrum query needs TEMP on the database (c-spectrum-external-tables).
GRANT TEMP ON DATABASE "analytics" TO PUBLIC;

CREATE OR REPLACE PROCEDURE immuta_procedures.protect_view(p_schema varchar(128), p_view varchar(128), p_attach boolean)
AS $$
DECLARE n_attached integer; v_relation varchar(300);
BEGIN
  IF p_schema NOT IN ('immuta', 'immuta_system') THEN
    RAISE EXCEPTION 'protect_view: % is not a policy-push schema', p_schema;
  END IF;
  v_relation := pg_catalog.quote_ident(p_schema) || '.' || pg_catalog.quote_ident(p_view);
  SELECT INTO n_attached pg_catalog.COUNT(*) FROM pg_catalog.svv_rls_attached_policy
  WHERE relschema = p_schema AND relname = p_view AND polname = 'immuta_row_visible';
  IF p_attach THEN
    EXECUTE 'ALTER TABLE ' || v_relation || ' ROW LEVEL SECURITY ON';
    IF n_attached = 0 THEN
      EXECUTE 'ATTACH RLS POLICY ' || pg_catalog.quote_ident('immuta_row_visible') || ' ON ' || v_relation || ' TO PUBLIC';
    END IF;
  ELSIF n_attached > 0 THEN
    EXECUTE 'DETACH RLS POLICY ' || pg_catalog.quote_ident('immuta_row_visible') || ' ON ' || v_relation || ' FROM PUBLIC';
  END IF;
END;
$$ LANGUAGE plpgsql SECURITY DEFINER SET search_path TO immuta_system;

REVOKE ALL ON PROCEDURE immuta_procedures.protect_view(varchar, varchar, boolean) FROM PUBLIC;
GRANT EXECUTE ON PROCEDURE immuta_procedures.protect_view(varchar, varchar, boolean) TO "policy_push_system";

-- As the system account again:
GRANT EXECUTE ON PROCEDURE immuta_procedures.impersonate_user(varchar) TO GROUP "immuta_impersonator";
CALL immuta_procedures.protect_view('immuta_system', 'user_profile', true);
CALL immuta_procedures.protect_view('immuta_system', 'user_profile_value', true);
GRANT SELECT ON immuta_system.user_profile, immuta_system.user_profile_value TO PUBLIC;
