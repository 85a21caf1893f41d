//! Simulated clients: each issues operations one at a time against the replica it believes
//! leads, retrying (same sequence number) on redirects and timeouts until it gets an answer.
use meridian_core::Rng;
use meridian_replica::kv::{Compare, CompareTarget, KvCommand, KvResult, Op, Txn, TxnOp};

#[derive(Clone, Debug)]
pub struct ClientRequest {
    pub client: usize,
    pub cmd: KvCommand,
}

#[derive(Clone, Debug)]
pub enum ClientReply {
    Ok {
        seq: u64,
        result: KvResult,
        path: &'static str,
    },
    NotLeader {
        seq: u64,
        hint: Option<usize>,
    },
}

#[derive(Clone, Debug)]
pub enum ClientOp {
    Put {
        key: String,
        value: String,
    },
    Get {
        key: String,
    },
    Delete {
        key: String,
    },
    Cas {
        key: String,
        expect: Option<String>,
        value: String,
    },
}

impl ClientOp {
    pub fn key(&self) -> &str {
        match self {
            ClientOp::Put { key, .. }
            | ClientOp::Get { key }
            | ClientOp::Delete { key }
            | ClientOp::Cas { key, .. } => key,
        }
    }
    pub fn to_op(&self) -> Op {
        match self.clone() {
            ClientOp::Put { key, value } => Op::Put {
                key: key.into_bytes(),
                value: value.into_bytes(),
            },
            ClientOp::Get { key } => Op::Get {
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
        }
    }
}

pub struct Pending {
    pub seq: u64,
    pub op: ClientOp,
    pub invoke_ns: u64,
    pub attempt: u32,
}

pub struct SimClient {
    pub region: usize,
    pub target: usize,
    pub seq: u64,
    pub remaining: usize,
    pub current: Option<Pending>,
    /// The last value this client saw per key (to make compare-and-set succeed sometimes).
    pub seen: std::collections::BTreeMap<String, Option<String>>,
}

pub const CLIENT_TIMEOUT_NS: u64 = 2_000_000_000;

impl SimClient {
    /// The next operation: 40 % get, 35 % put, 10 % delete, 15 % compare-and-set. Values are
    /// unique so that the checker can tell writes apart.
    pub fn next_op(&mut self, id: usize, keys: usize, rng: &mut Rng) -> ClientOp {
        let key = format!("k{}", rng.below(keys as u64));
        let value = format!("c{id}s{}", self.seq);
        match rng.below(100) {
            0..=39 => ClientOp::Get { key },
            40..=74 => ClientOp::Put { key, value },
            75..=84 => ClientOp::Delete { key },
            _ => {
                let expect = self.seen.get(&key).cloned().flatten();
                ClientOp::Cas { key, expect, value }
            }
        }
    }
}
