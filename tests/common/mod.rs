//! Test harness: real PostgreSQL databases and login roles with random names (dropped
//! afterwards, also when a test fails), a real Kafka protocol implementation (librdkafka's
//! mock cluster, a Tansu broker process, or whatever `KAFKA_BOOTSTRAP` points at), random
//! topics and groups, and waits on conditions with deadlines.
#![allow(dead_code)]

pub mod server;
pub mod tls;

use std::collections::BTreeMap;
use std::process::Child;
use std::time::{Duration, Instant};

use policy_push::config::{Config, Topics};
use policy_push::event::*;
use policy_push::simulate::{self, Record};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};
use tokio_util::sync::CancellationToken;

pub fn admin_url() -> String {
    std::env::var("PG_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{:012x}", fastrand::u64(..) & 0xffff_ffff_ffff)
}

pub async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    tokio::spawn(conn);
    client
}

/// A fresh database; it and every role made through it are dropped on drop.
///
/// policy-push connects to it as `url`: a system account that is neither a superuser nor
/// `CREATEROLE`, which may create schemas in this database and read the tables the
/// superuser creates there (the raw tables). Only bootstrap's setup connection,
/// `admin_url`, is a superuser; so is `client()`, which tests use to set things up and
/// look at the result.
pub struct Database {
    pub name: String,
    pub url: String,
    pub system_role: String,
    pub admin_url: String,
    pub roles: Vec<String>,
}

impl Database {
    pub async fn create() -> Self {
        let name = unique("pp_test");
        let system_role = unique("pp_system");
        let admin = connect(&admin_url()).await;
        for sql in [
            format!("CREATE DATABASE {name}"),
            format!("CREATE ROLE {system_role} LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB"),
            format!("GRANT CREATE ON DATABASE {name} TO {system_role}"),
        ] {
            admin
                .batch_execute(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        let admin_url = format!("postgres://postgres@127.0.0.1:5432/{name}");
        connect(&admin_url)
            .await
            .batch_execute(&format!(
                "ALTER DEFAULT PRIVILEGES FOR ROLE postgres GRANT USAGE ON SCHEMAS TO {system_role};
                 ALTER DEFAULT PRIVILEGES FOR ROLE postgres GRANT SELECT ON TABLES TO {system_role};
                 ALTER DEFAULT PRIVILEGES FOR ROLE postgres GRANT USAGE, SELECT ON SEQUENCES TO {system_role};"
            ))
            .await
            .expect("system account privileges");
        Database {
            url: format!("postgres://{system_role}@127.0.0.1:5432/{name}"),
            name,
            roles: vec![system_role.clone()],
            system_role,
            admin_url,
        }
    }

    /// A superuser connection to this database.
    pub async fn client(&self) -> Client {
        connect(&self.admin_url).await
    }

    /// A cluster-wide role registered for cleanup (login or group).
    pub async fn role(&mut self, prefix: &str, login: bool) -> String {
        let name = unique(prefix);
        let kind = if login { "LOGIN" } else { "NOLOGIN" };
        connect(&admin_url())
            .await
            .batch_execute(&format!("CREATE ROLE {name} {kind}"))
            .await
            .expect("create role");
        self.roles.push(name.clone());
        name
    }

    /// Registers a role created by someone else (the integration) for cleanup.
    pub fn adopt_role(&mut self, name: &str) {
        self.roles.push(name.to_string());
    }

    pub async fn as_role(&self, role: &str) -> Client {
        connect(&format!("postgres://{role}@127.0.0.1:5432/{}", self.name)).await
    }

    /// Runs a query as `role` and returns every cell as text (NULL as None).
    pub async fn rows_as(
        &self,
        role: &str,
        sql: &str,
    ) -> Result<Vec<Vec<Option<String>>>, tokio_postgres::Error> {
        rows(&self.as_role(role).await, sql).await
    }
}

pub async fn rows(
    client: &Client,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, tokio_postgres::Error> {
    let mut out = Vec::new();
    for msg in client.simple_query(sql).await? {
        if let SimpleQueryMessage::Row(r) = msg {
            out.push((0..r.len()).map(|i| r.get(i).map(String::from)).collect());
        }
    }
    Ok(out)
}

impl Drop for Database {
    fn drop(&mut self) {
        let name = self.name.clone();
        let roles = std::mem::take(&mut self.roles);
        // Drop cannot await; clean up on a thread with its own runtime.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let Ok((c, conn)) = tokio_postgres::connect(&admin_url(), NoTls).await else {
                    return;
                };
                tokio::spawn(conn);
                let _ = c
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
                for r in roles {
                    let _ = c.batch_execute(&format!("DROP ROLE IF EXISTS {r}")).await;
                }
            });
        })
        .join();
    }
}

