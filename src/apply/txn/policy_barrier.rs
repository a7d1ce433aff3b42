//! Fail closed on a cold start: no view goes live before the policies that had already
//! been published when this instance started are applied.
//!
//! Data sources and policies arrive on different topics, so nothing orders a data source
//! after the policies that target it: on a fresh host, or after a replay reset, a view
//! could be granted to PUBLIC with none of its policies. So each instance reads the
//! policies topic's end offsets when it starts, and until the stored offsets of its
//! consumer group (written by whichever instance owns each partition) have reached them,
//! a batch that would *create* a view records its data source in
//! `immuta_system.view_pending` instead. Existing views are rebuilt and views are dropped
//! as usual (a rebuild uses every stored policy; a drop shows less). The first
//! transaction that finds the policies caught up builds every pending view; a background
//! task (`pipeline`) tries that every [`CHECK_EVERY`] in case no batch comes.
//!
//! Both kinds of transaction lock `view_pending` before they read the stored offsets, so
//! a view recorded as pending is always seen by the transaction that opens the barrier.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use super::Tx;
use crate::apply::sql::dialect;
use crate::apply::ApplyError;
use crate::config::Dialect;

/// How often the background task checks whether pending views can be built.
pub const CHECK_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Default)]
struct State {
    open: bool,
    /// The policies topic this instance consumes (None: it consumes none, and the
    /// barrier never closes).
    topic: Option<String>,
    /// Its partitions' end offsets when this instance started (None: not read yet).
    ends: Option<BTreeMap<i32, i64>>,
}

#[derive(Debug)]
pub struct PolicyBarrier {
    state: Mutex<State>,
}

impl Default for PolicyBarrier {
    /// Open: bootstrap, replay's reset and direct uses of the warehouse create views at once.
    fn default() -> Self {
        PolicyBarrier {
            state: Mutex::new(State {
                open: true,
                ..State::default()
            }),
        }
    }
}

impl PolicyBarrier {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        match self.state.lock() {
            Ok(mut s) => f(&mut s),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// Closes the barrier until the policies on `topic` are caught up to end offsets
    /// that [`PolicyBarrier::set_ends`] supplies.
    pub fn wait_for(&self, topic: &str) {
        self.with(|s| {
            *s = State {
                open: false,
                topic: Some(topic.into()),
                ends: None,
            }
        });
    }

    /// The end offsets of the policies topic's partitions when this instance started.
    pub fn set_ends(&self, ends: BTreeMap<i32, i64>) {
        self.with(|s| s.ends = Some(ends));
    }

    /// Whether the end offsets are still to be read.
    pub fn needs_ends(&self) -> bool {
        self.with(|s| s.topic.is_some() && s.ends.is_none())
    }

    pub fn is_open(&self) -> bool {
        self.with(|s| s.open)
    }

    /// Closes the barrier again, with the end offsets it had, after the stored offsets
    /// were moved behind this instance's back (a fenced batch: a replay reset or another
    /// instance). It opens again as soon as the stored offsets are back at those ends.
    pub fn reclose(&self) {
        self.with(|s| s.open = s.topic.is_none());
    }

    /// Closed, and these partitions include the policies topic's.
    pub(crate) fn waits_on<'a>(
        &self,
        mut partitions: impl Iterator<Item = &'a crate::batch::TopicPartition>,
    ) -> bool {
        self.with(|s| match (&s.topic, s.open) {
            (Some(topic), false) => partitions.any(|tp| *tp.topic == **topic),
            _ => false,
        })
    }

    pub(crate) fn opened(&self) {
        self.with(|s| s.open = true);
    }

    /// Inside a batch transaction: may views be created? When the barrier is closed this
    /// locks `view_pending` and compares the stored offsets with the end offsets.
    pub(crate) async fn allows_new_views(
        &self,
        tx: &Tx<'_>,
        d: Dialect,
        group: &str,
    ) -> Result<bool, ApplyError> {
        let (open, topic, ends) = self.with(|s| (s.open, s.topic.clone(), s.ends.clone()));
        let Some(topic) = topic.filter(|_| !open) else {
            return Ok(true);
        };
        tx.batch_execute(dialect::of(d).lock_pending()).await?;
        let Some(ends) = ends else {
            return Ok(false);
        };
        let stored: BTreeMap<i32, i64> = tx
            .query(STORED_POLICY_OFFSETS, &[&group, &topic])
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, tokio_postgres::Error>>()?;
        Ok(caught_up(&ends, &stored))
    }
}

/// Every partition's stored offset has reached its end offset (an empty partition, end 0,
/// needs no row).
fn caught_up(ends: &BTreeMap<i32, i64>, stored: &BTreeMap<i32, i64>) -> bool {
    ends.iter()
        .all(|(p, end)| stored.get(p).copied().unwrap_or(0) >= *end)
}

/// The offsets of the policies topic, read under the barrier.
const STORED_POLICY_OFFSETS: &str = "SELECT \"partition\", next_offset FROM immuta_system.offsets WHERE consumer_group = $1 AND topic = $2";

/// The Redshift statements of the barrier (`statements` pins them).
#[cfg(test)]
pub(crate) fn redshift_statements() -> Vec<String> {
    vec![
        dialect::of(Dialect::Redshift).lock_pending().into(),
        STORED_POLICY_OFFSETS.into(),
        PENDING.into(),
        FORGET_PENDING.into(),
        dialect::of(Dialect::Redshift).remember_pending().into(),
    ]
}

/// Where the data sources whose views wait for the barrier are kept.
pub(crate) const PENDING: &str = "SELECT data_source_id FROM immuta_system.view_pending";
pub(crate) const FORGET_PENDING: &str = "DELETE FROM immuta_system.view_pending";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caught_up_needs_every_partition_at_its_end() {
        let ends = BTreeMap::from([(0, 5), (1, 0), (2, 3)]);
        assert!(!caught_up(&ends, &BTreeMap::from([(0, 5)])));
        assert!(caught_up(&ends, &BTreeMap::from([(0, 5), (2, 3)])));
        assert!(caught_up(&ends, &BTreeMap::from([(0, 9), (2, 4)])));
        assert!(!caught_up(&ends, &BTreeMap::from([(0, 4), (2, 3)])));
    }

    #[test]
    fn a_barrier_without_end_offsets_stays_closed() {
        let b = PolicyBarrier::default();
        assert!(b.is_open());
        b.reclose();
        assert!(b.is_open(), "without a policies topic it never closes");
        b.wait_for("policies");
        assert!(!b.is_open() && b.needs_ends());
        b.set_ends(BTreeMap::from([(0, 1)]));
        assert!(!b.needs_ends());
        b.opened();
        b.reclose();
        assert!(!b.is_open());
    }
}
