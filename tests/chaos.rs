//! Chaos: the real binary, two instances sharing the consumer groups of two hosts,
//! killed with SIGKILL at random moments while 100,000 changes stream through. At the end
//! both hosts must hold exactly the newest record per entity, the stored offsets must
//! equal the end offsets, and the audit log must show no record applied twice. Then
//! SIGTERM must stop both instances cleanly (exit 0).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use policy_push::event::{Event, Kind};
use policy_push::simulate::{self, Record, Spec};

const HOST_B: &str = "warehouse-b.example";

/// A running instance; killed on drop so that a failing test leaves nothing behind.
struct Instance {
    child: Child,
    /// Its /health port: accepting connections means its signal handlers are installed.
    port: u16,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(config_path: &std::path::Path, log: &std::path::Path) -> Instance {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let port = free_tcp_port();
    let child = Command::new(env!("CARGO_BIN_EXE_policy-push"))
        .args(["--config", config_path.to_str().unwrap(), "run"])
        .env("RUST_LOG", "warn")
        .env("POLICY_PUSH_HTTP_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn policy-push");
    Instance { child, port }
}

async fn wait_up(instance: &Instance) {
    let addr = format!("127.0.0.1:{}", instance.port);
    wait_for(
        "instance to serve /health",
        Duration::from_secs(30),
        || async { tokio::net::TcpStream::connect(&addr).await.is_ok() },
    )
    .await;
}

async fn sigterm(child: &mut Child) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let mut exited = None;
    wait_for(
        "the instance to stop after SIGTERM",
        Duration::from_secs(60),
        || {
            exited = exited.or(child.try_wait().expect("wait"));
            std::future::ready(exited.is_some())
        },
    )
    .await;
    exited.expect("exited")
}

