//! One read as a state machine: serializable and bounded-staleness reads at the nearest replica,
//! leader reads (lease or log) with redirects and retries, and Paxos Quorum Reads with a
//! bounded rinse that falls back to the leader.
use super::{
    backoff, combine, retarget, Call, CallKind, CallResult, Decision, ReadOutcome, ServiceError,
    SiteRead, Step, READ_TIMEOUT,
};
use crate::chooser::ReadPath;
use meridian_core::Quorum;
use meridian_replica::driver::ReadMode;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Consistency {
    Linearizable,
    Serializable,
    /// Reflects every write acknowledged more than this long before the read was invoked.
    Bounded(Duration),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Auto,
    Leader,
    Quorum,
    /// A quorum-lease holder answers alone; an error when none is reachable.
    Lease,
}

/// One attempt at a leader, or one replier of a quorum read, may take this long.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// A rinse waits this long at one replica before it tries the next.
pub const RINSE_WAIT: Duration = Duration::from_millis(500);
/// A holder waits at most this long for the commit of a write to the key it accepted.
pub const LEASE_WAIT: Duration = Duration::from_secs(1);
pub const NO_LEASES: &str = "read_mode=lease: this cluster runs no quorum leases ([leases] mode = \"off\"); use auto, leader or quorum";
pub const NO_LEASE: &str = "no reachable replica holds a valid quorum lease on this key's shard; use read_mode=auto, leader or quorum";

/// Everything a read decides from, fixed when it starts.
#[derive(Clone, Debug)]
pub struct ReadPlan {
    pub consistency: Consistency,
    pub mode: Mode,
    pub quorum: Quorum,
    pub sites: usize,
    /// The proxy's current guess of the shard leader.
    pub leader: Option<usize>,
    /// What the chooser picks for `auto` now.
    pub auto_path: ReadPath,
    /// The nearest site believed to hold a valid quorum lease on the shard.
    pub holder: Option<usize>,
    /// Whether the cluster runs quorum leases at all (else `read_mode=lease` is a client error).
    pub quorum_leases: bool,
    /// Sites by increasing measured RTT.
    pub nearest: Vec<usize>,
    /// Absolute deadline on the caller's clock.
    pub deadline: Duration,
    /// The planted `pqr-ignore-barrier` bug.
    pub ignore_barrier: bool,
}

enum Stage {
    Start,
    Local {
        k: usize,
    },
    Bounded,
    Leader {
        target: usize,
        attempt: u32,
    },
    Lease {
        forced: bool,
    },
    Quorum {
        replies: Vec<(usize, SiteRead)>,
        outstanding: usize,
    },
    Rinse {
        barrier: u64,
        k: usize,
    },
    Finished,
}

pub struct ReadOp {
    plan: ReadPlan,
    stage: Stage,
    next_id: u32,
    /// Calls of the current stage; results of older calls are ignored.
    live: Vec<u32>,
}

type Steps = Vec<Step<ReadOutcome>>;

impl ReadOp {
    pub fn new(plan: ReadPlan) -> ReadOp {
        ReadOp {
            plan,
            stage: Stage::Start,
            next_id: 0,
            live: Vec::new(),
        }
    }

    pub fn start(&mut self, now: Duration) -> Steps {
        match self.plan.consistency {
            Consistency::Serializable => self.local(now, 0),
            Consistency::Bounded(_) => {
                self.stage = Stage::Bounded;
                let site = self.plan.nearest[0];
                vec![self.call(now, site, ReadMode::Local, 0, Duration::ZERO)]
            }
            Consistency::Linearizable => self.linearizable(now),
        }
    }

    fn remaining(&self, now: Duration) -> Duration {
        self.plan.deadline.saturating_sub(now)
    }

