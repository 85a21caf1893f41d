//! Reads answered without a log slot: a holder's quorum-lease read, reads parked until this
//! replica has applied far enough, and local reads with their staleness.
use super::*;

impl ShardDriver {
    /// A holder's read (DESIGN.md §2, quorum-lease invariant 2): answered alone only while the
    /// lease is valid and every write to the key this replica accepted is applied; otherwise it
    /// waits (until `until`) for those commits; without a valid lease: `NotHolder`.
    pub(super) fn lease_read(&mut self, id: u64, command: KvCommand, until: Duration) {
        if !self.core.quorum_lease_valid(self.now) {
            return self.reply(id, Reply::NotHolder);
        }
        let key = match &command.op {
            Op::Get { key } => Some(key.as_slice()),
            _ => None,
        };
        let need = self.barrier(key).max(self.core.lease_guard().0);
        if need <= self.core.applied_index().0 {
            let result = self.read_now(&command.op);
            let applied = self.core.applied_index().0;
            return self.reply(
                id,
                Reply::Local {
                    result,
                    path: "qlease",
                    applied,
                    barrier: 0,
                    staleness_ms: 0,
                },
            );
        }
        if self.parked.len() >= self.cfg.max_parked {
            return self.reply(id, Reply::Overloaded);
        }
        self.parked.push(Parked {
            min_applied: need,
            id,
            command,
            mode: ReadMode::Lease,
            until,
        });
    }

    /// Answers parked reads whose slot is now applied.
    pub(super) fn unpark(&mut self) {
        let applied = self.core.applied_index().0;
        let parked = std::mem::take(&mut self.parked);
        for p in parked {
            if p.min_applied > applied {
                self.parked.push(p);
            } else if p.mode == ReadMode::Lease {
                // Re-checked in full: the lease must still hold when the answer is made.
                self.lease_read(p.id, p.command, p.until);
            } else {
                self.answer_local(p.id, &p.command, p.mode);
            }
        }
    }

    pub(super) fn expire_parked(&mut self) {
        let now = self.now;
        let (late, keep): (Vec<Parked>, Vec<Parked>) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|p| p.until <= now);
        self.parked = keep;
        for p in late {
            self.reply(p.id, Reply::Timeout);
        }
    }

    /// The highest accepted, unapplied slot whose batch touches `key` (0: none).
    pub(super) fn barrier(&self, key: Option<&[u8]>) -> u64 {
        let mut b = 0;
        for (slot, batch) in self.core.unapplied() {
            let touches = match key {
                None => !batch.0.is_empty(),
                Some(key) => batch
                    .0
                    .iter()
                    .any(|c| KvCommand::decode(c).is_ok_and(|c| c.touches(key))),
            };
            if touches {
                b = slot.0;
            }
        }
        b
    }

    pub(super) fn answer_local(&mut self, id: u64, cmd: &KvCommand, mode: ReadMode) {
        let result = self.with_ttl_timer(self.read_now(&cmd.op));
        let barrier = match (&cmd.op, mode) {
            (Op::Get { key }, ReadMode::Quorum) => self.barrier(Some(key)),
            (_, ReadMode::Quorum) => self.barrier(None),
            _ => 0,
        };
        let staleness_ms = self.staleness_ms();
        let path = if mode == ReadMode::Quorum {
            "quorum"
        } else {
            "local"
        };
        let applied = self.core.applied_index().0;
        self.reply(
            id,
            Reply::Local {
                result,
                path,
                applied,
                barrier,
                staleness_ms,
            },
        );
    }

    /// How stale the applied state may be, on this replica's clock padded by the drift bound
    /// (so that it bounds true elapsed time), rounded up.
    pub(super) fn staleness_ms(&self) -> u64 {
        match self.core.fresh_as_of() {
            None => u64::MAX,
            Some(t) => {
                let d = self
                    .now
                    .saturating_sub(t)
                    .mul_f64(1.0 + 2.0 * self.cfg.drift_bound);
                d.as_micros().div_ceil(1000) as u64
            }
        }
    }
}
