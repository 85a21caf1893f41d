//! The side-by-side summary of a throughput run: per round, operation and client count,
//! Meridian's rate over etcd's (and etcd's CPU per operation over Meridian's), and across
//! rounds their median, lowest and highest. Each pair is measured back to back (the two runs
//! of a pair minutes apart would compare two different machines on a VM whose speed drifts),
//! the order alternating by round so that neither system always goes first.
use serde_json::{json, Value};

/// The systems of round `r`, in the order they run.
pub fn order(r: usize, systems: &[&'static str]) -> Vec<&'static str> {
    let mut v = systems.to_vec();
    if r % 2 == 1 {
        v.reverse();
    }
    v
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn r2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Rows (`system`, `op`, `clients`, `round`, `ops_per_s`, `system_cpu_us_per_op`) in, one
/// summary per (op, clients) that has both systems in at least one round out.
pub fn summarize(rows: &[Value]) -> Vec<Value> {
    let find = |sys: &str, op: &str, n: u64, r: u64| {
        rows.iter()
            .find(|t| t["system"] == sys && t["op"] == op && t["clients"] == n && t["round"] == r)
    };
    let mut keys: Vec<(String, u64)> = Vec::new();
    for t in rows {
        let k = (
            t["op"].as_str().unwrap_or_default().to_string(),
            t["clients"].as_u64().unwrap_or_default(),
        );
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let mut out = Vec::new();
    for (op, n) in keys {
        let mut rates = Vec::new();
        let mut cpus = Vec::new();
        let mut steal: Option<f64> = None;
        let rounds = rows
            .iter()
            .filter_map(|t| t["round"].as_u64())
            .max()
            .unwrap_or(0);
        for r in 0..=rounds {
            let (Some(m), Some(e)) = (find("meridian", &op, n, r), find("etcd", &op, n, r)) else {
                continue;
            };
            let f = |t: &Value, k: &str| t[k].as_f64().unwrap_or(0.0);
            for t in [m, e] {
                if let Some(x) = t["host_steal"].as_f64() {
                    steal = Some(steal.map_or(x, |s: f64| s.max(x)));
                }
            }
            if f(e, "ops_per_s") > 0.0 {
                rates.push(f(m, "ops_per_s") / f(e, "ops_per_s"));
            }
            if f(m, "system_cpu_us_per_op") > 0.0 {
                cpus.push(f(e, "system_cpu_us_per_op") / f(m, "system_cpu_us_per_op"));
            }
        }
        if rates.is_empty() {
            continue;
        }
        let each: Vec<f64> = rates.iter().map(|x| r2(*x)).collect();
        let (lo, hi) = (
            rates.iter().copied().fold(f64::INFINITY, f64::min),
            rates.iter().copied().fold(0.0, f64::max),
        );
        out.push(json!({
            "op": op,
            "clients": n,
            "rounds": rates.len(),
            "meridian_over_etcd": each,
            "median": r2(median(&mut rates)),
            "min": r2(lo),
            "max": r2(hi),
            "cpu_per_op_etcd_over_meridian_median": if cpus.is_empty() { Value::Null } else { json!(r2(median(&mut cpus))) },
            "host_steal_max": steal,
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(sys: &str, op: &str, n: u64, r: u64, ops: f64, cpu: f64) -> Value {
        json!({"system": sys, "op": op, "clients": n, "round": r, "ops_per_s": ops, "system_cpu_us_per_op": cpu})
    }

    #[test]
    fn rounds_alternate_which_system_goes_first() {
        assert_eq!(order(0, &["meridian", "etcd"]), ["meridian", "etcd"]);
        assert_eq!(order(1, &["meridian", "etcd"]), ["etcd", "meridian"]);
        assert_eq!(order(2, &["meridian", "etcd"]), ["meridian", "etcd"]);
        assert_eq!(order(1, &["meridian"]), ["meridian"]);
    }

    #[test]
    fn ratios_pair_each_round_and_take_the_median() {
        let rows = vec![
            row("meridian", "write", 256, 0, 3000.0, 80.0),
            row("etcd", "write", 256, 0, 1000.0, 240.0),
            row("etcd", "write", 256, 1, 1000.0, 200.0),
            row("meridian", "write", 256, 1, 2500.0, 100.0),
            row("meridian", "write", 256, 2, 4000.0, 50.0),
            row("etcd", "write", 256, 2, 1000.0, 250.0),
            // A read row without its etcd pair: no summary for it.
            row("meridian", "read", 256, 0, 9000.0, 40.0),
        ];
        let s = summarize(&rows);
        assert_eq!(s.len(), 1, "{s:?}");
        let w = &s[0];
        assert_eq!(w["op"], "write");
        assert_eq!(w["rounds"], 3);
        assert_eq!(w["meridian_over_etcd"], json!([3.0, 2.5, 4.0]));
        assert_eq!(w["median"], 3.0);
        assert_eq!(w["min"], 2.5);
        assert_eq!(w["max"], 4.0);
        // CPU ratios 3.0, 2.0, 5.0: median 3.0.
        assert_eq!(w["cpu_per_op_etcd_over_meridian_median"], 3.0);
        // No steal readings (not a VM, or no /proc/stat): null, not zero.
        assert_eq!(w["host_steal_max"], Value::Null);
        let mut stolen = rows.clone();
        stolen[1]["host_steal"] = json!(0.02);
        stolen[3]["host_steal"] = json!(0.15);
        stolen[6]["host_steal"] = json!(0.5);
        let s = summarize(&stolen);
        assert_eq!(
            s[0]["host_steal_max"], 0.15,
            "the highest of the paired rows; the unpaired read row does not count"
        );
        let mut even = vec![1.0, 4.0, 2.0, 3.0];
        assert_eq!(median(&mut even), 2.5);
    }
}
