//! policy-push: applies governance changes from Kafka to Redshift/PostgreSQL, exactly once.
//!
//! Data flow, one module per step:
//! [`config`] → [`consume`] (Kafka, [`codec`] for Avro) → [`batch`] (dedup per host) →
//! [`apply`] (warehouse transaction with offsets) — wired by [`pipeline`], observed through
//! [`telemetry`], driven by [`cli`]. [`simulate`] produces realistic workloads; [`bench`]
//! measures the whole pipeline under load.

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
