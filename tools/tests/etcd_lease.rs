//! etcd TTL leases at every proxy over real processes (issue "etcd v3 API"): grant, put with a
//! lease, time-to-live with keys, keep-alive, revoke with the `etcd-client` crate; a key whose
//! lease is not kept alive goes after its TTL — never before — and within TTL + 1 s; a leader
//! kill -9 during the TTL neither releases it early nor keeps it past TTL + election time;
//! `etcdctl lease`, `lock` (a dead holder's lock passes on) and `elect`.
mod common;

use common::*;
use etcd_client::{Client, GetOptions, LeaseGrantOptions, LeaseTimeToLiveOptions, PutOptions};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Polls `key` through `c` (linearizable reads) until it is gone; returns when (or None
/// after `limit`).
async fn gone_at(c: &mut Client, key: &str, limit: Duration) -> Option<Instant> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if let Ok(r) = c.get(key, None).await {
            if r.kvs().is_empty() {
                return Some(Instant::now());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[test]
fn ttl_leases_hold_keys_for_their_ttl_and_release_them_through_the_log() {
    let c = TestCluster::up("etcd-lease", &["--no-wan"]);
    let urls = etcd_urls(&c);
    rt().block_on(async {
        let mut a = etcd_connect(&c, &urls[0]).await;
        let mut b = etcd_connect(&c, &urls[2]).await;
        // Grant, attach two keys (on whatever shards they live), read them back with their
        // lease, keep alive, revoke: both keys go.
        let g = a.lease_grant(30, None).await.unwrap();
        let id = g.id();
        assert!(id > 0 && g.ttl() == 30);
        let mut w = b.watch("svc/a", None).await.unwrap();
        assert!(w.message().await.unwrap().unwrap().created());
        for k in ["svc/a", "svc/b"] {
            a.put(k, "up", Some(PutOptions::new().with_lease(id)))
                .await
                .unwrap();
        }
        a.put("svc/plain", "p", None).await.unwrap();
        let r = b
            .get("svc/", Some(GetOptions::new().with_prefix()))
            .await
            .unwrap();
        let leases: Vec<(&[u8], i64)> = r.kvs().iter().map(|k| (k.key(), k.lease())).collect();
        assert_eq!(
            leases,
            [(&b"svc/a"[..], id), (b"svc/b", id), (b"svc/plain", 0)],
            "Range reports each key's lease"
        );
        let ev = loop {
            let m = w.message().await.unwrap().unwrap();
            if let Some(e) = m.events().first() {
                break e.kv().unwrap().lease();
            }
        };
        assert_eq!(ev, id, "a watch event reports the key's lease");
        let t = b
            .lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys()))
            .await
            .unwrap();
        assert_eq!(t.granted_ttl(), 30);
        assert!(t.ttl() > 25 && t.ttl() <= 30, "remaining {}", t.ttl());
        let keys: Vec<&[u8]> = t.keys().iter().map(|k| k.as_slice()).collect();
        assert_eq!(keys, [&b"svc/a"[..], b"svc/b"]);
        let (mut keeper, mut acks) = a.lease_keep_alive(id).await.unwrap();
        keeper.keep_alive().await.unwrap();
        let ack = acks.message().await.unwrap().unwrap();
        assert_eq!((ack.id(), ack.ttl()), (id, 30));
        let ls = b.leases().await.unwrap();
        assert!(ls.leases().iter().any(|l| l.id() == id));
        b.lease_revoke(id).await.unwrap();
        for k in ["svc/a", "svc/b"] {
            assert!(
                a.get(k, None).await.unwrap().kvs().is_empty(),
                "{k} revoked"
            );
        }
        assert_eq!(
            b.lease_time_to_live(id, None).await.unwrap().ttl(),
            -1,
            "a revoked lease"
        );
        // A put with a lease that does not exist is refused and changes nothing.
        let e = a
            .put("svc/c", "x", Some(PutOptions::new().with_lease(id)))
            .await
            .expect_err("no such lease");
        assert!(e.to_string().contains("lease not found"), "{e}");
        assert!(a.get("svc/c", None).await.unwrap().kvs().is_empty());
        // A taken id is refused.
        let g2 = a
            .lease_grant(5, Some(LeaseGrantOptions::new().with_id(4242)))
            .await
            .unwrap();
        assert_eq!(g2.id(), 4242);
        assert!(a
            .lease_grant(5, Some(LeaseGrantOptions::new().with_id(4242)))
            .await
            .is_err());

        // Expiry: no keep-alive after the grant. Not before the TTL, and within TTL + 1 s.
        let ttl = 2;
        let sent = Instant::now();
        let id = a.lease_grant(ttl, None).await.unwrap().id();
        a.put("lock/x", "me", Some(PutOptions::new().with_lease(id)))
            .await
            .unwrap();
        let at = gone_at(&mut b, "lock/x", Duration::from_secs(10))
            .await
            .expect("the key goes with its lease");
        let after = at - sent;
        assert!(
            after >= Duration::from_secs(ttl as u64),
            "released early: {after:?}"
        );
        assert!(
            after <= Duration::from_secs(ttl as u64 + 1),
            "released late: {after:?}"
        );
        eprintln!("TTL {ttl} s lease released after {after:?}");

        // A kept-alive lease outlives its TTL.
        let id = a.lease_grant(2, None).await.unwrap().id();
        a.put("lock/y", "me", Some(PutOptions::new().with_lease(id)))
            .await
            .unwrap();
        let (mut keeper, mut acks) = a.lease_keep_alive(id).await.unwrap();
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            keeper.keep_alive().await.unwrap();
            assert_eq!(acks.message().await.unwrap().unwrap().ttl(), 2);
        }
        assert_eq!(
            b.get("lock/y", None).await.unwrap().kvs().len(),
            1,
            "kept alive 4 s"
        );
    });
}

