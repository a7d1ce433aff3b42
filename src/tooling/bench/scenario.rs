//! The measurements of the load harness. Each returns raw figures; `mod.rs` turns them
//! into ratios and medians.

use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::producer::FutureRecord;

use super::lab::{Lab, Setup};
use super::process;
use policy_push::event::{Event, Kind};
use policy_push::simulate::{self, Record};

pub struct Drain {
    pub rows: i64,
    /// From starting the process to every record applied (start-up and group join included).
    pub seconds: f64,
    /// From starting the process to its first commit.
    pub first_commit: f64,
    /// Records/s from the first commit to catching up.
    pub window_rate: f64,
    pub peak_rss: u64,
    /// policy-push's own CPU time (user plus system) over the drain.
    pub cpu_seconds: f64,
}

/// Publishes a backlog, then starts `policy-push run` and times it until it has caught up.
pub async fn drain(
    lab: &Lab,
    records: impl ExactSizeIterator<Item = Record>,
) -> anyhow::Result<(Setup, Drain)> {
    let setup = lab.setup().await?;
    let ends = lab.publish(&setup, records).await?;
    let mut process = lab.spawn(&setup, &["run"])?;
    let progress =
        process::caught_up(&setup, &mut process, &ends, Duration::from_secs(900)).await?;
    let peak_rss = process.peak_rss()?;
    let cpu_seconds = process.cpu_seconds()?;
    process.stop();
    let client = setup.connect().await?;
    let rows: i64 = client
        .query_one("SELECT count(*) FROM immuta_system.profile", &[])
        .await?
        .get(0);
    let since_start = |t: Instant| (t - process.started).as_secs_f64();
    let drain = Drain {
        rows,
        seconds: since_start(progress.done),
        first_commit: progress
            .first_commit
            .map_or(f64::NAN, |(at, _)| since_start(at)),
        window_rate: progress.window_rate(),
        peak_rss,
        cpu_seconds,
    };
    Ok((setup, drain))
}

/// The integration this project replaces: one stored-procedure call per change, each in
/// its own transaction, one after the other, over the first `n` records of the same
/// stream in the same database (emptied first). Decoding is not even charged to it.
///
/// `flush` is how it commits. The webhook integration waited for the WAL flush (the
/// server's default) and had to: it acknowledged a change once committed, so a commit lost
/// in a crash was a change lost. policy-push's sessions do not wait (its offsets are in
/// the same transaction), so the harness also reports the baseline without the wait, to
/// show how much of the ratio that is.
pub async fn per_change(
    setup: &Setup,
    records: impl Iterator<Item = Record>,
    n: usize,
    flush: Flush,
) -> anyhow::Result<f64> {
    let client = setup.connect().await?;
    client
        .batch_execute("TRUNCATE immuta_system.profile")
        .await?;
    if flush == Flush::NoWait {
        client.batch_execute("SET synchronous_commit = off").await?;
    }
    let call = client
        .prepare("CALL immuta_procedures.upsert_profile($1, $2, $3, $4, $5, $6, $7, $8)")
        .await?;
    let started = Instant::now();
    let mut done = 0usize;
    for r in records.take(n) {
        let Some(Event::Profile(v)) = &r.value else {
            continue;
        };
        let (project_id, purposes) = policy_push::apply::project(v);
        let attributes = tokio_postgres::types::Json(&v.attributes);
        client
            .execute(
                &call,
                &[
                    &v.user,
                    &v.version,
                    &v.groups,
                    &attributes,
                    &project_id,
                    &purposes,
                    &v.acknowledged_purposes,
                    &v.data_sources,
                ],
            )
            .await?;
        done += 1;
    }
    Ok(done as f64 / started.elapsed().as_secs_f64())
}

/// Whether the per-change baseline's commits wait for the WAL flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    Wait,
    NoWait,
}

