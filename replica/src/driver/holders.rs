//! The quorum-lease configuration as the log holds it: told to the core, proposed by a leader
//! whose log differs from the pinned holders, or chosen from measured demand (auto leases).
use super::*;

impl ShardDriver {
    /// Tells the core the lease holders the state machine holds.
    pub(super) fn sync_holders(&mut self) {
        let mut set = meridian_core::SiteSet::default();
        for s in self.kv.lease_holders() {
            set.insert(SiteId(*s));
        }
        if set != self.core.lease_holders() {
            self.step(Input::LeaseHolders(set));
        }
    }

    /// A leader whose log's lease configuration differs from the pinned one proposes it.
    pub(super) fn maybe_configure(&mut self) {
        let Some(want) = self.cfg.lease_holders.clone() else {
            return;
        };
        let mut want = want;
        want.sort_unstable();
        want.dedup();
        let recent = self
            .config_proposed
            .is_some_and(|t| self.now < t + Duration::from_secs(1));
        if !self.core.is_leader() || recent || self.kv.lease_holders() == want.as_slice() {
            return;
        }
        self.propose_holders(want);
    }

    /// Demand: followers report their reads to the leader; the leader folds them in at each
    /// interval and, with auto leases, re-evaluates the holders.
    pub(super) fn auto_leases(&mut self) {
        let Some(d) = self.demands.as_mut() else {
            return;
        };
        let auto = self.cfg.auto_leases.as_ref();
        let every = auto.map_or(self.cfg.demand_every, |a| a.every);
        if !self.core.is_leader() {
            if let (Some(report), Some(leader)) =
                (d.take_report(self.now, every), self.core.leader_hint())
            {
                self.out.push(Effect::Send {
                    to: leader,
                    msg: Message::ReadLoad {
                        milli_reads: report,
                    },
                });
            }
            return;
        }
        if !d.fold(self.now, every) {
            return;
        }
        let Some(cfg) = auto else {
            return;
        };
        let me = self.core.me().0 as usize;
        let silent_after = cfg.silent_after;
        let core = &self.core;
        let choice = d.decide(cfg, me, self.kv.lease_holders(), |s| {
            core.silent_for(SiteId(s as u8))
                .is_some_and(|t| t >= silent_after)
        });
        if let Some(c) = choice {
            tracing::info!(
                holders = ?c.holders,
                objective_ms = c.objective_ms,
                current_ms = c.current_ms,
                "auto leases: proposing a new holder set"
            );
            self.propose_holders(c.holders);
        }
    }

    /// Proposes the lease configuration `sites` (sorted, deduplicated) through the log.
    pub(super) fn propose_holders(&mut self, sites: Vec<u8>) {
        self.config_proposed = Some(self.now);
        let cmd = KvCommand {
            client: 0,
            seq: 0,
            op: Op::SetLeaseHolders { sites },
        };
        let proposal = Proposal {
            token: 0,
            command: Bytes::from(cmd.encode()),
            // Configuration changes no key: it commits without the holders (which is what
            // lets a leader remove a holder that stopped answering).
            writes: false,
        };
        self.step(Input::Propose(vec![proposal]));
    }

    pub(super) fn holders_input(&self) -> Input {
        let mut set = meridian_core::SiteSet::default();
        for s in self.kv.lease_holders() {
            set.insert(SiteId(*s));
        }
        Input::LeaseHolders(set)
    }
}
