//! Ownership of partitions, shared by the consumer thread and the applier.
//!
//! Each assignment of a partition gets a new *generation*. The consumer thread tags every
//! message with the generation it was fetched under; the applier only accepts messages of
//! the current generation. A revoke, a re-assignment or a rewind (seek back to the stored
//! offset after a dropped batch) starts a new generation, so messages still queued from
//! before it can never be applied out of order or twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::record::TopicPartition;

#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    generation: u64,
    /// `next_offset` stored in the warehouse, as last seen by this instance.
    expected: Option<i64>,
    /// Set when the applier asked for a seek the consumer thread has not done yet.
    rewind_pending: bool,
    /// Nothing is taken from the partition while set: its stored offset does not belong
    /// to it (a recreated or truncated topic, `identity`), found at assignment, at a lag
    /// refresh, or when a record arrived below `expected` (the broker moved the consumer
    /// back); or that could not be checked. Until `resume_if`.
    stopped: Option<Stop>,
}

/// Why nothing is taken from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// A finding only the operator releases (`offsets --accept`, `replay`), kept in the
    /// warehouse once `persisted` so that neither a restart nor a rebalance lifts it.
    Held { observed: String, persisted: bool },
    /// Its topic's id could not be compared with the stored one: checked again at each
    /// lag refresh.
    Unverified,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<TopicPartition, State>,
    last_generation: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Partitions(Arc<Mutex<Inner>>);

/// What the consumer thread does with a fetched message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    /// Hand it on, tagged with this generation.
    Current(u64),
    /// Not ours, or fetched before a pending seek.
    Drop,
    /// Its partition is stopped (`State::stopped`): held back, not applied.
    Stopped,
    /// The first message below the stored offset: the partition's end is before it.
    PastEnd { stored: i64 },
}

#[cfg(test)]
impl Tag {
    fn generation(self) -> Option<u64> {
        match self {
            Tag::Current(g) => Some(g),
            _ => None,
        }
    }
}

/// A partition this instance owns, as the lag watch sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owned {
    pub tp: TopicPartition,
    /// The stored offset as this instance last saw it.
    pub expected: Option<i64>,
    /// Nothing is applied from it (`State::stopped`).
    pub stopped: Option<Stop>,
    /// Its generation when it was looked at (`stop_if`, `resume_if`).
    pub generation: u64,
}

/// A seek the consumer thread must perform: to the stored offset, or the beginning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewind {
    pub tp: TopicPartition,
    pub to: Option<i64>,
}

impl Partitions {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain data behind; keep going.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Consumer thread, on assignment.
    pub fn assign(&self, tp: TopicPartition, expected: Option<i64>) {
        let mut g = self.lock();
        g.last_generation += 1;
        let generation = g.last_generation;
        g.map.insert(
            tp,
            State {
                generation,
                expected,
                rewind_pending: false,
                stopped: None,
            },
        );
    }

    /// Consumer thread, on assignment of a partition whose stored offset does not belong
    /// to it (`identity`): owned, but nothing of it is applied.
    pub fn assign_stopped(&self, tp: TopicPartition, expected: Option<i64>, why: Stop) {
        self.assign(tp.clone(), expected);
        self.stop(&tp, why);
    }

    /// Stops taking records from `tp` (see `State::stopped`). A new generation: what was
    /// fetched before, and a batch holding it that is in flight or retried, is not applied.
    pub fn stop(&self, tp: &TopicPartition, why: Stop) {
        stop_locked(&mut self.lock(), tp, why);
    }

    /// Lag watch: `stop`, unless `tp` was assigned, rewound or stopped since it was
    /// looked at (`Owned::generation`): a finding from then may be stale.
    pub fn stop_if(&self, tp: &TopicPartition, generation: u64, why: Stop) -> bool {
        let mut g = self.lock();
        let current = g.map.get(tp).is_some_and(|s| s.generation == generation);
        if current {
            stop_locked(&mut g, tp, why);
        }
        current
    }

    /// Lag watch: a stopped partition whose hold the operator released reads again from
    /// `stored`, unless it changed generation since it was looked at (as `stop_if`).
    pub fn resume_if(&self, tp: &TopicPartition, generation: u64, stored: Option<i64>) -> bool {
        let mut g = self.lock();
        let current = g.map.get(tp).is_some_and(|s| s.generation == generation);
        if current {
            seek_locked(&mut g, tp, stored, Some(None));
        }
        current
    }

