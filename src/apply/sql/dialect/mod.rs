//! The dialect seam: every statement and fragment whose SQL differs between PostgreSQL
//! and Amazon Redshift, behind one interface, [`Sql`], with the view fragments of
//! [`ViewDialect`] as its supertrait. `postgres.rs` and `redshift.rs` here are the two
//! implementations, so what is Redshift-specific in a batch, a view or a replay is read in
//! one file, beside the Developer Guide rule it follows.
//!
//! Two things stay outside: bootstrap (the scripts in `apply/setup/postgres.rs`,
//! `apply/setup/roles.rs` and `apply/setup/redshift.rs`, chosen in
//! `apply/setup/bootstrap.rs`, with the checks of `apply/setup/preflight.rs`), and how
//! profiles reach the warehouse (one array per call on PostgreSQL, one flattened call per
//! profile on Redshift, in `apply/txn/profiles.rs`), which differ in what they do, not
//! only in their SQL.

pub mod postgres;
pub mod redshift;

use super::view::ViewDialect;
use crate::config::Dialect;

pub trait Sql: ViewDialect + Sync {
    /// Taken first when views are built outside a batch: replay's reset waits for it.
    fn lock_offsets(&self) -> &'static str;
    /// What every batch takes before it fences its offsets, if anything.
    fn batch_lock(&self) -> Option<&'static str>;
    /// What replay takes to hold every batch off while it resets or rewinds.
    fn hold_off_batches(&self) -> &'static str;
    /// What serializes the policy barrier's decisions (`txn::policy_barrier`).
    fn lock_pending(&self) -> &'static str;
    /// Creates a partition's offsets row unless it exists: ($1 group, $2 topic,
    /// $3 partition, $4 next offset).
    fn offsets_insert(&self) -> &'static str;
    /// The fence: moves a partition's offset only from the one this batch started at
    /// ($5), and never while the partition is held (`consume::identity`): no instance
    /// commits a batch of a held partition, whatever it has in flight.
    fn offsets_update(&self) -> &'static str;
    /// Parks a data source whose view waits for the policy barrier ($1).
    fn remember_pending(&self) -> &'static str;
    /// Remembers a data source whose view's DDL was deferred ($1, `blocked`).
    fn remember_stale(&self) -> &'static str;
    /// What serializes the transactions that build views, taken before they read the
    /// definitions, so that none builds a view from state another has already replaced.
    fn lock_views(&self) -> Option<&'static str>;
    /// Bounds, until lifted or the transaction ends, how long a statement waits for a lock.
    fn bound_lock_waits(&self, limit: std::time::Duration) -> String;
    /// Lifts that bound again.
    fn unbound_lock_waits(&self) -> &'static str;
    /// Whether the bound is set around each view statement alone (it also bounds the
    /// statement's own run time) rather than once for every statement of a rebuild.
    fn bounds_each_ddl(&self) -> bool;
    /// SQLSTATEs of a statement that `bound_lock_waits` stopped.
    fn lock_wait_ended(&self) -> &'static [&'static str];
    /// The sessions holding locks on views $2 (names) of schema $1: pid, role, view; where
    /// the system account may see other sessions' locks.
    fn view_blockers(&self) -> Option<&'static str>;
    /// The lock waits of the system account's own sessions in this database: waiting
    /// pid, what it waits for, blocking pid and role; where the dialect shows them.
    fn lock_waits(&self) -> Option<&'static str>;
    /// Terminates the sessions holding locks on views $1 (names) of the view schema and
    /// returns them as `view_blockers` does, where the dialect can.
    fn terminate_view_blockers(&self) -> Option<&'static str>;
    /// The columns of raw table $1.$2 the system account may read: name and catalog type
    /// (`canonical`; NULL for a type outside the system catalog).
    fn columns_query(&self) -> &'static str;
    /// The stored definition column, as text.
    fn definition_text(&self) -> &'static str;
    /// Tables whose rows are the integration's state (cleared by replay).
    fn state_tables(&self) -> &'static [&'static str];
    /// What one definition or profile value set may hold (None: no limit).
    fn stored_limit(&self) -> Option<usize>;
    /// Whether a refused statement can be rolled back alone.
    fn savepoints(&self) -> bool;
    /// Settings for the rest of a transaction that builds views.
    fn before_view_builds(&self) -> Option<&'static str>;
    /// The columns of many raw tables at once ($1 schemas, $2 tables, as arrays), where
    /// the dialect can pass arrays: schema, table, column, catalog type.
    fn columns_of_tables(&self) -> Option<&'static str>;
    /// Settings of every pooled session, if any.
    fn session(&self, commit: crate::config::SynchronousCommit) -> Option<String>;
    /// A column name the dialect's views add, which a raw table therefore may not have.
    fn reserved_column(&self) -> Option<&'static str>;
    /// The views of `immuta_system` and the view schema ($1): schema, name, and whether
    /// the dialect's protection is in place where the catalog says so in the same row
    /// (NULL otherwise: `protected_views_query`).
    fn views_query(&self) -> &'static str;
    /// The views of those schemas whose protection is in place, where another catalog
    /// view says so: schema, name.
    fn protected_views_query(&self) -> Option<&'static str>;
}

/// The dialect's implementation.
pub fn of(d: Dialect) -> &'static dyn Sql {
    match d {
        Dialect::Postgres => &postgres::Postgres,
        Dialect::Redshift => &redshift::Redshift,
    }
}
