//! Client connection limits at the proxy over real processes (issue "Reliability and
//! security"): slowloris connections — TLS done, then one header byte every few seconds — and
//! truncated ClientHellos are closed within their timeouts while a well-behaved client is served
//! throughout; a proxy out of file descriptors logs it, backs off instead of spinning, and
//! serves again once connections close.
mod common;
#[path = "common/https.rs"]
mod https;

use common::*;
use https::{tls_config, Conn};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// CPU seconds (user + system) the process has used, from /proc.
fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn raise_own_fd_limit() {
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard).unwrap();
}

/// A well-behaved client: a GET every 50 ms until `until`; returns (served, failed).
async fn good_client(
    url: String,
    tls: std::sync::Arc<rustls::ClientConfig>,
    until: Instant,
) -> (u32, u32) {
    let (mut ok, mut bad) = (0, 0);
    let mut conn = None;
    while Instant::now() < until {
        if conn.is_none() {
            conn = Conn::open(&url, tls.clone()).await.ok();
        }
        match &mut conn {
            Some(c) => match c.request("GET", "/v1/kv/limits-key", vec![]).await {
                Ok(r) if r.status == 200 || r.status == 404 => ok += 1,
                _ => {
                    bad += 1;
                    conn = None;
                }
            },
            None => bad += 1,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (ok, bad)
}

/// The tests here load the machine with thousands of connections: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn slowloris_and_truncated_handshakes_are_closed_while_others_are_served() {
    let _one = serial();
    raise_own_fd_limit();
    let c = TestCluster::up("limits-slow", &["--no-wan"]);
    let url = proxy_url(&c, "us-east-1");
    let addr = url.trim_start_matches("https://").to_string();
    let tls = tls_config(&c.cfg.resolve(&c.cfg.tls.ca));
    let limits = &c.cfg.limits;
    let header = Duration::from_millis(limits.header_timeout_ms);
    let handshake = Duration::from_millis(limits.handshake_timeout_ms);
    rt().block_on(async {
        // The cluster is ready when a write goes through.
        let mut conn = Conn::open(&url, tls.clone()).await.unwrap();
        let end = Instant::now() + Duration::from_secs(20);
        while conn
            .request("PUT", "/v1/kv/limits-key", b"v".to_vec())
            .await
            .map_or(true, |r| r.status != 200)
        {
            assert!(Instant::now() < end, "no write went through");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let t0 = Instant::now();
        let serve_until = t0 + header.max(handshake) + Duration::from_secs(6);
        let good = tokio::spawn(good_client(url.clone(), tls.clone(), serve_until));
        let mut attackers = Vec::new();
        // 2,000 slowloris: a TLS session, then one byte of a request's headers every 5 s (the
        // pauses are longer than the proxy's 1 s park delay: parking must not restart the
        // header timeout).
        for i in 0..2000 {
            let (addr, tls) = (addr.clone(), tls.clone());
            attackers.push(tokio::spawn(async move {
                let tcp = tokio::net::TcpStream::connect(&addr).await.ok()?;
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let mut s = tokio_rustls::TlsConnector::from(tls)
                    .connect(name, tcp)
                    .await
                    .ok()?;
                let opened = Instant::now();
                let head = format!("GET /v1/kv/slow{i} HTTP/1.1\r\nhost: x\r\nx-slow: ");
                for b in head.bytes().chain(std::iter::repeat(b'a')) {
                    if s.write_all(&[b]).await.is_err() {
                        return Some(opened.elapsed());
                    }
                    let mut buf = [0u8; 512];
                    match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => return Some(opened.elapsed()),
                        // The server answered (a 408 or an error) and will close.
                        Ok(Ok(_)) => {}
                        Err(_) => {}
                    }
                    if opened.elapsed() > Duration::from_secs(120) {
                        return None;
                    }
                }
                None
            }));
        }
        // 1,000 truncated ClientHellos: the first bytes of a handshake, then silence.
        for _ in 0..1000 {
            let addr = addr.clone();
            attackers.push(tokio::spawn(async move {
                let mut tcp = tokio::net::TcpStream::connect(&addr).await.ok()?;
                let opened = Instant::now();
                tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
                    .await
                    .ok()?;
                let mut buf = [0u8; 64];
                loop {
                    match tokio::time::timeout(Duration::from_secs(120), tcp.read(&mut buf)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => return Some(opened.elapsed()),
                        Ok(Ok(_)) => continue,
                        Err(_) => return None,
                    }
                }
            }));
        }
        let mut closed_after = Vec::new();
        for a in attackers {
            closed_after.push(a.await.unwrap());
        }
        let never = closed_after.iter().filter(|c| c.is_none()).count();
        assert_eq!(never, 0, "{never} attacking connections were never closed");
        let worst = closed_after.iter().flatten().max().unwrap();
        // Each is closed by its own timeout (header or handshake), with slack for a loaded machine.
        let limit = header.max(handshake) + Duration::from_secs(10);
        assert!(
            *worst <= limit,
            "an attacker held a connection for {worst:?} (limit {limit:?})"
        );
        let (ok, bad) = good.await.unwrap();
        assert!(ok > 20, "the good client was served {ok} times");
        assert_eq!(
            bad, 0,
            "the good client failed {bad} times while under attack"
        );
    });
    // Each was closed by the limit it broke, and counted.
    let text = scrape_proxy_metrics(&c, "us-east-1");
    let closed = |reason: &str| -> f64 {
        text.lines()
            .find(|l| {
                l.starts_with("meridian_proxy_connections_closed_total")
                    && l.contains(&format!("reason=\"{reason}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(closed("handshake_timeout") >= 1000.0, "{text}");
    assert!(closed("header_timeout") >= 2000.0, "{text}");
}

#[test]
fn out_of_descriptors_the_proxy_backs_off_logs_and_recovers() {
    let _one = serial();
    raise_own_fd_limit();
    let c = TestCluster::up("limits-fd", &["--no-wan"]);
    let url = proxy_url(&c, "us-east-1");
    let addr = url.trim_start_matches("https://").to_string();
    let tls = tls_config(&c.cfg.resolve(&c.cfg.tls.ca));
    let pid = c.pid("proxy-us-east-1");
    let out = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), "--nofile=1024:1024"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    rt().block_on(async {
        let mut idle = Vec::new();
        for _ in 0..1100 {
            if let Ok(s) = tokio::net::TcpStream::connect(&addr).await {
                idle.push(s);
            }
        }
        // The proxy now has no descriptor left for new connections.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let cpu0 = cpu_seconds(pid);
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let share = (cpu_seconds(pid) - cpu0) / t0.elapsed().as_secs_f64();
        assert!(
            share < 0.10,
            "the proxy used {:.0} % of a core out of descriptors",
            share * 100.0
        );
        drop(idle);
        // Served again once the connections are gone.
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut conn) = Conn::open(&url, tls.clone()).await {
                if let Ok(r) = conn.request("GET", "/healthz", vec![]).await {
                    if r.status == 200 {
                        break;
                    }
                }
            }
            assert!(Instant::now() < end, "the proxy never served again");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let log = c.log("proxy-us-east-1");
    assert!(
        log.contains("accepting a client connection failed"),
        "the condition is logged"
    );
}

/// 2,000 idle TLS clients cost the proxy at most 16 KiB each, connected and after one request
/// each (idle HTTP/1.1 connections are parked: hyper's state freed, the TLS stream kept), and
/// every parked connection serves a second request (`meridian bench --idle-clients`).
#[test]
fn idle_client_connections_cost_at_most_16_kib_each() {
    let _one = serial();
    raise_own_fd_limit();
    let out_dir = temp_dir("limits-idle");
    let out = std::process::Command::new(bin())
        .args(["bench", "--idle-clients", "2000", "--out"])
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("idle.json")).unwrap()).unwrap();
    eprintln!("{v}");
    assert_eq!(v["clients"], 2000);
    assert_eq!(v["first_requests_ok"], 2000, "{v}");
    assert_eq!(
        v["second_requests_ok"], 2000,
        "parked connections serve again: {v}"
    );
    assert_eq!(
        v["parked"]["after_one_request"], 2000,
        "every idle one is parked: {v}"
    );
    for when in ["connected", "after_one_request"] {
        let kib = v["kib_per_connection"][when].as_f64().unwrap();
        assert!(
            kib > 0.5,
            "{when}: {kib} KiB per connection is not plausible: {v}"
        );
        assert!(kib <= 16.0, "{when}: {kib:.1} KiB per idle connection: {v}");
    }
}
