-- Subscription only
CALL immuta_procedures.protect_view('immuta', 'old_orders', false);
DROP VIEW IF EXISTS "immuta"."old_orders" CASCADE;
CALL immuta_procedures.protect_view('immuta', 'orders', false);
DROP VIEW IF EXISTS "immuta"."orders" CASCADE;
CREATE VIEW "immuta"."orders" AS
SELECT t."id" AS "id",
       t."email" AS "email",
       t."region" AS "region",
       (EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'data_source' AND v.value = 'ds-orders')) AS immuta_row_visible
FROM "sales"."orders" AS t
CROSS JOIN immuta_system.user_profile AS up
WHERE EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'data_source' AND v.value = 'ds-orders')
WITH NO SCHEMA BINDING;
CALL immuta_procedures.protect_view('immuta', 'orders', true);
GRANT SELECT ON "immuta"."orders" TO PUBLIC;

-- MATCHING_ATTRIBUTE
CALL immuta_procedures.protect_view('immuta', 'old_orders', false);
DROP VIEW IF EXISTS "immuta"."old_orders" CASCADE;
CALL immuta_procedures.protect_view('immuta', 'orders', false);
DROP VIEW IF EXISTS "immuta"."orders" CASCADE;
CREATE VIEW "immuta"."orders" AS
SELECT t."id" AS "id",
       t."email" AS "email",
       t."region" AS "region",
       (EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'data_source' AND v.value = 'ds-orders') AND (t."region"::varchar(65535) IN (SELECT v.value FROM immuta_system.user_profile_value v WHERE v.kind = 'attribute' AND v.name = 'region'))) AS immuta_row_visible
FROM "sales"."orders" AS t
CROSS JOIN immuta_system.user_profile AS up
WHERE EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'data_source' AND v.value = 'ds-orders')
  AND (t."region"::varchar(65535) IN (SELECT v.value FROM immuta_system.user_profile_value v WHERE v.kind = 'attribute' AND v.name = 'region'))
WITH NO SCHEMA BINDING;
CALL immuta_procedures.protect_view('immuta', 'orders', true);
GRANT SELECT ON "immuta"."orders" TO PUBLIC;

-- MEMBER_OF_GROUP
CALL immuta_procedures.protect_view('immuta', 'old_orders', false);
DROP VIEW IF EXISTS "immuta"."old_orders" CASCADE;
CALL immuta_procedures.protect_view('immuta', 'orders', false);
DROP VIEW IF EXISTS "immuta"."orders" CASCADE;
CREATE VIEW "immuta"."orders" AS
SELECT t."id" AS "id",
       t."email" AS "email",
       t."region" AS "region",
       (EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'data_source' AND v.value = 'ds-orders') AND (EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'group' AND v.value = 'finance'))) AS immuta_row_visible
FROM "sales"."orders" AS t
CROSS JOIN immuta_system.user_profile AS up
WHERE EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'data_source' AND v.value = 'ds-orders')
  AND (EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'group' AND v.value = 'finance'))
WITH NO SCHEMA BINDING;
CALL immuta_procedures.protect_view('immuta', 'orders', true);
GRANT SELECT ON "immuta"."orders" TO PUBLIC;

-- HASH
CALL immuta_procedures.protect_view('immuta', 'old_orders', false);
DROP VIEW IF EXISTS "immuta"."old_orders" CASCADE;
CALL immuta_procedures.protect_view('immuta', 'orders', false);
DROP VIEW IF EXISTS "immuta"."orders" CASCADE;
CREATE VIEW "immuta"."orders" AS
SELECT t."id" AS "id",
       pg_catalog.sha2(hs.salt || t."email"::varchar(65535), 256) AS "email",
       t."region" AS "region",
       (EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'data_source' AND v.value = 'ds-orders')) AS immuta_row_visible
FROM "sales"."orders" AS t
CROSS JOIN immuta_system.user_profile AS up
CROSS JOIN immuta_system.hash_salt AS hs
WHERE EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'data_source' AND v.value = 'ds-orders')
WITH NO SCHEMA BINDING;
CALL immuta_procedures.protect_view('immuta', 'orders', true);
GRANT SELECT ON "immuta"."orders" TO PUBLIC;