/// The practical ceiling: the same rows, already in the server, written by one
/// `INSERT … SELECT … ON CONFLICT` into an empty copy of the profile table. Returns rows/s.
pub async fn ceiling(setup: &Setup) -> anyhow::Result<f64> {
    let client = setup.connect().await?;
    client
        .batch_execute(
            "DROP TABLE IF EXISTS public.bench_rows, public.bench_ceiling;
             CREATE TABLE public.bench_rows AS SELECT * FROM immuta_system.profile;
             CREATE TABLE public.bench_ceiling (LIKE immuta_system.profile INCLUDING ALL);
             -- LIKE does not copy storage parameters (the profile table's fillfactor).
             DO $$ DECLARE o text[]; BEGIN
               SELECT reloptions INTO o FROM pg_class WHERE oid = 'immuta_system.profile'::regclass;
               IF o IS NOT NULL THEN
                 EXECUTE format('ALTER TABLE public.bench_ceiling SET (%s)', array_to_string(o, ', '));
               END IF;
             END $$;
             ANALYZE public.bench_rows;",
        )
        .await?;
    let started = Instant::now();
    let rows = client
        .execute(
            "INSERT INTO public.bench_ceiling AS p (user_name, version, deleted, groups, attributes,
               project_id, project_purposes, acknowledged_purposes, data_sources, updated_at)
             SELECT user_name, version, false, groups, attributes, project_id, project_purposes,
               acknowledged_purposes, data_sources, now() FROM public.bench_rows
             ON CONFLICT (user_name) DO UPDATE SET version = EXCLUDED.version, deleted = false,
               groups = EXCLUDED.groups, attributes = EXCLUDED.attributes,
               project_id = EXCLUDED.project_id, project_purposes = EXCLUDED.project_purposes,
               acknowledged_purposes = EXCLUDED.acknowledged_purposes,
               data_sources = EXCLUDED.data_sources, updated_at = now()
             WHERE p.version < EXCLUDED.version",
            &[],
        )
        .await?;
    Ok(rows as f64 / started.elapsed().as_secs_f64())
}

pub struct Steady {
    pub events: usize,
    pub rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// The share of the latency spent before policy-push received the record (the
    /// producer and the broker): what a faster apply cannot remove.
    pub fetch_p99_ms: f64,
    /// Cores policy-push used while the load ran.
    pub policy_push_cores: Option<f64>,
    /// Cores the broker used in the first and in the last 10 s of the load, when the
    /// harness started it: a broker that slows down as its log grows shows here.
    pub broker_cores: Option<(f64, f64)>,
}

/// (seconds since the trace started, policy-push's CPU seconds, the broker's)
type CpuSample = (f64, f64, Option<f64>);

/// CPU seconds of policy-push and of the broker, sampled once a second under load.
struct CpuTrace {
    broker: Option<u32>,
    samples: Vec<CpuSample>,
    started: Instant,
}

impl CpuTrace {
    fn new(broker: Option<u32>) -> Self {
        CpuTrace {
            broker,
            samples: Vec::new(),
            started: Instant::now(),
        }
    }

    /// Skipped silently if /proc cannot be read: the figures are then missing, not wrong.
    fn sample(&mut self, process: &process::Process) {
        let Ok(own) = process.cpu_seconds() else {
            return;
        };
        let broker = self
            .broker
            .and_then(|pid| process::process_cpu_seconds(pid).ok());
        let at = self.started.elapsed().as_secs_f64();
        self.samples.push((at, own, broker));
    }

    /// Cores used between two samples, by the process `cpu` picks out of a sample.
    fn rate(from: &CpuSample, to: &CpuSample, cpu: fn(&CpuSample) -> Option<f64>) -> Option<f64> {
        let seconds = to.0 - from.0;
        (seconds > 0.0).then_some((cpu(to)? - cpu(from)?) / seconds)
    }

    fn policy_push_cores(&self) -> Option<f64> {
        Self::rate(self.samples.first()?, self.samples.last()?, |s| Some(s.1))
    }

    /// Over the first and the last ten samples (fewer in a short run).
    fn broker_cores(&self) -> Option<(f64, f64)> {
        let n = self.samples.len();
        let w = 10.min(n / 2);
        if w == 0 {
            return None;
        }
        let s = &self.samples;
        Some((
            Self::rate(&s[0], &s[w], |s| s.2)?,
            Self::rate(&s[n - 1 - w], &s[n - 1], |s| s.2)?,
        ))
    }
}

