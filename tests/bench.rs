//! The load harness keeps working: a tiny run of `policy-push bench` on the mock cluster
//! produces every row of its table with a measured value. Nothing here judges speed (that
//! is what the harness itself reports); it checks that the harness measures something
//! real: rows were applied, the baseline ran, latencies came from the histogram.

use std::process::Command;

fn median_of(table: &str, scenario_prefix: &str, measure: &str) -> f64 {
    let cells = row_of(table, scenario_prefix, measure);
    cells[3]
        .parse()
        .unwrap_or_else(|_| panic!("{measure}: {:?} is not a number", cells[3]))
}

/// Every run's value of a row.
fn runs_of(table: &str, scenario_prefix: &str, measure: &str) -> Vec<f64> {
    row_of(table, scenario_prefix, measure)[4]
        .split(", ")
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{measure}: {v:?}")))
        .collect()
}

/// The cells of a row of the table: scenario, measure, median, runs, target, met.
fn row_of<'t>(table: &'t str, scenario_prefix: &str, measure: &str) -> Vec<&'t str> {
    let mut in_scenario = false;
    for line in table.lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 5 {
            continue;
        }
        if !cells[1].is_empty() {
            in_scenario = cells[1].starts_with(scenario_prefix);
        }
        if in_scenario && cells[2] == measure {
            return cells;
        }
    }
    panic!("no row {scenario_prefix} / {measure} in:\n{table}");
}

/// Every harness run drops and recreates the same database, so runs take turns.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `policy-push bench` with `args` and returns the Markdown table it wrote.
fn bench_table(name: &str, args: &[&str]) -> String {
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = std::env::temp_dir().join(format!("pp-bench-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let table_path = dir.join("table.md");
    let out = Command::new(env!("CARGO_BIN_EXE_policy-push"))
        .arg("bench")
        .args(args)
        .arg("--markdown")
        .arg(&table_path)
        .env_remove("KAFKA_BOOTSTRAP")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run policy-push bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed:\n{stderr}");
    let table = std::fs::read_to_string(&table_path).expect("markdown table");
    let _ = std::fs::remove_dir_all(&dir);
    table
}

#[test]
fn harness_reports_every_scenario_from_a_real_run() {
    let table = bench_table(
        "mock",
        &[
            "--broker",
            "mock",
            "--runs",
            "1",
            "--scale",
            "0.005",
            "--steady-secs",
            "2",
            "--steady-rate",
            "500",
            // Small batches, so that a drain takes many commits: its rate is measured
            // between the first commit the harness sees and the last one.
            "--batch",
            "max_records = 100",
        ],
    );

    for (scenario, measure) in [
        ("1a.", "pipeline events/s (after its first commit)"),
        ("1a.", "per-change baseline events/s"),
        ("1b.", "per-change baseline events/s"),
        (
            "1b.",
            "per-change baseline events/s, not waiting for the WAL flush",
        ),
        ("2.", "single INSERT … ON CONFLICT rows/s"),
        ("3.", "seconds, from process start"),
        ("3.", "peak RSS of policy-push (MB)"),
        ("4.", "events/s produced"),
        ("4.", "end-to-end latency p99 (ms)"),
        ("5.", "seconds"),
    ] {
        let v = median_of(&table, scenario, measure);
        assert!(v > 0.0 && v.is_finite(), "{scenario} {measure} = {v}");
    }
    let p50 = median_of(&table, "4.", "end-to-end latency p50 (ms)");
    let p99 = median_of(&table, "4.", "end-to-end latency p99 (ms)");
    assert!(p50 <= p99, "p50 {p50} > p99 {p99}");
    let ratio = median_of(&table, "1b.", "ratio (×)");
    let pipeline = median_of(&table, "1b.", "pipeline events/s (after its first commit)");
    let baseline = median_of(&table, "1b.", "per-change baseline events/s");
    assert!(
        (ratio - pipeline / baseline).abs() / ratio < 0.05,
        "the ratio is the quotient of its rows: {ratio} vs {pipeline}/{baseline}"
    );
    assert!(table.contains("- cores:"), "machine description:\n{table}");
    assert!(
        table.contains("- [batch] settings: max_records = 100"),
        "batch settings:\n{table}"
    );
}

/// With Tansu, the harness starts a fresh broker for every run after the first (its log
/// lives in memory and slows it down as it grows): the second run must find the new
/// broker, and the steady scenario reports the broker's CPU beside policy-push's.
#[test]
fn harness_runs_again_on_a_fresh_tansu() {
    let table = bench_table(
        "tansu",
        &[
            "--broker",
            "tansu",
            "--only",
            "steady",
            "--runs",
            "2",
            "--steady-secs",
            "2",
            "--steady-rate",
            "500",
        ],
    );
    assert!(table.contains("- broker: Tansu"), "broker line:\n{table}");
    for measure in [
        "end-to-end latency p99 (ms)",
        "CPU of the broker, first 10 s (cores)",
        "CPU of the broker, last 10 s (cores)",
    ] {
        let values = runs_of(&table, "4.", measure);
        assert_eq!(values.len(), 2, "{measure}: one value per run, {values:?}");
        assert!(
            values.iter().all(|v| v.is_finite() && *v >= 0.0),
            "{measure}: {values:?}"
        );
    }
}
