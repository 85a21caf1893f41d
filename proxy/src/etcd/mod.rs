//! The etcd v3 edge: etcd's gRPC KV, Cluster and Maintenance services at every proxy, a third
//! thin adapter over the proxy's service layer (beside HTTP/JSON and the native gRPC API), so
//! `etcdctl` and etcd client libraries work against the nearest region. Protobufs and server
//! traits come from the `etcd-client` crate (`build-server`).
//!
//! **Revisions.** etcd has one revision per cluster; Meridian has one per shard. The edge
//! reports shard `s`'s revision `r` (of `S` shards) as `r·S + s` (0 stays 0: an absent key), so
//! a key's create and mod revisions only grow, a revision names its shard, and with one shard
//! the numbers are Meridian's own. A response header carries the largest such revision of the
//! shards the request read or wrote. Revisions of different shards are not ordered in time: a
//! comparison of a key's revision with a revision of another shard, and revision filters on a
//! range over several shards, are refused (`INVALID_ARGUMENT`) rather than answered wrongly.
//! Watch (`watch`, over the proxy's shared upstreams) and TTL leases (`lease`, expired through
//! the log) are built; a watch over several shards cannot resume from a revision (refused with
//! the reason). Not built: historical reads (`revision` ≠ 0), Auth, member changes — each
//! `UNIMPLEMENTED` with the reason.
mod cluster;
mod feed;
mod kv;
mod lease;
mod txn;
mod txn_check;
mod watch;

pub use cluster::{ClusterService, MaintenanceService};
pub use kv::KvService;
pub use lease::LeaseService;
pub use watch::WatchService;

use etcd_client::proto::PbResponseHeader;

/// The etcd version the edge reports (the API level it follows).
pub const VERSION: &str = "3.5.0";

/// A proxy in etcd's member list: its name and etcd URL.
#[derive(Clone, Debug)]
pub struct Member {
    pub name: String,
    pub url: String,
}

/// What every etcd service of one proxy shares.
#[derive(Clone)]
pub struct Edge {
    pub proxy: std::sync::Arc<crate::Proxy>,
    /// Every proxy of the cluster (etcd's members), and which one this is.
    pub members: std::sync::Arc<Vec<Member>>,
    pub me: usize,
    pub cluster_id: u64,
    /// The proxy's upstream watches (shared by every watcher of a span).
    pub watches: std::sync::Arc<crate::watch::Hub>,
}

/// A stable 64-bit id (FNV-1a) of a name: member and cluster ids.
pub fn id_of(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// Shard `shard`'s revision `rev` as an etcd revision (module docs).
pub fn encode(rev: u64, shard: u32, shards: u32) -> i64 {
    if rev == 0 {
        0
    } else {
        (rev * shards as u64 + shard as u64) as i64
    }
}

/// Shard `shard`'s first revision whose etcd revision is at least `r` (`r` > 0): where a
/// watch from `r` starts on that shard, and below which `Compact(r)` trims it.
pub fn shard_from(r: i64, shard: u32, shards: u32) -> u64 {
    let (r, s, n) = (r.max(0) as u64, shard as u64, shards as u64);
    if r <= s {
        1
    } else {
        (r - s).div_ceil(n).max(1)
    }
}

/// An etcd revision compared with a key of shard `shard`: that shard's own revision, or an
/// error when it is another shard's (or negative).
pub fn decode_for(r: i64, shard: u32, shards: u32) -> Result<u64, tonic::Status> {
    if r < 0 {
        return Err(tonic::Status::invalid_argument(format!(
            "revision {r} is negative"
        )));
    }
    if r == 0 {
        return Ok(0);
    }
    let (rev, of) = (r as u64 / shards as u64, (r as u64 % shards as u64) as u32);
    if of != shard {
        return Err(tonic::Status::invalid_argument(format!(
            "revision {r} is shard {of}'s and the key lives on shard {shard}: revisions of different shards are not ordered (Meridian keeps one revision per shard)"
        )));
    }
    Ok(rev)
}

impl Edge {
    pub fn member_id(&self) -> u64 {
        id_of(&self.members[self.me].name)
    }

    pub fn header(&self, revision: i64) -> Option<PbResponseHeader> {
        Some(PbResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id(),
            revision,
            raft_term: 0,
        })
    }

    pub fn shards(&self) -> u32 {
        self.proxy.shards
    }

    pub fn placement(&self) -> &crate::route::Placement {
        &self.proxy.placement
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_name_their_shard_and_keep_their_order() {
        for shards in [1, 4] {
            for shard in 0..shards {
                let mut last = 0;
                for rev in 0..50 {
                    let e = encode(rev, shard, shards);
                    assert!(rev == 0 || e > last, "grows with the shard's revision");
                    last = e;
                    assert_eq!(decode_for(e, shard, shards).unwrap(), rev);
                    if shards > 1 && rev > 0 {
                        assert!(decode_for(e, (shard + 1) % shards, shards).is_err());
                    }
                }
            }
        }
        assert_eq!(encode(7, 0, 1), 7, "one shard: Meridian's own revisions");
        assert!(decode_for(-1, 0, 1).is_err());
    }
}
