//! `meridian demo` — the README's run command — from the outside.
mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Replica processes whose command line mentions `dir`.
fn running_under(dir: &std::path::Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd);
            if cmd.contains("replica") && cmd.contains(&*dir.to_string_lossy()) {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn demo_reports_every_region_within_its_bound_and_leaves_nothing_behind() {
    let out = temp_dir("demo");
    let r = Command::new(bin())
        .args(["demo", "--seconds", "4", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(
        r.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let rows = report["results"].as_array().unwrap();
    assert_eq!(
        rows.iter().filter(|r| r["op"] == "write").count(),
        5,
        "{stdout}"
    );
    // The benchmark's report beside it: the same rows in report.md, a CDF per region.
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert_eq!(md.matches("| meridian |").count(), rows.len(), "{md}");
    for row in rows {
        let svg = out.join(format!("cdf-{}.svg", row["region"].as_str().unwrap()));
        assert!(std::fs::read_to_string(&svg)
            .unwrap()
            .contains("meridian write leader"));
    }
    assert_eq!(
        rows.iter()
            .filter(|r| r["op"] == "read" && r["path"] == "auto")
            .count(),
        5,
        "{stdout}"
    );
    for row in rows {
        let (p50, bound) = (
            row["p50_ms"].as_f64().unwrap(),
            row["bound_ms"].as_f64().unwrap(),
        );
        // A loose sanity ceiling only: the 5 % claim lives in the demo's own verdict line (a
        // benchmark), not in a timed test that must pass on a busy machine.
        assert!(
            p50 <= bound * 3.0 + 200.0,
            "{}: median {p50} ms vs bound {bound} ms",
            row["region"]
        );
        assert!(
            p50 >= bound - 0.5,
            "{}: median {p50} ms is below the physical bound {bound} ms",
            row["region"]
        );
        assert!(row["count"].as_u64().unwrap() >= 10);
    }
    assert!(stdout.contains("p50 ms") && stdout.contains("bound ms"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(running_under(&out), 0, "replicas left running");
}

#[test]
fn demo_interrupted_with_ctrl_c_stops_its_replicas() {
    let out = temp_dir("demo-int");
    let mut child = Command::new(bin())
        .args(["demo", "--seconds", "30", "--out"])
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while running_under(&out) < 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        running_under(&out),
        5,
        "the demo did not start five replicas"
    );
    std::thread::sleep(Duration::from_secs(2));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "an interrupted demo reports failure");
    let deadline = Instant::now() + Duration::from_secs(15);
    while running_under(&out) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(running_under(&out), 0, "replicas left running after Ctrl-C");
}
