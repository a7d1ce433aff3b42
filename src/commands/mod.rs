//! The operator's commands beyond `run`, each in its own file: `bootstrap`,
//! `check-config` (and its `--connect`, `reach` and `reach_topics`), `status`, `replay`, `dead-letters`, `explain`,
//! `simulate`, and the points in time they take (`timestamp`). `offsets` is
//! `offsets::report`. `cli.rs` parses their arguments and calls them; the pipeline's
//! stages never use them.

mod bootstrap;
mod check_config;
pub mod dead_letters;
pub mod explain;
pub mod progress;
pub mod reach;
mod reach_topics;
pub mod replay;
mod simulate;
mod status;
mod table;
pub mod timestamp;

pub use bootstrap::bootstrap;
pub use check_config::check_config;
pub use simulate::{simulate, SimulateArgs};
pub use status::status;
