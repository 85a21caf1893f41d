//! The commands the KV state machine executes and the results it returns. Encoded with bincode
//! inside the core's opaque `Command` bytes.
use serde::{Deserialize, Serialize};

pub type Key = Vec<u8>;
pub type Value = Vec<u8>;

/// One client command with its exactly-once identity: a client never reuses `(client, seq)` for a
/// different command, and retries carry the same pair.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvCommand {
    pub client: u64,
    pub seq: u64,
    pub op: Op,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Put {
        #[serde(with = "super::bytes_field")]
        key: Key,
        #[serde(with = "super::bytes_field")]
        value: Value,
    },
    Delete {
        #[serde(with = "super::bytes_field")]
        key: Key,
    },
    Get {
        #[serde(with = "super::bytes_field")]
        key: Key,
    },
    Range {
        prefix: Key,
        limit: usize,
    },
    Txn(Txn),
    /// Shard configuration: the sites (indices) that hold quorum read leases. Appended last so
    /// earlier encodings stay valid.
    SetLeaseHolders {
        sites: Vec<u8>,
    },
    /// The keys in `[start, end)` (`end` empty: every key from `start`), at most `limit` of
    /// them (0: all), with how many the range holds (etcd's Range). Appended after the
    /// earlier operations so their encodings stay valid.
    Scan {
        start: Key,
        end: Key,
        limit: usize,
    },
    /// Deletes every key in `[start, end)` (`end` empty: every key from `start`) under one new
    /// revision (etcd's DeleteRange).
    DeleteRange {
        start: Key,
        end: Key,
    },
    /// Forget watch history below `revision` (etcd's Compact). Changes no key and no
    /// revision: every replica trims its history at the same point in the log.
    Compact {
        revision: u64,
    },
    /// Creates TTL lease `id` (etcd's LeaseGrant) of `ttl` seconds. Expiry is decided through
    /// the log (`LeaseExpire`), from each replica's own timer, restarted at every apply of the
    /// grant or a keep-alive.
    LeaseGrant {
        id: i64,
        ttl: i64,
    },
    /// Deletes the lease and every key attached to it (one new revision).
    LeaseRevoke {
        id: i64,
    },
    /// Restarts the lease's timer at every replica (etcd's keep-alive).
    LeaseKeepAlive {
        id: i64,
    },
    /// The leader's timer ran out: revoke, unless a keep-alive applied since (its count is
    /// no longer `refresh`). Proposed by the leader only.
    LeaseExpire {
        id: i64,
        refresh: u64,
    },
    /// A put that attaches the key to lease `lease` (which must exist; `KEEP_LEASE`: the
    /// key's current lease, etcd's `ignore_lease`).
    LeasePut {
        key: Key,
        value: Value,
        lease: i64,
    },
    /// The lease's TTL, remaining time (at the replica that answers) and keys (read-only).
    LeaseInfo {
        id: i64,
    },
    /// Every lease id (read-only).
    LeaseList,
    /// The keys of `[start, end)` as they were at `revision` (etcd's Range with a revision):
    /// answered from the watch history (`History::at`) as `Outcome::Scan`, or
    /// `Outcome::Compacted` / `Outcome::FutureRevision` (read-only).
    ScanAt {
        start: Key,
        end: Key,
        limit: usize,
        revision: u64,
    },
}

/// Whether `key` lies in `[start, end)` (`end` empty: unbounded above).
pub fn in_span(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    key >= start && (end.is_empty() || key < end)
}

/// If every compare holds, run `success`, else `failure` (etcd v3 semantics).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOp {
    Put {
        key: Key,
        value: Value,
    },
    Delete {
        key: Key,
    },
    Get {
        key: Key,
    },
    /// Appends `value` to the key's current value (an absent key starts empty): not
    /// idempotent, so a double apply or a lost update shows in the list-append workload.
    Append {
        key: Key,
        value: Value,
    },
    /// A put attaching the key to an existing TTL lease (the transaction fails whole, changing
    /// nothing, if the lease does not exist).
    PutLease {
        key: Key,
        value: Value,
        lease: i64,
    },
    /// Every key in `[start, end)` (`end` empty: unbounded), answered in `TxnRanges`.
    Range {
        start: Key,
        end: Key,
    },
    /// Deletes every key in `[start, end)` (`end` empty: unbounded). Its answer is a `Range`
    /// of the same span put in front of it.
    DeleteRange {
        start: Key,
        end: Key,
    },
    /// A nested transaction (etcd's `RequestOp.request_txn`): its compares are evaluated with
    /// every other compare of the request, against the state before any of its operations
    /// (etcd's semantics); the request's outcome is then `TxnTree`.
    Txn(Txn),
}

