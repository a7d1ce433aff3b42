//! A policy-push child process of the bench: what it costs (peak RSS, CPU time), whether
//! it still runs, and its progress towards the published records.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::lab::Setup;
use policy_push::simulate::Ends;

/// utime + stime of a `/proc/<pid>/stat` line. The command name may hold spaces and
/// parentheses, so fields are counted after its closing parenthesis. They are in
/// USER_HZ ticks, which Linux fixes at 100 for user space.
fn cpu_seconds(stat: &str) -> Option<f64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// CPU time process `pid` has used so far (user plus system), in seconds.
pub fn process_cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    cpu_seconds(&stat).context("cannot read utime and stime from /proc/<pid>/stat")
}

/// A policy-push child process.
pub struct Process {
    child: Child,
    pub started: Instant,
}

impl Process {
    pub(super) fn new(child: Child) -> Self {
        Process {
            child,
            started: Instant::now(),
        }
    }

    /// Peak resident set size so far, in bytes (the kernel's high-water mark).
    pub fn peak_rss(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .context("no VmHWM in /proc/<pid>/status")?;
        Ok(kb * 1024)
    }

    /// CPU time the process has used so far (user plus system), in seconds.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        process_cpu_seconds(self.child.id())
    }

    /// Fails when the process has already exited (it should be running).
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("policy-push exited early with {status}; see its log in the bench directory");
        }
        Ok(())
    }

    /// Waits for the process to exit by itself (e.g. `replay`).
    pub async fn wait(mut self, deadline: Duration) -> anyhow::Result<Duration> {
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("policy-push exited with {status}");
                }
                return Ok(self.started.elapsed());
            }
            if self.started.elapsed() > deadline {
                self.stop();
                bail!("policy-push did not finish within {deadline:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited after a few seconds.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// When a run was first seen to have committed (and how many records it had applied
/// then), and when it had caught up with `total` records.
pub struct Progress {
    pub first_commit: Option<(Instant, i64)>,
    pub done: Instant,
    pub total: i64,
}

impl Progress {
    /// Records per second between the first commit seen and catching up: the drain rate
    /// without start-up and group join.
    pub fn window_rate(&self) -> f64 {
        match self.first_commit {
            Some((at, applied)) if self.done > at => {
                (self.total - applied) as f64 / (self.done - at).as_secs_f64()
            }
            _ => f64::NAN,
        }
    }
}

/// Polls until the run's stored offsets reach `ends` (what was published, as the broker
/// acknowledged it; no broker's reported end offsets are trusted). Lag is never negative.
pub async fn caught_up(
    setup: &Setup,
    process: &mut Process,
    ends: &Ends,
    deadline: Duration,
) -> anyhow::Result<Progress> {
    let integration = setup.integration();
    let warehouse = policy_push::apply::Warehouse::new(integration)?;
    let group = integration.consumer_group(&setup.config.consumer.group_prefix);
    let target = policy_push::offsets::caught_up::Target {
        ends: ends.clone(),
        start: Default::default(),
    };
    let started = Instant::now();
    let mut first_commit = None;
    let every = Duration::from_millis(20);
    let reached = policy_push::offsets::caught_up::wait(&warehouse, &group, &target, every, |r| {
        process.check_running()?;
        if first_commit.is_none() && r.committed {
            first_commit = Some((Instant::now(), r.done));
        }
        if !r.caught_up() && started.elapsed() > deadline {
            bail!(
                "policy-push still {} records behind after {deadline:?}",
                r.total - r.done
            );
        }
        Ok(())
    })
    .await?;
    Ok(Progress {
        first_commit,
        done: Instant::now(),
        total: reached.total,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_seconds_are_read_after_the_command_name() {
        let stat = "4242 (pp (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 612 37 0 0 20 0 9 0";
        assert_eq!(super::cpu_seconds(stat), Some(6.49));
        assert_eq!(super::cpu_seconds("4242 (pp) S 1"), None);
    }
}
