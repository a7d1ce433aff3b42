//! Secrets never appear in what the binary prints: `check-config` output, error messages,
//! and the logs of a run whose warehouse is unreachable (so that errors are logged).

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const URL_SECRET: &str = "urlpass-4f1c";
const ENV_SECRET: &str = "envpass-9a2b";
const SASL_SECRET: &str = "saslpass-77d0";

fn command(config: &std::path::Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_policy-push"));
    c.arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "debug")
        .env("POLICY_PUSH_INTEGRATION_PRIMARY_PASSWORD", ENV_SECRET)
        .env("POLICY_PUSH_KAFKA_SASL_PASSWORD", SASL_SECRET);
    c
}

fn assert_clean(what: &str, text: &str) {
    assert!(
        !text.is_empty(),
        "{what} printed nothing, so the test proves nothing"
    );
    for secret in [URL_SECRET, ENV_SECRET, SASL_SECRET] {
        assert!(!text.contains(secret), "{what} leaked {secret}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_out_of_output_errors_and_logs() {
    let broker = Broker::mock();
    broker
        .create_topics(&policy_push::config::Topics::default(), 1)
        .await;
    let dir = std::env::temp_dir().join(unique("secrets"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("policy-push.toml");
    // Port 1: nothing listens, so every warehouse call fails and is logged.
    let text = format!(
        "[kafka]\n\"bootstrap.servers\" = \"{}\"\n[http]\nlisten = \"\"\n[log]\nformat = \"json\"\n\
         [[integration]]\nname = \"primary\"\nhost = \"h\"\nurl = \"postgres://system:{URL_SECRET}@127.0.0.1:1/db\"\n",
        broker.bootstrap()
    );
    std::fs::write(&config, text).unwrap();

    let out = command(&config, &["check-config"]).output().unwrap();
    assert!(out.status.success());
    assert_clean("check-config", &String::from_utf8_lossy(&out.stdout));

    let out = command(&config, &["bootstrap"]).output().unwrap();
    assert!(!out.status.success(), "bootstrap against nothing must fail");
    assert_clean("bootstrap error", &String::from_utf8_lossy(&out.stderr));

    let log = dir.join("run.log");
    let mut child = command(&config, &["run"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_for(
        "run to log its warehouse failure",
        Duration::from_secs(60),
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            std::future::ready(text.contains("cannot read stored offsets"))
        },
    )
    .await;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    wait_for("run to exit after SIGTERM", Duration::from_secs(30), || {
        std::future::ready(child.try_wait().unwrap().is_some())
    })
    .await;
    assert_clean("run logs", &std::fs::read_to_string(&log).unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `check-config` prints the effective configuration: every form of connection string
/// and every secret librdkafka property is shown redacted.
#[test]
fn check_config_hides_passwords_in_every_form() {
    let dir = std::env::temp_dir().join(unique("secrets-forms"));
    std::fs::create_dir_all(&dir).unwrap();
    let secrets = [
        "query-4e1",
        "kv-5d2",
        "pw-6c3 pw-6c3b",
        "registry-7b4",
        "keypw-8a5",
        "store-9f6",
        "oidc-0e7",
    ];
    let text = format!(
        r#"[kafka]
"bootstrap.servers" = "127.0.0.1:9"
"ssl.key.password" = "{}"
"ssl.keystore.password" = "{}"
"sasl.password" = "{}"
[schema_registry]
url = "http://reader:{}@127.0.0.1:1"
[http]
listen = ""
[[integration]]
name = "query"
host = "h1"
url = "postgres://system@127.0.0.1:1/db?sslmode=disable&password={}"
[[integration]]
name = "kv"
host = "h2"
url = "host=127.0.0.1 port=1 user=system password={} dbname=db"
[[integration]]
name = "quoted"
host = "h3"
url = "host=127.0.0.1 port=1 user=system password='{}' dbname=db"
"#,
        secrets[4], secrets[5], secrets[6], secrets[3], secrets[0], secrets[1], secrets[2]
    );
    let config = dir.join("policy-push.toml");
    std::fs::write(&config, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_policy-push"))
        .arg("--config")
        .arg(&config)
        .arg("check-config")
        .output()
        .unwrap();
    let shown =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
    for secret in secrets {
        let word = secret.split(" ").last().unwrap();
        assert!(
            !shown.contains(word),
            "check-config leaked {secret:?}:\n{shown}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
