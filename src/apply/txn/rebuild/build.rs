//! Sending the view DDL: PostgreSQL's set-based `build_views` calls, where a refused view
//! is rolled back alone on the server, and Redshift's one view per round trip.

use futures::stream::{FuturesOrdered, StreamExt};
use tokio_postgres::types::ToSql;
use tokio_postgres::Statement;

use super::{Rebuild, ToBuild, Views, FORGET_VIEW, REMEMBER_VIEW};
use crate::apply::sql::view;
use crate::apply::txn::refusal;
use crate::apply::ApplyError;

/// A chunk's bind parameters hold its views' full definitions; 100 keeps a call's message
/// at a few hundred kB while a batch of 500 views takes five round trips.
const VIEWS_PER_CALL: usize = 100;

const BUILD_VIEWS: &str = "SELECT item, error_code, error_message \
     FROM immuta_procedures.build_views($1::text[], $2::text[], $3::text[], $4::text[])";

fn policy_ids_json(plan: &view::ViewPlan) -> Result<String, ApplyError> {
    serde_json::to_string(&plan.policy_ids).map_err(|e| ApplyError::json("a view's policy ids", e))
}

impl Rebuild<'_, '_> {
    /// PostgreSQL: builds the views through `immuta_procedures.build_views`, up to
    /// [`VIEWS_PER_CALL`] per call, with [`crate::apply::txn::profiles::CALLS_IN_FLIGHT`] calls in flight so that
    /// PostgreSQL builds one chunk while the next is planned. One call per view spent a quarter of both
    /// processes' CPU on waking each other up. A view the warehouse refuses is rolled
    /// back on the server alone and reported; it is dropped here afterwards.
    pub(super) async fn build_together(
        &mut self,
        ready: &[ToBuild<'_>],
        views: &Views<'_>,
    ) -> Result<(), ApplyError> {
        let call = self.tx.prepare_cached(BUILD_VIEWS).await?;
        let mut chunks = ready.chunks(VIEWS_PER_CALL);
        let mut in_flight = FuturesOrdered::new();
        let mut refusals = Vec::new();
        let mut first = 0;
        loop {
            // Not `stream::buffered`, as `upsert_profiles` does: a stream whose futures
            // borrow `self` here makes the pipeline's task fail the `Send` check.
            while in_flight.len() < crate::apply::txn::profiles::CALLS_IN_FLIGHT {
                let Some(chunk) = chunks.next() else { break };
                in_flight.push_back(self.build_chunk(&call, chunk, first, views));
                first += chunk.len();
            }
            match in_flight.next().await {
                Some(refused) => refusals.extend(refused?),
                None => break,
            }
        }
        drop(in_flight);
        self.applied.views_rebuilt += ready.len() - refusals.len();
        for (index, reason) in refusals {
            let target = &ready[index];
            let plan = self.plan(target.ds, views.policies, &target.types);
            self.refused(
                target.ds,
                target.old_view,
                views.batch,
                &plan,
                views.changed_pol,
                &reason,
            )
            .await?;
        }
        Ok(())
    }

    /// One call of `build_views`; returns the refused views (index into the batch's
    /// views, reason).
    pub(super) async fn build_chunk(
        &self,
        call: &Statement,
        chunk: &[ToBuild<'_>],
        first: usize,
        views: &Views<'_>,
    ) -> Result<Vec<(usize, String)>, ApplyError> {
        let (mut ids, mut names, mut enforced, mut ddl) = (vec![], vec![], vec![], vec![]);
        for target in chunk {
            let plan = self.plan(target.ds, views.policies, &target.types);
            ids.push(target.ds.id.as_str());
            names.push(target.ds.view_name.as_str());
            enforced.push(policy_ids_json(&plan)?);
            ddl.push(self.replacement(target, &plan));
        }
        let rows = self
            .tx
            .query(call, &[&ids, &names, &enforced, &ddl])
            .await?;
        rows.iter()
            .map(|r| {
                let item: i32 = r.try_get(0)?;
                let index = usize::try_from(item - 1)
                    .ok()
                    .filter(|i| *i < chunk.len())
                    .ok_or_else(|| {
                        ApplyError::Unexpected(format!("build_views reported item {item}"))
                    })?;
                let reason =
                    refusal::refusal(&r.try_get::<_, String>(2)?, &r.try_get::<_, String>(1)?);
                Ok((first + index, reason))
            })
            .collect()
    }

    /// Redshift: one view per round trip, without a savepoint (Redshift has none): the
    /// checks before it are the only guard, and a refusal fails the batch.
    pub(super) async fn build(
        &mut self,
        target: &ToBuild<'_>,
        views: &Views<'_>,
    ) -> Result<(), ApplyError> {
        let plan = self.plan(target.ds, views.policies, &target.types);
        let ddl = self.replacement(target, &plan);
        let ids = policy_ids_json(&plan)?;
        let ds = target.ds;
        let forget = self.tx.prepare_cached(FORGET_VIEW).await?;
        let remember = self.tx.prepare_cached(REMEMBER_VIEW).await?;
        // One round trip for the DDL and the view's state: the three are pipelined, in
        // order. If the DDL fails, the state statements fail with it.
        let forget_params: [&(dyn ToSql + Sync); 1] = [&ds.id];
        let remember_params: [&(dyn ToSql + Sync); 3] = [&ds.id, &ds.view_name, &ids];
        let (built, forgot, remembered) = tokio::join!(
            self.tx.batch_execute(&ddl),
            self.tx.execute(&forget, &forget_params),
            self.tx.execute(&remember, &remember_params),
        );
        built?;
        forgot?;
        remembered?;
        self.applied.views_rebuilt += 1;
        Ok(())
    }
}
