//! Nemesis runs over real processes (issue "Reliability and security"): a cluster of 5 sites
//! (majority) or 9 (hierarchical 3x3), with or without the emulated WAN; clients through three
//! regional proxies record a register history (puts and linearizable gets of a few keys) while
//! a seeded schedule of faults runs — kill -9 of the leader, of a random minority, of every
//! replica at once, of a proxy; SIGSTOP/SIGCONT pauses of the leader or of followers — then
//! everything is healed and every key is read back. Each run passes when the history is
//! linearizable (so no acknowledged write was lost: the final reads would show it) and every
//! replica converged (same commit index, applied index, revision and state digest per shard).
//!
//! `MERIDIAN_NEMESIS_RUNS=N` runs N seeds per test instead of the CI slice.
mod common;
#[path = "common/https.rs"]
mod https;
#[path = "common/nemesis_workload.rs"]
mod workload;

use common::*;
use https::{tls_config, Conn};
use meridian_testkit::history::{HistoryOp, OpKind, Outcome as HOutcome};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use workload::*;

#[derive(Clone, Copy, Debug)]
enum Fault {
    KillLeader,
    KillMinority,
    KillAll,
    KillProxy,
    PauseLeader(u64),
    PauseFollowers(u64),
    /// Packet faults through the host-level WAN's router (`meridian wan ctl`): cut the
    /// leader's host off from every other host for ms; cut a random minority off; drop a share
    /// (percent) of the packets on every link of the leader for ms.
    PartitionLeader(u64),
    PartitionMinority(u64),
    LossyLeader(u64, u64),
    /// A bridge for ms: the sites split in two halves cut from each other (the leader in one),
    /// one site left reaching both.
    Bridge(u64),
    /// One direction only for ms: the leader's outgoing packets dropped (`true`) or its
    /// incoming ones.
    OneWay(bool, u64),
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn schedule(seed: u64) -> Vec<Fault> {
    let mut r = Rng(seed.wrapping_mul(0x9e3779b97f4a7c15) | 1);
    let n = 2 + r.below(2);
    (0..n)
        .map(|_| match r.below(6) {
            0 => Fault::KillLeader,
            1 => Fault::KillMinority,
            2 => Fault::KillAll,
            3 => Fault::KillProxy,
            4 => Fault::PauseLeader(500 + r.below(3500)),
            _ => Fault::PauseFollowers(500 + r.below(3500)),
        })
        .collect()
}

fn status(c: &TestCluster) -> Option<serde_json::Value> {
    status_json(c)
}

fn leader_of_shard0(c: &TestCluster) -> Option<String> {
    let v = status(c)?;
    v["sites"]
        .as_array()?
        .iter()
        .find(|s| s["shards"][0]["is_leader"] == true)
        .map(|s| s["name"].as_str().unwrap().to_string())
}

fn signal(c: &TestCluster, site: &str, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.pid(site)), sig);
}

