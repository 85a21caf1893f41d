//! One seeded simulated run: the event loop that ties the real shard drivers, simulated disks,
//! the WAN, the simulated proxies (the real proxy logic) and clients together, injects faults,
//! heals, and hands the results to the checkers.
use super::client::{ClientOp, Pending, SimClient};

mod clients;
mod proxies;
mod report;
use super::config::SimConfig;
use super::events::{Event, Queue};
use super::invariants::at_revision::AtRevision;
use super::invariants::{
    acceptor, agreement::Agreement, election::ElectionSafety, lease, list_append::ListAppend,
    qlease::QuorumLeaseSafety, staleness::Staleness, Findings,
};
use super::network::Network;
use super::node::{CallOrigin, DiskOp, SimNode, COMPACT_AT_RECORDS};
use super::proxy::{Answer, ProxyOut, SimProxy};
use crate::history::{HistoryOp, OpKind, Outcome as HOutcome};
use meridian_core::{Core, CoreConfig, Message, PlantedBug, Rng, SiteId};
use meridian_proxy::logic::read_op::{Consistency, Mode};
use meridian_proxy::logic::{CallKind, CallResult, ServiceError, SiteRead};
use meridian_replica::driver::demand::AutoLeases;
use meridian_replica::driver::{
    DriverConfig, Effect, Event as DEvent, Reply, Request, ShardDriver,
};
use meridian_replica::kv::{KvCommand, Op, Outcome};
use meridian_topology::model::QuorumShape;
use meridian_topology::RttMatrix;
use std::collections::BTreeMap;
use std::time::Duration;

const TICK_NS: u64 = 10_000_000;
const MS: u64 = 1_000_000;
/// Client to its region's proxy, one way.
const CLIENT_PROXY_NS: u64 = MS / 2;

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
    /// Bounded-staleness reads that missed a write older than their bound.
    pub stale_reads: u64,
    pub other_violations: u64,
    pub incomplete_after_heal: usize,
    pub trace_hash: u64,
    pub examples: Vec<String>,
    /// Linearizable operations (register keys), for `meridian check`.
    pub history: Vec<HistoryOp>,
    /// Propose-to-reply latency at the leader, in ns, per write batch.
    pub commit_latency_ns: Vec<u64>,
    /// (true time, site) of every leadership change.
    pub leaders: Vec<(u64, usize)>,
    /// Reads answered per path (`leader`, `log`, `quorum`, `local`).
    pub reads_by_path: BTreeMap<String, u64>,
    /// Compaction rewrites completed, and crashes that interrupted one.
    pub compactions: u64,
    pub compaction_crashes: u64,
    /// Snapshots installed from a peer (catch-up across a compacted log).
    pub snapshot_installs: u64,
    /// Reads at a revision judged against the reference (`invariants::at_revision`).
    pub reads_at_revision: u64,
    /// The variations this seed ran with.
    pub lease: bool,
    pub preferred_leader: Option<usize>,
    /// Quorum-lease holders of this seed (empty: no quorum leases; with auto leases every
    /// site, any of which may come to hold).
    pub holders: Vec<usize>,
    pub auto_leases: bool,
    /// Lease configurations committed during the run (auto leases change them).
    pub lease_config_changes: u64,
}