/// A Kafka protocol implementation for one test.
pub enum Broker {
    Mock(MockCluster<'static, DefaultProducerContext>),
    Tansu { child: Child, bootstrap: String },
    External(String),
}

fn external() -> Option<String> {
    std::env::var("KAFKA_BOOTSTRAP")
        .ok()
        .filter(|s| !s.is_empty())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub fn tansu_bin() -> std::path::PathBuf {
    policy_push::bench::tansu::find().expect("Tansu")
}

impl Broker {
    pub fn mock() -> Self {
        match external() {
            Some(b) => Broker::External(b),
            None => Broker::Mock(MockCluster::new(3).expect("mock cluster")),
        }
    }

    pub async fn tansu() -> Self {
        if let Some(b) = external() {
            return Broker::External(b);
        }
        let (child, bootstrap) = tokio::task::spawn_blocking(|| {
            policy_push::bench::tansu::start(&tansu_bin()).expect("start tansu")
        })
        .await
        .expect("start tansu");
        Broker::Tansu { child, bootstrap }
    }

    pub fn bootstrap(&self) -> String {
        match self {
            Broker::Mock(m) => m.bootstrap_servers(),
            Broker::Tansu { bootstrap, .. } | Broker::External(bootstrap) => bootstrap.clone(),
        }
    }

    /// Extra client properties this broker needs.
    pub fn kafka_props(&self) -> Vec<(&'static str, &'static str)> {
        match self {
            // Tansu's group join takes about half of session.timeout.ms.
            Broker::Tansu { .. } => vec![
                ("session.timeout.ms", "6000"),
                ("heartbeat.interval.ms", "1000"),
            ],
            _ => vec![],
        }
    }

    pub async fn create_topics(&self, topics: &Topics, partitions: i32) {
        let names = [
            &topics.profiles,
            &topics.data_sources,
            &topics.policies,
            &topics.impersonation,
            &topics.dead_letter,
        ];
        match self {
            Broker::Mock(m) => {
                for n in names {
                    m.create_topic(n, partitions, 1).expect("create topic");
                }
            }
            Broker::Tansu { bootstrap, .. } => {
                let bin = tansu_bin();
                for n in names {
                    let compacted = *n != topics.dead_letter;
                    policy_push::bench::tansu::create_topic(
                        &bin, bootstrap, n, partitions, compacted,
                    )
                    .expect("tansu topic create");
                }
            }
            Broker::External(b) => {
                let mut cfg = rdkafka::ClientConfig::new();
                cfg.set("bootstrap.servers", b);
                let list: Vec<(&str, bool)> = names
                    .iter()
                    .map(|n| (n.as_str(), **n != topics.dead_letter))
                    .collect();
                policy_push::consume::admin::ensure_topics(&cfg, &list, partitions)
                    .await
                    .expect("create topics");
            }
        }
    }
}

impl Broker {
    /// A client configuration for this broker alone.
    pub fn client_config(&self) -> rdkafka::ClientConfig {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", self.bootstrap());
        c
    }

    /// Creates the input topics compacted, but `loose` (not compacted), and the
    /// dead-letter topic, through the admin API.
    pub async fn create_topics_compacted_but(&self, topics: &Topics, loose: &str, partitions: i32) {
        let list: Vec<(&str, bool)> = topics
            .inputs()
            .iter()
            .map(|t| (*t, *t != loose))
            .chain(std::iter::once((topics.dead_letter.as_str(), false)))
            .collect();
        policy_push::consume::admin::ensure_topics(&self.client_config(), &list, partitions)
            .await
            .expect("create topics");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Broker::Tansu { child, .. } = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn random_topics() -> Topics {
    let p = unique("t");
    Topics {
        profiles: format!("{p}.profiles"),
        data_sources: format!("{p}.data_sources"),
        policies: format!("{p}.policies"),
        impersonation: format!("{p}.impersonation"),
        dead_letter: format!("{p}.dead_letter"),
    }
}

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

/// Polls `check` until it holds or the deadline passes (then panics with `what`).
pub async fn wait_for<F, Fut>(what: &str, deadline: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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

pub async fn publish(config: &Config, records: &[Record]) {
    let producer =
        simulate::producer(&policy_push::pipeline::kafka_config(config)).expect("producer");
    let codec = policy_push::codec::Codec::embedded().expect("codec");
    simulate::publish(&producer, &config.topics, &codec, records)
        .await
        .expect("publish");
}

// ---- event builders -------------------------------------------------------------------

pub fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

pub fn profile(
    user: &str,
    version: i64,
    groups: &[&str],
    attrs: &[(&str, &[&str])],
    sources: &[&str],
) -> Record {
    let p = UserProfile {
        user: user.into(),
        version,
        groups: strings(groups),
        attributes: attrs
            .iter()
            .map(|(k, v)| (k.to_string(), strings(v)))
            .collect::<BTreeMap<_, _>>(),
        current_project: None,
        acknowledged_purposes: vec![],
        data_sources: strings(sources),
    };
    Record {
        kind: Kind::Profile,
        key: user.into(),
        value: Some(Event::Profile(p)),
    }
}

pub fn impersonation(user: &str, version: i64, allowed: bool) -> Record {
    Record {
        kind: Kind::Impersonation,
        key: user.into(),
        value: Some(Event::Impersonation(Impersonation {
            user: user.into(),
            version,
            allowed,
        })),
    }
}

pub fn tombstone(kind: Kind, key: &str) -> Record {
    Record {
        kind,
        key: key.into(),
        value: None,
    }
}

pub struct Ds<'a> {
    pub id: &'a str,
    pub version: i64,
    pub host: &'a str,
    pub database: &'a str,
    pub schema: &'a str,
    pub table: &'a str,
    pub view: &'a str,
    pub columns: &'a [(&'a str, &'a [&'a str])],
    pub tags: &'a [&'a str],
    pub status: Status,
}

