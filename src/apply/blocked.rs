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
//!   `immuta_procedures.terminate_view_blockers` (`pg_roles`), which ends only
//!   non-superuser sessions other than policy-push's own that hold a lock on a view of
//!   the view schema.

use std::sync::Mutex;
use std::time::Instant;

use super::{dialect, rebuild, Applied, ApplyError, Batch, Warehouse};

const STALE: &str = "SELECT data_source_id FROM immuta_system.view_stale";
const FORGET_STALE: &str = "DELETE FROM immuta_system.view_stale";
/// The names of the views that stale data sources have now.
const STALE_VIEWS: &str = "SELECT s.view_name FROM immuta_system.view_state s \
     JOIN immuta_system.view_stale x ON x.data_source_id = s.data_source_id";

/// The Redshift statements of a deferred rebuild (`statements` pins them).
#[cfg(test)]
pub(super) fn redshift_statements() -> Vec<String> {
    vec![STALE.into(), FORGET_STALE.into(), STALE_VIEWS.into()]
}

/// A session that holds a lock on a view whose rebuild waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocker {
    pub pid: i32,
    pub role: String,
    pub view: String,
}

impl std::fmt::Display for Blocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "role {} (pid {}) on view {}",
            self.role, self.pid, self.view
        )
    }
}

/// Whether deferred views wait, and since when.
#[derive(Debug, Default)]
pub(super) struct Stale(Mutex<StaleState>);

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
    /// Whether views wait to be rebuilt (`rebuild_stale`). Unknown before the start has
    /// read `view_stale`: then, yes.
    pub fn has_stale_views(&self) -> bool {
        self.stale.with(|s| !s.known || s.since.is_some())
    }

    /// Since when views have waited to be rebuilt, if they do.
    pub fn stale_since(&self) -> Option<Instant> {
        self.stale.with(|s| s.since)
    }

    pub(super) fn views_deferred(&self, any: bool) {
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
    pub(super) async fn load_stale(&self, tx: &super::Tx<'_>) -> Result<(), ApplyError> {
        let any = tx.query_opt(&format!("{STALE} LIMIT 1"), &[]).await?;
        self.views_deferred(any.is_some());
        Ok(())
    }

    /// Rebuilds the views whose DDL was deferred, from the state stored now, in one
    /// transaction with the same locks and lock bound as a batch. Returns how many it
    /// rebuilt or dropped; `ApplyError::ViewsBlocked` when they are still held up.
    pub async fn rebuild_stale(&self, group: &str) -> Result<usize, ApplyError> {
        self.started().await?;
        let deferrals = self.stale.with(|s| s.deferrals);
        let d = self.dialect();
        let sql = dialect::of(d);
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // The first lock, as in every batch: replay's reset waits for it.
        tx.batch_execute(sql.lock_offsets()).await?;
        let may_create = self.barrier.allows_new_views(&tx, d, group).await?;
        let opening = may_create && !self.barrier.is_open();
        self.lock_and_bound_views(&tx).await?;
        let mut ids = std::collections::BTreeSet::new();
        for r in tx.query(STALE, &[]).await? {
            ids.insert(r.try_get::<_, String>(0)?);
        }
        let (mut applied, mut rejected) = (Applied::default(), Vec::new());
        let none = std::collections::BTreeSet::new();
        let view_schema = &self.integration.view_schema;
        rebuild::Rebuild::new(&tx, d, view_schema, &mut applied, &mut rejected)
            .under_barrier(may_create, opening)
            .rebuild_views(&Batch::default(), &ids, &none)
            .await
            .map_err(|e| self.blocked(e))?;
        tx.batch_execute(FORGET_STALE).await?;
        tx.commit().await?;
        if opening {
            self.barrier.opened();
        }
        self.views_rebuilt(deferrals);
        Ok(applied.views_rebuilt + applied.views_dropped)
    }

    /// Takes the lock every view-building transaction takes first, then bounds how long
    /// its statements wait for locks (`view_lock_timeout`).
    pub(super) async fn lock_and_bound_views(&self, tx: &super::Tx<'_>) -> Result<(), ApplyError> {
        let sql = dialect::of(self.dialect());
        if let Some(lock) = sql.lock_views() {
            tx.batch_execute(lock).await?;
        }
        let bound = sql.bound_lock_waits(self.integration.view_lock_timeout());
        tx.batch_execute(&bound).await?;
        Ok(())
    }

    /// `e` as `ViewsBlocked` when a bounded lock wait ended it.
    pub(super) fn blocked(&self, e: ApplyError) -> ApplyError {
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

    /// Terminates the sessions that hold the waiting views (PostgreSQL; see the module
    /// docs); returns them.
    pub async fn terminate_view_blockers(&self) -> Result<Vec<Blocker>, ApplyError> {
        let Some(call) = dialect::of(self.dialect()).terminate_view_blockers() else {
            return Ok(Vec::new());
        };
        let client = self.client().await?;
        let views = stale_views(&client).await?;
        let rows = client.query(call, &[&views]).await?;
        rows.iter().map(blocker).collect()
    }
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
