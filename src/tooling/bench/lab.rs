//! The bench's surroundings: a broker, a fresh database and fresh topics per run, and
//! policy-push itself as a child process, so that its memory is its own and it is timed
//! exactly as an operator would run it.

use std::borrow::Borrow;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{bail, Context};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use tokio_postgres::NoTls;

use policy_push::apply::sql::quote::ident;
use policy_push::codec::Codec;
use policy_push::config::{Config, Integration};
use policy_push::simulate::{self, Ends, Record};

use super::process::Process;
use super::progress::Publishing;

/// The database every run recreates.
pub const DATABASE: &str = "policy_push_bench";
const PARTITIONS: i32 = 4;

/// The broker the bench publishes to and policy-push consumes from.
enum Broker {
    /// librdkafka's in-process mock cluster. It keeps only about 5 MB per partition, so
    /// it cannot hold the full-size backlogs (`publish` detects that).
    Mock(MockCluster<'static, DefaultProducerContext>),
    /// A Tansu broker this harness started, in memory. Restarted for every run but the
    /// first: its log stays in memory, and its cost grows with it (a steady run after a
    /// drain had a p99 of 1.8 s against 0.4 to 0.9 s on a fresh broker), so a run's
    /// figures would depend on the runs before it.
    Tansu {
        bin: PathBuf,
        running: std::sync::Mutex<Tansu>,
    },
    External(String),
}

struct Tansu {
    child: Child,
    bootstrap: String,
}

impl Tansu {
    fn start(bin: &std::path::Path) -> anyhow::Result<Self> {
        let (child, bootstrap) = crate::tooling::tansu::start(bin)?;
        Ok(Tansu { child, bootstrap })
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Lab {
    broker: Broker,
    admin_url: String,
    exe: PathBuf,
    dir: PathBuf,
    runs: AtomicUsize,
    pub codec: Codec,
    /// Lines for the `[batch]` table of policy-push's configuration; empty for the
    /// product defaults, which is what the harness measures unless told otherwise.
    pub batch: String,
}

/// One run's configuration: fresh topics, a fresh consumer group, a fresh database.
pub struct Setup {
    pub config: Config,
    pub path: PathBuf,
    pub http: String,
}

impl Setup {
    pub fn integration(&self) -> &Integration {
        &self.config.integrations[0]
    }

    pub async fn connect(&self) -> anyhow::Result<tokio_postgres::Client> {
        let (client, conn) = self.integration().pg_config()?.connect(NoTls).await?;
        tokio::spawn(conn);
        Ok(client)
    }
}

/// Which broker to use: `--bootstrap-servers` wins, then `--broker`.
pub struct BrokerChoice<'a> {
    pub bootstrap: Option<&'a str>,
    pub tansu: Option<PathBuf>,
}

impl Lab {
    pub fn new(admin_url: &str, choice: BrokerChoice<'_>) -> anyhow::Result<Self> {
        let broker = match (choice.bootstrap, choice.tansu) {
            (Some(b), _) => Broker::External(b.to_string()),
            (None, Some(bin)) => Broker::Tansu {
                running: std::sync::Mutex::new(Tansu::start(&bin)?),
                bin,
            },
            (None, None) => Broker::Mock(
                MockCluster::new(1).context("cannot start the in-process mock cluster")?,
            ),
        };
        let dir = std::env::temp_dir().join(format!("policy-push-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Lab {
            broker,
            admin_url: admin_url.to_string(),
            exe: std::env::current_exe().context("cannot find the policy-push executable")?,
            dir,
            runs: AtomicUsize::new(0),
            codec: Codec::embedded()?,
            batch: String::new(),
        })
    }

    /// The broker's process, when the harness started one.
    pub fn broker_pid(&self) -> Option<u32> {
        match &self.broker {
            Broker::Tansu { running, .. } => Some(lock(running).child.id()),
            Broker::Mock(_) | Broker::External(_) => None,
        }
    }

    pub fn bootstrap(&self) -> String {
        match &self.broker {
            Broker::Mock(m) => m.bootstrap_servers(),
            Broker::Tansu { running, .. } => lock(running).bootstrap.clone(),
            Broker::External(b) => b.clone(),
        }
    }

