//! Attacks by real non-superuser roles against the objects bootstrap creates, and the
//! impersonation flow driven by events.

mod common;

use common::*;
use policy_push::event::{Kind, Status};
use policy_push::simulate::Record;

const RAW: &str = "CREATE SCHEMA raw; CREATE TABLE raw.t (id int, owner text); INSERT INTO raw.t VALUES (1, 'x'), (2, 'y');";

fn view(db: &Database, version: i64) -> Record {
    raw_t(db, version, &[("id", &[]), ("owner", &["pii"])], &[])
}

#[tokio::test]
async fn user_profile_never_leaks_other_rows_even_through_a_leaky_function() {
    let mut env = Direct::new(RAW).await;
    let (me, other) = (
        env.db.role("me", true).await,
        env.db.role("other", true).await,
    );
    env.apply(&[
        profile(&me, 1, &["mine"], &[], &[]),
        profile(&other, 1, &["secret_group"], &[], &[]),
    ])
    .await;
    // The attacker has a schema of their own to define functions in.
    env.db
        .client()
        .await
        .batch_execute(&format!("CREATE SCHEMA sandbox AUTHORIZATION {me}; CREATE TABLE sandbox.loot (v text); ALTER TABLE sandbox.loot OWNER TO {me};"))
        .await
        .unwrap();
    let attacker = env.db.as_role(&me).await;
    attacker
        .batch_execute(
            "CREATE FUNCTION sandbox.leak(text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS
             $$ BEGIN INSERT INTO sandbox.loot VALUES ($1); RETURN true; END $$;",
        )
        .await
        .unwrap();
    let seen = rows(
        &attacker,
        "SELECT user_name FROM immuta_system.user_profile WHERE sandbox.leak(user_name::text)",
    )
    .await
    .unwrap();
    assert_eq!(seen, vec![row(&[Some(&me)])]);
    let loot = rows(&attacker, "SELECT DISTINCT v FROM sandbox.loot ORDER BY 1")
        .await
        .unwrap();
    assert_eq!(
        loot,
        vec![row(&[Some(&me)])],
        "the leaky function saw another user's row"
    );
    let groups = rows(
        &attacker,
        "SELECT groups::text FROM immuta_system.user_profile WHERE user_name <> current_user",
    )
    .await
    .unwrap();
    assert!(groups.is_empty());
}

#[tokio::test]
async fn analysts_cannot_read_or_write_the_profile_or_become_impersonators() {
    let mut env = Direct::new(RAW).await;
    let me = env.db.role("me", true).await;
    env.apply(&[profile(&me, 1, &[], &[], &[])]).await;
    let c = env.db.as_role(&me).await;
    let attempts = [
        "SELECT * FROM immuta_system.profile".to_string(),
        format!("UPDATE immuta_system.profile SET data_sources = '{{ds}}' WHERE user_name = '{me}'"),
        format!("INSERT INTO immuta_system.profile (user_name, version) VALUES ('{me}x', 99)"),
        "DELETE FROM immuta_system.offsets".to_string(),
        format!("CALL immuta_procedures.upsert_profile('{me}', 99, '{{}}', '{{}}', NULL, '{{}}', '{{}}', '{{ds}}')"),
        format!("CALL immuta_procedures.grant_impersonation('{me}')"),
        format!("GRANT {} TO {me}", env.impersonator_role()),
        "CALL immuta_procedures.impersonate_user('someone')".to_string(),
        "INSERT INTO immuta_system.impersonation_session VALUES (pg_backend_pid(), now(), current_user, 'x')".to_string(),
        "CREATE VIEW immuta.mine AS SELECT 1".to_string(),
    ];
    for sql in attempts {
        let err = c.batch_execute(&sql).await.expect_err(&sql);
        assert_eq!(
            err.code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{sql}: {err:?}"
        );
    }
    let member = rows(
        &env.db.client().await,
        &format!(
            "SELECT pg_has_role('{me}', '{}', 'MEMBER')",
            env.impersonator_role()
        ),
    )
    .await
    .unwrap();
    assert_eq!(member[0][0].as_deref(), Some("f"));
}

