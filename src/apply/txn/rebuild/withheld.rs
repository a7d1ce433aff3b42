//! Policies withheld for their size (`txn::definitions`): a policy whose newest version
//! cannot be stored is tombstoned, and the views its older and newest versions target
//! are dropped and stay dropped, whatever else changes, until a version that fits
//! arrives or the policy is deleted. Without this, the views would be rebuilt without the
//! policy at all, showing more than its newest record allows. The targets are kept row by
//! row (data source ids, and tags, which also catch data sources created later), so
//! that no limit on a definition's size applies to them.

use std::collections::BTreeSet;

use super::affected::Stored;
use super::Rebuild;
use crate::apply::ApplyError;
use crate::batch::Batch;
use crate::event::{DataSource, Status};

const WITHHELD: &str = "SELECT policy_id, kind, value FROM immuta_system.view_withheld";
const WITHHOLD: &str =
    "INSERT INTO immuta_system.view_withheld (policy_id, kind, value) VALUES ($1, $2, $3)";
const RELEASE: &str = "DELETE FROM immuta_system.view_withheld WHERE policy_id = $1";
const WITHHOLDING: &str = "SELECT DISTINCT policy_id FROM immuta_system.view_withheld";

/// The policies that withhold views now: a batch with a record of one of them rebuilds
/// views even when its record changed nothing stored (a tombstone of the policy its
/// size already tombstoned), since that record releases them.
pub(in crate::apply) async fn withholding(
    tx: &crate::apply::txn::Tx<'_>,
) -> Result<BTreeSet<String>, ApplyError> {
    let rows = tx.query(WITHHOLDING, &[]).await?;
    Ok(rows
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?)
}

/// The Redshift statements of withholding (`statements` pins them).
#[cfg(test)]
pub(crate) fn redshift_statements() -> Vec<String> {
    vec![
        WITHHELD.into(),
        WITHHOLD.into(),
        RELEASE.into(),
        WITHHOLDING.into(),
    ]
}

/// The withheld targets: (policy, `data_source` or `tag`, id or tag).
#[derive(Debug, Default)]
pub(super) struct Withheld(Vec<(String, String, String)>);

impl Withheld {
    /// The policy that withholds this data source's view, if one does.
    pub(super) fn by(&self, ds: &DataSource) -> Option<&str> {
        let tagged =
            |t: &String| ds.tags.contains(t) || ds.columns.iter().any(|c| c.tags.contains(t));
        self.0
            .iter()
            .find(|(_, kind, value)| match kind.as_str() {
                "data_source" => ds.id == *value,
                _ => tagged(value),
            })
            .map(|(policy, _, _)| policy.as_str())
    }
}

impl Rebuild<'_, '_> {
    async fn load_withheld(&self) -> Result<Withheld, ApplyError> {
        let rows = self.tx.query(WITHHELD, &[]).await?;
        let rows = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect::<Result<_, tokio_postgres::Error>>()?;
        Ok(Withheld(rows))
    }

    /// Releases the targets of changed policies, withholds those of the policies too large
    /// in this batch, and adds to `affected` every data source whose view that changes.
    pub(super) async fn withheld(
        &mut self,
        stored: &Stored,
        batch: &Batch,
        changed_pol: &BTreeSet<String>,
        affected: &mut BTreeSet<String>,
    ) -> Result<Withheld, ApplyError> {
        let before = self.load_withheld().await?;
        let release = self.tx.prepare_cached(RELEASE).await?;
        for id in changed_pol {
            if before.0.iter().any(|(p, _, _)| p == id) {
                self.tx.execute(&release, &[id]).await?;
            }
        }
        let withhold = self.tx.prepare_cached(WITHHOLD).await?;
        for id in std::mem::take(&mut self.withhold) {
            let Some(policy) = batch.policies.get(&id).and_then(|p| p.upsert.as_ref()) else {
                continue;
            };
            let policy = &policy.value;
            if policy.status != Status::Active {
                continue;
            }
            let older = stored
                .built
                .iter()
                .filter(|(_, (_, ids))| ids.contains(&id))
                .map(|(ds, _)| ds);
            let ids: BTreeSet<&String> =
                policy.target.data_source_ids.iter().chain(older).collect();
            for ds in ids {
                self.tx
                    .execute(&withhold, &[&id, &"data_source", ds])
                    .await?;
            }
            for tag in &policy.target.tags {
                self.tx.execute(&withhold, &[&id, &"tag", tag]).await?;
            }
        }
        let now = self.load_withheld().await?;
        for d in stored.sources.values() {
            if before.by(d).is_some() || (now.by(d).is_some() && stored.built.contains_key(&d.id)) {
                affected.insert(d.id.clone());
            }
        }
        Ok(now)
    }
}
