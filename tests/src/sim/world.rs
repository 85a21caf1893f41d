//! One seeded simulated run: the event loop that ties cores, disks, the WAN and clients
//! together, injects faults, heals, and hands the results to the checkers.
use super::client::{ClientOp, ClientReply, ClientRequest, Pending, SimClient, CLIENT_TIMEOUT_NS};
use super::config::SimConfig;
use super::events::{Event, Queue};
use super::invariants::{
    acceptor, agreement::Agreement, election::ElectionSafety, lease, Findings,
};
use super::network::Network;
use super::node::SimNode;
use crate::history::{HistoryOp, OpKind, Outcome as HOutcome};
use meridian_core::{Core, CoreConfig, Input, Output, Rejection, Rng, SiteId};
use meridian_replica::kv::{KvCommand, Op, Outcome};
use meridian_topology::RttMatrix;

const TICK_NS: u64 = 10_000_000;
const MS: u64 = 1_000_000;

/// FNV-1a, for trace hashes that are stable across platforms and runs.
#[derive(Clone, Copy)]
pub struct Fnv(pub u64);
impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}
impl Fnv {
    pub fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ *b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
    pub fn u64(&mut self, x: u64) {
        self.write(&x.to_le_bytes());
    }
}

/// What one run produced.
#[derive(Debug, Clone)]
pub struct SeedReport {
    pub seed: u64,
    pub ops_submitted: usize,
    pub ops_completed: usize,
    pub linearizability_violations: u64,
    pub agreement_violations: u64,
    pub other_violations: u64,
    pub incomplete_after_heal: usize,
    pub trace_hash: u64,
    pub examples: Vec<String>,
    pub history: Vec<HistoryOp>,
    /// Propose-to-apply latency at the proposing leader, in ns, per write.
    pub commit_latency_ns: Vec<u64>,
    /// (true time, site) of every leadership change.
    pub leaders: Vec<(u64, usize)>,
}

impl SeedReport {
    pub fn violations(&self) -> u64 {
        self.linearizability_violations + self.other_violations
    }
    pub fn failed(&self) -> bool {
        self.violations() + self.agreement_violations > 0 || self.incomplete_after_heal > 0
    }
}

pub struct World {
    cfg: SimConfig,
    seed: u64,
    rng: Rng,
    now: u64,
    q: Queue,
    net: Network,
    nodes: Vec<SimNode>,
    clients: Vec<SimClient>,
    history: Vec<HistoryOp>,
    findings: Findings,
    agreement: Agreement,
    election: ElectionSafety,
    trace: Fnv,
    next_read: u64,
    heal_at: u64,
    commit_latency: Vec<u64>,
    leaders: Vec<(u64, usize)>,
    last_leader: Option<usize>,
}

impl World {
    pub fn new(cfg: SimConfig, matrix: &RttMatrix, seed: u64) -> World {
        let mut rng = Rng::new(seed);
        let n = cfg.sites();
        let region_idx: Vec<usize> = cfg
            .regions
            .iter()
            .map(|r| matrix.index(r).expect("sim regions are in the matrix"))
            .collect();
        let nodes = region_idx
            .iter()
            .enumerate()
            .map(|(i, &r)| {
                let offset = rng.below(1_000_000_000) + 1_000_000_000;
                // Within the bound, any two rates differ by less than ε. Beyond it (test-only),
                // the preferred leader's clock runs at a third of the others' speed.
                let rate = if cfg.drift_beyond_bound {
                    if i == 0 {
                        0.35
                    } else {
                        1.0 + 0.5 * rng.unit()
                    }
                } else if cfg.faults.drift {
                    1.0 + (rng.unit() - 0.5) * 0.9 * cfg.drift_bound
                } else {
                    1.0
                };
                SimNode::new(r, offset, rate)
            })
            .collect();
        let clients = (0..cfg.clients)
            .map(|c| SimClient {
                region: region_idx[c % n],
                target: c % n,
                seq: 0,
                remaining: cfg.ops / cfg.clients + usize::from(c < cfg.ops % cfg.clients),
                current: None,
                seen: Default::default(),
            })
            .collect();
        let heal_at = cfg.fault_phase.as_nanos() as u64;
        let net = Network::new(matrix, n);
        World {
            cfg,
            seed,
            rng,
            now: 0,
            q: Queue::default(),
            net,
            nodes,
            clients,
            history: Vec::new(),
            findings: Findings::default(),
            agreement: Agreement::default(),
            election: ElectionSafety::default(),
            trace: Fnv::default(),
            next_read: 0,
            heal_at,
            commit_latency: Vec::new(),
            leaders: Vec::new(),
            last_leader: None,
        }
    }

