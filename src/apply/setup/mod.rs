//! What runs once, when an integration is bootstrapped or starts, never per batch:
//! `bootstrap.rs` runs the setup scripts in order (`postgres.rs` and `redshift.rs`, one
//! per dialect, and `roles.rs`, PostgreSQL's impersonation split between the setup user
//! and the system account), after `preflight.rs` has checked the privileges they need;
//! `row_security.rs` is Redshift's row-level security, created here and attached to each
//! view as it is built; `startup.rs` is what an integration checks and stores before its
//! first batch (the HASH salt, no unprotected view).
//!
//! Not here: the statements of a batch (`apply::txn`, `apply::sql::statements`) and the
//! view SQL (`apply::sql::view`), though the scripts create the procedures they call.

pub(crate) mod bootstrap;
pub mod postgres;
mod preflight;
pub mod redshift;
pub(crate) mod roles;
pub mod row_security;
pub(crate) mod startup;
