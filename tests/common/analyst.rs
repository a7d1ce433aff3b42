//! An analyst's look-alikes of the built-ins views use.

use super::warehouse::Database;

/// Every built-in a generated view uses, planted in `public` by an analyst where PUBLIC
/// may create (the default before PostgreSQL 15, kept by pg_upgrade, and Redshift's),
/// each matching the arguments a view passes better than the built-in does, or as well:
/// `&&` answering true would meet every group exception, `convert_to` would hash the
/// wrong bytes, `unnest` would meet every purpose exception, `to_char` would print every
/// date alike.
pub const PLANTED: &str = r#"
CREATE FUNCTION public.pp_true(text[], text[]) RETURNS boolean LANGUAGE sql AS 'SELECT true';
CREATE OPERATOR public.&& (LEFTARG = text[], RIGHTARG = text[], FUNCTION = public.pp_true);
CREATE FUNCTION public.pp_eq(text, text) RETURNS boolean LANGUAGE sql AS 'SELECT true';
CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.pp_eq);
CREATE FUNCTION public.pp_arrow(jsonb, text) RETURNS jsonb LANGUAGE sql AS $$SELECT '["eu", "us"]'::jsonb$$;
CREATE OPERATOR public.-> (LEFTARG = jsonb, RIGHTARG = text, FUNCTION = public.pp_arrow);
CREATE FUNCTION public.pp_cat(text, text) RETURNS text LANGUAGE sql AS $$SELECT 'x'$$;
CREATE OPERATOR public.|| (LEFTARG = text, RIGHTARG = text, FUNCTION = public.pp_cat);
CREATE FUNCTION public.convert_to(text, text) RETURNS bytea LANGUAGE sql AS $$SELECT '\x00'::bytea$$;
CREATE FUNCTION public.unnest(text[]) RETURNS SETOF text LANGUAGE sql AS $$SELECT 'fraud'$$;
CREATE FUNCTION public.jsonb_array_elements_text(jsonb) RETURNS SETOF text LANGUAGE sql AS $$VALUES ('eu'), ('us')$$;
CREATE FUNCTION public.sha256(bytea) RETURNS bytea LANGUAGE sql AS $$SELECT '\x00'::bytea$$;
CREATE FUNCTION public.encode(bytea, text) RETURNS text LANGUAGE sql AS $$SELECT 'planted'$$;
CREATE FUNCTION public.to_char(timestamp, text) RETURNS text LANGUAGE sql AS $$SELECT '1'$$;
CREATE FUNCTION public.to_char(date, text) RETURNS text LANGUAGE sql AS $$SELECT '1'$$;
CREATE FUNCTION public.rtrim(text, text) RETURNS text LANGUAGE sql AS $$SELECT ''$$;
CREATE FUNCTION public.replace(text, text, text) RETURNS text LANGUAGE sql AS $$SELECT '1'$$;
CREATE FUNCTION public.isfinite(date) RETURNS boolean LANGUAGE sql AS 'SELECT false';
CREATE FUNCTION public.timezone(text, timestamptz) RETURNS timestamp LANGUAGE sql AS $$SELECT 'epoch'::timestamp$$;
"#;

/// Lets PUBLIC create in `public` and plants [`PLANTED`] as a fresh analyst login.
pub async fn plant_builtins(db: &mut Database) {
    let mallory = db.role("mallory", true).await;
    db.client()
        .await
        .batch_execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
        .await
        .expect("PUBLIC may create in public");
    db.as_role(&mallory)
        .await
        .batch_execute(PLANTED)
        .await
        .expect("the analyst plants look-alikes");
}
