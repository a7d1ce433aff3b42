//! Applying batches to a warehouse host (SPEC §3, §5).
//!
//! One batch is one transaction:
//! 1. advance `immuta_system.offsets` for every partition the batch covers, but only from
//!    the value this instance last saw (`UPDATE … WHERE next_offset = expected`). If another
//!    instance moved it (a rebalance this one has not heard of yet), the batch is *fenced*:
//!    rolled back and re-read from the stored offsets. This is what makes the effect
//!    exactly-once even with zombie consumers;
//! 2. call the version-guarded procedures: deletes before upserts. PostgreSQL profiles go
//!    as array parameters of set-based calls (about 1 MB of records each, pipelined);
//!    Redshift's are pipelined calls, one per profile;
//! 3. rebuild every view the batch touched, once each. A view whose raw table or columns
//!    are missing, or (PostgreSQL, rolled back alone on the server) that the warehouse refuses, is dropped
//!    (fail closed: never leave a view with stale policies) and the records that caused it
//!    are dead-lettered;
//! 4. optionally write the audit log;
//! 5. publish dead letters and wait for the broker's acknowledgement, then COMMIT.

//!
//! Where to look:
//! - this file: [`Warehouse`] and [`Warehouse::apply`], the batch transaction above, step
//!   by step; `error.rs` its errors, `connect.rs` connections, `stored.rs` what the
//!   consumer reads back (stored offsets, topic ids), `enforced.rs` what `explain` reads
//!   back (a user's profile, the definitions, the views' state);
//! - [`setup`]: what runs once, when an integration is bootstrapped or starts;
//! - [`txn`]: each step of the batch transaction (the fence, definitions, profiles,
//!   impersonation, audit, the view rebuild, the policy barrier, held-up views);
//! - [`sql`]: policy turned into SQL text (quoting, the view of a data source, each
//!   dialect's statements), with no connection in sight.

pub mod connect;
mod enforced;
mod error;
pub mod setup;
pub mod sql;
mod stored;
pub mod txn;

pub use enforced::Enforced;
pub use error::ApplyError;
pub use setup::bootstrap::{bootstrap_all, bootstrap_sql, case_sensitive, BootstrapError};
pub use txn::refusal::record_sqlstate;
pub use txn::{project, Blocker, ProfileRows};

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};

use crate::batch::{Batch, TopicPartition};
use crate::config::{Dialect, Integration};
use sql::dialect;
use txn::policy_barrier::PolicyBarrier;
use txn::{
    advance_offsets, apply_definitions, apply_impersonations, apply_profiles, rebuild, write_audit,
    Stale,
};

pub use crate::record::{DeadLetterSink, PublishError};

/// What a committed batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Procedure calls made (one per surviving change).
    pub changes: usize,
    pub views_rebuilt: usize,
    pub views_dropped: usize,
    /// Views whose DDL waited too long for an analyst's lock: left as they were and
    /// rebuilt later (`blocked`).
    pub views_deferred: usize,
    /// Records dead-lettered because the warehouse refused them.
    pub rejected: usize,
    /// New `next_offset` per partition.
    pub offsets: BTreeMap<TopicPartition, i64>,
}

pub struct Warehouse {
    pool: Pool,
    connector: connect::Connector,
    pg: tokio_postgres::Config,
    integration: Integration,
    database: String,
    barrier: PolicyBarrier,
    /// Set once `startup` has run.
    started: tokio::sync::OnceCell<()>,
    /// Whether views wait to be rebuilt (`blocked`).
    stale: Stale,
}

/// The entities of the batch whose upsert did not change their stored state.
fn unchanged_upserts<T>(
    entities: &crate::batch::Entities<T>,
    changed: &BTreeSet<String>,
) -> BTreeSet<String> {
    entities
        .iter()
        .filter(|(id, p)| p.upsert.is_some() && !changed.contains(*id))
        .map(|(id, _)| id.clone())
        .collect()
}

impl ApplyError {
    /// A connection could not be had: `detail` is what the settings make of it (a
    /// refused TLS certificate), `source` is the error itself.
    pub fn pool(
        detail: Option<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        ApplyError::Pool {
            detail,
            source: Some(source.into()),
        }
    }
}

