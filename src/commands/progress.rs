//! The progress bar of a long command on a terminal (`replay`, and the load harness's
//! publishing): records done of the total, rate, time left.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar labelled `what` when stderr is a terminal; None otherwise, where the caller
/// logs lines instead.
pub fn bar(what: &'static str, total: u64) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} records, {per_sec}, {eta} left")
    {
        bar.set_style(style.progress_chars("#>-"));
    }
    bar.set_message(what);
    Some(bar)
}
