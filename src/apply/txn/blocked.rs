//! An analyst's open transaction never holds policy changes back (SPEC §5).
//!
//! An analyst who runs `BEGIN; SELECT … FROM immuta.orders;` and stays idle holds a lock
//! on the view until the transaction ends, and `DROP VIEW` must wait for it; worse, every
//! other user's read of that view queues behind the waiting `DROP`. So:
//! - view DDL waits for a lock only `view_lock_timeout` (PostgreSQL `lock_timeout`,
//!   Redshift `statement_timeout`), so other readers never queue behind it for longer;
//! - a batch whose view DDL timed out is applied again at once without its view DDL
//!   (`Warehouse::apply`): profiles, impersonation, definitions and offsets commit, and
//!   the views it would have created or dropped are remembered in
//!   `immuta_system.view_stale`. Until they are rebuilt they show what they showed before
//!   the batch: the transaction that holds them up is reading them anyway;
//! - the integration's watch retries them ([`Warehouse::rebuild_stale`]), reports them on
//!   `/health` with the roles holding them up and since when, and, on PostgreSQL, when
//!   `terminate_blockers_after_ms` is set, terminates those sessions once they have held
//!   a rebuild up that long, through the setup user's
//!   `immuta_procedures.terminate_view_blockers` (`setup::roles`), which ends only
//!   non-superuser sessions other than policy-push's own that hold a lock on a view of
//!   the view schema.

use crate::error::Chain;
use std::sync::Mutex;
use std::time::Instant;

use super::{rebuild, Tx};
use crate::apply::sql::dialect;
use crate::apply::{Applied, ApplyError, Warehouse};
use crate::batch::Batch;

const STALE: &str = "SELECT data_source_id FROM immuta_system.view_stale";
const FORGET_STALE: &str = "DELETE FROM immuta_system.view_stale";
const FORGET_ONE_STALE: &str = "DELETE FROM immuta_system.view_stale WHERE data_source_id = $1";
/// The names of the views that stale data sources have now.
const STALE_VIEWS: &str = "SELECT s.view_name FROM immuta_system.view_state s \
     JOIN immuta_system.view_stale x ON x.data_source_id = s.data_source_id";

/// The Redshift statements of a deferred rebuild (`statements` pins them).
#[cfg(test)]
pub(crate) fn redshift_statements() -> Vec<String> {
    let d = dialect::of(crate::config::Dialect::Redshift);
    vec![
        STALE.into(),
        FORGET_STALE.into(),
        FORGET_ONE_STALE.into(),
        STALE_VIEWS.into(),
        d.bound_lock_waits(std::time::Duration::from_secs(5)),
        d.unbound_lock_waits().into(),
    ]
}

/// What sets and lifts the lock bound around each view statement, where the dialect
/// bounds them one by one (`dialect::Sql::bounds_each_ddl`).
#[derive(Debug, Clone)]
pub(crate) struct DdlBound {
    pub(crate) set: String,
    pub(crate) lift: &'static str,
}

impl DdlBound {
    /// `ddl` (statements ending in `;`) between the two.
    pub(crate) fn around(&self, ddl: &str) -> String {
        format!("{};\n{ddl}{};\n", self.set, self.lift)
    }
}

/// A session (or a prepared transaction, without a pid) that holds a lock on a view
/// whose rebuild waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocker {
    pub pid: Option<i32>,
    pub role: String,
    pub view: String,
}

impl std::fmt::Display for Blocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "role {} (pid {pid}) on view {}", self.role, self.view),
            None => write!(f, "{} on view {}", self.role, self.view),
        }
    }
}

/// Whether deferred views wait, and since when.
#[derive(Debug, Default)]
pub(crate) struct Stale(Mutex<StaleState>);

#[derive(Debug, Default)]
struct StaleState {
    /// `view_stale` has been read (at start) or written since.
    known: bool,
    since: Option<Instant>,
    /// Counts deferrals, so that a rebuild that started before one does not clear it.
    deferrals: u64,
}

impl Stale {
    fn with<T>(&self, f: impl FnOnce(&mut StaleState) -> T) -> T {
        match self.0.lock() {
            Ok(mut s) => f(&mut s),
            Err(p) => f(&mut p.into_inner()),
        }
    }
}

