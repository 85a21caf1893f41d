//! TTL leases of the state machine (etcd's leases): which leases exist, their TTLs, how many
//! keep-alives each has had, and which keys are attached to which lease. Replicated state: the
//! timers that decide expiry are not here (they are each replica's own, in the shard driver),
//! only the log's decisions are.
use super::command::Key;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtlLease {
    pub ttl: i64,
    pub refresh: u64,
    pub keys: BTreeSet<Key>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtlLeases {
    pub leases: BTreeMap<i64, TtlLease>,
    /// Key -> the lease it is attached to.
    pub key_lease: BTreeMap<Key, i64>,
}

impl TtlLeases {
    pub fn get(&self, id: i64) -> Option<&TtlLease> {
        self.leases.get(&id)
    }

    pub fn lease_of(&self, key: &[u8]) -> i64 {
        self.key_lease.get(key).copied().unwrap_or(0)
    }

    /// Creates the lease; false (and nothing changes) if the id is taken.
    pub fn grant(&mut self, id: i64, ttl: i64) -> bool {
        if self.leases.contains_key(&id) {
            return false;
        }
        self.leases.insert(
            id,
            TtlLease {
                ttl,
                refresh: 0,
                keys: BTreeSet::new(),
            },
        );
        true
    }

    pub fn keep_alive(&mut self, id: i64) -> Option<&TtlLease> {
        let l = self.leases.get_mut(&id)?;
        l.refresh += 1;
        Some(l)
    }

    /// Removes the lease; returns its keys (still to be deleted by the caller).
    pub fn remove(&mut self, id: i64) -> Option<TtlLease> {
        let l = self.leases.remove(&id)?;
        for k in &l.keys {
            self.key_lease.remove(k);
        }
        Some(l)
    }

    /// Attaches `key` to `lease` (0: to none), detaching it from any other.
    pub fn attach(&mut self, key: &[u8], lease: i64) {
        self.detach(key);
        if lease != 0 {
            if let Some(l) = self.leases.get_mut(&lease) {
                l.keys.insert(key.to_vec());
                self.key_lease.insert(key.to_vec(), lease);
            }
        }
    }

    /// The key was deleted (or put without a lease): it belongs to no lease now.
    pub fn detach(&mut self, key: &[u8]) {
        if let Some(old) = self.key_lease.remove(key) {
            if let Some(l) = self.leases.get_mut(&old) {
                l.keys.remove(key);
            }
        }
    }

    /// A digest of every lease (id, TTL, keep-alives, keys attached).
    pub fn digest(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut mix = |x: u64| {
            for b in x.to_le_bytes() {
                h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
            }
        };
        for (id, l) in &self.leases {
            mix(*id as u64);
            mix(l.ttl as u64);
            mix(l.refresh);
            mix(l.keys.len() as u64);
        }
        h
    }
}