    fn call(
        &mut self,
        now: Duration,
        site: usize,
        mode: ReadMode,
        min_applied: u64,
        delay: Duration,
    ) -> Step<ReadOutcome> {
        self.next_id += 1;
        self.live.push(self.next_id);
        let left = self.remaining(now).saturating_sub(delay);
        let (wait, timeout) = if min_applied > 0 {
            let wait = left.min(RINSE_WAIT);
            (wait, left.min(wait + ATTEMPT_TIMEOUT))
        } else if mode == ReadMode::Lease {
            let wait = left.min(LEASE_WAIT);
            (wait, left.min(wait + ATTEMPT_TIMEOUT))
        } else {
            (Duration::ZERO, left.min(ATTEMPT_TIMEOUT))
        };
        Step::Call(Call {
            id: self.next_id,
            site,
            kind: CallKind::Read {
                mode,
                min_applied,
                wait,
            },
            delay,
            timeout,
        })
    }

    fn done(&mut self, r: Result<ReadOutcome, ServiceError>) -> Steps {
        self.stage = Stage::Finished;
        self.live.clear();
        vec![Step::Done(r)]
    }

    fn timeout(&mut self) -> Steps {
        self.done(Err(ServiceError::Timeout(READ_TIMEOUT)))
    }

    fn local(&mut self, now: Duration, k: usize) -> Steps {
        if k >= self.plan.nearest.len() || self.remaining(now).is_zero() {
            return self.timeout();
        }
        self.stage = Stage::Local { k };
        let site = self.plan.nearest[k];
        vec![self.call(now, site, ReadMode::Local, 0, Duration::ZERO)]
    }

    fn linearizable(&mut self, now: Duration) -> Steps {
        self.live.clear();
        let path = match self.plan.mode {
            Mode::Leader => ReadPath::Leader,
            Mode::Quorum => ReadPath::Quorum,
            Mode::Auto if self.plan.auto_path == ReadPath::Lease && self.plan.holder.is_none() => {
                ReadPath::Leader
            }
            Mode::Auto => self.plan.auto_path,
            Mode::Lease => ReadPath::Lease,
        };
        match path {
            ReadPath::Lease => {
                let Some(h) = self.plan.holder else {
                    if !self.plan.quorum_leases {
                        return self.done(Err(ServiceError::BadRequest(NO_LEASES.into())));
                    }
                    return self.done(Err(ServiceError::NoLease(NO_LEASE.into())));
                };
                self.stage = Stage::Lease {
                    forced: self.plan.mode == Mode::Lease,
                };
                vec![self.call(now, h, ReadMode::Lease, 0, Duration::ZERO)]
            }
            ReadPath::Leader => {
                let target = self.plan.leader.unwrap_or(self.plan.nearest[0]);
                self.leader(now, target, 0, Duration::ZERO)
            }
            ReadPath::Quorum => {
                let n = self.plan.sites;
                self.stage = Stage::Quorum {
                    replies: Vec::new(),
                    outstanding: n,
                };
                (0..n)
                    .map(|s| self.call(now, s, ReadMode::Quorum, 0, Duration::ZERO))
                    .collect()
            }
        }
    }

    fn leader(&mut self, now: Duration, target: usize, attempt: u32, delay: Duration) -> Steps {
        if self.remaining(now) <= delay {
            return self.timeout();
        }
        self.stage = Stage::Leader { target, attempt };
        vec![self.call(now, target, ReadMode::Leader, 0, delay)]
    }

