//! `check-config` refuses what `run` would refuse, and names the key.

use std::process::Command;

fn check(kafka: &str, url: &str) -> (bool, String) {
    let dir = std::env::temp_dir().join(format!("check-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}.toml", kafka.len() + url.len() * 1000));
    std::fs::write(
        &path,
        format!(
            "[kafka]\n\"bootstrap.servers\" = \"127.0.0.1:9\"\n{kafka}\n[http]\nlisten = \"\"\n\
             [[integration]]\nname = \"i\"\nhost = \"h\"\nurl = \"{url}\"\n"
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_policy-push"))
        .arg("--config")
        .arg(&path)
        .arg("check-config")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout),
    )
}

const URL: &str = "postgres://policy_push@127.0.0.1:1/db";

#[test]
fn check_config_names_what_run_would_refuse() {
    let (ok, text) = check("", URL);
    assert!(ok, "{text}");
    let (ok, text) = check("\"no.such.property\" = \"1\"", URL);
    assert!(!ok && text.contains("no.such.property"), "{text}");
    let (ok, text) = check(
        "\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanisms\" = \"SCRAM-SHA-256\"\n\"sasl.username\" = \"u\"",
        URL,
    );
    assert!(!ok && text.contains("sasl.password"), "{text}");
    let (ok, text) = check(
        "\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanisms\" = \"SCRAM-SHA-512\"\n\"sasl.username\" = \"u\"\n\"sasl.password\" = \"p\"",
        URL,
    );
    assert!(ok, "SASL_SSL with SCRAM is compiled in: {text}");
    for mode in ["disable", "prefer", "require", "verify-ca", "verify-full"] {
        let (ok, text) = check("", &format!("{URL}?sslmode={mode}"));
        assert!(ok, "sslmode={mode} is built in: {text}");
    }
    let (ok, text) = check("", &format!("{URL}?sslmode=allow"));
    assert!(
        !ok && text.contains("integration.i.url") && text.contains("sslmode=allow"),
        "{text}"
    );
    let (ok, text) = check(
        "",
        &format!("{URL}?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"),
    );
    assert!(
        !ok && text.contains("integration.i.url") && text.contains("/nonexistent/ca.pem"),
        "{text}"
    );
}

mod common;

/// `--connect` tries each target with the configuration's own settings and says which
/// answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_connect_reports_every_target() {
    let broker = common::Broker::mock();
    let db = common::Database::create().await;
    let dir = std::env::temp_dir().join(common::unique("pp_connect"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.toml");
    let dead_setup = db.admin_url.replace(":5432/", ":1/");
    std::fs::write(
        &path,
        format!(
            "[kafka]\n\"bootstrap.servers\" = \"{},127.0.0.1:1\"\n\"socket.connection.setup.timeout.ms\" = \"3000\"\n\
             [http]\nlisten = \"\"\n[[integration]]\nname = \"i\"\nhost = \"h\"\nurl = \"{}\"\nsetup_url = \"{dead_setup}\"\n",
            broker.bootstrap(),
            db.url
        ),
    )
    .unwrap();
    let (code, text) = common::check_config_connect(path).await;
    assert_eq!(code, Some(1), "{text}");
    let first = broker.bootstrap().split(',').next().unwrap().to_string();
    for expected in [
        format!("ok    kafka broker {first} (3 brokers"),
        "FAIL  kafka broker 127.0.0.1:1:".to_string(),
        format!("ok    warehouse i (url) (as {}", db.system_role),
        "FAIL  warehouse i (setup_url):".to_string(),
    ] {
        assert!(text.contains(&expected), "{expected}\n{text}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Deletes `topic` and creates it again, compacted (Tansu has no AlterConfigs).
async fn recreate_compacted(broker: &common::Broker, topic: &str) {
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        broker.client_config().create().unwrap();
    admin
        .delete_topics(&[topic], &rdkafka::admin::AdminOptions::new())
        .await
        .unwrap();
    policy_push::consume::admin::ensure_topics(&broker.client_config(), &[(topic, true)], 2)
        .await
        .unwrap();
}

/// `--connect` checks every configured topic: a misspelt name is named with the topic it
/// probably means, an input topic that is not compacted is named with the remedy, and a
/// configuration whose topics are right passes. On Tansu, which answers DescribeConfigs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_connect_names_a_misspelt_or_loose_topic() {
    let broker = common::Broker::tansu().await;
    let topics = common::random_topics();
    broker
        .create_topics_compacted_but(&topics, &topics.impersonation, 2)
        .await;
    let db = common::Database::create().await;
    let dir = std::env::temp_dir().join(common::unique("pp_topics"));
    std::fs::create_dir_all(&dir).unwrap();
    let misspelt = topics.policies.replace(".policies", ".policys");
    let write = |name: &str, policies: &str| {
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!(
                "[kafka]\n\"bootstrap.servers\" = \"{}\"\n[topics]\nprofiles = \"{}\"\n\
                 data_sources = \"{}\"\npolicies = \"{policies}\"\nimpersonation = \"{}\"\n\
                 dead_letter = \"{}\"\n[http]\nlisten = \"\"\n\
                 [[integration]]\nname = \"i\"\nhost = \"h\"\nurl = \"{}\"\n",
                broker.bootstrap(),
                topics.profiles,
                topics.data_sources,
                topics.impersonation,
                topics.dead_letter,
                db.url
            ),
        )
        .unwrap();
        path
    };
    let (code, text) = common::check_config_connect(write("wrong.toml", &misspelt)).await;
    assert_eq!(code, Some(1), "{text}");
    for expected in [
        format!("ok    topic {} (2 partitions, compacted)", topics.profiles),
        format!(
            "FAIL  topic {misspelt}: does not exist; did you mean {}?",
            topics.policies
        ),
        format!(
            "FAIL  topic {}: topic {} has cleanup.policy=",
            topics.impersonation, topics.impersonation
        ),
        format!(
            "ok    topic {} (2 partitions, not compacted)",
            topics.dead_letter
        ),
    ] {
        assert!(text.contains(&expected), "{expected}\n{text}");
    }
    let impersonation = text
        .lines()
        .find(|l| l.contains(&format!("topic {}:", topics.impersonation)))
        .unwrap();
    assert!(impersonation.contains("not compact"), "{impersonation}");

    // Recreated compacted (Tansu has no AlterConfigs), and spelt right: every line ok.
    recreate_compacted(&broker, &topics.impersonation).await;
    let (code, text) = common::check_config_connect(write("right.toml", &topics.policies)).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(!text.contains("FAIL"), "{text}");

    // A compacted dead-letter topic would lose letters: named.
    recreate_compacted(&broker, &topics.dead_letter).await;
    let (code, text) = common::check_config_connect(write("right.toml", &topics.policies)).await;
    assert_eq!(code, Some(1), "{text}");
    let expected = format!(
        "FAIL  topic {0}: the dead-letter topic {0} is compacted",
        topics.dead_letter
    );
    assert!(text.contains(&expected), "{expected}\n{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}
