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

/// The pids of `parent`'s children whose command name starts with `name`.
fn children_named(parent: u32, name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // pid (comm) state ppid …; comm may hold spaces, so split after its ')'.
            let (head, rest) = stat.rsplit_once(')')?;
            let comm = head.split_once('(')?.1;
            let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == parent && comm.starts_with(name))
                .then(|| head.split(' ').next()?.parse().ok())?
        })
        .collect()
}

/// SIGTERM while the harness publishes a full-size backlog ends it within seconds, and
/// the broker it started goes with it.
#[test]
fn a_sigterm_stops_the_harness_and_the_broker_it_started() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut child = Command::new(env!("CARGO_BIN_EXE_policy-push"))
        .args(["bench", "--broker", "tansu", "--only", "hot", "--runs", "1"])
        .env_remove("KAFKA_BOOTSTRAP")
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .spawn()
        .expect("run policy-push bench");
    let pid = child.id();
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut seen = String::new();
    while !seen.contains("publishing: ") {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap_or(0) == 0 {
            panic!("the harness ended before publishing:\n{seen}");
        }
        seen.push_str(&line);
    }
    let brokers = children_named(pid, "tansu");
    assert_eq!(
        brokers.len(),
        1,
        "one Tansu child of the harness: {brokers:?}"
    );
    let signalled = Instant::now();
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if signalled.elapsed() > Duration::from_secs(40) {
            let _ = child.kill();
            panic!("the harness was still running 40 s after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
    assert!(!status.success(), "an interrupted run fails");
    assert!(rest.contains("interrupted"), "{seen}{rest}");
    assert!(
        !std::path::Path::new(&format!("/proc/{}", brokers[0])).exists(),
        "Tansu ({}) outlived the harness",
        brokers[0]
    );
}
