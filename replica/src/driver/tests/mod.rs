//! Driver tests over an instant in-memory group (the WAN simulator in `meridian-testkit` runs the
//! same driver under faults).
use super::*;
use crate::kv::Outcome;
use meridian_core::{CoreConfig, Quorum};
use std::collections::VecDeque;

mod compaction;
mod proposals;

const TICK: Duration = Duration::from_millis(10);

struct Group {
    drivers: Vec<ShardDriver>,
    disks: Vec<Vec<Record>>,
    cfgs: Vec<CoreConfig>,
    now: Duration,
    queue: VecDeque<(usize, Event)>,
    replies: Vec<(usize, u64, Reply)>,
    /// Messages (to, message) for which this returns true are lost.
    drop: Option<fn(usize, &Message) -> bool>,
    /// When set, snapshots asked for are held here instead of being taken at once.
    held_snapshots: Option<Vec<(usize, Slot, KvStore)>>,
    /// The log size every `Persisted` reports, and the compactions asked for.
    log_size: u64,
    compactions: Vec<(usize, Vec<Record>)>,
}

impl Group {
    fn new(n: usize, lease: bool, bug: Option<PlantedBug>) -> Group {
        let cfgs: Vec<CoreConfig> = (0..n)
            .map(|i| {
                let mut c = CoreConfig::wan(SiteId(i as u8), Quorum::Majority(n), 11);
                c.preferred_leader = Some(SiteId(0));
                c.planted_bug = bug;
                if !lease {
                    c.lease = None;
                }
                c
            })
            .collect();
        let drivers = cfgs
            .iter()
            .map(|c| {
                let cfg = DriverConfig {
                    planted_bug: bug,
                    ..DriverConfig::default()
                };
                let core = Core::new(c.clone(), Duration::ZERO);
                ShardDriver::new(core, Vec::new(), cfg, Duration::ZERO)
            })
            .collect();
        Group {
            drivers,
            disks: vec![Vec::new(); n],
            cfgs,
            now: Duration::ZERO,
            queue: VecDeque::new(),
            replies: Vec::new(),
            drop: None,
            held_snapshots: None,
            log_size: 0,
            compactions: Vec::new(),
        }
    }

    fn run(&mut self) {
        while let Some((i, ev)) = self.queue.pop_front() {
            for e in self.drivers[i].handle(self.now, ev) {
                match e {
                    Effect::Send { to, msg }
                        if self.drop.is_some_and(|d| d(to.0 as usize, &msg)) => {}
                    Effect::Send { to, msg } => self.queue.push_back((
                        to.0 as usize,
                        Event::Peer {
                            from: SiteId(i as u8),
                            msg,
                        },
                    )),
                    Effect::Persist { token, records } => {
                        self.disks[i].extend(records);
                        self.queue.push_back((
                            i,
                            Event::Persisted {
                                token,
                                log_size: self.log_size,
                            },
                        ))
                    }
                    Effect::Reply { id, reply } => self.replies.push((i, id, reply)),
                    Effect::Compact { records } => self.compactions.push((i, records)),
                    Effect::Snapshot { through, state } if self.held_snapshots.is_some() => {
                        if let Some(h) = self.held_snapshots.as_mut() {
                            h.push((i, through, state))
                        }
                    }
                    Effect::Snapshot { through, state } => self.queue.push_back((
                        i,
                        Event::SnapshotTaken {
                            through,
                            data: state.snapshot().into(),
                        },
                    )),
                    _ => {}
                }
            }
        }
    }

    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += TICK;
            for i in 0..self.drivers.len() {
                self.queue.push_back((i, Event::Tick));
            }
            self.run();
        }
    }

    /// Restarts site `i` from its disk (a crash after everything was synced).
    fn restart(&mut self, i: usize) {
        let (core, outs) = Core::recover(self.cfgs[i].clone(), self.now, self.disks[i].clone());
        self.drivers[i] = ShardDriver::new(core, outs, DriverConfig::default(), self.now);
    }

    fn request(&mut self, site: usize, id: u64, request: Request) {
        self.request_from(site, id, request, None);
    }

    fn request_from(&mut self, site: usize, id: u64, request: Request, origin: Option<u8>) {
        self.queue.push_back((
            site,
            Event::Client {
                id,
                request,
                origin,
            },
        ));
    }

    fn take_reply(&mut self, id: u64) -> Reply {
        let k = self
            .replies
            .iter()
            .position(|(_, i, _)| *i == id)
            .unwrap_or_else(|| panic!("no reply for request {id}"));
        self.replies.remove(k).2
    }
}

