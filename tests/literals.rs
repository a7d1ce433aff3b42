//! Literals in generated SQL mean exactly their value, whatever the server's
//! `standard_conforming_strings`, and hostile text in every string field that reaches a
//! view definition stays text.

mod common;

use common::*;
use policy_push::apply::sql::quote::literal;
use policy_push::event::{Event, Kind, MaskMethod, RowFilter, RowFilterKind, Rule, Status};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};

/// Any Unicode text without NUL (validation refuses NUL), weighted towards the characters
/// that end or escape literals.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>().prop_map(|s| s.replace('\0', "")),
        "[\\\\'$Ee\"; -]{0,12}",
        Just("\\".to_string()),
        Just("$$".to_string()),
        Just("\\'".to_string()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn literals_evaluate_to_their_value_under_either_string_setting() {
    let db = Database::create().await;
    let client = db.client().await;
    for setting in ["on", "off"] {
        client
            .batch_execute(&format!("SET standard_conforming_strings = {setting}"))
            .await
            .unwrap();
        let mut runner = TestRunner::new(RunnerConfig::with_cases(300));
        let handle = tokio::runtime::Handle::current();
        let result = runner.run(&text(), |value| {
            let sql = format!("SELECT {}", literal(&value));
            let got = tokio::task::block_in_place(|| handle.block_on(rows(&client, &sql)));
            let got = got.map_err(|e| TestCaseError::fail(format!("{sql}: {e}")))?;
            prop_assert_eq!(got, vec![vec![Some(value.clone())]], "{}", sql);
            Ok(())
        });
        if let Err(e) = result {
            panic!("standard_conforming_strings = {setting}: {e}");
        }
    }
}

const RAW: &str = "CREATE SCHEMA raw; CREATE TABLE raw.t (id int, email text, region text);
INSERT INTO raw.t VALUES (1, 'a@x', 'eu'), (2, 'b@x', 'us');";

/// Each ends its literal early, or escapes the closing quote, if backslashes are escapes.
const GROUP: &str = "g\\";
const EXEMPT_GROUP: &str = "x\\' OR true OR '";
const ATTRIBUTE: &str = "a\\'); CREATE TABLE public.pwned_attribute (); --";
const CONSTANT: &str = "c\\'||(SELECT current_user)||'";
const PURPOSE: &str = "p\\'$$ ) OR (true";
const DS_ID: &str = "ds\\'; CREATE TABLE public.pwned_id (); --";

fn row_filter(
    kind: RowFilterKind,
    tag: Option<&str>,
    attr: Option<&str>,
    group: Option<&str>,
) -> Rule {
    Rule::RowFilter(RowFilter {
        kind,
        column_tag: tag.map(String::from),
        attribute: attr.map(String::from),
        group: group.map(String::from),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backslash_and_quote_payloads_in_every_string_field_stay_text() {
    let mut env = Direct::new(RAW).await;
    let analyst = env.db.role("analyst", true).await;
    // policy-push's sessions must not depend on the server's setting: every new session
    // of this database starts with backslashes as escapes.
    let warehouse = env
        .warehouse_with("standard_conforming_strings", "off")
        .await;
    assert_eq!(
        warehouse
            .session_setting("standard_conforming_strings")
            .await
            .unwrap(),
        "off"
    );

    let source = data_source(Ds {
        id: DS_ID,
        version: 1,
        host: HOST,
        database: &env.db.name,
        schema: "raw",
        table: "t",
        view: "t",
        columns: &[("id", &[]), ("email", &["pii"]), ("region", &["geo"])],
        tags: &["sales"],
        status: Status::Active,
    });
    let group = policy(
        "p1",
        1,
        row_filter(RowFilterKind::MemberOfGroup, None, None, Some(GROUP)),
        &["sales"],
        &[],
        &[EXEMPT_GROUP],
    );
    let mut constant = policy(
        "p2",
        1,
        mask("pii", MaskMethod::Constant, Some(CONSTANT)),
        &[],
        &[DS_ID],
        &[],
    );
    if let Some(Event::Policy(p)) = &mut constant.value {
        p.exceptions.purposes = vec![PURPOSE.into()];
    }
    let attribute = policy(
        "p3",
        1,
        row_filter(
            RowFilterKind::MatchingAttribute,
            Some("geo"),
            Some(ATTRIBUTE),
            None,
        ),
        &["sales"],
        &[],
        &[],
    );
    let records = vec![
        source,
        group,
        constant,
        attribute,
        profile(&analyst, 1, &[GROUP], &[(ATTRIBUTE, &["eu"])], &[DS_ID]),
    ];
    let applied = warehouse
        .apply("direct", &env.batch(&records), &env.dead)
        .await
        .expect("the batch applies");
    assert_eq!(applied.views_rebuilt, 1, "{applied:?}");
    let letters = env.dead.0.lock().unwrap().clone();
    assert!(letters.is_empty(), "nothing is refused: {letters:?}");

    let seen = env
        .db
        .rows_as(
            &analyst,
            "SELECT id, email, region FROM immuta.t ORDER BY id",
        )
        .await
        .unwrap();
    assert_eq!(seen, vec![row(&[Some("1"), Some(CONSTANT), Some("eu")])]);
    let pwned = rows(
        &env.db.client().await,
        "SELECT relname FROM pg_class WHERE relname LIKE 'pwned%'",
    )
    .await
    .unwrap();
    assert!(pwned.is_empty(), "{pwned:?}");
    // The tombstone of the hostile id removes the view, too.
    warehouse
        .apply(
            "direct",
            &env.batch(&[tombstone(Kind::DataSource, DS_ID)]),
            &env.dead,
        )
        .await
        .unwrap();
    assert!(env
        .db
        .rows_as(&analyst, "SELECT 1 FROM immuta.t")
        .await
        .is_err());
}
