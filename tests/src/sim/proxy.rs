//! A simulated regional proxy: the real proxy logic of `meridian proxy` (`logic::ReadOp`,
//! `logic::WriteOp`, the batch bounds, the exactly-once identity pool, the chooser), with the
//! simulator's event queue in place of sockets and timers.
use meridian_core::Quorum;
use meridian_proxy::batcher::BATCHES_IN_FLIGHT;
use meridian_proxy::chooser::{choose, estimates_with_holder, ReadPath};
use meridian_proxy::logic::batch::{WriteQueue, MAX_BATCH_BYTES};
use meridian_proxy::logic::read_op::{Consistency, Mode};
use meridian_proxy::logic::{
    Call, CallResult, ReadOp, ReadOutcome, ReadPlan, ServiceError, Step, WriteOp,
};
use meridian_proxy::sessions::{Identity, Sessions};
use meridian_replica::kv::{KvCommand, KvResult, Op};
use meridian_topology::model::QuorumShape;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Per-request deadline at the proxy (as `meridian proxy`'s default).
pub const DEADLINE: Duration = Duration::from_secs(5);
/// Writes per batch in the simulator (small, so batches of several form under load).
const BATCH: usize = 16;
/// Identities per proxy.
const IDENTITIES: u64 = 64;

#[derive(Clone, Debug)]
pub enum Answer {
    Read(Result<ReadOutcome, ServiceError>),
    Write(Result<KvResult, ServiceError>),
}

/// What the proxy asks the world to do.
pub enum ProxyOut {
    /// Perform a call for operation `op`; reads carry their command.
    Call {
        op: u64,
        call: Call,
        read: Option<KvCommand>,
    },
    Reply {
        client: usize,
        answer: Answer,
    },
}

struct Job {
    client: usize,
    cmd: KvCommand,
    /// Held until the write's answer: then it returns to the pool (next seq).
    _identity: Identity,
}

enum OpState {
    Read {
        op: ReadOp,
        client: usize,
        cmd: KvCommand,
    },
    Write {
        op: WriteOp,
        jobs: Vec<Job>,
    },
}

pub struct SimProxy {
    pub region: usize,
    /// Measured RTT to every site (the sim uses the matrix).
    pub rtt_ms: Vec<Option<f64>>,
    pub leader: Option<usize>,
    pub lease: bool,
    quorum: Quorum,
    shape: QuorumShape,
    sessions: Arc<Sessions>,
    queue: WriteQueue<Job>,
    ops: BTreeMap<u64, OpState>,
    next_op: u64,
    pub ignore_barrier: bool,
    pub retry_new_seq: bool,
    /// The configured quorum-lease holders (the proxy tries the nearest; the replica refuses
    /// if its lease is not valid).
    /// With auto leases the sites that held a valid lease when last seen.
    pub holders: Vec<usize>,
    /// Quorum leases run in this cluster (a forced lease read is then valid to ask for).
    pub quorum_leases: bool,
}

impl SimProxy {
    pub fn new(
        index: usize,
        region: usize,
        rtt_ms: Vec<Option<f64>>,
        quorum: Quorum,
        shape: QuorumShape,
        lease: bool,
    ) -> SimProxy {
        SimProxy {
            region,
            rtt_ms,
            leader: None,
            lease,
            quorum,
            shape,
            sessions: Sessions::new((index as u64 + 1) << 32, IDENTITIES),
            queue: WriteQueue::new(BATCHES_IN_FLIGHT, BATCH, MAX_BATCH_BYTES),
            ops: BTreeMap::new(),
            next_op: 0,
            ignore_barrier: false,
            retry_new_seq: false,
            holders: Vec::new(),
            quorum_leases: false,
        }
    }

    fn nearest(&self) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.rtt_ms.len()).collect();
        idx.sort_by(|&a, &b| {
            let (x, y) = (
                self.rtt_ms[a].unwrap_or(f64::MAX),
                self.rtt_ms[b].unwrap_or(f64::MAX),
            );
            x.total_cmp(&y)
        });
        idx
    }

    pub fn read(
        &mut self,
        now: Duration,
        client: usize,
        op: Op,
        consistency: Consistency,
        mode: Mode,
    ) -> Vec<ProxyOut> {
        let nearest = self.nearest();
        let holder = nearest.iter().copied().find(|s| self.holders.contains(s));
        let auto_path = choose(&estimates_with_holder(
            &self.rtt_ms,
            self.leader,
            self.lease,
            &self.shape,
            holder,
        ))
        .unwrap_or(ReadPath::Leader);
        let plan = ReadPlan {
            consistency,
            mode,
            quorum: self.quorum.clone(),
            sites: self.rtt_ms.len(),
            leader: self.leader,
            auto_path,
            holder,
            quorum_leases: self.quorum_leases,
            nearest,
            deadline: now + DEADLINE,
            ignore_barrier: self.ignore_barrier,
        };
        let cmd = KvCommand {
            client: 0,
            seq: 0,
            op,
        };
        let mut rop = ReadOp::new(plan);
        let steps = rop.start(now);
        self.next_op += 1;
        let id = self.next_op;
        self.ops.insert(
            id,
            OpState::Read {
                op: rop,
                client,
                cmd,
            },
        );
        self.steps(id, steps.into_iter().map(lift_read).collect())
    }

    pub fn write(&mut self, now: Duration, client: usize, op: Op) -> Vec<ProxyOut> {
        let Some(identity) = self.sessions.acquire() else {
            return vec![ProxyOut::Reply {
                client,
                answer: Answer::Write(Err(ServiceError::Overloaded)),
            }];
        };
        let cmd = KvCommand {
            client: identity.client,
            seq: identity.seq,
            op,
        };
        self.queue.push(Job {
            client,
            cmd,
            _identity: identity,
        });
        self.dispatch(now)
    }

    /// Starts batches while fewer than the bound are in flight.
    fn dispatch(&mut self, now: Duration) -> Vec<ProxyOut> {
        let mut out = Vec::new();
        while let Some(jobs) = self.queue.next_batch(|j| j.cmd.encode().len()) {
            let cmds = jobs.iter().map(|j| j.cmd.clone()).collect();
            let n = self.rtt_ms.len();
            let mut wop = WriteOp::new(cmds, n, self.leader, now + DEADLINE, self.retry_new_seq);
            let steps = wop.start(now);
            self.next_op += 1;
            let id = self.next_op;
            self.ops.insert(id, OpState::Write { op: wop, jobs });
            out.extend(self.steps(id, steps.into_iter().map(lift_write).collect()));
        }
        out
    }

    /// A call's result (or its timeout, as `Failed`).
    pub fn on_result(
        &mut self,
        now: Duration,
        op: u64,
        call: u32,
        site: usize,
        r: CallResult,
    ) -> Vec<ProxyOut> {
        let steps = match self.ops.get_mut(&op) {
            None => return Vec::new(),
            Some(OpState::Read { op: rop, .. }) => {
                let s = rop.on_result(now, call, site, r);
                if let Some(l) = rop.leader_guess() {
                    self.leader = Some(l);
                }
                s.into_iter().map(lift_read).collect()
            }
            Some(OpState::Write { op: wop, .. }) => {
                let s = wop.on_result(now, call, r);
                self.leader = wop.leader_guess().or(self.leader);
                s.into_iter().map(lift_write).collect()
            }
        };
        let mut out = self.steps(op, steps);
        out.extend(self.dispatch(now));
        out
    }

    fn steps(&mut self, id: u64, steps: Vec<Step<Done>>) -> Vec<ProxyOut> {
        let mut out = Vec::new();
        for s in steps {
            match s {
                Step::Call(call) => {
                    let read = match self.ops.get(&id) {
                        Some(OpState::Read { cmd, .. }) => Some(cmd.clone()),
                        _ => None,
                    };
                    out.push(ProxyOut::Call { op: id, call, read });
                }
                Step::Done(r) => match self.ops.remove(&id) {
                    Some(OpState::Read { client, .. }) => {
                        let r = r.map(|d| match d {
                            Done::Read(o) => o,
                            Done::Write(_) => unreachable!("a read finished as a write"),
                        });
                        if let Ok(o) = &r {
                            if matches!(o.path, "leader" | "log") {
                                self.leader = Some(o.site);
                            }
                        }
                        out.push(ProxyOut::Reply {
                            client,
                            answer: Answer::Read(r),
                        });
                    }
                    Some(OpState::Write { jobs, .. }) => {
                        self.queue.finished();
                        let results = r.map(|d| match d {
                            Done::Write(v) => v,
                            Done::Read(_) => unreachable!("a write finished as a read"),
                        });
                        for (k, job) in jobs.into_iter().enumerate() {
                            let answer = match &results {
                                Ok(v) => Ok(v[k].clone()),
                                Err(e) => Err(e.clone()),
                            };
                            out.push(ProxyOut::Reply {
                                client: job.client,
                                answer: Answer::Write(answer),
                            });
                        }
                    }
                    None => {}
                },
            }
        }
        out
    }
}

/// Both operation kinds' results, so one `steps` handles them.
enum Done {
    Read(ReadOutcome),
    Write(Vec<KvResult>),
}

fn lift_read(s: Step<ReadOutcome>) -> Step<Done> {
    match s {
        Step::Call(c) => Step::Call(c),
        Step::Done(r) => Step::Done(r.map(Done::Read)),
    }
}

fn lift_write(s: Step<Vec<KvResult>>) -> Step<Done> {
    match s {
        Step::Call(c) => Step::Call(c),
        Step::Done(r) => Step::Done(r.map(Done::Write)),
    }
}