fn put(client: u64, key: &str, value: &str) -> KvCommand {
    KvCommand {
        client,
        seq: 1,
        op: Op::Put {
            key: key.into(),
            value: value.into(),
        },
    }
}

/// Every reader shares one identity, as the proxy's reads do.
fn get(key: &str) -> KvCommand {
    KvCommand {
        client: 0,
        seq: 0,
        op: Op::Get { key: key.into() },
    }
}

fn value_of(r: &Reply) -> Option<Vec<u8>> {
    match r {
        Reply::Done { results, .. } => match &results[0].outcome {
            Outcome::Get { kv } => kv.as_ref().map(|kv| kv.value.clone()),
            o => panic!("a get answered with {o:?}"),
        },
        r => panic!("unexpected reply {r:?}"),
    }
}

/// Issue "One system under test", defect 1: concurrent reads through the log, sharing one
/// `(client, seq)`, each get the value of their own key.
fn concurrent_log_reads(bug: Option<PlantedBug>) -> usize {
    let mut g = Group::new(3, false, bug);
    g.advance(Duration::from_secs(3));
    assert!(g.drivers[0].core().is_leader());
    for k in 0..10u64 {
        g.request(
            0,
            k + 1,
            Request::Submit {
                commands: vec![put(100 + k, &format!("k{k}"), &format!("v{k}")).into()],
            },
        );
    }
    g.run();
    g.advance(Duration::from_millis(100));
    g.replies.clear();
    // All ten reads arrive before any of them commits.
    for k in 0..10u64 {
        g.request(
            0,
            100 + k,
            Request::Read {
                command: get(&format!("k{k}")),
                mode: ReadMode::Leader,
                min_applied: 0,
                wait: Duration::from_secs(1),
            },
        );
    }
    g.advance(Duration::from_millis(100));
    let mut wrong = 0;
    for k in 0..10u64 {
        let r = g.take_reply(100 + k);
        assert!(matches!(r, Reply::Done { path: "log", .. }), "{r:?}");
        if value_of(&r) != Some(format!("v{k}").into_bytes()) {
            wrong += 1;
        }
    }
    wrong
}

#[test]
fn concurrent_log_reads_of_different_keys_each_get_their_own_key() {
    assert_eq!(concurrent_log_reads(None), 0);
}

#[test]
fn the_planted_shared_token_bug_answers_reads_with_another_keys_value() {
    assert!(concurrent_log_reads(Some(PlantedBug::LogReadSharedToken)) > 0);
}

#[test]
fn parked_reads_time_out_instead_of_waiting_forever() {
    let mut g = Group::new(3, true, None);
    g.advance(Duration::from_secs(3));
    g.request(
        1,
        7,
        Request::Read {
            command: get("k"),
            mode: ReadMode::Local,
            min_applied: 1_000_000,
            wait: Duration::from_millis(200),
        },
    );
    g.run();
    assert!(g.replies.is_empty(), "parked until the slot or the wait");
    g.advance(Duration::from_millis(300));
    assert_eq!(g.take_reply(7), Reply::Timeout);
}

