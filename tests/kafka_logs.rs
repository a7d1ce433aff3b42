//! librdkafka's own log reaches policy-push's, under the `librdkafka` target and at the
//! level the filter asks for: an operator chasing slow fetches runs with
//! `RUST_LOG=info,librdkafka=debug` and `POLICY_PUSH_KAFKA_DEBUG=fetch`. Its own test
//! binary, because the subscriber that captures librdkafka's threads is process-wide.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// librdkafka's debug lines about fetching. They come from the running consumer:
    /// lines logged while a client is created pass whatever log level it is given after.
    fn fetch_debug_lines(&self) -> usize {
        let text = String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["target"] == "librdkafka" && v["level"] == "DEBUG")
            .filter(|v| {
                v["fields"]["facility"]
                    .as_str()
                    .is_some_and(|f| f.starts_with("FETCH"))
            })
            .count()
    }

    /// librdkafka's configuration warnings (facility CONFWARN), as text.
    fn config_warnings(&self) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["target"] == "librdkafka" && v["fields"]["facility"] == "CONFWARN")
            .map(|v| v.to_string())
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_debug_lines_reach_the_log_when_the_filter_asks_for_them() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .json()
        .with_env_filter("warn,librdkafka=debug")
        .with_writer(move || writer.clone())
        .init();
    let broker = Broker::mock();
    let (_db, mut config) = setup(&broker, 1, "kafka_logs").await;
    config.kafka.insert("debug".into(), "consumer,fetch".into());
    // Consumer-only: the dead-letter producer, built from the same `[kafka]` table, must
    // not be given it (it would warn at every start).
    config
        .kafka
        .insert("session.timeout.ms".into(), "6000".into());
    let running = start(&config);
    wait_for(
        "librdkafka's fetch debug lines in the log",
        Duration::from_secs(30),
        || async { captured.fetch_debug_lines() > 0 },
    )
    .await;
    running.stop().await;
    assert_eq!(captured.config_warnings(), Vec::<String>::new());
}