impl SeedReport {
    pub fn violations(&self) -> u64 {
        self.linearizability_violations + self.other_violations
    }
    pub fn failed(&self) -> bool {
        self.violations() + self.agreement_violations + self.stale_reads > 0
            || self.incomplete_after_heal > 0
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
    proxies: Vec<SimProxy>,
    clients: Vec<SimClient>,
    history: Vec<HistoryOp>,
    findings: Findings,
    agreement: Agreement,
    at_revision: AtRevision,
    election: ElectionSafety,
    staleness: Staleness,
    lists: ListAppend,
    qlease: QuorumLeaseSafety,
    holders: Vec<usize>,
    matrix: std::sync::Arc<RttMatrix>,
    /// Slots that committed a lease configuration.
    config_slots: std::collections::BTreeSet<u64>,
    trace: Fnv,
    heal_at: u64,
    commit_latency: Vec<u64>,
    leaders: Vec<(u64, usize)>,
    last_leader: Option<usize>,
    reads_by_path: BTreeMap<String, u64>,
    compactions: u64,
    compaction_crashes: u64,
    snapshot_installs: u64,
    incomplete: usize,
}

impl World {
    pub fn new(mut cfg: SimConfig, matrix: &RttMatrix, seed: u64) -> World {
        let mut rng = Rng::new(seed);
        let n = cfg.sites();
        // Seed-dependent variations: a share runs without leases (reads through the log) and a
        // share with a preferred leader (leadership transfers).
        if cfg.vary {
            if cfg.lease && seed % 4 == 1 {
                cfg.lease = false;
            }
            if cfg.preferred_leader.is_none() && seed.is_multiple_of(3) {
                cfg.preferred_leader = Some(SiteId((seed / 3 % n as u64) as u8));
            }
            if seed % 5 == 2 {
                cfg.quorum_leases = true;
            }
            if cfg.quorum_leases && seed % 10 == 7 {
                cfg.auto_leases = true;
            }
        }
        // Clocks beyond the bound need the slow clock to be a holder's: pinned.
        if cfg.drift_beyond_bound {
            cfg.auto_leases = false;
        }
        // Holders: a random non-empty subset of the sites (all of them when clocks drift
        // beyond the bound, so the slow clock is a holder's).
        let holders: Vec<usize> = if !cfg.quorum_leases {
            Vec::new()
        } else if cfg.drift_beyond_bound || cfg.auto_leases {
            // Auto: any site may come to hold (the proxies learn who does as they run).
            (0..n).collect()
        } else {
            let mut h: Vec<usize> = (0..n).filter(|_| rng.chance(0.5)).collect();
            if h.is_empty() {
                h.push(rng.below(n as u64) as usize);
            }
            h
        };
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
                // Within the bound, any two rates differ by less than 0.95 ε. Beyond it
                // (test-only), the preferred leader's clock runs at a third of the others' speed.
                let rate = if cfg.drift_beyond_bound {
                    if i == 0 {
                        0.35
                    } else {
                        1.0 + 0.5 * rng.unit()
                    }
                } else if cfg.faults.drift {
                    1.0 + (rng.unit() - 0.5) * 0.95 * cfg.drift_bound
                } else {
                    1.0
                };
                SimNode::new(r, offset, rate)
            })
            .collect();
        let shape = if n == 9 {
            QuorumShape::three_by_three()
        } else {
            QuorumShape::Majority
        };
        let proxies: Vec<SimProxy> = region_idx
            .iter()
            .enumerate()
            .map(|(p, &r)| {
                let rtt = region_idx.iter().map(|&s| Some(matrix.ms[r][s])).collect();
                let mut px = SimProxy::new(p, r, rtt, cfg.quorum.clone(), shape.clone(), cfg.lease);
                px.ignore_barrier = cfg.planted_bug == Some(PlantedBug::PqrIgnoreBarrier);
                px.retry_new_seq = cfg.planted_bug == Some(PlantedBug::ProxyRetryNewSeq);
                px.holders = if cfg.auto_leases {
                    Vec::new()
                } else {
                    holders.clone()
                };
                px.quorum_leases = cfg.quorum_leases;
                px
            })
            .collect();
        let clients = (0..cfg.clients)
            .map(|c| SimClient {
                region: region_idx[c % n],
                proxy: c % n,
                seq: 0,
                remaining: cfg.ops / cfg.clients + usize::from(c < cfg.ops % cfg.clients),
                current: None,
                seen: Default::default(),
                revision: 0,
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
            proxies,
            clients,
            history: Vec::new(),
            findings: Findings::default(),
            agreement: Agreement::default(),
            at_revision: AtRevision::default(),
            election: ElectionSafety::default(),
            staleness: Staleness::default(),
            lists: ListAppend::default(),
            qlease: QuorumLeaseSafety::default(),
            holders,
            matrix: std::sync::Arc::new(matrix.clone()),
            config_slots: Default::default(),
            trace: Fnv::default(),
            heal_at,
            commit_latency: Vec::new(),
            leaders: Vec::new(),
            last_leader: None,
            reads_by_path: BTreeMap::new(),
            compactions: 0,
            compaction_crashes: 0,
            snapshot_installs: 0,
            incomplete: 0,
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
        if self.cfg.quorum_leases {
            c.quorum_lease = Some(Duration::from_secs(1));
        }
        c
    }

    fn driver_config(&self) -> DriverConfig {
        DriverConfig {
            snapshot_every: self.cfg.snapshot_every,
            compact_at: COMPACT_AT_RECORDS,
            // The simulated log counts records, not bytes.
            compact_scales_with_snapshot: false,
            drift_bound: self.cfg.drift_bound,
            max_parked: 4096,
            observe_applies: true,
            // Small, so that the simulated runs trim their watch history too.
            history_bytes: 1 << 20,
            planted_bug: self.cfg.planted_bug,
            lease_holders: (self.cfg.quorum_leases && !self.cfg.auto_leases)
                .then(|| self.holders.iter().map(|h| *h as u8).collect()),
            auto_leases: self.cfg.auto_leases.then(|| AutoLeases {
                matrix: self.matrix.clone(),
                site_regions: self.nodes.iter().map(|n| n.region).collect(),
                shape: if self.cfg.sites() == 9 {
                    QuorumShape::three_by_three()
                } else {
                    QuorumShape::Majority
                },
                every: Duration::from_secs(2),
                min_ops: 10.0,
                min_saving: 0.05,
                min_saving_ms: 1.0,
                silent_after: Duration::from_secs(5),
            }),
            demand_every: Duration::from_secs(2),
        }
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
                self.q.push(t, Event::Crash);
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
        let (core, outs) = if fresh {
            (Core::new(cfg, local), Vec::new())
        } else {
            let (core, outs) = Core::recover(cfg, local, self.nodes[i].disk.durable().to_vec());
            self.nodes[i]
                .acked
                .check_recovered(i, &core, &mut self.findings);
            (core, outs)
        };
        let driver = ShardDriver::new(core, outs, self.driver_config(), local);
        self.nodes[i].driver = Some(driver);
        let phase = self.rng.below(TICK_NS);
        let inc = self.nodes[i].incarnation;
        self.q.push(
            self.now + phase,
            Event::Tick {
                node: i,
                incarnation: inc,
            },
        );
    }

    /// Auto leases: the proxies learn whether `node` holds a valid quorum lease (as the real
    /// proxy's status probes do; the holder itself re-checks before it answers).
    fn probe_holder(&mut self, node: usize) {
        let local = self.nodes[node].local(self.now);
        let holds = self.nodes[node]
            .driver
            .as_ref()
            .is_some_and(|d| d.core().holds_quorum_lease(local));
        for p in &mut self.proxies {
            p.holders.retain(|&h| h != node);
            if holds {
                p.holders.push(node);
            }
        }
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Deliver { to, from, msg } => {
                self.trace.u64((to * 64 + from) as u64);
                self.trace.write(msg.kind().as_bytes());
                if self.net.blocked(from, to) {
                    return;
                }
                let from = SiteId(from as u8);
                self.step(to, DEvent::Peer { from, msg });
            }
            Event::Tick { node, incarnation } => {
                if self.nodes[node].incarnation == incarnation && self.nodes[node].driver.is_some()
                {
                    self.step(node, DEvent::Tick);
                    if self.cfg.auto_leases {
                        self.probe_holder(node);
                    }
                    self.q
                        .push(self.now + TICK_NS, Event::Tick { node, incarnation });
                }
            }
            Event::DiskDone { node, incarnation } => {
                let nd = &mut self.nodes[node];
                if nd.incarnation != incarnation || nd.driver.is_none() {
                    return;
                }
                match nd.disk_done() {
                    Some(token) => {
                        let log_size = meridian_replica::storage::LogStore::grown(&nd.disk);
                        self.step(node, DEvent::Persisted { token, log_size });
                    }
                    None => self.compactions += 1,
                }
            }
            Event::SnapshotDone {
                node,
                incarnation,
                through,
                data,
            } => {
                let nd = &self.nodes[node];
                if nd.incarnation == incarnation && nd.driver.is_some() {
                    self.step(node, DEvent::SnapshotTaken { through, data });
                }
            }
            Event::CallSend {
                proxy,
                op,
                call,
                read,
            } => self.send_call(proxy, op, call, read),
            Event::CallArrive {
                node,
                proxy,
                op,
                call,
                read,
            } => self.call_arrives(node, proxy, op, call, read),
            Event::CallReply {
                proxy,
                op,
                call,
                site,
                result,
            } => {
                let now = Duration::from_nanos(self.now);
                let outs = self.proxies[proxy].on_result(now, op, call, site, result);
                self.proxy_outs(proxy, outs);
            }
            Event::CallTimeout {
                proxy,
                op,
                call,
                site,
            } => {
                let now = Duration::from_nanos(self.now);
                let outs = self.proxies[proxy].on_result(now, op, call, site, CallResult::Failed);
                self.proxy_outs(proxy, outs);
            }
            Event::ProxyRequest { client } => self.proxy_request(client),
            Event::ClientReply { client, answer } => self.on_answer(client, answer),
            Event::ClientNext { client } => self.client_next(client),
            Event::Crash => self.crash_someone(),
            Event::Pause => {
                let victim = self.pick_victim();
                self.nodes[victim].paused_until = self.now + 500 * MS + self.rng.below(3500 * MS);
            }
            Event::Restart { node } => {
                if self.nodes[node].driver.is_none() && self.now < self.heal_at {
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
                    if self.nodes[i].driver.is_none() {
                        self.start_node(i, false);
                    }
                }
            }
        }
    }

