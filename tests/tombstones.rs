//! Tombstones keep their place in the order: a tombstone read again after its entity was
//! re-created (a replay from a timestamp, a lost offsets row, a renamed consumer group)
//! must not delete the newer state.

mod common;

use common::*;
use policy_push::event::{Kind, MaskMethod};
use policy_push::simulate::Record;

const RAW: &str = "CREATE SCHEMA raw; CREATE TABLE raw.t (id int, email text);
INSERT INTO raw.t VALUES (1, 'a@x');";

fn source(db: &Database, version: i64) -> Record {
    raw_t(db, version, &[("id", &[]), ("email", &["pii"])], &["sales"])
}

fn masking(version: i64) -> Record {
    policy(
        "p",
        version,
        mask("pii", MaskMethod::Constant, Some("hidden")),
        &["sales"],
        &[],
        &[],
    )
}

/// v5, its tombstone and v6, each in its own batch; then the same three records read
/// again, from the same offsets, by a consumer group with no stored offsets.
async fn recreate_then_reread(env: &Direct, history: [Record; 3]) {
    let start = env.next_offset();
    for r in &history {
        env.apply(std::slice::from_ref(r)).await;
    }
    for (i, r) in history.iter().enumerate() {
        let at = start + i as i64;
        let expected = (i > 0).then_some(at);
        let batch = env.batch_at(std::slice::from_ref(r), at, expected);
        env.warehouse
            .apply("renamed-group", &batch, &env.dead)
            .await
            .expect("re-read applies");
    }
    assert!(env.dead.0.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_reread_tombstone_does_not_delete_a_recreated_profile() {
    let mut env = Direct::new(RAW).await;
    let analyst = env.db.role("analyst", true).await;
    env.apply(&[source(&env.db, 1)]).await;
    recreate_then_reread(
        &env,
        [
            profile(&analyst, 5, &[], &[], &["ds"]),
            tombstone(Kind::Profile, &analyst),
            profile(&analyst, 6, &[], &[], &["ds"]),
        ],
    )
    .await;
    let live = rows(
        &env.db.client().await,
        &format!(
            "SELECT version, deleted FROM immuta_system.profile WHERE user_name = '{analyst}'"
        ),
    )
    .await
    .unwrap();
    assert_eq!(live, vec![row(&[Some("6"), Some("f")])]);
    assert_eq!(
        env.db
            .rows_as(&analyst, "SELECT id FROM immuta.t")
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_reread_tombstone_does_not_drop_a_recreated_data_source() {
    let mut env = Direct::new(RAW).await;
    let analyst = env.db.role("analyst", true).await;
    env.apply(&[profile(&analyst, 1, &[], &[], &["ds"])]).await;
    recreate_then_reread(
        &env,
        [
            source(&env.db, 5),
            tombstone(Kind::DataSource, "ds"),
            source(&env.db, 6),
        ],
    )
    .await;
    assert_eq!(
        env.db
            .rows_as(&analyst, "SELECT id FROM immuta.t")
            .await
            .expect("the view of the re-created data source is still there")
            .len(),
        1
    );
}

#[tokio::test]
async fn a_reread_tombstone_does_not_remove_a_recreated_mask() {
    let mut env = Direct::new(RAW).await;
    let analyst = env.db.role("analyst", true).await;
    env.apply(&[source(&env.db, 1), profile(&analyst, 1, &[], &[], &["ds"])])
        .await;
    recreate_then_reread(&env, [masking(5), tombstone(Kind::Policy, "p"), masking(6)]).await;
    assert_eq!(
        env.db
            .rows_as(&analyst, "SELECT id, email FROM immuta.t")
            .await
            .unwrap(),
        vec![row(&[Some("1"), Some("hidden")])],
        "the re-created mask still hides the value"
    );
}

#[tokio::test]
async fn a_newer_tombstone_still_deletes() {
    let mut env = Direct::new(RAW).await;
    let analyst = env.db.role("analyst", true).await;
    env.apply(&[source(&env.db, 1), profile(&analyst, 1, &[], &[], &["ds"])])
        .await;
    env.apply(&[masking(5)]).await;
    env.apply(&[tombstone(Kind::Policy, "p")]).await;
    assert_eq!(
        env.db
            .rows_as(&analyst, "SELECT id, email FROM immuta.t")
            .await
            .unwrap(),
        vec![row(&[Some("1"), Some("a@x")])]
    );
    env.apply(&[tombstone(Kind::Profile, &analyst)]).await;
    assert!(env
        .db
        .rows_as(&analyst, "SELECT id FROM immuta.t")
        .await
        .unwrap()
        .is_empty());
}