-- NULLIFY
CALL immuta_procedures.protect_view('immuta', 'old_orders', false);
DROP VIEW IF EXISTS "immuta"."old_orders" CASCADE;
CALL immuta_procedures.protect_view('immuta', 'orders', false);
DROP VIEW IF EXISTS "immuta"."orders" CASCADE;
CREATE VIEW "immuta"."orders" AS
SELECT t."id" AS "id",
       CASE WHEN true THEN NULL ELSE t."email" END AS "email",
       t."region" AS "region",
       (EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'data_source' AND v.value = 'ds-orders')) AS immuta_row_visible
FROM "sales"."orders" AS t
CROSS JOIN immuta_system.user_profile AS up
WHERE EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'data_source' AND v.value = 'ds-orders')
WITH NO SCHEMA BINDING;
CALL immuta_procedures.protect_view('immuta', 'orders', true);
GRANT SELECT ON "immuta"."orders" TO PUBLIC;

-- CONSTANT
CALL immuta_procedures.protect_view('immuta', 'old_orders', false);
DROP VIEW IF EXISTS "immuta"."old_orders" CASCADE;
CALL immuta_procedures.protect_view('immuta', 'orders', false);
DROP VIEW IF EXISTS "immuta"."orders" CASCADE;
CREATE VIEW "immuta"."orders" AS
SELECT t."id" AS "id",
       'REDACTED' AS "email",
       t."region" AS "region",
       (EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'data_source' AND v.value = 'ds-orders')) AS immuta_row_visible
FROM "sales"."orders" AS t
CROSS JOIN immuta_system.user_profile AS up
WHERE EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'data_source' AND v.value = 'ds-orders')
WITH NO SCHEMA BINDING;
CALL immuta_procedures.protect_view('immuta', 'orders', true);
GRANT SELECT ON "immuta"."orders" TO PUBLIC;

-- Exceptions
CALL immuta_procedures.protect_view('immuta', 'old_orders', false);
DROP VIEW IF EXISTS "immuta"."old_orders" CASCADE;
CALL immuta_procedures.protect_view('immuta', 'orders', false);
DROP VIEW IF EXISTS "immuta"."orders" CASCADE;
CREATE VIEW "immuta"."orders" AS
SELECT t."id" AS "id",
       CASE WHEN NOT (EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'group' AND v.value IN ('privacy')) OR EXISTS (SELECT 1 FROM immuta_system.user_profile_value pp JOIN immuta_system.user_profile_value ack ON ack.kind = 'acknowledged_purpose' AND ack.value = pp.value WHERE pp.kind = 'project_purpose' AND pp.value IN ('fraud'))) THEN pg_catalog.sha2(hs.salt || t."email"::varchar(65535), 256) ELSE t."email"::varchar(65535) END AS "email",
       t."region" AS "region",
       (EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'data_source' AND v.value = 'ds-orders')) AS immuta_row_visible
FROM "sales"."orders" AS t
CROSS JOIN immuta_system.user_profile AS up
CROSS JOIN immuta_system.hash_salt AS hs
WHERE EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'data_source' AND v.value = 'ds-orders')
WITH NO SCHEMA BINDING;
CALL immuta_procedures.protect_view('immuta', 'orders', true);
GRANT SELECT ON "immuta"."orders" TO PUBLIC;

-- Several masks on one column
CALL immuta_procedures.protect_view('immuta', 'old_orders', false);
DROP VIEW IF EXISTS "immuta"."old_orders" CASCADE;
CALL immuta_procedures.protect_view('immuta', 'orders', false);
DROP VIEW IF EXISTS "immuta"."orders" CASCADE;
CREATE VIEW "immuta"."orders" AS
SELECT t."id" AS "id",
       CASE WHEN NOT (EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'group' AND v.value IN ('privacy'))) THEN pg_catalog.sha2(hs.salt || t."email"::varchar(65535), 256) ELSE 'REDACTED' END AS "email",
       t."region" AS "region",
       (EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'data_source' AND v.value = 'ds-orders')) AS immuta_row_visible
FROM "sales"."orders" AS t
CROSS JOIN immuta_system.user_profile AS up
CROSS JOIN immuta_system.hash_salt AS hs
WHERE EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'data_source' AND v.value = 'ds-orders')
WITH NO SCHEMA BINDING;
CALL immuta_procedures.protect_view('immuta', 'orders', true);
GRANT SELECT ON "immuta"."orders" TO PUBLIC;