/// Publishes at `rate` events/s for `secs` seconds into a running policy-push and reads
/// the end-to-end latency (record timestamp to commit), and the fetch delay (record
/// timestamp to receipt), from its own histograms.
pub async fn steady(lab: &Lab, rate: usize, secs: u64) -> anyhow::Result<Steady> {
    let setup = lab.setup().await?;
    let users = 50_000;
    let per_user = (rate * secs as usize).div_ceil(users) + 1;
    let spec = simulate::Spec {
        users,
        data_sources: 20,
        seed: 7,
        ..simulate::Spec::default()
    };
    let mut stream = simulate::profile_stream(&spec, per_user);
    let warmup: Vec<Record> = stream.by_ref().take(100).collect();
    let mut process = lab.spawn(&setup, &["run"])?;
    // Joined and caught up before the clock starts, so start-up is not counted as latency.
    let mut ends = lab.publish(&setup, warmup.into_iter()).await?;
    process::caught_up(&setup, &mut process, &ends, Duration::from_secs(120)).await?;
    let before = latency_buckets(&setup).await?;

    let producer = simulate::producer(&policy_push::pipeline::kafka_config(&setup.config))?;
    let topic = setup.config.topics.topic(Kind::Profile);
    // Encoded before the clock starts, so that encoding does not slow the producer down.
    let payloads: Vec<(String, Vec<u8>)> = stream
        .take(rate * secs as usize)
        .filter_map(|r| Some((r.key, r.value?)))
        .map(|(key, value)| Ok((key, lab.codec.encode(&value)?)))
        .collect::<Result<_, policy_push::codec::CodecError>>()?;
    let per_tick = rate / 100;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut deliveries = Vec::with_capacity(payloads.len());
    let mut cpu = CpuTrace::new(lab.broker_pid());
    for (n, chunk) in payloads.chunks(per_tick.max(1)).enumerate() {
        tick.tick().await;
        if n % 100 == 0 {
            cpu.sample(&process);
        }
        for (key, value) in chunk {
            let record = FutureRecord::to(topic)
                .key(key.as_str())
                .payload(value.as_slice());
            deliveries.push(
                producer
                    .send_result(record)
                    .map_err(|(e, _)| e)
                    .context("cannot enqueue")?,
            );
        }
    }
    let produced_in = started.elapsed().as_secs_f64();
    cpu.sample(&process);
    for d in futures::future::join_all(deliveries).await {
        let delivered = d.context("delivery cancelled")?.map_err(|(e, _)| e)?;
        simulate::note_end(&mut ends, topic, &delivered);
    }
    process::caught_up(&setup, &mut process, &ends, Duration::from_secs(120)).await?;
    let after = latency_buckets(&setup).await?;
    process.stop();
    let end_to_end = Buckets::between(&before[0], &after[0]);
    let fetch = Buckets::between(&before[1], &after[1]);
    Ok(Steady {
        events: payloads.len(),
        rate: payloads.len() as f64 / produced_in,
        p50_ms: end_to_end.quantile(0.50) * 1000.0,
        p99_ms: end_to_end.quantile(0.99) * 1000.0,
        fetch_p99_ms: fetch.quantile(0.99) * 1000.0,
        policy_push_cores: cpu.policy_push_cores(),
        broker_cores: cpu.broker_cores(),
    })
}

/// Cumulative histogram buckets: (upper bound, count).
#[derive(Debug, Clone, PartialEq)]
pub struct Buckets(pub Vec<(f64, f64)>);

/// The end-to-end latency and the fetch delay histograms, in that order.
async fn latency_buckets(setup: &Setup) -> anyhow::Result<[Buckets; 2]> {
    use policy_push::telemetry::names;
    let (status, body) = policy_push::telemetry::http_get(&setup.http, "/metrics").await?;
    anyhow::ensure!(status == 200, "/metrics answered {status}");
    Ok([names::END_TO_END_LATENCY, names::FETCH_DELAY].map(|name| Buckets::parse(&body, name)))
}

impl Buckets {
    /// Reads `<name>_bucket{…le="x"…} n` lines from Prometheus text.
    pub fn parse(text: &str, name: &str) -> Self {
        let prefix = format!("{name}_bucket{{");
        let mut out: Vec<(f64, f64)> = text
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .filter_map(|l| {
                let le = l.split("le=\"").nth(1)?.split('"').next()?;
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                let count = l.rsplit(' ').next()?.parse().ok()?;
                Some((bound, count))
            })
            .collect();
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        Buckets(out)
    }

