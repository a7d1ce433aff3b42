//! `policy-push demo`: tells its story without log lines in between, drops what it made
//! at the end, and never drops a database of the same name that it did not make.

mod common;

use std::process::Command;

use common::{admin_url, connect, rows, unique};

fn demo(database: &str) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_policy-push"))
        .args(["demo", "--database", database, "--admin-url", &admin_url()])
        .env_remove("RUST_LOG")
        .output()
        .expect("run the demo");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn exists(what: &str, name: &str) -> bool {
    let admin = connect(&admin_url()).await;
    let sql = match what {
        "database" => format!("SELECT 1 FROM pg_database WHERE datname = '{name}'"),
        _ => format!("SELECT 1 FROM pg_roles WHERE rolname = '{name}'"),
    };
    !rows(&admin, &sql).await.unwrap().is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_tells_its_story_and_cleans_up_after_itself() {
    // A database of the demo's name that the demo did not make is left alone.
    let foreign = unique("not_the_demos");
    let admin = connect(&admin_url()).await;
    admin
        .batch_execute(&format!("CREATE DATABASE {foreign}"))
        .await
        .unwrap();
    let (ok, _, err) = tokio::task::spawn_blocking({
        let foreign = foreign.clone();
        move || demo(&foreign)
    })
    .await
    .unwrap();
    assert!(!ok && err.contains("was not made by the demo"), "{err}");
    assert!(
        exists("database", &foreign).await,
        "the foreign database was dropped"
    );
    admin
        .batch_execute(&format!("DROP DATABASE {foreign}"))
        .await
        .unwrap();

    let mine = unique("demo");
    let (ok, out, err) = tokio::task::spawn_blocking({
        let mine = mine.clone();
        move || demo(&mine)
    })
    .await
    .unwrap();
    assert!(ok, "{out}\n{err}");
    for told in [
        "demo_alice sees immuta.orders",
        "demo_bob sees immuta.orders",
        &format!("Dropped database {mine}"),
    ] {
        assert!(out.contains(told), "{told}\n{out}");
    }
    assert!(
        !err.contains(" INFO ") && !err.contains("\"level\":\"INFO\""),
        "{err}"
    );
    assert!(!exists("database", &mine).await);
    for role in ["demo_alice", "demo_bob", "policy_push_demo_impersonator"] {
        assert!(!exists("role", role).await, "{role} was left behind");
    }
}
