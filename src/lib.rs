//! policy-push: applies governance changes from Kafka to Redshift/PostgreSQL, exactly once.
//!
//! Data flow, one module per step:
//! [`config`] → [`consume`] (Kafka, [`codec`] for Avro) → [`batch`] (dedup per host) →
//! [`apply`] (warehouse transaction with offsets) — wired by [`pipeline`], observed through
//! [`telemetry`], driven by [`cli`]. [`offsets`] compares Kafka's end offsets with the
//! stored ones (lag, caught up); [`retry`] is the one backoff rule and the waits between
//! attempts that end at a stop; [`commands`] are the operator's other commands (replay,
//! dead letters, reach). [`simulate`] produces realistic workloads. The demo and the
//! load harness are not here: the binary builds them on this library's public API.
//!
//! `apply` is read in three parts: `apply::setup` (what runs once, at bootstrap or
//! start), `apply::txn` (the steps of one batch's transaction) and `apply::sql` (policy
//! as SQL text, per dialect); `apply/mod.rs` runs a batch through them in order.

pub mod apply;
pub mod batch;
pub mod cli;
pub mod codec;
pub mod commands;
pub mod config;
pub mod consume;
pub mod error;
pub mod event;
pub mod offsets;
pub mod pipeline;
pub mod record;
pub mod retry;
pub mod simulate;
pub mod telemetry;

pub use config::Config;
pub use pipeline::run;
