-- Subscription only
CALL immuta_procedures.protect_view('immuta', 'old_orders', false);
DROP VIEW IF EXISTS "immuta"."old_orders";
CALL immuta_procedures.protect_view('immuta', 'orders', false);
DROP VIEW IF EXISTS "immuta"."orders";
CREATE VIEW "immuta"."orders" AS
SELECT t."id" AS "id",
       t."email" AS "email",
       t."region" AS "region",
       (EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'data_source' AND v.value = 'ds-orders')) AS immuta_row_visible
FROM "sales"."orders" AS t
CROSS JOIN immuta_system.user_profile AS up
WHERE EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'data_source' AND v.value = 'ds-orders')
WITH NO SCHEMA BINDING;
GRANT SELECT ON "immuta"."orders" TO PUBLIC;
CALL immuta_procedures.protect_view('immuta', 'orders', true);

-- MATCHING_ATTRIBUTE
CALL immuta_procedures.protect_view('immuta', 'old_orders', false);
DROP VIEW IF EXISTS "immuta"."old_orders";
CALL immuta_procedures.protect_view('immuta', 'orders', false);
DROP VIEW IF EXISTS "immuta"."orders";
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
GRANT SELECT ON "immuta"."orders" TO PUBLIC;
CALL immuta_procedures.protect_view('immuta', 'orders', true);

-- MEMBER_OF_GROUP
CALL immuta_procedures.protect_view('immuta', 'old_orders', false);
DROP VIEW IF EXISTS "immuta"."old_orders";
CALL immuta_procedures.protect_view('immuta', 'orders', false);
DROP VIEW IF EXISTS "immuta"."orders";
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
GRANT SELECT ON "immuta"."orders" TO PUBLIC;
CALL immuta_procedures.protect_view('immuta', 'orders', true);

-- HASH
CALL immuta_procedures.protect_view('immuta', 'old_orders', false);
DROP VIEW IF EXISTS "immuta"."old_orders";
CALL immuta_procedures.protect_view('immuta', 'orders', false);
DROP VIEW IF EXISTS "immuta"."orders";
CREATE VIEW "immuta"."orders" AS
SELECT t."id" AS "id",
       SHA2(t."email"::varchar(65535), 256) AS "email",
       t."region" AS "region",
       (EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'data_source' AND v.value = 'ds-orders')) AS immuta_row_visible
FROM "sales"."orders" AS t
CROSS JOIN immuta_system.user_profile AS up
WHERE EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'data_source' AND v.value = 'ds-orders')
WITH NO SCHEMA BINDING;
GRANT SELECT ON "immuta"."orders" TO PUBLIC;
CALL immuta_procedures.protect_view('immuta', 'orders', true);

-- NULLIFY
CALL immuta_procedures.protect_view('immuta', 'old_orders', false);
DROP VIEW IF EXISTS "immuta"."old_orders";
CALL immuta_procedures.protect_view('immuta', 'orders', false);
DROP VIEW IF EXISTS "immuta"."orders";
CREATE VIEW "immuta"."orders" AS
SELECT t."id" AS "id",
       CASE WHEN true THEN NULL ELSE t."email" END AS "email",
       t."region" AS "region",
       (EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'data_source' AND v.value = 'ds-orders')) AS immuta_row_visible
FROM "sales"."orders" AS t
CROSS JOIN immuta_system.user_profile AS up
WHERE EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'data_source' AND v.value = 'ds-orders')
WITH NO SCHEMA BINDING;
GRANT SELECT ON "immuta"."orders" TO PUBLIC;
CALL immuta_procedures.protect_view('immuta', 'orders', true);

-- CONSTANT
CALL immuta_procedures.protect_view('immuta', 'old_orders', false);
DROP VIEW IF EXISTS "immuta"."old_orders";
CALL immuta_procedures.protect_view('immuta', 'orders', false);
DROP VIEW IF EXISTS "immuta"."orders";
CREATE VIEW "immuta"."orders" AS
SELECT t."id" AS "id",
       'REDACTED' AS "email",
       t."region" AS "region",
       (EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'data_source' AND v.value = 'ds-orders')) AS immuta_row_visible
FROM "sales"."orders" AS t
CROSS JOIN immuta_system.user_profile AS up
WHERE EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'data_source' AND v.value = 'ds-orders')
WITH NO SCHEMA BINDING;
GRANT SELECT ON "immuta"."orders" TO PUBLIC;
CALL immuta_procedures.protect_view('immuta', 'orders', true);

-- Exceptions
CALL immuta_procedures.protect_view('immuta', 'old_orders', false);
DROP VIEW IF EXISTS "immuta"."old_orders";
CALL immuta_procedures.protect_view('immuta', 'orders', false);
DROP VIEW IF EXISTS "immuta"."orders";
CREATE VIEW "immuta"."orders" AS
SELECT t."id" AS "id",
       CASE WHEN NOT (EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'group' AND v.value IN ('privacy')) OR EXISTS (SELECT 1 FROM immuta_system.user_profile_value pp JOIN immuta_system.user_profile_value ack ON ack.kind = 'acknowledged_purpose' AND ack.value = pp.value WHERE pp.kind = 'project_purpose' AND pp.value IN ('fraud'))) THEN SHA2(t."email"::varchar(65535), 256) ELSE t."email"::varchar(65535) END AS "email",
       t."region" AS "region",
       (EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'data_source' AND v.value = 'ds-orders')) AS immuta_row_visible
FROM "sales"."orders" AS t
CROSS JOIN immuta_system.user_profile AS up
WHERE EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'data_source' AND v.value = 'ds-orders')
WITH NO SCHEMA BINDING;
GRANT SELECT ON "immuta"."orders" TO PUBLIC;
CALL immuta_procedures.protect_view('immuta', 'orders', true);

-- Several masks on one column
CALL immuta_procedures.protect_view('immuta', 'old_orders', false);
DROP VIEW IF EXISTS "immuta"."old_orders";
CALL immuta_procedures.protect_view('immuta', 'orders', false);
DROP VIEW IF EXISTS "immuta"."orders";
CREATE VIEW "immuta"."orders" AS
SELECT t."id" AS "id",
       CASE WHEN NOT (EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'group' AND v.value IN ('privacy'))) THEN SHA2(t."email"::varchar(65535), 256) ELSE 'REDACTED' END AS "email",
       t."region" AS "region",
       (EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'data_source' AND v.value = 'ds-orders')) AS immuta_row_visible
FROM "sales"."orders" AS t
CROSS JOIN immuta_system.user_profile AS up
WHERE EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'data_source' AND v.value = 'ds-orders')
WITH NO SCHEMA BINDING;
GRANT SELECT ON "immuta"."orders" TO PUBLIC;
CALL immuta_procedures.protect_view('immuta', 'orders', true);

