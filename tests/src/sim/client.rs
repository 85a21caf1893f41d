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
}

impl ClientOp {
    pub fn key(&self) -> &str {
        match self {
            ClientOp::Put { key, .. }
            | ClientOp::Get { key, .. }
            | ClientOp::Delete { key }
            | ClientOp::Cas { key, .. }
            | ClientOp::Append { key, .. } => key,
        }
    }

    pub fn is_read(&self) -> bool {
        matches!(self, ClientOp::Get { .. })
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
