//! The warehouse side alone, against real PostgreSQL: bootstrap, and what one batch
//! transaction does.

mod common;

use std::sync::Arc;

use common::*;
use policy_push::apply::{DeadLetterSink, Warehouse};
use policy_push::batch::{Batch, Body, DeadLetter, Item, Raw, TopicPartition};
use policy_push::event::{MaskMethod, Status};
use policy_push::simulate::Record;

struct NoDeadLetters;

impl DeadLetterSink for NoDeadLetters {
    async fn publish(&self, letters: &[DeadLetter]) -> Result<(), String> {
        panic!("unexpected dead letters: {letters:?}");
    }
}

fn batch(records: &[Record], first_offset: i64, expected: Option<i64>) -> Batch {
    let mut b = Batch::default();
    let tp = TopicPartition {
        topic: Arc::from("t"),
        partition: 0,
    };
    for (i, r) in records.iter().enumerate() {
        let body = match &r.value {
            Some(e) => Body::Upsert(e.clone(), Raw::default()),
            None => Body::Delete {
                kind: r.kind,
                key: r.key.clone(),
                raw: Raw::default(),
            },
        };
        let item = Item {
            tp: tp.clone(),
            generation: 1,
            offset: first_offset + i as i64,
            timestamp_ms: None,
            size: 1,
            body,
        };
        b.push(item, expected);
    }
    b
}

async fn setup() -> (Database, policy_push::Config) {
    let broker = Broker::External("127.0.0.1:9".into());
    let mut db = Database::create().await;
    let config = config(&broker, &random_topics(), &mut db, "w", HOST);
    (db, config)
}

#[tokio::test]
async fn bootstrap_is_idempotent_concurrent_and_grants_only_what_the_reference_says() {
    let (mut db, config) = setup().await;
    let w = Warehouse::new(&config.integrations[0]).unwrap();
    let (a, b) = tokio::join!(w.bootstrap(), w.bootstrap());
    a.unwrap();
    b.unwrap();
    w.bootstrap().await.unwrap();

    let analyst = db.role("analyst", true).await;
    let client = db.client().await;
    let check = |sql: String| {
        let client = &client;
        async move { rows(client, &sql).await.unwrap()[0][0].clone().unwrap() }
    };
    assert_eq!(
        check(format!(
            "SELECT has_table_privilege('{analyst}', 'immuta_system.profile', 'SELECT')"
        ))
        .await,
        "f"
    );
    assert_eq!(
        check(format!(
            "SELECT has_table_privilege('{analyst}', 'immuta_system.offsets', 'UPDATE')"
        ))
        .await,
        "f"
    );
    assert_eq!(
        check(format!(
            "SELECT has_table_privilege('{analyst}', 'immuta_system.user_profile', 'SELECT')"
        ))
        .await,
        "t"
    );
    assert_eq!(
        check(format!(
            "SELECT has_function_privilege('{analyst}', 'immuta_procedures.upsert_profile(text,bigint,text[],jsonb,text,text[],text[],text[])', 'EXECUTE')"
        ))
        .await,
        "f",
        "analysts must not call the apply procedures"
    );
    assert_eq!(check(format!("SELECT has_function_privilege('{analyst}', 'immuta_procedures.impersonate_user(text)', 'EXECUTE')")).await, "t");
    assert_eq!(
        check(format!(
            "SELECT has_schema_privilege('{analyst}', 'immuta', 'CREATE')"
        ))
        .await,
        "f"
    );
    let err = db
        .as_role(&analyst)
        .await
        .batch_execute("CALL immuta_procedures.impersonate_user('someone')")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("may not impersonate") || format!("{err:?}").contains("42501"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_batch_rebuilds_each_touched_view_once_and_profiles_rebuild_none() {
    let (db, config) = setup().await;
    let w = Warehouse::new(&config.integrations[0]).unwrap();
    w.bootstrap().await.unwrap();
    db.client()
        .await
        .batch_execute("CREATE SCHEMA raw; CREATE TABLE raw.a (id int, email text); CREATE TABLE raw.b (id int, email text); CREATE TABLE raw.c (id int, email text);")
        .await
        .unwrap();
    let ds = |id: &str, table: &str, tags: &[&str]| {
        let (id, table) = (id.to_string(), table.to_string());
        let tags: Vec<&str> = tags.to_vec();
        data_source(Ds {
            id: &id,
            version: 1,
            host: HOST,
            database: &db.name,
            schema: "raw",
            table: &table,
            view: &table,
            columns: &[("id", &[]), ("email", &["pii"])],
            tags: &tags,
            status: Status::Active,
        })
    };
    let group = "g";
    let first = vec![
        ds("a", "a", &["sales"]),
        ds("b", "b", &["sales"]),
        ds("c", "c", &["hr"]),
    ];
    let applied = w
        .apply(group, &batch(&first, 0, None), &NoDeadLetters)
        .await
        .unwrap();
    assert_eq!(applied.views_rebuilt, 3);

    // Two policies on tag `sales`, several versions each, in one batch: views a and b,
    // once each; c untouched.
    let second: Vec<Record> = (1..=3)
        .flat_map(|v| {
            [
                policy(
                    "p1",
                    v,
                    mask("pii", MaskMethod::Hash, None),
                    &["sales"],
                    &[],
                    &[],
                ),
                policy(
                    "p2",
                    v,
                    mask("pii", MaskMethod::Nullify, None),
                    &["sales"],
                    &[],
                    &[],
                ),
            ]
        })
        .collect();
    let applied = w
        .apply(group, &batch(&second, 3, Some(3)), &NoDeadLetters)
        .await
        .unwrap();
    assert_eq!(applied.views_rebuilt, 2, "{applied:?}");
    assert_eq!(
        applied.changes, 2,
        "only the newest version of each policy is applied"
    );

    let third = vec![
        profile("someone", 1, &[], &[], &["a"]),
        profile("someone", 2, &[], &[], &["a", "b"]),
    ];
    let applied = w
        .apply(group, &batch(&third, 9, Some(9)), &NoDeadLetters)
        .await
        .unwrap();
    assert_eq!(
        applied.views_rebuilt, 0,
        "profile changes never rebuild views"
    );

    // Retargeting p1 away from `sales` rebuilds the views it leaves and the one it joins.
    let fourth = vec![policy(
        "p1",
        4,
        mask("pii", MaskMethod::Hash, None),
        &["hr"],
        &[],
        &[],
    )];
    let applied = w
        .apply(group, &batch(&fourth, 11, Some(11)), &NoDeadLetters)
        .await
        .unwrap();
    assert_eq!(applied.views_rebuilt, 3, "{applied:?}");

    // A stale expected offset is fenced and changes nothing.
    let stale = w
        .apply(group, &batch(&fourth, 11, Some(11)), &NoDeadLetters)
        .await;
    assert!(
        matches!(stale, Err(policy_push::apply::ApplyError::Fenced(_))),
        "{stale:?}"
    );
}
