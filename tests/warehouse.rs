//! The warehouse side alone, against real PostgreSQL: bootstrap, and what one batch
//! transaction does.

mod common;

use common::*;
use policy_push::apply::Warehouse;
use policy_push::event::{MaskMethod, Status};
use policy_push::simulate::Record;

#[tokio::test]
async fn bootstrap_is_idempotent_concurrent_and_grants_only_what_the_reference_says() {
    let mut env = Direct::new("").await;
    let w = Warehouse::new(&env.config.integrations[0]).unwrap();
    let (a, b) = tokio::join!(w.bootstrap(), w.bootstrap());
    a.unwrap();
    b.unwrap();
    w.bootstrap().await.unwrap();

    let analyst = env.db.role("analyst", true).await;
    let client = env.db.client().await;
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
    assert_eq!(
        check("SELECT array_to_string(reloptions, ',') FROM pg_class WHERE oid = 'immuta_system.profile'::regclass".into()).await,
        "fillfactor=50",
        "profile updates need free room on their page to be HOT"
    );
    let err = env
        .db
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
    let env = Direct::new(
        "CREATE SCHEMA raw; CREATE TABLE raw.a (id int, email text); CREATE TABLE raw.b (id int, email text); CREATE TABLE raw.c (id int, email text);",
    )
    .await;
    let db = &env.db;
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
    let first = vec![
        ds("a", "a", &["sales"]),
        ds("b", "b", &["sales"]),
        ds("c", "c", &["hr"]),
    ];
    let applied = env.apply(&first).await;
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
    let applied = env.apply(&second).await;
    assert_eq!(applied.views_rebuilt, 2, "{applied:?}");
    assert_eq!(
        applied.changes, 2,
        "only the newest version of each policy is applied"
    );

    let third = vec![
        profile("someone", 1, &[], &[], &["a"]),
        profile("someone", 2, &[], &[], &["a", "b"]),
    ];
    let applied = env.apply(&third).await;
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
    let fourth = env.batch(&fourth);
    let applied = env
        .warehouse
        .apply("direct", &fourth, &env.dead)
        .await
        .unwrap();
    assert_eq!(applied.views_rebuilt, 3, "{applied:?}");

    // The same batch again expects an offset that has moved on: fenced, nothing changes.
    let stale = env.warehouse.apply("direct", &fourth, &env.dead).await;
    assert!(
        matches!(stale, Err(policy_push::apply::ApplyError::Fenced(_))),
        "{stale:?}"
    );
    assert!(env.dead.0.lock().unwrap().is_empty());
}

/// A batch's profiles reach PostgreSQL as one array parameter. The temporary staging
/// table they used to be copied into was truncated at every commit, which freed its file
/// blocks inside the commit (seconds, on a disk that discards freed blocks); the pooled
/// sessions that applied the batch must hold no temporary relation.
#[tokio::test]
async fn profiles_are_applied_without_a_temporary_table() {
    let env = Direct::new("").await;
    let batch = vec![
        profile("alice", 1, &["g1"], &[("region", &["eu"])], &["a"]),
        profile(
            "alice",
            2,
            &["g1", "g2"],
            &[("region", &["eu", "us"])],
            &["a", "b"],
        ),
        profile("bob", 7, &[], &[], &[]),
    ];
    env.apply(&batch).await;
    let client = env.db.client().await;
    let rows = client
        .query(
            "SELECT user_name, version, groups::text, attributes::text, data_sources::text              FROM immuta_system.profile ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let rows: Vec<(String, i64, String, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    assert_eq!(
        rows,
        [
            (
                "alice".into(),
                2,
                "{g1,g2}".into(),
                r#"{"region": ["eu", "us"]}"#.into(),
                "{a,b}".into()
            ),
            ("bob".into(), 7, "{}".into(), "{}".into(), "{}".into()),
        ]
    );
    let temporary: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relpersistence = 't'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(temporary, 0, "the applying sessions are still open");
}