    /// A result of call `id` from `site`.
    pub fn on_result(&mut self, now: Duration, id: u32, site: usize, r: CallResult) -> Steps {
        if !self.live.contains(&id) {
            return Vec::new();
        }
        self.live.retain(|x| *x != id);
        if let CallResult::Refused(m) = r {
            return self.done(Err(ServiceError::Refused(m)));
        }
        match std::mem::replace(&mut self.stage, Stage::Finished) {
            Stage::Start | Stage::Finished => Vec::new(),
            Stage::Local { k } => match r {
                CallResult::Read(r) => self.answer(r, "local", site),
                _ => self.local(now, k + 1),
            },
            Stage::Bounded => match (r, self.plan.consistency) {
                (CallResult::Read(r), Consistency::Bounded(b))
                    if r.staleness_ms != u64::MAX && r.staleness_ms <= b.as_millis() as u64 =>
                {
                    self.answer(r, "local", site)
                }
                _ => self.linearizable(now),
            },
            Stage::Lease { forced } => match r {
                CallResult::Read(r) => self.answer(r, "lease", site),
                _ if forced => self.done(Err(ServiceError::NoLease(NO_LEASE.into()))),
                // The holder lost its lease (or is unreachable): the leader answers.
                _ => {
                    self.plan.holder = None;
                    self.leader_fallback(now)
                }
            },
            Stage::Leader { target, attempt } => match r {
                CallResult::Read(r) => {
                    let path = if r.path == "lease" { "leader" } else { "log" };
                    self.answer(r, path, site)
                }
                CallResult::NotLeader(Some(h)) if h != target && h < self.plan.sites => {
                    self.plan.leader = Some(h);
                    self.leader(now, h, attempt + 1, Duration::ZERO)
                }
                _ => {
                    let next = retarget(self.plan.leader, target, self.plan.sites);
                    if self.plan.leader == Some(target) {
                        self.plan.leader = None;
                    }
                    self.leader(now, next, attempt + 1, backoff(attempt))
                }
            },
            Stage::Quorum {
                mut replies,
                outstanding,
            } => {
                if let CallResult::Read(r) = r {
                    replies.push((site, r));
                }
                match combine(&self.plan.quorum, &replies, self.plan.ignore_barrier) {
                    Decision::Answer(i) => {
                        let (s, r) = replies.swap_remove(i);
                        self.answer(r, "quorum", s)
                    }
                    Decision::Rinse { barrier } => self.rinse(now, barrier, 0),
                    Decision::Wait if outstanding > 1 => {
                        self.stage = Stage::Quorum {
                            replies,
                            outstanding: outstanding - 1,
                        };
                        Vec::new()
                    }
                    // No read quorum answered: the leader may still.
                    Decision::Wait => self.leader_fallback(now),
                }
            }
            Stage::Rinse { barrier, k } => match r {
                CallResult::Read(r) if r.applied >= barrier => self.answer(r, "quorum", site),
                _ => self.rinse(now, barrier, k + 1),
            },
        }
    }

    /// Rinse at the k-th nearest replica; after every replica, the leader.
    fn rinse(&mut self, now: Duration, barrier: u64, k: usize) -> Steps {
        self.live.clear();
        if k >= self.plan.nearest.len() {
            return self.leader_fallback(now);
        }
        if self.remaining(now).is_zero() {
            return self.timeout();
        }
        self.stage = Stage::Rinse { barrier, k };
        let site = self.plan.nearest[k];
        vec![self.call(now, site, ReadMode::Local, barrier, Duration::ZERO)]
    }

    fn leader_fallback(&mut self, now: Duration) -> Steps {
        self.live.clear();
        let target = self.plan.leader.unwrap_or(self.plan.nearest[0]);
        self.leader(now, target, 0, Duration::ZERO)
    }

    fn answer(&mut self, r: SiteRead, path: &'static str, site: usize) -> Steps {
        self.done(Ok(ReadOutcome {
            result: r.result,
            path,
            site,
        }))
    }

