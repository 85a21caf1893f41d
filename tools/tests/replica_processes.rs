//! Real replica processes on 127.0.0.1 with the WAN emulated (issue: real replica processes,
//! "Done means"). Tests run one at a time: each starts five processes.
mod common;

use common::*;
use meridian_replica::client::{Outcome, ReplicaClient};
use meridian_replica::kv::KvCommand;
use meridian_replica::tls::TlsFiles;
use meridian_replica::wire::pb::ReadMode;
use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

type Acked = Arc<Mutex<BTreeMap<String, String>>>;

/// `n` writers, each with its own client id, writing unique keys until `stop`.
fn spawn_writers(
    c: &TestCluster,
    n: u64,
    tag: &str,
    stop: Arc<AtomicBool>,
    acked: Acked,
    rt: &tokio::runtime::Runtime,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n)
        .map(|w| {
            let (stop, acked, tag) = (stop.clone(), acked.clone(), tag.to_string());
            let writer = rt.block_on(Writer::new(c));
            rt.spawn(async move {
                let mut writer = writer;
                let mut seq = 0;
                while !stop.load(Ordering::Relaxed) {
                    seq += 1;
                    let (k, v) = (format!("{tag}/{w}/{seq}"), format!("v{seq}"));
                    if writer
                        .submit(&put(1000 + w, seq, &k, &v), Duration::from_secs(30))
                        .await
                        .is_some()
                    {
                        acked.lock().unwrap().insert(k, v);
                    }
                }
            })
        })
        .collect()
}

/// The acknowledged writes that do not read back.
fn missing(
    c: &TestCluster,
    acked: &BTreeMap<String, String>,
    rt: &tokio::runtime::Runtime,
) -> Vec<String> {
    rt.block_on(async {
        let mut r = Writer::new(c).await;
        let mut missing = Vec::new();
        for (i, (k, v)) in acked.iter().enumerate() {
            match r.get(k.as_bytes(), 9_000_000, i as u64 + 1).await {
                Some(Some(got)) if got == v.as_bytes() => {}
                other => missing.push(format!("{k}: expected {v}, got {other:?}")),
            }
        }
        missing
    })
}

