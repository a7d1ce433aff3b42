//! End to end: events on Kafka → pipeline → PostgreSQL views, checked as real login roles.

mod common;

use std::time::Duration;

use common::*;
use policy_push::event::{Kind, MaskMethod, Status};
use policy_push::simulate::Record;

const RAW: &str = "
CREATE SCHEMA raw;
CREATE TABLE raw.orders (id integer, email text, region text);
INSERT INTO raw.orders VALUES (1, 'a@x.io', 'eu'), (2, 'b@x.io', 'us'), (3, NULL, 'eu');
CREATE TABLE raw.salaries (id integer, salary integer);
INSERT INTO raw.salaries VALUES (1, 100), (2, 200);
CREATE TABLE raw.archive (id integer);
INSERT INTO raw.archive VALUES (1);
";

struct Cast {
    alice: String,
    bob: String,
    carol: String,
    dave: String,
}

fn orders(db: &str, version: i64) -> Record {
    data_source(Ds {
        id: "ds-orders",
        version,
        host: HOST,
        database: db,
        schema: "raw",
        table: "orders",
        view: "orders",
        columns: &[("id", &[]), ("email", &["pii"]), ("region", &["geo"])],
        tags: &["sales"],
        status: Status::Active,
    })
}

fn archive(db: &str, version: i64, status: Status) -> Record {
    data_source(Ds {
        id: "ds-archive",
        version,
        host: HOST,
        database: db,
        schema: "raw",
        table: "archive",
        view: "archive",
        columns: &[("id", &[])],
        tags: &[],
        status,
    })
}

fn phase_one(db: &str, c: &Cast) -> Vec<Record> {
    vec![
        orders(db, 1),
        data_source(Ds {
            id: "ds-salaries",
            version: 1,
            host: HOST,
            database: db,
            schema: "raw",
            table: "salaries",
            view: "salaries",
            columns: &[("id", &[]), ("salary", &[])],
            tags: &["hr"],
            status: Status::Active,
        }),
        archive(db, 1, Status::Active),
        // Another host's data source: skipped, no view here.
        data_source(Ds {
            id: "ds-elsewhere",
            version: 1,
            host: "warehouse-b.example",
            database: db,
            schema: "raw",
            table: "orders",
            view: "elsewhere",
            columns: &[("id", &[])],
            tags: &["sales"],
            status: Status::Active,
        }),
        policy(
            "p1-hash-email",
            1,
            mask("pii", MaskMethod::Hash, None),
            &["sales"],
            &[],
            &["auditors"],
        ),
        policy(
            "p2-region",
            1,
            matching("geo", "region"),
            &["sales"],
            &[],
            &[],
        ),
        policy("p3-hr-only", 1, member_of("hr"), &[], &["ds-salaries"], &[]),
        // Masks the column the region filter reads: filters must still see raw values.
        policy(
            "p4-null-region",
            1,
            mask("geo", MaskMethod::Nullify, None),
            &[],
            &["ds-orders"],
            &["auditors"],
        ),
        profile(
            &c.alice,
            1,
            &[],
            &[("region", &["eu"])],
            &["ds-orders", "ds-salaries"],
        ),
        profile(
            &c.bob,
            1,
            &["auditors", "hr"],
            &[("region", &["us"])],
            &["ds-orders", "ds-salaries"],
        ),
        profile(&c.carol, 1, &[], &[("region", &["eu"])], &["ds-orders"]),
        profile(&c.carol, 3, &[], &[("region", &["us"])], &["ds-orders"]),
        // Older than the one before it: must be ignored.
        profile(&c.carol, 2, &[], &[("region", &["eu"])], &["ds-orders"]),
        profile(
            &c.dave,
            1,
            &[],
            &[("region", &["eu", "us"])],
            &["ds-orders"],
        ),
    ]
}