/// An active data source over `raw.t`, whose view is `immuta.t`.
pub fn raw_t(db: &Database, version: i64, columns: &[(&str, &[&str])], tags: &[&str]) -> Record {
    data_source(Ds {
        id: "ds",
        version,
        host: HOST,
        database: &db.name,
        schema: "raw",
        table: "t",
        view: "t",
        columns,
        tags,
        status: Status::Active,
    })
}

/// A data source over `raw.t` whose view name validation refuses: dead-lettered when
/// consumed.
pub fn invalid_view(db: &Database, host: &str) -> Record {
    data_source(Ds {
        id: "ds-bad",
        version: 1,
        host,
        database: &db.name,
        schema: "raw",
        table: "t",
        view: "no spaces allowed",
        columns: &[("id", &[])],
        tags: &[],
        status: Status::Active,
    })
}

pub fn data_source(d: Ds<'_>) -> Record {
    let ds = DataSource {
        id: d.id.into(),
        version: d.version,
        host: d.host.into(),
        database: d.database.into(),
        schema: d.schema.into(),
        table: d.table.into(),
        view_name: d.view.into(),
        columns: d
            .columns
            .iter()
            .map(|(n, t)| Column {
                name: n.to_string(),
                data_type: "text".into(),
                tags: strings(t),
            })
            .collect(),
        tags: strings(d.tags),
        status: d.status,
    };
    Record {
        kind: Kind::DataSource,
        key: d.id.into(),
        value: Some(Event::DataSource(ds)),
    }
}

pub fn policy(
    id: &str,
    version: i64,
    rule: Rule,
    target_tags: &[&str],
    target_ids: &[&str],
    except_groups: &[&str],
) -> Record {
    let p = Policy {
        id: id.into(),
        version,
        status: Status::Active,
        target: Target {
            data_source_ids: strings(target_ids),
            tags: strings(target_tags),
        },
        rule,
        exceptions: Exceptions {
            groups: strings(except_groups),
            purposes: vec![],
        },
    };
    Record {
        kind: Kind::Policy,
        key: id.into(),
        value: Some(Event::Policy(p)),
    }
}

