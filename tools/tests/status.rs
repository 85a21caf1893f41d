//! `meridian status` alerts over real processes (issue "Operate it"): each alert fires and
//! clears again — the leader far from the demand, measured RTTs against a changed plan, two
//! sites of five lost, lease churn from repeated leader kills — and a paused replica makes
//! status answer within its timeout.
mod common;
#[path = "common/https.rs"]
mod https;

use common::*;
use https::{tls_config, Conn};
use std::process::Command;
use std::time::{Duration, Instant};

fn status(c: &TestCluster, extra: &[&str]) -> (i32, serde_json::Value) {
    let out = Command::new(bin())
        .args(["status", "--json", "--dir"])
        .arg(&c.dir)
        .args(extra)
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status --json: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (out.status.code().unwrap_or(-1), v)
}

fn kinds(v: &serde_json::Value) -> Vec<String> {
    v["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap().to_string())
        .collect()
}

/// Polls status until `pred` holds (or panics after `limit`), returning the last report.
fn until(
    c: &TestCluster,
    extra: &[&str],
    limit: Duration,
    what: &str,
    pred: impl Fn(i32, &[String]) -> bool,
) -> serde_json::Value {
    let end = Instant::now() + limit;
    loop {
        let (code, v) = status(c, extra);
        let k = kinds(&v);
        if pred(code, &k) {
            return v;
        }
        assert!(
            Instant::now() < end,
            "{what} within {limit:?}; last: exit {code}, alerts {}",
            v["alerts"]
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `clients` writers through `region`'s proxy for `secs` seconds, on a thread of their own.
fn spawn_load(
    c: &TestCluster,
    region: &str,
    clients: usize,
    secs: u64,
) -> std::thread::JoinHandle<()> {
    let tls = tls_config(&c.cfg.resolve(&c.cfg.tls.ca));
    let url = proxy_url(c, region);
    std::thread::spawn(move || {
        rt().block_on(async {
            let end = Instant::now() + Duration::from_secs(secs);
            let tasks: Vec<_> = (0..clients)
                .map(|w| {
                    let (url, tls) = (url.clone(), tls.clone());
                    tokio::spawn(async move {
                        let mut conn = Conn::open(&url, tls).await.unwrap();
                        let mut i = 0;
                        while Instant::now() < end {
                            i += 1;
                            let _ = conn
                                .request("PUT", &format!("/v1/kv/s{w}-{}", i % 16), b"v".to_vec())
                                .await;
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        })
    })
}

#[test]
fn every_alert_fires_and_clears() {
    let mut c = TestCluster::up("status", &["--lease-auto-interval-ms", "1000"]);
    until(
        &c,
        &[],
        Duration::from_secs(20),
        "a healthy cluster",
        |code, k| code == 0 && k.is_empty(),
    );

    // The leader far from the demand: every write comes from Tokyo, 150 ms from the leader.
    let tokyo = spawn_load(&c, "ap-northeast-1", 16, 12);
    let v = until(
        &c,
        &[],
        Duration::from_secs(12),
        "leader_placement",
        |code, k| code == 1 && k.iter().any(|k| k == "leader_placement"),
    );
    tokyo.join().unwrap();
    let msg = v["alerts"].to_string();
    assert!(msg.contains("us-east-1"), "{msg}");
    // The demand moves to the leader's region: the alert clears as the old demand decays.
    let east = spawn_load(&c, "us-east-1", 16, 12);
    until(
        &c,
        &[],
        Duration::from_secs(12),
        "leader_placement to clear",
        |_, k| !k.iter().any(|k| k == "leader_placement"),
    );
    east.join().unwrap();

    // Measured RTTs against a plan whose us-east-1 <-> eu-west-1 figure is wrong.
    let m = meridian_topology::RttMatrix::embedded();
    let regions: Vec<String> = c.cfg.sites.iter().map(|s| s.region.clone()).collect();
    let mut csv = format!("region,{}\n", regions.join(","));
    for a in &regions {
        let row: Vec<String> = regions
            .iter()
            .map(|b| {
                let v = m.rtt_by_name(a, b).unwrap();
                let odd = (a == "us-east-1" && b == "eu-west-1")
                    || (a == "eu-west-1" && b == "us-east-1");
                format!("{}", if odd { 300.0 } else { v })
            })
            .collect();
        csv += &format!("{a},{}\n", row.join(","));
    }
    let plan = c.dir.join("planned.csv");
    std::fs::write(&plan, csv).unwrap();
    let plan = plan.to_str().unwrap().to_string();
    let (code, v) = status(&c, &["--planned-rtt", &plan]);
    assert_eq!(code, 1);
    let drift = v["alerts"].to_string();
    assert!(
        kinds(&v).contains(&"rtt_drift".to_string()) && drift.contains("us-east-1-eu-west-1"),
        "{drift}"
    );
    let (code, v) = status(&c, &["--planned-rtt", "embedded"]);
    assert!(
        !kinds(&v).contains(&"rtt_drift".to_string()),
        "exit {code}: {}",
        v["alerts"]
    );

    // A paused replica: status answers within its timeout and names it.
    let paused = c.pid("eu-central-1");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(paused),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    let t0 = Instant::now();
    let (code, v) = status(&c, &[]);
    let took = t0.elapsed();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(paused),
        nix::sys::signal::Signal::SIGCONT,
    )
    .unwrap();
    assert_eq!(code, 1);
    assert!(
        kinds(&v).contains(&"unreachable".to_string()),
        "{}",
        v["alerts"]
    );
    assert!(took < Duration::from_secs(10), "status took {took:?}");

    // Two sites of five lost: no margin left; both back: the alerts clear.
    c.kill9("eu-west-1");
    c.kill9("ap-northeast-1");
    let v = until(
        &c,
        &[],
        Duration::from_secs(10),
        "quorum_margin",
        |code, k| code == 1 && k.iter().any(|k| k == "quorum_margin"),
    );
    assert_eq!(v["quorum_margin"], 0);
    c.restart("eu-west-1");
    c.restart("ap-northeast-1");
    until(
        &c,
        &[],
        Duration::from_secs(30),
        "the alerts to clear",
        // The kills and the pause above may have moved leadership: lease_churn may rightly
        // fire now (it is made to fire, and clear, below).
        |_, k| k.iter().all(|k| k == "lease_churn"),
    );

    // Lease churn: shard 0's leader killed twice; the sites see its leadership (and so its
    // lease) change hands at least three times in the window.
    for _ in 0..2 {
        // Leadership may be moving (the preferred leader takes it back): wait for a leader.
        let end = Instant::now() + Duration::from_secs(30);
        let leader = loop {
            let (_, v) = status(&c, &[]);
            let found = v["sites"].as_array().and_then(|sites| {
                sites
                    .iter()
                    .find(|s| s["shards"][0]["is_leader"] == true)
                    .map(|s| s["name"].as_str().unwrap().to_string())
            });
            if let Some(l) = found {
                break l;
            }
            assert!(Instant::now() < end, "shard 0 never had a leader");
            std::thread::sleep(Duration::from_millis(300));
        };
        c.kill9(&leader);
        until(
            &c,
            &[],
            Duration::from_secs(20),
            "another leader",
            |_, k| !k.iter().any(|k| k == "no_leader"),
        );
        std::thread::sleep(Duration::from_secs(2));
        c.restart(&leader);
        until(
            &c,
            &[],
            Duration::from_secs(30),
            "every site back",
            |_, k| !k.iter().any(|k| k == "unreachable" || k == "no_leader"),
        );
    }
    let v = until(
        &c,
        &[],
        Duration::from_secs(30),
        "lease_churn",
        |code, k| code == 1 && k.iter().any(|k| k == "lease_churn"),
    );
    let msg = v["alerts"].to_string();
    assert!(msg.contains("leader_changed"), "{msg}");
    // The same history, judged over a window the changes are older than: clear.
    std::thread::sleep(Duration::from_secs(2));
    until(
        &c,
        &["--churn-window", "1"],
        Duration::from_secs(30),
        "lease_churn to clear once the changes are older than the window",
        |_, k| !k.iter().any(|k| k == "lease_churn"),
    );
}
