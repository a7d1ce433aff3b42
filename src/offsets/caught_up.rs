//! The one "wait until caught up": polls a group's stored offsets until they reach the
//! given end offsets, and tells the caller how far they are after each poll (replay's
//! progress bar, the demo's deadline, the load harness's timings).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::apply::Warehouse;
use crate::consume::StoredOffsets;
use crate::record::TopicPartition;

/// Where each partition starts and ends for this wait.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// The offset after the last record to wait for, per (topic, partition).
    pub ends: BTreeMap<TopicPartition, i64>,
    /// Where counting starts (a partition missing here starts at 0).
    pub start: StoredOffsets,
}

/// How far the stored offsets are, at one poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reached {
    /// Records between start and end the stored offsets cover (never negative, never
    /// past the end).
    pub done: i64,
    pub total: i64,
    /// Whether any offset is stored yet (the first batch has committed).
    pub committed: bool,
}

impl Reached {
    pub fn caught_up(&self) -> bool {
        self.done >= self.total
    }
}

impl Target {
    /// The target of everything between the low and the high watermarks.
    pub fn watermarks(marks: &super::Watermarks) -> Target {
        Target {
            ends: marks
                .iter()
                .map(|(tp, (_, high))| (tp.clone(), *high))
                .collect(),
            start: marks
                .iter()
                .map(|(tp, (low, _))| (tp.clone(), *low))
                .collect(),
        }
    }

    pub fn reached(&self, stored: &StoredOffsets) -> Reached {
        let mut r = Reached {
            done: 0,
            total: 0,
            committed: !stored.is_empty(),
        };
        for (tp, end) in &self.ends {
            // Counted as lag is: the records still to apply are those not done.
            let from = self.start.get(tp).copied().unwrap_or(0).min(*end);
            let total = end - from;
            r.done += total - super::partition_lag(from, *end, stored.get(tp).copied());
            r.total += total;
        }
        r
    }
}

/// Polls every `every` until caught up, calling `after_poll` after each poll; it stops
/// the wait by returning an error (a deadline, a stopped process, shutdown). A warehouse
/// that cannot be read counts as nothing stored yet.
pub async fn wait<E>(
    warehouse: &Warehouse,
    group: &str,
    target: &Target,
    every: Duration,
    mut after_poll: impl FnMut(Reached) -> Result<(), E>,
) -> Result<Reached, E> {
    loop {
        let stored = warehouse.load_offsets(group).await.unwrap_or_default();
        let reached = target.reached(&stored);
        after_poll(reached)?;
        if reached.caught_up() {
            return Ok(reached);
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::offsets::tp;

    #[test]
    fn progress_counts_from_the_start_and_stops_at_the_end() {
        let t = Target {
            ends: [(tp(0), 10), (tp(1), 5), (tp(2), 3)].into(),
            start: [(tp(0), 4)].into(),
        };
        assert_eq!(
            t.reached(&HashMap::new()),
            Reached {
                done: 0,
                total: 14,
                committed: false
            }
        );
        let stored: HashMap<_, _> = [(tp(0), 2), (tp(1), 9), (tp(2), 1)].into();
        // Below the start counts nothing; past the end (a broker that reports a low end)
        // counts as the end.
        let r = t.reached(&stored);
        assert_eq!((r.done, r.total, r.committed), (6, 14, true));
        assert!(!r.caught_up());
        let all: HashMap<_, _> = [(tp(0), 10), (tp(1), 5), (tp(2), 3)].into();
        assert!(t.reached(&all).caught_up());
    }
}
