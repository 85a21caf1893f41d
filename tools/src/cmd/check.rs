//! `meridian check FILE`: linearizability of a recorded history (DESIGN.md §7b).
use anyhow::{Context, Result};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct CheckArgs {
    /// History file, one JSON object per line.
    file: std::path::PathBuf,
}

pub fn run(a: CheckArgs) -> Result<ExitCode> {
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("reading {}", a.file.display()))?;
    let ops = meridian_testkit::history::parse_jsonl(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.file.display()))?;
    let verdicts = meridian_testkit::linearizability::check(&ops);
    let bad: Vec<_> = verdicts.iter().filter(|v| !v.linearizable).collect();
    for v in &bad {
        println!("key {:?}: NOT linearizable ({} operations)", v.key, v.ops);
        for a in &v.anomalies {
            println!("  {a}");
        }
    }
    let summary = serde_json::json!({
        "ops": ops.len(), "keys": verdicts.len(), "violations": bad.len(), "linearizable": bad.is_empty(),
    });
    println!("{summary}");
    Ok(if bad.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
