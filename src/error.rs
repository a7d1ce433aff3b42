//! How every module's errors are triaged. Each module keeps its own `thiserror` enum and
//! says, through [`Classify`], which of three things the pipeline must do about it.

/// What the pipeline does about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Transient (network, warehouse down, broker hiccup): retry with backoff, report
    /// the integration unhealthy meanwhile, never skip the record.
    Retryable,
    /// The record itself is bad: dead-letter it, advance past it, carry on.
    Poison,
    /// Misconfiguration or a broken invariant: stop and tell the operator.
    Fatal,
}

pub trait Classify {
    fn class(&self) -> Class;
}

/// An error and its sources in one line, each source's text only where the messages
/// before it do not already hold it: most variants here name their source in their own
/// message and keep it as `source()` too, and a plain walk of the chain (anyhow's `{:#}`)
/// would print it twice.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text += &format!(": {more}");
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_source_named_in_the_message_is_not_repeated() {
        let toml = toml::from_str::<toml::Table>("[a").unwrap_err();
        let detail = toml.to_string();
        let e = anyhow::Error::new(crate::config::ConfigError::Parse(toml)).context("loading");
        let text = super::chain(e.as_ref());
        assert_eq!(text, format!("loading: invalid configuration: {detail}"));
        assert_eq!(text.matches(detail.as_str()).count(), 1);
        let plain = format!("{e:#}");
        assert_eq!(plain.matches(detail.as_str()).count(), 2, "{plain}");
    }
}
