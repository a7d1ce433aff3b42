//! Retrying: the one backoff rule, and the waits between attempts, each of which ends
//! as soon as the pipeline stops (a retry never holds SIGTERM back). Used by the decoder
//! while the Schema Registry is unreachable (`consume::route`), the assignment while the
//! warehouse does not answer (`consume::rebalance`), the applier and the warehouse
//! watch (`pipeline`).

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// Exponential backoff with full jitter: a random delay in [base/2, base], base doubling
/// from 200 ms up to `max`.
pub fn delay(attempt: u32, max: Duration) -> Duration {
    let base = Duration::from_millis(200)
        .saturating_mul(1u32 << attempt.min(16))
        .min(max);
    let half = base / 2;
    half + half.mul_f64(fastrand::f64())
}

/// The attempts of one retried operation.
#[derive(Debug, Clone)]
pub struct Backoff {
    attempt: u32,
    max: Duration,
}

impl Backoff {
    pub fn new(max: Duration) -> Self {
        Backoff { attempt: 0, max }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        self.attempt = self.attempt.saturating_add(1);
        delay(self.attempt, self.max)
    }

    /// Failed attempts so far.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

/// How often a blocking wait looks at its stop.
const POLL: Duration = Duration::from_millis(50);

/// Waits `delay` on a thread of its own (the consumer thread; not a runtime's: plain
/// sleeps, so a runtime that is shutting down cannot panic here); true if `stopped`
/// said so meanwhile, at most `POLL` after it did.
pub fn sleep_unless(stopped: &dyn Fn() -> bool, delay: Duration) -> bool {
    let until = Instant::now() + delay;
    loop {
        if stopped() {
            return true;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return stopped();
        }
        std::thread::sleep(left.min(POLL));
    }
}

/// Waits `delay` on the runtime; true if `stop` was cancelled first.
pub async fn wait_unless(stop: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(delay) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_grows_and_is_capped() {
        let max = Duration::from_secs(5);
        for attempt in 0..20 {
            let d = delay(attempt, max);
            assert!(d <= max, "{attempt}: {d:?}");
        }
        assert!(delay(1, max) <= Duration::from_millis(400));
        assert!(delay(10, max) >= Duration::from_millis(2500));
        let mut b = Backoff::new(max);
        assert!(b.next_delay() <= Duration::from_millis(400));
        assert_eq!(b.attempts(), 1);
    }

    #[test]
    fn a_blocking_wait_ends_at_the_stop() {
        let started = Instant::now();
        let calls = std::cell::Cell::new(0);
        let stopped = || {
            calls.set(calls.get() + 1);
            calls.get() > 2
        };
        assert!(sleep_unless(&stopped, Duration::from_secs(30)));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(!sleep_unless(&|| false, Duration::from_millis(10)));
    }

    #[tokio::test]
    async fn an_async_wait_ends_at_the_stop() {
        let stop = CancellationToken::new();
        assert!(!wait_unless(&stop, Duration::from_millis(5)).await);
        stop.cancel();
        assert!(wait_unless(&stop, Duration::from_secs(30)).await);
    }
}