/// Every reachable site reports the same commit index, applied index and revision for every
/// shard (polled: followers catch up after the heal).
fn converged(c: &TestCluster, limit: Duration) -> Result<(), String> {
    let end = Instant::now() + limit;
    let mut last = String::new();
    while Instant::now() < end {
        if let Some(v) = status(c) {
            let sites = v["sites"].as_array().cloned().unwrap_or_default();
            let all_up = sites.iter().all(|s| s["reachable"] == true);
            let mut same = all_up;
            for shard in 0..c.cfg.cluster.shards as usize {
                let states: Vec<(u64, u64, u64, String)> = sites
                    .iter()
                    .map(|s| {
                        let sh = &s["shards"][shard];
                        (
                            sh["commit_index"].as_u64().unwrap_or(0),
                            sh["applied_index"].as_u64().unwrap_or(0),
                            sh["revision"].as_u64().unwrap_or(0),
                            // The state itself, not only how far each site got.
                            sh["state_digest"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect();
                if states.windows(2).any(|w| w[0] != w[1]) {
                    same = false;
                    last = format!("shard {shard}: {states:?}");
                }
            }
            if same {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(format!("replicas did not converge: {last}"))
}

/// The packet-level schedule: two or three faults, at least one of them on the network.
fn packet_schedule(seed: u64) -> Vec<Fault> {
    let mut r = Rng(seed.wrapping_mul(0x9e3779b97f4a7c15) | 1);
    let n = 2 + r.below(2);
    let mut f: Vec<Fault> = (0..n)
        .map(|_| match r.below(7) {
            0 => Fault::PartitionLeader(2000 + r.below(4000)),
            1 => Fault::PartitionMinority(2000 + r.below(4000)),
            2 => Fault::LossyLeader(20 + r.below(50), 2000 + r.below(4000)),
            3 => Fault::Bridge(2000 + r.below(4000)),
            4 => Fault::OneWay(r.below(2) == 0, 2000 + r.below(4000)),
            5 => Fault::KillLeader,
            _ => Fault::PauseFollowers(500 + r.below(2000)),
        })
        .collect();
    if !f
        .iter()
        .any(|x| !matches!(x, Fault::KillLeader | Fault::PauseFollowers(_)))
    {
        f[0] = Fault::PartitionLeader(3000);
    }
    f
}

/// `MERIDIAN_TEST_CLOCK` for a run: each site's rate within 1 ± 0.004 and offset up to 5 s.
fn skews(seed: u64, sites: usize) -> String {
    let mut r = Rng(seed ^ 0xc10c);
    (0..sites)
        .map(|i| {
            let rate = 1.0 + (r.below(8001) as f64 - 4000.0) / 1e6;
            format!("{i}:rate={rate:.6},offset_ms={}", r.below(5001))
        })
        .collect::<Vec<_>>()
        .join(";")
}

fn wan_ctl(dir: &std::path::Path, cmd: &str) {
    let out = Command::new(bin())
        .args(["wan", "ctl", "--dir"])
        .arg(dir)
        .args(cmd.split_whitespace())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "wan ctl {cmd}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn run(seed: u64) {
    if let Err(e) = run_with(seed, schedule(seed), &[], None, None) {
        panic!("{e}");
    }
}

/// One run; `Err` says what failed (the history stays in the cluster directory). With
/// `host_wan` (a running `meridian wan` emulation of the five shipped regions) the cluster runs
/// on it — five sites, packets delayed by the router — and packet faults apply. With
/// `leader_clock` (`rate=..,offset_ms=..`) the preferred leader is restarted with that clock
/// (every other replica's unskewed) and leads again before the schedule starts.
fn run_with(
    seed: u64,
    faults: Vec<Fault>,
    env: &[(&str, &str)],
    host_wan: Option<&std::path::Path>,
    leader_clock: Option<&str>,
) -> Result<String, String> {
    let nine = seed % 3 == 2 && host_wan.is_none();
    let wan = seed.is_multiple_of(2);
    let mut args = vec![];
    if nine {
        args.extend(["--sites", "9"]);
    }
    let wan_arg = host_wan.map(|d| d.to_string_lossy().to_string());
    if let Some(d) = &wan_arg {
        args.extend(["--wan-hosts", d.as_str()]);
    } else if !wan {
        args.push("--no-wan");
    }
    let name = format!("nemesis-{seed}");
    // Every replica's consensus clock is skewed: a rate within 1 ± 0.004 (so any two stay
    // within the configured drift bound of 1 %) and an offset of up to 5 s, unless the test
    // sets its own.
    let sites_n = if nine { 9 } else { 5 };
    let skew = skews(seed, sites_n);
    let mut env: Vec<(&str, &str)> = env.to_vec();
    if leader_clock.is_none() && !env.iter().any(|(k, _)| *k == "MERIDIAN_TEST_CLOCK") {
        env.push(("MERIDIAN_TEST_CLOCK", skew.as_str()));
    }
    let mut c = TestCluster::up_env(&name, &args, &env);
    let mut clock_spec = env
        .iter()
        .find(|(k, _)| *k == "MERIDIAN_TEST_CLOCK")
        .map(|(_, v)| v.to_string())
        .unwrap_or_default();
    if let Some(settings) = leader_clock {
        let leader = c
            .cfg
            .cluster
            .preferred_leader
            .clone()
            .expect("a preferred leader");
        clock_spec = format!("{leader}:{settings}");
        c.env.retain(|(k, _)| k != "MERIDIAN_TEST_CLOCK");
        c.env
            .push(("MERIDIAN_TEST_CLOCK".into(), clock_spec.clone()));
        c.kill9(&leader);
        c.restart(&leader);
        let end = Instant::now() + Duration::from_secs(40);
        while leader_of_shard0(&c).as_ref() != Some(&leader) {
            if Instant::now() > end {
                return Err(format!(
                    "seed {seed}: {leader} did not lead again after its restart"
                ));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    let clock = clock_spec;
    let what = format!(
        "seed {seed}: {} sites, wan {}, clocks {clock:?}, faults {faults:?}",
        c.cfg.sites.len(),
        if host_wan.is_some() {
            "host".to_string()
        } else {
            wan.to_string()
        }
    );
    eprintln!("nemesis {what}");
    let e: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(c.dir.join("endpoints.json")).unwrap())
            .unwrap();
    let proxies: Vec<(String, String)> = {
        let all: Vec<(String, String)> = e["proxies"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(r, p)| (r.clone(), p["http"].as_str().unwrap().to_string()))
            .collect();
        // The preferred leader's region (its clients are cut off with the leader) and two
        // others.
        let lead = c
            .cfg
            .cluster
            .preferred_leader
            .as_ref()
            .and_then(|p| c.cfg.sites.iter().find(|s| &s.name == p))
            .map(|s| s.region.clone());
        let first = all
            .iter()
            .position(|(r, _)| Some(r) == lead.as_ref())
            .unwrap_or(0);
        let n = all.len();
        vec![
            all[first].clone(),
            all[(first + n / 2) % n].clone(),
            all[(first + n - 1) % n].clone(),
        ]
    };
    let tls = tls_config(&c.cfg.resolve(&c.cfg.tls.ca));
    let sites = c.site_names();
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let rt = rt();
    let mut tasks = Vec::new();
    for (pi, (_, url)) in proxies.iter().enumerate() {
        for w in 0..2u64 {
            tasks.push(rt.spawn(client(
                url.clone(),
                tls.clone(),
                pi as u64 * 10 + w,
                start,
                stop.clone(),
                false,
            )));
        }
    }
    // A reader of the registers in the preferred leader's region: never held up by a write
    // that cannot commit, it reads through whatever that region's proxy can reach all run
    // long (a deposed leader that still believes its lease serves it stale values).
    tasks.push(rt.spawn(client(
        proxies[0].1.clone(),
        tls.clone(),
        2,
        start,
        stop.clone(),
        true,
    )));
    // Two more clients through the etcd v3 edge of two of those proxies.
    let etcd_urls: Vec<String> = {
        let all = e["proxies"].as_object().unwrap();
        proxies[1..]
            .iter()
            .map(|(r, _)| all[r]["etcd"].as_str().unwrap().to_string())
            .collect()
    };
    let ca = std::fs::read_to_string(c.cfg.resolve(&c.cfg.tls.ca)).unwrap();
    for (i, url) in etcd_urls.iter().enumerate() {
        tasks.push(rt.spawn(etcd_client(
            url.clone(),
            ca.clone(),
            50 + i as u64,
            start,
            stop.clone(),
        )));
    }
    let stop_watch = Arc::new(AtomicBool::new(false));
    let watcher = rt.spawn(etcd_watcher(
        etcd_urls[0].clone(),
        ca.clone(),
        stop_watch.clone(),
    ));
    let mut rng = Rng(seed ^ 0xabcdef);
    let minority = sites.len().div_ceil(2) - 1;
    std::thread::sleep(Duration::from_secs(2));
    let proxy_name = |region: &str| format!("proxy-{region}");
    let killed_proxies = Arc::new(Mutex::new(Vec::new()));
    for f in &faults {
        match *f {
            Fault::KillLeader => {
                if let Some(l) = leader_of_shard0(&c) {
                    c.kill9(&l);
                    std::thread::sleep(Duration::from_secs(3));
                    c.restart(&l);
                }
            }
            Fault::KillMinority => {
                let mut pick = sites.clone();
                let mut chosen = Vec::new();
                for _ in 0..minority {
                    let i = rng.below(pick.len() as u64) as usize;
                    chosen.push(pick.remove(i));
                }
                for s in &chosen {
                    c.kill9(s);
                }
                std::thread::sleep(Duration::from_secs(3));
                for s in &chosen {
                    c.restart(s);
                }
            }
            Fault::KillAll => {
                for s in &sites {
                    c.kill9(s);
                }
                std::thread::sleep(Duration::from_secs(1));
                for s in &sites {
                    c.restart(s);
                }
            }
            Fault::KillProxy => {
                let (region, _) = &proxies[rng.below(3) as usize];
                let name = proxy_name(region);
                c.kill9(&name);
                killed_proxies.lock().unwrap().push(name.clone());
                std::thread::sleep(Duration::from_secs(1));
                c.restart_proxy(&name);
            }
            Fault::PauseLeader(ms) => {
                if let Some(l) = leader_of_shard0(&c) {
                    signal(&c, &l, nix::sys::signal::Signal::SIGSTOP);
                    std::thread::sleep(Duration::from_millis(ms));
                    signal(&c, &l, nix::sys::signal::Signal::SIGCONT);
                }
            }
            Fault::PartitionLeader(ms) | Fault::PartitionMinority(ms) => {
                let w = host_wan.expect("packet faults need the host WAN");
                let cut: Vec<String> = match *f {
                    Fault::PartitionLeader(_) => leader_of_shard0(&c).into_iter().collect(),
                    _ => {
                        let mut pick = sites.clone();
                        (0..minority)
                            .map(|_| pick.remove(rng.below(pick.len() as u64) as usize))
                            .collect()
                    }
                };
                if !cut.is_empty() {
                    // Sites are named after their regions, and so are the hosts.
                    let rest: Vec<&String> = sites.iter().filter(|s| !cut.contains(s)).collect();
                    let rest: Vec<&str> = rest.iter().map(|s| s.as_str()).collect();
                    wan_ctl(
                        w,
                        &format!("partition {}|{}", cut.join(","), rest.join(",")),
                    );
                    std::thread::sleep(Duration::from_millis(ms));
                    wan_ctl(w, "heal");
                }
            }
            Fault::LossyLeader(pct, ms) => {
                let w = host_wan.expect("packet faults need the host WAN");
                if let Some(l) = leader_of_shard0(&c) {
                    for s in sites.iter().filter(|s| **s != l) {
                        wan_ctl(w, &format!("loss {l} {s} {pct}"));
                    }
                    std::thread::sleep(Duration::from_millis(ms));
                    wan_ctl(w, "heal");
                }
            }
            Fault::Bridge(ms) => {
                let w = host_wan.expect("packet faults need the host WAN");
                if let Some(l) = leader_of_shard0(&c) {
                    let mut others: Vec<String> =
                        sites.iter().filter(|s| **s != l).cloned().collect();
                    let bridge = others.remove(rng.below(others.len() as u64) as usize);
                    let half = others.len() / 2;
                    let mut side = vec![l.clone()];
                    side.extend(others.drain(..half.saturating_sub(1).max(1)));
                    eprintln!("bridge {bridge} between {side:?} and {others:?}");
                    wan_ctl(
                        w,
                        &format!("partition {}|{}", side.join(","), others.join(",")),
                    );
                    std::thread::sleep(Duration::from_millis(ms));
                    wan_ctl(w, "heal");
                }
            }
            Fault::OneWay(outgoing, ms) => {
                let w = host_wan.expect("packet faults need the host WAN");
                if let Some(l) = leader_of_shard0(&c) {
                    let rest: Vec<&str> = sites
                        .iter()
                        .filter(|s| **s != l)
                        .map(|s| s.as_str())
                        .collect();
                    let rest = rest.join(",");
                    if outgoing {
                        wan_ctl(w, &format!("block {l} {rest}"));
                    } else {
                        wan_ctl(w, &format!("block {rest} {l}"));
                    }
                    std::thread::sleep(Duration::from_millis(ms));
                    wan_ctl(w, "heal");
                }
            }
            Fault::PauseFollowers(ms) => {
                let leader = leader_of_shard0(&c);
                let followers: Vec<&String> = sites
                    .iter()
                    .filter(|s| Some(*s) != leader.as_ref())
                    .take(minority)
                    .collect();
                for s in &followers {
                    signal(&c, s, nix::sys::signal::Signal::SIGSTOP);
                }
                std::thread::sleep(Duration::from_millis(ms));
                for s in &followers {
                    signal(&c, s, nix::sys::signal::Signal::SIGCONT);
                }
            }
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    // Healed: a little more load, then stop and read every key back.
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let mut history = Vec::new();
    for t in tasks {
        history.extend(rt.block_on(t).unwrap());
    }
    let finals = rt.block_on(async {
        let mut out: Vec<HistoryOp> = Vec::new();
        let end = Instant::now() + Duration::from_secs(30);
        let keys = (0..REGISTERS)
            .map(|k| format!("nem-{k}"))
            .chain((0..LISTS).map(|k| format!("nem-list-{k}")))
            .chain((0..ETCD_REGISTERS).map(|k| format!("nem-etcd-{k}")));
        for key in keys {
            loop {
                let invoke = start.elapsed().as_nanos() as u64;
                let r = match Conn::open(&proxies[0].1, tls.clone()).await {
                    Ok(mut conn) => conn
                        .request("GET", &format!("/v1/kv/{key}"), vec![])
                        .await
                        .ok(),
                    Err(_) => None,
                };
                let complete = start.elapsed().as_nanos() as u64;
                if let Some(r) = r.filter(|r| r.status == 200 || r.status == 404) {
                    out.push(HistoryOp {
                        process: 99,
                        op: OpKind::Get,
                        key: key.clone(),
                        value: None,
                        expect: None,
                        invoke_ns: invoke,
                        complete_ns: complete,
                        outcome: HOutcome::Ok,
                        read: (r.status == 200)
                            .then(|| String::from_utf8_lossy(&r.body).into_owned()),
                        path: None,
                    });
                    break;
                }
                if Instant::now() >= end {
                    return Err(format!("{what}: {key} never read back after the heal"));
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
        Ok::<_, String>(out)
    })?;
    history.extend(finals);
    // The watcher catches up with the final state, then stops.
    std::thread::sleep(Duration::from_secs(5));
    stop_watch.store(true, Ordering::Relaxed);
    let watched = rt.block_on(watcher).unwrap();
    let file = c.dir.join("history.jsonl");
    std::fs::write(&file, meridian_testkit::history::to_jsonl(&history)).unwrap();
    let acked = |kind: OpKind| {
        history
            .iter()
            .filter(|o| o.op == kind && o.outcome == HOutcome::Ok)
            .count()
    };
    let (acked, appended) = (acked(OpKind::Put), acked(OpKind::Append));
    let through_etcd = history
        .iter()
        .filter(|o| o.process >= 50 && o.process < 99 && o.outcome == HOutcome::Ok)
        .count();
    if through_etcd < 10 {
        return Err(format!(
            "{what}: only {through_etcd} operations through the etcd API"
        ));
    }
    if acked < 10 || appended < 10 {
        return Err(format!(
            "{what}: only {acked} acknowledged puts and {appended} appends"
        ));
    }
    let bad: Vec<_> = meridian_testkit::linearizability::check(&history)
        .into_iter()
        .filter(|v| !v.linearizable)
        .collect();
    if !bad.is_empty() {
        return Err(format!(
            "{what}: not linearizable: {bad:?} (history in {})",
            file.display()
        ));
    }
    let watch_events = check_watched(&watched, &history).map_err(|e| format!("{what}: {e}"))?;
    converged(&c, Duration::from_secs(30)).map_err(|e| format!("{what}: {e}"))?;
    let done = format!(
        "nemesis {what}: {} ops ({through_etcd} through the etcd API), {acked} acknowledged puts, {appended} appends, linearizable, converged; a watcher saw {watch_events} events of the etcd registers, in order, none lost",
        history.len()
    );
    eprintln!("{done}");
    Ok(done)
}

fn runs(default: u64) -> u64 {
    std::env::var("MERIDIAN_NEMESIS_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Seeds 0, 1, 3, 4, 6, ...: five sites (majority), WAN on for even seeds.
#[test]
fn nemesis_five_sites() {
    let mut done = 0;
    let mut seed = 0;
    while done < runs(14) {
        if seed % 3 != 2 {
            run(seed);
            done += 1;
        }
        seed += 1;
    }
}

/// Seeds 2, 5, 8, ...: nine sites (hierarchical 3x3).
#[test]
fn nemesis_nine_sites() {
    for i in 0..runs(6) {
        run(2 + 3 * i);
    }
}

/// The harness has teeth: with replicas that acknowledge before their writes are on disk
/// (`MERIDIAN_PLANTED_BUG=ack-before-durable`), killing every replica loses acknowledged
/// writes, and the run fails.
#[test]
fn nemesis_catches_replicas_that_acknowledge_before_durable() {
    let r = run_with(
        1,
        vec![Fault::KillAll],
        &[("MERIDIAN_PLANTED_BUG", "ack-before-durable")],
        None,
        None,
    );
    let e = r.expect_err("the planted bug went unnoticed");
    assert!(e.contains("not linearizable"), "{e}");
}

/// Takes a `meridian wan` emulation down however the test ends.
struct Emulation(std::path::PathBuf);
impl Drop for Emulation {
    fn drop(&mut self) {
        let _ = Command::new(bin())
            .args(["wan", "down", "--dir"])
            .arg(&self.0)
            .output();
    }
}

/// The clock skew has teeth: a 9 s partition of the leader (with its region's proxy, which
/// still reaches it) is survived when the leader's clock runs 0.7 % slow — inside the drift
/// bound — and found out when it runs 10x slow: the deposed leader then believes its lease for
/// ten times longer than its followers honour it and serves stale lease reads to its own
/// region (a reader there reads all run long, so it meets them whatever the timing). Root only
/// (host WAN): SKIPPED otherwise.
#[test]
fn nemesis_catches_a_leader_clock_outside_the_drift_bound() {
    if !host_wan_available() {
        eprintln!("SKIPPED: the leader partition needs root and /dev/net/tun (meridian wan)");
        return;
    }
    for (rate, must_fail) in [("0.993", false), ("0.1", true)] {
        let dir = temp_dir(&format!("nemesis-clock-{}", rate.replace('.', "")));
        let _guard = wan_up(&dir);
        let clock = format!("rate={rate}");
        let r = run_with(
            1100,
            vec![Fault::PartitionLeader(9000)],
            &[],
            Some(&dir),
            Some(&clock),
        );
        match (r, must_fail) {
            (Ok(_), false) => {}
            (Err(e), true) => {
                eprintln!("rate {rate}: caught as it must be: {e}");
                assert!(e.contains("not linearizable"), "rate {rate}: {e}")
            }
            (Ok(done), true) => panic!("a 10x slow leader clock went unnoticed: {done}"),
            (Err(e), false) => panic!("rate {rate} is inside the drift bound: {e}"),
        }
    }
}

fn host_wan_available() -> bool {
    nix::unistd::geteuid().is_root() && std::path::Path::new("/dev/net/tun").exists()
}

/// `meridian wan up` of five hosts in `dir`, taken down when the guard drops.
fn wan_up(dir: &std::path::Path) -> Emulation {
    let out = Command::new(bin())
        .args(["wan", "up", "--hosts", "5", "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Emulation(dir.to_path_buf())
}

/// Packet-level faults on real processes: five sites and their proxies on a host-level WAN
/// emulation (one network namespace per region, every packet held rtt/2 by the router); the
/// schedule partitions the leader away, cuts off a minority, and drops 20-70 % of the leader's
/// packets, between kills and pauses. Root only (network namespaces, TUN): SKIPPED otherwise.
#[test]
fn nemesis_packet_faults_on_the_host_wan() {
    if !host_wan_available() {
        eprintln!("SKIPPED: packet faults need root and /dev/net/tun (meridian wan)");
        return;
    }
    // CI: seeds whose schedules hold a one-way cut each way, two bridges and a minority
    // partition; a soak (`MERIDIAN_NEMESIS_RUNS`) takes 1000, 1002, 1004, ...
    let seeds: Vec<u64> = match std::env::var("MERIDIAN_NEMESIS_RUNS") {
        Ok(_) => (0..runs(3)).map(|i| 1000 + 2 * i).collect(),
        Err(_) => vec![1002, 1012, 1016],
    };
    for seed in seeds {
        let dir = temp_dir(&format!("nemesis-wan-{seed}"));
        let _guard = wan_up(&dir);
        if let Err(e) = run_with(seed, packet_schedule(seed), &[], Some(&dir), None) {
            panic!("{e}");
        }
    }
}

/// The watch check has teeth: a lost acknowledged put, a duplicate, an out-of-order event and
/// a value nobody put are each reported; compaction waives completeness, not order.
#[test]
fn the_watch_check_catches_lost_duplicate_and_phantom_events() {
    let op = |key: &str, value: &str, outcome: HOutcome| HistoryOp {
        process: 50,
        op: OpKind::Put,
        key: key.into(),
        value: Some(value.into()),
        expect: None,
        invoke_ns: 0,
        complete_ns: 1,
        outcome,
        read: None,
        path: None,
    };
    let history = vec![
        op("nem-etcd-0", "a", HOutcome::Ok),
        op("nem-etcd-0", "b", HOutcome::Ok),
        op("nem-etcd-0", "c", HOutcome::Unknown),
    ];
    let w = |ev: &[(i64, &str)], compacted: bool| -> Watched {
        let mut v: Watched = vec![(Vec::new(), false); ETCD_REGISTERS as usize];
        v[0] = (
            ev.iter().map(|(r, s)| (*r, s.to_string())).collect(),
            compacted,
        );
        v
    };
    assert_eq!(
        check_watched(&w(&[(4, "a"), (8, "b")], false), &history),
        Ok(2)
    );
    assert_eq!(
        check_watched(&w(&[(4, "a"), (8, "b"), (12, "c")], false), &history),
        Ok(3),
        "an unknown put may show"
    );
    let err = |ev: &[(i64, &str)], c| check_watched(&w(ev, c), &history).unwrap_err();
    assert!(err(&[(4, "a")], false).contains("never seen"));
    assert!(err(&[(4, "a"), (4, "a"), (8, "b")], false).contains("duplicate"));
    assert!(err(&[(8, "b"), (4, "a")], false).contains("out of order"));
    assert!(err(&[(4, "a"), (8, "b"), (9, "z")], false).contains("nobody put"));
    assert_eq!(check_watched(&w(&[(8, "b")], true), &history), Ok(1));
    assert!(err(&[(8, "b"), (8, "b")], true).contains("duplicate"));
}