fn read_back_all(c: &TestCluster, acked: &BTreeMap<String, String>, rt: &tokio::runtime::Runtime) {
    {
        let missing = missing(c, acked, rt);
        assert!(
            missing.is_empty(),
            "{} acknowledged writes not read back: {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
    }
}

#[test]
fn five_replicas_elect_accept_1000_writes_and_refuse_foreign_peers() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = TestCluster::up("thousand", &[]);
    let rt = rt();
    let acked: Acked = Default::default();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for w in 0..50u64 {
            let mut writer = Writer::new(&c).await;
            let acked = acked.clone();
            tasks.push(tokio::spawn(async move {
                for seq in 1..=20u64 {
                    let (k, v) = (format!("k/{w}/{seq}"), format!("value-{w}-{seq}"));
                    let r = writer
                        .submit(&put(w + 1, seq, &k, &v), Duration::from_secs(30))
                        .await;
                    assert!(r.is_some(), "write {k} not acknowledged");
                    acked.lock().unwrap().insert(k, v);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), 1000);
    read_back_all(&c, &acked, &rt);

    // A peer with a certificate from another CA, or none, is refused and logged.
    let other = temp_dir("other-ca");
    meridian_replica::tls::generate(&other, &["us-east-1".into()], &[], &[]).unwrap();
    let target = c.cfg.sites[1].clone();
    rt.block_on(async {
        let foreign = TlsFiles::new(c.cfg.resolve(&c.cfg.tls.ca), &other, "us-east-1");
        let r = async {
            ReplicaClient::connect(&target.addr, &foreign)
                .await?
                .status()
                .await
        }
        .await;
        assert!(r.is_err(), "a certificate from another CA was accepted");
        // No client certificate at all.
        let ca = std::fs::read_to_string(c.cfg.resolve(&c.cfg.tls.ca)).unwrap();
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(ca))
            .domain_name("localhost");
        let ch = tonic::transport::Endpoint::from_shared(format!("https://{}", target.addr))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await;
        if let Ok(ch) = ch {
            let r = meridian_replica::wire::pb::replica_client::ReplicaClient::new(ch)
                .status(meridian_replica::wire::pb::StatusRequest {})
                .await;
            assert!(r.is_err(), "a client without a certificate was served");
        }
        // A valid cluster certificate that is not a site's may not open a peer stream.
        let ch = tonic::transport::Endpoint::from_shared(format!("https://{}", target.addr))
            .unwrap()
            .tls_config(c.tls.client_config().unwrap())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let frames = tokio_stream::iter(vec![meridian_replica::wire::pb::PeerFrame {
            from_site: 0,
            msgs: vec![],
            ..Default::default()
        }]);
        let r = meridian_replica::wire::pb::peer_client::PeerClient::new(ch)
            .stream(frames)
            .await;
        assert_eq!(
            r.err().map(|s| s.code()),
            Some(tonic::Code::PermissionDenied)
        );
    });
    std::thread::sleep(Duration::from_millis(300));
    let log = c.log(&target.name);
    assert!(
        log.contains("TLS handshake refused"),
        "refusal not logged:\n{}",
        &log[log.len().saturating_sub(2000)..]
    );
    assert!(log.contains("peer stream refused"));
    // Nothing changed: every write still reads back, nothing else appeared.
    read_back_all(&c, &acked, &rt);
    let _ = std::fs::remove_dir_all(other);
}

#[test]
fn leader_killed_under_load_is_replaced_and_catches_up_without_losing_writes() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = TestCluster::up("killleader", &[]);
    let rt = rt();
    let leader = c.cfg.cluster.preferred_leader.clone().unwrap();
    // Wait until the preferred site leads every shard.
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(20);
        let i = c.cfg.site_index(&leader).unwrap();
        loop {
            let mut cl = ReplicaClient::connect(&c.cfg.sites[i].addr, &c.tls)
                .await
                .unwrap();
            let st = cl.status().await.unwrap();
            if st.shards.iter().all(|s| s.is_leader && s.holds_lease) || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Acked = Default::default();
    let tasks = spawn_writers(&c, 16, "kl", stop.clone(), acked.clone(), &rt);
    std::thread::sleep(Duration::from_secs(2));
    let before = acked.lock().unwrap().len();
    assert!(before > 20, "only {before} writes before the kill");
    c.kill9(&leader);
    let killed_at = Instant::now();
    // Writes resume under a new leader within the election bound.
    let resumed = loop {
        std::thread::sleep(Duration::from_millis(50));
        if acked.lock().unwrap().len() > before + 20 {
            break killed_at.elapsed();
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(15),
            "writes did not resume"
        );
    };
    assert!(
        resumed < Duration::from_secs(10),
        "new leader took {resumed:?}"
    );
    c.restart(&leader);
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        rt.block_on(t).unwrap();
    }
    // The restarted replica catches up: its applied index reaches every shard's commit.
    rt.block_on(async {
        let i = c.cfg.site_index(&leader).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut best = vec![0u64; c.cfg.cluster.shards as usize];
            for s in &c.cfg.sites {
                if let Ok(mut cl) = ReplicaClient::connect(&s.addr, &c.tls).await {
                    if let Ok(st) = cl.status().await {
                        for sh in st.shards {
                            best[sh.shard as usize] = best[sh.shard as usize].max(sh.commit_index);
                        }
                    }
                }
            }
            let mine = async {
                ReplicaClient::connect(&c.cfg.sites[i].addr, &c.tls)
                    .await
                    .ok()?
                    .status()
                    .await
                    .ok()
            }
            .await;
            if let Some(st) = mine {
                if st
                    .shards
                    .iter()
                    .all(|sh| sh.applied_index >= best[sh.shard as usize])
                {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "restarted replica did not catch up"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // Its own state machine (read locally) holds writes made while it was down.
        let mut cl = ReplicaClient::connect(&c.cfg.sites[i].addr, &c.tls)
            .await
            .unwrap();
        let acked = acked.lock().unwrap().clone();
        for (k, v) in acked.iter().rev().take(20) {
            let shard = meridian_proxy::route::shard_for_key(k.as_bytes(), c.cfg.cluster.shards);
            let cmd = KvCommand {
                client: 77,
                seq: 1,
                op: meridian_replica::kv::Op::Get {
                    key: k.as_bytes().to_vec(),
                },
            };
            let Ok(Outcome::Ok((r, path))) = cl.read(shard, &cmd, ReadMode::Local).await else {
                panic!("local read failed")
            };
            assert_eq!(path, "local");
            let meridian_replica::kv::Outcome::Get { kv: Some(kv) } = r.outcome else {
                panic!("{k} missing on the restarted replica")
            };
            assert_eq!(kv.value, v.as_bytes());
        }
    });
    let acked = acked.lock().unwrap().clone();
    read_back_all(&c, &acked, &rt);
}

#[test]
fn all_five_killed_under_load_restart_with_every_acknowledged_write() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = TestCluster::up("killall", &[]);
    let rt = rt();
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Acked = Default::default();
    let tasks = spawn_writers(&c, 16, "ka", stop.clone(), acked.clone(), &rt);
    std::thread::sleep(Duration::from_secs(3));
    for s in c.site_names() {
        c.kill9(&s);
    }
    stop.store(true, Ordering::Relaxed);
    let snapshot = acked.lock().unwrap().clone();
    assert!(
        snapshot.len() > 50,
        "only {} writes acknowledged",
        snapshot.len()
    );
    for s in c.site_names() {
        c.restart(&s);
    }
    for t in tasks {
        rt.block_on(t).unwrap();
    }
    // Writes acknowledged before the crash must all be there (later acks may also exist).
    read_back_all(&c, &snapshot, &rt);
}

/// The check above has teeth: with a planted bug that acknowledges writes before they are on
/// disk, the same kill -9 of every replica loses acknowledged writes, and the read-back finds
/// them missing.
#[test]
fn a_replica_acknowledging_before_durable_loses_writes_the_check_finds() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = TestCluster::up_env(
        "planted-ack",
        &[],
        &[("MERIDIAN_PLANTED_BUG", "ack-before-durable")],
    );
    let rt = rt();
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Acked = Default::default();
    let tasks = spawn_writers(&c, 16, "pa", stop.clone(), acked.clone(), &rt);
    std::thread::sleep(Duration::from_secs(3));
    for s in c.site_names() {
        c.kill9(&s);
    }
    stop.store(true, Ordering::Relaxed);
    let snapshot = acked.lock().unwrap().clone();
    assert!(
        snapshot.len() > 50,
        "only {} writes acknowledged",
        snapshot.len()
    );
    assert!(c
        .log(&c.site_names()[0])
        .contains("PLANTED BUG ack-before-durable is ON"));
    // Restarted without the bug.
    for s in c.site_names() {
        c.restart(&s);
    }
    for t in tasks {
        rt.block_on(t).unwrap();
    }
    let lost = missing(&c, &snapshot, &rt);
    assert!(
        !lost.is_empty(),
        "the planted bug lost no acknowledged write of {}: the check would not see it",
        snapshot.len()
    );
}

#[test]
fn corrupt_wal_refuses_to_start_and_torn_tail_is_truncated() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = TestCluster::up("wal", &["--no-wan"]);
    let rt = rt();
    rt.block_on(async {
        let mut w = Writer::new(&c).await;
        for seq in 1..=40 {
            assert!(w
                .submit(
                    &put(5, seq, &format!("w/{seq}"), "x"),
                    Duration::from_secs(20)
                )
                .await
                .is_some());
        }
    });
    let site = c.cfg.sites[2].name.clone();
    c.kill9(&site);
    let shard_dir = c.cfg.resolve(&c.cfg.sites[2].data_dir).join("shard-0");
    let wal = wal_files(&shard_dir).pop().expect("a WAL segment");
    let original = std::fs::read(&wal).unwrap();
    // The segment's records: the zeros after them are preallocated space.
    let records = original.len() - original.iter().rev().take_while(|&&b| b == 0).count();
    assert!(records > 200, "{records} bytes of records");
    // One flipped byte in the middle of the records: refuse to start, naming file and offset.
    let mut bad = original.clone();
    let mid = records / 2;
    bad[mid] ^= 0x55;
    std::fs::write(&wal, &bad).unwrap();
    let out = Command::new(bin())
        .args(["replica", "--config"])
        .arg(c.dir.join("cluster.toml"))
        .args(["--site", &site])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started on a corrupt WAL");
    assert!(
        err.contains(&wal.display().to_string()) && err.contains("byte offset"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&wal).unwrap(),
        bad,
        "the corrupt file was modified"
    );
    // A truncated last record: start, truncate, report.
    std::fs::write(&wal, &original[..records - 5]).unwrap();
    let mut child = Command::new(bin())
        .args(["replica", "--config"])
        .arg(c.dir.join("cluster.toml"))
        .args(["--site", &site])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        child.try_wait().unwrap().is_none(),
        "replica exited on a torn tail"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "SIGTERM is a clean shutdown: {err}");
    assert!(err.contains("torn final WAL record truncated"), "{err}");
}

