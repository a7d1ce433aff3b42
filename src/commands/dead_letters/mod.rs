//! `policy-push dead-letters list|redrive`: what was dead-lettered, and putting it back.
//!
//! Both read the whole dead-letter topic, to its true end (`read`), without a consumer
//! group (nothing is committed), and select letters by integration, origin topic, when
//! they were dead-lettered (`--since`) and position in the dead-letter topic (`--at
//! PARTITION:OFFSET`, as `list` prints it; a position that holds no letter is an error).
//!
//! A redrive publishes each selected letter's original key, value and headers again to
//! its origin topic and partition, so that it keeps its place among its key's records
//! (tombstones depend on that order). Every integration consumes it again, and an entity
//! applies a record only when it is newer than the state it holds (the version guard,
//! and the tombstone rule): a letter superseded since, or already applied by another
//! integration, is a no-op there. Letters whose value was too large to keep are not
//! redriven: the record is still at its origin, if retention kept it. After each letter a
//! redrive writes a marker to the dead-letter topic (`letter`), which `list` shows.

mod letter;
mod list;
mod read;
mod redrive;

pub use letter::{Letter, Redrive};
pub use list::list;
pub use read::{scan, Extent, Scan};
pub use redrive::{redrive, Redriven};

use crate::config::Config;

/// Which dead letters a command acts on; every given criterion must hold.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Filter {
    /// Only letters of this integration.
    #[arg(long)]
    pub integration: Option<String>,
    /// Only letters from this origin topic.
    #[arg(long)]
    pub topic: Option<String>,
    /// Only letters dead-lettered at or after this time (RFC 3339, or ms since the epoch).
    #[arg(long, value_parser = crate::commands::timestamp::parse_ms)]
    pub since: Option<i64>,
    /// Only the letter at this position of the dead-letter topic, PARTITION:OFFSET as
    /// `list` shows it (repeatable); a position that holds no letter is an error.
    #[arg(long = "at", value_parser = parse_at)]
    pub at: Vec<(i32, i64)>,
}

fn parse_at(s: &str) -> Result<(i32, i64), String> {
    letter::position(s)
        .ok_or_else(|| format!("{s:?}: expected PARTITION:OFFSET of the dead-letter topic"))
}

impl Filter {
    fn is_empty(&self) -> bool {
        self.integration.is_none()
            && self.topic.is_none()
            && self.since.is_none()
            && self.at.is_empty()
    }

    fn selects(&self, l: &Letter) -> bool {
        self.integration
            .as_ref()
            .is_none_or(|i| *i == l.integration)
            && self.topic.as_ref().is_none_or(|t| *t == l.topic)
            && self
                .since
                .is_none_or(|s| l.dead_lettered_ms.is_some_and(|at| at >= s))
            && (self.at.is_empty() || self.at.contains(&(l.partition_in_dlq, l.offset_in_dlq)))
    }
}

/// The whole topic as read, and the letters `filter` selects in topic order per
/// partition; an error naming each `--at` position that holds no letter.
async fn select(config: &Config, filter: &Filter) -> anyhow::Result<(Scan, Vec<Letter>)> {
    let scan = scan(config).await?;
    let missing: Vec<String> = filter
        .at
        .iter()
        .filter_map(|at| scan.missing(*at))
        .collect();
    if !missing.is_empty() {
        anyhow::bail!("{}", missing.join("; "));
    }
    let letters = scan
        .letters
        .iter()
        .filter(|l| filter.selects(l))
        .cloned()
        .collect();
    Ok((scan, letters))
}

/// Every dead letter `filter` selects, in topic order per partition.
pub async fn read(config: &Config, filter: &Filter) -> anyhow::Result<Vec<Letter>> {
    Ok(select(config, filter).await?.1)
}

#[cfg(test)]
mod tests {
    use super::{parse_at, Filter, Letter};

    pub(super) fn letter() -> Letter {
        Letter {
            partition_in_dlq: 0,
            offset_in_dlq: 4,
            integration: "a".into(),
            topic: "t".into(),
            partition: Some(1),
            offset: Some(9),
            error: "bad".into(),
            class: "poison".into(),
            stage: "apply".into(),
            dead_lettered_ms: Some(1000),
            timestamp_ms: Some(5),
            value_omitted: None,
            redriven: None,
            key: None,
            value: None,
            headers: vec![],
        }
    }

    #[test]
    fn every_criterion_of_a_filter_must_hold() {
        let l = letter();
        assert!(Filter::default().selects(&l));
        let by = |f: Filter| f.selects(&l);
        assert!(by(Filter {
            integration: Some("a".into()),
            ..Default::default()
        }));
        assert!(!by(Filter {
            integration: Some("b".into()),
            ..Default::default()
        }));
        assert!(by(Filter {
            since: Some(1000),
            ..Default::default()
        }));
        assert!(!by(Filter {
            since: Some(1001),
            ..Default::default()
        }));
        assert!(by(Filter {
            at: vec![(0, 4)],
            ..Default::default()
        }));
        assert!(!by(Filter {
            at: vec![(0, 5)],
            topic: Some("t".into()),
            ..Default::default()
        }));
        assert_eq!(parse_at("2:17"), Ok((2, 17)));
        assert!(parse_at("2").is_err() && parse_at("a:1").is_err());
    }
}