fn phase_two(db: &str, c: &Cast) -> Vec<Record> {
    vec![
        tombstone(Kind::Profile, &c.dave),
        // Stale across batches: the stored version is 3.
        profile(&c.carol, 2, &[], &[("region", &["eu"])], &["ds-orders"]),
        archive(db, 2, Status::Disabled),
        policy(
            "p1-hash-email",
            2,
            mask("pii", MaskMethod::Constant, Some("***")),
            &["sales"],
            &[],
            &["auditors"],
        ),
        tombstone(Kind::Policy, "p2-region"),
        // A stale data-source record must not bring back old columns.
        orders(db, 0),
    ]
}

async fn view_exists(db: &Database, view: &str) -> bool {
    let r = rows(
        &db.client().await,
        &format!("SELECT to_regclass('immuta.{view}') IS NOT NULL"),
    )
    .await
    .expect("to_regclass");
    r[0][0].as_deref() == Some("t")
}

const ORDERS: &str = "SELECT id, email, region FROM immuta.orders ORDER BY id";

async fn policies_reach_analysts(broker: Broker) {
    let (mut db, config) = setup(&broker, 4, "a").await;
    db.client()
        .await
        .batch_execute(RAW)
        .await
        .expect("raw tables");
    let cast = Cast {
        alice: db.role("alice", true).await,
        bob: db.role("bob", true).await,
        carol: db.role("carol", true).await,
        dave: db.role("dave", true).await,
    };
    let one = phase_one(&db.name, &cast);
    publish(&config, &one).await;
    let running = start(&config);
    wait_applied(&db, &config, one.len()).await;

    let h = |s: &str| Some(sha256_hex(s));
    let as_rows = |v: Vec<(&str, Option<String>, Option<&str>)>| -> Vec<Vec<Option<String>>> {
        v.into_iter()
            .map(|(id, e, r)| vec![Some(id.to_string()), e, r.map(String::from)])
            .collect()
    };
    assert_eq!(
        db.rows_as(&cast.alice, ORDERS).await.unwrap(),
        as_rows(vec![("1", h("a@x.io"), None), ("3", None, None)]),
        "HASH keeps NULL; NULLIFY hides the region that the row filter still reads"
    );
    assert_eq!(
        db.rows_as(&cast.bob, ORDERS).await.unwrap(),
        as_rows(vec![("2", Some("b@x.io".into()), Some("us"))])
    );
    assert_eq!(
        db.rows_as(&cast.carol, ORDERS).await.unwrap(),
        as_rows(vec![("2", h("b@x.io"), None)]),
        "newest version wins"
    );
    assert_eq!(db.rows_as(&cast.dave, ORDERS).await.unwrap().len(), 3);
    let salaries = "SELECT id, salary FROM immuta.salaries ORDER BY id";
    assert!(
        db.rows_as(&cast.alice, salaries).await.unwrap().is_empty(),
        "alice is not in hr"
    );
    assert_eq!(db.rows_as(&cast.bob, salaries).await.unwrap().len(), 2);
    assert!(view_exists(&db, "archive").await);
    assert!(
        !view_exists(&db, "elsewhere").await,
        "another host's data source must not get a view"
    );
    assert_eq!(
        sqlstate(
            &db.rows_as(&cast.alice, "SELECT * FROM immuta_system.profile")
                .await
        ),
        Some(INSUFFICIENT_PRIVILEGE),
        "profile is private"
    );
    assert_eq!(
        sqlstate(&db.rows_as(&cast.alice, "SELECT * FROM raw.orders").await),
        Some(INSUFFICIENT_PRIVILEGE),
        "raw tables are not opened up"
    );

    let two = phase_two(&db.name, &cast);
    publish(&config, &two).await;
    wait_applied(&db, &config, one.len() + two.len()).await;
    let star = || Some("***".to_string());
    assert!(
        db.rows_as(&cast.dave, ORDERS).await.unwrap().is_empty(),
        "deleted profile sees nothing"
    );
    let carol_profile = "SELECT version, attributes->'region'->>0 FROM immuta_system.user_profile";
    assert_eq!(
        db.rows_as(&cast.carol, carol_profile).await.unwrap(),
        vec![row(&[Some("3"), Some("us")])],
        "a stale version in a later batch is ignored"
    );
    assert_eq!(
        db.rows_as(&cast.alice, ORDERS).await.unwrap(),
        as_rows(vec![
            ("1", star(), None),
            ("2", star(), None),
            ("3", star(), None)
        ]),
        "row filter deleted; CONSTANT replaces NULL too"
    );
    assert_eq!(
        db.rows_as(&cast.bob, ORDERS).await.unwrap()[0][1].as_deref(),
        Some("a@x.io"),
        "group exception"
    );
    assert!(
        !view_exists(&db, "archive").await,
        "disabled data source loses its view"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_reach_analysts_on_mock_cluster() {
    policies_reach_analysts(Broker::mock()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_reach_analysts_on_tansu() {
    policies_reach_analysts(Broker::tansu().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_from_stored_offsets_without_reapplying() {
    let broker = Broker::mock();
    let (db, mut config) = setup(&broker, 4, "r").await;
    config.batch.max_records = 50;
    let spec = policy_push::simulate::Spec {
        users: 300,
        data_sources: 0,
        policies: 0,
        changes: 3000,
        host: HOST.into(),
        database: db.name.clone(),
        ..Default::default()
    };
    let records = policy_push::simulate::workload(&spec);
    let (first, second) = records.split_at(records.len() / 2);
    publish(&config, first).await;

    let client = db.client().await;
    let group = config.integrations[0].consumer_group(&config.consumer.group_prefix);
    let running = start(&config);
    wait_for("a first commit", Duration::from_secs(60), || async {
        stored_total(&client, &group).await > 0
    })
    .await;
    running.stop().await;
    let at_stop = stored_total(&client, &group).await;
    assert!(at_stop > 0);

    publish(&config, second).await;
    let running = start(&config);
    wait_applied(&db, &config, records.len()).await;
    running.stop().await;

    assert_exactly_once(&db, &records).await;
}

/// While a batch waits on the warehouse (here: a lock on the profile table), the next one
/// takes in the backlog past `max_records`, one entry per user, so each user is written
/// about once instead of once per change. With the next batch capped at `max_records`, as
/// before, every record of these rounds was written: ten in a row never repeat a user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_behind_a_slow_batch_is_written_once_per_user() {
    let broker = Broker::mock();
    let (db, mut config) = setup(&broker, 1, "b").await;
    config.batch.max_records = 10;
    config.batch.backlog_entries = 1000;
    let users: Vec<String> = (0..50).map(|u| format!("user{u:02}")).collect();
    let records: Vec<Record> = (1..=20)
        .flat_map(|version| {
            users
                .iter()
                .map(move |u| profile(u, version, &[], &[], &[]))
        })
        .collect();
    publish(&config, &records).await;

    let mut blocker = db.client().await;
    let lock = blocker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE immuta_system.profile IN EXCLUSIVE MODE")
        .await
        .unwrap();
    let watcher = db.client().await;
    let running = start(&config);
    wait_for(
        "a batch waiting on the lock",
        Duration::from_secs(60),
        || async {
            let waiting: i64 = watcher
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND wait_event_type = 'Lock'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            waiting > 0
        },
    )
    .await;
    lock.commit().await.unwrap();
    wait_applied(&db, &config, records.len()).await;
    running.stop().await;

    assert_exactly_once(&db, &records).await;
    let written: i64 = watcher
        .query_one(
            "SELECT count(*) FROM immuta_system.apply_log WHERE kind = 'profile'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        written <= 10 + 2 * users.len() as i64,
        "{written} profile rows written for {} changes of {} users",
        records.len(),
        users.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_are_dead_lettered_and_the_rest_applies() {
    let broker = Broker::mock();
    let (mut db, config) = setup(&broker, 1, "p").await;
    let topics = config.topics.clone();
    db.client()
        .await
        .batch_execute(RAW)
        .await
        .expect("raw tables");
    let alice = db.role("alice", true).await;

    let hostile = data_source(Ds {
        id: "ds-evil",
        version: 1,
        host: HOST,
        database: &db.name,
        schema: "raw",
        table: "orders",
        view: "x\"; drop table raw.orders; --",
        columns: &[("id", &[])],
        tags: &[],
        status: Status::Active,
    });
    let wrong_db = data_source(Ds {
        id: "ds-otherdb",
        version: 1,
        host: HOST,
        database: "some_other_db",
        schema: "raw",
        table: "orders",
        view: "otherdb",
        columns: &[("id", &[])],
        tags: &[],
        status: Status::Active,
    });
    let missing_table = data_source(Ds {
        id: "ds-missing",
        version: 1,
        host: HOST,
        database: &db.name,
        schema: "raw",
        table: "no_such_table",
        view: "missing",
        columns: &[("id", &[])],
        tags: &[],
        status: Status::Active,
    });
    let unusable = policy(
        "p-bad",
        1,
        mask("pii", MaskMethod::Constant, None),
        &["sales"],
        &[],
        &[],
    );
    let good = vec![
        orders(&db.name, 1),
        profile(&alice, 1, &[], &[], &["ds-orders"]),
    ];
    let mut records = vec![hostile, wrong_db, missing_table, unusable];
    records.extend(good);
    publish(&config, &records).await;

    // Bytes no encoder would write: Confluent framing without a registry, an unknown
    // schema fingerprint, and a valid record cut short.
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = policy_push::pipeline::kafka_config(&config)
        .create()
        .unwrap();
    let codec = policy_push::codec::Codec::embedded().unwrap();
    let valid = codec
        .encode(profile(&alice, 9, &[], &[], &[]).value.as_ref().unwrap())
        .unwrap();
    let raw: Vec<Vec<u8>> = vec![
        b"\x00\x00\x00\x00\x07garbage".to_vec(),
        [&[0xC3, 0x01, 1, 2, 3, 4, 5, 6, 7, 8][..], &valid[10..]].concat(),
        valid[..valid.len() / 2].to_vec(),
    ];
    for bytes in &raw {
        let record = FutureRecord::to(&topics.profiles)
            .key(alice.as_str())
            .payload(bytes);
        producer
            .send(record, Duration::from_secs(10))
            .await
            .unwrap();
    }
    let published = records.len() + raw.len();

    let running = start(&config);
    wait_applied(&db, &config, published).await;
    running.stop().await;

    assert_eq!(
        db.rows_as(&alice, "SELECT id FROM immuta.orders ORDER BY id")
            .await
            .unwrap()
            .len(),
        3,
        "good records still applied"
    );
    assert_eq!(
        rows(&db.client().await, "SELECT count(*) FROM raw.orders")
            .await
            .unwrap()[0][0]
            .as_deref(),
        Some("3")
    );

    let letters = read_dead_letters(&config, 7).await;
    let reasons: Vec<&str> = letters.iter().map(|l| l.reason.as_str()).collect();
    let has = |needle: &str| reasons.iter().any(|r| r.contains(needle));
    assert!(has("view_name"), "hostile identifier: {reasons:?}");
    assert!(has("is not the integration's database"), "{reasons:?}");
    assert!(
        has("no_such_table") || has("does not exist"),
        "warehouse-refused view: {reasons:?}"
    );
    assert!(has("CONSTANT mask needs constant"), "{reasons:?}");
    assert!(
        has("no [schema_registry] url"),
        "Confluent framing without a registry: {reasons:?}"
    );
    assert!(has("unknown writer schema fingerprint"), "{reasons:?}");
    assert!(
        has("does not match its writer schema"),
        "truncated datum: {reasons:?}"
    );
    let metrics = policy_push::telemetry::prometheus().render();
    assert!(
        metrics.contains("policy_push_records_dead_lettered_total{integration=\"p\"} 7"),
        "dead letters are counted: {}",
        metrics
            .lines()
            .filter(|l| l.contains("dead_lettered"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    for l in &letters {
        assert_eq!(l.integration, "p");
        assert!(
            l.topic == topics.profiles
                || l.topic == topics.data_sources
                || l.topic == topics.policies
        );
        assert!(l.value.is_some(), "original bytes are kept");
    }
    assert!(!view_exists(&db, "missing").await);
}
