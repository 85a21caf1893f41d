//! Client histories in the format of DESIGN.md §7b (one JSON object per line).
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    Put,
    Get,
    Delete,
    Cas,
    /// Appends `value` (`,element`) to a list key; reads of that key (`get`) return the list.
    /// A key with appends is judged by the list-append checker, not as a register.
    Append,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Took effect (for cas: the compare held and the write happened).
    Ok,
    /// Definitely had no effect (for cas: the compare failed, which is an observation too).
    Fail,
    /// May or may not have taken effect (timeout, lost connection, never answered).
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryOp {
    pub process: u64,
    pub op: OpKind,
    pub key: String,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub expect: Option<String>,
    pub invoke_ns: u64,
    pub complete_ns: u64,
    pub outcome: Outcome,
    #[serde(default)]
    pub read: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// Parses a history file; the error names the line.
pub fn parse_jsonl(text: &str) -> Result<Vec<HistoryOp>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}

pub fn to_jsonl(ops: &[HistoryOp]) -> String {
    ops.iter()
        .map(|o| serde_json::to_string(o).expect("serializes") + "\n")
        .collect()
}
