//! Policy turned into SQL text, with no connection in sight: `quote.rs` (the only way
//! event data becomes SQL text), `view.rs` (the policy-enforced view of a data source),
//! `canonical.rs` (the fixed text a filter compares and a mask hashes), `dialect/` (every
//! statement and fragment that differs between PostgreSQL and Redshift), `statements.rs`
//! (the per-batch statements that do not) and `examples.rs` (the worked examples of
//! `docs/policies.md`). Everything here is a pure function of its arguments, so it is
//! tested without a warehouse, and Redshift's text is pinned by golden files
//! (`golden`).
//!
//! Not here: the setup scripts (`apply::setup`), and when each statement is sent
//! (`apply::txn`).

pub mod canonical;
#[doc(hidden)]
pub mod dialect;
pub mod examples;
pub mod quote;
pub(crate) mod statements;
pub mod view;

/// Compares with a golden file; `UPDATE_GOLDEN=1` rewrites it.
#[cfg(test)]
pub(crate) fn golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    assert_eq!(
        actual, expected,
        "{name} differs from its golden file; review, then UPDATE_GOLDEN=1"
    );
}
