//! Isolating the records a warehouse refuses when it cannot refuse them one by one.
//!
//! Redshift has no savepoints (and PostgreSQL may run without them), so one record the
//! warehouse refuses fails its whole batch, and retrying the batch would hold back every
//! later change on the lane for good. Instead the applier splits the batch's entities in
//! halves and applies each half in its own transaction, without moving the offsets,
//! splitting again whatever fails because of a record, until the failing entities stand
//! alone: those are dead-lettered. A last transaction then moves the offsets past the
//! whole batch and publishes the dead letters. Every procedure is version-guarded, so a
//! half applied again after a crash changes nothing the second time.

use super::{Batch, DeadLetter, Entities, Origin, Pending, Profile, Raw, Versioned};

/// The first `n` entities of `map` (in its iteration order) move to the returned map.
fn take<T>(map: &mut Entities<T>, n: usize) -> Entities<T> {
    let keys: Vec<String> = map.keys().take(n).cloned().collect();
    keys.into_iter()
        .filter_map(|k| map.remove_entry(&k))
        .collect()
}

/// The bytes a dead letter of a profile carries: profiles are kept without their raw
/// value, but a kept datum is exactly the record's value after its header.
pub fn profile_raw(p: &Profile, raw: &Raw) -> Raw {
    match p {
        Profile::Datum(d) => Raw {
            key: raw.key.clone(),
            value: d.single_object().map(Vec::into_boxed_slice),
            meta: raw.meta.clone(),
        },
        Profile::Decoded(_) => raw.clone(),
    }
}

/// Up to `left` entities of `map`, counted off `left`.
fn take_up_to<T>(map: &mut Entities<T>, left: &mut usize) -> Entities<T> {
    let n = (*left).min(map.len());
    *left -= n;
    take(map, n)
}

fn letters<T: Versioned>(
    map: &Entities<T>,
    reason: &str,
    raw: impl Fn(&T, &Raw) -> Raw,
    out: &mut Vec<DeadLetter>,
) {
    for p in map.values() {
        let Pending { delete, upsert } = p;
        if let Some(d) = delete.as_ref().filter(|d| !d.foreign) {
            out.push(letter(&d.origin, reason, d.raw.clone()));
        }
        if let Some(u) = upsert {
            out.push(letter(&u.origin, reason, raw(&u.value, &u.raw)));
        }
    }
}

fn letter(origin: &Origin, reason: &str, raw: Raw) -> DeadLetter {
    DeadLetter {
        stage: crate::record::Stage::Apply,
        origin: origin.clone(),
        reason: reason.to_string(),
        raw,
    }
}

impl Batch {
    /// The batch's changes without its offsets, dead letters or counts: what an isolation
    /// step applies.
    pub fn changes_only(&self) -> Batch {
        Batch {
            profiles: self.profiles.clone(),
            data_sources: self.data_sources.clone(),
            policies: self.policies.clone(),
            impersonations: self.impersonations.clone(),
            ..Batch::default()
        }
    }

    /// Splits a batch of changes into two halves of about equal entity counts.
    pub fn halves(mut self) -> (Batch, Batch) {
        let mut left = self.entries() / 2;
        let first = Batch {
            profiles: take_up_to(&mut self.profiles, &mut left),
            impersonations: take_up_to(&mut self.impersonations, &mut left),
            policies: take_up_to(&mut self.policies, &mut left),
            data_sources: take_up_to(&mut self.data_sources, &mut left),
            ..Batch::default()
        };
        (first, self)
    }

    /// Dead letters for every record of this batch's changes, with `reason`.
    pub fn refused(&self, reason: &str) -> Vec<DeadLetter> {
        let mut out = Vec::new();
        letters(&self.profiles, reason, profile_raw, &mut out);
        letters(&self.data_sources, reason, |_, r| r.clone(), &mut out);
        letters(&self.policies, reason, |_, r| r.clone(), &mut out);
        letters(&self.impersonations, reason, |_, r| r.clone(), &mut out);
        out
    }

    /// The last step of an isolation: no changes, the whole batch's offsets, its own dead
    /// letters and `refused`.
    pub fn closing(&self, refused: Vec<DeadLetter>) -> Batch {
        let mut dead_letters = self.dead_letters.clone();
        dead_letters.extend(refused);
        Batch {
            dead_letters,
            partitions: self.partitions.clone(),
            ..Batch::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use crate::event::{Event, Impersonation};

    fn batch(n: usize) -> Batch {
        let mut b = Batch::default();
        for i in 0..n {
            let user = format!("u{i}");
            b.push(
                Item {
                    tp: TopicPartition {
                        topic: "t".into(),
                        partition: 0,
                    },
                    generation: 1,
                    offset: i as i64,
                    timestamp_ms: None,
                    size: 1,
                    body: Body::Upsert(
                        Event::Impersonation(Impersonation {
                            user: user.clone(),
                            version: 1,
                            allowed: true,
                        }),
                        Raw {
                            key: Some(user.into_bytes().into()),
                            value: None,
                            meta: None,
                        },
                    ),
                },
                None,
            );
        }
        b
    }

    #[test]
    fn halves_cover_every_entity_once_and_keep_no_offsets() {
        let b = batch(7);
        let (a, rest) = b.changes_only().halves();
        assert_eq!((a.entries(), rest.entries()), (3, 4));
        assert!(a.partitions.is_empty() && rest.partitions.is_empty());
        let mut users: Vec<_> = a
            .impersonations
            .keys()
            .chain(rest.impersonations.keys())
            .cloned()
            .collect();
        users.sort();
        users.dedup();
        assert_eq!(users.len(), 7);
        let (one, none) = batch(1).changes_only().halves();
        assert_eq!((one.entries(), none.entries()), (0, 1));
    }

    #[test]
    fn the_closing_step_moves_every_offset_and_dead_letters_the_refused() {
        let b = batch(3);
        let refused = b.changes_only().halves().0.refused("no");
        assert_eq!(refused.len(), 1);
        let closing = b.closing(refused);
        assert_eq!(closing.partitions, b.partitions);
        assert_eq!(closing.entries(), 1, "only the dead letter");
        assert_eq!(closing.dead_letters[0].reason, "no");
    }
}
