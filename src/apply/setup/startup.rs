//! What an integration does on its warehouse before it applies anything, once per
//! process: it stores its HASH salt (SPEC §4), and it refuses to go on while any view in
//! policy-push's schemas is unprotected (on Redshift, a view without row-level security
//! turned on; on PostgreSQL, one that is not a security barrier): an earlier bootstrap or
//! batch that failed between creating and protecting a view, or a view made by hand,
//! would otherwise show rows and values to an analyst's own predicates.

use std::collections::BTreeSet;

use crate::apply::sql::dialect;
use crate::apply::txn::Tx;
use crate::apply::{ApplyError, Warehouse};

/// The salt row, replaced whole: Redshift enforces no key, so one row is kept by
/// deleting before inserting, in one transaction.
const READ_SALT: &str = "SELECT salt FROM immuta_system.hash_salt";
const DELETE_SALT: &str = "DELETE FROM immuta_system.hash_salt";
const INSERT_SALT: &str = "INSERT INTO immuta_system.hash_salt (salt) VALUES ($1)";

/// The Redshift statements of the start (`statements` pins them).
#[cfg(test)]
pub(crate) fn redshift_statements() -> Vec<String> {
    let d = dialect::of(crate::config::Dialect::Redshift);
    let mut all = vec![READ_SALT.into(), DELETE_SALT.into(), INSERT_SALT.into()];
    all.push(d.views_query().into());
    all.extend(d.protected_views_query().map(String::from));
    all
}

impl Warehouse {
    /// Runs the start once; every later call returns at once. A failed start is tried
    /// again by the next call.
    pub async fn started(&self) -> Result<(), ApplyError> {
        self.started
            .get_or_try_init(|| self.start())
            .await
            .map(|_| ())
    }

    async fn start(&self) -> Result<(), ApplyError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let stored: Vec<String> = tx
            .query(READ_SALT, &[])
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        let salt = self.integration.hash_salt.clone().unwrap_or_default();
        if stored != [salt.as_str()] {
            tx.execute(DELETE_SALT, &[]).await?;
            tx.execute(INSERT_SALT, &[&salt]).await?;
            tracing::info!(
                integration = %self.integration.name,
                salted = !salt.is_empty(),
                "HASH masks use a new salt from now on"
            );
        }
        let unprotected = self.unprotected_views(&tx).await?;
        self.load_stale(&tx).await?;
        tx.commit().await?;
        if unprotected.is_empty() {
            Ok(())
        } else {
            Err(ApplyError::Unprotected(unprotected))
        }
    }

    /// The views of policy-push's schemas that lack their protection, as `schema.view`.
    async fn unprotected_views(&self, tx: &Tx<'_>) -> Result<Vec<String>, ApplyError> {
        let d = dialect::of(self.dialect());
        let schema = &self.integration.view_schema;
        let views = tx.query(d.views_query(), &[schema]).await?;
        let protected: BTreeSet<(String, String)> = match d.protected_views_query() {
            Some(q) => tx
                .query(q, &[schema])
                .await?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<Result<_, tokio_postgres::Error>>()?,
            None => BTreeSet::new(),
        };
        let mut unprotected = Vec::new();
        for r in views {
            let (schema, view): (String, String) = (r.try_get(0)?, r.try_get(1)?);
            let barrier: Option<bool> = r.try_get(2)?;
            if barrier != Some(true) && !protected.contains(&(schema.clone(), view.clone())) {
                unprotected.push(format!("{schema}.{view}"));
            }
        }
        Ok(unprotected)
    }
}