#[tokio::test]
async fn impersonation_follows_the_events_and_ends_on_null_or_revoke() {
    let mut env = Direct::new(RAW).await;
    let (boss, target) = (
        env.db.role("boss", true).await,
        env.db.role("target", true).await,
    );
    env.apply(&[
        view(&env.db, 1),
        profile(&boss, 1, &[], &[], &[]),
        profile(&target, 1, &[], &[], &["ds"]),
        impersonation(&boss, 1, true),
    ])
    .await;
    let c = env.db.as_role(&boss).await;
    let view = "SELECT id FROM immuta.t ORDER BY id";
    assert!(
        rows(&c, view).await.unwrap().is_empty(),
        "boss is not subscribed"
    );
    c.batch_execute(&format!(
        "CALL immuta_procedures.impersonate_user('{target}')"
    ))
    .await
    .unwrap();
    assert_eq!(
        rows(&c, view).await.unwrap().len(),
        2,
        "boss now sees what target sees"
    );
    assert_eq!(
        rows(&c, "SELECT user_name FROM immuta_system.user_profile")
            .await
            .unwrap(),
        vec![row(&[Some(&target)])]
    );
    c.batch_execute("CALL immuta_procedures.impersonate_user(NULL)")
        .await
        .unwrap();
    assert!(
        rows(&c, view).await.unwrap().is_empty(),
        "NULL ends impersonation"
    );

    // Another session of the same login does not inherit an impersonation.
    c.batch_execute(&format!(
        "CALL immuta_procedures.impersonate_user('{target}')"
    ))
    .await
    .unwrap();
    let c2 = env.db.as_role(&boss).await;
    assert!(rows(&c2, view).await.unwrap().is_empty());

    // Revoking through an event ends it at once, even mid-session.
    env.apply(&[impersonation(&boss, 2, false)]).await;
    assert!(
        rows(&c, view).await.unwrap().is_empty(),
        "revoked impersonator keeps nothing"
    );
    let err = c
        .batch_execute(&format!(
            "CALL immuta_procedures.impersonate_user('{target}')"
        ))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
    );

    // A stale grant is ignored; a tombstone revokes.
    env.apply(&[impersonation(&boss, 1, true)]).await;
    let member = |u: String| {
        let (db, role) = (&env.db, env.impersonator_role().to_string());
        async move {
            rows(
                &db.client().await,
                &format!("SELECT pg_has_role('{u}', '{role}', 'MEMBER')"),
            )
            .await
            .unwrap()[0][0]
                .clone()
        }
    };
    assert_eq!(member(boss.clone()).await.as_deref(), Some("f"));
    env.apply(&[impersonation(&boss, 3, true)]).await;
    assert_eq!(member(boss.clone()).await.as_deref(), Some("t"));
    env.apply(&[tombstone(Kind::Impersonation, &boss)]).await;
    assert_eq!(member(boss.clone()).await.as_deref(), Some("f"));
}

#[tokio::test]
async fn a_grant_to_a_missing_role_is_dead_lettered_and_the_batch_still_applies() {
    let mut env = Direct::new(RAW).await;
    let someone = env.db.role("someone", true).await;
    env.apply(&[
        impersonation("no_such_role_anywhere", 1, true),
        profile(&someone, 1, &[], &[], &[]),
    ])
    .await;
    let letters = env.dead.0.lock().unwrap().clone();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert!(
        letters[0].reason.contains("does not exist"),
        "{}",
        letters[0].reason
    );
    let n = rows(
        &env.db.client().await,
        "SELECT count(*) FROM immuta_system.profile",
    )
    .await
    .unwrap();
    assert_eq!(n[0][0].as_deref(), Some("1"));
}