    /// Why `tp` is stopped, if it is.
    pub fn stopped(&self, tp: &TopicPartition) -> Option<Stop> {
        self.lock().map.get(tp).and_then(|s| s.stopped.clone())
    }

    /// The hold of a stopped partition is now kept in the warehouse.
    pub fn persisted(&self, tp: &TopicPartition) {
        if let Some(Some(Stop::Held { persisted, .. })) =
            self.lock().map.get_mut(tp).map(|s| &mut s.stopped)
        {
            *persisted = true;
        }
    }

    /// Consumer thread, on revocation.
    pub fn revoke(&self, tp: &TopicPartition) {
        self.lock().map.remove(tp);
    }

    /// Consumer thread: the generation to tag a message fetched at `offset` with, or why
    /// it is dropped.
    pub fn tag(&self, tp: &TopicPartition, offset: i64) -> Tag {
        let mut g = self.lock();
        let Some(s) = g.map.get_mut(tp) else {
            return Tag::Drop;
        };
        if s.rewind_pending {
            return Tag::Drop;
        }
        if s.stopped.is_some() {
            return Tag::Stopped;
        }
        match s.expected {
            // The consumer was placed at `stored`; anything below it comes from the
            // broker's offset reset (`auto.offset.reset`), never from this assignment.
            Some(stored) if offset < stored => {
                drop(g);
                let observed = super::identity::Anomaly::ResetBelow { stored, offset };
                let why = Stop::Held {
                    observed: observed.describe(tp),
                    persisted: false,
                };
                self.stop(tp, why);
                Tag::PastEnd { stored }
            }
            _ => Tag::Current(s.generation),
        }
    }

    /// Consumer thread: seeks to perform now.
    pub fn take_rewinds(&self) -> Vec<Rewind> {
        let mut g = self.lock();
        g.map
            .iter_mut()
            .filter(|(_, s)| s.rewind_pending)
            .map(|(tp, s)| {
                s.rewind_pending = false;
                Rewind {
                    tp: tp.clone(),
                    to: s.expected,
                }
            })
            .collect()
    }

    /// Applier: `Some(expected)` if a message of this generation is current.
    pub fn accepts(&self, tp: &TopicPartition, generation: u64) -> Option<Option<i64>> {
        self.lock()
            .map
            .get(tp)
            .filter(|s| s.generation == generation)
            .map(|s| s.expected)
    }

    /// Applier: a batch committed `next_offset` for a partition of `generation`.
    pub fn committed(&self, tp: &TopicPartition, generation: u64, next_offset: i64) {
        if let Some(s) = self
            .lock()
            .map
            .get_mut(tp)
            .filter(|s| s.generation == generation)
        {
            s.expected = Some(next_offset);
        }
    }

    /// Applier: drop everything fetched so far on `tp` and read again from `stored`. A
    /// stopped partition stays stopped: only `resume_if` lifts that.
    pub fn rewind(&self, tp: &TopicPartition, stored: Option<i64>) {
        seek_locked(&mut self.lock(), tp, stored, None);
    }

    pub fn owned(&self) -> Vec<Owned> {
        self.lock()
            .map
            .iter()
            .map(|(tp, s)| Owned {
                tp: tp.clone(),
                expected: s.expected,
                stopped: s.stopped.clone(),
                generation: s.generation,
            })
            .collect()
    }
}

fn stop_locked(g: &mut Inner, tp: &TopicPartition, why: Stop) {
    g.last_generation += 1;
    let generation = g.last_generation;
    if let Some(s) = g.map.get_mut(tp) {
        s.generation = generation;
        s.stopped = Some(why);
    }
}

