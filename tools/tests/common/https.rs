//! The binary's HTTPS client, shared with the tests.
#![allow(dead_code)]
include!("../../src/https.rs");
