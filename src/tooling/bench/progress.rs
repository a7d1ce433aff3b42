//! What the harness shows while it publishes a backlog, which at `--scale 10` takes
//! minutes: a bar on a terminal, otherwise a line every ten seconds (a run's log file).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

const LINE_EVERY: Duration = Duration::from_secs(10);

pub struct Progress {
    what: &'static str,
    total: usize,
    bar: Option<ProgressBar>,
    started: Instant,
    last_line: Instant,
}

impl Progress {
    pub fn new(what: &'static str, total: usize) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total as u64);
            if let Ok(style) = ProgressStyle::with_template(
                "{msg} [{bar:40}] {pos}/{len} records, {per_sec}, {eta} left",
            ) {
                bar.set_style(style.progress_chars("#>-"));
            }
            bar.set_message(what);
            bar
        });
        if bar.is_none() {
            eprintln!("{what}: {total} records");
        }
        let now = Instant::now();
        Progress {
            what,
            total,
            bar,
            started: now,
            last_line: now,
        }
    }

    pub fn set(&mut self, done: usize) {
        if let Some(bar) = &self.bar {
            bar.set_position(done as u64);
        } else if self.last_line.elapsed() >= LINE_EVERY {
            self.last_line = Instant::now();
            let rate = done as f64 / self.started.elapsed().as_secs_f64();
            eprintln!(
                "{}: {done} of {} records, {rate:.0}/s",
                self.what, self.total
            );
        }
    }

    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
