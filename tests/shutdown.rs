//! SIGTERM while the warehouse hangs mid-batch: the pipeline stops within
//! `batch.shutdown_timeout_ms`, not after `batch.apply_timeout_ms`, and the abandoned
//! batch moved no stored offset (it is re-read by the next owner).

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_a_hanging_warehouse() {
    let broker = Broker::mock();
    let (db, mut config) = setup(&broker, 1, "stop").await;
    config.batch.apply_timeout = std::time::Duration::from_millis(120_000);
    config.batch.shutdown_timeout = std::time::Duration::from_millis(2_000);
    let running = start(&config);
    publish(&config, &[profile("alice", 1, &[], &[], &[])]).await;
    wait_applied(&db, &config, 1).await;

    // The warehouse hangs: every batch's first statement waits for this lock.
    let admin = db.client().await;
    admin
        .batch_execute("BEGIN; LOCK TABLE immuta_system.offsets IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    publish(&config, &[profile("bob", 1, &[], &[], &[])]).await;
    let watch = db.client().await;
    let waiting = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = '{}' AND wait_event_type = 'Lock'",
        db.system_role
    );
    wait_for(
        "a batch waiting on the lock",
        Duration::from_secs(30),
        || {
            let (watch, waiting) = (&watch, &waiting);
            async move {
                rows(watch, waiting)
                    .await
                    .is_ok_and(|r| r != vec![vec![Some("0".to_string())]])
            }
        },
    )
    .await;

    // Well within apply_timeout (120 s): shutdown_timeout (2 s) and leaving the group.
    let stopped = running.stop_within(Duration::from_secs(30)).await;
    admin.batch_execute("ROLLBACK").await.unwrap();
    assert!(stopped, "the pipeline waited for the hanging batch");
    let group = config.integrations[0].consumer_group(&config.consumer.group_prefix);
    assert_eq!(
        stored_total(&watch, &group).await,
        1,
        "only alice's batch committed"
    );
}
