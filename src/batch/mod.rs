//! Batching and deduplication per warehouse host (SPEC §5).
//!
//! A batch collects records until a count, a byte size or a linger time is reached. Per
//! entity it keeps only what is needed to reach the same warehouse state as applying every
//! record in order under the version guard:
//!
//! - upserts collapse to the one with the highest version (a lower one would be a no-op);
//! - a tombstone replaces everything before it, remembering the highest version it
//!   superseded as a *floor*, so the stored marker keeps rejecting stale records later;
//! - an upsert after a tombstone is kept beside it (delete first, then upsert), because
//!   whether the upsert wins depends on the stored version, which only the warehouse knows.
//!
//! Every record ends in exactly one of: applied, deduplicated, skipped or dead-lettered,
//! which is what the counters report.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

mod split;
pub use split::profile_raw;

use crate::codec::{CodecError, ProfileDatum};
use crate::event::{DataSource, Event, Impersonation, Kind, Policy, UserProfile};

pub use crate::record::{Body, DeadLetter, Item, Origin, Raw, TopicPartition, MAX_REASON_BYTES};

pub trait Versioned {
    fn version(&self) -> i64;
}

macro_rules! versioned {
    ($($t:ty),*) => { $(impl Versioned for $t { fn version(&self) -> i64 { self.version } })* };
}
versioned!(DataSource, Policy, Impersonation);

/// A profile in a batch: decoded only if it had to be to validate it (an older writer
/// schema, or the Confluent wire format); otherwise kept as its datum, which PostgreSQL's
/// applier writes straight into a binary record and Redshift's decodes, if it survives
/// deduplication.
#[derive(Debug, Clone)]
pub enum Profile {
    /// Boxed: an entry of a batch holds one of the two, and the datum is the usual case.
    Decoded(Box<UserProfile>),
    Datum(ProfileDatum),
}

impl Versioned for Profile {
    fn version(&self) -> i64 {
        match self {
            Profile::Decoded(p) => p.version,
            Profile::Datum(d) => d.version,
        }
    }
}

impl Profile {
    pub fn get(&self) -> Result<Cow<'_, UserProfile>, CodecError> {
        match self {
            Profile::Decoded(p) => Ok(Cow::Borrowed(&**p)),
            Profile::Datum(d) => d.decode().map(Cow::Owned),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Upsert<T> {
    pub value: T,
    pub origin: Origin,
    pub raw: Raw,
    /// The record's size as consumed (key and value), counted in the batch's bytes while
    /// the batch holds it.
    pub size: usize,
}

#[derive(Debug, Clone)]
pub struct Delete {
    /// Highest version this delete superseded; the stored marker keeps at least this.
    pub floor: Option<i64>,
    pub origin: Origin,
    /// Came from a foreign-host data source: counted as skipped, not applied.
    pub foreign: bool,
    pub raw: Raw,
    pub size: usize,
}

/// The collapsed changes of one entity within a batch: delete first, then upsert.
#[derive(Debug, Clone)]
pub struct Pending<T> {
    /// Boxed: deletes are rare, and a batch waiting on a backlog holds many entries.
    pub delete: Option<Box<Delete>>,
    pub upsert: Option<Upsert<T>>,
}

/// Both return the bytes of the records the entity no longer holds.
impl<T: Versioned> Pending<T> {
    fn upsert(&mut self, new: Upsert<T>, stats: &mut Stats) -> usize {
        match &self.upsert {
            Some(old) if old.value.version() >= new.value.version() => {
                stats.deduplicated += 1;
                new.size
            }
            Some(_) => {
                stats.deduplicated += 1;
                self.upsert.replace(new).map_or(0, |old| old.size)
            }
            None => {
                self.upsert = Some(new);
                0
            }
        }
    }

    fn delete(&mut self, mut new: Box<Delete>, stats: &mut Stats) -> usize {
        let mut released = 0;
        let superseded = self.upsert.take().map(|u| {
            stats.deduplicated += 1;
            released += u.size;
            u.value.version()
        });
        if let Some(old) = self.delete.take() {
            // A foreign-host record was counted as skipped when consumed, not as pending.
            if !old.foreign {
                stats.deduplicated += 1;
            }
            released += old.size;
            new.floor = new.floor.max(old.floor);
        }
        new.floor = new.floor.max(superseded);
        self.delete = Some(new);
        released
    }

    /// Records of this entity that will be written (not counting foreign deletes).
    fn ops(&self) -> usize {
        usize::from(self.delete.as_ref().is_some_and(|d| !d.foreign))
            + usize::from(self.upsert.is_some())
    }
}

pub type Entities<T> = HashMap<String, Pending<T>, foldhash::fast::RandomState>;

fn entry_owned<T>(map: &mut Entities<T>, key: String) -> &mut Pending<T> {
    map.entry(key).or_insert(Pending {
        delete: None,
        upsert: None,
    })
}

/// Where a record came from and what it weighs, for the change it carries.
struct Arrived {
    origin: Origin,
    raw: Raw,
    size: usize,
}

/// Keeps `value` as the entity's pending upsert (the newest wins); the bytes it releases.
fn upsert<T: Versioned>(
    slot: &mut Pending<T>,
    value: T,
    arrived: Arrived,
    stats: &mut Stats,
) -> usize {
    let Arrived { origin, raw, size } = arrived;
    let change = Upsert {
        value,
        origin,
        raw,
        size,
    };
    slot.upsert(change, stats)
}

fn entry<'a, T>(map: &'a mut Entities<T>, key: &str) -> &'a mut Pending<T> {
    if !map.contains_key(key) {
        map.insert(
            key.to_string(),
            Pending {
                delete: None,
                upsert: None,
            },
        );
    }
    // Inserted just above when absent.
    map.get_mut(key).expect("entry present")
}

