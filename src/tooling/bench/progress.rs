//! What the harness shows while it publishes a backlog, which at `--scale 10` takes
//! minutes: a bar on a terminal, otherwise a line every ten seconds (a run's log file).

use std::time::{Duration, Instant};

use indicatif::ProgressBar;

const LINE_EVERY: Duration = Duration::from_secs(10);

/// How far publishing a backlog has got (a drain's progress is `process::Progress`).
pub struct Publishing {
    what: &'static str,
    total: usize,
    bar: Option<ProgressBar>,
    started: Instant,
    last_line: Instant,
}

impl Publishing {
    pub fn new(what: &'static str, total: usize) -> Self {
        let bar = policy_push::commands::progress::bar(what, total as u64);
        if bar.is_none() {
            eprintln!("{what}: {total} records");
        }
        let now = Instant::now();
        Publishing {
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
