//! Which views a rebuild touches, and which data source each view name belongs to.
//!
//! A view name belongs to the first active data source that holds it (SPEC §4): the one
//! whose view exists under the name it still has, or, among those that want a name
//! nobody holds, the lowest id. Another data source naming it is dead-lettered with the
//! owner's id and never replaces or drops the owner's view; once the owner lets the name
//! go (renamed, disabled, deleted), the data sources waiting for it are built.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{parse, policy_barrier, Rebuild, ToBuild, VIEW_STATES};
use crate::apply::sql::view;
use crate::apply::ApplyError;
use crate::batch::Batch;
use crate::event::{DataSource, Policy, Status};

/// The stored state a rebuild reads: live policies and data sources, and the views that
/// exist (data source → view name, policies it enforces).
pub(super) struct Stored {
    pub(super) policies: Vec<Policy>,
    pub(super) sources: BTreeMap<String, DataSource>,
    pub(super) built: BTreeMap<String, (String, Vec<String>)>,
}

impl Stored {
    pub(super) fn active(&self, id: &str) -> Option<&DataSource> {
        self.sources.get(id).filter(|d| d.status == Status::Active)
    }

    /// An active data source without a view under the name it has.
    fn unbuilt(&self, id: &str) -> bool {
        self.active(id)
            .is_some_and(|d| self.built.get(id).is_none_or(|(v, _)| *v != d.view_name))
    }

    /// Each view name of `affected` with the data source it belongs to (the lowest id
    /// where, as an earlier version could leave them, two built views share a name).
    pub(super) fn owners(&self, affected: &BTreeSet<String>) -> HashMap<&str, &str> {
        let mut owners = HashMap::new();
        for (id, (view, _)) in &self.built {
            if self.active(id).is_some_and(|d| d.view_name == *view) {
                owners.entry(view.as_str()).or_insert(id.as_str());
            }
        }
        for d in affected.iter().filter_map(|id| self.active(id)) {
            owners.entry(d.view_name.as_str()).or_insert(d.id.as_str());
        }
        owners
    }

    /// Which data sources have a view of each name, by `view_state`.
    pub(super) fn holders(&self) -> HashMap<String, BTreeSet<String>> {
        let mut holders: HashMap<String, BTreeSet<String>> = HashMap::new();
        for (id, (view, _)) in &self.built {
            holders.entry(view.clone()).or_default().insert(id.clone());
        }
        holders
    }

    /// The view names that affected data sources let go of in this rebuild.
    fn released<'s>(&'s self, affected: &BTreeSet<String>) -> BTreeSet<&'s str> {
        affected
            .iter()
            .filter_map(|id| {
                let (view, _) = self.built.get(id)?;
                match self.active(id) {
                    Some(d) if d.view_name == *view => None,
                    _ => Some(view.as_str()),
                }
            })
            .collect()
    }
}

impl Rebuild<'_, '_> {
    pub(super) async fn stored(&self) -> Result<Stored, ApplyError> {
        let policies: Vec<Policy> = self.live("policy").await?;
        let sources = self
            .live::<DataSource>("data_source")
            .await?
            .into_iter()
            .map(|d| (d.id.clone(), d))
            .collect();
        let mut built = BTreeMap::new();
        for r in self.tx.query(VIEW_STATES, &[]).await? {
            let ids: Vec<String> = parse(&r.try_get::<_, String>(2)?)?;
            built.insert(r.try_get(0)?, (r.try_get(1)?, ids));
        }
        Ok(Stored {
            policies,
            sources,
            built,
        })
    }

    /// Every data source whose view this rebuild touches, and the policies whose records
    /// are to blame if one cannot be built.
    pub(super) async fn affected(
        &mut self,
        stored: &Stored,
        changed_ds: &BTreeSet<String>,
        changed_pol: &BTreeSet<String>,
    ) -> Result<(BTreeSet<String>, BTreeSet<String>), ApplyError> {
        let mut affected: BTreeSet<String> = changed_ds.clone();
        if self.flush_pending {
            for r in self.tx.query(policy_barrier::PENDING, &[]).await? {
                affected.insert(r.try_get(0)?);
            }
            self.tx
                .batch_execute(policy_barrier::FORGET_PENDING)
                .await?;
        }
        for (ds_id, (_, policy_ids)) in &stored.built {
            if policy_ids.iter().any(|p| changed_pol.contains(p)) {
                affected.insert(ds_id.clone());
            }
        }
        let targets = |p: &Policy| -> Vec<String> {
            let on = stored.sources.values().filter(|d| view::targets(p, d));
            on.map(|d| d.id.clone()).collect()
        };
        for p in stored
            .policies
            .iter()
            .filter(|p| changed_pol.contains(&p.id))
        {
            affected.extend(targets(p));
        }
        let (resent_ds, resent_pol) = std::mem::take(&mut self.resent);
        affected.extend(resent_ds.into_iter().filter(|id| stored.unbuilt(id)));
        let mut blamed = changed_pol.clone();
        for p in stored
            .policies
            .iter()
            .filter(|p| resent_pol.contains(&p.id))
        {
            let unbuilt: Vec<String> = targets(p)
                .into_iter()
                .filter(|id| stored.unbuilt(id))
                .collect();
            if !unbuilt.is_empty() {
                blamed.insert(p.id.clone());
            }
            affected.extend(unbuilt);
        }
        let released = stored.released(&affected);
        let waiting = stored
            .sources
            .values()
            .filter(|d| released.contains(d.view_name.as_str()) && stored.unbuilt(&d.id));
        let waiting: Vec<String> = waiting.map(|d| d.id.clone()).collect();
        affected.extend(waiting);
        Ok((affected, blamed))
    }
}

/// View names at a rebuild: one let go of, one another data source holds.
impl Rebuild<'_, '_> {
    /// Drops the views of renamed data sources under their old names before any view is
    /// built, so that a name one lets go of in this rebuild and another takes (or two
    /// that swap names) is dropped before it is created, never after.
    pub(super) async fn release_old_names(
        &mut self,
        ready: &mut [ToBuild<'_>],
    ) -> Result<(), ApplyError> {
        for target in ready.iter_mut() {
            if let Some(old) = target.old_view.filter(|o| *o != target.ds.view_name) {
                if !self.held_by_other(old, &target.ds.id) {
                    let ddl = self.bounded(view::drop_view(self.dialect(), self.view_schema, old));
                    self.tx.batch_execute(&ddl).await?;
                }
                target.old_view = None;
            }
        }
        Ok(())
    }

    /// A data source names a view that belongs to another: its record is dead-lettered
    /// with the owner's id, its own view (under an earlier name) goes, the owner's stays.
    pub(super) async fn name_taken(
        &mut self,
        ds: &DataSource,
        old_view: Option<&str>,
        owner: &str,
        batch: &Batch,
    ) -> Result<(), ApplyError> {
        let reason = format!(
            "view {}.{} belongs to data source {owner}; data source {} may not have it, and its view is not built",
            self.view_schema, ds.view_name, ds.id
        );
        tracing::warn!(data_source = %ds.id, %owner, %reason, "view name taken");
        self.drop(&ds.id, old_view).await?;
        self.blame(batch, &ds.id, &[], &BTreeSet::new(), &reason);
        Ok(())
    }

    /// Whether a data source other than `ds_id` has a view named `view` (`holders`).
    pub(super) fn held_by_other(&self, view: &str, ds_id: &str) -> bool {
        self.holders
            .get(view)
            .is_some_and(|ids| ids.iter().any(|id| id != ds_id))
    }
}
