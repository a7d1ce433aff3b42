//! Events written by an independent Avro implementation (Python's fastavro, against the
//! files in schemas/) are decoded and applied.

mod common;

use std::process::Command;

use common::*;
use policy_push::event::Kind;

fn kind(name: &str) -> Kind {
    match name {
        "profile" => Kind::Profile,
        "data_source" => Kind::DataSource,
        "policy" => Kind::Policy,
        _ => Kind::Impersonation,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fastavro_records_are_applied() {
    let broker = Broker::mock();
    let (mut db, config) = setup(&broker, 2, "ind").await;

    let out = Command::new("python3")
        .args(["tests/support/fastavro_producer.py", &db.name, HOST])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "fastavro producer failed (pip install fastavro): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<(String, String, Vec<u8>)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let mut parts = l.split(' ');
            let (kind, key, hex) = (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
            );
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            (kind.to_string(), key.to_string(), bytes)
        })
        .collect();
    assert_eq!(lines.len(), 5);

    send_raw(
        &config,
        lines
            .iter()
            .map(|(name, key, bytes)| (kind(name), key.as_str(), bytes.as_slice())),
    )
    .await;
    // The impersonation grant needs the user's role to exist.
    db.adopt_role("ind_user");
    connect(&admin_url())
        .await
        .batch_execute("DROP ROLE IF EXISTS ind_user; CREATE ROLE ind_user LOGIN")
        .await
        .unwrap();

    let running = start(&config);
    wait_applied(&db, &config, lines.len()).await;
    running.stop().await;

    let client = db.client().await;
    let profile = rows(&client, "SELECT user_name, version, groups::text, attributes->'region'->>1, project_id, data_sources::text FROM immuta_system.profile")
        .await
        .unwrap();
    assert_eq!(
        profile,
        vec![row(&[
            Some("ind_user"),
            Some("5"),
            Some("{analysts}"),
            Some("us"),
            Some("proj"),
            Some("{ds-1}")
        ])]
    );
    let defs = rows(&client, "SELECT id, version, definition->>'status' FROM immuta_system.data_source UNION ALL SELECT id, version, definition->>'status' FROM immuta_system.policy ORDER BY 1")
        .await
        .unwrap();
    assert_eq!(
        defs,
        vec![
            row(&[Some("ds-1"), Some("2"), Some("DISABLED")]),
            row(&[Some("pol-1"), Some("3"), Some("ACTIVE")]),
            row(&[Some("pol-2"), Some("1"), Some("ACTIVE")]),
        ]
    );
    let member = rows(
        &client,
        &format!(
            "SELECT pg_has_role('ind_user', '{}', 'MEMBER')",
            config.integrations[0].impersonator_role
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        member[0][0].as_deref(),
        Some("t"),
        "impersonation grant applied"
    );
    let dead = rows(&client, "SELECT count(*) FROM immuta_system.apply_log")
        .await
        .unwrap();
    assert_eq!(
        dead[0][0].as_deref(),
        Some("5"),
        "every record applied, none dead-lettered"
    );
}
