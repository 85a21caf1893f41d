//! The versioned key-value state machine: an ordered map with one revision counter per shard,
//! and a per-client session table that makes retried writes apply exactly once.
use super::command::{
    Compare, CompareField, CompareTarget, KeyValue, KvCommand, KvResult, LeaseInfo, Op, Outcome,
    Txn, TxnOp,
};
use super::history::Change;
use super::ttl::TtlLeases;
use imbl::{OrdMap, OrdSet};
use serde::{Deserialize, Serialize};

/// The maps are persistent (`imbl`, B-trees sharing their nodes), so a clone is O(1): the shard
/// task hands a frozen copy to a snapshot thread and goes on applying. Their serialized form is
/// that of the `BTreeMap`s they replaced (a length, then entries in key order), so snapshots
/// read across the change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvStore {
    data: OrdMap<Vec<u8>, KeyValue>,
    revision: u64,
    /// Per client: the last executed write's sequence number and result.
    sessions: OrdMap<u64, Session>,
    /// (last use, client), oldest first, for eviction.
    lru: OrdSet<(u64, u64)>,
    /// Counts applied writes; orders `lru`.
    tick: u64,
    /// The quorum-lease holders the log configured (site indices).
    lease_holders: Vec<u8>,
    /// XOR of `entry_hash` over every key: kept up to date on each change, recomputed on
    /// restore (not serialized).
    #[serde(skip)]
    data_digest: u64,
    /// Whether changes are recorded for watches (not serialized: the driver turns it on).
    #[serde(skip)]
    record: bool,
    /// Changes since the last `take_changes` (recording only).
    #[serde(skip)]
    changes: Vec<Change>,
    /// TTL leases. Serialized after the rest by `snapshot` (so that snapshots taken before
    /// leases existed still restore).
    #[serde(skip)]
    ttl: TtlLeases,
}

/// The lease of a lease put that keeps the key's current lease (etcd's `ignore_lease`).
pub const KEEP_LEASE: i64 = -1;

/// Marks the TTL-lease section that follows the store in a snapshot.
const TTL_SECTION: &[u8; 8] = b"MRDNTTL1";

/// Starts a snapshot whose key-values carry their lease (`KeyValue::lease`). A snapshot without
/// it is from before (its first 8 bytes are the key count, never this large).
const SNAPSHOT_V2: &[u8; 8] = b"MRDNSNP2";

/// FNV-1a (64-bit) over byte strings: stable across builds and platforms, unlike std's hasher.
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// Which entry hash [`KvStore::digest`] is built from (`ShardStatus.digest_version`): digests
/// of different versions never compare. 1 (reported as 0, before the field existed): byte-wise
/// FNV-1a; 2: [`entry_hash`] over 64-bit words (the byte-wise hash cost ~0.5 µs of every
/// replica's apply of a 64-byte put, a tenth of a follower's state-machine time).
pub const DIGEST_VERSION: u32 = 2;

/// `a * b` as 128 bits, its halves XORed: a full-avalanche 64-bit mixing step.
fn fold_mul(a: u64, b: u64) -> u64 {
    let p = (a as u128).wrapping_mul(b as u128);
    (p as u64) ^ ((p >> 64) as u64)
}

const MIX: u64 = 0x9e37_79b9_7f4a_7c15;

/// Mixes `bytes`, length first (so that adjacent strings cannot trade bytes), in
/// little-endian 64-bit words: the same on every platform and build.
fn mix_bytes(mut h: u64, bytes: &[u8]) -> u64 {
    h = fold_mul(h ^ bytes.len() as u64, MIX);
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let w = u64::from_le_bytes(w.try_into().expect("eight bytes"));
        h = fold_mul(h ^ w, MIX);
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        h = fold_mul(h ^ u64::from_le_bytes(last), MIX);
    }
    h
}

/// One entry's contribution to the digest: key, value and its three revision counters.
fn entry_hash(kv: &KeyValue) -> u64 {
    let mut h = mix_bytes(FNV_OFFSET, &kv.key);
    h = mix_bytes(h, &kv.value);
    for x in [kv.create_revision, kv.mod_revision, kv.version] {
        h = fold_mul(h ^ x, MIX);
    }
    // Finalize (XOR-combined hashes need well-mixed bits).
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// Exactly-once memory of one client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    seq: u64,
    result: KvResult,
    used: u64,
}

