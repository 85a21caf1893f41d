//! The read paths (DESIGN.md §4) at the proxy: each read is a `logic::ReadOp` (leader read under
//! the leader lease or through the log, Paxos Quorum Read with its bounded rinse, serializable
//! and bounded-staleness reads) driven on the persistent site connections.
use crate::chooser::{choose, estimates_with_holder, ReadPath};
use crate::logic::{ReadOp, ReadPlan, ServiceError};
use crate::sites::{LeaderInfo, RttView, Sites};
use meridian_core::Quorum;
use meridian_replica::kv::KvCommand;
use meridian_topology::model::QuorumShape;
use std::sync::Arc;
use std::time::Duration;

pub use crate::logic::read_op::{Consistency, Mode};
pub use crate::logic::ReadOutcome;

pub struct Reader {
    /// Whether the cluster runs quorum leases (`[leases] mode`).
    pub quorum_leases: bool,
    pub sites: Arc<Sites>,
    pub quorum: Quorum,
    pub shape: QuorumShape,
}

impl Reader {
    /// The path `auto` would take for `shard` now.
    pub fn auto_path(&self, shard: u32) -> ReadPath {
        let view = self.sites.rtt_view();
        let holder = self.sites.nearest_holder_in(&view, shard);
        self.auto_path_in(&view, self.sites.leader(shard), holder)
    }

    fn auto_path_in(&self, view: &RttView, l: LeaderInfo, holder: Option<usize>) -> ReadPath {
        choose(&estimates_with_holder(
            &view.rtt,
            l.site,
            l.lease,
            &self.shape,
            holder,
        ))
        .unwrap_or(ReadPath::Leader)
    }

    pub async fn read(
        &self,
        shard: u32,
        cmd: &KvCommand,
        consistency: Consistency,
        mode: Mode,
        deadline: Duration,
    ) -> Result<ReadOutcome, ServiceError> {
        let now = self.sites.now();
        // One view of the sites for the whole plan.
        let view = self.sites.rtt_view();
        let leader = self.sites.leader(shard);
        let holder = self.sites.nearest_holder_in(&view, shard);
        let plan = ReadPlan {
            consistency,
            mode,
            quorum: self.quorum.clone(),
            sites: self.sites.sites.len(),
            leader: leader.site,
            auto_path: self.auto_path_in(&view, leader, holder),
            holder,
            quorum_leases: self.quorum_leases,
            nearest: view.nearest.clone(),
            deadline: now + deadline,
            ignore_barrier: false,
        };
        let mut op = ReadOp::new(plan);
        let first = op.start(now);
        let before = leader.site;
        let r = crate::drive::drive(&self.sites, shard, Some(cmd), first, |now, id, site, r| {
            op.on_result(now, id, site, r)
        })
        .await;
        if let Ok(o) = &r {
            if matches!(o.path, "leader" | "log") {
                self.sites.set_leader(shard, o.site);
            }
        } else if let Some(l) = op.leader_guess().filter(|l| Some(*l) != before) {
            self.sites.set_leader(shard, l);
        }
        r
    }
}
