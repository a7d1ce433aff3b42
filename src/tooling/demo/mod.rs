//! `policy-push demo`: the whole pipeline on one machine in one command.
//!
//! Starts librdkafka's in-process mock cluster (unless `--bootstrap-servers` or
//! `KAFKA_BOOTSTRAP` names a real one), (re)creates a demo database on the local PostgreSQL,
//! bootstraps it, publishes two analysts' profiles, a data source, two policies and a
//! simulated workload, runs the pipeline until it has caught up, and prints what each
//! analyst sees through the same view. The analysts are real login roles. At the end the
//! database and the demo's roles are dropped, unless `--keep` leaves them so that you can
//! `psql -U demo_alice policy_push_demo` and look for yourself. A database of that name
//! that an earlier demo did not make (its comment says so) is never dropped.

use policy_push::event::{
    Column, DataSource, Event, Exceptions, Kind, Mask, MaskMethod, Policy, RowFilter,
    RowFilterKind, Rule, Status, Target, UserProfile,
};

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use rdkafka::mocking::MockCluster;
use tokio_postgres::{NoTls, SimpleQueryMessage};
use tokio_util::sync::CancellationToken;

use policy_push::apply::Warehouse;
use policy_push::codec::Codec;
use policy_push::config::{Config, Integration};
use policy_push::simulate::{self, Record};

mod database;
pub use database::database_url;
use database::{clean_up, prepare_database};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// An administrative connection to the local PostgreSQL server.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub admin_url: String,
    /// Database to create for the demo.
    #[arg(long, default_value = "policy_push_demo")]
    pub database: String,
    /// Kafka bootstrap servers; without it an in-process mock cluster is used.
    #[arg(long, env = "KAFKA_BOOTSTRAP")]
    pub bootstrap_servers: Option<String>,
    /// Keep the database and the demo's roles afterwards, to look with psql; by default
    /// they are dropped at the end.
    #[arg(long)]
    pub keep: bool,
}

const ANALYSTS: [&str; 2] = ["demo_alice", "demo_bob"];
/// The impersonator role of the demo's integration (`demo_config`).
const IMPERSONATOR: &str = "policy_push_demo_impersonator";

fn demo_config(bootstrap: &str, db_url: &str) -> anyhow::Result<Config> {
    let text = format!(
        r#"
[kafka]
"bootstrap.servers" = {bootstrap:?}
[batch]
linger_ms = 50
[http]
listen = ""
[[integration]]
name = "demo"
host = "127.0.0.1"
url = {db_url:?}
impersonator_role = {IMPERSONATOR:?}
"#
    );
    Ok(Config::from_toml(&text, std::env::vars())?)
}

/// The hand-written part of the story: two analysts, one table, two policies.
fn story(db: &str) -> Vec<Record> {
    let col = |n: &str, t: &[&str]| Column {
        name: n.into(),
        data_type: "text".into(),
        tags: t.iter().map(|s| s.to_string()).collect(),
    };
    let ds = DataSource {
        id: "demo-orders".into(),
        version: 1,
        host: "127.0.0.1".into(),
        database: db.into(),
        schema: "demo".into(),
        table: "orders".into(),
        view_name: "orders".into(),
        columns: vec![
            col("id", &[]),
            col("customer_email", &["pii"]),
            col("region", &["geo"]),
            col("amount", &[]),
        ],
        tags: vec!["sales".into()],
        status: Status::Active,
    };
    let target = Target {
        data_source_ids: vec![],
        tags: vec!["sales".into()],
    };
    let mask = Policy {
        id: "demo-pol-1-mask-email".into(),
        version: 1,
        status: Status::Active,
        target: target.clone(),
        rule: Rule::Mask(Mask {
            column_tag: "pii".into(),
            method: MaskMethod::Hash,
            constant: None,
        }),
        exceptions: Exceptions {
            groups: vec!["privacy_officers".into()],
            purposes: vec![],
        },
    };
    let region = Policy {
        id: "demo-pol-2-region".into(),
        version: 1,
        status: Status::Active,
        target,
        rule: Rule::RowFilter(RowFilter {
            kind: RowFilterKind::MatchingAttribute,
            column_tag: Some("geo".into()),
            attribute: Some("region".into()),
            group: None,
        }),
        exceptions: Exceptions::default(),
    };
    let profile = |user: &str, groups: &[&str], regions: &[&str]| UserProfile {
        user: user.into(),
        version: 1,
        groups: groups.iter().map(|s| s.to_string()).collect(),
        attributes: BTreeMap::from([(
            "region".into(),
            regions.iter().map(|s| s.to_string()).collect(),
        )]),
        current_project: None,
        acknowledged_purposes: vec![],
        data_sources: vec!["demo-orders".into()],
    };
    let rec = |kind, key: &str, e: Event| Record {
        kind,
        key: key.into(),
        value: Some(e),
    };
    vec![
        rec(Kind::DataSource, "demo-orders", Event::DataSource(ds)),
        rec(Kind::Policy, &mask.id.clone(), Event::Policy(mask)),
        rec(Kind::Policy, &region.id.clone(), Event::Policy(region)),
        rec(
            Kind::Profile,
            ANALYSTS[0],
            Event::Profile(profile(ANALYSTS[0], &["analysts"], &["eu"])),
        ),
        rec(
            Kind::Profile,
            ANALYSTS[1],
            Event::Profile(profile(
                ANALYSTS[1],
                &["analysts", "privacy_officers"],
                &["us", "apac"],
            )),
        ),
    ]
}

