//! A whole pipeline in the test's process: a config for one integration, bootstrap,
//! start and stop, waits on what it applied, and runs of the real binary.

use std::time::Duration;

use policy_push::config::{Config, Topics};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::broker::{random_topics, Broker};
use super::warehouse::Database;
use super::{unique, wait_for};

pub const HOST: &str = "warehouse-a.example";

/// A config for one integration against `db`, with random group prefix and roles.
pub fn config(
    broker: &Broker,
    topics: &Topics,
    db: &mut Database,
    name: &str,
    host: &str,
) -> Config {
    let imp = unique("pp_imp");
    db.adopt_role(&imp);
    let text = format!(
        r#"
[kafka]
"bootstrap.servers" = "{}"
[consumer]
group_prefix = "{}"
[batch]
max_records = 500
linger_ms = 20
max_backoff_ms = 2000
[http]
listen = ""
[[integration]]
name = "{name}"
host = "{host}"
url = "{}"
setup_url = "{}"
impersonator_role = "{imp}"
audit = true
"#,
        broker.bootstrap(),
        unique("g"),
        db.url,
        db.admin_url
    );
    let mut c = Config::from_toml(&text, Vec::new()).expect("test config");
    for (k, v) in broker.kafka_props() {
        c.kafka.insert(k.into(), v.into());
    }
    c.topics = topics.clone();
    c
}

/// A bootstrapped database and a config for one integration on fresh topics.
pub async fn setup(broker: &Broker, partitions: i32, name: &str) -> (Database, Config) {
    let mut db = Database::create().await;
    let topics = random_topics();
    broker.create_topics(&topics, partitions).await;
    let config = config(broker, &topics, &mut db, name, HOST);
    bootstrap(&config).await;
    (db, config)
}

/// Sum of stored next_offsets of a group: on fresh topics, the number of records applied.
pub async fn stored_total(client: &Client, group: &str) -> i64 {
    client
        .query_one("SELECT COALESCE(sum(next_offset), 0)::bigint FROM immuta_system.offsets WHERE consumer_group = $1", &[&group])
        .await
        .map(|r| r.get::<_, i64>(0))
        .unwrap_or(0)
}

pub async fn wait_applied(db: &Database, config: &Config, total: usize) {
    let client = db.client().await;
    let group = config.integrations[0].consumer_group(&config.consumer.group_prefix);
    wait_for(
        &format!("{total} records applied"),
        Duration::from_secs(90),
        || {
            let (client, group) = (&client, &group);
            async move { stored_total(client, group).await >= total as i64 }
        },
    )
    .await;
    assert_eq!(
        stored_total(&client, &group).await,
        total as i64,
        "stored offsets overshoot what was published"
    );
}

/// A running pipeline; stop it with `stop().await`.
pub struct Running {
    token: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), policy_push::pipeline::PipelineError>>,
}

pub fn start(config: &Config) -> Running {
    let token = CancellationToken::new();
    let task = tokio::spawn(policy_push::run(config.clone(), token.clone()));
    Running { token, task }
}

impl Running {
    /// Asks the pipeline to stop; whether it returned within `deadline`.
    pub async fn stop_within(self, deadline: Duration) -> bool {
        self.token.cancel();
        match tokio::time::timeout(deadline, self.task).await {
            Ok(result) => {
                result.expect("pipeline task").expect("pipeline result");
                true
            }
            Err(_) => false,
        }
    }

    /// Stops the pipeline and returns what `run` returned.
    pub async fn stop_result(self) -> Result<(), policy_push::pipeline::PipelineError> {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("pipeline stops within 60s")
            .expect("pipeline task")
    }

    pub async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("pipeline stops within 60s")
            .expect("pipeline task")
            .expect("pipeline result");
    }
}

pub async fn bootstrap(config: &Config) {
    policy_push::apply::bootstrap_all(config)
        .await
        .expect("bootstrap");
}