/// Clients remembered for exactly-once retries.
pub const MAX_SESSIONS: usize = 100_000;

impl KvStore {
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// A digest of the replicated key-value state (every key's value and revisions, the
    /// revision counter, the lease configuration): equal on replicas that applied the same
    /// log prefix, different — but for a 2^-64 accident — where their data differ. O(1): kept
    /// incrementally. Exactly-once session memory is not part of it.
    pub fn digest(&self) -> u64 {
        let mut h = fnv(FNV_OFFSET, &self.data_digest.to_le_bytes());
        h = fnv(h, &self.revision.to_le_bytes());
        h = fnv(h, &self.lease_holders);
        if self.ttl.leases.is_empty() {
            h
        } else {
            fnv(h, &self.ttl.digest().to_le_bytes())
        }
    }

    fn insert_kv(&mut self, kv: KeyValue) -> Option<KeyValue> {
        self.data_digest ^= entry_hash(&kv);
        let after = self.record.then(|| kv.clone());
        let old = self.data.insert(kv.key.clone(), kv);
        if let Some(o) = &old {
            self.data_digest ^= entry_hash(o);
        }
        if let Some(kv) = after {
            self.changes.push(Change {
                revision: self.revision,
                delete: false,
                kv,
                prev: old.clone(),
            });
        }
        old
    }

    fn remove_kv(&mut self, key: &[u8]) -> Option<KeyValue> {
        self.ttl.detach(key);
        let old = self.data.remove(key);
        if let Some(o) = &old {
            self.data_digest ^= entry_hash(o);
            if self.record {
                self.changes.push(Change {
                    revision: self.revision,
                    delete: true,
                    kv: KeyValue {
                        key: key.to_vec(),
                        value: Vec::new(),
                        create_revision: 0,
                        mod_revision: self.revision,
                        version: 0,
                        lease: 0,
                    },
                    prev: Some(o.clone()),
                });
            }
        }
        old
    }

    /// Records every change from now on, for `take_changes` (watches).
    pub fn record_changes(&mut self) {
        self.record = true;
    }

