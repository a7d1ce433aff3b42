//! The operator's commands beyond `run`, each in its own file: `replay`, `dead-letters`,
//! `check-config --connect` (`reach`), and the points in time they take (`timestamp`).
//! `cli.rs` parses their arguments and calls them; the pipeline's stages never use them.

pub mod dead_letters;
pub mod reach;
pub mod replay;
pub mod timestamp;