-- Canonical text of every type
CALL immuta_procedures.protect_view('immuta', 'typed', false);
DROP VIEW IF EXISTS "immuta"."typed" CASCADE;
CREATE VIEW "immuta"."typed" AS
SELECT CASE WHEN NOT (EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'group' AND v.value IN ('privacy'))) THEN pg_catalog.sha2(hs.salt || t."c0"::varchar(65535), 256) ELSE t."c0"::varchar(65535) END AS "c0",
       CASE WHEN NOT (EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'group' AND v.value IN ('privacy'))) THEN pg_catalog.sha2(hs.salt || t."c1"::varchar(65535), 256) ELSE t."c1"::varchar(65535) END AS "c1",
       CASE WHEN NOT (EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'group' AND v.value IN ('privacy'))) THEN pg_catalog.sha2(hs.salt || t."c2"::varchar(65535), 256) ELSE t."c2"::varchar(65535) END AS "c2",
       CASE WHEN NOT (EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'group' AND v.value IN ('privacy'))) THEN pg_catalog.sha2(hs.salt || ('\\x' || pg_catalog.lower(pg_catalog.to_hex(t."c3"))), 256) ELSE ('\\x' || pg_catalog.lower(pg_catalog.to_hex(t."c3"))) END AS "c3",
       CASE WHEN NOT (EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'group' AND v.value IN ('privacy'))) THEN pg_catalog.sha2(hs.salt || pg_catalog.replace(pg_catalog.to_char(t."c4"::timestamp, 'YYYY-MM-DD BC'), ' AD', ''), 256) ELSE pg_catalog.replace(pg_catalog.to_char(t."c4"::timestamp, 'YYYY-MM-DD BC'), ' AD', '') END AS "c4",
       CASE WHEN NOT (EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'group' AND v.value IN ('privacy'))) THEN pg_catalog.sha2(hs.salt || (pg_catalog.to_char(t."c5", 'YYYY-MM-DD HH24:MI:SS') || pg_catalog.rtrim(pg_catalog.rtrim(pg_catalog.to_char(t."c5", '.US'), '0'), '.') || pg_catalog.replace(pg_catalog.to_char(t."c5", ' BC'), ' AD', '')), 256) ELSE (pg_catalog.to_char(t."c5", 'YYYY-MM-DD HH24:MI:SS') || pg_catalog.rtrim(pg_catalog.rtrim(pg_catalog.to_char(t."c5", '.US'), '0'), '.') || pg_catalog.replace(pg_catalog.to_char(t."c5", ' BC'), ' AD', '')) END AS "c5",
       CASE WHEN NOT (EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'group' AND v.value IN ('privacy'))) THEN pg_catalog.sha2(hs.salt || (pg_catalog.to_char((t."c6" AT TIME ZONE 'UTC'), 'YYYY-MM-DD HH24:MI:SS') || pg_catalog.rtrim(pg_catalog.rtrim(pg_catalog.to_char((t."c6" AT TIME ZONE 'UTC'), '.US'), '0'), '.') || '+00' || pg_catalog.replace(pg_catalog.to_char((t."c6" AT TIME ZONE 'UTC'), ' BC'), ' AD', '')), 256) ELSE (pg_catalog.to_char((t."c6" AT TIME ZONE 'UTC'), 'YYYY-MM-DD HH24:MI:SS') || pg_catalog.rtrim(pg_catalog.rtrim(pg_catalog.to_char((t."c6" AT TIME ZONE 'UTC'), '.US'), '0'), '.') || '+00' || pg_catalog.replace(pg_catalog.to_char((t."c6" AT TIME ZONE 'UTC'), ' BC'), ' AD', '')) END AS "c6",
       CASE WHEN NOT (EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'group' AND v.value IN ('privacy'))) THEN NULL ELSE t."c7"::varchar(65535) END AS "c7",
       CASE WHEN NOT (EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'group' AND v.value IN ('privacy'))) THEN NULL ELSE t."c8"::varchar(65535) END AS "c8",
       CASE WHEN NOT (EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'group' AND v.value IN ('privacy'))) THEN NULL ELSE t."c9"::varchar(65535) END AS "c9",
       CASE WHEN NOT (EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'group' AND v.value IN ('privacy'))) THEN NULL ELSE t."c10"::varchar(65535) END AS "c10",
       (EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'data_source' AND v.value = 'ds-typed') AND (t."c0"::varchar(65535) IN (SELECT v.value FROM immuta_system.user_profile_value v WHERE v.kind = 'attribute' AND v.name = 'k') AND t."c1"::varchar(65535) IN (SELECT v.value FROM immuta_system.user_profile_value v WHERE v.kind = 'attribute' AND v.name = 'k') AND t."c2"::varchar(65535) IN (SELECT v.value FROM immuta_system.user_profile_value v WHERE v.kind = 'attribute' AND v.name = 'k') AND ('\\x' || pg_catalog.lower(pg_catalog.to_hex(t."c3"))) IN (SELECT v.value FROM immuta_system.user_profile_value v WHERE v.kind = 'attribute' AND v.name = 'k') AND pg_catalog.replace(pg_catalog.to_char(t."c4"::timestamp, 'YYYY-MM-DD BC'), ' AD', '') IN (SELECT v.value FROM immuta_system.user_profile_value v WHERE v.kind = 'attribute' AND v.name = 'k') AND (pg_catalog.to_char(t."c5", 'YYYY-MM-DD HH24:MI:SS') || pg_catalog.rtrim(pg_catalog.rtrim(pg_catalog.to_char(t."c5", '.US'), '0'), '.') || pg_catalog.replace(pg_catalog.to_char(t."c5", ' BC'), ' AD', '')) IN (SELECT v.value FROM immuta_system.user_profile_value v WHERE v.kind = 'attribute' AND v.name = 'k') AND (pg_catalog.to_char((t."c6" AT TIME ZONE 'UTC'), 'YYYY-MM-DD HH24:MI:SS') || pg_catalog.rtrim(pg_catalog.rtrim(pg_catalog.to_char((t."c6" AT TIME ZONE 'UTC'), '.US'), '0'), '.') || '+00' || pg_catalog.replace(pg_catalog.to_char((t."c6" AT TIME ZONE 'UTC'), ' BC'), ' AD', '')) IN (SELECT v.value FROM immuta_system.user_profile_value v WHERE v.kind = 'attribute' AND v.name = 'k') AND false AND false AND false AND false)) AS immuta_row_visible
