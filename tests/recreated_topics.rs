//! A partition whose identity or contents changed under the stored offsets is never read
//! past silently (`consume::identity`). The broker loses its data: a new one comes up
//! with the same topics and fewer records than the stored offsets say, then more. The
//! partition stops, /health says what was observed and the remedy, a metric counts it,
//! its lag is unknown rather than zero, nothing of it is applied; `offsets --accept`
//! takes it as it is and applying goes on.

mod common;

use std::time::Duration;

use common::*;
use policy_push::simulate::Record;

fn profiles(users: &[String], version: i64) -> Vec<Record> {
    users
        .iter()
        .map(|u| profile(u, version, &[], &[], &[]))
        .collect()
}

/// Runs the first broker's records into the warehouse, then points the config at a new
/// broker of the same topics holding `then` records of new users.
async fn lose_the_broker(
    first: &Broker,
    second: &Broker,
    then: usize,
) -> (Database, policy_push::Config, Vec<String>) {
    let (db, mut config) = setup(first, 1, "moved").await;
    let users: Vec<String> = (0..20).map(|i| format!("u{i:02}")).collect();
    publish(&config, &profiles(&users, 1)).await;
    let running = start(&config);
    wait_applied(&db, &config, users.len()).await;
    running.stop().await;
    second.create_topics(&config.topics, 1).await;
    config
        .kafka
        .insert("bootstrap.servers".into(), second.bootstrap());
    let newcomers: Vec<String> = (0..then).map(|i| format!("n{i:02}")).collect();
    publish(&config, &profiles(&newcomers, 1)).await;
    (db, config, users)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_topic_stops_its_partition_before_and_after_it_grows_past() {
    let (first, second) = (Broker::mock(), Broker::mock());
    let (db, mut config, _) = lose_the_broker(&first, &second, 5).await;
    let port = free_tcp_port();
    config.http.listen = format!("127.0.0.1:{port}");
    config.http.lag_refresh = Duration::from_millis(300);
    let running = start(&config);
    let subject = format!("partition {}/0", config.topics.profiles);
    wait_for(
        "the partition is stopped and reported",
        Duration::from_secs(30),
        || async {
            let h = health_json(port).await;
            let c = &h["integrations"]["moved"]["conditions"][&subject];
            c["severity"] == "failing"
                && c["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("deleted and created again"))
                && c["hint"]
                    .as_str()
                    .is_some_and(|e| e.contains("replay") && e.contains("--accept"))
        },
    )
    .await;
    assert_eq!(health_state(port, "moved").await, "failing");
    wait_for(
        "the lag is unknown, not zero",
        Duration::from_secs(10),
        || async {
            let h = health_json(port).await;
            h["integrations"]["moved"]["lag"].is_null()
                && h["integrations"]["moved"]["lag_unknown"].is_string()
        },
    )
    .await;
    assert!(
        metric_sum(
            port,
            "policy_push_partition_anomalies_total{integration=\"moved\",kind=\"recreated\"}"
        )
        .await
            >= 1.0
    );
    assert!(
        metric_sum(
            port,
            "policy_push_consumer_lag_unknown{integration=\"moved\""
        )
        .await
            >= 1.0
    );

    // The new topic grows past the stored offset: still nothing of it is applied.
    let later: Vec<String> = (0..30).map(|i| format!("m{i:02}")).collect();
    publish(&config, &profiles(&later, 1)).await;
    wait_for(
        "every record of the new topic read and held",
        Duration::from_secs(30),
        || async {
            metric_sum(
                port,
                "policy_push_records_held_total{integration=\"moved\"}",
            )
            .await
                >= 35.0
        },
    )
    .await;
    assert_eq!(stored_offset(&db, &config.topics.profiles).await, 20);

    // The operator takes the topic as it is: applying goes on from the stored offset.
    assert_eq!(
        accept_the_flagged_partition(&config, "moved").await,
        "recreated"
    );
    wait_for(
        "the accepted partition applies on",
        Duration::from_secs(30),
        || async { stored_offset(&db, &config.topics.profiles).await == 35 },
    )
    .await;
    wait_for("/health clears", Duration::from_secs(10), || async {
        health_json(port).await["integrations"]["moved"]["conditions"][&subject].is_null()
    })
    .await;
    running.stop().await;
}

/// Tansu reports a partition's end below the true end (the first offset of its last
/// batch, plus one): a stored offset above that end is no finding when the record just
/// before it exists. After Tansu loses its data, with no topic id stored (a host from
/// before they were), the watermarks alone find a stored offset past the new end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_tansu_an_under_reported_end_is_no_finding_and_a_lost_log_is() {
    let (first, second) = (Broker::tansu().await, Broker::tansu().await);
    let (db, config) = setup(&first, 1, "moved").await;
    let users: Vec<String> = (0..20).map(|i| format!("u{i:02}")).collect();
    publish(&config, &profiles(&users, 1)).await;
    let mut watched = config.clone();
    let port = free_tcp_port();
    watched.http.listen = format!("127.0.0.1:{port}");
    watched.http.lag_refresh = Duration::from_millis(300);
    let running = start(&watched);
    wait_applied(&db, &config, users.len()).await;
    wait_for("a known lag of zero", Duration::from_secs(30), || async {
        health_json(port).await["integrations"]["moved"]["lag"] == 0
    })
    .await;
    let h = health_json(port).await;
    assert!(
        h["integrations"]["moved"]["conditions"]
            .as_object()
            .is_none_or(|c| !c.keys().any(|k| k.starts_with("partition"))),
        "{h}"
    );
    running.stop().await;

    db.client()
        .await
        .batch_execute("DELETE FROM immuta_system.topic_ids")
        .await
        .unwrap();
    second.create_topics(&config.topics, 1).await;
    watched
        .kafka
        .insert("bootstrap.servers".into(), second.bootstrap());
    drop(first);
    let newcomers: Vec<String> = (0..3).map(|i| format!("n{i:02}")).collect();
    publish(&watched, &profiles(&newcomers, 1)).await;
    let running = start(&watched);
    let subject = format!("partition {}/0", config.topics.profiles);
    wait_for(
        "the partition is stopped and reported",
        Duration::from_secs(60),
        || async {
            let c = &health_json(port).await["integrations"]["moved"]["conditions"][&subject];
            c["error"]
                .as_str()
                .is_some_and(|e| e.contains("past the partition's end"))
        },
    )
    .await;
    assert_eq!(stored_offset(&db, &config.topics.profiles).await, 20);
    running.stop().await;
}

/// The offsets fence refuses a held partition whatever an instance has in flight (one
/// that has not heard of the hold, or a batch built before it): nothing is committed
/// until the operator releases it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_instance_commits_a_batch_of_a_held_partition() {
    let env = Direct::new("").await;
    env.apply(&[profile("u1", 1, &[], &[], &[])]).await;
    let admin = env.db.client().await;
    admin
        .batch_execute(
            "INSERT INTO immuta_system.partition_holds (consumer_group, topic, partition, observed) \
             VALUES ('direct', 't', 0, 'held by the test')",
        )
        .await
        .unwrap();
    let records = [profile("u2", 1, &[], &[], &[])];
    let start = env.next_offset();
    let refused = env
        .warehouse
        .apply("direct", &env.batch(&records), &env.dead)
        .await;
    assert!(
        matches!(refused, Err(policy_push::apply::ApplyError::Fenced(_))),
        "{refused:?}"
    );
    assert_eq!(stored_offset(&env.db, "t").await, start);

    admin
        .batch_execute("DELETE FROM immuta_system.partition_holds")
        .await
        .unwrap();
    env.warehouse
        .apply(
            "direct",
            &env.batch_at(&records, start, Some(start)),
            &env.dead,
        )
        .await
        .unwrap();
    assert_eq!(stored_offset(&env.db, "t").await, start + 1);
}