/// Writes `config` (one integration) as a TOML file in `dir`, for runs of the real binary.
pub fn config_file(config: &Config, db: &Database, dir: &std::path::Path) -> std::path::PathBuf {
    let t = &config.topics;
    let i = &config.integrations[0];
    let mut kafka = String::new();
    for (k, v) in &config.kafka {
        kafka += &format!("{k:?} = {v:?}\n");
    }
    let registry = config
        .schema_registry
        .url
        .as_ref()
        .map(|u| format!("[schema_registry]\nurl = {u:?}\n"))
        .unwrap_or_default();
    let text = format!(
        "[kafka]\n{kafka}[topics]\nprofiles = {:?}\ndata_sources = {:?}\npolicies = {:?}\nimpersonation = {:?}\ndead_letter = {:?}\n\
         [consumer]\ngroup_prefix = {:?}\n[batch]\nmax_records = 500\nlinger_ms = 20\nmax_backoff_ms = 1000\n[http]\nlisten = \"\"\n{registry}\
         [[integration]]\nname = {:?}\nhost = {:?}\nurl = {:?}\nimpersonator_role = {:?}\n",
        t.profiles, t.data_sources, t.policies, t.impersonation, t.dead_letter,
        config.consumer.group_prefix, i.name, i.host, db.url, i.impersonator_role
    );
    let path = dir.join("policy-push.toml");
    std::fs::write(&path, text).expect("config file");
    path
}

/// Runs `policy-push check-config --connect` on the config file `path`: its exit code and
/// standard output.
pub async fn check_config_connect(path: std::path::PathBuf) -> (Option<i32>, String) {
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_policy-push"))
            .arg("--config")
            .arg(&path)
            .args(["check-config", "--connect"])
            .output()
            .expect("run policy-push")
    })
    .await
    .expect("check-config");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

/// `policy-push offsets --integration NAME`: the one flagged partition's problem, after
/// which `--accept` takes it as it is.
pub async fn accept_the_flagged_partition(config: &Config, name: &str) -> &'static str {
    let kafka = policy_push::pipeline::kafka_config(config);
    let rows = policy_push::offsets::report::rows(config, &kafka, name)
        .await
        .unwrap();
    let flagged: Vec<_> = rows.iter().filter(|r| r.problem.is_some()).collect();
    assert_eq!(flagged.len(), 1, "{rows:?}");
    let problem = flagged[0].problem.unwrap_or_default();
    policy_push::offsets::report::accept(config, name, &rows)
        .await
        .unwrap();
    problem
}

/// Stops the pipeline as SIGTERM does; an error unless it is gone within its shutdown
/// deadline (`batch.shutdown_timeout_ms`) plus one second.
pub async fn stop_on_time(running: Running, config: &Config) -> Result<(), String> {
    let asked = std::time::Instant::now();
    let deadline = config.batch.shutdown_timeout + Duration::from_secs(1);
    let stopped = running
        .stop_within(deadline + Duration::from_secs(30))
        .await;
    let took = asked.elapsed();
    if !stopped {
        return Err("the pipeline did not stop at all".into());
    }
    if took > deadline {
        return Err(format!(
            "SIGTERM took {took:?}, past the shutdown deadline plus one second ({deadline:?})"
        ));
    }
    Ok(())
}

/// `policy-push offsets` rows of `integration`: all of them, and the profiles topic's.
pub async fn offset_rows(
    config: &Config,
    integration: &str,
) -> (
    Vec<policy_push::offsets::report::Row>,
    Vec<policy_push::offsets::report::Row>,
) {
    let kafka = policy_push::pipeline::kafka_config(config);
    let rows = policy_push::offsets::report::rows(config, &kafka, integration)
        .await
        .unwrap();
    let profiles = rows
        .iter()
        .filter(|r| r.topic == config.topics.profiles)
        .cloned()
        .collect();
    (rows, profiles)
}
