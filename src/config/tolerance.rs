//! `[errors]`: what a record that cannot be applied does to its integration, per input
//! topic, after Kafka Connect's `errors.tolerance`.

use serde::Deserialize;

use crate::event::Kind;

/// What happens to a poison record (one that cannot be decoded, validated or applied).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tolerance {
    /// Dead-letter it and move on.
    #[default]
    All,
    /// Stop the integration and report it failing: nothing after the record is applied
    /// until the operator fixes the cause (or tolerates it) and restarts. For shops where
    /// a skipped policy is a policy not enforced.
    None,
}

impl Tolerance {
    pub fn as_str(self) -> &'static str {
        match self {
            Tolerance::All => "all",
            Tolerance::None => "none",
        }
    }
}

/// `errors.tolerance`, one key per input topic (named as in `[topics]`).
#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ToleranceByTopic {
    pub profiles: Tolerance,
    pub data_sources: Tolerance,
    pub policies: Tolerance,
    pub impersonation: Tolerance,
}

impl ToleranceByTopic {
    pub fn of(&self, kind: Kind) -> Tolerance {
        match kind {
            Kind::Profile => self.profiles,
            Kind::DataSource => self.data_sources,
            Kind::Policy => self.policies,
            Kind::Impersonation => self.impersonation,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ErrorSettings {
    pub tolerance: ToleranceByTopic,
}

impl super::Topics {
    /// The input topics whose poison records stop the integration.
    pub fn intolerant(&self, errors: &ErrorSettings) -> Vec<String> {
        let kinds: Vec<Kind> = Kind::ALL
            .into_iter()
            .filter(|k| errors.tolerance.of(*k) == Tolerance::None)
            .collect();
        self.of_kinds(&kinds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerance_is_all_unless_a_topic_says_none() {
        let c: crate::Config = toml::from_str("[errors.tolerance]\npolicies = \"none\"\n").unwrap();
        assert_eq!(c.errors.tolerance.of(Kind::Policy), Tolerance::None);
        assert_eq!(c.errors.tolerance.of(Kind::Profile), Tolerance::All);
        assert_eq!(c.topics.intolerant(&c.errors), vec!["immuta.policies"]);
        let bad = toml::from_str::<crate::Config>("[errors.tolerance]\npolicy = \"none\"\n");
        assert!(bad.is_err(), "a misspelt topic must not silently tolerate");
        let bad = toml::from_str::<crate::Config>("[errors.tolerance]\npolicies = \"some\"\n");
        assert!(bad.is_err());
    }
}
