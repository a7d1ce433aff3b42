//! Test harness, by concern: `warehouse` (real PostgreSQL databases and login roles),
//! `broker` (a real Kafka protocol implementation and topics), `pipeline` (a run in the
//! test's process), `events` (record builders), `direct` (applying without Kafka), `http`
//! (/health and /metrics), `analyst` (planted look-alikes of built-ins), `server` and
//! `tls` (servers of a test's own). Here: names, free ports and waits on conditions with
//! deadlines, the one way tests wait.
#![allow(dead_code, unused_imports)]

pub mod analyst;
pub mod broker;
pub mod direct;
pub mod events;
pub mod http;
pub mod pipeline;
pub mod server;
/// The Tansu launcher the load harness uses too.
#[path = "../../src/tooling/tansu.rs"]
pub mod tansu;
pub mod tls;
pub mod warehouse;

pub use analyst::*;
pub use broker::*;
pub use direct::*;
pub use events::*;
pub use http::*;
pub use pipeline::*;
pub use warehouse::*;

use std::time::{Duration, Instant};

pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{:012x}", fastrand::u64(..) & 0xffff_ffff_ffff)
}

/// Polls `check` until it holds or the deadline passes (then panics with `what`).
pub async fn wait_for<F, Fut>(what: &str, deadline: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A TCP port nobody listens on now.
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
