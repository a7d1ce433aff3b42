//! A view name belongs to the first active data source that holds it (SPEC §4): another
//! data source naming it is dead-lettered with the owner's id and never replaces or
//! drops the owner's view, whether it is built, refused, renamed or disabled.

mod common;

use common::*;
use policy_push::event::Status;
use policy_push::simulate::Record;

const RAW: &str = "CREATE SCHEMA raw;
CREATE TABLE raw.mine (id int, secret text); INSERT INTO raw.mine VALUES (1, 'owner row');
CREATE TABLE raw.other (id int, secret text); INSERT INTO raw.other VALUES (2, 'intruder row');";

fn source(
    db: &Database,
    id: &str,
    version: i64,
    table: &str,
    view: &str,
    status: Status,
) -> Record {
    data_source(Ds {
        id,
        version,
        host: HOST,
        database: &db.name,
        schema: "raw",
        table,
        view,
        columns: &[("id", &[]), ("secret", &[])],
        tags: &[],
        status,
    })
}

async fn seen(env: &Direct, role: &str) -> Vec<Vec<Option<String>>> {
    env.db
        .rows_as(role, "SELECT id, secret FROM immuta.orders ORDER BY id")
        .await
        .expect("the owner's view exists")
}

fn letters_naming(env: &Direct, owner: &str) -> usize {
    let letters = env.dead.0.lock().unwrap();
    letters
        .iter()
        .filter(|l| {
            l.reason
                .contains(&format!("belongs to data source {owner}"))
        })
        .count()
}

/// Applies one version of `ds-intruder` over `raw.other`.
async fn intruder(env: &Direct, version: i64, view: &str, status: Status) {
    env.apply(&[source(
        &env.db,
        "ds-intruder",
        version,
        "other",
        view,
        status,
    )])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_source_cannot_take_over_or_drop_another_ones_view() {
    let mut env = Direct::new(RAW).await;
    let analyst = env.db.role("analyst", true).await;
    let owner_row = vec![row(&[Some("1"), Some("owner row")])];
    env.apply(&[
        source(&env.db, "ds-owner", 1, "mine", "orders", Status::Active),
        profile(&analyst, 1, &[], &[], &["ds-owner", "ds-intruder"]),
    ])
    .await;
    assert_eq!(seen(&env, &analyst).await, owner_row);

    // The intruder names the same view: dead-lettered with the owner's id, view unchanged.
    intruder(&env, 1, "orders", Status::Active).await;
    assert_eq!(
        seen(&env, &analyst).await,
        owner_row,
        "the view was replaced"
    );
    assert_eq!(letters_naming(&env, "ds-owner"), 1);

    // Refused for a missing table under the same name: the owner's view stays.
    let missing = source(
        &env.db,
        "ds-intruder",
        2,
        "missing",
        "orders",
        Status::Active,
    );
    env.apply(&[missing]).await;
    assert_eq!(
        seen(&env, &analyst).await,
        owner_row,
        "a refusal dropped it"
    );

    // Renamed away, back, then disabled: the owner's view stays throughout.
    intruder(&env, 3, "elsewhere", Status::Active).await;
    assert_eq!(seen(&env, &analyst).await, owner_row);
    intruder(&env, 4, "orders", Status::Active).await;
    intruder(&env, 5, "orders", Status::Disabled).await;
    assert_eq!(
        seen(&env, &analyst).await,
        owner_row,
        "disabling dropped it"
    );
    let views = "SELECT count(*) FROM pg_views WHERE schemaname = 'immuta'";
    let count = env.db.rows_as(&analyst, views).await.unwrap();
    assert_eq!(count, vec![row(&[Some("1")])], "the renamed view went");

    // Once the owner lets the name go, the data source waiting for it gets it.
    intruder(&env, 6, "orders", Status::Active).await;
    env.apply(&[source(
        &env.db,
        "ds-owner",
        2,
        "mine",
        "orders",
        Status::Disabled,
    )])
    .await;
    let intruder_row = vec![row(&[Some("2"), Some("intruder row")])];
    assert_eq!(seen(&env, &analyst).await, intruder_row);
}

/// Two new data sources naming one view in one batch: the lowest id gets it. Two that
/// swap names in one batch: each ends with the other's old name, and neither view is
/// dropped by the other's rename.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_in_one_batch_go_to_the_lowest_id_and_swaps_keep_both() {
    let mut env = Direct::new(RAW).await;
    let analyst = env.db.role("analyst", true).await;
    env.apply(&[
        source(&env.db, "ds-b", 1, "other", "orders", Status::Active),
        source(&env.db, "ds-a", 1, "mine", "orders", Status::Active),
        profile(&analyst, 1, &[], &[], &["ds-a", "ds-b"]),
    ])
    .await;
    let owner_row = vec![row(&[Some("1"), Some("owner row")])];
    assert_eq!(
        seen(&env, &analyst).await,
        owner_row,
        "ds-a has the lower id"
    );
    assert_eq!(letters_naming(&env, "ds-a"), 1);

    env.apply(&[source(
        &env.db,
        "ds-b",
        2,
        "other",
        "second",
        Status::Active,
    )])
    .await;
    env.apply(&[
        source(&env.db, "ds-a", 2, "mine", "second", Status::Active),
        source(&env.db, "ds-b", 3, "other", "orders", Status::Active),
    ])
    .await;
    let intruder_row = vec![row(&[Some("2"), Some("intruder row")])];
    assert_eq!(
        seen(&env, &analyst).await,
        intruder_row,
        "ds-b has orders now"
    );
    let second = env
        .db
        .rows_as(&analyst, "SELECT id, secret FROM immuta.second")
        .await
        .expect("ds-a has second");
    assert_eq!(second, owner_row);
}
