//! policy-push: applies governance changes from Kafka to Redshift/PostgreSQL, exactly once.
//!
//! Data flow, one module per step:
//! [`config`] → [`consume`] (Kafka, [`codec`] for Avro) → [`batch`] (dedup per host) →
//! [`apply`] (warehouse transaction with offsets) — wired by [`pipeline`], observed through
//! [`telemetry`], driven by [`cli`]. [`offsets`] compares Kafka's end offsets with the
//! stored ones (lag, caught up); [`commands`] are the operator's other commands (replay,
//! dead letters, reach). [`simulate`] produces realistic workloads; [`bench`] measures
//! the whole pipeline under load.
//!
//! `apply` is read in three parts: `apply::setup` (what runs once, at bootstrap or
//! start), `apply::txn` (the steps of one batch's transaction) and `apply::sql` (policy
//! as SQL text, per dialect); `apply/mod.rs` runs a batch through them in order.

pub mod apply;
pub mod batch;
#[cfg(feature = "tooling")]
pub mod bench;
pub mod cli;
pub mod codec;
pub mod commands;
pub mod config;
pub mod consume;
#[cfg(feature = "tooling")]
pub mod demo;
pub mod error;
pub mod event;
pub mod offsets;
pub mod pipeline;
pub mod record;
pub mod simulate;
pub mod telemetry;

pub use config::Config;
pub use pipeline::run;
