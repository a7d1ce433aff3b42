-- Subscription only
CREATE VIEW "immuta"."orders" AS
SELECT t."id" AS "id",
       t."email" AS "email",
       t."region" AS "region"
FROM "sales"."orders" AS t
CROSS JOIN immuta_system.user_profile AS up
WHERE EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'data_source' AND v.value = 'ds-orders')
WITH NO SCHEMA BINDING;

-- MATCHING_ATTRIBUTE
CREATE VIEW "immuta"."orders" AS
SELECT t."id" AS "id",
       t."email" AS "email",
       t."region" AS "region"
FROM "sales"."orders" AS t
CROSS JOIN immuta_system.user_profile AS up
WHERE EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'data_source' AND v.value = 'ds-orders')
  AND (t."region"::varchar(65535) IN (SELECT v.value FROM immuta_system.user_profile_value v WHERE v.kind = 'attribute' AND v.name = 'region'))
WITH NO SCHEMA BINDING;

-- MEMBER_OF_GROUP
CREATE VIEW "immuta"."orders" AS
SELECT t."id" AS "id",
       t."email" AS "email",
       t."region" AS "region"
FROM "sales"."orders" AS t
CROSS JOIN immuta_system.user_profile AS up
WHERE EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'data_source' AND v.value = 'ds-orders')
  AND (EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'group' AND v.value = 'finance'))
WITH NO SCHEMA BINDING;

-- HASH
CREATE VIEW "immuta"."orders" AS
SELECT t."id" AS "id",
       SHA2(t."email"::varchar(65535), 256) AS "email",
       t."region" AS "region"
FROM "sales"."orders" AS t
CROSS JOIN immuta_system.user_profile AS up
WHERE EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'data_source' AND v.value = 'ds-orders')
WITH NO SCHEMA BINDING;

-- NULLIFY
CREATE VIEW "immuta"."orders" AS
SELECT t."id" AS "id",
       CASE WHEN true THEN NULL ELSE t."email" END AS "email",
       t."region" AS "region"
FROM "sales"."orders" AS t
CROSS JOIN immuta_system.user_profile AS up
WHERE EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'data_source' AND v.value = 'ds-orders')
WITH NO SCHEMA BINDING;

-- CONSTANT
CREATE VIEW "immuta"."orders" AS
SELECT t."id" AS "id",
       'REDACTED' AS "email",
       t."region" AS "region"
FROM "sales"."orders" AS t
CROSS JOIN immuta_system.user_profile AS up
WHERE EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'data_source' AND v.value = 'ds-orders')
WITH NO SCHEMA BINDING;

-- Exceptions
CREATE VIEW "immuta"."orders" AS
SELECT t."id" AS "id",
       CASE WHEN NOT (EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'group' AND v.value IN ('privacy')) OR EXISTS (SELECT 1 FROM immuta_system.user_profile_value pp JOIN immuta_system.user_profile_value ack ON ack.kind = 'acknowledged_purpose' AND ack.value = pp.value WHERE pp.kind = 'project_purpose' AND pp.value IN ('fraud'))) THEN SHA2(t."email"::varchar(65535), 256) ELSE t."email"::varchar(65535) END AS "email",
       t."region" AS "region"
FROM "sales"."orders" AS t
CROSS JOIN immuta_system.user_profile AS up
WHERE EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'data_source' AND v.value = 'ds-orders')
WITH NO SCHEMA BINDING;

-- Several masks on one column
CREATE VIEW "immuta"."orders" AS
SELECT t."id" AS "id",
       CASE WHEN NOT (EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'group' AND v.value IN ('privacy'))) THEN SHA2(t."email"::varchar(65535), 256) ELSE 'REDACTED' END AS "email",
       t."region" AS "region"
FROM "sales"."orders" AS t
CROSS JOIN immuta_system.user_profile AS up
WHERE EXISTS (SELECT 1 FROM immuta_system.user_profile_value v WHERE v.kind = 'data_source' AND v.value = 'ds-orders')
WITH NO SCHEMA BINDING;

