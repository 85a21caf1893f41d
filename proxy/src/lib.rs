//! The regional proxy (DESIGN.md §4). Lands with the proxy issue; nothing here yet.
#![forbid(unsafe_code)]
