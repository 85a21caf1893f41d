//! `meridian bench` from the outside: the report's shape, every row against its physical
//! bound (never faster than light, within a loose ceiling), the plots, the history it records
//! checked for linearizability, bad arguments refused, and etcd side by side when installed.
mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn bench(out: &Path, args: &[&str]) -> (bool, String) {
    let r = Command::new(bin())
        .arg("bench")
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    (
        r.status.success(),
        format!(
            "{}\n{}",
            String::from_utf8_lossy(&r.stdout),
            String::from_utf8_lossy(&r.stderr)
        ),
    )
}

/// Whether an etcd binary is there to run beside Meridian (says SKIPPED when not).
fn etcd_installed() -> bool {
    let found = std::env::var_os("MERIDIAN_ETCD").is_some()
        || std::env::var("PATH")
            .is_ok_and(|p| std::env::split_paths(&p).any(|d| d.join("etcd").is_file()));
    if !found {
        eprintln!(
            "SKIPPED: no etcd binary (Debian: apt-get install etcd-server; .ci/run installs it)"
        );
    }
    found
}

fn report(out: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap()
}

fn check_history(h: &Path) {
    let r = Command::new(bin()).arg("check").arg(h).output().unwrap();
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(r.status.success(), "history not linearizable: {stdout}");
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(v["ops"].as_u64().unwrap() > 100, "{v}");
}