#[test]
fn followers_know_how_fresh_they_are_from_the_echoed_timestamp() {
    let mut g = Group::new(3, true, None);
    g.advance(Duration::from_secs(3));
    g.request(
        2,
        9,
        Request::Read {
            command: get("k"),
            mode: ReadMode::Local,
            min_applied: 0,
            wait: Duration::ZERO,
        },
    );
    g.run();
    match g.take_reply(9) {
        // Instant delivery: the echo of one heartbeat's ack rides on the next heartbeat, so
        // the bound is two heartbeat intervals (2 x 100 ms) and a tick; never unknown.
        Reply::Local { staleness_ms, .. } => assert!(staleness_ms <= 230, "{staleness_ms}"),
        r => panic!("{r:?}"),
    }
}

#[test]
fn submits_to_a_follower_are_redirected_with_a_hint() {
    let mut g = Group::new(3, true, None);
    g.advance(Duration::from_secs(3));
    g.request(
        1,
        5,
        Request::Submit {
            commands: vec![put(1, "a", "b").into()],
        },
    );
    g.run();
    assert_eq!(g.take_reply(5), Reply::NotLeader { hint: Some(0) });
}

/// A restarted leader (tokens are in memory only, so its re-applied slots carry none) answers
/// new reads through the log, reusing caller ids of its previous incarnation, with the current
/// state — never with an old read slot's result.
#[test]
fn a_restarted_leader_answers_new_log_reads_with_the_current_state() {
    let mut g = Group::new(3, false, None);
    g.advance(Duration::from_secs(3));
    // Writes interleaved with reads through the log that share one identity, (0, 0).
    for k in 0..5u64 {
        let w = Request::Submit {
            commands: vec![put(10 + k, "k", &format!("v{k}")).into()],
        };
        g.request(0, 100 + k, w);
        g.run();
        g.request(0, 200 + k, log_read("k"));
        g.run();
        g.advance(Duration::from_millis(50));
    }
    assert_eq!(g.replies.len(), 10);
    g.replies.clear();
    g.restart(0);
    for _ in 0..600 {
        if g.drivers[0].core().is_leader() {
            break;
        }
        g.advance(TICK);
    }
    assert!(
        g.drivers[0].core().is_leader(),
        "the preferred site leads again"
    );
    for k in 0..5u64 {
        g.request(0, 200 + k, log_read("k"));
    }
    g.advance(Duration::from_secs(1));
    let answers: Vec<_> = g.replies.iter().filter(|(s, _, _)| *s == 0).collect();
    assert_eq!(answers.len(), 5, "{answers:?}");
    for (_, id, r) in answers {
        match r {
            Reply::Done { .. } => {
                assert_eq!(value_of(r), Some(b"v4".to_vec()), "request {id}: {r:?}")
            }
            r => panic!("request {id}: {r:?}"),
        }
    }
}

fn log_read(key: &str) -> Request {
    Request::Read {
        command: get(key),
        mode: ReadMode::Log,
        min_applied: 0,
        wait: Duration::from_secs(1),
    }
}

/// A quorum-lease holder that still renews its promises with the grantors but no longer hears
/// the leader would stall every write; after five lease periods of silence the leader has the
/// grantors stop renewing it, its promises lapse, and writes go on.
#[test]
fn a_holder_the_leader_cannot_reach_is_removed_and_writes_go_on() {
    let mut g = Group::new(3, true, None);
    for (i, d) in g.drivers.iter_mut().enumerate() {
        let mut c = g.cfgs[i].clone();
        c.quorum_lease = Some(Duration::from_secs(1));
        g.cfgs[i] = c.clone();
        let cfg = DriverConfig {
            lease_holders: Some(vec![1, 2]),
            ..DriverConfig::default()
        };
        *d = ShardDriver::new(
            Core::new(c, Duration::ZERO),
            Vec::new(),
            cfg,
            Duration::ZERO,
        );
    }
    g.advance(Duration::from_secs(4));
    assert!(
        g.drivers[2].core().holds_quorum_lease(g.now),
        "site 2 holds a lease"
    );
    // Site 2 keeps talking to the grantors, but nothing of the leader's reaches it.
    g.drop = Some(|to, m| {
        to == 2
            && matches!(
                m,
                Message::Accept { .. } | Message::Heartbeat { .. } | Message::CatchUpReply { .. }
            )
    });
    g.request(
        0,
        77,
        Request::Submit {
            commands: vec![put(5, "w", "x").into()],
        },
    );
    g.run();
    g.advance(Duration::from_secs(2));
    assert!(
        g.replies.iter().all(|(_, id, _)| *id != 77),
        "committed without a live holder"
    );
    g.advance(Duration::from_secs(8));
    assert!(
        matches!(g.take_reply(77), Reply::Done { .. }),
        "the write never committed"
    );
    assert!(
        !g.drivers[2].core().holds_quorum_lease(g.now),
        "its lease lapsed"
    );
    // Heard again, it is renewed again.
    g.drop = None;
    g.advance(Duration::from_secs(4));
    assert!(
        g.drivers[2].core().holds_quorum_lease(g.now),
        "renewed once heard again"
    );
}

