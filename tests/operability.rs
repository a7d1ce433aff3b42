//! Operable at 3 a.m. (issue 20): health that counts time, errors.tolerance, dead letters
//! that keep their record's headers and can be redriven, the offsets command, and the
//! compaction guard.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use policy_push::commands::dead_letters::{self, Filter};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// A TCP front for the local PostgreSQL that first accepts connections and never answers
/// them (a warehouse that is unreachable without refusing), then, once `open` is set,
/// forwards new ones.
async fn black_hole_then_forward(port: u16, open: Arc<AtomicBool>) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind the warehouse front");
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            if !open.load(Ordering::SeqCst) {
                held.push(inbound);
                continue;
            }
            // Connections held silent until now are closed: their clients see an error.
            held.clear();
            tokio::spawn(async move {
                if let Ok(mut out) = tokio::net::TcpStream::connect("127.0.0.1:5432").await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
            });
        }
    });
}

/// An integration on its own database next to `config`'s first, same topics.
async fn second(
    broker: &Broker,
    config: &policy_push::Config,
    name: &str,
    host: &str,
) -> (Database, policy_push::config::Integration) {
    let mut db = Database::create().await;
    let c = common::config(broker, &config.topics, &mut db, name, host);
    bootstrap(&c).await;
    let mut i = c.integrations[0].clone();
    i.name = name.into();
    (db, i)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_warehouse_is_failing_after_the_configured_time_and_recovers() {
    let broker = Broker::mock();
    let (db, mut config) = setup(&broker, 2, "up").await;
    let (far, mut unreachable) = second(&broker, &config, "far", HOST).await;
    let front = free_tcp_port();
    let open = Arc::new(AtomicBool::new(false));
    black_hole_then_forward(front, open.clone()).await;
    unreachable.url = far.url.replace(":5432/", &format!(":{front}/"));
    config.integrations.push(unreachable);
    let port = free_tcp_port();
    config.http.listen = format!("127.0.0.1:{port}");
    config.http.failing_after = std::time::Duration::from_millis(3000);
    config.http.lag_refresh = std::time::Duration::from_millis(200);
    let records = vec![profile("alice", 1, &[], &[], &[])];
    publish(&config, &records).await;
    let running = start(&config);
    wait_applied(&db, &config, records.len()).await;
    wait_for(
        "the unreachable host to be failing",
        Duration::from_secs(30),
        || async { health_state(port, "far").await == "failing" },
    )
    .await;
    let h = health_json(port).await;
    assert_eq!(h["integrations"]["up"]["state"], "healthy", "{h}");
    wait_for(
        "the unreachable host's lag from what Kafka knows, not zero",
        Duration::from_secs(30),
        || async { health_json(port).await["integrations"]["far"]["lag"] == 1 },
    )
    .await;
    assert!(
        h["integrations"]["far"]["hint"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{h}"
    );
    assert_eq!(http_get(port, "/ready").await.map(|r| r.0), Some(503));
    let (_, metrics) = http_get(port, "/metrics").await.unwrap();
    assert!(
        metrics.contains("policy_push_last_commit_timestamp_seconds{integration=\"up\"}"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("policy_push_last_commit_timestamp_seconds{integration=\"far\"}"),
        "a host that never committed has no last commit"
    );
    let version = format!(
        "policy_push_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    assert!(metrics.contains(&version), "{metrics}");

    open.store(true, Ordering::SeqCst);
    let client = far.client().await;
    let group = format!("{}.far", config.consumer.group_prefix);
    wait_for(
        "the host to apply once its warehouse is back",
        Duration::from_secs(90),
        || async { stored_total(&client, &group).await >= records.len() as i64 },
    )
    .await;
    wait_for(
        "the host to be healthy again",
        Duration::from_secs(30),
        || async { health_state(port, "far").await == "healthy" },
    )
    .await;
    assert_eq!(http_get(port, "/ready").await.map(|r| r.0), Some(200));
    running.stop().await;
}

const RAW: &str = "CREATE SCHEMA raw; CREATE TABLE raw.t (id int); INSERT INTO raw.t VALUES (1);";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_tolerance_none_stops_only_the_integration_that_meets_a_poison_record() {
    let broker = Broker::mock();
    let (strict_db, mut config) = setup(&broker, 1, "strict").await;
    let (lenient_db, lenient) = second(&broker, &config, "lenient", "warehouse-b.example").await;
    config.integrations.push(lenient);
    for db in [&strict_db, &lenient_db] {
        db.client().await.batch_execute(RAW).await.unwrap();
    }
    config.errors.tolerance.data_sources = policy_push::config::Tolerance::None;
    let port = free_tcp_port();
    config.http.listen = format!("127.0.0.1:{port}");
    let mut records = vec![raw_t(&strict_db, 1, &[("id", &[])], &[])];
    let mut b = raw_t(&lenient_db, 1, &[("id", &[])], &[]);
    if let Some(policy_push::event::Event::DataSource(ds)) = b.value.as_mut() {
        ds.host = "warehouse-b.example".into();
        ds.id = "ds-b".into();
    }
    b.key = "ds-b".into();
    records.push(b.clone());
    records.push(invalid_view(&strict_db, HOST));
    publish(&config, &records).await;
    let running = start(&config);
    wait_for(
        "the strict host to stop",
        Duration::from_secs(60),
        || async {
            let h = health_json(port).await;
            h["integrations"]["strict"]["conditions"]["stopped"]["error"]
                .as_str()
                .is_some_and(|e| e.contains("errors.tolerance = none") && e.contains("view_name"))
        },
    )
    .await;
    assert_eq!(health_state(port, "strict").await, "failing");
    assert_eq!(http_get(port, "/ready").await.map(|r| r.0), Some(503));
    // The other integration carries on: it applies what comes after.
    let mut later = b.clone();
    if let Some(policy_push::event::Event::DataSource(ds)) = later.value.as_mut() {
        ds.version = 2;
        ds.view_name = "t2".into();
    }
    publish(&config, &[later]).await;
    let lenient_client = lenient_db.client().await;
    wait_for(
        "the lenient host to apply its records",
        Duration::from_secs(60),
        || async {
            rows(
                &lenient_client,
                "SELECT 1 FROM pg_views WHERE schemaname = 'immuta' AND viewname = 't2'",
            )
            .await
            .is_ok_and(|r| r.len() == 1)
        },
    )
    .await;
    assert_eq!(health_state(port, "lenient").await, "healthy");
    // The poison record was neither dead-lettered nor stepped over.
    let letters = dead_letters::read(&config, &Filter::default())
        .await
        .unwrap();
    assert!(letters.is_empty(), "{letters:?}");
    let group = format!("{}.strict", config.consumer.group_prefix);
    assert!(stored_total(&strict_db.client().await, &group).await < 3);
    let result = running.stop_result().await;
    assert!(
        result
            .as_ref()
            .is_err_and(|e| e.to_string().contains("strict") && !e.to_string().contains("lenient")),
        "the exit status says which integration stopped: {result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_keep_their_record_and_a_redrive_applies_them_once_fixed() {
    let broker = Broker::mock();
    let (db, config) = setup(&broker, 1, "redrive").await;
    // No raw.t yet: the warehouse refuses the data source's view.
    let ds = raw_t(&db, 1, &[("id", &[])], &[]);
    let codec = policy_push::codec::Codec::embedded().unwrap();
    let value = codec.encode(ds.value.as_ref().unwrap()).unwrap();
    let producer: FutureProducer = policy_push::pipeline::kafka_config(&config)
        .create()
        .unwrap();
    let sent_at = 1_700_000_000_123;
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "trace-id",
            value: Some("abc-123"),
        })
        .insert(Header {
            key: "policy_push.error",
            value: Some("forged"),
        });
    let record = FutureRecord::to(&config.topics.data_sources)
        .key("ds")
        .payload(&value)
        .timestamp(sent_at)
        .headers(headers);
    producer
        .send(record, Duration::from_secs(10))
        .await
        .unwrap();
    let running = start(&config);
    wait_applied(&db, &config, 1).await;

    let letters = dead_letters::read(&config, &Filter::default())
        .await
        .unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let l = &letters[0];
    assert_eq!(
        l.timestamp_ms,
        Some(sent_at),
        "the original timestamp is kept"
    );
    assert_eq!(
        l.headers,
        vec![("trace-id".to_string(), Some(b"abc-123".to_vec()))]
    );
    assert!(l.error.contains("does not exist"), "{}", l.error);
    assert_eq!((l.class.as_str(), l.stage.as_str()), ("poison", "apply"));
    assert_eq!(l.integration, "redrive");
    assert!(l.dead_lettered_ms.is_some_and(|t| t > sent_at));
    let since_later = Filter {
        since: Some(policy_push::telemetry::epoch_ms() + 60_000),
        ..Filter::default()
    };
    assert!(dead_letters::read(&config, &since_later)
        .await
        .unwrap()
        .is_empty());

    // An empty selection is refused rather than redriving everything.
    assert!(
        dead_letters::redrive(&config, &Filter::default(), false, false)
            .await
            .is_err()
    );
    db.client().await.batch_execute(RAW).await.unwrap();
    let mine = Filter {
        integration: Some("redrive".into()),
        ..Filter::default()
    };
    let done = dead_letters::redrive(&config, &mine, false, false)
        .await
        .unwrap();
    assert_eq!((done.published, done.skipped), (1, 0));
    let client = db.client().await;
    wait_for(
        "the redriven data source's view",
        Duration::from_secs(60),
        || async {
            rows(
                &client,
                "SELECT 1 FROM pg_views WHERE schemaname = 'immuta' AND viewname = 't'",
            )
            .await
            .is_ok_and(|r| r.len() == 1)
        },
    )
    .await;
    wait_applied(&db, &config, 2).await;
    running.stop().await;
    let again = dead_letters::read(&config, &Filter::default())
        .await
        .unwrap();
    assert_eq!(
        again.len(),
        1,
        "the redriven record applied: no new dead letter"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_match_the_brokers_ends_and_a_stored_offset_past_the_end_is_flagged() {
    let broker = Broker::mock();
    let (db, mut config) = setup(&broker, 3, "offs").await;
    let port = free_tcp_port();
    config.http.listen = format!("127.0.0.1:{port}");
    let users: Vec<String> = (0..40).map(|i| format!("user{i}")).collect();
    let records: Vec<_> = users.iter().map(|u| profile(u, 1, &[], &[], &[])).collect();
    let producer =
        policy_push::simulate::producer(&policy_push::pipeline::kafka_config(&config)).unwrap();
    let codec = policy_push::codec::Codec::embedded().unwrap();
    let ends = policy_push::simulate::publish(&producer, &config.topics, &codec, &records)
        .await
        .unwrap();
    let running = start(&config);
    wait_applied(&db, &config, records.len()).await;
    running.stop().await;

    let kafka = policy_push::pipeline::kafka_config(&config);
    let (_, profiles) = offset_rows(&config, "offs").await;
    assert_eq!(profiles.len(), 3);
    for r in &profiles {
        let tp = policy_push::record::TopicPartition::new(r.topic.as_str(), r.partition);
        let end = ends.get(&tp).copied().unwrap_or(0);
        assert_eq!(r.end, end, "{r:?}");
        assert_eq!(r.stored, (end > 0).then_some(end), "{r:?}");
        assert_eq!(r.lag, 0, "{r:?}");
        assert_eq!(r.problem, None, "{r:?}");
    }
    wait_for(
        "Kafka's committed offsets",
        Duration::from_secs(10),
        || async {
            let rows = policy_push::offsets::report::rows(&config, &kafka, "offs")
                .await
                .unwrap();
            rows.iter()
                .filter(|r| r.end > 0)
                .all(|r| r.committed == Some(r.end))
        },
    )
    .await;

    // The topic "recreated": the stored offset of one partition is now far past its end.
    let (tp, end) = ends
        .iter()
        .find(|(tp, _)| *tp.topic == config.topics.profiles)
        .unwrap();
    let client = db.client().await;
    client
        .execute(
            "UPDATE immuta_system.offsets SET next_offset = next_offset + 1000 WHERE topic = $1 AND partition = $2",
            &[&&*tp.topic, &tp.partition],
        )
        .await
        .unwrap();
    let rows = policy_push::offsets::report::rows(&config, &kafka, "offs")
        .await
        .unwrap();
    let flagged: Vec<_> = rows.iter().filter(|r| r.problem.is_some()).collect();
    assert_eq!(flagged.len(), 1, "{rows:?}");
    assert_eq!(
        (flagged[0].problem, flagged[0].stored),
        (Some("above_end"), Some(end + 1000))
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_policy-push"))
        .args(["--config"])
        .arg(config_file_with_http(&config, &db))
        .args(["offsets", "--integration", "offs", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["problem"] == "above_end")
            .count(),
        1
    );

    // The pipeline is moved back by the broker, refuses the partition and says why.
    let more: Vec<_> = users.iter().map(|u| profile(u, 2, &[], &[], &[])).collect();
    publish(&config, &more).await;
    let running = start(&config);
    let subject = format!("partition {tp}");
    wait_for(
        "/health to flag the partition",
        Duration::from_secs(60),
        || async {
            let h = health_json(port).await;
            h["integrations"]["offs"]["conditions"][&subject]["hint"]
                .as_str()
                .is_some_and(|s| s.contains("policy-push replay --integration offs"))
        },
    )
    .await;
    assert_eq!(health_state(port, "offs").await, "failing");
    running.stop().await;
    let stored: i64 = client
        .query_one(
            "SELECT next_offset FROM immuta_system.offsets WHERE topic = $1 AND partition = $2",
            &[&&*tp.topic, &tp.partition],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        stored,
        end + 1000,
        "nothing of the partition was applied against old offsets"
    );
}

/// The config file of `config` for the binary.
fn config_file_with_http(config: &policy_push::Config, db: &Database) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(unique("ops"));
    std::fs::create_dir_all(&dir).unwrap();
    config_file(config, db, &dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_that_is_not_compacted_is_reported_and_replay_refuses_it() {
    let broker = Broker::tansu().await;
    let mut db = Database::create().await;
    let topics = random_topics();
    let kafka = broker.client_config();
    broker
        .create_topics_compacted_but(&topics, &topics.policies, 2)
        .await;
    let mut config = common::config(&broker, &topics, &mut db, "compact", HOST);
    bootstrap(&config).await;
    let checked =
        policy_push::consume::compaction::check(&kafka, &topics.inputs().map(String::from)).await;
    use policy_push::consume::compaction::Compaction;
    assert_eq!(
        checked[&topics.profiles],
        Compaction::Compacted,
        "{checked:?}"
    );
    assert!(
        matches!(checked[&topics.policies], Compaction::NotCompacted(_)),
        "{checked:?}"
    );

    let port = free_tcp_port();
    config.http.listen = format!("127.0.0.1:{port}");
    let running = start(&config);
    let subject = format!("topic {}", topics.policies);
    wait_for(
        "/health to report the topic",
        Duration::from_secs(60),
        || async {
            let h = health_json(port).await;
            let c = &h["integrations"]["compact"]["conditions"][&subject];
            c["severity"] == "degraded"
                && c["hint"]
                    .as_str()
                    .is_some_and(|s| s.contains("cleanup.policy=compact"))
        },
    )
    .await;
    assert_eq!(
        http_get(port, "/ready").await.map(|r| r.0),
        Some(200),
        "degraded is still ready"
    );
    running.stop().await;

    let token = tokio_util::sync::CancellationToken::new();
    let from = policy_push::commands::replay::Start::Earliest;
    let refused = policy_push::commands::replay::replay(&config, "compact", from, false, token)
        .await
        .expect_err("replay refuses a topic that is not compacted");
    let message = format!("{refused:#}");
    assert!(
        message.contains(&topics.policies) && message.contains("--accept-uncompacted"),
        "{message}"
    );
    assert!(!message.contains(&topics.profiles), "{message}");
}