    fn core_config(&self, site: usize) -> CoreConfig {
        let mut c = CoreConfig::wan(SiteId(site as u8), self.cfg.quorum.clone(), self.seed);
        c.preferred_leader = self.cfg.preferred_leader;
        c.planted_bug = self.cfg.planted_bug;
        c.drift_bound = self.cfg.drift_bound;
        c.log_retain = 16;
        if !self.cfg.lease {
            c.lease = None;
        }
        c
    }

    /// Runs to completion and checks everything.
    pub fn run(mut self) -> SeedReport {
        self.schedule_start();
        let end = self.heal_at + self.cfg.liveness_window.as_nanos() as u64;
        while let Some((at, ev)) = self.q.pop() {
            if at > end {
                break;
            }
            self.now = at;
            if let Some(site) = ev.site() {
                let until = self.nodes[site].paused_until;
                if at < until {
                    self.q.push(until, ev);
                    continue;
                }
            }
            self.trace.u64(at);
            self.trace.u64(ev.tag());
            self.handle(ev);
            if self.now >= self.heal_at && self.all_clients_done() {
                break;
            }
        }
        self.finish()
    }

    fn all_clients_done(&self) -> bool {
        self.clients
            .iter()
            .all(|c| c.remaining == 0 && c.current.is_none())
    }

    fn schedule_start(&mut self) {
        let n = self.cfg.sites();
        for i in 0..n {
            self.start_node(i, true);
        }
        for c in 0..self.clients.len() {
            let at = self.rng.below(1000 * MS);
            self.q.push(at, Event::ClientNext { client: c });
        }
        let f = self.cfg.faults;
        if f.crash {
            let mut t = 2000 * MS;
            loop {
                t += 1500 * MS + self.rng.below(3500 * MS);
                if t >= self.heal_at {
                    break;
                }
                self.q.push(t, Event::Crash { node: usize::MAX });
            }
        }
        if f.pause {
            let mut t = 1500 * MS;
            loop {
                t += 2000 * MS + self.rng.below(4000 * MS);
                if t >= self.heal_at {
                    break;
                }
                self.q.push(t, Event::Pause);
            }
        }
        if f.partition {
            let mut t = 1000 * MS;
            loop {
                t += 2000 * MS + self.rng.below(4000 * MS);
                if t >= self.heal_at {
                    break;
                }
                let side = 1 + self.rng.below((1u64 << n) - 2) as u32;
                let links = if self.rng.chance(0.5) {
                    1 + self.rng.below(n as u64) as u32
                } else {
                    0
                };
                self.q.push(t, Event::Partition { side, links });
                self.q.push(
                    t + 500 * MS + self.rng.below(2500 * MS),
                    Event::HealPartition,
                );
            }
        }
        self.net.faulty = f.loss || f.dup || f.reorder;
        self.net.loss = f.loss;
        self.net.dup = f.dup;
        self.net.reorder = f.reorder;
        self.q.push(self.heal_at, Event::HealAll);
    }