#[test]
fn start_up_errors_are_clear() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = TestCluster::up("startup", &["--no-wan"]);
    // `cluster up` gives each of its processes an equal share of the cores, at least one.
    let cores = std::thread::available_parallelism().unwrap().get();
    let processes = c.cfg.sites.len() + c.cfg.proxies.len();
    let share = (cores / processes).max(1).to_string();
    let names: Vec<String> = c
        .cfg
        .sites
        .iter()
        .map(|s| s.name.clone())
        .chain(c.cfg.proxies.iter().map(|p| p.name.clone()))
        .collect();
    for name in &names {
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", c.pid(name))).unwrap();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        assert!(
            args.windows(2)
                .any(|w| w[0] == b"--threads" && w[1] == share.as_bytes()),
            "{name} runs without --threads {share}: {}",
            String::from_utf8_lossy(&cmdline)
        );
    }
    let cfg = c.dir.join("cluster.toml");
    let run = |cfg: &std::path::Path, site: &str| {
        let out = Command::new(bin())
            .args(["replica", "--config"])
            .arg(cfg)
            .args(["--site", site])
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let site0 = c.cfg.sites[0].name.clone();
    // `meridian status` shows every shard on every site, one leader each, and the RTT matrix.
    // (It exits 1 while an alert fires, e.g. a leadership transfer still under way.)
    let end = Instant::now() + Duration::from_secs(20);
    let st = loop {
        let st = Command::new(bin())
            .args(["status", "--dir"])
            .arg(&c.dir)
            .output()
            .unwrap();
        if st.status.success() || Instant::now() > end {
            break st;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let out = String::from_utf8_lossy(&st.stdout);
    assert!(st.status.success(), "{out}");
    let rows: Vec<&str> = out
        .lines()
        .filter(|l| {
            c.cfg.sites.iter().any(|s| l.starts_with(&s.name)) && l.split_whitespace().count() == 11
        })
        .collect();
    assert_eq!(rows.len(), 5 * 4, "{out}");
    assert_eq!(
        rows.iter()
            .filter(|l| l.split_whitespace().nth(2) == Some("self"))
            .count(),
        4,
        "one leader per shard:\n{out}"
    );
    assert!(out.contains("measured RTT"));
    // Port in use: the running replica holds it.
    let e = run(&cfg, &site0);
    assert!(
        e.contains("cannot listen on") || e.contains("data directory"),
        "{e}"
    );
    // Unknown site.
    assert!(run(&cfg, "mars-1").contains("site 'mars-1' is not in the cluster config"));
    // Malformed config: which key.
    let text = std::fs::read_to_string(&cfg).unwrap();
    let bad = c.dir.join("bad.toml");
    std::fs::write(&bad, text.replace("shards = 4", "shards = \"four\"")).unwrap();
    let e = run(&bad, &site0);
    assert!(e.contains("shards"), "{e}");
    std::fs::write(&bad, text.replace("lease_ms", "lease_millis")).unwrap();
    assert!(run(&bad, &site0).contains("lease_millis"));
    // Missing certificate.
    std::fs::write(
        &bad,
        text.replace("cert_dir = \"certs\"", "cert_dir = \"nowhere\""),
    )
    .unwrap();
    let e = run(&bad, &site0);
    assert!(e.contains("nowhere") && e.contains(".pem"), "{e}");
    // Wrong CA.
    let other = c.dir.join("other");
    meridian_replica::tls::generate(&other, &c.site_names(), &[], &[]).unwrap();
    std::fs::write(
        &bad,
        text.replace("cert_dir = \"certs\"", "cert_dir = \"other\""),
    )
    .unwrap();
    assert!(run(&bad, &site0).contains("not signed by the cluster CA"));
    // A data directory that belongs to another site.
    let s1 = &c.cfg.sites[1];
    std::fs::write(
        &bad,
        text.replace(
            &format!("data_dir = \"data/{}\"", s1.name),
            &format!("data_dir = \"data/{site0}\""),
        ),
    )
    .unwrap();
    let e = run(&bad, &s1.name);
    assert!(
        e.contains(&format!("belongs to site '{site0}'")) || e.contains("cannot listen"),
        "{e}"
    );
}