    /// A broker without earlier runs' records, where the harness started it.
    fn fresh_broker(&self, run: usize) -> anyhow::Result<()> {
        if let (Broker::Tansu { bin, running }, 1..) = (&self.broker, run) {
            let mut tansu = lock(running);
            tansu.stop();
            *tansu = Tansu::start(bin)?;
        }
        Ok(())
    }

    pub fn broker_name(&self) -> String {
        match &self.broker {
            Broker::Mock(_) => "librdkafka mock cluster, in the harness process".into(),
            Broker::Tansu { bin, .. } => format!("Tansu (memory storage), {}", bin.display()),
            Broker::External(b) => format!("external broker at {b}"),
        }
    }

    /// Client properties the broker needs: Tansu's group join takes about half of
    /// session.timeout.ms.
    fn kafka_properties(&self) -> &'static str {
        match self.broker {
            Broker::Tansu { .. } => {
                "\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"1000\""
            }
            _ => "",
        }
    }

    /// Recreates the database, creates topics no earlier run used, writes a config file
    /// with the product's defaults (SPEC §6) and bootstraps the warehouse.
    pub async fn setup(&self) -> anyhow::Result<Setup> {
        let n = self.runs.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("bench{}-{n}", std::process::id());
        let db_url = self.recreate_database().await?;
        self.fresh_broker(n)?;
        let http = crate::tooling::tansu::free_local_addr()?;
        // POLICY_PUSH_BENCH_KAFKA: more lines for the child's [kafka] table (say
        // `"debug" = "fetch"`, with POLICY_PUSH_BENCH_LOG=librdkafka=debug).
        let extra_kafka = std::env::var("POLICY_PUSH_BENCH_KAFKA").unwrap_or_default();
        let text = format!(
            r#"
[kafka]
"bootstrap.servers" = {bootstrap:?}
{props}
{extra}
[topics]
profiles = "{prefix}.profiles"
data_sources = "{prefix}.data_sources"
policies = "{prefix}.policies"
impersonation = "{prefix}.impersonation"
dead_letter = "{prefix}.dead_letter"
[consumer]
group_prefix = "{prefix}"
[batch]
{batch}
[http]
listen = "{http}"
[[integration]]
name = "bench"
host = "127.0.0.1"
url = {db_url:?}
impersonator_role = "policy_push_bench_impersonator"
"#,
            bootstrap = self.bootstrap(),
            props = self.kafka_properties(),
            extra = extra_kafka,
            batch = self.batch,
        );
        let config = Config::from_toml(&text, std::iter::empty())?;
        let path = self.dir.join(format!("{prefix}.toml"));
        std::fs::write(&path, &text)?;
        self.create_topics(&config).await?;
        policy_push::apply::bootstrap_all(&config).await?;
        Ok(Setup { config, path, http })
    }

    async fn recreate_database(&self) -> anyhow::Result<String> {
        let (admin, conn) = tokio_postgres::connect(&self.admin_url, NoTls)
            .await
            .with_context(|| {
                format!(
                    "cannot connect to {}",
                    policy_push::config::redact_url(&self.admin_url)
                )
            })?;
        tokio::spawn(conn);
        let db = ident(DATABASE);
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            .await?;
        admin
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .await?;
        // Flush what earlier runs wrote now, so that it is not flushed during this run's
        // measurement (needs superuser or pg_checkpoint; skipped without).
        if let Err(e) = admin.batch_execute("CHECKPOINT").await {
            tracing::warn!(error = %e, "cannot CHECKPOINT before the run");
        }
        let cfg: tokio_postgres::Config = self.admin_url.parse()?;
        Ok(crate::tooling::demo::database_url(&cfg, DATABASE))
    }

