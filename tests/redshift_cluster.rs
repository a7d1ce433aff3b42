//! Opt-in, end to end against a real Amazon Redshift cluster: set
//! `REDSHIFT_TEST_URL=postgres://<superuser>:<password>@<endpoint>:5439/<database>` (a
//! database of its own: the test creates and drops `immuta_system`, `immuta_functions`
//! and `immuta_procedures` there, and refuses to run if they exist). It creates a system
//! account, two analysts, a raw table and a view schema with random names, bootstraps,
//! runs the pipeline against librdkafka's mock cluster, queries the policy view as both
//! analysts and drops everything it created. Without the variable it says plainly that
//! it did not run.

mod common;

use std::time::Duration;

use common::*;
use policy_push::event::{MaskMethod, Status};
/// A connection as policy-push makes one, so that `sslmode=verify-full` (and
/// `sslrootcert`) in `REDSHIFT_TEST_URL` work for the test's own sessions too.
async fn connect_to(url: &str) -> tokio_postgres::Client {
    let text = format!(
        "[kafka]\n\"bootstrap.servers\" = \"127.0.0.1:1\"\n[[integration]]\nname = \"rs\"\nhost = \"h\"\ndialect = \"redshift\"\nurl = \"{url}\"\n"
    );
    let config = policy_push::Config::from_toml(&text, Vec::new()).expect("REDSHIFT_TEST_URL");
    policy_push::apply::connect::system_client(&config.integrations[0])
        .await
        .unwrap_or_else(|e| panic!("connect to the Redshift cluster: {e}"))
}

/// A password Redshift accepts: 8 to 64 characters with upper and lower case and a digit.
fn password() -> String {
    format!("Pp{:012x}9", fastrand::u64(..) & 0xffff_ffff_ffff)
}

