//! Health tells the truth within `http.failing_after_ms` whatever stalls the pipeline: a
//! lock on the offsets table, under which nothing commits while records wait, is failing
//! with the lock and its holder named.
//!
//! Not here: a broker restarted on the same address with its topics recreated, which is
//! `tests/broker_restart.rs` (two mock clusters behind one address); the rule for a group
//! that holds no partition is unit-tested in `offsets::watch`.

mod common;

use std::time::Duration;

use common::*;
use policy_push::simulate::Record;

fn profiles(prefix: &str, n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| profile(&format!("{prefix}{i:02}"), 1, &[], &[], &[]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_offsets_table_is_a_stall_with_its_holder_named() {
    let broker = Broker::mock();
    let (db, mut config) = setup(&broker, 2, "stall").await;
    let port = free_tcp_port();
    config.http.listen = format!("127.0.0.1:{port}");
    config.http.failing_after = Duration::from_millis(3000);
    config.http.lag_refresh = Duration::from_millis(300);
    publish(&config, &profiles("u", 50)).await;
    let running = start(&config);
    wait_applied(&db, &config, 50).await;

    let mut admin = db.client().await;
    let lock = admin.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE immuta_system.offsets IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    publish(&config, &profiles("n", 50)).await;
    wait_for(
        "the stall is failing, with its reason",
        Duration::from_secs(30),
        || async {
            let h = health_json(port).await;
            let stalled = &h["integrations"]["stall"]["conditions"]["stalled"];
            h["integrations"]["stall"]["state"] == "failing"
                && stalled["error"].as_str().is_some_and(|e| {
                    e.contains("records wait")
                        && e.contains("immuta_system.offsets")
                        && e.contains("held by role postgres")
                })
        },
    )
    .await;
    lock.rollback().await.unwrap();
    wait_applied(&db, &config, 100).await;
    wait_for("the stall clears", Duration::from_secs(30), || async {
        health_json(port).await["integrations"]["stall"]["conditions"]["stalled"].is_null()
    })
    .await;
    running.stop().await;
}