pub fn mask(tag: &str, method: MaskMethod, constant: Option<&str>) -> Rule {
    Rule::Mask(Mask {
        column_tag: tag.into(),
        method,
        constant: constant.map(String::from),
    })
}

pub fn matching(tag: &str, attribute: &str) -> Rule {
    Rule::RowFilter(RowFilter {
        kind: RowFilterKind::MatchingAttribute,
        column_tag: Some(tag.into()),
        attribute: Some(attribute.into()),
        group: None,
    })
}

pub fn member_of(group: &str) -> Rule {
    Rule::RowFilter(RowFilter {
        kind: RowFilterKind::MemberOfGroup,
        column_tag: None,
        attribute: None,
        group: Some(group.into()),
    })
}

/// `Some(v)` as the text PostgreSQL prints, for row comparisons.
pub fn row(cells: &[Option<&str>]) -> Vec<Option<String>> {
    cells.iter().map(|c| c.map(String::from)).collect()
}

/// Lower-case hex SHA-256, computed independently of the warehouse.
pub fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---- applying records straight to the warehouse (no Kafka) ----------------------------

/// Collects dead letters instead of publishing them.
#[derive(Default)]
pub struct Collect(pub std::sync::Mutex<Vec<policy_push::batch::DeadLetter>>);

impl policy_push::apply::DeadLetterSink for Collect {
    async fn publish(
        &self,
        letters: &[policy_push::batch::DeadLetter],
    ) -> Result<(), policy_push::apply::PublishError> {
        self.0.lock().unwrap().extend_from_slice(letters);
        Ok(())
    }
}

/// A bootstrapped database whose batches are applied by calling the warehouse directly,
/// one partition, offsets counting up.
pub struct Direct {
    pub db: Database,
    pub config: Config,
    pub warehouse: policy_push::apply::Warehouse,
    pub dead: Collect,
    offset: std::sync::atomic::AtomicI64,
}

impl Direct {
    pub async fn new(raw_sql: &str) -> Self {
        Self::with(raw_sql, |_| {}).await
    }

    /// `new`, with the integration's config changed by `edit` before bootstrap.
    pub async fn with(raw_sql: &str, edit: impl FnOnce(&mut Config)) -> Self {
        let mut db = Database::create().await;
        let mut config = config(
            &Broker::External("127.0.0.1:9".into()),
            &random_topics(),
            &mut db,
            "d",
            HOST,
        );
        edit(&mut config);
        let warehouse =
            policy_push::apply::Warehouse::new(&config.integrations[0]).expect("warehouse");
        warehouse.bootstrap().await.expect("bootstrap");
        if !raw_sql.is_empty() {
            db.client()
                .await
                .batch_execute(raw_sql)
                .await
                .expect("raw tables");
        }
        Direct {
            db,
            config,
            warehouse,
            dead: Collect::default(),
            offset: Default::default(),
        }
    }

    pub fn impersonator_role(&self) -> &str {
        &self.config.integrations[0].impersonator_role
    }

    /// A warehouse whose new sessions start with `setting = value` (a database default
    /// set by the superuser), as a server configured that way would give them.
    pub async fn warehouse_with(
        &self,
        setting: &str,
        value: &str,
    ) -> policy_push::apply::Warehouse {
        self.db
            .client()
            .await
            .batch_execute(&format!(
                "ALTER DATABASE {} SET {setting} = {value}",
                self.db.name
            ))
            .await
            .expect("database default");
        policy_push::apply::Warehouse::new(&self.config.integrations[0]).expect("warehouse")
    }