/// A host bootstrapped by a version before `upsert_profiles` and before stored positions
/// (an upgrade without a new bootstrap) fails its profile batches with the hint to bootstrap, and applies the same
/// batch once bootstrap has run again.
#[tokio::test]
async fn an_upgrade_without_bootstrap_says_to_bootstrap_and_then_applies() {
    let env = Direct::new("").await;
    env.db
        .client()
        .await
        .batch_execute(
            "DROP PROCEDURE immuta_procedures.upsert_profiles(immuta_procedures.profile_row[], integer[], bigint[]);
             DROP TYPE immuta_procedures.profile_row;
             DROP PROCEDURE immuta_procedures.delete_profile(text, bigint, integer, bigint);
             ALTER TABLE immuta_system.profile DROP COLUMN source_partition, DROP COLUMN source_offset;",
        )
        .await
        .unwrap();
    let batch = env.batch(&[profile("alice", 3, &["g"], &[], &[])]);
    let err = env
        .warehouse
        .apply("direct", &batch, &env.dead)
        .await
        .unwrap_err();
    assert!(
        err.hint().contains("policy-push bootstrap"),
        "{err}: {}",
        err.hint()
    );
    env.warehouse.bootstrap().await.unwrap();
    env.warehouse
        .apply("direct", &batch, &env.dead)
        .await
        .unwrap();
    let version: i64 = env
        .db
        .client()
        .await
        .query_one(
            "SELECT version FROM immuta_system.profile WHERE user_name = 'alice'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, 3);
}

/// Profiles go in calls of about a megabyte each, pipelined in the batch's transaction;
/// a batch of several such calls is applied whole.
#[tokio::test]
async fn a_batch_larger_than_one_call_is_applied_whole() {
    let env = Direct::new("").await;
    let group = "g".repeat(60);
    let groups = [group.as_str(); 5];
    let batch: Vec<Record> = (0..5_000)
        .map(|i| profile(&format!("user{i}"), i, &groups, &[], &["a"]))
        .collect();
    env.apply(&batch).await;
    let (count, versions): (i64, i64) = {
        let row = env
            .db
            .client()
            .await
            .query_one(
                "SELECT count(*), sum(version)::bigint FROM immuta_system.profile \
                 WHERE cardinality(groups) = 5",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!((count, versions), (5_000, (0..5_000).sum::<i64>()));
}

/// A view's rewrite rule is stored compressed once it is large; with lz4 where the server
/// offers it, because pglz was an eighth of PostgreSQL's time in a replay. A server
/// without lz4 must still build views (with pglz).
#[tokio::test]
async fn large_view_rules_are_stored_with_lz4_where_the_server_has_it() {
    let columns: Vec<String> = (0..120).map(|i| format!("column_number_{i}")).collect();
    let ddl: Vec<String> = columns.iter().map(|c| format!("{c} text")).collect();
    let env = Direct::new(&format!(
        "CREATE SCHEMA raw; CREATE TABLE raw.wide ({});",
        ddl.join(", ")
    ))
    .await;
    let db = &env.db;
    let tagged: Vec<(&str, &[&str])> = columns.iter().map(|c| (c.as_str(), &["pii"][..])).collect();
    let applied = env
        .apply(&[data_source(Ds {
            id: "wide",
            version: 1,
            host: HOST,
            database: &db.name,
            schema: "raw",
            table: "wide",
            view: "wide",
            columns: &tagged,
            tags: &["sales"],
            status: Status::Active,
        })])
        .await;
    assert_eq!(applied.views_rebuilt, 1);
    let client = db.client().await;
    let lz4: bool = client
        .query_one(
            "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let method: Option<String> = client
        .query_one(
            "SELECT pg_column_compression(r.ev_action) FROM pg_rewrite r \
             JOIN pg_class c ON c.oid = r.ev_class WHERE c.relname = 'wide' AND c.relkind = 'v'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let expected = if lz4 { "lz4" } else { "pglz" };
    assert_eq!(method.as_deref(), Some(expected));
}

/// Pooled sessions do not ask for notices (one per `DROP VIEW IF EXISTS` of a new view
/// otherwise), and commit without waiting for the WAL flush unless configured to
/// (config.rs says why that is safe); set once per session, not per batch.
#[tokio::test]
async fn pooled_sessions_skip_notices_and_commit_asynchronously() {
    let env = Direct::new("").await;
    for (name, expected) in [
        ("client_min_messages", "warning"),
        ("synchronous_commit", "off"),
    ] {
        let setting = env.warehouse.session_setting(name).await.unwrap();
        assert_eq!(setting, expected, "{name}");
    }
    // An operator who needs durable commits gets them.
    let mut durable = env.config.integrations[0].clone();
    durable.synchronous_commit = Some(policy_push::config::SynchronousCommit::On);
    let warehouse = policy_push::apply::Warehouse::new(&durable).unwrap();
    let setting = warehouse
        .session_setting("synchronous_commit")
        .await
        .unwrap();
    assert_eq!(setting, "on");
}

/// A view PostgreSQL refuses is rolled back alone: the others in its batch, before and
/// after it and across the chunks views are built in, are built and recorded; the refused
/// one is dead-lettered with the server's reason, and what stood in its way is left alone.
#[tokio::test]
async fn a_view_the_server_refuses_is_rolled_back_alone() {
    // A table where view v120 would go: `DROP VIEW IF EXISTS` refuses to touch it.
    let env = Direct::new(
        "CREATE SCHEMA raw; CREATE TABLE raw.a (id int, email text);
         CREATE TABLE immuta.v120 (kept int); INSERT INTO immuta.v120 VALUES (7);",
    )
    .await;
    let db = &env.db;
    let ids: Vec<String> = (0..250).map(|i| format!("v{i:03}")).collect();
    let sources: Vec<Record> = ids
        .iter()
        .map(|id| {
            data_source(Ds {
                id,
                version: 1,
                host: HOST,
                database: &db.name,
                schema: "raw",
                table: "a",
                view: id,
                columns: &[("id", &[]), ("email", &["pii"])],
                tags: &["sales"],
                status: Status::Active,
            })
        })
        .collect();
    let applied = env.apply(&sources).await;
    assert_eq!(applied.views_rebuilt, 249, "{applied:?}");
    assert_eq!(applied.rejected, 1, "{applied:?}");

    let letters = env.dead.0.lock().unwrap().clone();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].raw.key.as_deref(), Some(&b"v120"[..]));
    assert!(
        letters[0].reason.contains("is not a view") && letters[0].reason.contains("42809"),
        "{}",
        letters[0].reason
    );

    let client = db.client().await;
    let recorded: Vec<String> = client
        .query(
            "SELECT data_source_id FROM immuta_system.view_state ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let expected: Vec<String> = ids.iter().filter(|i| *i != "v120").cloned().collect();
    assert_eq!(recorded, expected);
    let views: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'immuta' AND c.relkind = 'v'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(views, 249);
    let kept: i32 = client
        .query_one("SELECT kept FROM immuta.v120", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 7);
}

/// A host bootstrapped with one role for everything (a system role with CREATEROLE, the
/// only way before setup_url) moves to the two-role setup by bootstrapping again with a
/// setup_url: the membership procedures change hands, everything else stays the system
/// role's, and impersonation grants keep working.
#[tokio::test]
async fn a_single_role_host_moves_to_a_setup_user_on_the_next_bootstrap() {
    let mut db = Database::create().await;
    let broker = Broker::External("127.0.0.1:9".into());
    let config = config(&broker, &random_topics(), &mut db, "single", HOST);
    let single = db.role("pp_single", true).await;
    db.client()
        .await
        .batch_execute(&format!(
            "ALTER ROLE {single} CREATEROLE; GRANT CREATE ON DATABASE {} TO {single};",
            db.name
        ))
        .await
        .unwrap();
    let mut integration = config.integrations[0].clone();
    integration.url = format!("postgres://{single}@127.0.0.1:5432/{}", db.name);
    integration.setup_url = None;
    Warehouse::new(&integration)
        .unwrap()
        .bootstrap()
        .await
        .expect("one role with CREATEROLE bootstraps alone");
    let owners = || async {
        rows(
            &db.client().await,
            "SELECT DISTINCT pg_get_userbyid(proowner) FROM pg_proc WHERE proname IN ('grant_impersonation', 'revoke_impersonation')",
        )
        .await
        .unwrap()
    };
    assert_eq!(owners().await, vec![row(&[Some(&single)])]);
    integration.setup_url = Some(db.admin_url.clone());
    Warehouse::new(&integration)
        .unwrap()
        .bootstrap()
        .await
        .expect("the same host with a setup user");
    assert_eq!(owners().await, vec![row(&[Some("postgres")])]);
    let analyst = db.role("analyst", true).await;
    db.as_role(&single)
        .await
        .batch_execute(&format!(
            "CALL immuta_procedures.upsert_impersonation('{analyst}', 1, true, 0, 0)"
        ))
        .await
        .expect("the system role grants through the setup user's procedure");
    let member = rows(
        &db.client().await,
        &format!(
            "SELECT pg_has_role('{analyst}', '{}', 'MEMBER')",
            integration.impersonator_role
        ),
    )
    .await
    .unwrap();
    assert_eq!(member[0][0].as_deref(), Some("t"));
}

/// Bootstrap names the grant that is missing before it changes anything.
#[tokio::test]
async fn bootstrap_says_which_grant_is_missing() {
    let mut db = Database::create().await;
    let broker = Broker::External("127.0.0.1:9".into());
    let config = config(&broker, &random_topics(), &mut db, "grants", HOST);
    let mut integration = config.integrations[0].clone();
    db.client()
        .await
        .batch_execute(&format!(
            "REVOKE CREATE ON DATABASE {} FROM {}",
            db.name, db.system_role
        ))
        .await
        .unwrap();
    let err = Warehouse::new(&integration)
        .unwrap()
        .bootstrap()
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "GRANT CREATE ON DATABASE \"{}\" TO \"{}\"",
            db.name, db.system_role
        )),
        "{err}"
    );
    let tables = rows(
        &db.client().await,
        "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'immuta%'",
    )
    .await
    .unwrap();
    assert_eq!(tables[0][0].as_deref(), Some("0"), "nothing was created");

    db.client()
        .await
        .batch_execute(&format!(
            "GRANT CREATE ON DATABASE {} TO {}",
            db.name, db.system_role
        ))
        .await
        .unwrap();
    let setup = db.role("pp_setup", true).await;
    integration.setup_url = Some(format!("postgres://{setup}@127.0.0.1:5432/{}", db.name));
    let err = Warehouse::new(&integration)
        .unwrap()
        .bootstrap()
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("ALTER ROLE \"{setup}\" CREATEROLE")),
        "{err}"
    );
}
