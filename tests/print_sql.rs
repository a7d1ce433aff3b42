//! `bootstrap --print-sql` prints the whole script for each integration's dialect without
//! connecting to anything (the URLs point at a port nobody listens on).

use std::process::Command;

fn print_sql(integrations: &str) -> String {
    let dir = std::env::temp_dir().join(format!("print-sql-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}.toml", integrations.len()));
    std::fs::write(
        &path,
        format!("[kafka]\n\"bootstrap.servers\" = \"127.0.0.1:9\"\n[http]\nlisten = \"\"\n{integrations}"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_policy-push"))
        .arg("--config")
        .arg(&path)
        .args(["bootstrap", "--print-sql"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn prints_both_roles_parts_for_postgres_and_redshift_without_connecting() {
    let pg = print_sql(
        "[[integration]]\nname = \"pg\"\nhost = \"h\"\nurl = \"postgres://policy_push:pw-1@127.0.0.1:1/analytics\"\n\
         setup_url = \"postgres://policy_push_setup:pw-2@127.0.0.1:1/analytics\"\n",
    );
    assert!(
        pg.contains("-- As the system account policy_push (url):"),
        "{pg}"
    );
    assert!(pg.contains("CREATE TABLE IF NOT EXISTS immuta_system.profile"));
    assert!(pg.contains("-- As the setup user policy_push_setup"));
    assert!(pg.contains("CREATE ROLE \"immuta_impersonator\" NOLOGIN"));
    assert!(pg.contains("TO \"policy_push\";"));
    let rs = print_sql(
        "[[integration]]\nname = \"rs\"\nhost = \"h\"\ndialect = \"redshift\"\n\
         url = \"postgres://policy_push:pw-3@127.0.0.1:1/analytics\"\n",
    );
    assert!(rs.contains("CREATE GROUP \"immuta_impersonator\";"), "{rs}");
    assert!(rs.contains("TO GROUP \"immuta_impersonator\""));
    assert!(!rs.contains("ON CONFLICT"));
    for text in [&pg, &rs] {
        for secret in ["pw-1", "pw-2", "pw-3"] {
            assert!(!text.contains(secret), "printed {secret}");
        }
    }
}
