use super::{Config, ConfigError, SynchronousCommit, Tolerance, Topics};

const CONTRACT: &str = r#"
[kafka]
"bootstrap.servers" = "127.0.0.1:9092"

[topics]
profiles = "immuta.profiles"
data_sources = "immuta.data_sources"
policies = "immuta.policies"
impersonation = "immuta.impersonation"
dead_letter = "immuta.dead_letter"

[consumer]
group_prefix = "policy-push"

[batch]
max_records = 5000
linger_ms = 100

[http]
listen = "127.0.0.1:9464"

[schema_registry]

[[integration]]
name = "primary"
host = "127.0.0.1"
url = "postgres://postgres@127.0.0.1:5432/immuta"
dialect = "postgres"
view_schema = "immuta"
"#;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn the_spec_contract_file_parses() {
    let c = Config::from_toml(CONTRACT, vec![]).unwrap();
    assert_eq!(c.kafka["bootstrap.servers"], "127.0.0.1:9092");
    assert_eq!(
        c.integrations[0].consumer_group(&c.consumer.group_prefix),
        "policy-push.primary"
    );
    assert_eq!(c.integrations[0].database().unwrap(), "immuta");
    assert_eq!(c.batch.max_records, 5000);
}

#[test]
fn shipped_config_files_parse() {
    for text in [
        include_str!("../../policy-push.example.toml"),
        include_str!("../../deploy/policy-push.toml"),
    ] {
        let c = Config::from_toml(text, vec![]).unwrap();
        assert_eq!(c.integrations[0].name, "primary");
    }
}

#[test]
fn environment_overrides_every_section() {
    let c = Config::from_toml(
        CONTRACT,
        env(&[
            ("POLICY_PUSH_KAFKA_SASL_PASSWORD", "hunter2"),
            ("POLICY_PUSH_BATCH_LINGER_MS", "7"),
            ("POLICY_PUSH_SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081"),
            ("POLICY_PUSH_INTEGRATION_PRIMARY_PASSWORD", "s3cret"),
            ("POLICY_PUSH_INTEGRATION_PRIMARY_AUDIT", "true"),
        ]),
    )
    .unwrap();
    assert_eq!(c.kafka["sasl.password"], "hunter2");
    assert_eq!(c.batch.linger, std::time::Duration::from_millis(7));
    assert_eq!(
        c.schema_registry.url.as_deref(),
        Some("http://127.0.0.1:8081")
    );
    assert!(c.integrations[0].audit);
    assert_eq!(
        c.integrations[0].pg_config().unwrap().get_password(),
        Some(&b"s3cret"[..])
    );
}

/// The contract's configuration with a secret in the URL (`urlpass`), the Kafka SASL
/// password `hunter2` and the warehouse password `s3cret`, and `more` variables.
fn with_secrets(more: &[(&str, &str)]) -> Config {
    let text = CONTRACT.replace("postgres://postgres@", "postgres://postgres:urlpass@");
    let mut vars = vec![
        ("POLICY_PUSH_KAFKA_SASL_PASSWORD", "hunter2"),
        ("POLICY_PUSH_INTEGRATION_PRIMARY_PASSWORD", "s3cret"),
    ];
    vars.extend_from_slice(more);
    Config::from_toml(&text, env(&vars)).unwrap()
}

#[test]
fn secrets_never_show_in_display_forms() {
    let c = with_secrets(&[]);
    let shown = c.redacted() + &format!("{c:?}");
    for secret in ["hunter2", "s3cret", "urlpass"] {
        assert!(!shown.contains(secret), "{secret} leaked: {shown}");
    }
    assert!(shown.contains("<redacted>"));
}

