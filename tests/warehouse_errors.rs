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
    let text = err.to_string();
    assert!(
        text.contains("55P03") && text.contains("canceling statement due to lock timeout"),
        "{text}"
    );
    assert!(!text.ends_with("db error"), "{text}");
    hold.rollback().await.unwrap();
}
