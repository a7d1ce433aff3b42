//! `bootstrap`: the warehouse objects, created by the system account and the setup user
//! (`roles`), after `preflight` has checked that both may do what it asks.

use super::{postgres, preflight, redshift, roles, row_security};
use crate::apply::sql::dialect;
use crate::apply::{connect, ApplyError, Warehouse};
use crate::config::{Dialect, Integration};

impl Warehouse {
    /// Creates or updates the warehouse objects. Safe to run any number of times, also
    /// concurrently. The system account (the integration URL) creates and owns the
    /// integration's objects; then the setup user (`setup_url`, or the same connection
    /// when there is none) creates the impersonator role and the procedures that change
    /// its membership (`roles`).
    pub async fn bootstrap(&self) -> Result<(), ApplyError> {
        let mut client = self.client().await?;
        let system_role = current_role(&client).await?;
        let mut setup = match self.integration.setup_url {
            Some(_) => Some(self.setup_connection().await?),
            None => None,
        };
        let setup_role = match &setup {
            Some(c) => current_role(c).await?,
            None => system_role.clone(),
        };
        if self.dialect() == Dialect::Redshift {
            refuse_case_sensitive_identifiers(&client).await?;
        }
        preflight::system(&client, &system_role, &self.database).await?;
        match &setup {
            Some(c) => preflight::setup(c, self.dialect(), &setup_role, &self.integration).await?,
            None => {
                preflight::setup(&client, self.dialect(), &setup_role, &self.integration).await?
            }
        }
        let tx = client.transaction().await?;
        self.system_part(&tx, &system_role, &setup_role).await?;
        let tx = match setup.as_mut() {
            Some(c) => {
                // The system part must be visible to the setup user's transaction.
                tx.commit().await?;
                let setup_tx = c.transaction().await?;
                self.setup_part(&setup_tx, &system_role).await?;
                setup_tx.commit().await?;
                client.transaction().await?
            }
            None => {
                self.setup_part(&tx, &system_role).await?;
                tx
            }
        };
        if self.dialect() == Dialect::Redshift {
            tx.batch_execute(&redshift::after_setup(&self.integration.impersonator_role))
                .await?;
            self.protect_policy_views(&tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Redshift: protects every view of the view schema again, so that bootstrap is the
    /// remedy for a view left without row-level security (`startup` refuses to run then).
    /// `protect_view` turns RLS on and attaches the policy only where it is missing.
    async fn protect_policy_views(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
    ) -> Result<(), ApplyError> {
        let schema = &self.integration.view_schema;
        let d = dialect::of(self.dialect());
        for row in tx.query(d.views_query(), &[schema]).await? {
            let (in_schema, view): (String, String) = (row.try_get(0)?, row.try_get(1)?);
            if in_schema == *schema {
                tx.batch_execute(&row_security::protect(schema, &view))
                    .await?;
            }
        }
        Ok(())
    }

    async fn system_part(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        system_role: &str,
        setup_role: &str,
    ) -> Result<(), ApplyError> {
        let i = &self.integration;
        match self.dialect() {
            Dialect::Postgres => {
                tx.execute(BOOTSTRAP_LOCK, &[]).await?;
                let names = postgres::Names {
                    database: &self.database,
                    view_schema: &i.view_schema,
                    impersonator_role: &i.impersonator_role,
                    system_role,
                };
                tx.batch_execute(&postgres::bootstrap_script(&names, setup_role))
                    .await?;
            }
            Dialect::Redshift => {
                let names = redshift::Names {
                    view_schema: &i.view_schema,
                    impersonator_role: &i.impersonator_role,
                };
                tx.batch_execute(&redshift::bootstrap_script(&names))
                    .await?;
            }
        }
        Ok(())
    }

    async fn setup_part(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        system_role: &str,
    ) -> Result<(), ApplyError> {
        let role = &self.integration.impersonator_role;
        match self.dialect() {
            Dialect::Postgres => {
                // Concurrent bootstraps would update the same catalog rows ("tuple
                // concurrently updated"): the setup part takes the lock too.
                tx.execute(BOOTSTRAP_LOCK, &[]).await?;
                let script = roles::setup_script(
                    role,
                    system_role,
                    &self.database,
                    &self.integration.view_schema,
                );
                tx.batch_execute(&script).await?;
            }
            Dialect::Redshift => {
                let group = tx
                    .query_opt("SELECT 1 FROM pg_group WHERE groname = $1", &[role])
                    .await?;
                if group.is_none() {
                    tx.batch_execute(&redshift::create_group(role)).await?;
                }
                let policy = tx
                    .query_opt(row_security::POLICY_EXISTS, &[&row_security::POLICY])
                    .await?;
                if policy.is_none() {
                    tx.batch_execute(&row_security::create_policy()).await?;
                }
                tx.batch_execute(&row_security::alter_policy()).await?;
                let script = redshift::setup_script(
                    role,
                    system_role,
                    &self.database,
                    &self.integration.view_schema,
                );
                tx.batch_execute(&script).await?;
            }
        }
        Ok(())
    }

    /// A connection as the setup user, for bootstrap only.
    async fn setup_connection(&self) -> Result<tokio_postgres::Client, ApplyError> {
        connect::setup_client(&self.integration)
            .await
            .map_err(|e| match e {
                connect::ConnectError::Config(e) => ApplyError::Config(e),
                e => ApplyError::pool(Some("as the setup user, setup_url".into()), e),
            })
    }
}

/// Why bootstrapping one integration failed, and what to do about it.
#[derive(Debug, thiserror::Error)]
#[error("bootstrap of integration {integration} failed")]
pub struct BootstrapError {
    pub integration: String,
    pub source: Box<dyn std::error::Error + Send + Sync>,
    pub hint: String,
}

/// Bootstraps every integration of `config`, in order (the `bootstrap` command, and the
/// demo's and benchmarks' setup).
pub async fn bootstrap_all(config: &crate::config::Config) -> Result<(), BootstrapError> {
    for integration in &config.integrations {
        let failed =
            |source: Box<dyn std::error::Error + Send + Sync>, hint: &str| BootstrapError {
                integration: integration.name.clone(),
                source,
                hint: hint.to_string(),
            };
        let warehouse = Warehouse::new(integration)
            .map_err(|e| failed(Box::new(e), "fix the integration's configuration"))?;
        warehouse.bootstrap().await.map_err(|e| {
            let hint = e.hint();
            failed(Box::new(e), hint)
        })?;
        tracing::info!(integration = %integration.name, "bootstrap complete");
    }
    Ok(())
}

/// The whole bootstrap script for `integration`'s dialect, as the system account and the
/// setup user would run it, built from the configuration alone (`bootstrap --print-sql`).
/// Bootstrap also checks, before running it, that the roles may do what it asks
/// (`preflight`) and, on Redshift, that identifiers are case-insensitive.
pub fn bootstrap_sql(integration: &Integration) -> Result<String, crate::config::ConfigError> {
    let system_cfg = integration.pg_config()?;
    let system = system_cfg
        .get_user()
        .unwrap_or("<system account>")
        .to_string();
    let setup_cfg = integration.setup_config()?;
    let setup = setup_cfg.get_user().unwrap_or("<setup user>").to_string();
    let database = integration.database()?;
    let role = &integration.impersonator_role;
    let mut out = format!("-- As the system account {system} (url):\n");
    match integration.dialect {
        Dialect::Postgres => {
            let names = postgres::Names {
                database: &database,
                view_schema: &integration.view_schema,
                impersonator_role: role,
                system_role: &system,
            };
            out += &postgres::bootstrap_script(&names, &setup);
            out += &format!("\n-- As the setup user {setup} (setup_url, or url without one):\n");
            out += &roles::setup_script(role, &system, &database, &integration.view_schema);
        }
        Dialect::Redshift => {
            let names = redshift::Names {
                view_schema: &integration.view_schema,
                impersonator_role: role,
            };
            out += &redshift::bootstrap_script(&names);
            out += &format!("\n-- As the setup user {setup} (setup_url, or url without one):\n");
            out += &format!(
                "-- only if the group does not exist yet:\n{};\n",
                redshift::create_group(role)
            );
            out += &format!(
                "-- only if the row-level security policy does not exist yet:\n{};\n-- always:\n{};\n",
                row_security::create_policy(),
                row_security::alter_policy()
            );
            out += &redshift::setup_script(role, &system, &database, &integration.view_schema);
            out += &format!("\n-- As the system account {system} again:\n");
            out += &redshift::after_setup(role);
            out += "-- and, for every view of the view schema:\n";
            out += &format!(
                "{};\n",
                row_security::protect(&integration.view_schema, "<view>")
            );
        }
    }
    Ok(out)
}

/// Serializes concurrent bootstraps of one database (PostgreSQL).
const BOOTSTRAP_LOCK: &str = "SELECT pg_advisory_xact_lock(hashtext('policy-push bootstrap'))";

async fn current_role(client: &tokio_postgres::Client) -> Result<String, ApplyError> {
    Ok(client
        .query_one("SELECT current_user::text", &[])
        .await?
        .try_get(0)?)
}

/// True when a `SHOW enable_case_sensitive_identifier` answer means "on".
pub fn case_sensitive(setting: &str) -> bool {
    matches!(
        setting.trim().to_ascii_lowercase().as_str(),
        "on" | "true" | "1"
    )
}

async fn refuse_case_sensitive_identifiers(
    client: &tokio_postgres::Client,
) -> Result<(), ApplyError> {
    let messages = client
        .simple_query("SHOW enable_case_sensitive_identifier")
        .await?;
    let setting = messages.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(String::from),
        _ => None,
    });
    if setting.as_deref().is_some_and(case_sensitive) {
        return Err(ApplyError::Refused(
            "Redshift's enable_case_sensitive_identifier is on: policy-push folds identifiers to lower case and would \
             build views over the wrong objects. Set it to false in the cluster's parameter group (or run \
             ALTER USER <system role> SET enable_case_sensitive_identifier TO false), then bootstrap again"
                .into(),
        ));
    }
    Ok(())
}
