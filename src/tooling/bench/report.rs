//! The harness's one table: a row per measure, the median of the runs, every run, and
//! the target it is held to.

use std::fmt::Write as _;
use std::path::Path;

use super::BenchArgs;

#[derive(Debug, Clone, Copy)]
pub enum Target {
    None,
    AtLeast(f64),
    AtMost(f64),
}

impl Target {
    fn describe(self) -> String {
        match self {
            Target::None => String::new(),
            Target::AtLeast(t) => format!("≥ {}", fmt(t)),
            Target::AtMost(t) => format!("≤ {}", fmt(t)),
        }
    }

    fn met(self, v: f64) -> &'static str {
        match self {
            Target::None => "",
            Target::AtLeast(t) if v >= t => "yes",
            Target::AtMost(t) if v <= t => "yes",
            _ => "NO",
        }
    }
}

struct Row {
    title: String,
    measure: String,
    runs: Vec<f64>,
    target: Target,
}

pub struct Report {
    machine: Vec<(String, String)>,
    rows: Vec<Row>,
}

fn fmt(v: f64) -> String {
    if v.is_nan() {
        "n/a".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

fn first_line_with(path: &str, prefix: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(prefix))?;
    Some(line.split(':').nth(1)?.trim().to_string())
}

async fn postgres_version(admin_url: &str) -> String {
    let Ok((client, conn)) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls).await else {
        return "unknown".into();
    };
    tokio::spawn(conn);
    match client.query_one("SHOW server_version", &[]).await {
        Ok(row) => row.get(0),
        Err(_) => "unknown".into(),
    }
}

impl Report {
    pub async fn new(args: &BenchArgs, broker: &str) -> Self {
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let machine = vec![
            (
                "CPU".into(),
                first_line_with("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown".into()),
            ),
            ("cores".into(), cores.to_string()),
            (
                "memory".into(),
                first_line_with("/proc/meminfo", "MemTotal").unwrap_or_else(|| "unknown".into()),
            ),
            ("PostgreSQL".into(), postgres_version(&args.admin_url).await),
            ("broker".into(), broker.to_string()),
            ("policy-push".into(), env!("CARGO_PKG_VERSION").to_string()),
            (
                "runs".into(),
                format!("{} per scenario, scale {}", args.runs, args.scale),
            ),
            (
                "[batch] settings".into(),
                match args.batch.trim() {
                    "" => "the defaults".into(),
                    set => set.replace('\n', "; "),
                },
            ),
        ];
        Report {
            machine,
            rows: Vec::new(),
        }
    }

    pub fn add(&mut self, title: &str, measure: &str, value: f64, target: Target) {
        match self
            .rows
            .iter_mut()
            .find(|r| r.title == title && r.measure == measure)
        {
            Some(row) => row.runs.push(value),
            None => self.rows.push(Row {
                title: title.into(),
                measure: measure.into(),
                runs: vec![value],
                target,
            }),
        }
    }

    /// The table as Markdown (which also reads well in a terminal).
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.machine {
            let _ = writeln!(out, "- {k}: {v}");
        }
        out.push('\n');
        out.push_str("| scenario | measure | median | runs | target | met |\n");
        out.push_str("|---|---|---:|---|---|---|\n");
        let mut last_title = "";
        for r in &self.rows {
            let m = median(&r.runs);
            let runs: Vec<String> = r.runs.iter().map(|v| fmt(*v)).collect();
            let title = if r.title == last_title { "" } else { &r.title };
            last_title = &r.title;
            let _ = writeln!(
                out,
                "| {title} | {} | {} | {} | {} | {} |",
                r.measure,
                fmt(m),
                runs.join(", "),
                r.target.describe(),
                r.target.met(m)
            );
        }
        out
    }

    pub fn print(&self, markdown: Option<&Path>) -> anyhow::Result<()> {
        let table = self.markdown();
        println!("{table}");
        if let Some(path) = markdown {
            std::fs::write(path, &table)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_targets() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(Target::AtLeast(20.0).met(25.0), "yes");
        assert_eq!(Target::AtMost(15.0).met(16.0), "NO");
        assert_eq!(Target::None.met(1.0), "");
    }
}
