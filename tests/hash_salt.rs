//! HASH with the integration's secret salt (SPEC §4): SHA-256 of salt and value, so a
//! dictionary of likely values does not reverse it; the salt is in no view definition, no
//! catalog an analyst can read, no configuration output; rotating it needs no rebuild.

mod common;

use common::*;
use policy_push::event::MaskMethod;
use tokio_postgres::error::SqlState;

const RAW: &str = "CREATE SCHEMA raw; CREATE TABLE raw.t (id int, email text);
INSERT INTO raw.t VALUES (1, 'a@x.io'), (2, NULL);";

const SALT: &str = "s3cr3t-salt-0123456789-abcdef";
const ROTATED: &str = "another-salt-9876543210-zyxwvu";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashes_are_salted_and_the_salt_stays_secret() {
    let mut env = Direct::with(RAW, |c| c.integrations[0].hash_salt = Some(SALT.into())).await;
    let analyst = env.db.role("analyst", true).await;
    env.apply(&[
        raw_t(&env.db, 1, &[("id", &[]), ("email", &["pii"])], &["sales"]),
        policy(
            "p-hash",
            1,
            mask("pii", MaskMethod::Hash, None),
            &["sales"],
            &[],
            &[],
        ),
        profile(&analyst, 1, &[], &[], &["ds"]),
    ])
    .await;
    let seen = env
        .db
        .rows_as(&analyst, "SELECT email FROM immuta.t ORDER BY id")
        .await
        .unwrap();
    let salted = sha256_hex(&format!("{SALT}a@x.io"));
    assert_eq!(seen, vec![row(&[Some(&salted)]), row(&[None])]);
    assert_ne!(salted, sha256_hex("a@x.io"));

    // Nowhere an analyst can read: the salt's table, view definitions, function sources.
    let c = env.db.as_role(&analyst).await;
    let denied = c
        .batch_execute("SELECT salt FROM immuta_system.hash_salt")
        .await
        .expect_err("the salt's table is the system account's");
    assert_eq!(denied.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));
    for sql in [
        "SELECT string_agg(definition, ' ') FROM pg_views",
        "SELECT string_agg(prosrc, ' ') FROM pg_proc",
        "SELECT string_agg(pg_get_viewdef(c.oid), ' ') FROM pg_class c WHERE relkind = 'v'",
    ] {
        let text = rows(&c, sql).await.unwrap();
        let all = format!("{text:?}");
        assert!(!all.contains(SALT), "{sql} shows the salt");
    }
    assert!(
        !format!("{:?}", env.config).contains(SALT),
        "the config's Debug shows it"
    );

    // Rotation: a new salt at the next start applies to every view at once, no rebuild.
    let mut config = env.config.clone();
    config.integrations[0].hash_salt = Some(ROTATED.into());
    let rotated = policy_push::apply::Warehouse::new(&config.integrations[0]).unwrap();
    rotated.started().await.expect("start stores the new salt");
    let seen = env
        .db
        .rows_as(&analyst, "SELECT email FROM immuta.t WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(
        seen,
        vec![row(&[Some(&sha256_hex(&format!("{ROTATED}a@x.io")))])]
    );
}

#[test]
fn check_config_refuses_a_short_salt_without_showing_it() {
    let text = "[kafka]\n\"bootstrap.servers\" = \"x:9092\"\n[[integration]]\nname = \"a\"\nhost = \"h\"\nurl = \"postgres://u@h/db\"\n";
    let env = vec![(
        "POLICY_PUSH_INTEGRATION_A_HASH_SALT".to_string(),
        "short-secret".to_string(),
    )];
    let err = policy_push::Config::from_toml(text, env).expect_err("too short");
    let message = err.to_string();
    assert!(message.contains("integration.a.hash_salt"), "{message}");
    assert!(!message.contains("short-secret"), "{message}");
    let env = vec![(
        "POLICY_PUSH_INTEGRATION_A_HASH_SALT".to_string(),
        SALT.to_string(),
    )];
    let config = policy_push::Config::from_toml(text, env).expect("a long salt");
    assert_eq!(config.integrations[0].hash_salt.as_deref(), Some(SALT));
    assert!(!format!("{config:?}").contains(SALT));
    assert!(!config.redacted().contains(SALT));
}
