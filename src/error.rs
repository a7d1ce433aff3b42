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
