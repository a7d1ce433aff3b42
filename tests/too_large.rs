//! Fail closed when the newest state cannot be stored (Redshift: a varchar holds 65,535
//! bytes), run on PostgreSQL with that limit switched on (`max_stored_bytes`): no view
//! shows more than the newest record allows, and the record is dead-lettered with the
//! reason, until a version that fits arrives.

mod common;

use common::*;
use policy_push::event::{MaskMethod, Status};
use policy_push::simulate::Record;
use tokio_postgres::error::SqlState;

const RAW: &str = "CREATE SCHEMA raw;
CREATE TABLE raw.t (id int, email text); INSERT INTO raw.t VALUES (1, 'a@x.io');
CREATE TABLE raw.u (id int); INSERT INTO raw.u VALUES (7);";

const LIMIT: usize = 2_000;

/// `n` made-up ids or tags, long enough together to pass `LIMIT`.
fn filler(prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{prefix}-{i:04}-padding-padding"))
        .collect()
}

fn orders(db: &Database) -> Record {
    raw_t(db, 1, &[("id", &[]), ("email", &["pii"])], &["sales"])
}

fn second(db: &Database, version: i64, tags: &[&str]) -> Record {
    data_source(Ds {
        id: "ds-u",
        version,
        host: HOST,
        database: &db.name,
        schema: "raw",
        table: "u",
        view: "u",
        columns: &[("id", &[])],
        tags,
        status: Status::Active,
    })
}

/// The mask policy on `ds`, targeting it by id among `extra` others.
fn nullify(version: i64, extra: &[String]) -> Record {
    let mut ids: Vec<&str> = extra.iter().map(String::as_str).collect();
    ids.push("ds");
    policy(
        "p-null",
        version,
        mask("pii", MaskMethod::Nullify, None),
        &[],
        &ids,
        &[],
    )
}

async fn emails(
    env: &Direct,
    role: &str,
) -> Result<Vec<Vec<Option<String>>>, tokio_postgres::Error> {
    env.db.rows_as(role, "SELECT email FROM immuta.t").await
}

fn letters_too_large(env: &Direct) -> usize {
    let letters = env.dead.0.lock().unwrap();
    letters
        .iter()
        .filter(|l| l.reason.contains("too large"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_be_stored_withholds_views_and_profiles_until_it_can() {
    let mut env = Direct::with(RAW, |c| c.integrations[0].max_stored_bytes = Some(LIMIT)).await;
    let analyst = env.db.role("analyst", true).await;
    env.apply(&[
        orders(&env.db),
        second(&env.db, 1, &[]),
        profile(&analyst, 1, &[], &[], &["ds", "ds-u"]),
    ])
    .await;
    assert_eq!(
        emails(&env, &analyst).await.unwrap(),
        vec![row(&[Some("a@x.io")])]
    );

    // A mask targeting ~100 data sources: too large to store. The view it targets goes.
    env.apply(&[nullify(1, &filler("ds", 100))]).await;
    assert_eq!(letters_too_large(&env), 1);
    let gone = emails(&env, &analyst)
        .await
        .expect_err("no view shows the unmasked email");
    assert_eq!(gone.code(), Some(&SqlState::UNDEFINED_TABLE), "{gone:?}");

    // Another policy's change rebuilds views, but not this one while it is withheld.
    env.apply(&[policy(
        "p-other",
        1,
        mask("none", MaskMethod::Nullify, None),
        &["sales"],
        &[],
        &[],
    )])
    .await;
    let still = emails(&env, &analyst).await.expect_err("still withheld");
    assert_eq!(still.code(), Some(&SqlState::UNDEFINED_TABLE), "{still:?}");

    // A version that fits: the view is back, masked.
    env.apply(&[nullify(2, &[])]).await;
    assert_eq!(emails(&env, &analyst).await.unwrap(), vec![row(&[None])]);

    // A profile too large to store is removed: the user sees nothing until one fits.
    let huge: Vec<String> = filler("v", 100);
    let huge: Vec<&str> = huge.iter().map(String::as_str).collect();
    env.apply(&[profile(&analyst, 2, &[], &[("k", &huge)], &["ds", "ds-u"])])
        .await;
    assert_eq!(letters_too_large(&env), 2);
    assert!(
        emails(&env, &analyst).await.unwrap().is_empty(),
        "the old profile still applies"
    );
    env.apply(&[profile(&analyst, 3, &[], &[], &["ds"])]).await;
    assert_eq!(emails(&env, &analyst).await.unwrap(), vec![row(&[None])]);

    // A data source too large to store loses its view.
    let tags = filler("tag", 100);
    let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
    env.apply(&[second(&env.db, 2, &tags)]).await;
    assert_eq!(letters_too_large(&env), 3);
    let u = env.db.rows_as(&analyst, "SELECT id FROM immuta.u").await;
    assert_eq!(
        u.expect_err("the old view is gone").code(),
        Some(&SqlState::UNDEFINED_TABLE)
    );
}

/// A too-large policy that targets by tag withholds a data source created after it, its
/// tombstone releases what it withheld, and a too-large record older than the stored
/// state (read again by a replay) changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withheld_tags_catch_later_sources_and_a_tombstone_releases_them() {
    let mut env = Direct::with(RAW, |c| c.integrations[0].max_stored_bytes = Some(LIMIT)).await;
    let analyst = env.db.role("analyst", true).await;
    let mut tags = filler("tag", 100);
    tags.push("sales".into());
    let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
    let by_tag = |version| {
        policy(
            "p-tag",
            version,
            mask("pii", MaskMethod::Nullify, None),
            &tags,
            &[],
            &[],
        )
    };
    // The first version of the policy is too large: nothing was stored before it.
    env.apply(&[by_tag(5), profile(&analyst, 1, &[], &[], &["ds"])])
        .await;
    assert_eq!(letters_too_large(&env), 1);
    // A data source tagged `sales` created afterwards gets no view.
    env.apply(&[orders(&env.db)]).await;
    let withheld = emails(&env, &analyst).await.expect_err("withheld by tag");
    assert_eq!(
        withheld.code(),
        Some(&SqlState::UNDEFINED_TABLE),
        "{withheld:?}"
    );
    // Deleting the policy releases it: the view is built, without the policy.
    env.apply(&[tombstone(policy_push::event::Kind::Policy, "p-tag")])
        .await;
    assert_eq!(
        emails(&env, &analyst).await.unwrap(),
        vec![row(&[Some("a@x.io")])]
    );

    // A stored version newer than a too-large record read again: nothing happens.
    env.apply(&[nullify(7, &[])]).await;
    assert_eq!(emails(&env, &analyst).await.unwrap(), vec![row(&[None])]);
    env.apply(&[nullify(6, &filler("ds", 100))]).await;
    assert_eq!(letters_too_large(&env), 1, "an old record is no news");
    assert_eq!(emails(&env, &analyst).await.unwrap(), vec![row(&[None])]);
}
