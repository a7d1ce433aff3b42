//! Rebuilding the views a batch touched (step 3 of the module docs of `apply`): which
//! views, in which order, and what happens to one that cannot be built. `columns.rs`
//! checks a view's raw table; `build.rs` sends the DDL.

mod affected;
mod build;
mod columns;
mod withheld;
pub(in crate::apply) use withheld::withholding;

use std::collections::{BTreeSet, HashMap};

use super::{policy_barrier, Tx};
use crate::apply::sql::{canonical, dialect, view};
use crate::apply::{Applied, ApplyError};
use crate::batch::{Batch, DeadLetter, Origin};
use crate::config::Dialect;
use crate::event::{DataSource, Policy};

/// A view to build: its data source, the name its current view has, if any, and its raw
/// table's column types.
struct ToBuild<'d> {
    ds: &'d DataSource,
    old_view: Option<&'d str>,
    types: canonical::ColumnTypes,
}

/// What every view build of a batch shares.
struct Views<'b> {
    policies: &'b [Policy],
    batch: &'b Batch,
    changed_pol: &'b BTreeSet<String>,
}

const VIEW_EXISTS: &str = "SELECT 1 FROM pg_catalog.pg_class c \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind = 'v'";

const FORGET_VIEW: &str = "DELETE FROM immuta_system.view_state WHERE data_source_id = $1";
const REMEMBER_VIEW: &str = "INSERT INTO immuta_system.view_state (data_source_id, view_name, policy_ids) VALUES ($1, $2, $3)";

/// The statements a Redshift view rebuild sends besides the view DDL itself
/// (`statements` pins them).
#[cfg(test)]
pub(crate) fn redshift_statements() -> Vec<String> {
    vec![
        "SELECT definition FROM immuta_system.policy WHERE NOT deleted AND definition IS NOT NULL"
            .into(),
        VIEW_STATES.into(),
        dialect::of(Dialect::Redshift).columns_query().into(),
        VIEW_EXISTS.into(),
        FORGET_VIEW.into(),
        REMEMBER_VIEW.into(),
    ]
}

/// The Redshift statements of withholding (`statements` pins them).
#[cfg(test)]
pub(crate) fn withheld_statements() -> Vec<String> {
    withheld::redshift_statements()
}

const VIEW_STATES: &str =
    "SELECT data_source_id, view_name, policy_ids FROM immuta_system.view_state";

pub(crate) struct Rebuild<'a, 't> {
    tx: &'a Tx<'t>,
    dialect: Dialect,
    view_schema: &'a str,
    applied: &'a mut Applied,
    rejected: &'a mut Vec<DeadLetter>,
    /// PostgreSQL: the readable columns of every raw table this batch builds a view on,
    /// looked up in one query (schema, table → columns). None: ask per view.
    columns: Option<HashMap<(String, String), canonical::ColumnTypes>>,
    /// False while the policy barrier is closed: a view that does not exist yet is not
    /// created, its data source waits in `view_pending` (`policy_barrier`).
    may_create: bool,
    /// The barrier opens in this transaction: build every pending view too.
    flush_pending: bool,
    /// PostgreSQL with savepoints: views are built on the server, each in its own
    /// subtransaction, so a refused one is rolled back alone.
    subtransactions: bool,
    /// Data sources and policies of the batch whose records did not change their stored
    /// state (an equal version: a redriven dead letter, or a replay from a timestamp).
    resent: (BTreeSet<String>, BTreeSet<String>),
    /// No view DDL: every view this rebuild would create or drop is remembered in
    /// `view_stale` instead, for when no analyst's transaction holds it up (`blocked`).
    defer: bool,
    /// Policies of the batch too large to store, whose targets are withheld (`withheld`).
    withhold: BTreeSet<String>,
    /// Where each view statement carries its own lock bound (Redshift).
    ddl_bound: Option<crate::apply::txn::DdlBound>,
    /// Which data sources have a view of each name (`view_state`): a view is dropped
    /// only by the one whose it is, never by another that had the name before.
    holders: HashMap<String, BTreeSet<String>>,
}

fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ApplyError> {
    serde_json::from_str(text).map_err(ApplyError::Corrupt)
}

impl<'a, 't> Rebuild<'a, 't> {
    pub(crate) fn new(
        tx: &'a Tx<'t>,
        dialect: Dialect,
        view_schema: &'a str,
        applied: &'a mut Applied,
        rejected: &'a mut Vec<DeadLetter>,
    ) -> Self {
        Rebuild {
            tx,
            dialect,
            view_schema,
            applied,
            rejected,
            columns: None,
            may_create: true,
            flush_pending: false,
            subtransactions: dialect::of(dialect).savepoints(),
            resent: Default::default(),
            defer: false,
            withhold: BTreeSet::new(),
            ddl_bound: None,
            holders: HashMap::new(),
        }
    }

    /// Sets the lock bound around each view statement (`blocked::DdlBound`).
    pub(crate) fn bounding(mut self, bound: Option<crate::apply::txn::DdlBound>) -> Self {
        self.ddl_bound = bound;
        self
    }

    /// `ddl` with the lock bound around it, where statements carry their own.
    fn bounded(&self, ddl: String) -> String {
        match &self.ddl_bound {
            Some(bound) => bound.around(&ddl),
            None => ddl,
        }
    }

    /// Withholds the targets of these policies, too large to store (`withheld`).
    pub(crate) fn withholding(mut self, policies: BTreeSet<String>) -> Self {
        self.withhold = policies;
        self
    }

    /// Defers every view's DDL (see `defer`).
    pub(crate) fn deferring(mut self, on: bool) -> Self {
        self.defer = on;
        self
    }

    /// Records that changed nothing still build the views they lead to that do not exist:
    /// a view refused and dropped (its record dead-lettered) is built again when the
    /// record is redriven after the cause is fixed. Existing views are left alone, so a
    /// replay from a timestamp stays cheap.
    pub(crate) fn retrying(
        mut self,
        data_sources: BTreeSet<String>,
        policies: BTreeSet<String>,
    ) -> Self {
        self.resent = (data_sources, policies);
        self
    }

    /// Builds views one by one, without subtransactions (a refusal fails the batch).
    pub(crate) fn with_subtransactions(mut self, on: bool) -> Self {
        self.subtransactions = on && self.dialect().savepoints();
        self
    }

    /// Applies the policy barrier's answer for this transaction (`policy_barrier`).
    pub(crate) fn under_barrier(mut self, may_create: bool, opening: bool) -> Self {
        self.may_create = may_create;
        self.flush_pending = opening;
        self
    }

    async fn live<T: serde::de::DeserializeOwned>(
        &self,
        table: &str,
    ) -> Result<Vec<T>, ApplyError> {
        let definition = self.dialect().definition_text();
        let sql = format!("SELECT {definition} FROM immuta_system.{table} WHERE NOT deleted AND definition IS NOT NULL");
        let rows = self.tx.query(&sql, &[]).await?;
        rows.into_iter()
            .map(|r| parse(&r.try_get::<_, String>(0)?))
            .collect()
    }