#[test]
fn a_leader_kill_during_the_ttl_neither_releases_early_nor_keeps_past_ttl_and_election() {
    let c = TestCluster::up("etcd-lease-kill", &["--no-wan"]);
    let urls = etcd_urls(&c);
    let leader = c.cfg.cluster.preferred_leader.clone().unwrap();
    rt().block_on(async {
        let mut a = etcd_connect(&c, &urls[0]).await;
        let mut b = etcd_connect(&c, &urls[1]).await;
        // Settle: the preferred site leads every shard.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let ttl = 4u64;
        let sent = Instant::now();
        let id = a.lease_grant(ttl as i64, None).await.unwrap().id();
        a.put("lock/k", "me", Some(PutOptions::new().with_lease(id)))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        c.kill9(&leader);
        let at = gone_at(&mut b, "lock/k", Duration::from_secs(30))
            .await
            .expect("the new leader expires it");
        let after = at - sent;
        eprintln!("TTL {ttl} s lease, leader killed at 1 s: released after {after:?}");
        assert!(
            after >= Duration::from_secs(ttl),
            "released early: {after:?}"
        );
        // Election on this cluster: a few seconds (lease 1 s, election timeout, catch-up).
        assert!(
            after <= Duration::from_secs(ttl + 8),
            "kept too long: {after:?}"
        );
    });
}

fn ctl(c: &TestCluster, url: &str) -> Command {
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={url}"))
        .arg(format!(
            "--cacert={}",
            c.cfg.resolve(&c.cfg.tls.ca).display()
        ));
    cmd
}

fn have_etcdctl() -> bool {
    Command::new("etcdctl").arg("version").output().is_ok()
}

fn run(mut cmd: Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn etcdctl_lease_lock_and_elect_work() {
    if !have_etcdctl() {
        eprintln!("SKIPPED: etcdctl is not installed (Debian's etcd-client; .ci/run installs it)");
        return;
    }
    // Four shards, the lock's and the election's prefixes co-located: their recipes compare
    // create revisions across the keys of a prefix, which needs the prefix on one shard
    // (README: revisions are per shard). `reg/` is not co-located.
    let c = TestCluster::up(
        "etcd-lock",
        &["--no-wan", "--shards", "4", "--colocate", "jobs/,primary/"],
    );
    let urls = etcd_urls(&c);
    // lease grant / put --lease / keep-alive --once / timetolive --keys / revoke
    let out = run({
        let mut x = ctl(&c, &urls[0]);
        x.args(["lease", "grant", "30"]);
        x
    });
    let id = out
        .split_whitespace()
        .nth(1)
        .expect("lease <id> granted")
        .to_string();
    assert!(out.contains("granted with TTL(30s)"), "{out}");
    run({
        let mut x = ctl(&c, &urls[1]);
        x.args(["put", "--lease", &id, "reg/a", "1"]);
        x
    });
    let out = run({
        let mut x = ctl(&c, &urls[2]);
        x.args(["lease", "keep-alive", "--once", &id]);
        x
    });
    assert!(out.contains("keepalived with TTL(30)"), "{out}");
    let out = run({
        let mut x = ctl(&c, &urls[2]);
        x.args(["lease", "timetolive", "--keys", &id]);
        x
    });
    assert!(
        out.contains("granted with TTL(30s)") && out.contains("reg/a"),
        "{out}"
    );
    run({
        let mut x = ctl(&c, &urls[0]);
        x.args(["lease", "revoke", &id]);
        x
    });
    let out = run({
        let mut x = ctl(&c, &urls[3]);
        x.args(["get", "reg/a"]);
        x
    });
    assert!(out.is_empty(), "revoked with its lease: {out}");

    // lock: a holder that dies (kill -9: no revoke) releases the lock within TTL + 1 s; the
    // waiter then runs its command.
    let mut holder = ctl(&c, &urls[0])
        .args(["lock", "--ttl=2", "jobs"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(holder.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            line.starts_with("jobs/"),
            "the holder prints its key: {line}"
        );
    }
    let waiter = ctl(&c, &urls[4])
        .args(["lock", "--ttl=2", "jobs", "echo", "acquired"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let mut waiter = waiter;
    assert!(
        waiter.try_wait().unwrap().is_none(),
        "the waiter got the lock while its holder was alive"
    );
    let died = Instant::now();
    let _ = Command::new("kill")
        .args(["-9", &holder.id().to_string()])
        .status();
    let _ = holder.wait();
    let out = waiter.wait_with_output().unwrap();
    let waited = died.elapsed();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("acquired"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("lock passed on {waited:?} after its holder died (TTL 2 s)");
    assert!(
        waited <= Duration::from_secs(3) + Duration::from_millis(500),
        "{waited:?}"
    );

    // elect: a candidate leads; an observer sees it.
    let mut cand = ctl(&c, &urls[1])
        .args(["elect", "primary", "node-1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let mut watcher = ctl(&c, &urls[3])
        .args(["elect", "-l", "primary"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let _ = cand.kill();
    let _ = watcher.kill();
    let seen = watcher.wait_with_output().unwrap();
    let _ = cand.wait();
    let text = String::from_utf8_lossy(&seen.stdout);
    assert!(
        text.contains("primary/") && text.contains("node-1"),
        "{text}"
    );
}