    async fn create_topics(&self, config: &Config) -> anyhow::Result<()> {
        let topics = config.topics.with_compaction();
        match &self.broker {
            Broker::Mock(m) => {
                for (name, _) in topics {
                    m.create_topic(name, PARTITIONS, 1)?;
                }
            }
            Broker::Tansu { bin, .. } => {
                let bootstrap = self.bootstrap();
                for (name, compacted) in topics {
                    crate::tooling::tansu::create_topic(
                        bin, &bootstrap, name, PARTITIONS, compacted,
                    )?;
                }
            }
            Broker::External(_) => {
                let kafka = policy_push::pipeline::kafka_config(config);
                policy_push::consume::admin::ensure_topics(&kafka, &topics, PARTITIONS).await?;
            }
        }
        Ok(())
    }

    /// Publishes records, waits for every acknowledgement and returns where they end.
    /// Fails if the broker has already dropped any of them (the mock cluster keeps only a
    /// few MB per partition).
    /// The records are made as they are published, so a backlog of any size holds a
    /// window of them at a time.
    pub async fn publish<R: Borrow<Record>>(
        &self,
        setup: &Setup,
        records: impl ExactSizeIterator<Item = R>,
    ) -> anyhow::Result<Ends> {
        let kafka = policy_push::pipeline::kafka_config(&setup.config);
        let producer = simulate::producer(&kafka)?;
        let mut progress = Publishing::new("publishing", records.len());
        let ends = simulate::publish_stream(
            &producer,
            &setup.config.topics,
            &self.codec,
            records,
            |done| progress.set(done),
        )
        .await?;
        progress.finish();
        let mut topics: Vec<String> = ends.keys().map(|tp| tp.topic.to_string()).collect();
        topics.dedup();
        let client = std::sync::Arc::new(policy_push::offsets::metadata_client(&kafka)?);
        let marks =
            policy_push::offsets::watermarks_blocking(client, topics, Duration::from_secs(30))
                .await?;
        if let Some((tp, (low, _))) = marks.iter().find(|(_, (low, _))| *low > 0) {
            bail!(
                "the broker no longer holds {tp} before offset {low}: it keeps less than \
                 this workload; use Tansu or Kafka (--broker, --bootstrap-servers) or a smaller --scale"
            );
        }
        Ok(ends)
    }

    /// The mock cluster cannot report a topic's cleanup.policy, so replay's compaction
    /// guard has to be told to go ahead (`replay --accept-uncompacted`).
    pub fn reports_topic_configs(&self) -> bool {
        !matches!(self.broker, Broker::Mock(_))
    }

    /// Starts `policy-push <args>` with the run's config; its log goes to a file beside it.
    /// `POLICY_PUSH_BENCH_WRAP` (say `heaptrack -o /tmp/h` or `perf record -g -o
    /// /tmp/p.data --`) runs the child under that command, for a profile of the child
    /// alone; the run's RSS and CPU figures are then the wrapper's, and the harness stops
    /// the wrapper (perf passes SIGTERM on to the child, heaptrack does not: its child is
    /// left running).
    pub fn spawn(&self, setup: &Setup, args: &[&str]) -> anyhow::Result<Process> {
        let log = std::fs::File::create(setup.path.with_extension("log"))?;
        let wrap = std::env::var("POLICY_PUSH_BENCH_WRAP").unwrap_or_default();
        let mut words = wrap.split_whitespace();
        let mut command = match words.next() {
            Some(program) => {
                let mut c = Command::new(program);
                c.args(words).arg(&self.exe);
                c
            }
            None => Command::new(&self.exe),
        };
        let child = command
            .arg("--config")
            .arg(&setup.path)
            .args(args)
            // POLICY_PUSH_BENCH_LOG=info shows what the child is doing, in the .log file
            // next to its configuration (the directory is then kept).
            .env(
                "RUST_LOG",
                std::env::var("POLICY_PUSH_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env_remove("POLICY_PUSH_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start policy-push")?;
        Ok(Process::new(child))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Broker::Tansu { running, .. } = &self.broker {
            lock(running).stop();
        }
        if std::env::var_os("POLICY_PUSH_BENCH_LOG").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("logs kept in {}", self.dir.display());
        }
    }
}

fn lock(running: &std::sync::Mutex<Tansu>) -> std::sync::MutexGuard<'_, Tansu> {
    running
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
