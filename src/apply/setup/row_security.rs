//! Hidden rows stay hidden on Redshift: every view that filters rows is protected by
//! Redshift row-level security (RLS).
//!
//! PostgreSQL keeps an analyst's own predicate behind a view's conditions with a security
//! barrier. Redshift has none, and an analyst's `WHERE 1/(id - 42) = 0` over a view may be
//! evaluated on rows the view's WHERE would drop, revealing through the error that such a
//! row exists, or a hidden value. What Redshift does guarantee is about RLS: when it plans
//! a query over an RLS-protected relation it "imposes restrictions on the order of
//! evaluation of user predicates containing RLS-unsafe operators and functions", and the
//! unsafe ones are exactly the probes: arithmetic, casts, LIKE and UDFs
//! (t_rls_performance, "Safety of operators and functions"). Policies attach to views and
//! late-binding views, not to external tables (t_rls_usage; r_ATTACH_RLS_POLICY), which
//! suits us: the policy goes on the view, whatever its table is.
//!
//! So:
//! - each protected view carries its own row condition as a last boolean column,
//!   [`COLUMN`], and keeps the same condition in its WHERE (a view whose RLS is turned off
//!   still shows nothing more);
//! - one policy, [`POLICY`], `USING (immuta_row_visible)`, is created once by the setup
//!   user (CREATE RLS POLICY needs a superuser or sys:secadmin, r_CREATE_RLS_POLICY);
//! - the system account, which creates the views but must not be a security
//!   administrator, turns RLS on and attaches the policy TO PUBLIC through
//!   `immuta_procedures.protect_view`, a SECURITY DEFINER procedure of the setup user
//!   that only accepts policy-push's own schemas. A policy attached to a superuser is
//!   ignored (r_ATTACH_RLS_POLICY), as the views are for them anyway.
//!
//! The profile views `immuta_system.user_profile` and `user_profile_value` are protected
//! the same way, so that no predicate over them sees another user's values.

use crate::apply::sql::quote::{ident, redshift_literal as literal};

/// The policy's name and the column it reads.
pub const POLICY: &str = "immuta_row_visible";
pub const COLUMN: &str = "immuta_row_visible";

/// The select-list item that exposes a view's row condition to its RLS policy.
pub fn visible_column(condition: &str) -> String {
    format!("({condition}) AS {COLUMN}")
}

/// The policy's predicate. It names `current_user`, which changes nothing in what it
/// keeps (the column already holds the user's row condition) but keeps the result cache
/// from serving one user's result to another: Redshift reuses a cached result of a query
/// over an RLS-protected relation only when "the policy doesn't use a function that must
/// be evaluated each time it's run, such as GETDATE or CURRENT_USER"
/// (t_rls_performance, "Result caching"), and nothing in the guide rules out that a
/// result of a view that reads `current_user` in its own body is reused across users.
const USING: &str = "immuta_row_visible AND current_user IS NOT NULL";

/// The statement that creates the policy (run by the setup user when `svv_rls_policy`
/// lacks it: CREATE RLS POLICY has no IF NOT EXISTS).
pub fn create_policy() -> String {
    format!("CREATE RLS POLICY {POLICY} WITH ({COLUMN} boolean) USING ({USING})")
}

/// The statement that gives an existing policy this version's predicate
/// (r_ALTER_RLS_POLICY); run by the setup user after `create_policy` or instead of it.
pub fn alter_policy() -> String {
    format!("ALTER RLS POLICY {POLICY} USING ({USING})")
}

/// Whether the policy exists yet.
pub const POLICY_EXISTS: &str = "SELECT 1 FROM svv_rls_policy WHERE polname = $1";

/// The procedure the system account calls after creating a view (`p_attach`) and before
/// dropping one (not `p_attach`: what DROP does to an attached policy is not documented,
/// so it is detached first); part of the setup user's script. Turning RLS on can only
/// hide rows, and the procedure refuses any schema but policy-push's own, so the system
/// account gains nothing else by it.
pub fn protect_procedure(view_schema: &str, system_role: &str) -> String {
    let schema = literal(view_schema);
    let policy = literal(POLICY);
    let system = ident(system_role);
    format!(
        r#"
CREATE OR REPLACE PROCEDURE immuta_procedures.protect_view(p_schema varchar(128), p_view varchar(128), p_attach boolean)
AS $$
DECLARE n_attached integer; v_relation varchar(300);
BEGIN
  IF p_schema NOT IN ({schema}, 'immuta_system') THEN
    RAISE EXCEPTION 'protect_view: % is not a policy-push schema', p_schema;
  END IF;
  v_relation := pg_catalog.quote_ident(p_schema) || '.' || pg_catalog.quote_ident(p_view);
  SELECT INTO n_attached pg_catalog.COUNT(*) FROM pg_catalog.svv_rls_attached_policy
  WHERE relschema = p_schema AND relname = p_view AND polname = {policy};
  IF p_attach THEN
    EXECUTE 'ALTER TABLE ' || v_relation || ' ROW LEVEL SECURITY ON';
    IF n_attached = 0 THEN
      EXECUTE 'ATTACH RLS POLICY ' || pg_catalog.quote_ident({policy}) || ' ON ' || v_relation || ' TO PUBLIC';
    END IF;
  ELSIF n_attached > 0 THEN
    EXECUTE 'DETACH RLS POLICY ' || pg_catalog.quote_ident({policy}) || ' ON ' || v_relation || ' FROM PUBLIC';
  END IF;
END;
$$ LANGUAGE plpgsql SECURITY DEFINER SET search_path TO immuta_system;

REVOKE ALL ON PROCEDURE immuta_procedures.protect_view(varchar, varchar, boolean) FROM PUBLIC;
GRANT EXECUTE ON PROCEDURE immuta_procedures.protect_view(varchar, varchar, boolean) TO {system};
"#
    )
}

/// The call that protects `schema.view` once created.
pub fn protect(schema: &str, view: &str) -> String {
    call(schema, view, true)
}

/// The call that detaches the policy from `schema.view` before it is dropped.
pub fn release(schema: &str, view: &str) -> String {
    call(schema, view, false)
}

fn call(schema: &str, view: &str, attach: bool) -> String {
    format!(
        "CALL immuta_procedures.protect_view({}, {}, {attach})",
        literal(schema),
        literal(view)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_reads_the_column_the_views_expose() {
        assert_eq!(
            create_policy(),
            "CREATE RLS POLICY immuta_row_visible WITH (immuta_row_visible boolean) USING (immuta_row_visible AND current_user IS NOT NULL)"
        );
        assert_eq!(visible_column("a AND b"), "(a AND b) AS immuta_row_visible");
    }

    #[test]
    fn names_reach_the_procedure_as_literals() {
        assert_eq!(
            protect("immuta", "o'rders"),
            "CALL immuta_procedures.protect_view('immuta', 'o''rders', true)"
        );
        assert!(release("immuta", "x").ends_with("'x', false)"));
        let p = protect_procedure("vi'ews", "sys");
        assert!(p.contains("IN ('vi''ews', 'immuta_system')"), "{p}");
        assert!(p.contains("TO \"sys\""), "{p}");
    }
}
