//! Broker and warehouse faults: the pipeline recovers on its own, other hosts carry on,
//! and nothing is lost or applied twice.

mod common;

use std::time::Duration;

use common::*;
use policy_push::simulate::{self, Record, Spec};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

/// Sum of an integration's consumer-lag gauges in /metrics (None when it has none yet).
async fn lag(port: u16, integration: &str) -> Option<f64> {
    let needle = format!("policy_push_consumer_lag_records{{integration=\"{integration}\"");
    let values = metric_values(port, &needle).await;
    (!values.is_empty()).then(|| values.iter().sum())
}

/// Runs `policy-push status` against the in-process server on `port`.
fn status(port: u16) -> (i32, String) {
    let dir = std::env::temp_dir().join(unique("status"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("policy-push.toml");
    let text = format!(
        "[http]\nlisten = \"127.0.0.1:{port}\"\n[[integration]]\nname = \"x\"\nhost = \"h\"\nurl = \"postgres://postgres@127.0.0.1:5432/postgres\"\n"
    );
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_policy-push"))
        .args(["--config", path.to_str().unwrap(), "status"])
        .output()
        .expect("run policy-push status");
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

async fn workload(db: &Database, changes: usize) -> Vec<Record> {
    let spec = Spec {
        users: 500,
        data_sources: 0,
        policies: 0,
        changes,
        host: HOST.into(),
        database: db.name.clone(),
        ..Spec::default()
    };
    simulate::workload(&spec)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_killed_mid_transaction_lose_nothing() {
    let broker = Broker::mock();
    let (db, mut config) = setup(&broker, 4, "k").await;
    config.batch.max_records = 300;
    config.batch.max_backoff = std::time::Duration::from_millis(300);
    let records = workload(&db, 30_000).await;
    publish(&config, &records).await;
    let admin = connect(&admin_url()).await;
    let group = config.integrations[0].consumer_group(&config.consumer.group_prefix);
    let client = db.client().await;
    // The profile table stays locked while connections are killed, so every kill lands in
    // a batch transaction that is waiting on it, however fast the rest of the pipeline is
    // (killing on a timer missed the whole run once commits stopped waiting for the disk).
    let mut blocker = db.client().await;
    let lock = blocker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE immuta_system.profile IN EXCLUSIVE MODE")
        .await
        .unwrap();
    let waiting = format!(
        "SELECT pid::text FROM pg_stat_activity WHERE datname = '{}' \
         AND application_name = 'policy-push' AND wait_event_type = 'Lock'",
        db.name
    );
    let running = start(&config);
    let mut killed = std::collections::BTreeSet::new();
    for _ in 0..3 {
        let found = std::sync::Mutex::new(Vec::new());
        let (admin, waiting, killed_so_far, found_ref) = (&admin, &waiting, &killed, &found);
        wait_for(
            "a policy-push transaction waiting on the locked table",
            Duration::from_secs(60),
            move || async move {
                let pids: Vec<String> = rows(admin, waiting)
                    .await
                    .unwrap()
                    .into_iter()
                    .filter_map(|r| r[0].clone())
                    .filter(|pid| !killed_so_far.contains(pid))
                    .collect();
                let any = !pids.is_empty();
                *found_ref.lock().unwrap() = pids;
                any
            },
        )
        .await;
        let victims = found.into_inner().unwrap();
        for pid in victims {
            rows(admin, &format!("SELECT pg_terminate_backend({pid})"))
                .await
                .unwrap();
            killed.insert(pid);
        }
    }
    lock.rollback().await.unwrap();
    wait_for(
        "every record applied after the kills",
        Duration::from_secs(120),
        || async { stored_total(&client, &group).await >= records.len() as i64 },
    )
    .await;
    running.stop().await;
    assert!(
        killed.len() >= 3,
        "the test must actually kill connections (killed {})",
        killed.len()
    );
    assert_exactly_once(&db, &records).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_is_down_does_not_stop_the_other_and_shows_failing() {
    let broker = Broker::mock();
    let topics = random_topics();
    broker.create_topics(&topics, 4).await;
    let mut up = Database::create().await;
    let mut down = Database::create().await;
    let mut config = config(&broker, &topics, &mut up, "up", HOST);
    let second = common::config(&broker, &topics, &mut down, "down", HOST)
        .integrations
        .remove(0);
    bootstrap(&config).await;
    config.integrations.push(second);
    bootstrap(&config).await;
    let port = free_tcp_port();
    config.http.listen = format!("127.0.0.1:{port}");
    // Small, so that the down host's buffer fills and its consumer must pause: the
    // channel, and the batch that fills while a failing one is retried (up to
    // backlog_entries entities, which would otherwise hold all of `rest`).
    config.consumer.channel_capacity = 100;
    config.batch.max_records = 200;
    config.batch.backlog_entries = 200;
    config.http.lag_refresh = std::time::Duration::from_millis(200);
    config.http.failing_after = std::time::Duration::from_millis(3000);

    let records = workload(&up, 6_000).await;
    let (first, rest) = records.split_at(1_000);
    publish(&config, first).await;
    let running = start(&config);
    let group_up = config.integrations[0].consumer_group(&config.consumer.group_prefix);
    let group_down = format!("{}.down", config.consumer.group_prefix);
    let (client_up, client_down) = (up.client().await, down.client().await);
    wait_for(
        "both hosts to apply the first records",
        Duration::from_secs(90),
        || async {
            stored_total(&client_up, &group_up).await >= first.len() as i64
                && stored_total(&client_down, &group_down).await >= first.len() as i64
        },
    )
    .await;

    // Host "down" loses its warehouse after it has its partitions.
    let admin = connect(&admin_url()).await;
    let cut = format!(
        "ALTER DATABASE {0} ALLOW_CONNECTIONS false; SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{0}';",
        down.name
    );
    admin.batch_execute(&cut).await.unwrap();
    publish(&config, rest).await;
    wait_for(
        "the healthy host to apply everything",
        Duration::from_secs(90),
        || async { stored_total(&client_up, &group_up).await >= records.len() as i64 },
    )
    .await;
    wait_for(
        "the down host to be reported failing",
        Duration::from_secs(60),
        || async { health_state(port, "down").await == "failing" },
    )
    .await;
    let (_, body) = http_get(port, "/health").await.unwrap();
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["integrations"]["up"]["state"], "healthy", "{body}");
    assert!(
        health["integrations"]["down"]["hint"]
            .as_str()
            .is_some_and(|h| !h.is_empty()),
        "{body}"
    );
    assert_eq!(http_get(port, "/ready").await.map(|r| r.0), Some(503));
    let (code, json) = status(port);
    assert_eq!(
        code, 1,
        "status exits non-zero while a host is failing: {json}"
    );
    assert!(
        json.contains("\"down\"") && json.contains("failing"),
        "{json}"
    );
    let paused = "policy_push_consumer_paused{integration=\"down\"} 1".to_string();
    wait_for(
        "the down host's lag to show what it has not applied",
        Duration::from_secs(30),
        || async { lag(port, "down").await.is_some_and(|l| l > 0.0) },
    )
    .await;
    wait_for(
        "the healthy host's lag to be zero",
        Duration::from_secs(30),
        || async { lag(port, "up").await == Some(0.0) },
    )
    .await;
    wait_for(
        "the down host's consumer to pause instead of buffering",
        Duration::from_secs(30),
        || async {
            http_get(port, "/metrics")
                .await
                .is_some_and(|(_, body)| body.contains(&paused))
        },
    )
    .await;

    admin
        .batch_execute(&format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS true",
            down.name
        ))
        .await
        .unwrap();
    let group_down = format!("{}.down", config.consumer.group_prefix);
    let client_down = down.client().await;
    wait_for(
        "the recovered host to catch up",
        Duration::from_secs(120),
        || async { stored_total(&client_down, &group_down).await >= records.len() as i64 },
    )
    .await;
    wait_for(
        "the recovered host's lag to fall to zero",
        Duration::from_secs(30),
        || async { lag(port, "down").await == Some(0.0) },
    )
    .await;
    wait_for(
        "the recovered host to be healthy",
        Duration::from_secs(30),
        || async { health_state(port, "down").await == "healthy" },
    )
    .await;
    assert_eq!(
        status(port).0,
        0,
        "status exits 0 once every host is healthy"
    );
    running.stop().await;
    assert_exactly_once(&up, &records).await;
    assert_exactly_once(&down, &records).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_leader_changes_and_request_errors_are_survived() {
    let broker = Broker::mock();
    let (db, mut config) = setup(&broker, 4, "b").await;
    config.batch.max_records = 500;
    let records = workload(&db, 20_000).await;
    publish(&config, &records).await;
    let group = config.integrations[0].consumer_group(&config.consumer.group_prefix);
    let client = db.client().await;
    let running = start(&config);
    if let Broker::Mock(mock) = &broker {
        wait_for("a first commit", Duration::from_secs(60), || async {
            stored_total(&client, &group).await > 0
        })
        .await;
        let errors = |code| vec![code; 6];
        mock.request_errors(
            RDKafkaApiKey::Fetch,
            &errors(RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION),
        );
        mock.request_errors(
            RDKafkaApiKey::OffsetCommit,
            &errors(RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT),
        );
        for p in 0..4 {
            mock.partition_leader(&config.topics.profiles, p, Some((p % 3 + 2) % 3 + 1))
                .unwrap();
        }
        mock.broker_down(2).unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        mock.broker_up(2).unwrap();
    }
    wait_applied(&db, &config, records.len()).await;
    running.stop().await;
    assert_exactly_once(&db, &records).await;
}