/// A new generation that reads `tp` again from `stored`; `stopped` replaces the stop when
/// given (`resume_if`), else it is kept (`rewind`).
fn seek_locked(
    g: &mut Inner,
    tp: &TopicPartition,
    stored: Option<i64>,
    stopped: Option<Option<Stop>>,
) {
    g.last_generation += 1;
    let generation = g.last_generation;
    if let Some(s) = g.map.get_mut(tp) {
        *s = State {
            generation,
            expected: stored,
            rewind_pending: true,
            stopped: stopped.unwrap_or_else(|| s.stopped.take()),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp() -> TopicPartition {
        TopicPartition {
            topic: Arc::from("t"),
            partition: 0,
        }
    }

    #[test]
    fn stale_generations_are_refused_after_rewind_and_reassignment() {
        let p = Partitions::default();
        assert_eq!(p.tag(&tp(), 9), Tag::Drop);
        p.assign(tp(), Some(5));
        let g1 = p.tag(&tp(), 9).generation().unwrap();
        assert_eq!(p.accepts(&tp(), g1), Some(Some(5)));
        p.committed(&tp(), g1, 9);
        assert_eq!(p.accepts(&tp(), g1), Some(Some(9)));

        p.rewind(&tp(), Some(9));
        assert_eq!(
            p.tag(&tp(), 9).generation(),
            None,
            "messages fetched before the seek must be dropped"
        );
        assert_eq!(p.accepts(&tp(), g1), None);
        assert_eq!(
            p.take_rewinds(),
            vec![Rewind {
                tp: tp(),
                to: Some(9)
            }]
        );
        let g2 = p.tag(&tp(), 9).generation().unwrap();
        assert!(g2 > g1);

        p.revoke(&tp());
        assert_eq!(p.accepts(&tp(), g2), None);
        p.committed(&tp(), g2, 100);
        p.assign(tp(), Some(9));
        assert_eq!(
            p.accepts(&tp(), p.tag(&tp(), 9).generation().unwrap()),
            Some(Some(9))
        );
    }

    #[test]
    fn a_record_below_the_stored_offset_stops_its_partition_until_reassigned() {
        let p = Partitions::default();
        p.assign(tp(), Some(100));
        assert_eq!(p.tag(&tp(), 100), Tag::Current(1));
        assert_eq!(p.tag(&tp(), 3), Tag::PastEnd { stored: 100 });
        // Also once the recreated topic grows past the old offsets: fail closed.
        assert_eq!(p.tag(&tp(), 4), Tag::Stopped);
        assert_eq!(p.tag(&tp(), 150), Tag::Stopped);
        p.assign(tp(), Some(100));
        assert!(matches!(p.tag(&tp(), 100), Tag::Current(_)));
        // Without a stored offset the consumer starts at the beginning: nothing is below.
        p.assign(tp(), None);
        assert!(matches!(p.tag(&tp(), 0), Tag::Current(_)));
    }

    #[test]
    fn a_stop_fences_what_is_in_flight_and_only_a_resume_lifts_it() {
        let p = Partitions::default();
        p.assign(tp(), Some(10));
        let Tag::Current(before) = p.tag(&tp(), 10) else {
            panic!("current");
        };
        p.stop(&tp(), Stop::Unverified);
        assert_eq!(
            p.accepts(&tp(), before),
            None,
            "a batch in flight is refused"
        );
        // The applier's retry or fence rewinds: the partition stays stopped.
        p.rewind(&tp(), Some(10));
        assert_eq!(p.take_rewinds().len(), 1);
        assert_eq!(p.tag(&tp(), 10), Tag::Stopped);
        assert!(p.resume_if(&tp(), p.owned()[0].generation, Some(10)));
        assert_eq!(p.take_rewinds().len(), 1);
        assert!(matches!(p.tag(&tp(), 10), Tag::Current(_)));
    }

    #[test]
    fn the_lag_watch_acts_only_on_the_generation_it_looked_at() {
        let p = Partitions::default();
        p.assign(tp(), Some(10));
        let seen = p.owned()[0].generation;
        // Reassigned and stopped at assignment meanwhile: a stale resume lifts nothing.
        p.assign_stopped(tp(), Some(10), Stop::Unverified);
        assert!(!p.resume_if(&tp(), seen, Some(10)));
        assert_eq!(p.stopped(&tp()), Some(Stop::Unverified));
        let now = p.owned()[0].generation;
        assert!(p.resume_if(&tp(), now, Some(10)));
        assert_eq!(p.stopped(&tp()), None);
        assert!(!p.stop_if(&tp(), now, Stop::Unverified), "resumed since");
    }
}
