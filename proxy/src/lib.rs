//! The regional proxy (DESIGN.md §4): routing decisions as pure functions. The serving proxy
//! lands with its own issue; key-to-shard routing is shared already by the tools and tests.
#![forbid(unsafe_code)]

pub mod route;