/// The state a host must end in: profiles for both hosts, data sources of its own host.
async fn check_host(db: &Database, records: &[Record], host: &str, total: i64) {
    let expected = simulate::expected_state(records);
    assert_exactly_once(db, records).await;
    let client = db.client().await;
    let sources = rows(
        &client,
        "SELECT id, version FROM immuta_system.data_source WHERE NOT deleted ORDER BY 1",
    )
    .await
    .unwrap();
    let want: Vec<Vec<Option<String>>> = expected
        .iter()
        .filter_map(|((k, key), v)| match (k, v) {
            (Kind::DataSource, Some(Event::DataSource(d))) if d.host == host => {
                Some(vec![Some(key.clone()), Some(d.version.to_string())])
            }
            _ => None,
        })
        .collect();
    assert_eq!(sources, want, "{}: data sources of this host", db.name);
    let policies = rows(
        &client,
        "SELECT count(*) FROM immuta_system.policy WHERE NOT deleted",
    )
    .await
    .unwrap();
    let want = expected
        .iter()
        .filter(|((k, _), v)| *k == Kind::Policy && v.is_some())
        .count();
    assert_eq!(
        policies[0][0].as_deref(),
        Some(want.to_string().as_str()),
        "{}: policies",
        db.name
    );
    let stored = rows(
        &client,
        "SELECT sum(next_offset)::bigint FROM immuta_system.offsets",
    )
    .await
    .unwrap();
    assert_eq!(
        stored[0][0].as_deref(),
        Some(total.to_string().as_str()),
        "{}: stored offsets equal end offsets",
        db.name
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_restarts_and_rebalances_lose_and_duplicate_nothing() {
    let changes: usize = std::env::var("CHAOS_CHANGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let broker = Broker::mock();
    let topics = random_topics();
    broker.create_topics(&topics, 4).await;
    let mut a = Database::create().await;
    let mut b = Database::create().await;
    let config_a = config(&broker, &topics, &mut a, "a", HOST);
    let config_b = config(&broker, &topics, &mut b, "b", HOST_B);
    bootstrap(&config_a).await;
    bootstrap(&config_b).await;

    // Host A's workload (thousands of users, hot keys, data sources, policies, deletes)
    // plus data sources of host B, interleaved into one stream.
    let spec_a = Spec {
        users: 3000,
        data_sources: 8,
        policies: 8,
        changes,
        host: HOST.into(),
        database: a.name.clone(),
        ..Spec::default()
    };
    let spec_b = Spec {
        users: 0,
        data_sources: 6,
        policies: 0,
        changes: 0,
        seed: 7,
        host: HOST_B.into(),
        database: b.name.clone(),
        ..Spec::default()
    };
    let (client_a, client_b) = (a.client().await, b.client().await);
    simulate::create_raw_tables(&client_a, &spec_a)
        .await
        .unwrap();
    simulate::create_raw_tables(&client_b, &spec_b)
        .await
        .unwrap();
    let mut records = simulate::workload(&spec_a);
    let b_sources: Vec<Record> = simulate::workload(&spec_b)
        .into_iter()
        .map(|mut r| {
            // Distinct ids so the two hosts' data sources do not collide.
            r.key = format!("b-{}", r.key);
            if let Some(Event::DataSource(d)) = &mut r.value {
                d.id = r.key.clone();
            }
            r
        })
        .collect();
    records.splice(records.len() / 3..records.len() / 3, b_sources);
    let total = records.len() as i64;

    // One config file with both integrations, shared by both instances.
    let dir = std::env::temp_dir().join(unique("chaos"));
    std::fs::create_dir_all(&dir).unwrap();
    let text = format!(
        r#"
[kafka]
"bootstrap.servers" = "{}"
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
[topics]
profiles = "{}"
data_sources = "{}"
policies = "{}"
impersonation = "{}"
dead_letter = "{}"
[consumer]
group_prefix = "{}"
[batch]
max_records = 2000
linger_ms = 50
max_backoff_ms = 1000
[http]
listen = ""
[[integration]]
name = "a"
host = "{HOST}"
url = "{}"
impersonator_role = "{}"
audit = true
[[integration]]
name = "b"
host = "{HOST_B}"
url = "{}"
impersonator_role = "{}"
audit = true
"#,
        broker.bootstrap(),
        topics.profiles,
        topics.data_sources,
        topics.policies,
        topics.impersonation,
        topics.dead_letter,
        config_a.consumer.group_prefix,
        a.url,
        config_a.integrations[0].impersonator_role,
        b.url,
        config_b.integrations[0].impersonator_role,
    );
    let config_path = dir.join("policy-push.toml");
    std::fs::write(&config_path, text).unwrap();
    let log = dir.join("instances.log");

    let mut instances = vec![spawn(&config_path, &log), spawn(&config_path, &log)];
    publish(&config_a, &records).await;

    let group_a = format!("{}.a", config_a.consumer.group_prefix);
    let group_b = format!("{}.b", config_a.consumer.group_prefix);
    let progress = || async {
        (
            stored_total(&client_a, &group_a).await,
            stored_total(&client_b, &group_b).await,
        )
    };
    let mut rng = fastrand::Rng::with_seed(changes as u64);
    let mut kills = 0;
    let start = Instant::now();
    loop {
        let (pa, pb) = progress().await;
        if pa >= total && pb >= total && kills >= 5 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "no convergence: a={pa} b={pb} of {total}; see {}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(rng.u64(300..2500))).await;
        if kills < 8 {
            let victim = rng.usize(..instances.len());
            instances[victim].child.kill().expect("SIGKILL");
            let _ = instances[victim].child.wait();
            kills += 1;
            instances[victim] = spawn(&config_path, &log);
        }
    }
    for instance in &mut instances {
        wait_up(instance).await;
        let status = sigterm(&mut instance.child).await;
        assert!(
            status.success(),
            "SIGTERM must exit 0, got {status:?}; see {}",
            log.display()
        );
    }

    check_host(&a, &records, HOST, total).await;
    check_host(&b, &records, HOST_B, total).await;
    let _ = std::fs::remove_dir_all(&dir);
}
