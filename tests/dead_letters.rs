//! A dead letter always fits the topic, and a dead-letter topic that refuses writes is
//! reported on /health with the remedy instead of being retried silently.

mod common;

use std::time::Duration;

use common::*;
use policy_push::event::Status;
use rdkafka::types::RDKafkaRespErr;

const RAW: &str = "CREATE SCHEMA raw; CREATE TABLE raw.t (id int); INSERT INTO raw.t VALUES (1);";

fn good(db: &Database) -> policy_push::simulate::Record {
    raw_t(db, 1, &[("id", &[])], &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_with_a_huge_bad_identifier_is_dead_lettered_with_a_short_reason() {
    let broker = Broker::mock();
    let (db, config) = setup(&broker, 1, "big").await;
    db.client().await.batch_execute(RAW).await.unwrap();
    // 900 kB: with the whole value quoted in its reason, the dead letter would be twice
    // the producer's 1 MB limit.
    let huge = "x".repeat(900_000) + "-";
    let bad = data_source(Ds {
        id: "ds-huge",
        version: 1,
        host: HOST,
        database: &db.name,
        schema: "raw",
        table: &huge,
        view: "huge",
        columns: &[("id", &[])],
        tags: &[],
        status: Status::Active,
    });
    let records = vec![bad, good(&db)];
    publish(&config, &records).await;
    let running = start(&config);
    wait_applied(&db, &config, records.len()).await;
    running.stop().await;
    let letters = read_dead_letters(&config, 1).await;
    let reason = &letters[0].reason;
    assert!(reason.len() < 1024, "{} bytes of reason", reason.len());
    assert!(
        reason.contains("DataSource.table") && reason.contains("(900001 bytes)"),
        "{reason}"
    );
    assert!(
        letters[0].value.as_ref().is_some_and(|v| v.len() > 900_000),
        "the original value is kept"
    );
}

async fn health(port: u16) -> String {
    http_get(port, "/health")
        .await
        .map(|(_, body)| body)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_topic_that_refuses_writes_fails_the_integration_with_the_remedy() {
    let broker = Broker::mock();
    let Broker::Mock(mock) = &broker else {
        eprintln!("needs the mock cluster's fault injection; skipped against KAFKA_BOOTSTRAP");
        return;
    };
    let (db, mut config) = setup(&broker, 1, "dlq").await;
    db.client().await.batch_execute(RAW).await.unwrap();
    let port = free_tcp_port();
    config.http.listen = format!("127.0.0.1:{port}");
    mock.topic_error(
        &config.topics.dead_letter,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
    )
    .unwrap();
    let records = vec![invalid_view(&db, HOST), good(&db)];
    publish(&config, &records).await;
    let running = start(&config);
    wait_for(
        "/health to report the refusing dead-letter topic",
        Duration::from_secs(60),
        || async {
            let h = health(port).await;
            h.contains("\"state\":\"failing\"") && h.contains("dead-letter topic refuses writes")
        },
    )
    .await;
    let (status, _) = http_get(port, "/ready").await.unwrap();
    assert_eq!(status, 503);
    mock.topic_error(
        &config.topics.dead_letter,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR,
    )
    .unwrap();
    wait_applied(&db, &config, records.len()).await;
    wait_for("healthy again", Duration::from_secs(30), || async {
        health(port).await.contains("\"state\":\"healthy\"")
    })
    .await;
    running.stop().await;
    let letters = read_dead_letters(&config, 1).await;
    assert!(
        letters[0].reason.contains("view_name"),
        "{}",
        letters[0].reason
    );
}