    fn start_node(&mut self, i: usize, fresh: bool) {
        let cfg = self.core_config(i);
        let local = self.nodes[i].local(self.now);
        let outs = if fresh {
            self.nodes[i].core = Some(Core::new(cfg, local));
            Vec::new()
        } else {
            let (core, outs) = Core::recover(cfg, local, self.nodes[i].disk.durable().to_vec());
            self.nodes[i]
                .acked
                .check_recovered(i, &core, &mut self.findings);
            self.nodes[i].core = Some(core);
            outs
        };
        let phase = self.rng.below(TICK_NS);
        let inc = self.nodes[i].incarnation;
        self.q.push(
            self.now + phase,
            Event::Tick {
                node: i,
                incarnation: inc,
            },
        );
        self.handle_outputs(i, outs);
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Deliver { to, from, msg } => {
                self.trace.u64((to * 64 + from) as u64);
                self.trace.write(msg.kind().as_bytes());
                if self.net.blocked(from, to) {
                    return;
                }
                self.step(
                    to,
                    Input::Message {
                        from: SiteId(from as u8),
                        msg,
                    },
                );
            }
            Event::Tick { node, incarnation } => {
                if self.nodes[node].incarnation == incarnation && self.nodes[node].core.is_some() {
                    self.step(node, Input::Tick);
                    self.q
                        .push(self.now + TICK_NS, Event::Tick { node, incarnation });
                }
            }
            Event::PersistDone {
                node,
                token,
                incarnation,
            } => {
                if self.nodes[node].incarnation == incarnation && self.nodes[node].core.is_some() {
                    self.nodes[node].persisted(token);
                    self.step(node, Input::Persisted { token });
                }
            }
            Event::Request { node, req } => self.on_request(node, req),
            Event::Reply { client, reply } => self.on_reply(client, reply),
            Event::ClientTimeout {
                client,
                seq,
                attempt,
            } => {
                let c = &self.clients[client];
                if c.current
                    .as_ref()
                    .is_some_and(|p| p.seq == seq && p.attempt == attempt)
                {
                    let n = self.cfg.sites();
                    self.clients[client].target = (self.clients[client].target + 1) % n;
                    self.resend(client, 0);
                }
            }
            Event::ClientNext { client } => self.client_next(client),
            Event::Crash { .. } => self.crash_someone(),
            Event::Pause => {
                let victim = self.pick_victim();
                self.nodes[victim].paused_until = self.now + 500 * MS + self.rng.below(3500 * MS);
            }
            Event::Restart { node } => {
                if self.nodes[node].core.is_none() && self.now < self.heal_at {
                    self.start_node(node, false);
                }
            }
            Event::Partition { side, links: 0 } => self.net.split(side),
            Event::Partition { links, .. } => {
                let n = self.cfg.sites() as u64;
                for _ in 0..links {
                    let a = self.rng.below(n) as usize;
                    let b = (a + 1 + self.rng.below(n - 1) as usize) % n as usize;
                    self.net.cut_link(a, b);
                }
            }
            Event::HealPartition => self.net.heal(),
            Event::HealAll => {
                self.net.heal();
                self.net.faulty = false;
                for i in 0..self.nodes.len() {
                    if self.nodes[i].core.is_none() {
                        self.start_node(i, false);
                    }
                }
            }
        }
    }

    fn crash_someone(&mut self) {
        let n = self.cfg.sites();
        let down = self.nodes.iter().filter(|x| x.core.is_none()).count();
        if down >= (n - 1) / 2 {
            return;
        }
        let victim = self.pick_victim();
        self.nodes[victim].crash();
        let back = self.now + 500 * MS + self.rng.below(3500 * MS);
        self.q.push(back, Event::Restart { node: victim });
    }

    /// The leader half of the time (the most damaging choice), else any live site.
    fn pick_victim(&mut self) -> usize {
        let n = self.cfg.sites();
        let leader = (0..n).find(|&i| self.nodes[i].core.as_ref().is_some_and(|c| c.is_leader()));
        match leader {
            Some(l) if self.rng.chance(0.5) => l,
            _ => {
                let live: Vec<usize> = (0..n).filter(|&i| self.nodes[i].core.is_some()).collect();
                live[self.rng.below(live.len() as u64) as usize]
            }
        }
    }

    /// Feeds one input to a live node's core and carries out what comes out.
    fn step(&mut self, i: usize, input: Input) {
        let local = self.nodes[i].local(self.now);
        let Some(core) = self.nodes[i].core.as_mut() else {
            return;
        };
        let outs = core.step(local, input);
        self.handle_outputs(i, outs);
        self.after_step(i);
    }

    fn after_step(&mut self, i: usize) {
        let Some(core) = self.nodes[i].core.as_ref() else {
            return;
        };
        self.election
            .observe(i, core.leader_ballot(), &mut self.findings);
        if core.is_leader() && self.last_leader != Some(i) {
            self.last_leader = Some(i);
            self.leaders.push((self.now, i));
        }
        let now = self.now;
        let cores: Vec<_> = self
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(k, nd)| nd.core.as_ref().map(|c| (k, c, nd.local(now))))
            .collect();
        lease::check(now, &cores, &mut self.findings);
    }

    fn handle_outputs(&mut self, i: usize, outs: Vec<Output>) {
        let mut follow_up: Vec<Input> = Vec::new();
        for o in outs {
            match o {
                Output::Send { to, msg } => {
                    acceptor::check_send(i, &self.nodes[i].acked, &msg, &mut self.findings);
                    self.nodes[i].acked.sent(&msg);
                    let to = to.0 as usize;
                    let (ra, rb) = (self.nodes[i].region, self.nodes[to].region);
                    for at in self
                        .net
                        .delivery_times(&mut self.rng, self.now, i, to, ra, rb)
                    {
                        self.q.push(
                            at,
                            Event::Deliver {
                                to,
                                from: i,
                                msg: msg.clone(),
                            },
                        );
                    }
                }
                Output::Persist { records, token } => {
                    let node = &mut self.nodes[i];
                    node.pending_disk.push_back((token, records));
                    let jitter = if self.net.faulty {
                        self.rng.below(2 * MS)
                    } else {
                        0
                    };
                    let at =
                        self.now.max(node.disk_free_at) + self.cfg.fsync.as_nanos() as u64 + jitter;
                    node.disk_free_at = at;
                    let incarnation = node.incarnation;
                    self.q.push(
                        at,
                        Event::PersistDone {
                            node: i,
                            token,
                            incarnation,
                        },
                    );
                }
                Output::Apply { slot, batch } => {
                    self.agreement.applied(i, slot, &batch, &mut self.findings);
                    for c in &batch.0 {
                        self.apply_command(i, c);
                    }
                    let node = &mut self.nodes[i];
                    if slot.0 >= node.last_snapshot + self.cfg.snapshot_every {
                        node.last_snapshot = slot.0;
                        follow_up.push(Input::Snapshot {
                            through: slot,
                            data: node.kv.snapshot().into(),
                        });
                    }
                }
                Output::InstallSnapshot { through, data } => {
                    let node = &mut self.nodes[i];
                    node.kv = meridian_replica::kv::KvStore::restore(&data)
                        .expect("snapshots we made decode");
                    node.last_snapshot = through.0;
                }
                Output::ReadReady { id } => {
                    if let Some(req) = self.nodes[i].reads.remove(&id) {
                        let result = self.nodes[i].kv.read(&req.cmd.op);
                        let reply = ClientReply::Ok {
                            seq: req.cmd.seq,
                            result,
                            path: "leader",
                        };
                        self.reply(i, req.client, reply);
                    }
                }
                Output::ReadRejected { id, reason } => {
                    let Some(req) = self.nodes[i].reads.remove(&id) else {
                        continue;
                    };
                    match reason {
                        Rejection::LeaseExpired => {
                            // No lease: the read goes through the log like a write.
                            self.nodes[i]
                                .waiting
                                .insert((req.cmd.client, req.cmd.seq), (req.client, self.now));
                            follow_up.push(Input::Propose(vec![req.cmd.encode().into()]));
                        }
                        Rejection::NotLeader { hint } => {
                            let reply = ClientReply::NotLeader {
                                seq: req.cmd.seq,
                                hint: hint.map(|h| h.0 as usize),
                            };
                            self.reply(i, req.client, reply);
                        }
                    }
                }
                Output::NotLeader { commands, hint } => {
                    for c in commands {
                        let cmd = KvCommand::decode(&c).expect("our own commands decode");
                        if let Some((client, _)) =
                            self.nodes[i].waiting.remove(&(cmd.client, cmd.seq))
                        {
                            let reply = ClientReply::NotLeader {
                                seq: cmd.seq,
                                hint: hint.map(|h| h.0 as usize),
                            };
                            self.reply(i, client, reply);
                        }
                    }
                }
            }
        }
        for input in follow_up {
            self.step(i, input);
        }
    }

    fn apply_command(&mut self, i: usize, bytes: &[u8]) {
        let cmd = KvCommand::decode(bytes).expect("our own commands decode");
        let result = self.nodes[i].kv.apply(&cmd);
        if let Some((client, proposed)) = self.nodes[i].waiting.remove(&(cmd.client, cmd.seq)) {
            if !cmd.is_read_only() {
                self.commit_latency.push(self.now - proposed);
            }
            let path = if cmd.is_read_only() { "log" } else { "write" };
            self.reply(
                i,
                client,
                ClientReply::Ok {
                    seq: cmd.seq,
                    result,
                    path,
                },
            );
        }
    }

    fn reply(&mut self, node: usize, client: usize, reply: ClientReply) {
        let at = self.now
            + self
                .net
                .one_way(self.nodes[node].region, self.clients[client].region);
        self.q.push(at, Event::Reply { client, reply });
    }

    fn on_request(&mut self, i: usize, req: ClientRequest) {
        let Some(core) = self.nodes[i].core.as_ref() else {
            return;
        };
        if matches!(req.cmd.op, Op::Get { .. }) {
            if !core.is_leader() {
                let hint = core.leader_hint().map(|h| h.0 as usize);
                self.reply(
                    i,
                    req.client,
                    ClientReply::NotLeader {
                        seq: req.cmd.seq,
                        hint,
                    },
                );
                return;
            }
            self.next_read += 1;
            let id = self.next_read;
            self.nodes[i].reads.insert(id, req);
            self.step(i, Input::Read { id });
        } else {
            self.nodes[i]
                .waiting
                .insert((req.cmd.client, req.cmd.seq), (req.client, self.now));
            self.step(i, Input::Propose(vec![req.cmd.encode().into()]));
        }
    }

    fn client_next(&mut self, c: usize) {
        let cl = &mut self.clients[c];
        if cl.remaining == 0 || cl.current.is_some() {
            return;
        }
        cl.seq += 1;
        let op = cl.next_op(c, self.cfg.keys, &mut self.rng);
        let cl = &mut self.clients[c];
        cl.current = Some(Pending {
            seq: cl.seq,
            op,
            invoke_ns: self.now,
            attempt: 0,
        });
        self.resend(c, 0);
    }

    /// (Re)sends the client's current operation to its target after `delay` ns.
    fn resend(&mut self, c: usize, delay: u64) {
        let cl = &mut self.clients[c];
        let Some(p) = cl.current.as_mut() else { return };
        p.attempt += 1;
        let cmd = KvCommand {
            client: c as u64 + 1,
            seq: p.seq,
            op: p.op.to_op(),
        };
        let (seq, attempt, target, region) = (p.seq, p.attempt, cl.target, cl.region);
        let at = self.now + delay + self.net.one_way(region, self.nodes[target].region);
        self.q.push(
            at,
            Event::Request {
                node: target,
                req: ClientRequest { client: c, cmd },
            },
        );
        self.q.push(
            self.now + delay + CLIENT_TIMEOUT_NS,
            Event::ClientTimeout {
                client: c,
                seq,
                attempt,
            },
        );
    }

    fn on_reply(&mut self, c: usize, reply: ClientReply) {
        let n = self.cfg.sites();
        let Some(p) = self.clients[c].current.as_ref() else {
            return;
        };
        match reply {
            ClientReply::NotLeader { seq, hint } if seq == p.seq => {
                let cl = &mut self.clients[c];
                let old = cl.target;
                cl.target = hint.filter(|h| *h != old).unwrap_or((old + 1) % n);
                let delay = if hint.is_some_and(|h| h != old) {
                    0
                } else {
                    50 * MS
                };
                self.resend(c, delay);
            }
            ClientReply::Ok { seq, result, path } if seq == p.seq => {
                let p = self.clients[c].current.take().expect("checked above");
                self.complete(c, p, result.outcome, path);
            }
            _ => {}
        }
    }

    fn complete(&mut self, c: usize, p: Pending, outcome: Outcome, path: &'static str) {
        let key = p.op.key().to_string();
        let mut h = HistoryOp {
            process: c as u64,
            op: OpKind::Get,
            key: key.clone(),
            value: None,
            expect: None,
            invoke_ns: p.invoke_ns,
            complete_ns: self.now,
            outcome: HOutcome::Ok,
            read: None,
            path: (path != "write").then(|| path.to_string()),
        };
        match (&p.op, outcome) {
            (ClientOp::Get { .. }, Outcome::Get { kv }) => {
                let v = kv.map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
                self.clients[c].seen.insert(key, v.clone());
                h.read = v;
            }
            (ClientOp::Put { value, .. }, Outcome::Put { .. }) => {
                h.op = OpKind::Put;
                h.value = Some(value.clone());
            }
            (ClientOp::Delete { .. }, Outcome::Delete { .. }) => h.op = OpKind::Delete,
            (ClientOp::Cas { expect, value, .. }, Outcome::Txn { succeeded, .. }) => {
                h.op = OpKind::Cas;
                h.expect = expect.clone();
                h.value = Some(value.clone());
                h.outcome = if succeeded {
                    HOutcome::Ok
                } else {
                    HOutcome::Fail
                };
                if succeeded {
                    self.clients[c].seen.insert(key, Some(value.clone()));
                }
            }
            (op, other) => {
                self.findings
                    .violation(format!("client {c}: {op:?} answered with {other:?}"));
                return;
            }
        }
        self.history.push(h);
        self.clients[c].remaining -= 1;
        let think = self.rng.below(200 * MS);
        self.q
            .push(self.now + think, Event::ClientNext { client: c });
    }

    fn finish(mut self) -> SeedReport {
        let mut incomplete = 0;
        for (c, cl) in self.clients.iter().enumerate() {
            incomplete += cl.remaining;
            if let Some(p) = &cl.current {
                let (op, value, expect) = match &p.op {
                    ClientOp::Put { value, .. } => (OpKind::Put, Some(value.clone()), None),
                    ClientOp::Get { .. } => (OpKind::Get, None, None),
                    ClientOp::Delete { .. } => (OpKind::Delete, None, None),
                    ClientOp::Cas { expect, value, .. } => {
                        (OpKind::Cas, Some(value.clone()), expect.clone())
                    }
                };
                self.history.push(HistoryOp {
                    process: c as u64,
                    op,
                    key: p.op.key().to_string(),
                    value,
                    expect,
                    invoke_ns: p.invoke_ns,
                    complete_ns: self.now,
                    outcome: HOutcome::Unknown,
                    read: None,
                    path: None,
                });
            }
        }
        let verdicts = crate::linearizability::check(&self.history);
        let mut lin = 0;
        for v in verdicts.iter().filter(|v| !v.linearizable) {
            lin += 1;
            self.findings.violation(format!(
                "linearizability: key {} ({} ops) has no linearization",
                v.key, v.ops
            ));
        }
        let completed = self
            .history
            .iter()
            .filter(|h| h.outcome != HOutcome::Unknown)
            .count();
        let mut trace = self.trace;
        trace.write(crate::history::to_jsonl(&self.history).as_bytes());
        SeedReport {
            seed: self.seed,
            ops_submitted: self.cfg.ops,
            ops_completed: completed,
            linearizability_violations: lin,
            agreement_violations: self.findings.agreement,
            other_violations: self.findings.other - lin,
            incomplete_after_heal: incomplete,
            trace_hash: trace.0,
            examples: self.findings.examples,
            history: self.history,
            commit_latency_ns: self.commit_latency,
            leaders: self.leaders,
        }
    }
}

/// Runs one seed with the shipped RTT matrix.
pub fn run_seed(cfg: &SimConfig, seed: u64) -> SeedReport {
    let matrix = RttMatrix::embedded();
    World::new(cfg.clone(), &matrix, seed).run()
}
