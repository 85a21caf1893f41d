//! Simulated clients: each sits in a region and issues operations one at a time through its
//! region's proxy, with every read mode, on register keys (`k*`) and list keys (`l*`, appended
//! to by transactions) so that lost updates and double applies show.
use meridian_core::Rng;
use meridian_proxy::logic::read_op::{Consistency, Mode};
use meridian_replica::kv::{Compare, CompareTarget, Op, Txn, TxnOp};
use std::time::Duration;

#[derive(Clone, Debug, PartialEq)]
pub enum ClientOp {
    Put {
        key: String,
        value: String,
    },
    Get {
        key: String,
        consistency: Consistency,
        mode: Mode,
    },
    Delete {
        key: String,
    },
    Cas {
        key: String,
        expect: Option<String>,
        value: String,
    },
    /// Appends `,elem` to a list key.
    Append {
        key: String,
        elem: String,
    },
    /// Reads a register key as it was at a revision (`Op::ScanAt`, etcd's Range with
    /// `revision`), from the nearest replica that has applied it.
    GetAt {
        key: String,
        revision: u64,
    },
}

impl ClientOp {
    pub fn key(&self) -> &str {
        match self {
            ClientOp::Put { key, .. }
            | ClientOp::Get { key, .. }
            | ClientOp::Delete { key }
            | ClientOp::Cas { key, .. }
            | ClientOp::Append { key, .. }
            | ClientOp::GetAt { key, .. } => key,
        }
    }

    pub fn is_read(&self) -> bool {
        matches!(self, ClientOp::Get { .. } | ClientOp::GetAt { .. })
    }

    pub fn to_op(&self) -> Op {
        match self.clone() {
            ClientOp::Put { key, value } => Op::Put {
                key: key.into_bytes(),
                value: value.into_bytes(),
            },
            ClientOp::Get { key, .. } => Op::Get {
                key: key.into_bytes(),
            },
            ClientOp::GetAt { key, revision } => {
                let start = key.into_bytes();
                let mut end = start.clone();
                end.push(0);
                Op::ScanAt {
                    start,
                    end,
                    limit: 0,
                    revision,
                }
            }
            ClientOp::Delete { key } => Op::Delete {
                key: key.into_bytes(),
            },
            ClientOp::Cas { key, expect, value } => Op::Txn(Txn {
                compares: vec![Compare {
                    key: key.clone().into_bytes(),
                    target: CompareTarget::Value(expect.map(String::into_bytes)),
                }],
                success: vec![TxnOp::Put {
                    key: key.into_bytes(),
                    value: value.into_bytes(),
                }],
                failure: vec![],
            }),
            ClientOp::Append { key, elem } => Op::Txn(Txn {
                compares: vec![],
                success: vec![TxnOp::Append {
                    key: key.into_bytes(),
                    value: format!(",{elem}").into_bytes(),
                }],
                failure: vec![],
            }),
        }
    }
}

pub struct Pending {
    pub op: ClientOp,
    pub invoke_ns: u64,
}

pub struct SimClient {
    pub region: usize,
    pub proxy: usize,
    pub seq: u64,
    pub remaining: usize,
    pub current: Option<Pending>,
    /// The last value this client saw per key (to make compare-and-set succeed sometimes).
    pub seen: std::collections::BTreeMap<String, Option<String>>,
    /// The highest revision an answer told this client (reads at a revision ask near it).
    pub revision: u64,
}

/// Bounds a `bounded:B` read may ask for.
const BOUNDS_MS: [u64; 4] = [20, 100, 300, 1000];

fn read_kind(rng: &mut Rng) -> (Consistency, Mode) {
    let lin = Consistency::Linearizable;
    match rng.below(100) {
        0..=24 => (lin, Mode::Auto),
        25..=44 => (lin, Mode::Leader),
        45..=49 => (lin, Mode::Lease),
        50..=69 => (lin, Mode::Quorum),
        70..=79 => (Consistency::Serializable, Mode::Auto),
        _ => {
            let b = BOUNDS_MS[rng.below(BOUNDS_MS.len() as u64) as usize];
            (Consistency::Bounded(Duration::from_millis(b)), Mode::Auto)
        }
    }
}

impl SimClient {
    /// Every third serializable get of a register key once the client knows a revision
    /// becomes a read at a revision at most three below it. No randomness is drawn and the
    /// read travels as the get would have (a local read of the nearest replica), so every
    /// other event of a seed stays as it was.
    pub fn at_revision(&self, op: ClientOp) -> ClientOp {
        match op {
            ClientOp::Get {
                key,
                consistency: Consistency::Serializable,
                ..
            } if key.starts_with('k') && self.revision > 0 && self.seq.is_multiple_of(3) => {
                ClientOp::GetAt {
                    key,
                    revision: self.revision.saturating_sub(self.seq % 4).max(1),
                }
            }
            op => op,
        }
    }

    /// The next operation: 40 % get (every read mode), 25 % put, 8 % delete, 12 %
    /// compare-and-set on register keys, 15 % append on list keys. Values are unique so the
    /// checkers can tell writes apart.
    pub fn next_op(&mut self, id: usize, keys: usize, rng: &mut Rng) -> ClientOp {
        let key = format!("k{}", rng.below(keys as u64));
        let list = format!("l{}", rng.below(2));
        let value = format!("c{id}s{}", self.seq);
        match rng.below(100) {
            0..=39 => {
                let (consistency, mode) = read_kind(rng);
                let key = if rng.chance(0.25) { list } else { key };
                ClientOp::Get {
                    key,
                    consistency,
                    mode,
                }
            }
            40..=64 => ClientOp::Put { key, value },
            65..=72 => ClientOp::Delete { key },
            73..=84 => {
                let expect = self.seen.get(&key).cloned().flatten();
                ClientOp::Cas { key, expect, value }
            }
            _ => ClientOp::Append {
                key: list,
                elem: value,
            },
        }
    }
}