impl Warehouse {
    /// What the system account's sessions wait for, if they wait for a lock: "session
    /// pid P waits for a lock on R held by role X (pid Q)", where the dialect shows it.
    pub async fn lock_waits(&self) -> Result<Vec<String>, ApplyError> {
        let Some(query) = dialect::of(self.dialect()).lock_waits() else {
            return Ok(Vec::new());
        };
        let client = self.client().await?;
        let rows = client.query(query, &[]).await?;
        rows.iter()
            .map(|r| {
                let (pid, on, by, role): (i32, String, i32, String) =
                    (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
                Ok(format!(
                    "policy-push's session (pid {pid}) waits for a lock on {on} held by role {role} (pid {by})"
                ))
            })
            .collect()
    }

    /// Whether views wait to be rebuilt (`rebuild_stale`). Unknown before the start has
    /// read `view_stale`: then, yes.
    pub fn has_stale_views(&self) -> bool {
        self.stale.with(|s| !s.known || s.since.is_some())
    }

    /// Since when views have waited to be rebuilt, if they do.
    pub fn stale_since(&self) -> Option<Instant> {
        self.stale.with(|s| s.since)
    }

    pub(crate) fn views_deferred(&self, any: bool) {
        let now = Instant::now();
        self.stale.with(|s| {
            s.known = true;
            if any {
                s.deferrals += 1;
                s.since.get_or_insert(now);
            }
        });
    }

    /// Every view deferred before `deferrals` was counted has been rebuilt.
    fn views_rebuilt(&self, deferrals: u64) {
        self.stale.with(|s| {
            if s.deferrals == deferrals {
                s.since = None;
            }
        });
    }

    /// Reads at start whether views wait from an earlier run.
    pub(crate) async fn load_stale(&self, tx: &Tx<'_>) -> Result<(), ApplyError> {
        let any = tx.query_opt(&format!("{STALE} LIMIT 1"), &[]).await?;
        self.views_deferred(any.is_some());
        Ok(())
    }

    /// Rebuilds the views whose DDL was deferred, from the state stored now, in one
    /// transaction with the same locks and lock bound as a batch. Returns how many it
    /// rebuilt or dropped; `ApplyError::ViewsBlocked` when they are still held up. When
    /// the warehouse refuses one (Redshift has no savepoints to refuse it alone), they are
    /// rebuilt one by one, and a view refused on its own is dropped (fail closed) and
    /// logged: its records were committed before, as the barrier's pending views' are.
    pub async fn rebuild_stale(&self, group: &str) -> Result<usize, ApplyError> {
        self.started().await?;
        let deferrals = self.stale.with(|s| s.deferrals);
        let rebuilt = match self.rebuild_stale_in(group, None).await {
            Err(e) if e.refused_by_record() => self.rebuild_stale_each(group).await?,
            other => other?,
        };
        self.views_rebuilt(deferrals);
        Ok(rebuilt)
    }

    async fn rebuild_stale_each(&self, group: &str) -> Result<usize, ApplyError> {
        let client = self.client().await?;
        let ids: Vec<String> = client
            .query(STALE, &[])
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        drop(client);
        let mut done = 0;
        for id in ids {
            done += match self.rebuild_stale_in(group, Some(&id)).await {
                Err(e) if e.refused_by_record() => {
                    tracing::warn!(integration = %self.integration.name, data_source = %id, error = %Chain(&e),
                        "a held-up view the warehouse refuses is dropped");
                    self.withdraw_stale(&id).await?
                }
                other => other?,
            };
        }
        Ok(done)
    }

    /// The deferred views (`only` that one's), rebuilt in one transaction.
    async fn rebuild_stale_in(&self, group: &str, only: Option<&str>) -> Result<usize, ApplyError> {
        let d = self.dialect();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // The first lock, as in every batch: replay's reset waits for it.
        tx.batch_execute(dialect::of(d).lock_offsets()).await?;
        let may_create = self.barrier.allows_new_views(&tx, d, group).await?;
        let opening = may_create && !self.barrier.is_open();
        let bound = self.lock_and_bound_views(&tx, false).await?;
        let mut ids = std::collections::BTreeSet::new();
        for r in tx.query(STALE, &[]).await? {
            ids.insert(r.try_get::<_, String>(0)?);
        }
        ids.retain(|id| only.is_none_or(|o| o == id));
        let (mut applied, mut rejected) = (Applied::default(), Vec::new());
        let none = std::collections::BTreeSet::new();
        let view_schema = &self.integration.view_schema;
        rebuild::Rebuild::new(&tx, d, view_schema, &mut applied, &mut rejected)
            .under_barrier(may_create, opening)
            .bounding(bound)
            .rebuild_views(&Batch::default(), &ids, &none)
            .await
            .map_err(|e| self.blocked(e))?;
        forget_stale(&tx, only).await?;
        tx.commit().await?;
        if opening {
            self.barrier.opened();
        }
        Ok(applied.views_rebuilt + applied.views_dropped)
    }

    /// Drops the view of one deferred data source, which the warehouse refused to build.
    async fn withdraw_stale(&self, id: &str) -> Result<usize, ApplyError> {
        let d = self.dialect();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.batch_execute(dialect::of(d).lock_offsets()).await?;
        let bound = self.lock_and_bound_views(&tx, false).await?;
        let (mut applied, mut rejected) = (Applied::default(), Vec::new());
        let view_schema = &self.integration.view_schema;
        rebuild::Rebuild::new(&tx, d, view_schema, &mut applied, &mut rejected)
            .bounding(bound)
            .withdraw(id)
            .await
            .map_err(|e| self.blocked(e))?;
        forget_stale(&tx, Some(id)).await?;
        tx.commit().await?;
        Ok(applied.views_dropped)
    }

    /// Takes the lock every view-building transaction takes first, then bounds how long
    /// its view statements wait for locks (`view_lock_timeout`): for the rest of the
    /// transaction, or, where the dialect bounds each statement alone, through what this
    /// returns for `Rebuild::bounding`. A deferring rebuild sends no view statement.
    pub(crate) async fn lock_and_bound_views(
        &self,
        tx: &Tx<'_>,
        defer: bool,
    ) -> Result<Option<DdlBound>, ApplyError> {
        let sql = dialect::of(self.dialect());
        if let Some(lock) = sql.lock_views() {
            tx.batch_execute(lock).await?;
        }
        if defer {
            return Ok(None);
        }
        let bound = sql.bound_lock_waits(self.integration.view_lock_timeout());
        if sql.bounds_each_ddl() {
            return Ok(Some(DdlBound {
                set: bound,
                lift: sql.unbound_lock_waits(),
            }));
        }
        tx.batch_execute(&bound).await?;
        Ok(None)
    }

    /// `e` as `ViewsBlocked` when a bounded lock wait ended it.
    pub(crate) fn blocked(&self, e: ApplyError) -> ApplyError {
        let codes = dialect::of(self.dialect()).lock_wait_ended();
        match e {
            ApplyError::Db(db) if db.code().is_some_and(|c| codes.contains(&c.code())) => {
                ApplyError::ViewsBlocked(db)
            }
            other => other,
        }
    }

    /// The sessions holding locks on the views that wait to be rebuilt, where the
    /// warehouse lets the system account see them (PostgreSQL's `pg_locks`; Redshift
    /// shows other users' locks to superusers only, r_STV_LOCKS, r_SVV_TRANSACTIONS).
    pub async fn view_blockers(&self) -> Result<Vec<Blocker>, ApplyError> {
        let Some(query) = dialect::of(self.dialect()).view_blockers() else {
            return Ok(Vec::new());
        };
        let client = self.client().await?;
        let views = stale_views(&client).await?;
        let rows = client
            .query(query, &[&self.integration.view_schema, &views])
            .await?;
        rows.iter().map(blocker).collect()
    }

    /// Terminates the sessions that hold the waiting views and whose transactions have
    /// been open at least `held` (PostgreSQL; see the module docs); returns them.
    pub async fn terminate_view_blockers(
        &self,
        held: std::time::Duration,
    ) -> Result<Vec<Blocker>, ApplyError> {
        let Some(call) = dialect::of(self.dialect()).terminate_view_blockers() else {
            return Ok(Vec::new());
        };
        let client = self.client().await?;
        let views = stale_views(&client).await?;
        let held_ms = i64::try_from(held.as_millis()).unwrap_or(i64::MAX);
        let rows = client.query(call, &[&views, &held_ms]).await?;
        rows.iter().map(blocker).collect()
    }
}

/// Forgets the deferred views (`only` that one).
async fn forget_stale(tx: &Tx<'_>, only: Option<&str>) -> Result<(), ApplyError> {
    match only {
        None => tx.batch_execute(FORGET_STALE).await?,
        Some(id) => {
            tx.execute(FORGET_ONE_STALE, &[&id]).await?;
        }
    }
    Ok(())
}

async fn stale_views(client: &tokio_postgres::Client) -> Result<Vec<String>, ApplyError> {
    let rows = client.query(STALE_VIEWS, &[]).await?;
    Ok(rows
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?)
}

fn blocker(r: &tokio_postgres::Row) -> Result<Blocker, ApplyError> {
    Ok(Blocker {
        pid: r.try_get(0)?,
        role: r
            .try_get::<_, Option<String>>(1)?
            .unwrap_or_else(|| "?".into()),
        view: r.try_get(2)?,
    })
}
