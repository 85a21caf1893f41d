//! The userspace packet router of host-level WAN emulation (DESIGN.md §5). Every emulated host
//! is a network namespace whose only route to the others is a TUN device; the router holds
//! the other end of every TUN, reads each IPv4 packet, keeps it for its pair's one-way delay
//! (rtt/2 from the matrix), then writes it into the destination host's TUN. Loss and
//! partitions are set through a control socket; so is the router's own lateness read back.
use super::{Host, WanFile};
use anyhow::{Context, Result};
use meridian_core::Rng;
use serde_json::json;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long before a packet's release the sender thread stops sleeping and yields instead.
const EARLY: Duration = Duration::from_micros(150);

/// A packet waiting for its release time. Ordered by (release, arrival) so packets of one
/// pair (constant delay) leave in the order they came: per-link FIFO.
struct Pending {
    release: Instant,
    seq: u64,
    to: usize,
    bytes: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.release, self.seq) == (o.release, o.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.release, self.seq).cmp(&(o.release, o.seq))
    }
}

/// Faults set through the control socket, per ordered pair (from, to).
pub struct Faults {
    pub loss: Vec<Vec<f64>>,
    pub blocked: Vec<Vec<bool>>,
    rng: Rng,
}

impl Faults {
    pub fn new(n: usize) -> Faults {
        Faults {
            loss: vec![vec![0.0; n]; n],
            blocked: vec![vec![false; n]; n],
            rng: Rng::new(0x5eed),
        }
    }
    /// Whether a packet from `a` to `b` is dropped.
    pub fn drops(&mut self, a: usize, b: usize) -> bool {
        self.blocked[a][b] || (self.loss[a][b] > 0.0 && self.rng.chance(self.loss[a][b]))
    }
}

struct Stats {
    forwarded: u64,
    dropped: u64,
    unroutable: u64,
    lateness: hdrhistogram::Histogram<u64>,
}

struct Shared {
    queue: Mutex<(BinaryHeap<Reverse<Pending>>, u64)>,
    wake: Condvar,
    faults: Mutex<Faults>,
    stats: Mutex<Stats>,
}

/// Which endpoint (a host, or the gateway after them) an IPv4 packet is for (None: not one of
/// ours, or not IPv4).
pub fn destination(packet: &[u8], addrs: &[std::net::Ipv4Addr]) -> Option<usize> {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return None;
    }
    let dst = std::net::Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    addrs.iter().position(|&a| a == dst)
}

/// Applies one control command; returns the JSON reply.
pub fn control(cmd: &str, hosts: &[Host], faults: &mut Faults) -> serde_json::Value {
    let find = |s: &str| super::find_host(hosts, s);
    let words: Vec<&str> = cmd.split_whitespace().collect();
    let r: Result<()> = (|| {
        match words.as_slice() {
            ["heal"] => {
                let n = faults.loss.len();
                *faults = Faults::new(n);
            }
            ["loss", a, b, pct] => {
                let (a, b) = (find(a)?, find(b)?);
                let p: f64 = pct.parse().context("loss takes a percentage")?;
                anyhow::ensure!(
                    (0.0..=100.0).contains(&p),
                    "loss percentage outside 0..=100"
                );
                faults.loss[a][b] = p / 100.0;
                faults.loss[b][a] = p / 100.0;
            }
            ["block", from, to] => {
                // One direction only: packets from any of `from` to any of `to` are dropped,
                // the replies the other way still flow (a one-way partition).
                let set = |g: &str| g.split(',').map(find).collect::<Result<Vec<_>>>();
                let (from, to) = (set(from)?, set(to)?);
                for &a in &from {
                    for &b in &to {
                        anyhow::ensure!(a != b, "block: a host cannot be cut from itself");
                        faults.blocked[a][b] = true;
                    }
                }
            }
            ["partition", groups @ ..] if !groups.is_empty() => {
                // Groups of hosts separated by `|` or given as separate comma lists: traffic
                // between groups is cut, within a group it flows.
                let text = groups.join(" ");
                let sets: Vec<Vec<usize>> = text
                    .split(['|', ' '])
                    .filter(|g| !g.is_empty())
                    .map(|g| g.split(',').map(find).collect::<Result<Vec<_>>>())
                    .collect::<Result<_>>()?;
                anyhow::ensure!(sets.len() >= 2, "partition needs two or more groups");
                for (i, x) in sets.iter().enumerate() {
                    for (j, y) in sets.iter().enumerate() {
                        if i != j {
                            for &a in x {
                                for &b in y {
                                    faults.blocked[a][b] = true;
                                }
                            }
                        }
                    }
                }
            }
            _ => anyhow::bail!(
                "unknown command {cmd:?}: stats | heal | loss A B PERCENT | partition A,B|C,D | block FROM,.. TO,.."
            ),
        }
        Ok(())
    })();
    match r {
        Ok(()) => json!({"ok": true}),
        Err(e) => json!({"ok": false, "error": format!("{e:#}")}),
    }
}