    /// The changes applied since the last call, in order (empty unless recording).
    pub fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }

    /// The quorum-lease holders the log configured (site indices, sorted).
    pub fn lease_holders(&self) -> &[u8] {
        &self.lease_holders
    }

    /// Executes one command. Writes apply at most once per `(client, seq)`: a retry of the
    /// last write returns the remembered result; an older sequence number returns `Stale`.
    /// Read-only commands bypass the session table: re-executing a retried read is harmless
    /// and answers with the state at its own point in the log, and readers need no identity.
    /// The table is bounded: beyond `MAX_SESSIONS` the least recently used client is forgotten
    /// (deterministically, so every replica forgets the same one).
    pub fn apply(&mut self, cmd: &KvCommand) -> KvResult {
        self.apply_answering(cmd, true)
            .expect("an answered apply returns its result")
    }

    /// `apply` for a command no request waits for (a follower's, a replay's): the same
    /// change, its result remembered for retries but not copied out.
    pub fn apply_unanswered(&mut self, cmd: &KvCommand) {
        self.apply_answering(cmd, false);
    }

    fn apply_answering(&mut self, cmd: &KvCommand, answer: bool) -> Option<KvResult> {
        if cmd.is_read_only()
            || matches!(
                cmd.op,
                Op::SetLeaseHolders { .. } | Op::Compact { .. } | Op::LeaseExpire { .. }
            )
        {
            // Configuration is idempotent: it needs no exactly-once identity either.
            let r = self.execute(&cmd.op);
            return answer.then_some(r);
        }
        if let Some(s) = self.sessions.get(&cmd.client) {
            if cmd.seq == s.seq {
                return answer.then(|| s.result.clone());
            }
            if cmd.seq < s.seq {
                return answer.then_some(KvResult {
                    revision: self.revision,
                    outcome: Outcome::Stale,
                });
            }
        }
        let result = self.execute(&cmd.op);
        let out = answer.then(|| result.clone());
        self.tick += 1;
        if let Some(old) = self.sessions.insert(
            cmd.client,
            Session {
                seq: cmd.seq,
                result,
                used: self.tick,
            },
        ) {
            self.lru.remove(&(old.used, cmd.client));
        }
        self.lru.insert((self.tick, cmd.client));
        while self.sessions.len() > MAX_SESSIONS {
            let (_, client) = self.lru.remove_min().expect("lru tracks every session");
            self.sessions.remove(&client);
        }
        out
    }

    /// Serves a read without going through the log (lease or quorum reads).
    pub fn read(&self, op: &Op) -> KvResult {
        let outcome = match op {
            Op::Get { key } => Outcome::Get {
                kv: self.data.get(key).cloned(),
            },
            Op::Range { prefix, limit } => self.range(prefix, *limit),
            Op::Scan { start, end, limit } => self.scan(start, end, *limit),
            // Without the history (the driver answers these with it): only the present.
            Op::ScanAt {
                start,
                end,
                limit,
                revision,
            } => match revision.cmp(&self.revision) {
                std::cmp::Ordering::Equal => self.scan(start, end, *limit),
                std::cmp::Ordering::Greater => Outcome::FutureRevision,
                std::cmp::Ordering::Less => Outcome::Compacted {
                    horizon: self.revision + 1,
                },
            },
            Op::LeaseInfo { id } => Outcome::Lease(self.lease_info(*id, true)),
            Op::LeaseList => Outcome::Leases {
                ids: self.ttl.leases.keys().copied().collect(),
            },
            _ => panic!("read() takes Get, Range, Scan or a lease query, got {op:?}"),
        };
        KvResult {
            revision: self.revision,
            outcome,
        }
    }

    /// Every key-value of `[start, end)` (`end` empty: unbounded), in key order.
    pub fn span_kvs(&self, start: &[u8], end: &[u8]) -> Vec<KeyValue> {
        self.span(start, end).map(|(_, v)| v.clone()).collect()
    }

    pub fn get(&self, key: &[u8]) -> Option<&KeyValue> {
        self.data.get(key)
    }

    /// The TTL lease `key` is attached to (0: none).
    pub fn lease_of(&self, key: &[u8]) -> i64 {
        self.ttl.lease_of(key)
    }

    /// Every TTL lease: (id, TTL seconds, keep-alives applied).
    pub fn ttl_leases(&self) -> impl Iterator<Item = (i64, i64, u64)> + '_ {
        self.ttl
            .leases
            .iter()
            .map(|(id, l)| (*id, l.ttl, l.refresh))
    }

    fn lease_info(&self, id: i64, with_keys: bool) -> LeaseInfo {
        let l = self.ttl.get(id);
        LeaseInfo {
            id,
            existed: l.is_some(),
            ttl: l.map_or(0, |l| l.ttl),
            remaining_ms: -1,
            keys: l
                .filter(|_| with_keys)
                .map(|l| l.keys.iter().cloned().collect())
                .unwrap_or_default(),
            refresh: l.map_or(0, |l| l.refresh),
        }
    }

    /// The lease a lease put attaches: `lease`, or the key's current one for `KEEP_LEASE`.
    fn lease_for_put(&self, key: &[u8], lease: i64) -> i64 {
        if lease == KEEP_LEASE {
            self.ttl.lease_of(key)
        } else {
            lease
        }
    }

    /// Deletes lease `id` and its keys (under one new revision if it had any).
    fn revoke(&mut self, id: i64) -> Outcome {
        let Some(l) = self.ttl.remove(id) else {
            return Outcome::Lease(self.lease_info(id, false));
        };
        let live: Vec<Vec<u8>> = l
            .keys
            .into_iter()
            .filter(|k| self.data.contains_key(k))
            .collect();
        if !live.is_empty() {
            self.revision += 1;
        }
        for k in &live {
            self.remove_kv(k);
        }
        Outcome::Lease(LeaseInfo {
            id,
            existed: true,
            ttl: l.ttl,
            remaining_ms: -1,
            keys: live,
            refresh: l.refresh,
        })
    }

    fn execute(&mut self, op: &Op) -> KvResult {
        let outcome = match op {
            Op::Put { key, value } => {
                self.revision += 1;
                Outcome::Put {
                    prev: self.put(key, value, 0),
                }
            }
            Op::Delete { key } => {
                if self.data.contains_key(key) {
                    self.revision += 1;
                }
                Outcome::Delete {
                    deleted: self.remove_kv(key),
                }
            }
            Op::Get { .. } | Op::Range { .. } | Op::Scan { .. } | Op::ScanAt { .. } => {
                return self.read(op)
            }
            Op::DeleteRange { start, end } => {
                let keys: Vec<Vec<u8>> = self.span(start, end).map(|(k, _)| k.clone()).collect();
                if !keys.is_empty() {
                    self.revision += 1;
                }
                let deleted = keys.iter().filter_map(|k| self.remove_kv(k)).collect();
                Outcome::DeletedRange { deleted }
            }
            Op::Txn(t) => self.txn(t),
            Op::Compact { .. } => Outcome::Configured,
            Op::LeaseGrant { id, ttl } => {
                let fresh = self.ttl.grant(*id, *ttl);
                let mut info = self.lease_info(*id, false);
                info.existed = !fresh;
                Outcome::Lease(info)
            }
            Op::LeaseKeepAlive { id } => {
                self.ttl.keep_alive(*id);
                Outcome::Lease(self.lease_info(*id, false))
            }
            Op::LeaseRevoke { id } => self.revoke(*id),
            Op::LeaseExpire { id, refresh } => {
                if self.ttl.get(*id).is_some_and(|l| l.refresh == *refresh) {
                    self.revoke(*id)
                } else {
                    Outcome::Lease(self.lease_info(*id, false))
                }
            }
            Op::LeasePut { key, value, lease } => {
                if *lease != KEEP_LEASE && self.ttl.get(*lease).is_none() {
                    Outcome::Lease(self.lease_info(*lease, false))
                } else {
                    self.revision += 1;
                    let lease = self.lease_for_put(key, *lease);
                    let prev = self.put(key, value, lease);
                    Outcome::Put { prev }
                }
            }
            Op::LeaseInfo { .. } | Op::LeaseList => return self.read(op),
            Op::SetLeaseHolders { sites } => {
                let mut s = sites.clone();
                s.sort_unstable();
                s.dedup();
                self.lease_holders = s;
                Outcome::Configured
            }
        };
        KvResult {
            revision: self.revision,
            outcome,
        }
    }

    /// Puts `key`, attached to TTL lease `lease` (an existing one) or, with 0, to none (as an
    /// etcd put without a lease).
    fn put(&mut self, key: &[u8], value: &[u8], lease: i64) -> Option<KeyValue> {
        self.ttl.attach(key, lease);
        let lease = self.ttl.lease_of(key);
        let rev = self.revision;
        // An existing key is updated in place: one walk down the tree, the old entry moved
        // out (not cloned) as the previous value.
        if let Some(cur) = self.data.get_mut(key) {
            let kv = KeyValue {
                key: key.to_vec(),
                value: value.to_vec(),
                create_revision: cur.create_revision,
                mod_revision: rev,
                version: cur.version + 1,
                lease,
            };
            let old = std::mem::replace(cur, kv);
            self.data_digest ^= entry_hash(cur) ^ entry_hash(&old);
            if self.record {
                self.changes.push(Change {
                    revision: rev,
                    delete: false,
                    kv: cur.clone(),
                    prev: Some(old.clone()),
                });
            }
            return Some(old);
        }
        self.insert_kv(KeyValue {
            key: key.to_vec(),
            value: value.to_vec(),
            create_revision: rev,
            mod_revision: rev,
            version: 1,
            lease,
        });
        None
    }

    fn range(&self, prefix: &[u8], limit: usize) -> Outcome {
        let mut kvs: Vec<KeyValue> = Vec::new();
        let mut more = false;
        for (k, v) in self.data.range(prefix.to_vec()..) {
            if !k.starts_with(prefix) {
                break;
            }
            if limit > 0 && kvs.len() == limit {
                more = true;
                break;
            }
            kvs.push(v.clone());
        }
        Outcome::Range { kvs, more }
    }

    /// The entries in `[start, end)` (`end` empty: unbounded), in key order.
    fn span<'a>(
        &'a self,
        start: &[u8],
        end: &'a [u8],
    ) -> impl Iterator<Item = (&'a Vec<u8>, &'a KeyValue)> + 'a {
        self.data
            .range(start.to_vec()..)
            .take_while(move |(k, _)| end.is_empty() || k.as_slice() < end)
    }

    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Outcome {
        let mut kvs = Vec::new();
        let mut count = 0u64;
        for (_, v) in self.span(start, end) {
            count += 1;
            if limit == 0 || kvs.len() < limit {
                kvs.push(v.clone());
            }
        }
        let more = (kvs.len() as u64) < count;
        Outcome::Scan { kvs, more, count }
    }

    fn holds(&self, c: &Compare) -> bool {
        let kv = self.data.get(&c.key);
        match &c.target {
            CompareTarget::Ordered(field, order) => {
                let o = match (field, kv) {
                    (CompareField::Value(_), None) => return false,
                    (CompareField::Value(v), Some(kv)) => kv.value.as_slice().cmp(v.as_slice()),
                    (CompareField::Version(n), _) => kv.map_or(0, |kv| kv.version).cmp(n),
                    (CompareField::CreateRevision(n), _) => {
                        kv.map_or(0, |kv| kv.create_revision).cmp(n)
                    }
                    (CompareField::ModRevision(n), _) => kv.map_or(0, |kv| kv.mod_revision).cmp(n),
                    (CompareField::Lease(n), _) => (self.ttl.lease_of(&c.key) as u64).cmp(n),
                };
                order.holds(o)
            }
            CompareTarget::Value(v) => kv.map(|kv| &kv.value) == v.as_ref(),
            CompareTarget::Version(v) => kv.map_or(0, |kv| kv.version) == *v,
            CompareTarget::ModRevision(r) => kv.map_or(0, |kv| kv.mod_revision) == *r,
        }
    }

    /// All of a transaction's writes share one new revision (etcd semantics). Every compare
    /// on the path taken, nested ones included, is evaluated first, against the state before
    /// the transaction; then the path's operations run in order.
    fn txn(&mut self, t: &Txn) -> Outcome {
        let mut branches = Vec::new();
        let mut ops = Vec::new();
        self.path(t, &mut branches, &mut ops);
        let succeeded = branches[0];
        // A put to a lease that does not exist fails the whole transaction (etcd).
        for op in &ops {
            if let TxnOp::PutLease { lease, .. } = op {
                if *lease != KEEP_LEASE && self.ttl.get(*lease).is_none() {
                    return Outcome::Lease(self.lease_info(*lease, false));
                }
            }
        }
        let writes = ops.iter().any(|o| !o.is_read());
        let with_ranges = t
            .all_ops()
            .0
            .iter()
            .any(|o| matches!(o, TxnOp::Range { .. } | TxnOp::DeleteRange { .. }));
        let mut ranges = Vec::new();
        if writes {
            self.revision += 1;
        }
        let mut gets = Vec::new();
        for op in ops {
            match op {
                TxnOp::Put { key, value } => {
                    self.put(key, value, 0);
                }
                TxnOp::Append { key, value } => {
                    let mut v = self
                        .data
                        .get(key)
                        .map(|kv| kv.value.clone())
                        .unwrap_or_default();
                    v.extend_from_slice(value);
                    self.put(key, &v, 0);
                }
                TxnOp::PutLease { key, value, lease } => {
                    let lease = self.lease_for_put(key, *lease);
                    self.put(key, value, lease);
                }
                TxnOp::Delete { key } => {
                    self.remove_kv(key);
                }
                TxnOp::DeleteRange { start, end } => {
                    let keys: Vec<Vec<u8>> =
                        self.span(start, end).map(|(k, _)| k.clone()).collect();
                    for k in keys {
                        self.remove_kv(&k);
                    }
                }
                TxnOp::Get { key } => gets.push(self.data.get(key).cloned()),
                TxnOp::Range { start, end } => {
                    ranges.push(self.span(start, end).map(|(_, v)| v.clone()).collect())
                }
                TxnOp::Txn(_) => unreachable!("path() flattens nested transactions"),
            }
        }
        if t.is_nested() {
            return Outcome::TxnTree {
                branches,
                gets,
                ranges,
            };
        }
        if with_ranges {
            return Outcome::TxnRanges {
                succeeded,
                gets,
                ranges,
            };
        }
        Outcome::Txn { succeeded, gets }
    }

    /// The branch `t` takes and, depth first, that of every nested transaction on its path
    /// (all against the present state), with the path's operations in the order they run.
    fn path<'a>(&self, t: &'a Txn, branches: &mut Vec<bool>, ops: &mut Vec<&'a TxnOp>) {
        let succeeded = t.compares.iter().all(|c| self.holds(c));
        branches.push(succeeded);
        for op in if succeeded { &t.success } else { &t.failure } {
            match op {
                TxnOp::Txn(inner) => self.path(inner, branches, ops),
                op => ops.push(op),
            }
        }
    }

    /// The version mark, the store, then (if any lease exists) a marked TTL-lease section.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut out = SNAPSHOT_V2.to_vec();
        bincode::serialize_into(&mut out, self).expect("state serializes");
        if !self.ttl.leases.is_empty() {
            out.extend_from_slice(TTL_SECTION);
            bincode::serialize_into(&mut out, &self.ttl).expect("leases serialize");
        }
        out
    }

    pub fn restore(bytes: &[u8]) -> Result<KvStore, crate::Error> {
        let decode = |e: bincode::Error| crate::Error::Decode(e.to_string());
        let (mut rest, before_kv_leases) = match bytes.strip_prefix(SNAPSHOT_V2.as_slice()) {
            Some(rest) => (rest, false),
            None => (bytes, true),
        };
        let mut s: KvStore = if before_kv_leases {
            super::command::decoding_before_kv_leases(|| bincode::deserialize_from(&mut rest))
        } else {
            bincode::deserialize_from(&mut rest)
        }
        .map_err(decode)?;
        if !rest.is_empty() {
            let Some(section) = rest.strip_prefix(TTL_SECTION.as_slice()) else {
                return Err(crate::Error::Decode(format!(
                    "{} unexpected bytes after the snapshot's store",
                    rest.len()
                )));
            };
            let mut section = section;
            s.ttl = bincode::deserialize_from(&mut section).map_err(decode)?;
            if !section.is_empty() {
                return Err(crate::Error::Decode(format!(
                    "{} unexpected bytes after the snapshot's leases",
                    section.len()
                )));
            }
        }
        if before_kv_leases {
            for (key, &lease) in &s.ttl.key_lease {
                if let Some(kv) = s.data.get_mut(key) {
                    kv.lease = lease;
                }
            }
        }
        s.data_digest = s.data.values().fold(0, |d, kv| d ^ entry_hash(kv));
        Ok(s)
    }
}