FROM "sales"."typed" AS t
CROSS JOIN immuta_system.user_profile AS up
CROSS JOIN immuta_system.hash_salt AS hs
WHERE EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'data_source' AND v.value = 'ds-typed')
  AND (t."c0"::varchar(65535) IN (SELECT v.value FROM immuta_system.user_profile_value v WHERE v.kind = 'attribute' AND v.name = 'k') AND t."c1"::varchar(65535) IN (SELECT v.value FROM immuta_system.user_profile_value v WHERE v.kind = 'attribute' AND v.name = 'k') AND t."c2"::varchar(65535) IN (SELECT v.value FROM immuta_system.user_profile_value v WHERE v.kind = 'attribute' AND v.name = 'k') AND ('\\x' || pg_catalog.lower(pg_catalog.to_hex(t."c3"))) IN (SELECT v.value FROM immuta_system.user_profile_value v WHERE v.kind = 'attribute' AND v.name = 'k') AND pg_catalog.replace(pg_catalog.to_char(t."c4"::timestamp, 'YYYY-MM-DD BC'), ' AD', '') IN (SELECT v.value FROM immuta_system.user_profile_value v WHERE v.kind = 'attribute' AND v.name = 'k') AND (pg_catalog.to_char(t."c5", 'YYYY-MM-DD HH24:MI:SS') || pg_catalog.rtrim(pg_catalog.rtrim(pg_catalog.to_char(t."c5", '.US'), '0'), '.') || pg_catalog.replace(pg_catalog.to_char(t."c5", ' BC'), ' AD', '')) IN (SELECT v.value FROM immuta_system.user_profile_value v WHERE v.kind = 'attribute' AND v.name = 'k') AND (pg_catalog.to_char((t."c6" AT TIME ZONE 'UTC'), 'YYYY-MM-DD HH24:MI:SS') || pg_catalog.rtrim(pg_catalog.rtrim(pg_catalog.to_char((t."c6" AT TIME ZONE 'UTC'), '.US'), '0'), '.') || '+00' || pg_catalog.replace(pg_catalog.to_char((t."c6" AT TIME ZONE 'UTC'), ' BC'), ' AD', '')) IN (SELECT v.value FROM immuta_system.user_profile_value v WHERE v.kind = 'attribute' AND v.name = 'k') AND false AND false AND false AND false)
WITH NO SCHEMA BINDING;
CALL immuta_procedures.protect_view('immuta', 'typed', true);
GRANT SELECT ON "immuta"."typed" TO PUBLIC;