    /// Rebuilds every view the changed data sources and policies touch, once each.
    pub(crate) async fn rebuild_views(
        &mut self,
        batch: &Batch,
        changed_ds: &BTreeSet<String>,
        changed_pol: &BTreeSet<String>,
    ) -> Result<(), ApplyError> {
        let stored = self.stored().await?;
        self.holders = stored.holders();
        let (mut affected, blamed) = self.affected(&stored, changed_ds, changed_pol).await?;
        let withheld = self
            .withheld(&stored, batch, changed_pol, &mut affected)
            .await?;
        let owners = stored.owners(&affected);
        let changed_pol = &blamed;
        self.prefetch_columns(affected.iter().filter_map(|id| stored.active(id)))
            .await?;
        let mut ready = Vec::new();
        for ds_id in &affected {
            let old_view = stored.built.get(ds_id).map(|(v, _)| v.as_str());
            let Some(ds) = stored.active(ds_id) else {
                self.drop(ds_id, old_view).await?;
                continue;
            };
            if let Some(policy) = withheld.by(ds) {
                tracing::warn!(data_source = %ds.id, %policy, "view withheld: a policy on it is too large to store");
                self.drop(ds_id, old_view).await?;
                continue;
            }
            if let Some(owner) = owners.get(ds.view_name.as_str()).filter(|o| **o != ds.id) {
                self.name_taken(ds, old_view, owner, batch).await?;
                continue;
            }
            match self.raw_columns(ds).await? {
                Err(problem) => {
                    let plan = self.plan(ds, &stored.policies, &canonical::declared(ds));
                    self.refused(ds, old_view, batch, &plan, changed_pol, &problem)
                        .await?
                }
                Ok(_) if old_view.is_none() && !self.may_create => {
                    self.remember_pending(&ds.id).await?
                }
                Ok(types) => ready.push(ToBuild {
                    ds,
                    old_view,
                    types,
                }),
            }
        }
        let views = Views {
            policies: &stored.policies,
            batch,
            changed_pol,
        };
        self.build_ready(ready, &views).await
    }

    /// A view that may not be created yet (the policy barrier): remembered, and built
    /// once the policies are read.
    async fn remember_pending(&mut self, ds_id: &str) -> Result<(), ApplyError> {
        let remember = self
            .tx
            .prepare_cached(self.dialect().remember_pending())
            .await?;
        self.tx.execute(&remember, &[&ds_id]).await?;
        Ok(())
    }

    /// Builds the views ready to build, or, while views are deferred (an analyst holds
    /// one), marks them stale for the warehouse watch.
    async fn build_ready(
        &mut self,
        mut ready: Vec<ToBuild<'_>>,
        views: &Views<'_>,
    ) -> Result<(), ApplyError> {
        if self.defer {
            for target in &ready {
                self.stale(&target.ds.id).await?;
            }
            return Ok(());
        }
        self.release_old_names(&mut ready).await?;
        if self.subtransactions {
            return self.build_together(&ready, views).await;
        }
        for target in &ready {
            self.build(target, views).await?;
        }
        Ok(())
    }

    /// Drops the view of one data source and forgets it, whatever its state (a held-up
    /// view the warehouse then refused on its own: `blocked`).
    pub(crate) async fn withdraw(&mut self, ds_id: &str) -> Result<(), ApplyError> {
        let stored = self.stored().await?;
        self.holders = stored.holders();
        let old_view = stored.built.get(ds_id).map(|(v, _)| v.as_str());
        self.drop(ds_id, old_view).await
    }

    /// Deferred: the data source's view is rebuilt later, from the state stored then
    /// (`Warehouse::rebuild_stale`).
    async fn stale(&mut self, ds_id: &str) -> Result<(), ApplyError> {
        let remember = self
            .tx
            .prepare_cached(self.dialect().remember_stale())
            .await?;
        self.tx.execute(&remember, &[&ds_id]).await?;
        self.applied.views_deferred += 1;
        Ok(())
    }

