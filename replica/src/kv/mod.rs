//! The key-value state machine (DESIGN.md §2 "State machine").
mod bytes_field;
mod command;
pub mod history;
mod state_machine;
#[cfg(test)]
mod tests;
mod ttl;

pub use command::{
    in_span, Compare, CompareField, CompareTarget, EncodedCommand, Key, KeyValue, KvCommand,
    KvResult, LeaseInfo, Op, Order, Outcome, Txn, TxnOp, Value,
};
pub use history::{Change, History, Since};
pub use state_machine::{KvStore, DIGEST_VERSION, KEEP_LEASE, MAX_SESSIONS};