    fn crash_someone(&mut self) {
        let n = self.cfg.sites();
        let down = self.nodes.iter().filter(|x| x.driver.is_none()).count();
        if down >= (n - 1) / 2 {
            return;
        }
        // A share of the crashes hits a site in the middle of a compaction rewrite.
        let compacting = (0..n).find(|&i| {
            self.nodes[i].driver.is_some()
                && self.nodes[i]
                    .pending_disk
                    .iter()
                    .any(|d| matches!(d, DiskOp::Compact { .. }))
        });
        let victim = match compacting {
            Some(i) if self.rng.chance(0.5) => i,
            _ => self.pick_victim(),
        };
        if let Some(d) = &self.nodes[victim].driver {
            self.snapshot_installs += d.snapshots_installed();
        }
        if self.nodes[victim].crash() {
            self.compaction_crashes += 1;
        }
        let back = self.now + 500 * MS + self.rng.below(3500 * MS);
        self.q.push(back, Event::Restart { node: victim });
    }

    /// The leader half of the time (the most damaging choice), else any live site.
    fn pick_victim(&mut self) -> usize {
        let n = self.cfg.sites();
        let is_leader = |nd: &SimNode| nd.driver.as_ref().is_some_and(|d| d.core().is_leader());
        let leader = (0..n).find(|&i| is_leader(&self.nodes[i]));
        match leader {
            Some(l) if self.rng.chance(0.5) => l,
            _ => {
                let live: Vec<usize> = (0..n).filter(|&i| self.nodes[i].driver.is_some()).collect();
                live[self.rng.below(live.len() as u64) as usize]
            }
        }
    }