    pub fn between(before: &Buckets, after: &Buckets) -> Buckets {
        Buckets(
            after
                .0
                .iter()
                .map(|&(le, n)| {
                    let old = before.0.iter().find(|b| b.0 == le).map_or(0.0, |b| b.1);
                    (le, n - old)
                })
                .collect(),
        )
    }

    /// The q-quantile, interpolated linearly inside its bucket as Prometheus's
    /// `histogram_quantile` does; NaN when empty, the last finite bound when it falls in
    /// the +Inf bucket.
    pub fn quantile(&self, q: f64) -> f64 {
        let Some(&(_, total)) = self.0.last() else {
            return f64::NAN;
        };
        if total <= 0.0 {
            return f64::NAN;
        }
        let rank = q * total;
        let mut prev = (0.0, 0.0);
        for &(le, n) in &self.0 {
            if n >= rank {
                if le.is_infinite() {
                    return prev.0;
                }
                let inside = n - prev.1;
                let share = if inside > 0.0 {
                    (rank - prev.1) / inside
                } else {
                    1.0
                };
                return prev.0 + (le - prev.0) * share;
            }
            prev = (le, n);
        }
        prev.0
    }
}

/// Rebuilds a host from a full topic set with `policy-push replay`, `runs` times (each
/// replay resets the host first). Returns seconds per run.
pub async fn replay(lab: &Lab, spec: &simulate::Spec, runs: usize) -> anyhow::Result<Vec<f64>> {
    let setup = lab.setup().await?;
    let client = setup.connect().await?;
    simulate::create_raw_tables(&client, spec).await?;
    lab.publish(&setup, simulate::workload(spec).into_iter())
        .await?;
    let mut seconds = Vec::new();
    for _ in 0..runs {
        let mut args = vec!["replay", "--integration", "bench"];
        if !lab.reports_topic_configs() {
            args.push("--accept-uncompacted");
        }
        let process = lab.spawn(&setup, &args)?;
        let took = process.wait(Duration::from_secs(900)).await?;
        seconds.push(took.as_secs_f64());
    }
    let views: i64 = client
        .query_one("SELECT count(*) FROM immuta_system.view_state", &[])
        .await?
        .get(0);
    anyhow::ensure!(
        views > 0 || spec.data_sources == 0,
        "replay built no views; see the log in the bench directory"
    );
    Ok(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE x histogram
x_bucket{integration=\"bench\",le=\"0.1\"} 10
x_bucket{integration=\"bench\",le=\"0.2\"} 90
x_bucket{integration=\"bench\",le=\"+Inf\"} 100
x_sum{integration=\"bench\"} 12
";

    #[test]
    fn cpu_trace_rates_cover_the_first_and_last_ten_seconds() {
        let mut trace = CpuTrace::new(Some(1));
        // policy-push at a steady 0.2 cores; the broker from 0.1 to 0.9 cores.
        let mut broker = 0.0;
        for t in 0..=30 {
            trace.samples.push((t as f64, 0.2 * t as f64, Some(broker)));
            broker += if t < 15 { 0.1 } else { 0.9 };
        }
        assert!((trace.policy_push_cores().unwrap() - 0.2).abs() < 1e-9);
        let (first, last) = trace.broker_cores().unwrap();
        assert!((first - 0.1).abs() < 1e-9, "{first}");
        assert!((last - 0.9).abs() < 1e-9, "{last}");
        trace.broker = None;
        trace.samples.truncate(1);
        assert_eq!(trace.broker_cores(), None, "one sample is no rate");
        assert_eq!(trace.policy_push_cores(), None);
    }

    #[test]
    fn quantiles_interpolate_inside_buckets() {
        let b = Buckets::parse(TEXT, "x");
        assert_eq!(b.0.len(), 3);
        assert!((b.quantile(0.5) - 0.15).abs() < 1e-9, "{}", b.quantile(0.5));
        assert!((b.quantile(0.05) - 0.05).abs() < 1e-9);
        assert_eq!(b.quantile(0.99), 0.2, "beyond the last bound");
        let none = Buckets::between(&b, &b);
        assert!(none.quantile(0.5).is_nan());
    }
}