impl Txn {
    /// Every operation of either branch, at any depth (nested transactions themselves left
    /// out), and every compare at any depth.
    pub fn all_ops(&self) -> (Vec<&TxnOp>, Vec<&Compare>) {
        fn walk<'a>(t: &'a Txn, ops: &mut Vec<&'a TxnOp>, cmps: &mut Vec<&'a Compare>) {
            cmps.extend(&t.compares);
            for o in t.success.iter().chain(&t.failure) {
                match o {
                    TxnOp::Txn(inner) => walk(inner, ops, cmps),
                    o => ops.push(o),
                }
            }
        }
        let (mut ops, mut cmps) = (Vec::new(), Vec::new());
        walk(self, &mut ops, &mut cmps);
        (ops, cmps)
    }

    /// Whether a transaction is nested anywhere in it.
    pub fn is_nested(&self) -> bool {
        self.success
            .iter()
            .chain(&self.failure)
            .any(|o| matches!(o, TxnOp::Txn(_)))
    }
}

impl TxnOp {
    /// Whether the operation only reads.
    pub fn is_read(&self) -> bool {
        matches!(self, TxnOp::Get { .. } | TxnOp::Range { .. })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    pub key: Key,
    pub target: CompareTarget,
}

/// What to compare the key's current state with. An absent key has value `None`, version 0 and
/// mod revision 0.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    Value(Option<Value>),
    Version(u64),
    ModRevision(u64),
    /// etcd's comparisons: a field of the key's current state against an operand. On an
    /// absent key a value comparison fails; the numbers are 0 (etcd semantics). Appended last
    /// so earlier encodings stay valid.
    Ordered(CompareField, Order),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareField {
    Version(u64),
    CreateRevision(u64),
    ModRevision(u64),
    Value(Value),
    /// The id of the key's TTL lease (0: none).
    Lease(u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Order {
    Equal,
    Greater,
    Less,
    NotEqual,
}

impl Order {
    pub fn holds(self, o: std::cmp::Ordering) -> bool {
        match self {
            Order::Equal => o.is_eq(),
            Order::Greater => o.is_gt(),
            Order::Less => o.is_lt(),
            Order::NotEqual => o.is_ne(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    #[serde(with = "super::bytes_field")]
    pub key: Key,
    #[serde(with = "super::bytes_field")]
    pub value: Value,
    pub create_revision: u64,
    pub mod_revision: u64,
    /// Number of puts since creation (1 after the first put).
    pub version: u64,
    /// The TTL lease the key is attached to (0: none), etcd's `KeyValue.lease`. Absent from
    /// snapshots taken before keys carried it (`decoding_before_kv_leases`).
    #[serde(deserialize_with = "lease_field")]
    pub lease: i64,
}

thread_local! {
    /// Set while a snapshot from before `KeyValue::lease` is decoded.
    static BEFORE_KV_LEASES: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// `KeyValue::lease`: read from the bytes, except in a snapshot from before it existed (there
/// it takes no bytes and is 0; the restore fills it in from the TTL-lease section).
fn lease_field<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    if BEFORE_KV_LEASES.with(|b| b.get()) {
        Ok(0)
    } else {
        i64::deserialize(d)
    }
}

/// Runs `f` (a bincode decode) reading key-values in the layout before `KeyValue::lease`.
pub(crate) fn decoding_before_kv_leases<T>(f: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            BEFORE_KV_LEASES.with(|b| b.set(false));
        }
    }
    BEFORE_KV_LEASES.with(|b| b.set(true));
    let _reset = Reset;
    f()
}

/// Every reply carries the shard's revision after the command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvResult {
    pub revision: u64,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Put {
        prev: Option<KeyValue>,
    },
    Delete {
        deleted: Option<KeyValue>,
    },
    Get {
        kv: Option<KeyValue>,
    },
    Range {
        kvs: Vec<KeyValue>,
        more: bool,
    },
    Txn {
        succeeded: bool,
        gets: Vec<Option<KeyValue>>,
    },
    /// The client already moved past this sequence number: the command was not executed.
    Stale,
    /// A configuration command took effect.
    Configured,
    /// A scan: the keys (at most its limit), whether more remain, how many the range holds.
    Scan {
        kvs: Vec<KeyValue>,
        more: bool,
        count: u64,
    },
    /// A range delete: the keys it removed, as they were.
    DeletedRange {
        deleted: Vec<KeyValue>,
    },
    /// A TTL lease operation's answer.
    Lease(LeaseInfo),
    /// Every lease id, ascending.
    Leases {
        ids: Vec<i64>,
    },
    /// A transaction with range reads: as `Txn`, and each `TxnOp::Range`'s keys in order.
    TxnRanges {
        succeeded: bool,
        gets: Vec<Option<KeyValue>>,
        ranges: Vec<Vec<KeyValue>>,
    },
    /// `Op::ScanAt` below what the answering replica's history keeps: the lowest revision it
    /// can read at is `horizon - 1`.
    Compacted {
        horizon: u64,
    },
    /// `Op::ScanAt` above the answering replica's revision.
    FutureRevision,
    /// A transaction with nested transactions: which branch each took — the request's own
    /// first, then every nested transaction on the path taken, in the order its operations
    /// ran — and the answers of `Get`s and `Range`s in that order (as `TxnRanges`).
    TxnTree {
        branches: Vec<bool>,
        gets: Vec<Option<KeyValue>>,
        ranges: Vec<Vec<KeyValue>>,
    },
}

/// A TTL lease as an operation found it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    pub id: i64,
    /// Whether the lease existed before the operation (a grant of a taken id changes nothing;
    /// every other operation on a missing lease is etcd's "requested lease not found").
    pub existed: bool,
    /// Granted TTL, seconds.
    pub ttl: i64,
    /// Milliseconds left on the answering replica's timer (-1: not known there).
    pub remaining_ms: i64,
    /// The keys attached (for `LeaseInfo`), or those a revoke or an expiry deleted.
    pub keys: Vec<Key>,
    /// Keep-alives applied (orders `LeaseExpire` against them).
    pub refresh: u64,
}

/// A command as it travels to the log: its encoding, made once (by the proxy, checked by the
/// replica's client service) and carried as bytes into the log, the WAL, the peers and the
/// state machine, with the one fact the leader needs before it applies (whether it writes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedCommand {
    bytes: bytes::Bytes,
    read_only: bool,
}

impl EncodedCommand {
    /// Takes an encoding received from a client if it decodes (a malformed one is refused
    /// before it reaches a shard); the bytes are kept as they came.
    pub fn checked(bytes: impl Into<bytes::Bytes>) -> Result<EncodedCommand, crate::Error> {
        let bytes = bytes.into();
        let cmd = KvCommand::decode(&bytes)?;
        Ok(EncodedCommand {
            read_only: cmd.is_read_only(),
            bytes,
        })
    }
    pub fn bytes(&self) -> &bytes::Bytes {
        &self.bytes
    }
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

impl From<&KvCommand> for EncodedCommand {
    fn from(cmd: &KvCommand) -> EncodedCommand {
        EncodedCommand {
            bytes: bytes::Bytes::from(cmd.encode()),
            read_only: cmd.is_read_only(),
        }
    }
}

impl From<KvCommand> for EncodedCommand {
    fn from(cmd: KvCommand) -> EncodedCommand {
        EncodedCommand::from(&cmd)
    }
}

impl KvCommand {
    pub fn encode(&self) -> Vec<u8> {
        bincode::serialize(self).expect("commands always serialize")
    }
    /// Length of `encode()`, without encoding.
    pub fn encoded_len(&self) -> usize {
        bincode::serialized_size(self).map_or(0, |n| n as usize)
    }
    pub fn decode(bytes: &[u8]) -> Result<KvCommand, crate::Error> {
        bincode::deserialize(bytes).map_err(|e| crate::Error::Decode(e.to_string()))
    }
    /// Does this command read or write `key`?
    pub fn touches(&self, key: &[u8]) -> bool {
        match &self.op {
            Op::Put { key: k, .. } | Op::Delete { key: k } | Op::Get { key: k } => k == key,
            Op::Range { prefix, .. } => key.starts_with(prefix),
            Op::Scan { start, end, .. }
            | Op::ScanAt { start, end, .. }
            | Op::DeleteRange { start, end } => in_span(key, start, end),
            Op::SetLeaseHolders { .. }
            | Op::Compact { .. }
            | Op::LeaseGrant { .. }
            | Op::LeaseKeepAlive { .. }
            | Op::LeaseInfo { .. }
            | Op::LeaseList => false,
            // A revoke or an expiry may delete any key.
            Op::LeaseRevoke { .. } | Op::LeaseExpire { .. } => true,
            Op::LeasePut { key: k, .. } => k == key,
            Op::Txn(t) => {
                let (ops, compares) = t.all_ops();
                compares.iter().any(|c| c.key == key)
                    || ops.iter().any(|o| match o {
                        TxnOp::Put { key: k, .. }
                        | TxnOp::Append { key: k, .. }
                        | TxnOp::Delete { key: k }
                        | TxnOp::PutLease { key: k, .. }
                        | TxnOp::Get { key: k } => k == key,
                        TxnOp::Range { start, end } | TxnOp::DeleteRange { start, end } => {
                            in_span(key, start, end)
                        }
                        TxnOp::Txn(_) => unreachable!("all_ops leaves nested transactions out"),
                    })
            }
        }
    }

    pub fn is_read_only(&self) -> bool {
        match &self.op {
            Op::Get { .. }
            | Op::Range { .. }
            | Op::Scan { .. }
            | Op::ScanAt { .. }
            | Op::LeaseInfo { .. }
            | Op::LeaseList => true,
            Op::Txn(t) => t.all_ops().0.iter().all(|o| o.is_read()),
            _ => false,
        }
    }
}
