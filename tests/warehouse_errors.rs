//! A warehouse error says what the warehouse said: SQLSTATE, message (and detail and
//! hint where there are), not tokio-postgres's bare "db error".

mod common;

use common::*;

#[tokio::test]
async fn a_warehouse_error_carries_its_sqlstate_and_message() {
    let env = Direct::new("").await;
    let warehouse = env.warehouse_with("lock_timeout", "'200ms'").await;
    warehouse.started().await.unwrap();
    let mut admin = env.db.client().await;
    let hold = admin.transaction().await.unwrap();
    hold.batch_execute("LOCK TABLE immuta_system.offsets IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let batch = env.batch(&[profile("someone", 1, &[], &[], &[])]);
    let err = warehouse
        .apply("direct", &batch, &env.dead)
        .await
        .expect_err("the lock times out");
    let text = policy_push::error::chain(&err);
    assert!(
        text.starts_with("warehouse error: ERROR 55P03: canceling statement due to lock timeout"),
        "{text}"
    );
    // Each cause once: the variant names it only as its source.
    assert_eq!(text.matches("lock timeout").count(), 1, "{text}");
    assert!(!text.contains("db error"), "{text}");
    hold.rollback().await.unwrap();
}
