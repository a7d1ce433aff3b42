//! Rebuilding the views a batch touched (step 3 of the module docs of `apply`): which
//! views, in which order, and what happens to one that cannot be built. `columns.rs`
//! checks a view's raw table; `build.rs` sends the DDL.

mod build;
mod columns;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{barrier, dialect, view, Applied, ApplyError, Tx};
use crate::batch::{Batch, DeadLetter, Origin};
use crate::config::Dialect;
use crate::event::{DataSource, Policy, Status};

/// A view to build: its data source and the name its current view has, if any.
struct ToBuild<'d> {
    ds: &'d DataSource,
    old_view: Option<&'d str>,
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
pub(super) fn redshift_statements() -> Vec<String> {
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

const VIEW_STATES: &str =
    "SELECT data_source_id, view_name, policy_ids FROM immuta_system.view_state";

pub(super) struct Rebuild<'a, 't> {
    tx: &'a Tx<'t>,
    dialect: Dialect,
    view_schema: &'a str,
    applied: &'a mut Applied,
    rejected: &'a mut Vec<DeadLetter>,
    /// PostgreSQL: the readable columns of every raw table this batch builds a view on,
    /// looked up in one query (schema, table → columns). None: ask per view.
    columns: Option<HashMap<(String, String), BTreeSet<String>>>,
    /// False while the policy barrier is closed: a view that does not exist yet is not
    /// created, its data source waits in `view_pending` (`barrier`).
    may_create: bool,
    /// The barrier opens in this transaction: build every pending view too.
    flush_pending: bool,
    /// PostgreSQL with savepoints: views are built on the server, each in its own
    /// subtransaction, so a refused one is rolled back alone.
    subtransactions: bool,
    /// Data sources and policies of the batch whose records did not change their stored
    /// state (an equal version: a redriven dead letter, or a replay from a timestamp).
    resent: (BTreeSet<String>, BTreeSet<String>),
}

fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ApplyError> {
    serde_json::from_str(text).map_err(ApplyError::Corrupt)
}

impl<'a, 't> Rebuild<'a, 't> {
    pub(super) fn new(
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
        }
    }

    /// Records that changed nothing still build the views they lead to that do not exist:
    /// a view refused and dropped (its record dead-lettered) is built again when the
    /// record is redriven after the cause is fixed. Existing views are left alone, so a
    /// replay from a timestamp stays cheap.
    pub(super) fn retrying(
        mut self,
        data_sources: BTreeSet<String>,
        policies: BTreeSet<String>,
    ) -> Self {
        self.resent = (data_sources, policies);
        self
    }

    /// Builds views one by one, without subtransactions (a refusal fails the batch).
    pub(super) fn with_subtransactions(mut self, on: bool) -> Self {
        self.subtransactions = on && self.dialect().savepoints();
        self
    }

    /// Applies the policy barrier's answer for this transaction (`barrier`).
    pub(super) fn under_barrier(mut self, may_create: bool, opening: bool) -> Self {
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
    pub(super) async fn rebuild_views(
        &mut self,
        batch: &Batch,
        changed_ds: &BTreeSet<String>,
        changed_pol: &BTreeSet<String>,
    ) -> Result<(), ApplyError> {
        let policies: Vec<Policy> = self.live("policy").await?;
        let sources: BTreeMap<String, DataSource> = self
            .live::<DataSource>("data_source")
            .await?
            .into_iter()
            .map(|d| (d.id.clone(), d))
            .collect();
        let mut built: HashMap<String, (String, Vec<String>)> = HashMap::new();
        for r in self.tx.query(VIEW_STATES, &[]).await? {
            let ids: Vec<String> = parse(&r.try_get::<_, String>(2)?)?;
            built.insert(r.try_get(0)?, (r.try_get(1)?, ids));
        }

        let mut affected: BTreeSet<String> = changed_ds.clone();
        if self.flush_pending {
            for r in self.tx.query(barrier::PENDING, &[]).await? {
                affected.insert(r.try_get(0)?);
            }
            self.tx.batch_execute(barrier::FORGET_PENDING).await?;
        }
        for (ds_id, (_, policy_ids)) in &built {
            if policy_ids.iter().any(|p| changed_pol.contains(p)) {
                affected.insert(ds_id.clone());
            }
        }
        for p in policies.iter().filter(|p| changed_pol.contains(&p.id)) {
            affected.extend(
                sources
                    .values()
                    .filter(|d| view::targets(p, d))
                    .map(|d| d.id.clone()),
            );
        }
        let active = |id: &String| sources.get(id).filter(|d| d.status == Status::Active);
        let unbuilt = |id: &String| !built.contains_key(id) && active(id).is_some();
        let (resent_ds, resent_pol) = std::mem::take(&mut self.resent);
        affected.extend(resent_ds.into_iter().filter(unbuilt));
        let mut blamed = changed_pol.clone();
        for p in policies.iter().filter(|p| resent_pol.contains(&p.id)) {
            let targets: Vec<String> = sources
                .values()
                .filter(|d| view::targets(p, d) && unbuilt(&d.id))
                .map(|d| d.id.clone())
                .collect();
            if !targets.is_empty() {
                blamed.insert(p.id.clone());
            }
            affected.extend(targets);
        }
        let changed_pol = &blamed;
        self.prefetch_columns(affected.iter().filter_map(active))
            .await?;
        let mut ready = Vec::new();
        for ds_id in affected {
            let old_view = built.get(&ds_id).map(|(v, _)| v.as_str());
            let Some(ds) = active(&ds_id) else {
                self.drop(&ds_id, old_view).await?;
                continue;
            };
            match self.missing_columns(ds).await? {
                Some(problem) => {
                    let plan = self.plan(ds, &policies);
                    self.refused(ds, old_view, batch, &plan, changed_pol, &problem)
                        .await?
                }
                None if old_view.is_none() && !self.may_create => {
                    let remember = self
                        .tx
                        .prepare_cached(self.dialect().remember_pending())
                        .await?;
                    self.tx.execute(&remember, &[&ds.id]).await?;
                }
                None => ready.push(ToBuild { ds, old_view }),
            }
        }
        let views = Views {
            policies: &policies,
            batch,
            changed_pol,
        };
        if self.subtransactions {
            return self.build_together(&ready, &views).await;
        }
        for target in &ready {
            self.build(target, &views).await?;
        }
        Ok(())
    }

    fn dialect(&self) -> &'static dyn dialect::Sql {
        dialect::of(self.dialect)
    }

    fn plan(&self, ds: &DataSource, policies: &[Policy]) -> view::ViewPlan {
        view::plan_with(self.dialect(), ds, policies, self.view_schema)
    }

    fn replacement(&self, target: &ToBuild<'_>, plan: &view::ViewPlan) -> String {
        view::replacement(
            self.dialect(),
            self.view_schema,
            target.old_view,
            &target.ds.view_name,
            plan,
        )
    }

    /// Drops the data source's view and forgets it. A relation of that name that is not a
    /// view was not made here (a refused build never leaves one): it is left alone, since
    /// `DROP VIEW` would fail the batch on it.
    async fn drop(&mut self, ds_id: &str, old_view: Option<&str>) -> Result<(), ApplyError> {
        let old_view = match old_view {
            Some(v) => {
                let exists = self.tx.prepare_cached(VIEW_EXISTS).await?;
                let row = self.tx.query_opt(&exists, &[&self.view_schema, &v]).await?;
                row.map(|_| v)
            }
            None => None,
        };
        if let Some(v) = old_view {
            self.tx
                .batch_execute(&view::drop_view(self.dialect(), self.view_schema, v))
                .await?;
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
        assert!(q.contains("FROM svv_columns"), "{q}");
        assert!(!q.contains("information_schema"), "{q}");
    }

    #[test]
    fn redshift_views_are_late_binding_and_postgres_views_are_barriers() {
        let ds = crate::apply::examples::orders();
        let rs = view::plan_with(&dialect::redshift::Redshift, &ds, &[], "immuta").create_sql;
        assert!(rs.ends_with("\nWITH NO SCHEMA BINDING"), "{rs}");
        let pg = view::plan_with(&view::Postgres, &ds, &[], "immuta").create_sql;
        assert!(
            pg.contains("WITH (security_barrier)") && !pg.contains("SCHEMA BINDING"),
            "{pg}"
        );
    }
}