    /// The leader this read learned (from redirects), for the proxy's leader table.
    pub fn leader_guess(&self) -> Option<usize> {
        self.plan.leader
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_replica::kv::{KvResult, Outcome};

    fn plan(c: Consistency, mode: Mode) -> ReadPlan {
        ReadPlan {
            consistency: c,
            mode,
            quorum: Quorum::Majority(5),
            sites: 5,
            leader: Some(0),
            auto_path: ReadPath::Leader,
            holder: None,
            quorum_leases: true,
            nearest: vec![4, 3, 2, 1, 0],
            deadline: Duration::from_secs(5),
            ignore_barrier: false,
        }
    }

    fn read(applied: u64, barrier: u64, path: &str) -> CallResult {
        CallResult::Read(SiteRead {
            result: KvResult {
                revision: applied,
                outcome: Outcome::Get { kv: None },
            },
            path: path.into(),
            applied,
            barrier,
            staleness_ms: 10,
        })
    }

    fn call(s: &[Step<ReadOutcome>]) -> &Call {
        match &s[0] {
            Step::Call(c) => c,
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn a_quorum_read_whose_rinse_stalls_moves_on_and_falls_back_to_the_leader() {
        let mut op = ReadOp::new(plan(Consistency::Linearizable, Mode::Quorum));
        let t = Duration::ZERO;
        let calls = op.start(t);
        assert_eq!(calls.len(), 5);
        assert!(op.on_result(t, 1, 0, read(3, 0, "quorum")).is_empty());
        assert!(op.on_result(t, 2, 1, read(3, 7, "quorum")).is_empty());
        // A quorum with an orphaned barrier (7) nobody applied: rinse at the nearest, bounded.
        let s = op.on_result(t, 3, 2, read(3, 0, "quorum"));
        let c = call(&s).clone();
        assert_eq!(c.site, 4);
        assert!(
            matches!(c.kind, CallKind::Read { min_applied: 7, wait, .. } if wait == RINSE_WAIT)
        );
        // Every replica fails to reach the barrier in time: the leader answers.
        let mut id = c.id;
        for _ in 0..5 {
            let s = op.on_result(t, id, 0, CallResult::Failed);
            id = call(&s).id;
            if let CallKind::Read {
                mode: ReadMode::Leader,
                ..
            } = call(&s).kind
            {
                let done = op.on_result(t, id, 0, read(9, 0, "lease"));
                assert!(matches!(&done[0], Step::Done(Ok(o)) if o.path == "leader"));
                return;
            }
        }
        panic!("never fell back to the leader");
    }

    #[test]
    fn bounded_reads_take_the_local_answer_only_within_the_bound() {
        let mut op = ReadOp::new(plan(
            Consistency::Bounded(Duration::from_millis(5)),
            Mode::Auto,
        ));
        let s = op.start(Duration::ZERO);
        let id = call(&s).id;
        // 10 ms stale > 5 ms: a linearizable read (the leader) instead.
        let s = op.on_result(Duration::ZERO, id, 4, read(3, 0, "local"));
        assert_eq!(call(&s).site, 0);
        let mut op = ReadOp::new(plan(
            Consistency::Bounded(Duration::from_millis(50)),
            Mode::Auto,
        ));
        let s = op.start(Duration::ZERO);
        let id = call(&s).id;
        let s = op.on_result(Duration::ZERO, id, 4, read(3, 0, "local"));
        assert!(matches!(&s[0], Step::Done(Ok(o)) if o.path == "local"));
    }

    #[test]
    fn lease_reads_go_to_the_holder_and_fall_back_to_the_leader_under_auto() {
        let mut p = plan(Consistency::Linearizable, Mode::Auto);
        p.auto_path = ReadPath::Lease;
        p.holder = Some(4);
        let mut op = ReadOp::new(p.clone());
        let s = op.start(Duration::ZERO);
        assert_eq!(call(&s).site, 4);
        assert!(matches!(
            call(&s).kind,
            CallKind::Read {
                mode: ReadMode::Lease,
                ..
            }
        ));
        let s = op.on_result(Duration::ZERO, call(&s).id, 4, CallResult::NotHolder);
        assert_eq!(call(&s).site, 0, "the leader");
        // Forced: no fallback, a clear error.
        p.mode = Mode::Lease;
        let mut op = ReadOp::new(p.clone());
        let s = op.start(Duration::ZERO);
        let s = op.on_result(Duration::ZERO, call(&s).id, 4, CallResult::NotHolder);
        assert!(matches!(&s[0], Step::Done(Err(ServiceError::NoLease(_)))));
        p.holder = None;
        let s = ReadOp::new(p).start(Duration::ZERO);
        assert!(matches!(&s[0], Step::Done(Err(ServiceError::NoLease(_)))));
    }

    #[test]
    fn redirects_are_followed_and_refusals_are_not_retried() {
        let mut op = ReadOp::new(plan(Consistency::Linearizable, Mode::Leader));
        let s = op.start(Duration::ZERO);
        let s = op.on_result(
            Duration::ZERO,
            call(&s).id,
            0,
            CallResult::NotLeader(Some(2)),
        );
        assert_eq!(call(&s).site, 2);
        assert_eq!(call(&s).delay, Duration::ZERO);
        let s = op.on_result(
            Duration::ZERO,
            call(&s).id,
            2,
            CallResult::Refused("bad".into()),
        );
        assert!(matches!(&s[0], Step::Done(Err(ServiceError::Refused(_)))));
    }
}
