//! The Prometheus alert rules: valid (`promtool check rules`), and each firing on the
//! trouble it is for (`promtool test rules`, deploy/prometheus/alerts.test.yml). The test
//! script installs promtool (Debian's prometheus package).

use std::process::Command;

fn promtool(args: &[&str]) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus"))
        .output()
        .expect("promtool (apt-get install prometheus; scripts/test.sh does)");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn the_alert_rules_are_valid() {
    let (ok, out) = promtool(&["check", "rules", "alerts.yml"]);
    assert!(ok, "{out}");
}

#[test]
fn the_alert_rules_fire_on_what_they_are_for() {
    let (ok, out) = promtool(&["test", "rules", "alerts.test.yml"]);
    assert!(ok, "{out}");
}

#[test]
fn every_issue_an_operator_is_paged_for_has_a_rule() {
    let rules = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/prometheus/alerts.yml"
    ))
    .unwrap();
    let tests = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/prometheus/alerts.test.yml"
    ))
    .unwrap();
    for alert in [
        "PolicyPushLagGrowing",
        "PolicyPushIntegrationFailing",
        "PolicyPushDeadLetters",
        "PolicyPushNoCommit",
        "PolicyPushConsumerPaused",
        "PolicyPushPartitionAnomaly",
        "PolicyPushLagUnknown",
        "PolicyPushViewsHeldUp",
    ] {
        assert!(
            rules.contains(&format!("alert: {alert}")),
            "{alert} missing"
        );
        assert!(
            tests.contains(&format!("alertname: {alert}")),
            "{alert} untested"
        );
    }
    for name in [
        policy_push::telemetry::names::LAST_COMMIT,
        policy_push::telemetry::names::CONSUMER_PAUSED,
        policy_push::telemetry::names::HEALTHY,
        policy_push::telemetry::names::RECORDS_DEAD_LETTERED,
        policy_push::telemetry::names::CONSUMER_LAG,
        policy_push::telemetry::names::PARTITION_ANOMALIES,
        policy_push::telemetry::names::CONSUMER_LAG_UNKNOWN,
        policy_push::telemetry::names::VIEWS_STALE_SINCE,
    ] {
        assert!(rules.contains(name), "no rule reads {name}");
    }
}
