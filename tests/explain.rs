//! `policy-push explain` against what real analyst roles see through the view: for each
//! user its verdict (no rows, every row, rows where …; each column's mask) is checked
//! against the rows the user's own login role gets.

mod common;

use std::collections::BTreeMap;

use common::*;
use policy_push::commands::explain::{explanation, ViewVerdict};
use policy_push::event::{Event, MaskMethod, Status};

const RAW: &str = "CREATE SCHEMA raw; CREATE TABLE raw.orders (id text, email text, region text);
    INSERT INTO raw.orders VALUES ('1', 'a@x', 'eu'), ('2', 'b@x', 'us'), ('3', 'c@x', 'eu');";
const DS: &str = "ds-orders";

/// The raw rows by id: (email, region).
fn raw() -> BTreeMap<String, (String, String)> {
    [("1", "a@x", "eu"), ("2", "b@x", "us"), ("3", "c@x", "eu")]
        .into_iter()
        .map(|(i, e, r)| (i.to_string(), (e.to_string(), r.to_string())))
        .collect()
}

/// Checks what `role` sees through the view against `v`, and returns the ids it sees.
async fn agrees(env: &Direct, role: &str, v: &ViewVerdict) -> Vec<String> {
    let seen = env
        .db
        .rows_as(
            role,
            "SELECT id, email, region FROM immuta.orders ORDER BY id",
        )
        .await
        .unwrap();
    assert_eq!(seen.is_empty(), v.no_rows, "{role}: {v:#?}\n{seen:?}");
    let raw = raw();
    for row in &seen {
        let id = row[0].clone().unwrap();
        let (email, region) = &raw[&id];
        let shown_email = row[1].clone();
        let expected = match v.columns[1].mask {
            None => Some(email.clone()),
            Some(MaskMethod::Hash) => Some(sha256_hex(email)),
            Some(MaskMethod::Nullify) => None,
            Some(MaskMethod::Constant) => Some("x".to_string()),
        };
        assert_eq!(shown_email, expected, "{role}: {v:#?}");
        assert_eq!(row[2].as_deref(), Some(region.as_str()), "{role}");
        assert!(
            v.columns[0].mask.is_none() && v.columns[2].mask.is_none(),
            "{v:#?}"
        );
    }
    seen.iter().map(|r| r[0].clone().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_says_what_each_real_role_sees() {
    let mut env = Direct::new(RAW).await;
    let alice = env.db.role("alice", true).await;
    let bob = env.db.role("bob", true).await;
    let carol = env.db.role("carol", true).await;
    let dave = env.db.role("dave", true).await;
    let erin = env.db.role("erin", true).await;
    let source = data_source(Ds {
        id: DS,
        version: 1,
        host: HOST,
        database: &env.db.name,
        schema: "raw",
        table: "orders",
        view: "orders",
        columns: &[("id", &[]), ("email", &["pii"]), ("region", &["geo"])],
        tags: &[],
        status: Status::Active,
    });
    let mut by_purpose = policy(
        "p3",
        1,
        mask("pii", MaskMethod::Constant, Some("x")),
        &["pii"],
        &[],
        &[],
    );
    if let Some(Event::Policy(p)) = &mut by_purpose.value {
        p.exceptions.purposes = vec!["fraud".into()];
    }
    let records = vec![
        source,
        policy(
            "p1",
            1,
            matching("geo", "region"),
            &[],
            &[DS],
            &["auditors"],
        ),
        policy(
            "p2",
            1,
            mask("pii", MaskMethod::Hash, None),
            &["pii"],
            &[],
            &["privacy"],
        ),
        by_purpose,
        policy("p4", 1, matching("nowhere", "region"), &[], &[DS], &[]),
        profile(&alice, 1, &[], &[("region", &["eu"])], &[DS]),
        profile(&bob, 1, &[], &[], &[DS]),
        profile(&carol, 1, &["auditors", "privacy"], &[], &[DS]),
        profile(&dave, 1, &[], &[("region", &["eu", "us"])], &[]),
    ];
    env.warehouse
        .apply("direct", &env.batch(&records), &env.dead)
        .await
        .expect("the batch applies");

    let verdict = |user: String| {
        let config = env.config.clone();
        async move {
            let e = explanation(&config, "d", &user, Some(DS)).await.unwrap();
            assert_eq!(e.views.len(), 1, "{e:#?}");
            e.views[0].clone()
        }
    };
    // alice: the attribute filter keeps her region; the lowest-id mask hashes the e-mail.
    let v = verdict(alice.clone()).await;
    assert_eq!(v.state, "built with the stored policies", "{v:#?}");
    assert!(
        v.rows
            .contains("region is one of the user's region values (eu)"),
        "{v:#?}"
    );
    assert_eq!(v.columns[1].shows, "HASH (policy p2)");
    let p4 = v.policies.iter().find(|p| p.id == "p4").unwrap();
    assert!(
        !p4.applies
            && p4
                .why
                .contains("no column of this data source is tagged nowhere")
    );
    assert_eq!(agrees(&env, &alice, &v).await, ["1", "3"]);

    // bob: no region attribute, so no row passes.
    let v = verdict(bob.clone()).await;
    assert!(
        v.no_rows && v.rows.contains("the user has no attribute region"),
        "{v:#?}"
    );
    agrees(&env, &bob, &v).await;

    // carol: exempt from the filter (auditors) and from the hash (privacy): the next
    // mask by id, the constant, shows.
    let v = verdict(carol.clone()).await;
    assert_eq!(v.rows, "every row", "{v:#?}");
    assert_eq!(v.columns[1].shows, "CONSTANT \"x\" (policy p3)");
    let p1 = v.policies.iter().find(|p| p.id == "p1").unwrap();
    assert!(
        !p1.applies && p1.why.contains("exception group auditors"),
        "{p1:?}"
    );
    assert_eq!(agrees(&env, &carol, &v).await, ["1", "2", "3"]);

    // dave: not subscribed. erin: no profile at all.
    let v = verdict(dave.clone()).await;
    assert!(!v.subscribed && v.no_rows, "{v:#?}");
    agrees(&env, &dave, &v).await;
    let v = verdict(erin.clone()).await;
    assert!(v.no_rows && v.rows.contains("no profile"), "{v:#?}");
    agrees(&env, &erin, &v).await;
}