impl Warehouse {
    pub fn new(integration: &Integration) -> Result<Self, crate::config::ConfigError> {
        let pg = integration.pg_config()?;
        let database = integration.database()?;
        let tls = integration.tls()?;
        let connector = connect::Connector::new(&tls, integration.password_source.clone())
            .map_err(|e| {
                crate::config::unusable(format!("integration.{}.sslrootcert", integration.name), e)
            })?;
        let mgr = Manager::from_connect(
            pg.clone(),
            connector.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let mut pool = Pool::builder(mgr);
        let commit = integration
            .synchronous_commit
            .unwrap_or(crate::config::SynchronousCommit::Off);
        if let Some(session) = dialect::of(integration.dialect).session(commit) {
            let session: std::sync::Arc<str> = session.into();
            pool = pool.post_create(deadpool_postgres::Hook::async_fn(move |client, _| {
                let session = session.clone();
                Box::pin(async move {
                    client
                        .batch_execute(&session)
                        .await
                        .map_err(deadpool_postgres::HookError::Backend)
                })
            }));
        }
        let pool = pool
            .max_size(integration.pool_size)
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(10)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| crate::config::unusable(format!("integration.{}", integration.name), e))?;
        Ok(Warehouse {
            pool,
            connector,
            pg,
            integration: integration.clone(),
            database,
            barrier: PolicyBarrier::default(),
            started: tokio::sync::OnceCell::new(),
            stale: Stale::default(),
        })
    }

    /// Whether new views may go live yet (`txn::policy_barrier`).
    pub fn barrier(&self) -> &PolicyBarrier {
        &self.barrier
    }