fn with_user(url: &str, user: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a postgres:// URL");
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    format!("{scheme}://{user}:{password}@{host}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_redshift_cluster_serves_policy_views_to_two_analysts() {
    let Ok(admin_url) = std::env::var("REDSHIFT_TEST_URL") else {
        eprintln!("REDSHIFT_TEST_URL is not set: the end-to-end test against a real Redshift cluster did not run");
        return;
    };
    let admin = connect_to(&admin_url).await;
    let existing = rows(
        &admin,
        "SELECT count(*) FROM pg_namespace WHERE nspname IN ('immuta_system', 'immuta_functions', 'immuta_procedures')",
    )
    .await
    .unwrap();
    assert_eq!(
        existing[0][0].as_deref(),
        Some("0"),
        "this database already has policy-push schemas; point REDSHIFT_TEST_URL at a database of its own"
    );
    let database = rows(&admin, "SELECT current_database()").await.unwrap()[0][0]
        .clone()
        .unwrap();
    let (system, alice, bob) = (unique("pp_sys"), unique("pp_alice"), unique("pp_bob"));
    let (raw, views, group) = (unique("pp_raw"), unique("pp_views"), unique("pp_imp"));
    let (sys_pw, alice_pw, bob_pw) = (password(), password(), password());
    let setup = format!(
        "CREATE USER {system} PASSWORD '{sys_pw}';
         CREATE USER {alice} PASSWORD '{alice_pw}';
         CREATE USER {bob} PASSWORD '{bob_pw}';
         GRANT CREATE ON DATABASE {database} TO {system};
         CREATE SCHEMA {raw};
         CREATE TABLE {raw}.orders (id integer, email varchar(64), region varchar(8));
         INSERT INTO {raw}.orders VALUES (1, 'a@x', 'eu'), (2, 'b@x', 'us');
         GRANT USAGE ON SCHEMA {raw} TO {system};
         GRANT SELECT ON ALL TABLES IN SCHEMA {raw} TO {system};"
    );
    let cleanup = format!(
        "DROP SCHEMA IF EXISTS {views} CASCADE; DROP SCHEMA IF EXISTS immuta_system CASCADE;
         DROP SCHEMA IF EXISTS immuta_functions CASCADE; DROP SCHEMA IF EXISTS immuta_procedures CASCADE;
         DROP SCHEMA IF EXISTS {raw} CASCADE; REVOKE ALL ON DATABASE {database} FROM {system};
         DROP GROUP {group}; DROP USER IF EXISTS {alice}; DROP USER IF EXISTS {bob}; DROP USER IF EXISTS {system};"
    );
    let policy_existed = !rows(
        &admin,
        "SELECT 1 FROM svv_rls_policy WHERE polname = 'immuta_row_visible'",
    )
    .await
    .unwrap()
    .is_empty();
    let cleanup = if policy_existed {
        cleanup
    } else {
        format!("{cleanup} DROP RLS POLICY IF EXISTS immuta_row_visible CASCADE;")
    };
    admin.batch_execute(&setup).await.expect("test setup");
    use futures::FutureExt;
    let outcome = std::panic::AssertUnwindSafe({
        let (admin_url, system, sys_pw) = (admin_url.clone(), system.clone(), sys_pw.clone());
        let (alice, bob, raw, views, group, database) =
            (alice.clone(), bob.clone(), raw.clone(), views.clone(), group.clone(), database.clone());
        let (alice_pw, bob_pw) = (alice_pw.clone(), bob_pw.clone());
        async move {
            let broker = Broker::mock();
            let topics = random_topics();
            broker.create_topics(&topics, 1).await;
            let text = format!(
                "[kafka]\n\"bootstrap.servers\" = \"{}\"\n[consumer]\ngroup_prefix = \"{}\"\n[batch]\nlinger_ms = 50\n\
                 [http]\nlisten = \"\"\n[[integration]]\nname = \"rs\"\nhost = \"{HOST}\"\ndialect = \"redshift\"\n\
                 url = \"{}\"\nsetup_url = \"{admin_url}\"\nview_schema = \"{views}\"\nimpersonator_role = \"{group}\"\n",
                broker.bootstrap(),
                unique("g"),
                with_user(&admin_url, &system, &sys_pw)
            );
            let mut config = policy_push::Config::from_toml(&text, Vec::new()).expect("config");
            config.topics = topics;
            bootstrap(&config).await;
            let source = data_source(Ds {
                id: "ds-orders",
                version: 1,
                host: HOST,
                database: &database,
                schema: &raw,
                table: "orders",
                view: "orders",
                columns: &[("id", &[]), ("email", &["pii"]), ("region", &["geo"])],
                tags: &["sales"],
                status: Status::Active,
            });
            let records = vec![
                policy("p-mask", 1, mask("pii", MaskMethod::Constant, Some("hidden")), &["sales"], &[], &["auditors"]),
                policy("p-region", 1, matching("geo", "region"), &["sales"], &[], &[]),
                source,
                profile(&alice, 1, &[], &[("region", &["eu"])], &["ds-orders"]),
                profile(&bob, 1, &["auditors"], &[("region", &["us"])], &["ds-orders"]),
            ];
            publish(&config, &records).await;
            let running = start(&config);
            let view = format!("SELECT id, email, region FROM {views}.orders ORDER BY id");
            let alice_db = with_user(&admin_url, &alice, &alice_pw);
            wait_for("the view as alice", Duration::from_secs(120), || {
                let (url, view) = (alice_db.clone(), view.clone());
                async move { rows(&connect_to(&url).await, &view).await.is_ok_and(|r| !r.is_empty()) }
            })
            .await;
            let seen_by_alice = rows(&connect_to(&alice_db).await, &view).await.unwrap();
            let seen_by_bob = rows(&connect_to(&with_user(&admin_url, &bob, &bob_pw)).await, &view)
                .await
                .unwrap();
            // A failing predicate must not reach rows or profile values alice cannot see:
            // row-level security keeps it behind the views' conditions (docs/redshift.md).
            let alice_client = connect_to(&alice_db).await;
            let probe_row = format!("SELECT count(*) FROM {views}.orders WHERE 1 / (id - 2) = 1");
            let probe_profile = "SELECT count(*) FROM immuta_system.user_profile_value \
                                 WHERE 1 / (CASE WHEN value = 'us' THEN 0 ELSE 1 END) = 1";
            let probes = (rows(&alice_client, &probe_row).await, rows(&alice_client, probe_profile).await);
            running.stop().await;
            assert!(probes.0.is_ok(), "a hidden row was probed: {:?}", probes.0);
            assert!(probes.1.is_ok(), "another user's profile value was probed: {:?}", probes.1);
            assert_eq!(seen_by_alice, vec![row(&[Some("1"), Some("hidden"), Some("eu")])]);
            assert_eq!(seen_by_bob, vec![row(&[Some("2"), Some("b@x"), Some("us")])]);
        }
    })
    .catch_unwind()
    .await;
    if let Err(e) = admin.batch_execute(&cleanup).await {
        eprintln!("cleanup on the Redshift cluster failed: {e}\n{cleanup}");
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