#[test]
fn bench_on_the_inproc_wan_reports_every_region_against_its_bound() {
    let out = temp_dir("bench-inproc");
    let h = out.join("history.jsonl");
    let h_arg = h.to_string_lossy().to_string();
    let (ok, log) = bench(
        &out,
        &[
            "--system",
            "meridian",
            "--wan",
            "inproc",
            "--seconds",
            "3",
            "--warmup",
            "1",
            "--clients",
            "1",
            "--read-share",
            "0.5",
            "--read-mode",
            "auto,leader,quorum",
            "--keys",
            "zipf:0.99",
            "--key-count",
            "50",
            "--history",
            &h_arg,
        ],
    );
    assert!(ok, "{log}");
    let r = report(&out);
    let rows = r["results"].as_array().unwrap();
    let regions: std::collections::BTreeSet<&str> =
        rows.iter().map(|x| x["region"].as_str().unwrap()).collect();
    assert_eq!(regions.len(), 5, "{rows:?}");
    for region in &regions {
        for (op, path) in [
            ("write", "leader"),
            ("read", "auto"),
            ("read", "leader"),
            ("read", "quorum"),
        ] {
            let row = rows
                .iter()
                .find(|x| x["region"] == *region && x["op"] == op && x["path"] == path)
                .unwrap_or_else(|| panic!("no {op}/{path} row for {region}: {rows:?}"));
            assert_eq!(row["system"], "meridian");
            let (p50, bound) = (
                row["p50_ms"].as_f64().unwrap(),
                row["bound_ms"].as_f64().unwrap(),
            );
            assert!(row["count"].as_u64().unwrap() > 0);
            // The emulated WAN delays every message by rtt/2: faster than the bound is a bug.
            assert!(
                p50 >= bound * 0.98,
                "{region} {op}/{path}: p50 {p50} < bound {bound}"
            );
            assert!(
                p50 <= bound * 3.0 + 100.0,
                "{region} {op}/{path}: p50 {p50} vs bound {bound}"
            );
            for q in ["p90_ms", "p99_ms", "p999_ms", "max_ms"] {
                assert!(row[q].as_f64().unwrap() >= p50, "{q}");
            }
        }
    }
    // Leader reads from outside the leader's region pay the WAN; the path the proxy reported
    // is kept per row.
    let leader_reads = rows
        .iter()
        .filter(|x| x["path"] == "leader" && x["op"] == "read");
    assert!(leader_reads
        .clone()
        .any(|x| x["bound_ms"].as_f64().unwrap() > 50.0));
    assert!(leader_reads
        .clone()
        .all(|x| !x["served_by"].as_array().unwrap().is_empty()));
    assert_eq!(r["workload"]["keys"], "Zipf(0.99)");
    assert!(
        r["generator"]["meridian"]["generator_cpu_us_per_op"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    // report.md holds the same rows; a plot per region with a curve per row and its bound.
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert_eq!(md.matches("| meridian |").count(), rows.len(), "{md}");
    for region in &regions {
        let svg = std::fs::read_to_string(out.join(format!("cdf-{region}.svg"))).unwrap();
        assert!(svg.contains("meridian read quorum"), "{region}");
        assert!(
            svg.matches("<polyline").count() >= 8,
            "{region}: 4 curves + 4 bounds"
        );
    }
    check_history(&h);
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn bench_refuses_bad_arguments_before_starting_anything() {
    let out = temp_dir("bench-bad");
    for (args, says) in [
        (
            &["--system", "etcd", "--wan", "inproc"][..],
            "in-process delay layer",
        ),
        (&["--keys", "zipf:1.5"][..], "zipf exponent"),
        (&["--read-mode", "fastest"][..], "unknown --read-mode"),
        (&["--read-share", "2"][..], "--read-share"),
        (&["--open-loop", "0"][..], "positive rate"),
        (
            &["--throughput", "1", "--history", "/tmp/x"][..],
            "--history",
        ),
        (&["--throughput", "1", "--rounds", "0"][..], "--rounds"),
        (&["--rounds", "3"][..], "give --throughput"),
    ] {
        let (ok, log) = bench(&out, args);
        assert!(!ok, "{args:?} accepted");
        assert!(log.contains(says), "{args:?}: {log}");
        assert!(
            !out.join("meridian-cluster").exists(),
            "{args:?} started a cluster"
        );
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// Both systems in one run on loopback, same generator and workload: both row sets, both
/// generators accounted, and the combined history (etcd's keys kept apart) linearizable.
#[test]
fn bench_runs_etcd_side_by_side_when_it_is_installed() {
    if !etcd_installed() {
        return;
    }
    let out = temp_dir("bench-etcd");
    let h = out.join("history.jsonl");
    let h_arg = h.to_string_lossy().to_string();
    let (ok, log) = bench(
        &out,
        &[
            "--system",
            "both",
            "--wan",
            "none",
            "--seconds",
            "2",
            "--warmup",
            "1",
            "--clients",
            "1",
            "--key-count",
            "50",
            "--history",
            &h_arg,
        ],
    );
    assert!(ok, "{log}");
    let r = report(&out);
    let rows = r["results"].as_array().unwrap();
    for (sys, path) in [
        ("meridian", "auto"),
        ("etcd", "linearizable"),
        ("etcd", "serializable"),
    ] {
        let n = rows
            .iter()
            .filter(|x| x["system"] == sys && x["path"] == path)
            .count();
        assert_eq!(n, 5, "{sys}/{path}: {rows:?}");
    }
    assert!(rows
        .iter()
        .all(|x| x["count"].as_u64().unwrap() > 0 && x["errors"] == 0));
    for (sys, roles) in [
        ("meridian", &["leaders", "followers", "proxies"][..]),
        ("etcd", &["leaders", "followers"][..]),
    ] {
        let g = &r["generator"][sys];
        let total = g["system_cpu_us_per_op"].as_f64().unwrap();
        assert!(total > 0.0, "{sys}");
        // The system's CPU by role: every role worked, and the roles add up to the whole.
        let by_role = g["system_cpu_us_per_op_by_role"].as_object().unwrap();
        assert_eq!(
            by_role.keys().map(String::as_str).collect::<Vec<_>>().len(),
            roles.len(),
            "{sys}: {by_role:?}"
        );
        let mut sum = 0.0;
        for role in roles {
            let v = by_role[*role].as_f64().unwrap();
            assert!(v > 0.0, "{sys} {role}: {by_role:?}");
            sum += v;
        }
        assert!(
            (sum - total).abs() <= 0.1 * roles.len() as f64,
            "{sys}: {sum} vs {total}"
        );
    }
    assert!(r["topology"]["etcd"]["leader"]
        .as_str()
        .unwrap()
        .contains("us-east-1"));
    check_history(&h);
    let _ = std::fs::remove_dir_all(&out);
}

/// The side-by-side throughput run in rounds: every (operation, client count) measured for
/// both systems in each round, and the report pairs them per round with their median.
#[test]
fn throughput_rounds_pair_both_systems_and_report_the_median_ratio() {
    if !etcd_installed() {
        return;
    }
    let out = temp_dir("bench-rounds");
    let (ok, log) = bench(
        &out,
        &[
            "--system",
            "both",
            "--throughput",
            "2",
            "--rounds",
            "2",
            "--seconds",
            "1",
            "--warmup",
            "0.5",
            "--key-count",
            "50",
            "--threads",
            "1",
        ],
    );
    assert!(ok, "{log}");
    let r = report(&out);
    let rows = r["throughput"].as_array().unwrap();
    assert_eq!(rows.len(), 8, "2 rounds x 2 ops x 2 systems: {rows:?}");
    for round in 0..2u64 {
        for op in ["write", "read"] {
            for sys in ["meridian", "etcd"] {
                let n = rows
                    .iter()
                    .filter(|t| t["round"] == round && t["op"] == op && t["system"] == sys)
                    .filter(|t| t["ops_per_s"].as_f64().unwrap() > 0.0 && t["errors"] == 0)
                    .count();
                assert_eq!(n, 1, "round {round} {op} {sys}: {rows:?}");
            }
        }
    }
    // The second round starts with etcd: pairs alternate which system goes first.
    let first_of = |round: u64| {
        rows.iter()
            .find(|t| t["round"] == round)
            .map(|t| t["system"].clone())
            .unwrap()
    };
    assert_eq!(first_of(0), "meridian");
    assert_eq!(first_of(1), "etcd");
    let ratios = r["ratios"].as_array().unwrap();
    assert_eq!(ratios.len(), 2, "{ratios:?}");
    for q in ratios {
        let op = q["op"].as_str().unwrap();
        let each: Vec<f64> = (0..2u64)
            .map(|round| {
                let rate = |sys: &str| {
                    rows.iter()
                        .find(|t| t["round"] == round && t["op"] == op && t["system"] == sys)
                        .unwrap()["ops_per_s"]
                        .as_f64()
                        .unwrap()
                };
                rate("meridian") / rate("etcd")
            })
            .collect();
        let listed: Vec<f64> = q["meridian_over_etcd"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        for (a, b) in each.iter().zip(&listed) {
            assert!((a - b).abs() < 0.01, "{op}: {each:?} vs {listed:?}");
        }
        let median = q["median"].as_f64().unwrap();
        assert!((median - (each[0] + each[1]) / 2.0).abs() < 0.01, "{q}");
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("each round"), "{md}");
    let _ = std::fs::remove_dir_all(&out);
}

/// Both systems on the same host-level WAN (namespaces + packet router, root): every row at
/// or above its physical bound and within a loose ceiling, on either system; Meridian's leader
/// reads from outside the leader's region cost one WAN round trip where etcd's linearizable
/// get (ReadIndex through the leader, then a heartbeat round) costs two; nothing left behind.
#[test]
fn bench_on_the_host_wan_runs_both_systems_against_their_bounds() {
    let root = nix::unistd::geteuid().is_root() && Path::new("/dev/net/tun").exists();
    if !root {
        eprintln!("SKIPPED: --wan host needs root and /dev/net/tun");
        return;
    }
    let etcd = std::env::var_os("MERIDIAN_ETCD").is_some()
        || std::env::split_paths(&std::env::var("PATH").unwrap_or_default())
            .any(|d| d.join("etcd").is_file());
    let out = temp_dir("bench-host");
    let system = if etcd { "both" } else { "meridian" };
    if !etcd {
        eprintln!("etcd is not installed: Meridian only (Debian: apt-get install etcd-server)");
    }
    let (ok, log) = bench(
        &out,
        &[
            "--system",
            system,
            "--wan",
            "host",
            "--seconds",
            "3",
            "--warmup",
            "1",
            "--clients",
            "1",
            "--read-mode",
            "leader",
            "--key-count",
            "50",
        ],
    );
    assert!(ok, "{log}");
    let r = report(&out);
    let rows = r["results"].as_array().unwrap();
    assert!(rows.len() >= if etcd { 25 } else { 10 }, "{rows:?}");
    for row in rows {
        let (p50, bound) = (
            row["p50_ms"].as_f64().unwrap(),
            row["bound_ms"].as_f64().unwrap(),
        );
        assert!(p50 >= bound * 0.98, "faster than the WAN allows: {row}");
        assert!(p50 <= bound * 3.0 + 100.0, "{row}");
    }
    if etcd {
        let p50 = |sys: &str, op: &str, path: &str| {
            rows.iter()
                .find(|x| {
                    x["system"] == sys
                        && x["region"] == "eu-west-1"
                        && x["op"] == op
                        && x["path"] == path
                })
                .unwrap_or_else(|| panic!("{sys} {op} {path}"))["p50_ms"]
                .as_f64()
                .unwrap()
        };
        // One round trip to the leader (~70 ms) against ReadIndex's two (~140 ms).
        assert!(p50("meridian", "read", "leader") * 1.5 < p50("etcd", "read", "linearizable"));
    }
    assert!(
        r["wan_router"]["forwarded"].as_u64().unwrap() > 1000,
        "{}",
        r["wan_router"]
    );
    assert!(
        !out.join("wan").join("wan.json").exists(),
        "the emulation was taken down"
    );
    let _ = std::fs::remove_dir_all(&out);
}

/// Open loop: the generator issues exactly the scheduled operations (rate × window, however
/// fast the system answers), and service times never exceed the corrected latencies.
#[test]
fn bench_open_loop_issues_the_schedule() {
    let out = temp_dir("bench-open");
    let (ok, log) = bench(
        &out,
        &[
            "--system",
            "meridian",
            "--wan",
            "none",
            "--seconds",
            "2",
            "--warmup",
            "1",
            "--clients",
            "1",
            "--open-loop",
            "250",
            "--read-share",
            "0.5",
            "--keys",
            "local:0.9",
            "--key-count",
            "100",
        ],
    );
    assert!(ok, "{log}");
    let r = report(&out);
    let rows = r["results"].as_array().unwrap();
    let done: u64 = rows
        .iter()
        .map(|x| x["count"].as_u64().unwrap() + x["errors"].as_u64().unwrap())
        .sum();
    // 250/s over 5 clients (one per region), 2 s measured: 500 operations due.
    assert!(
        (490..=505).contains(&done),
        "{done} operations for 500 due: {rows:?}"
    );
    for row in rows {
        assert!(
            row["service_p50_ms"].as_f64().unwrap() <= row["p50_ms"].as_f64().unwrap() + 0.01,
            "{row}"
        );
    }
    assert!(r["workload"]["loop"]
        .as_str()
        .unwrap()
        .starts_with("open at 250"));
    let _ = std::fs::remove_dir_all(&out);
}
