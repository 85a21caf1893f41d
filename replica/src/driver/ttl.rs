//! TTL leases (etcd's): each replica keeps its own timer per lease, restarted whenever a grant
//! or keep-alive applies here; the leader proposes the expiry of a lease whose timer ran out.
use super::*;

impl ShardDriver {
    /// A TTL of `ttl` seconds on this replica's clock, padded by the drift bound so that it
    /// never ends before `ttl` of true time.
    pub(super) fn ttl_span(&self, ttl: i64) -> Duration {
        Duration::from_secs(ttl.max(1) as u64).mul_f64(1.0 + 2.0 * self.cfg.drift_bound)
    }

    /// After a lease operation applied: the lease's timer restarts if a grant or keep-alive
    /// applied (its keep-alive count moved), and goes with the lease.
    pub(super) fn sync_ttl_timer(&mut self, id: i64) {
        let now = self.now;
        match self.kv.ttl_leases().find(|l| l.0 == id) {
            None => {
                self.ttl_timers.remove(&id);
                self.expiry_proposed.remove(&id);
            }
            Some((_, ttl, refresh)) => {
                if self.ttl_timers.get(&id).is_none_or(|t| t.0 != refresh) {
                    let span = self.ttl_span(ttl);
                    self.ttl_timers.insert(id, (refresh, now + span));
                    self.expiry_proposed.remove(&id);
                }
            }
        }
    }

    /// A lease query's answer, with the time left on this replica's timer.
    pub(super) fn with_ttl_timer(&self, mut r: KvResult) -> KvResult {
        if let crate::kv::Outcome::Lease(info) = &mut r.outcome {
            if let Some((_, deadline)) = self.ttl_timers.get(&info.id).filter(|_| info.existed) {
                info.remaining_ms = deadline.saturating_sub(self.now).as_millis() as i64;
            }
        }
        r
    }

    /// The leader proposes the expiry of every lease whose timer ran out (with the keep-alive
    /// count it saw: a keep-alive that applies first cancels it).
    pub(super) fn expire_ttl_leases(&mut self) {
        if !self.core.is_leader() || self.ttl_timers.is_empty() {
            return;
        }
        let now = self.now;
        let due: Vec<(i64, u64)> = self
            .ttl_timers
            .iter()
            .filter(|(id, (_, deadline))| {
                *deadline <= now
                    && self
                        .expiry_proposed
                        .get(id)
                        .is_none_or(|t| now >= *t + Duration::from_secs(1))
            })
            .map(|(id, (refresh, _))| (*id, *refresh))
            .collect();
        if due.is_empty() {
            return;
        }
        let proposals = due
            .into_iter()
            .map(|(id, refresh)| {
                self.expiry_proposed.insert(id, now);
                tracing::debug!(lease = id, "TTL lease expired: proposing its revocation");
                Proposal {
                    token: 0,
                    command: Bytes::from(
                        KvCommand {
                            client: 0,
                            seq: 0,
                            op: Op::LeaseExpire { id, refresh },
                        }
                        .encode(),
                    ),
                    writes: true,
                }
            })
            .collect();
        self.step(Input::Propose(proposals));
    }
}