#[cfg(test)]
mod digest_tests {
    use super::*;

    fn kv(key: &[u8], value: &[u8], revs: (u64, u64, u64)) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            value: value.to_vec(),
            create_revision: revs.0,
            mod_revision: revs.1,
            version: revs.2,
            lease: 0,
        }
    }

    /// The entry hash is part of what replicas compare across builds: a change to it must come
    /// with a new `DIGEST_VERSION` (and this pinned value with it).
    #[test]
    fn the_entry_hash_is_pinned_to_its_digest_version() {
        assert_eq!(DIGEST_VERSION, 2);
        let h = entry_hash(&kv(b"bench/000042", &[b'v'; 64], (3, 9, 4)));
        assert_eq!(h, 0xb680_8a87_7cc9_f250, "got {h:#018x}");
    }

    #[test]
    fn the_entry_hash_separates_what_a_digest_must() {
        let base = kv(b"ab", b"cd", (1, 2, 3));
        let others = [
            kv(b"a", b"bcd", (1, 2, 3)), // a byte moved across the key/value boundary
            kv(b"ab", b"cd\0", (1, 2, 3)), // a trailing zero (the last word's padding)
            kv(b"ab\0", b"cd", (1, 2, 3)), // likewise in the key
            kv(b"ab", b"ce", (1, 2, 3)), // one bit of the value
            kv(b"ab", b"cd", (1, 2, 4)), // each counter
            kv(b"ab", b"cd", (1, 3, 3)),
            kv(b"ab", b"cd", (2, 2, 3)),
            kv(b"ab", b"cd", (2, 1, 3)),      // counters swapped
            kv(b"abcdefgh", b"", (1, 2, 3)),  // a whole word
            kv(b"abcdefghi", b"", (1, 2, 3)), // a word and one byte
        ];
        let mut seen = std::collections::HashSet::new();
        assert!(seen.insert(entry_hash(&base)));
        for o in &others {
            assert!(seen.insert(entry_hash(o)), "collision for {o:?}");
        }
        // Well mixed: single-bit changes of the value flip about half the hash's bits.
        let mut flips = 0;
        for bit in 0..64 {
            let mut v = [0u8; 8];
            v[bit / 8] = 1 << (bit % 8);
            let d =
                entry_hash(&kv(b"k", &v, (1, 1, 1))) ^ entry_hash(&kv(b"k", &[0; 8], (1, 1, 1)));
            flips += d.count_ones();
        }
        let mean = flips as f64 / 64.0;
        assert!((24.0..40.0).contains(&mean), "mean bits flipped {mean}");
    }
}