#[test]
fn errors_name_the_offending_key() {
    let cases = [
        (
            CONTRACT.replace("linger_ms = 100", "linger_ms = \"soon\""),
            "linger_ms",
        ),
        (
            CONTRACT.replace("max_records = 5000", "max_records = 0"),
            "batch.max_records",
        ),
        (
            CONTRACT.replace("[batch]", "[log]\nformat = \"xml\"\n[batch]"),
            "format",
        ),
        (
            CONTRACT.replace("linger_ms = 100", "linger_ms = -5"),
            "linger_ms",
        ),
        (
            CONTRACT.replace("view_schema = \"immuta\"", "view_schema = \"a b\""),
            "view_schema",
        ),
        (
            CONTRACT.replace("[batch]", "[batch]\nmax_recordz = 1"),
            "max_recordz",
        ),
        (
            CONTRACT.replace("listen = \"127.0.0.1:9464\"", "listen = \"nowhere\""),
            "http.listen",
        ),
        (
            CONTRACT.replace("dialect = \"postgres\"", "dialect = \"oracle\""),
            "dialect",
        ),
        (
            CONTRACT.replace(
                "dialect = \"postgres\"",
                "dialect = \"redshift\"\nsynchronous_commit = \"off\"",
            ),
            "integration.primary.synchronous_commit",
        ),
        (
            CONTRACT.replace(
                "dialect = \"postgres\"",
                "dialect = \"postgres\"\nsynchronous_commit = \"maybe\"",
            ),
            "synchronous_commit",
        ),
    ];
    for (text, key) in cases {
        let err = crate::error::chain(&Config::from_toml(&text, vec![]).unwrap_err());
        assert!(err.contains(key), "{key} not named in: {err}");
    }
}

#[test]
fn synchronous_commit_is_unset_by_default_and_takes_postgres_values() {
    let c = Config::from_toml(CONTRACT, vec![]).unwrap();
    assert_eq!(c.integrations[0].synchronous_commit, None);
    let c = Config::from_toml(
        CONTRACT,
        env(&[(
            "POLICY_PUSH_INTEGRATION_PRIMARY_SYNCHRONOUS_COMMIT",
            "remote_apply",
        )]),
    )
    .unwrap();
    assert_eq!(
        c.integrations[0].synchronous_commit,
        Some(SynchronousCommit::RemoteApply)
    );
}

#[test]
fn topics_of_some_kinds_keep_their_order() {
    use crate::event::Kind;
    let topics = Topics::default();
    assert_eq!(
        topics.of_kinds(&[Kind::Policy, Kind::Profile]),
        ["immuta.profiles", "immuta.policies"]
    );
    assert_eq!(topics.of_kinds(&Kind::ALL).len(), 4);
}

#[test]
fn a_parse_error_keeps_its_source() {
    let e = Config::from_toml("[batch\n", std::iter::empty()).unwrap_err();
    assert!(matches!(e, ConfigError::Parse(_)), "{e}");
    let source = std::error::Error::source(&e).map(|s| s.to_string());
    assert!(source.is_some_and(|s| s.contains("batch")), "{e:?}");
}

#[test]
fn errors_tolerance_is_set_from_the_environment() {
    let env = |var: &str| vec![(var.to_string(), "none".to_string())];
    let c = Config::from_toml(CONTRACT, env("POLICY_PUSH_ERRORS_TOLERANCE_POLICIES")).unwrap();
    assert_eq!(
        c.errors.tolerance.of(crate::event::Kind::Policy),
        Tolerance::None
    );
    assert_eq!(
        c.errors.tolerance.of(crate::event::Kind::Profile),
        Tolerance::All
    );
    let every = Config::from_toml(CONTRACT, env("POLICY_PUSH_ERRORS_TOLERANCE")).unwrap();
    assert_eq!(every.topics.intolerant(&every.errors).len(), 4);
    let misspelt = Config::from_toml(CONTRACT, env("POLICY_PUSH_ERRORS_TOLERANCE_POLICY"));
    assert!(
        misspelt.is_err(),
        "a misspelt topic must not silently tolerate"
    );
}

#[test]
fn the_effective_configuration_is_a_valid_file_with_defaults_overrides_and_no_secret() {
    let c = with_secrets(&[("POLICY_PUSH_BATCH_LINGER_MS", "7")]);
    let shown = c.effective_toml().unwrap();
    for secret in ["hunter2", "s3cret", "urlpass"] {
        assert!(!shown.contains(secret), "{secret} leaked: {shown}");
    }
    for line in [
        "linger_ms = 7",
        "max_records = 5000",
        "shutdown_timeout_ms = 20000",
        "\"sasl.password\" = \"<redacted>\"",
        "# integration primary: password set, setup_password not set",
    ] {
        assert!(shown.contains(line), "{line} not in:\n{shown}");
    }
    let again = Config::from_toml(&shown, Vec::new()).expect("it reads back");
    assert_eq!(again.batch.linger, std::time::Duration::from_millis(7));
    assert_eq!(
        again.integrations[0].url,
        "postgres://postgres:<redacted>@127.0.0.1:5432/immuta"
    );
    assert_eq!(
        again
            .effective_toml()
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>(),
        shown
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
    );
}
