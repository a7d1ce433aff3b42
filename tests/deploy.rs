//! The deployment files, validated as far as this machine allows (no Docker engine):
//! docker-compose.yml parses and wires the stack, and every metric the Grafana dashboard
//! queries exists in /metrics of a real run.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::*;
use policy_push::event::Status;

fn compose() -> serde_json::Value {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open('docker-compose.yml'))))",
        ])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "docker-compose.yml does not parse (pip install pyyaml): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every `policy_push_*` series name a dashboard query uses.
fn dashboard_metrics() -> BTreeSet<String> {
    let text = std::fs::read_to_string("deploy/grafana/dashboards/policy-push.json").unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let mut names = BTreeSet::new();
    for panel in dash["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let mut rest = expr;
            while let Some(at) = rest.find("policy_push_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                names.insert(name);
            }
        }
    }
    names
}

#[test]
fn compose_runs_kafka_postgres_policy_push_prometheus_and_grafana() {
    let c = compose();
    let services = c["services"].as_object().expect("services");
    for s in [
        "kafka",
        "topics",
        "postgres",
        "bootstrap",
        "policy-push",
        "prometheus",
        "grafana",
    ] {
        assert!(services.contains_key(s), "service {s} missing");
    }
    assert_eq!(
        services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"], "broker,controller",
        "KRaft mode"
    );
    assert_eq!(services["policy-push"]["build"], ".");
    let topics = services["topics"]["command"].to_string();
    assert!(
        topics.contains("cleanup.policy=compact"),
        "input topics are compacted"
    );
    let volumes = services["grafana"]["volumes"].to_string();
    assert!(
        volumes.contains("deploy/grafana/provisioning")
            && volumes.contains("deploy/grafana/dashboards")
    );
    let prometheus = std::fs::read_to_string("deploy/prometheus.yml").unwrap();
    assert!(prometheus.contains("policy-push:9464"));
    let config = policy_push::Config::from_toml(
        &std::fs::read_to_string("deploy/policy-push.toml").unwrap(),
        Vec::new(),
    )
    .unwrap();
    assert_eq!(
        config.http.listen, "0.0.0.0:9464",
        "the port Prometheus scrapes"
    );
    assert_eq!(config.kafka["bootstrap.servers"], "kafka:9092");
}

#[test]
fn the_stack_is_reachable_from_the_host_and_checks_its_own_health() {
    let c = compose();
    let s = &c["services"];
    let kafka = &s["kafka"]["environment"];
    let advertised = kafka["KAFKA_ADVERTISED_LISTENERS"].as_str().unwrap();
    assert!(
        advertised.contains("PLAINTEXT://kafka:9092"),
        "containers: {advertised}"
    );
    assert!(
        advertised.contains("HOST://localhost:9094"),
        "host: {advertised}"
    );
    assert!(s["kafka"]["ports"].to_string().contains("9094:9094"));
    let pg_ports = s["postgres"]["ports"].to_string();
    assert!(
        !pg_ports.contains("\"5432:"),
        "a local PostgreSQL keeps 5432: {pg_ports}"
    );
    for service in ["kafka", "postgres", "policy-push", "prometheus", "grafana"] {
        assert!(
            s[service]["healthcheck"]["test"].is_array(),
            "{service} has no healthcheck"
        );
    }
    assert_eq!(
        s["policy-push"]["healthcheck"]["test"],
        serde_json::json!(["CMD", "policy-push", "status"])
    );
    assert!(s["prometheus"]["volumes"]
        .to_string()
        .contains("deploy/prometheus/alerts.yml"));
    let prometheus = std::fs::read_to_string("deploy/prometheus.yml").unwrap();
    assert!(
        prometheus.contains("/etc/prometheus/alerts.yml"),
        "{prometheus}"
    );
    let dockerfile = std::fs::read_to_string("Dockerfile").unwrap();
    assert!(
        dockerfile
            .lines()
            .any(|l| l.starts_with("HEALTHCHECK") && l.contains("\"policy-push\", \"status\"")),
        "{dockerfile}"
    );
    // The released binary carries neither the demo nor the load harness (README).
    assert!(
        dockerfile
            .lines()
            .any(|l| l.contains("cargo build") && l.contains("--no-default-features")),
        "{dockerfile}"
    );
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string("deploy/grafana/dashboards/policy-push.json").unwrap(),
    )
    .unwrap();
    let variables: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(variables, ["datasource", "integration"]);
    for panel in dash["panels"].as_array().unwrap() {
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{}",
            panel["title"]
        );
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            assert!(expr.contains("integration=~\"$integration\""), "{expr}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_exists_in_a_real_run() {
    let wanted = dashboard_metrics();
    assert!(wanted.len() >= 10, "{wanted:?}");
    let broker = Broker::mock();
    let (db, mut config) = setup(&broker, 2, "dash").await;
    let port = free_tcp_port();
    config.http.listen = format!("127.0.0.1:{port}");
    config.http.lag_refresh = std::time::Duration::from_millis(200);
    db.client()
        .await
        .batch_execute("CREATE SCHEMA raw; CREATE TABLE raw.t (id int)")
        .await
        .unwrap();
    let source = |id: &str, host: &str| {
        data_source(Ds {
            id,
            version: 1,
            host,
            database: &db.name,
            schema: "raw",
            table: "t",
            view: id,
            columns: &[("id", &[])],
            tags: &[],
            status: Status::Active,
        })
    };
    // An invalid view name: refused by validation, so dead-lettered.
    let mut bad = source("bad", HOST);
    if let Some(policy_push::event::Event::DataSource(d)) = &mut bad.value {
        d.view_name = "no good".into();
    }
    let records = vec![
        source("mine", HOST),
        source("theirs", "elsewhere.example"),
        profile("someone", 1, &[], &[], &["mine"]),
        profile("someone", 2, &[], &[], &["mine"]),
        bad,
    ];
    publish(&config, &records).await;
    let running = start(&config);
    wait_applied(&db, &config, records.len()).await;
    let missing = |body: &str| {
        wanted
            .iter()
            .filter(|m| !body.contains(m.as_str()))
            .cloned()
            .collect::<Vec<_>>()
    };
    wait_for(
        "every dashboard metric in /metrics",
        Duration::from_secs(30),
        || async {
            http_get(port, "/metrics")
                .await
                .is_some_and(|(_, body)| missing(&body).is_empty())
        },
    )
    .await;
    let (_, body) = http_get(port, "/metrics").await.unwrap();
    running.stop().await;
    assert!(missing(&body).is_empty(), "{:?}", missing(&body));
    // The counters add up: every consumed record ends in exactly one outcome.
    let value = |name: &str| -> f64 {
        let prefix = format!("{name}{{integration=\"dash\"}} ");
        body.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1.0)
    };
    let consumed = value("policy_push_records_consumed_total");
    let parts = ["applied", "deduplicated", "skipped", "dead_lettered"]
        .map(|k| value(&format!("policy_push_records_{k}_total")));
    assert_eq!(consumed, records.len() as f64);
    assert_eq!(
        parts,
        [2.0, 1.0, 1.0, 1.0],
        "applied, deduplicated, skipped, dead-lettered"
    );
    assert_eq!(parts.iter().sum::<f64>(), consumed);
}