/// Sets up the namespaces and TUNs, writes `wan.json`, and routes until SIGTERM/SIGINT; then
/// removes the namespaces.
pub fn run(dir: &Path, wan: WanFile, oneway_ms: Vec<Vec<f64>>) -> Result<()> {
    // Block the stop signals in every thread; the main thread waits for them below.
    let mut stop = nix::sys::signal::SigSet::empty();
    stop.add(nix::sys::signal::Signal::SIGTERM);
    stop.add(nix::sys::signal::Signal::SIGINT);
    stop.thread_block()?;
    let _ = nix::sys::prctl::set_timerslack(1_000);
    let hosts = wan.hosts.clone();
    let _ = std::process::Command::new("ip")
        .args(["link", "del", &wan.gateway_device])
        .output();
    // Endpoints: the hosts, then the gateway (a TUN left in this namespace, so tools here —
    // the benchmark's clients, `meridian status` — reach every host without delay).
    let addrs: Vec<std::net::Ipv4Addr> = hosts
        .iter()
        .map(|h| h.address)
        .chain([wan.gateway])
        .collect();
    let n = addrs.len();
    let mut devices = Vec::new();
    let open = |name: &str| -> Result<tun::Device> {
        let mut cfg = tun::Configuration::default();
        cfg.tun_name(name).layer(tun::Layer::L3).mtu(1500);
        cfg.platform_config(|p| {
            p.ensure_root_privileges(true);
        });
        tun::create(&cfg).with_context(|| format!("creating TUN {name}"))
    };
    let setup = (|| -> Result<()> {
        for h in &hosts {
            super::netns::add(&h.namespace)?;
            let dev = open(&h.device)?;
            super::netns::attach(&h.device, &h.namespace, &h.address.to_string(), 16)?;
            devices.push(Arc::new(dev));
        }
        let gw = open(&wan.gateway_device)?;
        super::netns::ip(&[
            "addr",
            "add",
            &format!("{}/16", wan.gateway),
            "dev",
            &wan.gateway_device,
        ])?;
        super::netns::ip(&["link", "set", &wan.gateway_device, "up"])?;
        devices.push(Arc::new(gw));
        Ok(())
    })();
    if let Err(e) = setup {
        for h in &hosts {
            super::netns::del(&h.namespace);
        }
        return Err(e);
    }
    let shared = Arc::new(Shared {
        queue: Mutex::new((BinaryHeap::new(), 0)),
        wake: Condvar::new(),
        faults: Mutex::new(Faults::new(n)),
        stats: Mutex::new(Stats {
            forwarded: 0,
            dropped: 0,
            unroutable: 0,
            lateness: hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3)?,
        }),
    });
    // The gateway is next to every host: no delay to or from it.
    let delays: Vec<Vec<Duration>> = (0..n)
        .map(|i| {
            (0..n)
                .map(|j| {
                    let ms = oneway_ms.get(i).and_then(|r| r.get(j)).copied();
                    Duration::from_secs_f64(ms.unwrap_or(0.0) / 1e3)
                })
                .collect()
        })
        .collect();
    for (i, dev) in devices.iter().enumerate() {
        let (dev, shared, addrs, delays) =
            (dev.clone(), shared.clone(), addrs.clone(), delays.clone());
        std::thread::Builder::new()
            .name(format!("wan-rx-{i}"))
            .spawn(move || {
                let mut buf = vec![0u8; 65_536];
                loop {
                    let len = match dev.recv(&mut buf) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::debug!("TUN {i}: {e}");
                            return;
                        }
                    };
                    let now = Instant::now();
                    let Some(to) = destination(&buf[..len], &addrs) else {
                        shared.stats.lock().expect("stats").unroutable += 1;
                        continue;
                    };
                    if to == i || shared.faults.lock().expect("faults").drops(i, to) {
                        shared.stats.lock().expect("stats").dropped += 1;
                        continue;
                    }
                    let mut q = shared.queue.lock().expect("queue");
                    q.1 += 1;
                    let seq = q.1;
                    q.0.push(Reverse(Pending {
                        release: now + delays[i][to],
                        seq,
                        to,
                        bytes: buf[..len].to_vec(),
                    }));
                    drop(q);
                    shared.wake.notify_one();
                }
            })?;
    }
    {
        let (devices, shared) = (devices.clone(), shared.clone());
        std::thread::Builder::new()
            .name("wan-tx".into())
            .spawn(move || {
                let mut q = shared.queue.lock().expect("queue");
                loop {
                    let next = q.0.peek().map(|p| p.0.release);
                    match next {
                        None => q = shared.wake.wait(q).expect("queue"),
                        Some(t) => {
                            let now = Instant::now();
                            if t > now + EARLY {
                                // Wake a little early: a timed wait oversleeps by ~0.1 ms.
                                q = shared
                                    .wake
                                    .wait_timeout(q, t - now - EARLY)
                                    .expect("queue")
                                    .0;
                                continue;
                            }
                            if t > now {
                                // The last stretch: yield until it is time (a new packet that
                                // is due sooner is seen at the next peek).
                                drop(q);
                                std::thread::yield_now();
                                q = shared.queue.lock().expect("queue");
                                continue;
                            }
                            let p = q.0.pop().expect("peeked").0;
                            drop(q);
                            let _ = devices[p.to].send(&p.bytes);
                            let late = Instant::now().saturating_duration_since(p.release);
                            {
                                let mut s = shared.stats.lock().expect("stats");
                                s.forwarded += 1;
                                let _ = s.lateness.record((late.as_micros() as u64).max(1));
                            }
                            q = shared.queue.lock().expect("queue");
                        }
                    }
                }
            })?;
    }
    // The control socket.
    let sock = dir.join("control.sock");
    let _ = std::fs::remove_file(&sock);
    let listener =
        UnixListener::bind(&sock).with_context(|| format!("binding {}", sock.display()))?;
    {
        let (shared, hosts) = (shared.clone(), hosts.clone());
        std::thread::Builder::new()
            .name("wan-control".into())
            .spawn(move || {
                for conn in listener.incoming().flatten() {
                    let mut w = match conn.try_clone() {
                        Ok(w) => w,
                        Err(_) => continue,
                    };
                    for line in BufReader::new(conn).lines().map_while(Result::ok) {
                        let reply = if line.trim() == "stats" {
                            let s = shared.stats.lock().expect("stats");
                            let q = |x: f64| s.lateness.value_at_quantile(x);
                            json!({"ok": true, "forwarded": s.forwarded, "dropped": s.dropped,
                                   "unroutable": s.unroutable,
                                   "lateness_us": {"p50": q(0.5), "p99": q(0.99), "p999": q(0.999), "max": s.lateness.max()}})
                        } else {
                            control(&line, &hosts, &mut shared.faults.lock().expect("faults"))
                        };
                        if writeln!(w, "{reply}").is_err() {
                            break;
                        }
                    }
                }
            })?;
    }
    let mut wan = wan;
    wan.router_pid = std::process::id();
    wan.control = sock.clone();
    let tmp = dir.join("wan.json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&wan)?)?;
    std::fs::rename(&tmp, dir.join("wan.json"))?;
    tracing::info!("routing between {n} hosts");
    let sig = stop.wait()?;
    tracing::info!("{sig:?}: removing the namespaces");
    for h in &hosts {
        super::netns::del(&h.namespace);
    }
    let _ = std::fs::remove_file(&sock);
    let _ = std::fs::remove_file(dir.join("wan.json"));
    std::process::exit(0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn hosts(n: usize) -> Vec<Host> {
        (0..n)
            .map(|i| Host {
                name: format!("h{i}"),
                namespace: format!("ns{i}"),
                device: format!("t{i}"),
                address: Ipv4Addr::new(10, 200, 0, i as u8 + 1),
                region: ["us-east-1", "eu-west-1", "ap-northeast-1"][i % 3].into(),
            })
            .collect()
    }

    #[test]
    fn routes_by_ipv4_destination_and_ignores_the_rest() {
        let h: Vec<Ipv4Addr> = hosts(3).iter().map(|h| h.address).collect();
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[16..20].copy_from_slice(&[10, 200, 0, 2]);
        assert_eq!(destination(&p, &h), Some(1));
        p[16..20].copy_from_slice(&[10, 200, 0, 9]);
        assert_eq!(destination(&p, &h), None);
        p[0] = 0x60; // IPv6
        assert_eq!(destination(&p, &h), None);
        assert_eq!(destination(&p[..10], &h), None);
    }

    #[test]
    fn control_sets_loss_and_partitions_and_heals() {
        let h = hosts(3);
        let mut f = Faults::new(3);
        assert_eq!(control("partition h0|h1,h2", &h, &mut f)["ok"], true);
        assert!(f.drops(0, 1) && f.drops(2, 0));
        assert!(!f.drops(1, 2));
        assert_eq!(control("heal", &h, &mut f)["ok"], true);
        assert!(!f.drops(0, 1));
        assert_eq!(control("loss h0 eu-west-1 100", &h, &mut f)["ok"], true);
        assert!(f.drops(0, 1) && f.drops(1, 0) && !f.drops(0, 2));
        assert_eq!(control("loss h0 h1 50", &h, &mut f)["ok"], true);
        let dropped = (0..10_000).filter(|_| f.drops(0, 1)).count();
        assert!((4_500..5_500).contains(&dropped), "{dropped}");
        for bad in [
            "loss h0 h9 5",
            "loss h0 h1 150",
            "partition h0",
            "jam",
            "block h0 h0",
            "block h0",
        ] {
            assert_eq!(control(bad, &h, &mut f)["ok"], false, "{bad}");
        }
    }

    #[test]
    fn one_way_blocks_and_bridges() {
        let h = hosts(3);
        let mut f = Faults::new(3);
        // One way: h0 cannot reach h1 or h2, but hears them.
        assert_eq!(control("block h0 h1,h2", &h, &mut f)["ok"], true);
        assert!(f.drops(0, 1) && f.drops(0, 2));
        assert!(!f.drops(1, 0) && !f.drops(2, 0) && !f.drops(1, 2));
        // A bridge: h0 and h2 are cut from each other, h1 reaches both.
        assert_eq!(control("heal", &h, &mut f)["ok"], true);
        assert_eq!(control("partition h0|h2", &h, &mut f)["ok"], true);
        assert!(f.drops(0, 2) && f.drops(2, 0));
        assert!(!f.drops(0, 1) && !f.drops(1, 0) && !f.drops(1, 2) && !f.drops(2, 1));
    }

    #[test]
    fn pending_packets_leave_in_release_then_arrival_order() {
        let t = Instant::now();
        let mut q = BinaryHeap::new();
        for (seq, ms) in [(1u64, 5u64), (2, 1), (3, 5), (4, 1)] {
            q.push(Reverse(Pending {
                release: t + Duration::from_millis(ms),
                seq,
                to: 0,
                bytes: vec![],
            }));
        }
        let order: Vec<u64> = std::iter::from_fn(|| q.pop().map(|p| p.0.seq)).collect();
        assert_eq!(order, vec![2, 4, 1, 3]);
    }
}
