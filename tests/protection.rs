//! Nothing is readable before it is protected: `run` refuses to apply while any view in
//! policy-push's schemas lacks its protection (on PostgreSQL a security barrier, on
//! Redshift row-level security), and says so on /health with the remedy.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_refuses_while_a_view_is_unprotected() {
    let broker = Broker::mock();
    let (db, mut config) = setup(&broker, 1, "guarded").await;
    // A view made in the view schema without a security barrier: an analyst's predicate
    // over it could see rows its WHERE drops.
    db.as_role(&db.system_role)
        .await
        .batch_execute(
            "CREATE VIEW immuta.sneaky AS SELECT 1 AS one; GRANT SELECT ON immuta.sneaky TO PUBLIC",
        )
        .await
        .expect("the system account may create in its schema");
    let port = free_tcp_port();
    config.http.listen = format!("127.0.0.1:{port}");
    let running = start(&config);
    wait_for(
        "the integration stops, naming the view",
        Duration::from_secs(30),
        || async {
            let h = health_json(port).await;
            let stopped = &h["integrations"]["guarded"]["conditions"]["stopped"];
            stopped["error"]
                .as_str()
                .is_some_and(|e| e.contains("immuta.sneaky"))
                && stopped["hint"]
                    .as_str()
                    .is_some_and(|e| e.contains("policy-push bootstrap"))
        },
    )
    .await;
    assert_eq!(health_state(port, "guarded").await, "failing");
    let err = running
        .stop_result()
        .await
        .expect_err("run reports the stop");
    assert!(err.to_string().contains("immuta.sneaky"), "{err}");

    // Without it, the integration starts.
    db.as_role(&db.system_role)
        .await
        .batch_execute("DROP VIEW immuta.sneaky")
        .await
        .unwrap();
    let warehouse = policy_push::apply::Warehouse::new(&config.integrations[0]).unwrap();
    warehouse.started().await.expect("every view is protected");
}
