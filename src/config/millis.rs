//! Durations: whole milliseconds in the file and the environment (the `*_ms` keys of
//! SPEC §6 keep their names), `Duration` everywhere in the program, so no caller
//! converts or confuses units.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

pub(super) fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_millis)
}

/// A duration as the file writes it, in whole milliseconds (`check-config`).
pub(super) fn write_millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// An optional duration as the file writes it.
pub(super) fn write_optional_millis<S: Serializer>(
    d: &Option<Duration>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => write_millis(d, s),
        None => s.serialize_none(),
    }
}

/// A `*_ms` key that may be absent.
pub(super) fn optional_millis<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    Option::<u64>::deserialize(d).map(|ms| ms.map(Duration::from_millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Wait {
        #[serde(rename = "wait_ms", deserialize_with = "millis")]
        wait: Duration,
    }

    #[test]
    fn reads_milliseconds_and_refuses_what_is_not_a_count() {
        let w: Wait = toml::from_str("wait_ms = 1500").unwrap();
        assert_eq!(w.wait, Duration::from_millis(1500));
        for bad in ["wait_ms = -1", "wait_ms = \"soon\"", "wait_ms = 1.5"] {
            assert!(toml::from_str::<Wait>(bad).is_err(), "{bad}");
        }
    }
}
