//! What bootstrap checks before it changes anything, so that a missing privilege is
//! reported as the grant that would fix it rather than as the first statement that fails.

use crate::apply::sql::quote::ident;
use crate::apply::ApplyError;
use crate::config::{Dialect, Integration};

fn missing(what: String) -> ApplyError {
    ApplyError::Refused(what)
}

async fn flag(
    client: &tokio_postgres::Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<bool, ApplyError> {
    Ok(client
        .query_one(sql, params)
        .await?
        .try_get::<_, Option<bool>>(0)?
        .unwrap_or(false))
}

/// The system account must be able to create the integration's schemas, unless they
/// exist already.
pub(crate) async fn system(
    client: &tokio_postgres::Client,
    role: &str,
    database: &str,
) -> Result<(), ApplyError> {
    let exists = flag(
        client,
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = 'immuta_system')",
        &[],
    )
    .await?;
    let may_create = flag(
        client,
        "SELECT pg_catalog.has_database_privilege(pg_catalog.current_database(), 'CREATE')",
        &[],
    )
    .await?;
    if !exists && !may_create {
        return Err(missing(format!(
            "the system account {role} may not create schemas in {database}: GRANT CREATE ON DATABASE {} TO {}",
            ident(database),
            ident(role)
        )));
    }
    Ok(())
}

/// The setup user must be able to create the impersonator role (group on Redshift), unless
/// it exists already.
pub(crate) async fn setup(
    client: &tokio_postgres::Client,
    d: Dialect,
    role: &str,
    integration: &Integration,
) -> Result<(), ApplyError> {
    let group = &integration.impersonator_role;
    let (exists, may_create, grant) = match d {
        Dialect::Postgres => (
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1)",
            "SELECT rolsuper OR rolcreaterole FROM pg_catalog.pg_roles WHERE rolname = current_user",
            format!("ALTER ROLE {} CREATEROLE (or create the role as a superuser: CREATE ROLE {} NOLOGIN, and grant it WITH ADMIN OPTION to {})", ident(role), ident(group), ident(role)),
        ),
        // CREATE GROUP needs a superuser (Database Developer Guide, r_CREATE_GROUP).
        Dialect::Redshift => (
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_group WHERE groname = $1)",
            "SELECT usesuper FROM pg_catalog.pg_user WHERE usename = current_user",
            format!("run bootstrap once with a superuser as the setup user, or have a superuser run CREATE GROUP {}", ident(group)),
        ),
    };
    if !(flag(client, exists, &[group]).await? || flag(client, may_create, &[]).await?) {
        return Err(missing(format!(
            "the setup user {role} may not create the impersonator role {group}: {grant}"
        )));
    }
    if d == Dialect::Redshift && !flag(client, SECURITY_ADMIN, &[]).await? {
        return Err(missing(format!(
            "the setup user {role} may not create or attach row-level security policies, which protect every view: GRANT ROLE sys:secadmin TO {} (or use a superuser)",
            ident(role)
        )));
    }
    Ok(())
}

/// Redshift: creating, attaching and detaching RLS policies takes a superuser or the
/// sys:secadmin role (r_CREATE_RLS_POLICY, r_ATTACH_RLS_POLICY); `protect_view` runs
/// with the setup user's rights at every view the system account creates.
const SECURITY_ADMIN: &str = "SELECT (SELECT usesuper FROM pg_catalog.pg_user WHERE usename = current_user) \
     OR EXISTS (SELECT 1 FROM svv_user_grants WHERE user_name = current_user AND role_name = 'sys:secadmin')";