    /// Builds the views waiting for the policy barrier if the policies have caught up;
    /// returns whether the barrier is open. For when no batch comes to do it.
    pub async fn open_views_if_caught_up(&self, group: &str) -> Result<bool, ApplyError> {
        if self.barrier.is_open() {
            return Ok(true);
        }
        self.started().await?;
        let d = self.dialect();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // The first lock, as in every batch: replay's reset waits for it (advance_offsets).
        tx.batch_execute(dialect::of(d).lock_offsets()).await?;
        if !self.barrier.allows_new_views(&tx, d, group).await? {
            return Ok(false);
        }
        let bound = self.lock_and_bound_views(&tx, false).await?;
        if let Some(settings) = dialect::of(d).before_view_builds() {
            tx.batch_execute(settings).await?;
        }
        // Nothing in this transaction to blame for a view that cannot be built: the
        // records were applied before; the view is dropped and the refusal logged.
        let (mut applied, mut rejected) = (Applied::default(), Vec::new());
        let none = BTreeSet::new();
        rebuild::Rebuild::new(
            &tx,
            d,
            &self.integration.view_schema,
            &mut applied,
            &mut rejected,
        )
        .under_barrier(true, true)
        .bounding(bound)
        .rebuild_views(&Batch::default(), &none, &none)
        .await
        .map_err(|e| self.blocked(e))?;
        tx.commit().await?;
        self.barrier.opened();
        tracing::info!(
            views = applied.views_rebuilt,
            "policies caught up: pending views built"
        );
        Ok(true)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, ApplyError> {
        self.pool.get().await.map_err(|e| match &e {
            deadpool_postgres::PoolError::Backend(_) => {
                ApplyError::pool(self.connector.explain(&self.pg), e)
            }
            _ => ApplyError::pool(None, e),
        })
    }

    fn dialect(&self) -> Dialect {
        self.integration.dialect
    }

    /// What one definition or profile value set may hold: the dialect's limit (a
    /// Redshift varchar), or a lower one the integration sets (`max_stored_bytes`, which
    /// tests the Redshift path on PostgreSQL).
    fn stored_limit(&self) -> Option<usize> {
        let dialect = dialect::of(self.dialect()).stored_limit();
        match (self.integration.max_stored_bytes, dialect) {
            (Some(set), Some(d)) => Some(set.min(d)),
            (set, d) => set.or(d),
        }
    }

    /// Whether a refused record can be rolled back alone: PostgreSQL, unless
    /// `savepoints = false` (Redshift has none).
    fn savepoints(&self) -> bool {
        dialect::of(self.dialect()).savepoints() && self.integration.savepoints
    }

    /// A setting as a pooled session sees it (`SHOW`), for diagnostics.
    pub async fn session_setting(&self, name: &str) -> Result<String, ApplyError> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT pg_catalog.current_setting($1)", &[&name])
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Applies one batch in one transaction; see the module docs. When its view DDL waits
    /// too long for a lock an analyst's open transaction holds, the batch is applied
    /// again at once with its view DDL deferred (`blocked`), so that nothing else it
    /// holds (a revoked subscription, an impersonation) waits on that analyst.
    pub async fn apply<D: DeadLetterSink>(
        &self,
        group: &str,
        batch: &Batch,
        dlq: &D,
    ) -> Result<Applied, ApplyError> {
        self.started().await?;
        match self.apply_once(group, batch, dlq, false).await {
            Err(ApplyError::ViewsBlocked(e)) => {
                tracing::warn!(integration = %self.integration.name, error = %crate::error::chain(&e),
                    "view DDL held up by another session's lock; applying the batch without it and rebuilding those views later");
                let applied = self.apply_once(group, batch, dlq, true).await?;
                self.views_deferred(applied.views_deferred > 0);
                Ok(applied)
            }
            other => other,
        }
    }

    async fn apply_once<D: DeadLetterSink>(
        &self,
        group: &str,
        batch: &Batch,
        dlq: &D,
        defer_views: bool,
    ) -> Result<Applied, ApplyError> {
        let d = self.dialect();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let mut applied = Applied::default();
        advance_offsets(&tx, d, group, batch, &mut applied).await?;
        let mut rejected = Vec::new();
        let limit = self.stored_limit();
        apply_profiles(&tx, d, batch, limit, &mut rejected).await?;
        rejected.extend(apply_impersonations(&tx, self.savepoints(), batch).await?);
        let ds = apply_definitions(
            &tx,
            "data_source",
            &batch.data_sources,
            limit,
            &mut rejected,
        )
        .await?;
        let pol = apply_definitions(&tx, "policy", &batch.policies, limit, &mut rejected).await?;
        let (changed_ds, mut changed_pol) = (ds.changed, pol.changed);
        // A policy withheld for its size affects its views whether or not it was stored,
        // and so does any record of a policy that withholds views now.
        changed_pol.extend(pol.withheld.iter().cloned());
        if !batch.policies.is_empty() {
            let withholding = rebuild::withholding(&tx).await?;
            changed_pol.extend(
                batch
                    .policies
                    .keys()
                    .filter(|id| withholding.contains(*id))
                    .cloned(),
            );
        }
        // A batch that only moves offsets (the last step of an isolation) may be the one
        // that brings the policies up to the barrier's ends.
        let definitions = !batch.data_sources.is_empty()
            || !batch.policies.is_empty()
            || self.barrier.waits_on(batch.partitions.keys());
        let may_create = !definitions || self.barrier.allows_new_views(&tx, d, group).await?;
        let opening = definitions && may_create && !self.barrier.is_open();
        let resent_ds = unchanged_upserts(&batch.data_sources, &changed_ds);
        let resent_pol = unchanged_upserts(&batch.policies, &changed_pol);
        let resending = !resent_ds.is_empty() || !resent_pol.is_empty();
        if !changed_ds.is_empty() || !changed_pol.is_empty() || opening || resending {
            let bound = self.lock_and_bound_views(&tx, defer_views).await?;
            if let Some(settings) = dialect::of(d).before_view_builds() {
                tx.batch_execute(settings).await?;
            }
            let view_schema = &self.integration.view_schema;
            rebuild::Rebuild::new(&tx, d, view_schema, &mut applied, &mut rejected)
                .under_barrier(may_create, opening)
                .with_subtransactions(self.savepoints())
                .retrying(resent_ds, resent_pol)
                .withholding(pol.withheld)
                .deferring(defer_views)
                .bounding(bound)
                .rebuild_views(batch, &changed_ds, &changed_pol)
                .await
                .map_err(|e| self.blocked(e))?;
            if !defer_views && !dialect::of(d).bounds_each_ddl() {
                tx.batch_execute(dialect::of(d).unbound_lock_waits())
                    .await?;
            }
        }
        applied.changes = batch.ops();
        if self.integration.audit {
            write_audit(&tx, group, batch).await?;
        }
        let mut letters = batch.dead_letters.clone();
        applied.rejected = rejected.len();
        letters.extend(rejected);
        if !letters.is_empty() {
            dlq.publish(&letters)
                .await
                .map_err(ApplyError::DeadLetter)?;
        }
        tx.commit().await?;
        if opening {
            self.barrier.opened();
        }
        Ok(applied)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_error_kind_is_listed() {
        use super::ApplyError::*;
        let errors = [
            Pool {
                detail: None,
                source: None,
            },
            Fenced(vec![]),
            Timeout(std::time::Duration::ZERO),
            DeadLetter(super::PublishError {
                message: "x".into(),
                refused: true,
                intolerable: false,
                source: None,
            }),
            Corrupt(serde_json::from_str::<u8>("x").unwrap_err()),
            Encode {
                what: "x".into(),
                source: "x".into(),
            },
            Unexpected("x".into()),
            Refused("x".into()),
            Config(crate::config::unusable("x", "y")),
            Unprotected(vec![]),
        ];
        for e in errors {
            assert!(
                crate::telemetry::names::WAREHOUSE_ERROR_KINDS.contains(&e.kind()),
                "{}",
                e.kind()
            );
        }
        assert!(crate::telemetry::names::WAREHOUSE_ERROR_KINDS.contains(&"sql"));
    }

    #[test]
    fn case_sensitivity_settings_are_read_as_redshift_prints_them() {
        for on in ["on", "ON", "true", " on\n"] {
            assert!(super::case_sensitive(on), "{on:?}");
        }
        for off in ["off", "false", ""] {
            assert!(!super::case_sensitive(off), "{off:?}");
        }
    }
}
