//! The input topics' conditions are checked again on a timer: a topic that is not
//! compacted at start is reported, and its condition clears once it is compacted (here
//! created again so: Tansu has no AlterConfigs), without a restart.

mod common;

use std::time::Duration;

use common::*;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_compacted_after_start_clears_its_condition() {
    let broker = Broker::tansu().await;
    let mut db = Database::create().await;
    let topics = random_topics();
    let kafka = broker.client_config();
    broker
        .create_topics_compacted_but(&topics, &topics.impersonation, 1)
        .await;
    let mut config = common::config(&broker, &topics, &mut db, "watched", HOST);
    bootstrap(&config).await;
    let port = free_tcp_port();
    config.http.listen = format!("127.0.0.1:{port}");
    config.consumer.topic_check = Duration::from_millis(1000);
    let running = start(&config);
    let subject = format!("topic {}", topics.impersonation);
    wait_for("the topic reported", Duration::from_secs(30), || async {
        let c = &health_json(port).await["integrations"]["watched"]["conditions"][&subject];
        c["severity"] == "degraded"
            && c["error"]
                .as_str()
                .is_some_and(|e| e.contains("not compact"))
    })
    .await;
    // Tansu has no AlterConfigs: the topic is created again, compacted.
    let admin: AdminClient<DefaultClientContext> = kafka.create().unwrap();
    let deleted = admin
        .delete_topics(&[&topics.impersonation], &AdminOptions::new())
        .await
        .expect("delete the topic");
    assert!(deleted.iter().all(|r| r.is_ok()), "{deleted:?}");
    policy_push::consume::admin::ensure_topics(&kafka, &[(topics.impersonation.as_str(), true)], 1)
        .await
        .unwrap();
    wait_for("the condition clears", Duration::from_secs(30), || async {
        health_json(port).await["integrations"]["watched"]["conditions"][&subject].is_null()
    })
    .await;
    running.stop().await;
}