/// The offsets a batch covers on one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub generation: u64,
    /// `next_offset` stored in the warehouse before this batch (None: no row yet). The
    /// commit only succeeds if the warehouse still holds exactly this value.
    pub expected: Option<i64>,
    /// The offset after the last record of this batch on the partition.
    pub next_offset: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub consumed: u64,
    pub deduplicated: u64,
    pub skipped: u64,
    pub dead_lettered: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_records: usize,
    pub max_bytes: usize,
    /// Data sources plus policies: each can rebuild views, and every view rebuilt holds
    /// locks until the batch commits.
    pub max_definitions: usize,
    pub linger: Duration,
    /// Entities a batch may hold while the batch before it is still being applied, or
    /// while it takes in a backlog (at least `max_records`); see
    /// [`Batch::has_room_while_waiting`].
    pub backlog_entries: usize,
    /// How long a batch that holds `max_records` goes on taking in a backlog, from its
    /// first record (see [`Batch::deadline`]).
    pub backlog_wait: Duration,
}

#[derive(Debug, Default)]
pub struct Batch {
    pub profiles: Entities<Profile>,
    pub data_sources: Entities<DataSource>,
    pub policies: Entities<Policy>,
    pub impersonations: Entities<Impersonation>,
    pub dead_letters: Vec<DeadLetter>,
    pub partitions: BTreeMap<TopicPartition, Span>,
    pub stats: Stats,
    bytes: usize,
    opened_at: Option<Instant>,
    /// Record timestamps (ms) and how many records had each, for the end-to-end latency
    /// histogram. Counted, not listed: a batch that waits for the one before it may take
    /// in many records per entity, and records arrive many per millisecond.
    pub timestamps_ms: BTreeMap<i64, usize>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.stats.consumed == 0
    }

    pub fn len(&self) -> usize {
        self.stats.consumed as usize
    }

    pub fn is_full(&self, limits: &Limits) -> bool {
        self.len() >= limits.max_records || !self.within_size_limits(limits)
    }

    /// Under `max_bytes` and `max_definitions`, which bound a batch whether or not it waits.
    fn within_size_limits(&self, limits: &Limits) -> bool {
        self.bytes < limits.max_bytes
            && self.data_sources.len() + self.policies.len() < limits.max_definitions
    }

    /// Whether a batch that cannot be flushed yet, because the batch before it on its lane
    /// is still being applied, takes another record. It goes on past `max_records` until
    /// it holds `backlog_entries` entities or `max_bytes` of records: records for entities
    /// it already holds replace the older ones and cost neither memory nor warehouse work,
    /// so a backlog is written as one row per entity rather than one per change. A quiet
    /// stream never gets here; it flushes on linger.
    pub fn has_room_while_waiting(&self, limits: &Limits) -> bool {
        self.entries() < limits.backlog_entries.max(limits.max_records)
            && self.within_size_limits(limits)
    }

    /// Entities held (each written once), plus dead letters.
    pub fn entries(&self) -> usize {
        self.profiles.len()
            + self.data_sources.len()
            + self.policies.len()
            + self.impersonations.len()
            + self.dead_letters.len()
    }

    /// Bytes of the records the batch holds (superseded records no longer count).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// When the batch goes whatever else happens (None while empty): `linger` after its
    /// first record, or `backlog_wait` once it holds `max_records` (a backlog, which it
    /// goes on taking in while there is room: [`Batch::absorbs`]).
    pub fn deadline(&self, limits: &Limits) -> Option<Instant> {
        let wait = match self.len() >= limits.max_records {
            true => limits.backlog_wait,
            false => limits.linger,
        };
        self.opened_at.map(|t| t + wait)
    }

    /// Whether a batch that holds `max_records` may take in more of a backlog: it has
    /// room ([`Batch::has_room_while_waiting`]) and its deadline has not passed. Every
    /// record it takes in for an entity it holds is one row fewer for the warehouse.
    pub fn absorbs(&self, limits: &Limits, now: Instant) -> bool {
        self.has_room_while_waiting(limits) && self.deadline(limits).is_none_or(|d| now < d)
    }

    /// Adds one record. `expected` is the partition's stored offset, used only when this
    /// is the batch's first record on the partition.
    pub fn push(&mut self, item: Item, expected: Option<i64>) {
        self.note(&item, expected);
        let (size, origin) = (
            item.size,
            Origin {
                tp: item.tp,
                offset: item.offset,
            },
        );
        let stats = &mut self.stats;
        let released = match item.body {
            Body::Upsert(event, raw) => {
                let arrived = Arrived { origin, raw, size };
                match event {
                    Event::Profile(v) => {
                        let slot = entry(&mut self.profiles, &v.user);
                        upsert(slot, Profile::Decoded(Box::new(v)), arrived, stats)
                    }
                    Event::DataSource(v) => {
                        upsert(entry(&mut self.data_sources, &v.id), v, arrived, stats)
                    }
                    Event::Policy(v) => upsert(entry(&mut self.policies, &v.id), v, arrived, stats),
                    Event::Impersonation(v) => {
                        upsert(entry(&mut self.impersonations, &v.user), v, arrived, stats)
                    }
                }
            }
            Body::Profile { user, datum } => {
                let arrived = Arrived {
                    origin,
                    raw: Raw::default(),
                    size,
                };
                upsert(
                    entry_owned(&mut self.profiles, user),
                    Profile::Datum(datum),
                    arrived,
                    stats,
                )
            }
            Body::Delete { kind, key, raw } => {
                let d = Box::new(Delete {
                    floor: None,
                    origin,
                    foreign: false,
                    raw,
                    size,
                });
                match kind {
                    Kind::Profile => entry(&mut self.profiles, &key).delete(d, stats),
                    Kind::DataSource => entry(&mut self.data_sources, &key).delete(d, stats),
                    Kind::Policy => entry(&mut self.policies, &key).delete(d, stats),
                    Kind::Impersonation => entry(&mut self.impersonations, &key).delete(d, stats),
                }
            }
            Body::ForeignDataSource { id, version } => {
                stats.skipped += 1;
                let d = Box::new(Delete {
                    floor: Some(version),
                    origin,
                    foreign: true,
                    raw: Raw::default(),
                    size,
                });
                entry(&mut self.data_sources, &id).delete(d, stats)
            }
            Body::Poison { reason, raw } => {
                stats.dead_lettered += 1;
                self.dead_letters.push(DeadLetter {
                    stage: crate::record::Stage::Consume,
                    origin,
                    reason,
                    raw,
                });
                0
            }
        };
        self.bytes -= released;
    }

    /// Counts `item` in: its bytes, its timestamp, its partition's span.
    fn note(&mut self, item: &Item, expected: Option<i64>) {
        self.opened_at.get_or_insert_with(Instant::now);
        self.stats.consumed += 1;
        self.bytes += item.size;
        if let Some(ts) = item.timestamp_ms {
            *self.timestamps_ms.entry(ts).or_default() += 1;
        }
        let span = self.partitions.entry(item.tp.clone()).or_insert(Span {
            generation: item.generation,
            expected,
            next_offset: item.offset + 1,
        });
        span.next_offset = span.next_offset.max(item.offset + 1);
    }

    /// Records whose change will be written to the warehouse.
    pub fn ops(&self) -> usize {
        self.profiles.values().map(Pending::ops).sum::<usize>()
            + self.data_sources.values().map(Pending::ops).sum::<usize>()
            + self.policies.values().map(Pending::ops).sum::<usize>()
            + self
                .impersonations
                .values()
                .map(Pending::ops)
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::test_profile as profile;
    use std::sync::Arc;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition {
            topic: Arc::from("profiles"),
            partition: p,
        }
    }

    fn item(p: i32, offset: i64, body: Body) -> Item {
        Item {
            tp: tp(p),
            generation: 1,
            offset,
            timestamp_ms: Some(1000 + offset),
            size: 100,
            body,
        }
    }

    fn up(user: &str, v: i64) -> Body {
        Body::Upsert(Event::Profile(profile(user, v)), Raw::default())
    }

    fn del(user: &str) -> Body {
        Body::Delete {
            kind: Kind::Profile,
            key: user.into(),
            raw: Raw::default(),
        }
    }

    fn accounted(b: &Batch) -> u64 {
        b.ops() as u64 + b.stats.deduplicated + b.stats.skipped + b.stats.dead_lettered
    }

    #[test]
    fn newest_version_wins_whatever_the_arrival_order() {
        let mut b = Batch::default();
        for (o, v) in [(0, 3), (1, 5), (2, 4), (3, 1)] {
            b.push(item(0, o, up("alice", v)), None);
        }
        let p = &b.profiles["alice"];
        assert_eq!(p.upsert.as_ref().unwrap().value.version(), 5);
        assert!(p.delete.is_none());
        assert_eq!(b.stats.deduplicated, 3);
        assert_eq!(accounted(&b), b.stats.consumed);
    }

    #[test]
    fn tombstone_keeps_a_floor_and_a_later_upsert_stays_beside_it() {
        let mut b = Batch::default();
        b.push(item(0, 0, up("bob", 9)), None);
        b.push(item(0, 1, del("bob")), None);
        let p = &b.profiles["bob"];
        assert!(p.upsert.is_none());
        assert_eq!(p.delete.as_ref().unwrap().floor, Some(9));
        b.push(item(0, 2, up("bob", 10)), None);
        let p = &b.profiles["bob"];
        assert_eq!(p.delete.as_ref().unwrap().floor, Some(9));
        assert_eq!(p.upsert.as_ref().unwrap().value.version(), 10);
        b.push(item(0, 3, del("bob")), None);
        assert_eq!(b.profiles["bob"].delete.as_ref().unwrap().floor, Some(10));
        assert_eq!(b.ops(), 1);
        assert_eq!(accounted(&b), b.stats.consumed);
    }

    #[test]
    fn spans_track_expected_and_next_offsets_per_partition() {
        let mut b = Batch::default();
        b.push(item(0, 10, up("a", 1)), Some(10));
        b.push(item(1, 4, up("b", 1)), None);
        b.push(
            item(
                0,
                12,
                Body::Poison {
                    reason: "bad".into(),
                    raw: Raw::default(),
                },
            ),
            Some(999),
        );
        assert_eq!(
            b.partitions[&tp(0)],
            Span {
                generation: 1,
                expected: Some(10),
                next_offset: 13
            }
        );
        assert_eq!(
            b.partitions[&tp(1)],
            Span {
                generation: 1,
                expected: None,
                next_offset: 5
            }
        );
        assert_eq!(b.dead_letters.len(), 1);
        assert_eq!(accounted(&b), 3);
    }

    #[test]
    fn foreign_data_sources_count_as_skipped_and_delete_locally() {
        let mut b = Batch::default();
        b.push(
            item(
                0,
                0,
                Body::ForeignDataSource {
                    id: "ds".into(),
                    version: 4,
                },
            ),
            None,
        );
        assert_eq!(b.stats.skipped, 1);
        assert_eq!(b.ops(), 0);
        assert_eq!(b.data_sources["ds"].delete.as_ref().unwrap().floor, Some(4));
        assert_eq!(accounted(&b), 1);
    }

    #[test]
    fn flush_triggers_on_count_bytes_and_linger() {
        let limits = Limits {
            max_records: 3,
            max_bytes: 250,
            max_definitions: 2,
            linger: Duration::from_millis(50),
            backlog_entries: 4,
            backlog_wait: Duration::from_millis(500),
        };
        let mut b = Batch::default();
        assert!(b.deadline(&limits).is_none());
        b.push(item(0, 0, up("a", 1)), None);
        assert!(b.deadline(&limits).is_some());
        b.push(item(0, 1, up("b", 1)), None);
        assert!(!b.is_full(&limits));
        b.push(item(0, 2, up("c", 1)), None);
        assert!(b.is_full(&limits), "count");
        let mut b = Batch::default();
        b.push(
            Item {
                size: 300,
                ..item(0, 0, up("a", 1))
            },
            None,
        );
        assert!(b.is_full(&limits), "bytes");
        let mut b = Batch::default();
        let ds_delete = |id: &str| Body::Delete {
            kind: Kind::DataSource,
            key: id.into(),
            raw: Raw::default(),
        };
        b.push(item(0, 0, ds_delete("x")), None);
        assert!(!b.is_full(&limits));
        b.push(item(0, 1, ds_delete("y")), None);
        assert!(b.is_full(&limits), "definitions");
    }

    /// Below `max_records` a batch goes after `linger`; at `max_records` it may take in a
    /// backlog until `backlog_wait` after its first record, while it has room.
    #[test]
    fn a_full_batch_absorbs_a_backlog_until_backlog_wait() {
        let limits = Limits {
            max_records: 3,
            max_bytes: 10_000,
            max_definitions: 2,
            linger: Duration::from_millis(50),
            backlog_entries: 4,
            backlog_wait: Duration::from_millis(500),
        };
        let mut b = Batch::default();
        b.push(item(0, 0, up("a", 1)), None);
        let opened = b.deadline(&limits).unwrap() - limits.linger;
        b.push(item(0, 1, up("b", 1)), None);
        assert_eq!(b.deadline(&limits), Some(opened + limits.linger));
        b.push(item(0, 2, up("c", 1)), None);
        assert_eq!(b.deadline(&limits), Some(opened + limits.backlog_wait));
        assert!(b.absorbs(&limits, opened + Duration::from_millis(499)));
        assert!(
            !b.absorbs(&limits, opened + limits.backlog_wait),
            "past backlog_wait"
        );
        b.push(item(0, 3, up("d", 1)), None);
        assert!(!b.absorbs(&limits, opened), "no room for a fifth entity");
        let no_backlog = Limits {
            backlog_wait: Duration::ZERO,
            ..limits
        };
        assert_eq!(b.deadline(&no_backlog), Some(opened), "goes at once");
    }

    #[test]
    fn a_waiting_batch_takes_replacements_past_max_records_up_to_its_entities_and_bytes() {
        let limits = Limits {
            max_records: 3,
            max_bytes: 450,
            max_definitions: 2,
            linger: Duration::from_millis(50),
            backlog_entries: 4,
            backlog_wait: Duration::from_millis(500),
        };
        let mut b = Batch::default();
        for (offset, user) in ["a", "b", "c"].into_iter().enumerate() {
            b.push(item(0, offset as i64, up(user, 1)), None);
        }
        assert!(b.is_full(&limits) && b.has_room_while_waiting(&limits));
        // Ten newer versions of held users: deduplicated, no new entity, no new bytes.
        for v in 2..12 {
            b.push(
                item(0, 100 + v, up(["a", "b", "c"][v as usize % 3], v)),
                None,
            );
        }
        assert_eq!((b.len(), b.entries(), b.bytes()), (13, 3, 300));
        assert!(b.has_room_while_waiting(&limits));
        // An older version than the one held does not count either.
        b.push(item(0, 200, up("a", 1)), None);
        assert_eq!(b.bytes(), 300);
        b.push(item(0, 201, up("d", 1)), None);
        assert_eq!(b.entries(), 4);
        assert!(!b.has_room_while_waiting(&limits), "entities");
        // A delete releases the upsert it supersedes.
        b.push(item(0, 202, del("d")), None);
        assert_eq!((b.entries(), b.bytes()), (4, 400));

        let mut b = Batch::default();
        for (offset, user) in ["a", "b", "c"].into_iter().enumerate() {
            b.push(
                Item {
                    size: 150,
                    ..item(0, offset as i64, up(user, 1))
                },
                None,
            );
        }
        assert!(!b.has_room_while_waiting(&limits), "bytes");
        let counted: usize = b.timestamps_ms.values().sum();
        assert_eq!(counted, 3, "every record's timestamp is counted");
    }

    /// A waiting batch holds up to `backlog_entries` of these per lane, twice: the drain's
    /// peak RSS stayed under 200 MB at 20,000 with entries of this size (384 bytes before
    /// the decoded profile, the delete and the raw bytes were boxed). 8 bytes more since
    /// a dead letter keeps its record's headers and timestamp (`Raw::meta`, one pointer):
    /// about 0.3 MB at that backlog.
    #[test]
    fn a_profile_entry_stays_small() {
        assert!(std::mem::size_of::<(String, Pending<Profile>)>() <= 136);
    }
}
