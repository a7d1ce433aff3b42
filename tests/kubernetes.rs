//! The Kubernetes manifests (deploy/kubernetes): every one validates against the schemas
//! of Kubernetes 1.31 (`kubernetes-validate --strict`, from PyPI; scripts/test.sh installs
//! it); the Prometheus Operator's two resources, whose schemas that tool does not have,
//! are checked for what they must hold; the PrometheusRule holds exactly the rules of
//! deploy/prometheus/alerts.yml; and the ConfigMap's configuration passes `check-config`
//! with the variables the Deployment sets, the Secret's files in place.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kubernetes");
/// The oldest version with every field the manifests use (the PodDisruptionBudget's
/// `unhealthyPodEvictionPolicy` is GA from 1.31).
const KUBERNETES: &str = "1.31.0";
/// Kinds that kubernetes-validate has no schema for; checked by the tests below.
const NOT_BUILT_IN: [&str; 3] = ["Kustomization", "ServiceMonitor", "PrometheusRule"];
const SECRET_MOUNT: &str = "/var/run/secrets/policy-push";

/// A YAML file as JSON (PyYAML; scripts/test.sh installs it).
fn yaml(path: &Path) -> Value {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{} does not parse: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(DIR)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn manifest(name: &str) -> Value {
    yaml(&Path::new(DIR).join(name))
}

fn labels(v: &Value) -> BTreeSet<(String, String)> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn every_manifest_validates_against_kubernetes() {
    let files = files();
    let out = Command::new("kubernetes-validate")
        .args(["-k", KUBERNETES, "--strict"])
        .args(&files)
        .output()
        .expect("kubernetes-validate (pip install kubernetes-validate; scripts/test.sh does)");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    for file in &files {
        let kind = yaml(file)["kind"].as_str().unwrap_or_default().to_string();
        let name = file.display().to_string();
        let verdict = text
            .lines()
            .find(|l| l.contains(&format!("{name} ")))
            .unwrap_or_default();
        if NOT_BUILT_IN.contains(&kind.as_str()) {
            assert!(verdict.contains("Couldn't find schema"), "{kind}: {text}");
        } else {
            assert!(
                verdict.starts_with("INFO") && verdict.contains("passed"),
                "{name}: {text}"
            );
        }
    }
}

#[test]
fn the_kustomization_lists_every_manifest_but_the_example_secret() {
    let listed: BTreeSet<String> = manifest("kustomization.yaml")["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    let present: BTreeSet<String> = files()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
        .filter(|n| n != "kustomization.yaml" && n != "secret.example.yaml")
        .collect();
    assert_eq!(listed, present);
}

#[test]
fn the_prometheus_rule_holds_exactly_the_alert_rules() {
    let alerts = yaml(&Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/alerts.yml"));
    let rule = manifest("prometheusrule.yaml");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(
        rule["spec"]["groups"], alerts["groups"],
        "run scripts/prometheusrule.py after changing alerts.yml"
    );
    // And Prometheus takes them: the groups as a rule file of their own.
    let dir = std::env::temp_dir().join(format!("k8s-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("rules.json");
    std::fs::write(
        &file,
        serde_json::json!({"groups": rule["spec"]["groups"]}).to_string(),
    )
    .unwrap();
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool");
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn prometheus_scrapes_the_service_the_alerts_name() {
    let service = manifest("service.yaml");
    let monitor = manifest("servicemonitor.yaml");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    // The Operator's `job` label is the Service's name unless jobLabel says otherwise;
    // the alerts read up{job="policy-push"}.
    assert!(monitor["spec"]["jobLabel"].is_null());
    assert_eq!(service["metadata"]["name"], "policy-push");
    let selected = labels(&monitor["spec"]["selector"]["matchLabels"]);
    assert!(selected.is_subset(&labels(&service["metadata"]["labels"])));
    let port = &monitor["spec"]["endpoints"][0]["port"];
    let ports = service["spec"]["ports"].as_array().unwrap();
    assert!(ports.iter().any(|p| p["name"] == *port), "{port}");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
}

fn deployment_pod() -> Value {
    manifest("deployment.yaml")["spec"]["template"].clone()
}

#[test]
fn the_deployment_runs_unprivileged_with_probes_limits_and_secrets_from_files() {
    let pod = deployment_pod();
    let spec = &pod["spec"];
    let container = &spec["containers"][0];
    assert_eq!(container["args"], serde_json::json!(["run"]));
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/health");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/ready");
    for kind in ["requests", "limits"] {
        for what in ["cpu", "memory"] {
            assert!(
                container["resources"][kind][what].is_string(),
                "{kind}.{what}"
            );
        }
    }
    for var in container["env"].as_array().unwrap() {
        let name = var["name"].as_str().unwrap();
        if name.contains("PASSWORD") {
            assert!(name.ends_with("_FILE"), "{name} is not read from a file");
            assert!(
                var["value"].as_str().unwrap().starts_with(SECRET_MOUNT),
                "{name}"
            );
        }
    }
    // Every label selector in the directory selects these pods.
    let pod_labels = labels(&pod["metadata"]["labels"]);
    for (file, selector) in [
        ("deployment.yaml", "/spec/selector/matchLabels"),
        ("poddisruptionbudget.yaml", "/spec/selector/matchLabels"),
        ("service.yaml", "/spec/selector"),
    ] {
        let selected = labels(manifest(file).pointer(selector).unwrap());
        assert!(selected.is_subset(&pod_labels), "{file}");
    }
}

#[test]
fn the_grace_period_outlasts_the_shutdown_timeout() {
    let pod = deployment_pod();
    let grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    let config = policy_push::Config::from_toml(&config_text(), Vec::new()).expect("config");
    let shutdown = config.batch.shutdown_timeout.as_secs();
    // The last batch's commit, then the consumer's close (at most 1 s), then the exit.
    assert!(
        grace >= shutdown + 5,
        "grace {grace} s, shutdown_timeout {shutdown} s"
    );
}

fn config_text() -> String {
    manifest("configmap.yaml")["data"]["policy-push.toml"]
        .as_str()
        .expect("policy-push.toml in the ConfigMap")
        .to_string()
}

/// A CA certificate, as the Secret's `*.crt` keys hold.
fn certificate(dir: &Path, name: &str) {
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=policy-push test CA", "-keyout"])
        .arg(dir.join(format!("{name}.key")))
        .arg("-out")
        .arg(dir.join(name))
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_configmap_passes_check_config_as_the_deployment_runs_it() {
    let dir = std::env::temp_dir().join(format!("k8s-secrets-{}", std::process::id()));
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    // The Secret's keys, as files where the pod mounts them (here under `secrets`).
    let example = manifest("secret.example.yaml");
    for (key, value) in example["stringData"].as_object().unwrap() {
        if key.ends_with(".crt") {
            certificate(&secrets, key);
        } else {
            std::fs::write(secrets.join(key), value.as_str().unwrap()).unwrap();
        }
    }
    let relocate = |text: &str| text.replace(SECRET_MOUNT, secrets.to_str().unwrap());
    let config = dir.join("policy-push.toml");
    std::fs::write(&config, relocate(&config_text())).unwrap();
    let mut check = Command::new(env!("CARGO_BIN_EXE_policy-push"));
    check.arg("--config").arg(&config).arg("check-config");
    let pod = deployment_pod();
    for var in pod["spec"]["containers"][0]["env"].as_array().unwrap() {
        let name = var["name"].as_str().unwrap();
        if name != "POLICY_PUSH_CONFIG" {
            let file = relocate(var["value"].as_str().unwrap());
            assert!(
                Path::new(&file).exists(),
                "{name}: no such key in the Secret"
            );
            check.env(name, file);
        }
    }
    let out = check.output().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("configuration is valid"), "{text}");
}

#[test]
fn the_bootstrap_job_reads_every_secret_it_names_from_the_secret() {
    let job = manifest("job-bootstrap.yaml");
    let example = manifest("secret.example.yaml");
    let keys = example["stringData"].as_object().unwrap();
    let spec = &job["spec"]["template"]["spec"];
    assert_eq!(
        spec["containers"][0]["args"],
        serde_json::json!(["bootstrap"])
    );
    for var in spec["containers"][0]["env"].as_array().unwrap() {
        if let Some(file) = var["value"].as_str().unwrap().strip_prefix(SECRET_MOUNT) {
            assert!(keys.contains_key(file.trim_start_matches('/')), "{file}");
        }
    }
    assert_eq!(
        spec["volumes"][1]["secret"]["secretName"],
        example["metadata"]["name"]
    );
}