    /// The offset the next `batch` starts at.
    pub fn next_offset(&self) -> i64 {
        self.offset.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The batch these records make, starting at the next offset.
    pub fn batch(&self, records: &[Record]) -> policy_push::batch::Batch {
        use std::sync::atomic::Ordering;
        let start = self
            .offset
            .fetch_add(records.len() as i64, Ordering::SeqCst);
        self.batch_at(records, start, (start > 0).then_some(start))
    }

    /// The batch these records make at offsets from `start`, expecting the stored
    /// offset `expected` (None: no offsets row yet), as a re-read would make it.
    pub fn batch_at(
        &self,
        records: &[Record],
        start: i64,
        expected: Option<i64>,
    ) -> policy_push::batch::Batch {
        use policy_push::batch::{Body, Item, Raw, TopicPartition};
        let tp = TopicPartition {
            topic: std::sync::Arc::from("t"),
            partition: 0,
        };
        let mut b = policy_push::batch::Batch::default();
        for (i, r) in records.iter().enumerate() {
            let raw = Raw {
                key: Some(r.key.clone().into_bytes().into()),
                value: Some(Box::from(&[0u8][..])),
                meta: None,
            };
            let body = match &r.value {
                Some(e) => Body::Upsert(e.clone(), raw),
                None => Body::Delete {
                    kind: r.kind,
                    key: r.key.clone(),
                    raw,
                },
            };
            let item = Item {
                tp: tp.clone(),
                generation: 1,
                offset: start + i as i64,
                timestamp_ms: None,
                size: 1,
                body,
            };
            b.push(item, expected);
        }
        b
    }

    pub async fn apply(&self, records: &[Record]) -> policy_push::apply::Applied {
        self.warehouse
            .apply("direct", &self.batch(records), &self.dead)
            .await
            .expect("apply")
    }
}

/// GET `path` from a local policy-push HTTP server; returns (status, body).
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    policy_push::telemetry::http_get(&format!("127.0.0.1:{port}"), path)
        .await
        .ok()
}

/// `/health` as JSON; null when it cannot be read.
pub async fn health_json(port: u16) -> serde_json::Value {
    let (_, body) = http_get(port, "/health").await.unwrap_or_default();
    serde_json::from_str(&body).unwrap_or_default()
}

/// An integration's state on `/health` (`healthy`, `failing`, ...); empty when unknown.
pub async fn health_state(port: u16, integration: &str) -> String {
    health_json(port).await["integrations"][integration]["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

pub fn free_tcp_port() -> u16 {
    free_port()
}

/// No offset applied twice (audit log), and live profiles equal the newest record per user.
pub async fn assert_exactly_once(db: &Database, records: &[Record]) {
    let client = db.client().await;
    let dupes = rows(&client, "SELECT topic, partition, \"offset\" FROM immuta_system.apply_log GROUP BY 1, 2, 3 HAVING count(*) > 1")
        .await
        .unwrap();
    assert!(
        dupes.is_empty(),
        "{}: records applied twice: {dupes:?}",
        db.name
    );
    assert_latest_profiles(db, records).await;
}

/// Live profiles equal the newest record per user.
pub async fn assert_latest_profiles(db: &Database, records: &[Record]) {
    let client = db.client().await;
    let live = rows(
        &client,
        "SELECT user_name, version FROM immuta_system.profile WHERE NOT deleted ORDER BY 1",
    )
    .await
    .unwrap();
    let want: Vec<Vec<Option<String>>> = simulate::expected_state(records)
        .iter()
        .filter(|((kind, _), _)| *kind == Kind::Profile)
        .filter_map(|((_, key), v)| {
            v.as_ref()
                .map(|v| vec![Some(key.clone()), Some(v.version().to_string())])
        })
        .collect();
    assert_eq!(
        live, want,
        "{}: profiles equal the newest record per user",
        db.name
    );
}

/// A record read back from the dead-letter topic.
pub struct Letter {
    pub reason: String,
    pub topic: String,
    pub integration: String,
    pub value: Option<Vec<u8>>,
}

/// Reads `want` dead letters from the start of the dead-letter topic (60 s deadline).
pub async fn read_dead_letters(config: &policy_push::Config, want: usize) -> Vec<Letter> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    let mut cfg = policy_push::pipeline::kafka_config(config);
    cfg.set("group.id", unique("dlq-reader"))
        .set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer = cfg.create().unwrap();
    consumer.subscribe(&[&config.topics.dead_letter]).unwrap();
    let dl = config.topics.dead_letter.clone();
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        let start = std::time::Instant::now();
        while out.len() < want {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "only {} dead letters on {dl}",
                out.len()
            );
            let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let header = |name: &str| {
                m.headers()
                    .and_then(|h| {
                        h.iter()
                            .find(|x| x.key == name)
                            .and_then(|x| x.value.map(|v| String::from_utf8_lossy(v).to_string()))
                    })
                    .unwrap_or_default()
            };
            out.push(Letter {
                reason: header("policy_push.error"),
                topic: header("policy_push.topic"),
                integration: header("policy_push.integration"),
                value: m.payload().map(<[u8]>::to_vec),
            });
        }
        out
    })
    .await
    .unwrap()
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

