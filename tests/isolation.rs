//! Without savepoints (as on Redshift), a record the warehouse refuses fails its whole
//! batch: the applier isolates it by splitting the batch, dead-letters it with its value,
//! applies the rest, and the lane goes on.

mod common;

use common::*;
use policy_push::event::MaskMethod;

const RAW: &str = "CREATE SCHEMA raw; CREATE TABLE raw.t (id int, email text); INSERT INTO raw.t VALUES (1, 'a@x');";

/// Refuses, as a warehouse would refuse a value it cannot store, the profile of
/// `poison_user` and the policy `p-poison`.
const INJECT: &str = "
CREATE FUNCTION public.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF to_jsonb(NEW) ->> 'user_name' = 'poison_user' OR to_jsonb(NEW) ->> 'id' = 'p-poison' THEN
    RAISE EXCEPTION 'value too long for this warehouse (injected by the test)' USING ERRCODE = 'string_data_right_truncation';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON immuta_system.profile FOR EACH ROW EXECUTE FUNCTION public.refuse();
CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON immuta_system.policy FOR EACH ROW EXECUTE FUNCTION public.refuse();
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_records_are_isolated_and_the_rest_applies_without_savepoints() {
    let broker = Broker::mock();
    let (mut db, mut config) = setup(&broker, 2, "iso").await;
    config.integrations[0].savepoints = false;
    let client = db.client().await;
    client.batch_execute(RAW).await.unwrap();
    client.batch_execute(INJECT).await.unwrap();
    let analyst = db.role("analyst", true).await;
    let mut records = vec![raw_t(
        &db,
        1,
        &[("id", &[]), ("email", &["pii"])],
        &["sales"],
    )];
    for i in 0..40 {
        records.push(profile(&format!("user_{i}"), 1, &[], &[], &[]));
    }
    records.push(profile("poison_user", 1, &[], &[], &[]));
    records.push(profile(&analyst, 1, &[], &[], &["ds"]));
    records.push(policy(
        "p-poison",
        1,
        mask("pii", MaskMethod::Nullify, None),
        &["sales"],
        &[],
        &[],
    ));
    records.push(policy(
        "p-good",
        1,
        mask("pii", MaskMethod::Constant, Some("c")),
        &["sales"],
        &[],
        &[],
    ));
    publish(&config, &records).await;
    let running = start(&config);
    wait_applied(&db, &config, records.len()).await;

    // The lane goes on: a later record applies too.
    publish(&config, &[profile("late_user", 1, &[], &[], &[])]).await;
    wait_applied(&db, &config, records.len() + 1).await;
    running.stop().await;
    let users = rows(
        &client,
        "SELECT count(*) FROM immuta_system.profile WHERE NOT deleted",
    )
    .await
    .unwrap();
    assert_eq!(
        users[0][0].as_deref(),
        Some("42"),
        "40 + analyst + late_user"
    );
    let refused = rows(
        &client,
        "SELECT count(*) FROM immuta_system.profile WHERE user_name = 'poison_user'",
    )
    .await
    .unwrap();
    assert_eq!(refused[0][0].as_deref(), Some("0"));
    assert_eq!(
        db.rows_as(&analyst, "SELECT id, email FROM immuta.t")
            .await
            .unwrap(),
        vec![row(&[Some("1"), Some("c")])],
        "the good policy applies"
    );
    let letters = read_dead_letters(&config, 2).await;
    let mut reasons: Vec<&str> = letters.iter().map(|l| l.reason.as_str()).collect();
    reasons.sort();
    assert!(
        reasons
            .iter()
            .all(|r| r.contains("value too long for this warehouse") && r.contains("22001")),
        "{reasons:?}"
    );
    let codec = policy_push::codec::Codec::embedded().unwrap();
    let mut kinds: Vec<String> = letters
        .iter()
        .map(|l| {
            let kind = if l.topic == config.topics.profiles {
                policy_push::event::Kind::Profile
            } else {
                policy_push::event::Kind::Policy
            };
            let value = l
                .value
                .as_ref()
                .expect("the refused record's value is kept");
            let event = codec
                .decode(kind, value)
                .expect("a dead letter decodes as its record");
            event.id().to_string()
        })
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        vec!["p-poison".to_string(), "poison_user".to_string()]
    );
}