/// Waits until the integration's stored offsets reach the end of every input partition
/// (as it was when the wait began: everything is published before).
pub async fn wait_caught_up(
    config: &Config,
    integration: &Integration,
    deadline: Duration,
) -> anyhow::Result<()> {
    let warehouse = Warehouse::new(integration)?;
    let group = integration.consumer_group(&config.consumer.group_prefix);
    let kafka = policy_push::pipeline::kafka_config(config);
    let topics: Vec<String> = config.topics.inputs().map(String::from).to_vec();
    let client = std::sync::Arc::new(policy_push::offsets::metadata_client(&kafka)?);
    let marks =
        policy_push::offsets::watermarks_blocking(client, topics, Duration::from_secs(5)).await?;
    let target = policy_push::offsets::caught_up::Target::watermarks(&marks);
    let started = Instant::now();
    policy_push::offsets::caught_up::wait(
        &warehouse,
        &group,
        &target,
        Duration::from_millis(200),
        |r| {
            if started.elapsed() > deadline {
                bail!(
                    "pipeline still {} records behind after {deadline:?}",
                    r.total - r.done
                );
            }
            Ok(())
        },
    )
    .await?;
    Ok(())
}

async fn show(db_url: &str, analyst: &str) -> anyhow::Result<()> {
    let mut cfg: tokio_postgres::Config = db_url.parse()?;
    cfg.user(analyst);
    let (client, conn) = cfg.connect(NoTls).await?;
    tokio::spawn(conn);
    println!("\n{analyst} sees immuta.orders:");
    println!(
        "  {:<4} {:<66} {:<7} amount",
        "id", "customer_email", "region"
    );
    for msg in client
        .simple_query("SELECT id, customer_email, region, amount FROM immuta.orders ORDER BY id")
        .await?
    {
        if let SimpleQueryMessage::Row(r) = msg {
            let cell = |i| r.get(i).unwrap_or("NULL").to_string();
            println!(
                "  {:<4} {:<66} {:<7} {}",
                cell(0),
                cell(1),
                cell(2),
                cell(3)
            );
        }
    }
    Ok(())
}

pub async fn run(args: &DemoArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let db_url = prepare_database(args).await?;
    // The mock cluster lives as long as this function: the pipeline runs inside it.
    let mock = match &args.bootstrap_servers {
        Some(_) => None,
        None => {
            Some(MockCluster::new(1).context("cannot start the in-process Kafka mock cluster")?)
        }
    };
    let bootstrap = match (&mock, &args.bootstrap_servers) {
        (Some(m), _) => m.bootstrap_servers(),
        (None, Some(b)) => b.clone(),
        (None, None) => unreachable!("one of the two is set above"),
    };
    let config = demo_config(&bootstrap, &db_url)?;
    let integration = config.integrations[0].clone();
    let topics = config.topics.with_compaction();
    match &mock {
        Some(m) => {
            for (name, _) in topics {
                m.create_topic(name, 4, 1)?;
            }
        }
        None => {
            policy_push::consume::admin::ensure_topics(
                &policy_push::pipeline::kafka_config(&config),
                &topics,
                4,
            )
            .await?
        }
    }
    println!(
        "Kafka: {}",
        if mock.is_some() {
            format!("in-process mock cluster at {bootstrap}")
        } else {
            bootstrap.clone()
        }
    );
    println!("Warehouse: {}", policy_push::config::redact_url(&db_url));

    policy_push::apply::bootstrap_all(&config).await?;
    let database = integration.database()?;
    let spec = simulate::Spec {
        users: 500,
        data_sources: 5,
        policies: 5,
        changes: 5000,
        host: integration.host.clone(),
        database: database.clone(),
        ..simulate::Spec::default()
    };
    let (client, conn) = integration.pg_config()?.connect(NoTls).await?;
    tokio::spawn(conn);
    simulate::create_raw_tables(&client, &spec).await?;
    let mut records = simulate::workload(&spec);
    records.extend(story(&database));
    let producer = simulate::producer(&policy_push::pipeline::kafka_config(&config))?;
    simulate::publish(&producer, &config.topics, &Codec::embedded()?, &records).await?;
    let sent = records.len();
    println!("Published {sent} change events (simulated workload plus the demo story).");

    let pipeline_stop = shutdown.child_token();
    let pipeline = tokio::spawn(policy_push::run(config.clone(), pipeline_stop.clone()));
    let started = Instant::now();
    let caught_up = wait_caught_up(&config, &integration, Duration::from_secs(120)).await;
    pipeline_stop.cancel();
    pipeline.await??;
    caught_up?;
    println!(
        "Pipeline applied everything in {:.1}s.",
        started.elapsed().as_secs_f64()
    );
    println!("\nPolicies on immuta.orders: e-mail hashed unless in group privacy_officers; rows only for the analyst's regions.");
    for a in ANALYSTS {
        show(&db_url, a).await?;
    }
    drop(mock);
    if args.keep {
        println!(
            "\nKept database {0} and the roles {1}, {IMPERSONATOR}: `psql -h 127.0.0.1 -U {2} {0}`. The next demo drops them, or: DROP DATABASE {0} WITH (FORCE); DROP ROLE {1}, {IMPERSONATOR};",
            args.database,
            ANALYSTS.join(", "),
            ANALYSTS[0]
        );
        return Ok(());
    }
    clean_up(args).await
}