/// A five-site group (us-east-1, us-west-2, eu-west-1, ap-northeast-1, ap-southeast-2) with
/// quorum leases in `mode = "auto"`, re-evaluated every two seconds.
fn auto_group() -> Group {
    let mut g = Group::new(5, true, None);
    let m = meridian_topology::RttMatrix::embedded();
    let regions = [
        "us-east-1",
        "us-west-2",
        "eu-west-1",
        "ap-northeast-1",
        "ap-southeast-2",
    ];
    let auto = AutoLeases {
        site_regions: regions.iter().map(|r| m.index(r).unwrap()).collect(),
        matrix: std::sync::Arc::new(m),
        shape: meridian_topology::model::QuorumShape::Majority,
        every: Duration::from_secs(2),
        min_ops: 20.0,
        min_saving: 0.05,
        min_saving_ms: 1.0,
        silent_after: Duration::from_secs(5),
    };
    for (i, d) in g.drivers.iter_mut().enumerate() {
        let mut c = g.cfgs[i].clone();
        c.quorum_lease = Some(Duration::from_secs(1));
        g.cfgs[i] = c.clone();
        let cfg = DriverConfig {
            auto_leases: Some(auto.clone()),
            ..DriverConfig::default()
        };
        *d = ShardDriver::new(
            Core::new(c, Duration::ZERO),
            Vec::new(),
            cfg,
            Duration::ZERO,
        );
    }
    g
}

/// Tokyo reads heavily: first through the leader (counted there), then at its own holder
/// (counted there and reported to the leader), so the holder set stays put.
fn tokyo_reads(g: &mut Group, id: &mut u64, rounds: usize) {
    for _ in 0..rounds {
        let holder = g.drivers[3].core().quorum_lease_valid(g.now);
        let (site, mode) = if holder {
            (3, ReadMode::Lease)
        } else {
            (0, ReadMode::Leader)
        };
        for _ in 0..10 {
            *id += 1;
            g.request_from(
                site,
                *id,
                Request::Read {
                    command: get("k"),
                    mode,
                    min_applied: 0,
                    wait: Duration::from_secs(1),
                },
                Some(3),
            );
        }
        g.advance(Duration::from_millis(100));
    }
}

#[test]
fn auto_leases_give_a_heavy_reader_a_local_holder_and_keep_it() {
    let mut g = auto_group();
    g.advance(Duration::from_secs(3));
    assert!(g.drivers[0].core().is_leader());
    assert!(g.drivers[0].kv().lease_holders().is_empty());
    let mut id = 0;
    tokyo_reads(&mut g, &mut id, 40);
    let holders = g.drivers[0].kv().lease_holders().to_vec();
    assert!(holders.contains(&3), "Tokyo got no holder: {holders:?}");
    assert!(
        g.drivers[3].core().quorum_lease_valid(g.now),
        "Tokyo's replica holds a valid lease"
    );
    // Reads now served at the holder keep counting (reported to the leader): no flapping.
    tokyo_reads(&mut g, &mut id, 60);
    assert_eq!(g.drivers[0].kv().lease_holders(), holders.as_slice());
    let demand = g.drivers[0].demand();
    assert!(
        // Steady state: ~200 reads per 2 s interval, decayed by half: ~400. Without the
        // followers' reports it would have decayed to ~50.
        demand.iter().any(|&(s, r, _)| s == 3 && r > 250.0),
        "the leader sees Tokyo's reads: {demand:?}"
    );
    // Every replica agrees (the configuration is in the log).
    for d in &g.drivers {
        assert_eq!(d.kv().lease_holders(), holders.as_slice());
    }
}

