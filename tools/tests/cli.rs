//! The `meridian` command as users and scripts drive it.
use std::process::Command;

fn meridian(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(args)
        .output()
        .expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn sim_prints_a_json_summary_last() {
    let (code, out, _) = meridian(&["sim", "--seeds", "5..8", "--sites", "5", "--ops", "50"]);
    assert_eq!(code, 0, "{out}");
    let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(last["seeds"], 3);
    assert_eq!(last["violations"], 0);
    assert_eq!(last["agreement_violations"], 0);
    assert_eq!(last["incomplete_after_heal"], 0);
}

#[test]
fn sim_prints_a_reproduce_line_for_each_failing_seed() {
    let (code, out, _) = meridian(&[
        "sim",
        "--seeds",
        "0..30",
        "--sites",
        "5",
        "--bug",
        "read-without-lease",
    ]);
    assert_eq!(code, 1);
    let line = out
        .lines()
        .find(|l| l.contains("FAILED"))
        .expect("a failing seed");
    let cmd = line
        .split("reproduce: meridian ")
        .nth(1)
        .expect("reproduce command");
    let args: Vec<&str> = cmd.split_whitespace().collect();
    let (code, again, _) = meridian(&args);
    assert_eq!(code, 1, "the reproduce command fails the same way");
    let seed = line.split_whitespace().nth(1).unwrap();
    assert!(again.contains(&format!("seed {seed} FAILED")));
}

#[test]
fn sim_rejects_bad_arguments_clearly() {
    let (code, _, err) = meridian(&["sim", "--sites", "7"]);
    assert_eq!(code, 2);
    assert!(err.contains("5 or 9"), "{err}");
    let (code, _, err) = meridian(&["sim", "--seeds", "9..3"]);
    assert_eq!(code, 2);
    assert!(err.contains("empty seed range"), "{err}");
    let (code, _, err) = meridian(&["sim", "--faults", "meteor"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown fault 'meteor'"), "{err}");
    let (code, _, err) = meridian(&["sim", "--bug", "nope"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown --bug"), "{err}");
}

#[test]
fn check_accepts_a_linearizable_history_and_rejects_a_stale_read() {
    let dir = std::env::temp_dir().join(format!("meridian-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = r#"{"process":1,"op":"put","key":"k","value":"a","expect":null,"invoke_ns":0,"complete_ns":10,"outcome":"ok","read":null}
{"process":2,"op":"get","key":"k","value":null,"expect":null,"invoke_ns":20,"complete_ns":30,"outcome":"ok","read":"a","path":"quorum"}
"#;
    let bad = good.replace(r#""read":"a""#, r#""read":null"#);
    std::fs::write(dir.join("good.jsonl"), good).unwrap();
    std::fs::write(dir.join("bad.jsonl"), bad).unwrap();
    std::fs::write(dir.join("broken.jsonl"), "{not json\n").unwrap();
    let (code, out, _) = meridian(&["check", dir.join("good.jsonl").to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(r#""linearizable":true"#));
    let (code, out, _) = meridian(&["check", dir.join("bad.jsonl").to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("NOT linearizable"));
    let (code, _, err) = meridian(&["check", dir.join("broken.jsonl").to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("line 1"), "{err}");
}

#[test]
fn plan_json_follows_the_design_schema() {
    let (code, out, err) = meridian(&[
        "plan",
        "--candidates",
        "us-east-1,us-west-2,eu-west-1,eu-central-1,ap-northeast-1,ap-southeast-2,sa-east-1",
        "--replicas",
        "5",
        "--demand",
        "us-east-1=1,eu-central-1=1,ap-northeast-1=1",
        "--leases",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["model"], "v1");
    assert_eq!(j["search"]["method"], "exhaustive");
    let p = &j["placements"][0];
    for f in [
        "rank",
        "sites",
        "leader",
        "lease_holders",
        "objective_ms",
        "per_region",
        "failures",
        "linchpin",
    ] {
        assert!(p.get(f).is_some(), "missing {f}");
    }
    let r = &p["per_region"][0];
    for f in [
        "region",
        "write_ms",
        "leader_read_ms",
        "quorum_read_ms",
        "lease_read_ms",
        "read_ms",
    ] {
        assert!(r.get(f).is_some(), "missing per_region.{f}");
    }
    let f = &p["failures"][0];
    for k in [
        "lost",
        "kind",
        "feasible",
        "leader",
        "objective_ms",
        "per_region",
    ] {
        assert!(f.get(k).is_some(), "missing failures.{k}");
    }
}

#[test]
fn plan_reads_a_json_matrix_and_draws_a_map() {
    let dir = std::env::temp_dir().join(format!("meridian-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = r#"{"regions":["a","b","c","d","e"],"ms":[[0,10,20,30,40],[10,0,10,20,30],[20,10,0,10,20],[30,20,10,0,10],[40,30,20,10,0]]}"#;
    let mpath = dir.join("rtt.json");
    std::fs::write(&mpath, json).unwrap();
    let svg = dir.join("map.svg");
    let (code, out, err) = meridian(&[
        "plan",
        "--rtt-from",
        mpath.to_str().unwrap(),
        "--json",
        "--svg",
        svg.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["placements"][0]["sites"].as_array().unwrap().len(), 5);
    let drawn = std::fs::read_to_string(&svg).unwrap();
    assert!(drawn.starts_with("<svg") && drawn.trim_end().ends_with("</svg>"));
}

#[test]
fn plan_errors_say_what_is_wrong() {
    let dir = std::env::temp_dir().join(format!("meridian-plan-err-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let asym = dir.join("asym.csv");
    std::fs::write(&asym, "region,a,b\na,0,10\nb,30,0\n").unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["plan", "--rtt", asym.to_str().unwrap()], "asymmetric"),
        (
            vec!["plan", "--candidates", "us-east-1,mars-1"],
            "unknown region 'mars-1'",
        ),
        (vec!["plan", "--replicas", "7"], "5 or 9"),
        (vec!["plan", "--quorum", "hierarchical"], "--replicas 9"),
        (
            vec![
                "plan",
                "--fixed",
                "eu-west-1,eu-west-2,eu-central-1,us-east-1,us-east-2",
                "--survive",
                "continent",
            ],
            "losing continent 'Europe'",
        ),
        (vec!["plan", "--demand", "us-east-1=x"], "not a number"),
    ];
    for (args, want) in cases {
        let (code, _, err) = meridian(&args);
        assert_eq!(code, 2, "{args:?}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}