#[tokio::test]
async fn data_sources_over_policy_push_tables_catalogs_or_views_are_dead_lettered() {
    let broker = Broker::mock();
    let (mut db, config) = setup(&broker, 1, "s").await;
    let analyst = db.role("analyst", true).await;
    let targets = [
        ("ds-profile", "immuta_system", "profile", "user_name"),
        ("ds-authid", "pg_catalog", "pg_authid", "rolname"),
        ("ds-views", "immuta", "t", "id"),
        ("ds-info", "information_schema", "tables", "table_name"),
    ];
    let mut records: Vec<Record> = targets
        .iter()
        .map(|(id, schema, table, column)| {
            data_source(Ds {
                id,
                version: 1,
                host: HOST,
                database: &db.name,
                schema,
                table,
                view: &format!("v_{}", id.replace('-', "_")),
                columns: &[(column, &[])],
                tags: &[],
                status: Status::Active,
            })
        })
        .collect();
    let ids: Vec<&str> = targets.iter().map(|t| t.0).collect();
    records.push(profile(&analyst, 1, &[], &[], &ids));
    publish(&config, &records).await;
    let running = start(&config);
    wait_applied(&db, &config, records.len()).await;
    running.stop().await;

    let letters = read_dead_letters(&config, targets.len()).await;
    for (id, schema, ..) in targets {
        assert!(
            letters.iter().any(|l| l.reason.contains(id)
                && l.reason
                    .contains(&format!("schema {schema} cannot back a policy view"))),
            "{id}: {:?}",
            letters.iter().map(|l| &l.reason).collect::<Vec<_>>()
        );
    }
    let views = rows(
        &db.client().await,
        "SELECT count(*) FROM pg_views WHERE schemaname = 'immuta'",
    )
    .await
    .unwrap();
    assert_eq!(views[0][0].as_deref(), Some("0"), "no view was built");
    let stored = rows(
        &db.client().await,
        "SELECT count(*) FROM immuta_system.data_source",
    )
    .await
    .unwrap();
    assert_eq!(stored[0][0].as_deref(), Some("0"));
}

/// The reference's least privilege: the system account policy-push runs as is neither a
/// superuser nor CREATEROLE, and changes the impersonator role's membership only through
/// the two procedures the setup user owns.
#[tokio::test]
async fn the_system_account_reaches_membership_only_through_the_setup_users_procedures() {
    let mut env = Direct::new("").await;
    let analyst = env.db.role("analyst", true).await;
    let role = env.impersonator_role().to_string();
    let system = env.db.as_role(&env.db.system_role).await;
    let rights = rows(
        &system,
        "SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user",
    )
    .await
    .unwrap();
    assert_eq!(rights, vec![row(&[Some("f"), Some("f")])]);
    let err = system
        .batch_execute(&format!("GRANT {role} TO {analyst}"))
        .await
        .expect_err("the system account cannot grant the role itself");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
        "{err:?}"
    );
    system
        .batch_execute(&format!(
            "CALL immuta_procedures.grant_impersonation('{analyst}')"
        ))
        .await
        .expect("through the setup user's procedure");
    let owners = rows(
        &env.db.client().await,
        "SELECT DISTINCT pg_get_userbyid(proowner) FROM pg_proc WHERE proname IN ('grant_impersonation', 'revoke_impersonation')",
    )
    .await
    .unwrap();
    assert_eq!(
        owners,
        vec![row(&[Some("postgres")])],
        "owned by the setup user"
    );
    let member = rows(
        &env.db.client().await,
        &format!("SELECT pg_has_role('{analyst}', '{role}', 'MEMBER')"),
    )
    .await
    .unwrap();
    assert_eq!(member[0][0].as_deref(), Some("t"));
    let as_analyst = env.db.as_role(&analyst).await;
    let err = as_analyst
        .batch_execute(&format!(
            "CALL immuta_procedures.revoke_impersonation('{analyst}')"
        ))
        .await
        .expect_err("analysts may not call it");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
    );
}