#[test]
fn auto_leases_remove_a_silent_holder_through_the_log() {
    let mut g = auto_group();
    g.advance(Duration::from_secs(3));
    let mut id = 0;
    tokyo_reads(&mut g, &mut id, 40);
    assert!(g.drivers[0].kv().lease_holders().contains(&3));
    // Tokyo's replica goes silent (nothing in or out).
    g.drop = Some(|to, _| to == 3);
    let before = g.drivers[0].kv().lease_holders().to_vec();
    g.advance(Duration::from_secs(12));
    let after = g.drivers[0].kv().lease_holders().to_vec();
    assert!(
        !after.contains(&3),
        "the silent holder stayed: {before:?} -> {after:?}"
    );
}

fn changes(d: &ShardDriver, from: u64) -> Result<Vec<(u64, String, bool)>, u64> {
    match d.watch_since(from, b"", b"", 1000) {
        Since::Changes { changes, .. } => Ok(changes
            .iter()
            .map(|c| {
                (
                    c.revision,
                    String::from_utf8(c.kv.key.clone()).unwrap(),
                    c.delete,
                )
            })
            .collect()),
        Since::Compacted { horizon } => Err(horizon),
    }
}

/// Watch history (etcd's Watch): every replica records the same changes in revision order,
/// `Compact` trims them at the same point of the log everywhere, and a restarted replica
/// rebuilds what its log holds after the snapshot.
#[test]
fn every_replica_keeps_the_same_watch_history_and_compacts_it_through_the_log() {
    let mut g = Group::new(3, true, None);
    g.advance(Duration::from_secs(2));
    let mut id = 0;
    let mut submit = |g: &mut Group, op: Op| {
        id += 1;
        g.request(
            0,
            id,
            Request::Submit {
                commands: vec![KvCommand {
                    client: 7,
                    seq: id,
                    op,
                }
                .into()],
            },
        );
        g.run();
        g.advance(Duration::from_millis(100));
        assert!(matches!(g.take_reply(id), Reply::Done { .. }));
    };
    for (k, v) in [("a", "1"), ("b", "2"), ("a", "3")] {
        submit(
            &mut g,
            Op::Put {
                key: k.into(),
                value: v.into(),
            },
        );
    }
    submit(&mut g, Op::Delete { key: b"a".to_vec() });
    let want = vec![
        (1, "a".to_string(), false),
        (2, "b".to_string(), false),
        (3, "a".to_string(), false),
        (4, "a".to_string(), true),
    ];
    for d in &g.drivers {
        assert_eq!(changes(d, 1), Ok(want.clone()));
        assert_eq!(changes(d, 3), Ok(want[2..].to_vec()));
    }
    submit(&mut g, Op::Compact { revision: 3 });
    for d in &g.drivers {
        assert_eq!(
            changes(d, 2),
            Err(3),
            "below the compaction point: compacted"
        );
        assert_eq!(changes(d, 3), Ok(want[2..].to_vec()));
        assert_eq!(d.kv().revision(), 4, "Compact changes no revision");
    }
    // A restart replays the log (no snapshot yet): the same history, compacted alike.
    g.restart(2);
    g.advance(Duration::from_secs(1));
    assert_eq!(g.drivers[2].kv().revision(), 4);
    assert_eq!(changes(&g.drivers[2], 2), Err(3));
    assert_eq!(changes(&g.drivers[2], 3), Ok(want[2..].to_vec()));
}

