//! A full disk on real processes (issue "Reliability and security"): one follower's data
//! directory is a small tmpfs that its WAL fills under a stream of writes. It must stop with a
//! message naming the error (fail-stop: it never acknowledges what it could not write), the
//! other four keep committing, and once space returns it restarts, recovers from its log
//! (a record torn by the full disk is a torn tail, truncated) and catches up; every
//! acknowledged write reads back. Root only (mount): SKIPPED otherwise.
mod common;

use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

fn status(c: &TestCluster) -> Option<serde_json::Value> {
    status_json(c)
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Unmounts the tmpfs however the test ends.
struct Mounted(std::path::PathBuf);
impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).output();
    }
}

#[test]
fn a_replica_whose_disk_fills_stops_and_recovers_when_space_returns() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: a full disk is emulated with a tmpfs mount, which needs root");
        return;
    }
    let mut c = TestCluster::up("diskfull", &["--no-wan", "--shards", "1"]);
    let rt = rt();
    let mut w = rt.block_on(Writer::new(&c));
    let mut acked: Vec<(String, String)> = Vec::new();
    let mut seq = 0u64;
    let mut write =
        |w: &mut Writer, key: String, value: String, acked: &mut Vec<(String, String)>| {
            seq += 1;
            let r = rt.block_on(w.submit(&put(7, seq, &key, &value), Duration::from_secs(20)));
            if r.is_some() {
                acked.retain(|(k, _)| *k != key);
                acked.push((key, value));
            }
            r.is_some()
        };
    for i in 0..10 {
        assert!(write(
            &mut w,
            format!("d{i}"),
            format!("small-{i}"),
            &mut acked
        ));
    }
    // The victim: a follower of shard 0.
    let leader = w.leader[0];
    let v = (leader + 1) % c.cfg.sites.len();
    let victim = c.cfg.sites[v].name.clone();
    c.kill9(&victim);
    let data = c.cfg.resolve(&c.cfg.sites[v].data_dir);
    let saved = data.with_extension("saved");
    std::fs::rename(&data, &saved).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    let used: u64 = walk_size(&saved);
    let size = format!("size={}k", used / 1024 + 192);
    sh(&[
        "mount",
        "-t",
        "tmpfs",
        "-o",
        &size,
        "tmpfs",
        data.to_str().unwrap(),
    ]);
    let _mounted = Mounted(data.clone());
    sh(&[
        "cp",
        "-a",
        &format!("{}/.", saved.display()),
        data.to_str().unwrap(),
    ]);
    c.restart(&victim);
    // 16 KiB values: the victim's 192 KiB of headroom lasts about a dozen writes.
    let big = "x".repeat(16 * 1024);
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut i = 0;
    let exited = loop {
        i += 1;
        assert!(
            write(
                &mut w,
                format!("d{}", i % 40),
                format!("{i}-{big}"),
                &mut acked
            ),
            "the four healthy sites must keep committing"
        );
        if let Some(st) = c.extra.last_mut().unwrap().try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "the victim never ran out of space"
        );
    };
    assert_eq!(exited.code(), Some(3), "{exited}");
    let log = c.log(&victim);
    assert!(log.contains("No space left on device"), "{log}");
    assert!(log.contains("stopping the replica"), "{log}");
    // The others go on without it.
    for j in 0..10 {
        assert!(write(
            &mut w,
            format!("after-{j}"),
            format!("v{j}"),
            &mut acked
        ));
    }
    // Space returns: it restarts, recovers from its log and catches up.
    sh(&["mount", "-o", "remount,size=256m", data.to_str().unwrap()]);
    c.restart(&victim);
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let ok = status(&c).is_some_and(|s| {
            let sites = s["sites"].as_array().cloned().unwrap_or_default();
            let commits: Vec<(u64, String)> = sites
                .iter()
                .map(|x| {
                    let sh = &x["shards"][0];
                    (
                        sh["applied_index"].as_u64().unwrap_or(0),
                        sh["state_digest"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect();
            sites.len() == 5
                && sites.iter().all(|x| x["reachable"] == true)
                && commits.windows(2).all(|p| p[0] == p[1])
        });
        if ok {
            break;
        }
        assert!(
            Instant::now() < end,
            "the victim did not catch up:\n{}",
            c.log(&victim)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        c.extra.last_mut().unwrap().try_wait().unwrap().is_none(),
        "{}",
        c.log(&victim)
    );
    // Every acknowledged write reads back, also from the victim once it leads: ask the
    // leader (any site forwards nothing, so read where the Writer finds the leader).
    for (n, (k, val)) in acked.iter().enumerate() {
        let got = rt
            .block_on(w.get(k.as_bytes(), 8, n as u64 + 1))
            .expect("read answered");
        assert_eq!(got.as_deref(), Some(val.as_bytes()), "{k}");
    }
    c.kill9(&victim);
}

fn walk_size(p: &std::path::Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(p).unwrap().flatten() {
        let m = e.metadata().unwrap();
        n += if m.is_dir() {
            walk_size(&e.path())
        } else {
            m.len()
        };
    }
    n
}
