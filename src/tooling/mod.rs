//! The tooling built into the binary beside the product (feature `tooling`, left out
//! of the released image): `policy-push demo` and `policy-push bench`, the load harness.
//! Both are built on the library's public API only (`policy_push::…`), as any user's
//! program would be; the library knows nothing of them. `tansu.rs`, the Tansu broker
//! launcher, is shared with the integration tests (`tests/common/broker.rs` includes
//! the file), so it uses nothing else of the crate.

pub mod bench;
pub mod demo;
pub mod tansu;