fn submit_op(g: &mut Group, site: usize, id: u64, op: Op) -> Reply {
    g.request(
        site,
        id,
        Request::Submit {
            commands: vec![KvCommand {
                client: 9,
                seq: id,
                op,
            }
            .into()],
        },
    );
    g.run();
    g.advance(Duration::from_millis(50));
    g.take_reply(id)
}

fn has(g: &Group, site: usize, key: &str) -> bool {
    g.drivers[site].kv().get(key.as_bytes()).is_some()
}

/// TTL leases (etcd's leases): a lease's keys go when its TTL passes without a keep-alive —
/// not before — at every replica through the log; a keep-alive restarts the TTL; after the
/// leader fails, the new leader expires it from its own timer, no earlier than the TTL.
#[test]
fn ttl_leases_expire_through_the_log_never_early_and_survive_a_leader_change() {
    let mut g = Group::new(3, true, None);
    g.advance(Duration::from_secs(2));
    let ok = |r: Reply| assert!(matches!(r, Reply::Done { .. }), "{r:?}");
    ok(submit_op(&mut g, 0, 1, Op::LeaseGrant { id: 5, ttl: 2 }));
    ok(submit_op(
        &mut g,
        0,
        2,
        Op::LeasePut {
            key: b"lock".to_vec(),
            value: b"me".to_vec(),
            lease: 5,
        },
    ));
    // A put to a lease that does not exist changes nothing.
    match submit_op(
        &mut g,
        0,
        3,
        Op::LeasePut {
            key: b"x".to_vec(),
            value: b"1".to_vec(),
            lease: 6,
        },
    ) {
        Reply::Done { results, .. } => {
            assert!(matches!(&results[0].outcome, Outcome::Lease(i) if !i.existed))
        }
        r => panic!("{r:?}"),
    }
    assert!(!has(&g, 0, "x"));
    g.advance(Duration::from_millis(1500));
    assert!((0..3).all(|i| has(&g, i, "lock")), "not before the TTL");
    ok(submit_op(&mut g, 0, 4, Op::LeaseKeepAlive { id: 5 }));
    g.advance(Duration::from_millis(1500));
    assert!(
        (0..3).all(|i| has(&g, i, "lock")),
        "the keep-alive restarted the TTL"
    );
    g.advance(Duration::from_millis(1000));
    assert!((0..3).all(|i| !has(&g, i, "lock")), "expired everywhere");
    assert_eq!(g.drivers[1].kv().ttl_leases().count(), 0);

    // A leader change during the TTL: the lease still lasts its TTL, then goes.
    ok(submit_op(&mut g, 0, 5, Op::LeaseGrant { id: 7, ttl: 3 }));
    ok(submit_op(
        &mut g,
        0,
        6,
        Op::LeasePut {
            key: b"held".to_vec(),
            value: b"1".to_vec(),
            lease: 7,
        },
    ));
    let granted = g.now;
    g.drop = Some(|to, _| to == 0);
    // Site 0 is cut off: a new leader takes over.
    let mut t = Duration::ZERO;
    while !(g.drivers[1].core().is_leader() || g.drivers[2].core().is_leader()) {
        g.advance(Duration::from_millis(100));
        t += Duration::from_millis(100);
        assert!(t < Duration::from_secs(10), "a new leader");
        if g.now < granted + Duration::from_millis(2900) {
            assert!(has(&g, 1, "held") && has(&g, 2, "held"));
        }
    }
    while g.now < granted + Duration::from_millis(2900) {
        g.advance(Duration::from_millis(100));
        assert!(
            has(&g, 1, "held") && has(&g, 2, "held"),
            "never before the TTL"
        );
    }
    let elected = t;
    while has(&g, 1, "held") || has(&g, 2, "held") {
        g.advance(Duration::from_millis(100));
        assert!(
            g.now < granted + Duration::from_secs(3) + elected + Duration::from_secs(2),
            "the new leader expires it within TTL + election time ({elected:?}) + 2 s"
        );
    }
}
