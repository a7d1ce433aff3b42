//! An analyst's open transaction never holds policy changes back (SPEC §5): the analyst
//! runs `BEGIN; SELECT count(*) FROM immuta.orders;` and stays idle; then a mask on that
//! data source is published, and another user's subscription is revoked, on the same
//! partition (so the same lane). The revocation applies within seconds; a third user's
//! reads of the view never wait for a lock longer than a second; /health says which role
//! holds the view; and the mask applies once the blocker has been terminated, after
//! `terminate_blockers_after_ms`.

mod common;

use std::time::Duration;

use common::*;
use policy_push::event::MaskMethod;

const RAW: &str = "CREATE SCHEMA raw; CREATE TABLE raw.t (id int, email text);
INSERT INTO raw.t VALUES (1, 'a@x.io'), (2, 'b@x.io');";

const TERMINATE_AFTER: Duration = Duration::from_secs(4);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_transaction_holds_back_neither_revocations_nor_other_readers() {
    let broker = Broker::mock();
    let (mut db, mut config) = setup(&broker, 1, "open").await;
    db.client().await.batch_execute(RAW).await.unwrap();
    let port = free_tcp_port();
    config.http.listen = format!("127.0.0.1:{port}");
    config.integrations[0].terminate_blockers_after = Some(TERMINATE_AFTER);
    let (blocker, revoked, reader) = (
        db.role("blocker", true).await,
        db.role("revoked", true).await,
        db.role("reader", true).await,
    );
    let setup_records = vec![
        raw_t(&db, 1, &[("id", &[]), ("email", &["pii"])], &["sales"]),
        profile(&blocker, 1, &[], &[], &["ds"]),
        profile(&revoked, 1, &[], &[], &["ds"]),
        profile(&reader, 1, &[], &[], &["ds"]),
    ];
    publish(&config, &setup_records).await;
    let running = start(&config);
    wait_applied(&db, &config, setup_records.len()).await;
    let view = "SELECT id, email FROM immuta.t ORDER BY id";
    assert_eq!(db.rows_as(&revoked, view).await.unwrap().len(), 2);

    // The analyst's open transaction holds a lock on the view from now on.
    let open = db.as_role(&blocker).await;
    open.batch_execute("BEGIN; SELECT count(*) FROM immuta.t;")
        .await
        .unwrap();

    // Every read by another user either completes or fails on a lock wait over 1 s.
    let reads = db.as_role(&reader).await;
    reads
        .batch_execute("SET lock_timeout = '1s'")
        .await
        .unwrap();
    let reading = tokio::spawn(async move {
        let masked = vec![row(&[Some("1"), None]), row(&[Some("2"), None])];
        let deadline = std::time::Instant::now() + TERMINATE_AFTER + Duration::from_secs(15);
        loop {
            let got = rows(&reads, view).await?;
            if got == masked {
                return Ok::<_, tokio_postgres::Error>(true);
            }
            if std::time::Instant::now() > deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });

    publish(
        &config,
        &[
            policy(
                "p-mask",
                1,
                mask("pii", MaskMethod::Nullify, None),
                &["sales"],
                &[],
                &[],
            ),
            profile(&revoked, 2, &[], &[], &[]),
        ],
    )
    .await;
    // Its checks wait for no lock longer than a second either, so that a view DDL
    // queued behind the open transaction fails them rather than hangs them.
    let revoked_reads = db.as_role(&revoked).await;
    revoked_reads
        .batch_execute("SET lock_timeout = '1s'")
        .await
        .unwrap();
    wait_for(
        "the revocation applies",
        Duration::from_secs(10),
        || async { rows(&revoked_reads, view).await.is_ok_and(|r| r.is_empty()) },
    )
    .await;
    wait_for(
        "/health names the blocking role",
        Duration::from_secs(10),
        || async {
            let h = health_json(port).await;
            let held = &h["integrations"]["open"]["conditions"]["views held up"];
            held["error"].as_str().is_some_and(|e| e.contains(&blocker))
                && held["severity"] == "degraded"
        },
    )
    .await;

    let masked = reading
        .await
        .expect("reader task")
        .expect("no read waited over a second for a lock");
    assert!(masked, "the mask applied after the blocker was terminated");
    let ended = open.batch_execute("SELECT 1").await;
    assert!(ended.is_err(), "the blocker's session was terminated");
    wait_for("/health clears", Duration::from_secs(10), || async {
        let h = health_json(port).await;
        h["integrations"]["open"]["conditions"]["views held up"].is_null()
    })
    .await;
    running.stop().await;
}

/// A view an analyst builds on a policy view, temporary or in `public`, makes a plain
/// `DROP VIEW` of the policy view fail for as long as it exists: the analyst's own
/// session, idle and outside any transaction, would hold every later change of that
/// view back. The rebuild drops such views with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_built_on_a_policy_view_does_not_hold_its_rebuild_back() {
    let mut env = Direct::new(RAW).await;
    let analyst = env.db.role("analyst", true).await;
    env.db
        .client()
        .await
        .batch_execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
        .await
        .unwrap();
    env.apply(&[
        raw_t(&env.db, 1, &[("id", &[]), ("email", &["pii"])], &["sales"]),
        profile(&analyst, 1, &[], &[], &["ds"]),
    ])
    .await;
    let session = env.db.as_role(&analyst).await;
    session
        .batch_execute(
            "CREATE TEMP VIEW mine AS SELECT * FROM immuta.t;
             CREATE VIEW public.also_mine AS SELECT * FROM immuta.t;",
        )
        .await
        .expect("the analyst builds on the policy view");
    let masked = env
        .warehouse
        .apply(
            "direct",
            &env.batch(&[policy(
                "p-mask",
                1,
                mask("pii", MaskMethod::Nullify, None),
                &["sales"],
                &[],
                &[],
            )]),
            &env.dead,
        )
        .await
        .expect("the rebuild is not refused for a dependent view");
    assert_eq!(masked.views_rebuilt, 1);
    let seen = rows(&session, "SELECT email FROM immuta.t ORDER BY id")
        .await
        .unwrap();
    assert_eq!(seen, vec![row(&[None]), row(&[None])]);
    for dependent in ["mine", "public.also_mine"] {
        let gone = session
            .batch_execute(&format!("SELECT * FROM {dependent}"))
            .await
            .expect_err("dropped with the policy view");
        assert_eq!(
            gone.code(),
            Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE),
            "{dependent}: {gone:?}"
        );
    }
}
