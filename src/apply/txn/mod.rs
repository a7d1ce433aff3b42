//! What runs inside one batch's transaction, one file per step of the list in the docs of
//! `apply` (whose `Warehouse::apply_once` calls them in order): `fence.rs` moves the
//! stored offsets first, `profiles.rs` (with `profile_rows.rs`, PostgreSQL's binary
//! records), `impersonation.rs` and `definitions.rs` call the version-guarded
//! procedures, `rebuild/` rebuilds the views they touched, `audit.rs` writes the audit
//! log. `refusal.rs` decides which refusals blame a record. Two states outlive a batch:
//! `policy_barrier.rs`, the cold-start barrier no view goes live before (the pipeline's
//! warehouse watch only polls it), and `blocked.rs`, the views an analyst's open
//! transaction held up.
//!
//! Not here: what runs once at start or bootstrap (`apply::setup`) and the SQL text itself
//! (`apply::sql`); these files send statements, they do not write them.

mod audit;
pub(crate) mod blocked;
mod definitions;
mod fence;
mod impersonation;
pub mod policy_barrier;
mod profile_rows;
mod profiles;
pub(crate) mod rebuild;
pub(crate) mod refusal;

pub(crate) use audit::write_audit;
pub use blocked::Blocker;
pub(crate) use blocked::{DdlBound, Stale};
pub(crate) use definitions::{apply_definitions, position};
pub(crate) use fence::advance_offsets;
pub(crate) use impersonation::apply_impersonations;
pub use profile_rows::ProfileRows;
pub(crate) use profiles::apply_profiles;
pub use profiles::project;

/// The batch's transaction, as every step takes it.
pub(crate) type Tx<'a> = deadpool_postgres::Transaction<'a>;
