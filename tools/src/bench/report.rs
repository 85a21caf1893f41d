//! The report of a run (DESIGN.md §7b): `report.json`, `report.md` and one SVG latency CDF per
//! client region.
use super::hist::{Recorded, RowKey, Series};
use super::plot::{cdf_svg, Curve};
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

fn r2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A row's bound: per shard (the leader and holders may differ by shard), weighted by the
/// row's operations on each shard.
pub fn weighted_bound(s: &Series, per_shard: impl Fn(u32) -> Option<f64>) -> Option<f64> {
    let (mut sum, mut n) = (0.0, 0u64);
    for (&shard, &count) in &s.per_shard {
        sum += per_shard(shard)? * count as f64;
        n += count;
    }
    (n > 0).then(|| sum / n as f64)
}

/// One JSON row of `results`.
pub fn row(key: &RowKey, s: &Series, seconds: f64, bound: Option<f64>, extra: Value) -> Value {
    let p50 = s.ms(0.5);
    let ratio = bound
        .filter(|&b| b > 0.0)
        .map(|b| (p50 / b * 1000.0).round() / 1000.0);
    let mut v = json!({
        "system": key.system, "region": key.region, "op": key.op, "path": key.path,
        "served_by": s.served_by.iter().map(|(p, n)| json!({"path": p, "count": n})).collect::<Vec<_>>(),
        "count": s.hist.len(), "errors": s.errors,
        "ops_per_s": r2(s.hist.len() as f64 / seconds),
        "p50_ms": r2(p50), "p90_ms": r2(s.ms(0.9)), "p99_ms": r2(s.ms(0.99)),
        "p999_ms": r2(s.ms(0.999)), "max_ms": r2(s.max_ms()),
        "bound_ms": bound.map(r2), "ratio_to_bound": ratio,
        "service_p50_ms": r2(s.service.value_at_quantile(0.5) as f64 / 1e3),
        "service_p99_ms": r2(s.service.value_at_quantile(0.99) as f64 / 1e3),
    });
    if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
        m.extend(e);
    }
    v
}

/// Writes report.json, report.md and cdf-<region>.svg under `dir`.
pub fn write(
    dir: &Path,
    header: &Value,
    rows: &[Value],
    recorded: &Recorded,
    throughput: &[Value],
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut report = header.clone();
    report["results"] = json!(rows);
    if !throughput.is_empty() {
        report["throughput"] = json!(throughput);
        let ratios = super::ratios::summarize(throughput);
        if !ratios.is_empty() {
            report["ratios"] = json!(ratios);
        }
    }
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(dir.join("report.md"), markdown(&report, rows, throughput))?;
    // One plot per region, every system's rows of that region on it.
    let mut by_region: BTreeMap<&str, Vec<Curve>> = BTreeMap::new();
    for (k, s) in recorded {
        if s.hist.is_empty() {
            continue;
        }
        let bound = rows
            .iter()
            .find(|r| {
                r["system"] == k.system
                    && r["region"] == k.region
                    && r["op"] == k.op
                    && r["path"] == k.path
            })
            .and_then(|r| r["bound_ms"].as_f64());
        by_region.entry(&k.region).or_default().push(Curve {
            key: k,
            series: s,
            bound_ms: bound,
        });
    }
    for (region, curves) in by_region {
        cdf_svg(&dir.join(format!("cdf-{region}.svg")), region, &curves)?;
    }
    Ok(())
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "–".into(),
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            if x.fract() == 0.0 {
                format!("{x:.0}")
            } else {
                format!("{x:.2}")
            }
        }
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

fn markdown(report: &Value, rows: &[Value], throughput: &[Value]) -> String {
    let mut md = String::from("# Meridian benchmark report\n\n");
    let _ = writeln!(md, "Workload: `{}`\n", report["workload"]);
    if let Some(g) = report.get("generator") {
        let _ = writeln!(md, "Load generator: `{g}`\n");
    }
    if !rows.is_empty() {
        md.push_str("Latency per system, client region, operation and path, next to the physical bound of DESIGN.md §6 (ms; ratio = p50 / bound).\n\n");
        md.push_str("| system | region | op | path | served by | count | ops/s | p50 | p90 | p99 | p99.9 | max | bound | ratio |\n|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for r in rows {
            let served: Vec<String> = r["served_by"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| format!("{} {}", cell(&s["path"]), cell(&s["count"])))
                .collect();
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                cell(&r["system"]),
                cell(&r["region"]),
                cell(&r["op"]),
                cell(&r["path"]),
                served.join(", "),
                cell(&r["count"]),
                cell(&r["ops_per_s"]),
                cell(&r["p50_ms"]),
                cell(&r["p90_ms"]),
                cell(&r["p99_ms"]),
                cell(&r["p999_ms"]),
                cell(&r["max_ms"]),
                cell(&r["bound_ms"]),
                cell(&r["ratio_to_bound"]),
            );
        }
        md.push('\n');
    }
    if !throughput.is_empty() {
        md.push_str("Throughput on loopback (no emulated delay), closed loop, fsync on for both systems.\n\n");
        md.push_str("| round | system | op | clients | ops/s | p50 ms | p99 ms | CPU µs/op (system) | of which, by role | CPU µs/op (generator) | generator busy | host steal |\n|---:|---|---|---:|---:|---:|---:|---:|---|---:|---|---:|\n");
        for t in throughput {
            let by_role = t["system_cpu_us_per_op_by_role"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(role, v)| format!("{role} {}", cell(v)))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                t["round"].as_u64().map_or(1, |r| r + 1),
                cell(&t["system"]),
                cell(&t["op"]),
                cell(&t["clients"]),
                cell(&t["ops_per_s"]),
                cell(&t["p50_ms"]),
                cell(&t["p99_ms"]),
                cell(&t["system_cpu_us_per_op"]),
                by_role,
                cell(&t["generator_cpu_us_per_op"]),
                if t["generator_bottleneck"] == true {
                    "**yes: the generator limited this row**"
                } else {
                    "no"
                },
                t["host_steal"]
                    .as_f64()
                    .map_or("—".to_string(), |x| format!("{:.1} %", x * 100.0)),
            );
        }
        if let Some(ratios) = report["ratios"].as_array() {
            md.push_str(
                "\nMeridian's rate over etcd's, each round's pair measured back to back.\n\n",
            );
            md.push_str("| op | clients | rounds | each round | median | min | max | CPU µs/op etcd / Meridian (median) | host steal, highest |\n|---|---:|---:|---|---:|---:|---:|---:|---:|\n");
            for r in ratios {
                let each: Vec<String> = r["meridian_over_etcd"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(cell)
                    .collect();
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    cell(&r["op"]),
                    cell(&r["clients"]),
                    cell(&r["rounds"]),
                    each.join(" / "),
                    cell(&r["median"]),
                    cell(&r["min"]),
                    cell(&r["max"]),
                    cell(&r["cpu_per_op_etcd_over_meridian_median"]),
                    r["host_steal_max"]
                        .as_f64()
                        .map_or("—".to_string(), |x| format!("{:.1} %", x * 100.0)),
                );
            }
        }
    }
    md
}
