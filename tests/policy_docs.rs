//! The tables of `docs/policies.md` ("ana sees", "ben sees") are what PostgreSQL really
//! returns to two login roles for each example.

mod common;

use common::*;
use policy_push::apply::sql::examples;
use policy_push::event::{Event, Kind};
use policy_push::simulate::Record;

const RAW: &str = "
CREATE SCHEMA sales;
CREATE TABLE sales.orders (id integer, email text, region text);
INSERT INTO sales.orders VALUES (1, 'a@x.io', 'eu'), (2, 'b@x.io', 'us'), (3, NULL, 'eu');
";

/// Rows as the document renders them.
fn markdown(rows: &[Vec<Option<String>>]) -> String {
    if rows.is_empty() {
        return "*(no rows)*\n".into();
    }
    let mut out = String::from("| id | email | region |\n|---|---|---|\n");
    for r in rows {
        let cells: Vec<&str> = r.iter().map(|c| c.as_deref().unwrap_or("NULL")).collect();
        out += &format!("| {} |\n", cells.join(" | "));
    }
    out
}

/// The table the document shows under `## title` after "`who` sees:".
fn documented<'a>(doc: &'a str, title: &str, who: &str) -> &'a str {
    let start = doc
        .find(&format!("\n## {title}\n"))
        .unwrap_or_else(|| panic!("no section {title:?}"));
    let section = &doc[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 4)];
    let at = section
        .find(&format!("{who} sees:\n\n"))
        .unwrap_or_else(|| panic!("{title}: no {who} table"))
        + who.len()
        + 8;
    let table = &section[at..];
    &table[..table.find("\n\n").map_or(table.len(), |e| e + 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_rows_are_what_each_analyst_gets() {
    let mut env = Direct::new(RAW).await;
    documented_rows(&mut env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_functions_and_operators_change_no_documented_row() {
    let mut env = Direct::with(RAW, |c| c.integrations[0].savepoints = false).await;
    plant_builtins(&mut env.db).await;
    documented_rows(&mut env).await;
}

/// Applies each example of docs/policies.md and compares what ana and ben get with the
/// document's tables.
async fn documented_rows(env: &mut Direct) {
    let doc = std::fs::read_to_string("docs/policies.md").unwrap();
    let (ana, ben) = (
        env.db.role("ana", true).await,
        env.db.role("ben", true).await,
    );
    let mut source = examples::orders();
    source.database = env.db.name.clone();
    let mut setup = vec![Record {
        kind: Kind::DataSource,
        key: source.id.clone(),
        value: Some(Event::DataSource(source)),
    }];
    for p in examples::analysts(&ana, &ben) {
        setup.push(Record {
            kind: Kind::Profile,
            key: p.user.clone(),
            value: Some(Event::Profile(p)),
        });
    }
    env.apply(&setup).await;

    let mut version = 1;
    let mut previous: Vec<String> = Vec::new();
    for (title, policies) in examples::all() {
        version += 1;
        // Replace the previous example's policies with this one's.
        let mut records: Vec<Record> = previous
            .iter()
            .map(|id| tombstone(Kind::Policy, id))
            .collect();
        for mut p in policies.clone() {
            p.version = version;
            records.push(Record {
                kind: Kind::Policy,
                key: p.id.clone(),
                value: Some(Event::Policy(p)),
            });
        }
        env.apply(&records).await;
        previous = policies.iter().map(|p| p.id.clone()).collect();
        for (role, who) in [(&ana, "ana"), (&ben, "ben")] {
            let got = env
                .db
                .rows_as(
                    role,
                    "SELECT id, email, region FROM immuta.orders ORDER BY id",
                )
                .await
                .unwrap();
            assert_eq!(
                markdown(&got),
                documented(&doc, title, who),
                "docs/policies.md, {title:?}, what {who} sees"
            );
        }
    }
    assert!(env.dead.0.lock().unwrap().is_empty());
}
