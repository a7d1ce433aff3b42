//! `policy-push bootstrap [--print-sql]`: creates (or updates) each integration's
//! schemas, tables, procedures and roles, or prints the SQL for a DBA to run.

use crate::config::Config;

/// Bootstraps every integration, or prints each one's script.
pub async fn bootstrap(config: &Config, print_sql: bool) -> anyhow::Result<()> {
    if !print_sql {
        return Ok(crate::apply::bootstrap_all(config).await?);
    }
    for integration in &config.integrations {
        println!(
            "-- integration {}\n{}",
            integration.name,
            crate::apply::bootstrap_sql(integration)?
        );
    }
    Ok(())
}
