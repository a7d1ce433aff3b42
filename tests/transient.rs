//! Warehouse errors that a retry would clear are retried, never dead-lettered: a
//! dead-lettered grant or revoke would leave impersonation in the wrong state for good.

mod common;

use std::time::Duration;

use common::*;
use policy_push::error::{Class, Classify};

async fn member(env: &Direct, user: &str) -> bool {
    let r = rows(
        &env.db.client().await,
        &format!(
            "SELECT pg_has_role('{user}', '{}', 'MEMBER')",
            env.impersonator_role()
        ),
    )
    .await
    .unwrap();
    r[0][0].as_deref() == Some("t")
}

/// Applies `batch` once expecting a retryable failure and no dead letter, then again
/// (as the applier's retry would) expecting success.
async fn fails_then_applies(env: &Direct, batch: &policy_push::batch::Batch) {
    let err = env
        .warehouse
        .apply("direct", batch, &env.dead)
        .await
        .expect_err("the injected error fails the batch");
    assert_eq!(err.class(), Class::Retryable, "{err}");
    assert!(
        env.dead.0.lock().unwrap().is_empty(),
        "a transient error dead-lettered a good record: {:?}",
        env.dead.0.lock().unwrap()
    );
    env.warehouse
        .apply("direct", batch, &env.dead)
        .await
        .expect("the retry applies");
    assert!(env.dead.0.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_injected_deadlock_is_retried_for_a_grant_and_a_revoke() {
    let mut env = Direct::new("").await;
    let user = env.db.role("boss", true).await;
    env.db
        .client()
        .await
        .batch_execute(
            "CREATE SEQUENCE public.inject;
             CREATE FUNCTION public.inject_deadlock() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               -- nextval is not rolled back with the batch: only the first try fails.
               IF nextval('public.inject') = 1 THEN
                 RAISE EXCEPTION 'deadlock detected (injected by the test)' USING ERRCODE = 'deadlock_detected';
               END IF;
               RETURN NEW;
             END $$;
             CREATE TRIGGER inject BEFORE INSERT OR UPDATE ON immuta_system.impersonation
               FOR EACH ROW EXECUTE FUNCTION public.inject_deadlock();",
        )
        .await
        .unwrap();
    let grant = env.batch(&[impersonation(&user, 1, true)]);
    fails_then_applies(&env, &grant).await;
    assert!(member(&env, &user).await, "the grant took effect");

    env.db
        .client()
        .await
        .batch_execute("ALTER SEQUENCE public.inject RESTART")
        .await
        .unwrap();
    let revoke = env.batch(&[impersonation(&user, 2, false)]);
    fails_then_applies(&env, &revoke).await;
    assert!(!member(&env, &user).await, "the revoke took effect");
}

async fn waiting_on_a_lock(db: &Database) -> bool {
    let r = rows(
        &db.client().await,
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND wait_event_type = 'Lock'",
            db.name
        ),
    )
    .await
    .unwrap();
    r[0][0].as_deref() != Some("0")
}

/// The impersonator role is cluster-wide: integrations of two databases grant it to the
/// same user at the same moment. The second GRANT waits for the first one's uncommitted
/// membership row and then fails on the catalog's unique index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_integrations_granting_one_impersonator_role_at_once_retry() {
    let mut a = Direct::new("").await;
    let role = a.impersonator_role().to_string();
    let b = Direct::with("", |c| c.integrations[0].impersonator_role = role.clone()).await;
    let user = a.db.role("boss", true).await;

    // Integration B's batch grants, then waits on its audit insert until released.
    let mut locker = b.db.client().await;
    let hold = locker.transaction().await.unwrap();
    hold.batch_execute("LOCK immuta_system.apply_log IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let b_batch = b.batch(&[impersonation(&user, 1, true)]);
    let a_batch = a.batch(&[impersonation(&user, 1, true)]);
    let deadline = Duration::from_secs(30);
    let b_applies = b.warehouse.apply("direct", &b_batch, &b.dead);
    let a_tries = async {
        wait_for("B's batch to hold its grant", deadline, || {
            waiting_on_a_lock(&b.db)
        })
        .await;
        a.warehouse.apply("direct", &a_batch, &a.dead).await
    };
    let release = async {
        wait_for("B's batch to hold its grant", deadline, || {
            waiting_on_a_lock(&b.db)
        })
        .await;
        wait_for("A's grant to wait for B's", deadline, || {
            waiting_on_a_lock(&a.db)
        })
        .await;
        hold.commit().await.unwrap();
    };
    let (b_result, a_result, ()) = tokio::join!(b_applies, a_tries, release);
    b_result.expect("B applies");
    let letters = a.dead.0.lock().unwrap().clone();
    assert!(letters.is_empty(), "A dead-lettered its grant: {letters:?}");
    let err = a_result.expect_err("A's grant raced B's");
    assert_eq!(err.class(), Class::Retryable, "{err}");
    a.warehouse
        .apply("direct", &a_batch, &a.dead)
        .await
        .expect("A's retry applies");
    assert!(a.dead.0.lock().unwrap().is_empty());
    assert!(member(&a, &user).await);
}

/// A view build that times out on a lock is not the view's fault: the batch commits
/// without it (nothing else waits on that lock), the view is not dropped, its data source
/// is not dead-lettered, and the view is built once the lock is free.
#[tokio::test]
async fn a_view_build_that_hits_a_lock_timeout_is_deferred_then_built() {
    let env = Direct::new(
        "CREATE SCHEMA raw; CREATE TABLE raw.t (id int); INSERT INTO raw.t VALUES (1);",
    )
    .await;
    let warehouse = env.warehouse_with("lock_timeout", "'300ms'").await;
    let source = raw_t(&env.db, 1, &[("id", &[])], &[]);
    let batch = env.batch(&[source]);
    let mut locker = env.db.client().await;
    let hold = locker.transaction().await.unwrap();
    hold.batch_execute("LOCK raw.t IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let applied = warehouse
        .apply("direct", &batch, &env.dead)
        .await
        .expect("the batch commits without its view");
    assert_eq!((applied.views_rebuilt, applied.views_deferred), (0, 1));
    assert!(warehouse.has_stale_views());
    let err = warehouse
        .rebuild_stale("direct")
        .await
        .expect_err("still locked");
    assert_eq!(err.class(), Class::Retryable, "{err}");
    assert!(
        env.dead.0.lock().unwrap().is_empty(),
        "{:?}",
        env.dead.0.lock().unwrap()
    );
    hold.rollback().await.unwrap();
    assert_eq!(warehouse.rebuild_stale("direct").await.unwrap(), 1);
    assert!(!warehouse.has_stale_views());
    let views = rows(
        &env.db.client().await,
        "SELECT count(*) FROM pg_views WHERE schemaname = 'immuta'",
    )
    .await
    .unwrap();
    assert_eq!(views, vec![row(&[Some("1")])]);
    assert!(env.dead.0.lock().unwrap().is_empty());
}