    /// Feeds one event to a live site's driver and carries out its effects.
    fn step(&mut self, i: usize, ev: DEvent) {
        let local = self.nodes[i].local(self.now);
        let Some(d) = self.nodes[i].driver.as_mut() else {
            return;
        };
        let effects = d.handle(local, ev);
        self.effects(i, effects);
        self.after_step(i);
    }

    fn after_step(&mut self, i: usize) {
        let Some(d) = self.nodes[i].driver.as_ref() else {
            return;
        };
        let core = d.core();
        self.election.observe(
            i,
            core.leader_ballot(),
            &self.cfg.quorum,
            &mut self.findings,
        );
        if core.is_leader() && self.last_leader != Some(i) {
            self.last_leader = Some(i);
            self.leaders.push((self.now, i));
        }
        let now = self.now;
        let cores: Vec<_> = self
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(k, nd)| nd.driver.as_ref().map(|d| (k, d.core(), nd.local(now))))
            .collect();
        lease::check(now, &cores, &mut self.findings);
    }

    fn effects(&mut self, i: usize, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::Send { to, msg } => self.send_peer(i, to.0 as usize, msg),
                Effect::Persist { records, token } => {
                    self.disk_op(i, DiskOp::Append { token, records })
                }
                Effect::Compact { records } => self.disk_op(i, DiskOp::Compact { records }),
                Effect::Snapshot { through, state } => {
                    // Serialized off the shard task: applying goes on meanwhile, and a crash
                    // before it is done loses it.
                    let at = self.now + 5 * MS + self.rng.below(20 * MS);
                    let incarnation = self.nodes[i].incarnation;
                    self.q.push(
                        at,
                        Event::SnapshotDone {
                            node: i,
                            incarnation,
                            through,
                            data: state.snapshot().into(),
                        },
                    );
                }
                Effect::Applied {
                    slot,
                    batch,
                    digest,
                } => {
                    self.agreement
                        .applied(i, slot, &batch, digest, &mut self.findings);
                    self.at_revision.applied(slot, &batch);
                    if self.cfg.quorum_leases
                        && !self.config_slots.contains(&slot.0)
                        && batch.0.iter().any(|c| {
                            KvCommand::decode(c)
                                .is_ok_and(|c| matches!(c.op, Op::SetLeaseHolders { .. }))
                        })
                    {
                        self.config_slots.insert(slot.0);
                    }
                    if self.cfg.quorum_leases {
                        let now = self.now;
                        let cores: Vec<_> = self
                            .nodes
                            .iter()
                            .enumerate()
                            .filter(|(k, _)| *k != i)
                            .filter_map(|(k, nd)| {
                                nd.driver.as_ref().map(|d| (k, d.core(), nd.local(now)))
                            })
                            .collect();
                        self.qlease
                            .committed(now, slot, &batch, &cores, &mut self.findings);
                    }
                }
                Effect::Reply { id, reply } => self.site_reply(i, id, reply),
                Effect::Fatal { message } => self
                    .findings
                    .violation(format!("site {i} stopped: {message}")),
            }
        }
    }

    fn send_peer(&mut self, i: usize, to: usize, msg: Message) {
        acceptor::check_send(i, &self.nodes[i].acked, &msg, &mut self.findings);
        self.nodes[i].acked.sent(&msg);
        if let Message::Promise { ballot, .. } = &msg {
            self.election.promise(i, *ballot);
        }
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

    fn disk_op(&mut self, i: usize, op: DiskOp) {
        let mut jitter = if self.net.faulty {
            self.rng.below(2 * MS)
        } else {
            0
        };
        if matches!(op, DiskOp::Compact { .. }) {
            // A rewrite copies the whole state: long enough for crashes to land inside it.
            jitter += 30 * MS;
        }
        let node = &mut self.nodes[i];
        node.pending_disk.push_back(op);
        let at = self.now.max(node.disk_free_at) + self.cfg.fsync.as_nanos() as u64 + jitter;
        node.disk_free_at = at;
        let incarnation = node.incarnation;
        self.q.push(
            at,
            Event::DiskDone {
                node: i,
                incarnation,
            },
        );
    }
}

/// Runs one seed with the shipped RTT matrix.
pub fn run_seed(cfg: &SimConfig, seed: u64) -> SeedReport {
    let matrix = RttMatrix::embedded();
    World::new(cfg.clone(), &matrix, seed).run()
}