    fn dialect(&self) -> &'static dyn dialect::Sql {
        dialect::of(self.dialect)
    }

    fn plan(
        &self,
        ds: &DataSource,
        policies: &[Policy],
        types: &canonical::ColumnTypes,
    ) -> view::ViewPlan {
        view::plan_with(self.dialect(), ds, policies, self.view_schema, types)
    }

    fn replacement(&self, target: &ToBuild<'_>, plan: &view::ViewPlan) -> String {
        self.bounded(view::replacement(
            self.dialect(),
            self.view_schema,
            target.old_view,
            &target.ds.view_name,
            plan,
        ))
    }

    /// Drops the data source's view and forgets it. A relation of that name that is not a
    /// view was not made here (a refused build never leaves one): it is left alone, since
    /// `DROP VIEW` would fail the batch on it.
    async fn drop(&mut self, ds_id: &str, old_view: Option<&str>) -> Result<(), ApplyError> {
        if self.defer {
            return self.stale(ds_id).await;
        }
        let old_view = old_view.filter(|v| !self.held_by_other(v, ds_id));
        let old_view = match old_view {
            Some(v) => {
                let exists = self.tx.prepare_cached(VIEW_EXISTS).await?;
                let row = self.tx.query_opt(&exists, &[&self.view_schema, &v]).await?;
                row.map(|_| v)
            }
            None => None,
        };
        if let Some(v) = old_view {
            let ddl = self.bounded(view::drop_view(self.dialect(), self.view_schema, v));
            self.tx.batch_execute(&ddl).await?;
            self.applied.views_dropped += 1;
        }
        let forget = self.tx.prepare_cached(FORGET_VIEW).await?;
        self.tx.execute(&forget, &[&ds_id]).await?;
        Ok(())
    }

    /// Fail closed: drop the view rather than leave it with stale policies, and
    /// dead-letter what caused it.
    async fn refused(
        &mut self,
        ds: &DataSource,
        old_view: Option<&str>,
        batch: &Batch,
        plan: &view::ViewPlan,
        changed_pol: &BTreeSet<String>,
        problem: &str,
    ) -> Result<(), ApplyError> {
        let reason = format!(
            "view {} could not be built and was dropped: {problem}",
            plan.qualified_name
        );
        tracing::warn!(data_source = %ds.id, %reason, "view rebuild refused");
        // The data source owns its view's name here (`affected::Stored::owners`).
        self.drop(&ds.id, old_view.or(Some(&ds.view_name))).await?;
        self.blame(batch, &ds.id, &plan.policy_ids, changed_pol, &reason);
        Ok(())
    }

    /// Dead-letters the records of this batch that led to a refused view: the data
    /// source's own record if it changed, otherwise the changed policies on it.
    fn blame(
        &mut self,
        batch: &Batch,
        ds_id: &str,
        policy_ids: &[String],
        changed_pol: &BTreeSet<String>,
        reason: &str,
    ) {
        let mut push = |origin: &Origin, raw: &crate::batch::Raw| {
            if !self.rejected.iter().any(|r| r.origin == *origin) {
                self.rejected.push(DeadLetter {
                    stage: crate::record::Stage::Apply,
                    origin: origin.clone(),
                    reason: reason.to_string(),
                    raw: raw.clone(),
                });
            }
        };
        if let Some(u) = batch
            .data_sources
            .get(ds_id)
            .and_then(|p| p.upsert.as_ref())
        {
            push(&u.origin, &u.raw);
            return;
        }
        for id in policy_ids.iter().filter(|p| changed_pol.contains(*p)) {
            if let Some(u) = batch.policies.get(id).and_then(|p| p.upsert.as_ref()) {
                push(&u.origin, &u.raw);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redshift_reads_columns_of_local_and_external_tables_from_svv_columns() {
        let q = dialect::of(Dialect::Redshift).columns_query();
        assert!(q.contains("FROM pg_catalog.svv_columns"), "{q}");
        assert!(!q.contains("information_schema"), "{q}");
    }

    #[test]
    fn redshift_views_are_late_binding_and_postgres_views_are_barriers() {
        let ds = crate::apply::sql::examples::orders();
        let types = canonical::declared(&ds);
        let rs =
            view::plan_with(&dialect::redshift::Redshift, &ds, &[], "immuta", &types).create_sql;
        assert!(rs.ends_with("\nWITH NO SCHEMA BINDING"), "{rs}");
        let pg =
            view::plan_with(&dialect::postgres::Postgres, &ds, &[], "immuta", &types).create_sql;
        assert!(
            pg.contains("WITH (security_barrier)") && !pg.contains("SCHEMA BINDING"),
            "{pg}"
        );
    }
}