// ---- an analyst's look-alikes of the built-ins views use --------------------------------

/// Every built-in a generated view uses, planted in `public` by an analyst where PUBLIC
/// may create (the default before PostgreSQL 15, kept by pg_upgrade, and Redshift's),
/// each matching the arguments a view passes better than the built-in does, or as well:
/// `&&` answering true would meet every group exception, `convert_to` would hash the
/// wrong bytes, `unnest` would meet every purpose exception, `to_char` would print every
/// date alike.
pub const PLANTED: &str = r#"
CREATE FUNCTION public.pp_true(text[], text[]) RETURNS boolean LANGUAGE sql AS 'SELECT true';
CREATE OPERATOR public.&& (LEFTARG = text[], RIGHTARG = text[], FUNCTION = public.pp_true);
CREATE FUNCTION public.pp_eq(text, text) RETURNS boolean LANGUAGE sql AS 'SELECT true';
CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.pp_eq);
CREATE FUNCTION public.pp_arrow(jsonb, text) RETURNS jsonb LANGUAGE sql AS $$SELECT '["eu", "us"]'::jsonb$$;
CREATE OPERATOR public.-> (LEFTARG = jsonb, RIGHTARG = text, FUNCTION = public.pp_arrow);
CREATE FUNCTION public.pp_cat(text, text) RETURNS text LANGUAGE sql AS $$SELECT 'x'$$;
CREATE OPERATOR public.|| (LEFTARG = text, RIGHTARG = text, FUNCTION = public.pp_cat);
CREATE FUNCTION public.convert_to(text, text) RETURNS bytea LANGUAGE sql AS $$SELECT '\x00'::bytea$$;
CREATE FUNCTION public.unnest(text[]) RETURNS SETOF text LANGUAGE sql AS $$SELECT 'fraud'$$;
CREATE FUNCTION public.jsonb_array_elements_text(jsonb) RETURNS SETOF text LANGUAGE sql AS $$VALUES ('eu'), ('us')$$;
CREATE FUNCTION public.sha256(bytea) RETURNS bytea LANGUAGE sql AS $$SELECT '\x00'::bytea$$;
CREATE FUNCTION public.encode(bytea, text) RETURNS text LANGUAGE sql AS $$SELECT 'planted'$$;
CREATE FUNCTION public.to_char(timestamp, text) RETURNS text LANGUAGE sql AS $$SELECT '1'$$;
CREATE FUNCTION public.to_char(date, text) RETURNS text LANGUAGE sql AS $$SELECT '1'$$;
CREATE FUNCTION public.rtrim(text, text) RETURNS text LANGUAGE sql AS $$SELECT ''$$;
CREATE FUNCTION public.replace(text, text, text) RETURNS text LANGUAGE sql AS $$SELECT '1'$$;
CREATE FUNCTION public.isfinite(date) RETURNS boolean LANGUAGE sql AS 'SELECT false';
CREATE FUNCTION public.timezone(text, timestamptz) RETURNS timestamp LANGUAGE sql AS $$SELECT 'epoch'::timestamp$$;
"#;

/// Lets PUBLIC create in `public` and plants [`PLANTED`] as a fresh analyst login.
pub async fn plant_builtins(db: &mut Database) {
    let mallory = db.role("mallory", true).await;
    db.client()
        .await
        .batch_execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
        .await
        .expect("PUBLIC may create in public");
    db.as_role(&mallory)
        .await
        .batch_execute(PLANTED)
        .await
        .expect("the analyst plants look-alikes");
}
