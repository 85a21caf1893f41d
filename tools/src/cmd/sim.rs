//! `meridian sim --seeds A..B --sites 5|9 [--faults LIST] [--ops N] [--bug NAME]`
use anyhow::{bail, Context, Result};
use meridian_core::PlantedBug;
use meridian_testkit::sim::{sweep, Faults, SimConfig};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct SimArgs {
    /// Seed range, end exclusive: `1000..1050`, or one seed: `7`.
    #[arg(long, default_value = "0..20")]
    seeds: String,
    /// 5 (majority quorum) or 9 (hierarchical 3x3 quorum).
    #[arg(long, default_value_t = 5)]
    sites: usize,
    /// Faults to inject: all, none, or a list of loss,dup,reorder,partition,crash,drift.
    #[arg(long, default_value = "all")]
    faults: String,
    /// Client operations per seed.
    #[arg(long, default_value_t = 200)]
    ops: usize,
    /// Plant a bug to prove the checkers catch it: accept-lower-ballot (acceptors accept lower
    /// ballots), read-without-lease (leaders read locally without a valid lease),
    /// drift-beyond-bound (clocks drift far beyond the lease's ε), log-read-shared-token (log
    /// reads matched by a shared identity), pqr-ignore-barrier (quorum reads ignore the
    /// barrier), bounded-from-receive-time (freshness from receipt, not from the echo),
    /// proxy-retry-new-seq (a retried write takes a new sequence number), write-skips-holder
    /// (a write commits without a quorum-lease holder's acknowledgement) or scan-at-present
    /// (a read at a revision answered from the present state).
    #[arg(long)]
    bug: Option<String>,
    /// Disable leader leases (every read goes through the log).
    #[arg(long)]
    no_lease: bool,
    /// Run quorum leases in every seed (holders chosen per seed); by default a fifth of the
    /// seeds run them.
    #[arg(long)]
    quorum_leases: bool,
    /// With quorum leases, `[leases] mode = "auto"` in every quorum-lease seed: the leaders
    /// choose (and change) the holders from the demand they see. Implies --quorum-leases.
    #[arg(long)]
    auto_leases: bool,
    /// Write the history of each failing seed to DIR/seed-N.jsonl.
    #[arg(long)]
    history_dir: Option<std::path::PathBuf>,
}

pub fn parse_seeds(s: &str) -> Result<std::ops::Range<u64>> {
    if let Some((a, b)) = s.split_once("..") {
        let (a, b): (u64, u64) = (
            a.trim().parse().context("seed range start")?,
            b.trim().parse().context("seed range end")?,
        );
        if b <= a {
            bail!("empty seed range {s} (the end is exclusive)");
        }
        Ok(a..b)
    } else {
        let a: u64 = s
            .trim()
            .parse()
            .with_context(|| format!("--seeds '{s}' is neither A..B nor a number"))?;
        Ok(a..a + 1)
    }
}

pub fn run(a: SimArgs) -> Result<ExitCode> {
    let seeds = parse_seeds(&a.seeds)?;
    let mut cfg = SimConfig::for_sites(a.sites).map_err(anyhow::Error::msg)?;
    cfg.faults = Faults::parse(&a.faults).map_err(anyhow::Error::msg)?;
    if a.ops == 0 {
        bail!("--ops must be at least 1");
    }
    cfg.ops = a.ops;
    cfg.lease = !a.no_lease;
    cfg.quorum_leases = a.quorum_leases || a.auto_leases;
    cfg.auto_leases = a.auto_leases;
    // The liveness window grows with the work each client has left after healing.
    cfg.liveness_window = std::time::Duration::from_secs(45)
        + std::time::Duration::from_millis(400 * (a.ops / cfg.clients) as u64);
    match a.bug.as_deref() {
        None => {}
        Some("drift-beyond-bound") => {
            cfg.drift_beyond_bound = true;
            cfg.preferred_leader = Some(meridian_core::SiteId(0));
        }
        Some(name) => match PlantedBug::parse(name) {
            Some(b) => cfg.planted_bug = Some(b),
            None => {
                let known: Vec<&str> = PlantedBug::ALL.iter().map(|(n, _)| *n).collect();
                bail!(
                    "unknown --bug '{name}' (known: {}, drift-beyond-bound)",
                    known.join(", ")
                )
            }
        },
    }
    if let Some(d) = &a.history_dir {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let summary = sweep(&cfg, seeds, |r| {
        if r.failed() {
            let mut line = format!(
                "seed {} FAILED: violations={} agreement={} stale_reads={} incomplete={}; reproduce: meridian sim --seeds {} --sites {} --faults {} --ops {}",
                r.seed,
                r.violations(),
                r.agreement_violations,
                r.stale_reads,
                r.incomplete_after_heal,
                r.seed,
                a.sites,
                cfg.faults.names(),
                a.ops
            );
            if let Some(b) = &a.bug {
                line += &format!(" --bug {b}");
            }
            if a.no_lease {
                line += " --no-lease";
            }
            if a.auto_leases {
                line += " --auto-leases";
            } else if a.quorum_leases {
                line += " --quorum-leases";
            }
            println!("{line}");
            for e in &r.examples {
                println!("  {e}");
            }
            if let Some(d) = &a.history_dir {
                let path = d.join(format!("seed-{}.jsonl", r.seed));
                if let Err(e) =
                    std::fs::write(&path, meridian_testkit::history::to_jsonl(&r.history))
                {
                    eprintln!("could not write {}: {e}", path.display());
                }
            }
        }
    });
    println!("{}", serde_json::to_string(&summary)?);
    let bad = summary.violations
        + summary.agreement_violations
        + summary.stale_reads
        + summary.incomplete_after_heal;
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
