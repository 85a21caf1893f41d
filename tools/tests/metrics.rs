//! Prometheus metrics over real processes (issue "Operate it"): every series the README lists is
//! served by some replica or proxy of a running cluster, and the figures move with the cluster
//! (fsync counts grow with writes, leader changes rise after a leader is killed with -9).
mod common;
#[path = "common/https.rs"]
mod https;

use common::*;
use https::{tls_config, Conn};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// GET the URL `http://host:port/metrics` (HTTP/1.0: the server closes after the answer).
fn scrape(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/')?;
    let mut s = std::net::TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET /{path} HTTP/1.0\r\nhost: {host}\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200")
        .then(|| body.to_string())
        .or_else(|| head.starts_with("HTTP/1.1 200").then(|| body.to_string()))
}

/// Sum of every sample of `name` (any labels).
fn sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn site_urls(c: &TestCluster) -> Vec<(String, String)> {
    let e = endpoints(c);
    e["sites"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(n, s)| (n.clone(), s["metrics"].as_str().unwrap().to_string()))
        .collect()
}

/// The series names the README's metric tables list.
fn documented() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `meridian_"))
        .filter_map(|l| l.split('`').next())
        .map(|n| format!("meridian_{n}"))
        .collect()
}

#[test]
fn every_documented_series_is_served_and_moves_with_the_cluster() {
    let c = TestCluster::up("metrics", &["--no-wan"]);
    let e = endpoints(&c);
    let tls = tls_config(&c.cfg.resolve(&c.cfg.tls.ca));
    let proxy = e["proxies"]["us-east-1"]["http"]
        .as_str()
        .unwrap()
        .to_string();
    let proxy_metrics = e["proxies"]["us-east-1"]["metrics"]
        .as_str()
        .unwrap()
        .to_string();
    let sites = site_urls(&c);
    let fsyncs = |sites: &[(String, String)]| -> f64 {
        sites
            .iter()
            .filter_map(|(_, u)| scrape(u))
            .map(|t| sum(&t, "meridian_fsync_seconds_count"))
            .sum()
    };
    let before = fsyncs(&sites);
    rt().block_on(async {
        let mut conn = Conn::open(&proxy, tls.clone()).await.unwrap();
        for i in 0..40 {
            let r = conn
                .request("PUT", &format!("/v1/kv/m{i}"), b"v".to_vec())
                .await
                .unwrap();
            assert_eq!(r.status, 200);
            let r = conn
                .request("GET", &format!("/v1/kv/m{i}"), vec![])
                .await
                .unwrap();
            assert_eq!(r.status, 200);
        }
        // A refused read, for the proxy's error outcome.
        let r = conn
            .request("GET", "/v1/kv/m0?read_mode=lease", vec![])
            .await
            .unwrap();
        assert_ne!(r.status, 200);
    });
    // A write sent straight to a follower is refused: a rejection at that replica.
    rt().block_on(async {
        let leaders = c.cfg.cluster.preferred_leader.clone().unwrap();
        let follower = c.cfg.sites.iter().find(|s| s.name != leaders).unwrap();
        let mut cl = meridian_replica::client::ReplicaClient::connect(&follower.addr, &c.tls)
            .await
            .unwrap();
        let _ = cl.submit(0, &[put(77, 1, "f", "x")]).await;
    });
    let after = fsyncs(&sites);
    assert!(
        after >= before + 40.0,
        "fsyncs went from {before} to {after} over 40 writes"
    );
    // Every documented series is served by some process.
    let mut texts: Vec<String> = sites.iter().filter_map(|(_, u)| scrape(u)).collect();
    let ptext = scrape(&proxy_metrics).expect("proxy metrics");
    texts.push(ptext.clone());
    let all = texts.join("\n");
    let names = documented();
    assert!(names.len() >= 25, "README lists {} series", names.len());
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| {
            !all.lines().any(|l| {
                l.strip_prefix(n.as_str())
                    .is_some_and(|r| r.starts_with('{') || r.starts_with(' ') || r.starts_with('_'))
            })
        })
        .collect();
    assert!(missing.is_empty(), "series without a sample: {missing:?}");
    // Sane values.
    assert!(sum(&all, "meridian_is_leader") >= c.cfg.cluster.shards as f64);
    assert!(sum(&all, "meridian_commands_accepted_total") >= 40.0);
    assert!(sum(&ptext, "meridian_proxy_requests_total") >= 80.0);
    assert!(sum(&all, "meridian_rejections_total") >= 1.0);
    let rtt = sum(&all, "meridian_peer_rtt_last_seconds");
    assert!(rtt > 0.0 && rtt < 20.0, "peer RTTs sum to {rtt} s");
    // Kill the leader: the survivors see leader changes.
    let leader = c.cfg.cluster.preferred_leader.clone().unwrap();
    let survivors: Vec<(String, String)> = sites
        .iter()
        .filter(|(n, _)| *n != leader)
        .cloned()
        .collect();
    let changes = |s: &[(String, String)]| -> f64 {
        s.iter()
            .filter_map(|(_, u)| scrape(u))
            .map(|t| sum(&t, "meridian_leader_changes_total"))
            .sum()
    };
    let before = changes(&survivors);
    c.kill9(&leader);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut now = before;
    while Instant::now() < deadline {
        now = changes(&survivors);
        if now >= before + c.cfg.cluster.shards as f64 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        now >= before + c.cfg.cluster.shards as f64,
        "leader changes at the survivors went from {before} to {now}"
    );
}
