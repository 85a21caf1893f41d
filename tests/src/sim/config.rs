//! What one simulated run looks like: sites, regions, faults, workload, timing.
use meridian_core::{PlantedBug, Quorum, SiteId};
use std::time::Duration;

/// Which faults the run injects during its fault phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Faults {
    pub loss: bool,
    pub dup: bool,
    pub reorder: bool,
    pub partition: bool,
    pub crash: bool,
    /// Process stalls (GC, VM migration): the site processes nothing for a while, then resumes.
    pub pause: bool,
    pub drift: bool,
}

impl Faults {
    pub const ALL: Faults = Faults {
        loss: true,
        dup: true,
        reorder: true,
        partition: true,
        crash: true,
        pause: true,
        drift: true,
    };
    pub const NONE: Faults = Faults {
        loss: false,
        dup: false,
        reorder: false,
        partition: false,
        crash: false,
        pause: false,
        drift: false,
    };

    /// `all`, `none`, or a comma-separated list of `loss,dup,reorder,partition,crash,pause,drift`.
    pub fn parse(list: &str) -> Result<Faults, String> {
        let mut f = Faults::NONE;
        for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "all" => f = Faults::ALL,
                "none" => {}
                "loss" => f.loss = true,
                "dup" => f.dup = true,
                "reorder" => f.reorder = true,
                "partition" => f.partition = true,
                "crash" => f.crash = true,
                "pause" => f.pause = true,
                "drift" => f.drift = true,
                other => return Err(format!("unknown fault '{other}' (loss, dup, reorder, partition, crash, pause, drift, all, none)")),
            }
        }
        Ok(f)
    }

    pub fn names(&self) -> String {
        let all = [
            ("loss", self.loss),
            ("dup", self.dup),
            ("reorder", self.reorder),
            ("partition", self.partition),
            ("crash", self.crash),
            ("pause", self.pause),
            ("drift", self.drift),
        ];
        let on: Vec<_> = all.iter().filter(|(_, b)| *b).map(|(n, _)| *n).collect();
        if on.is_empty() {
            "none".into()
        } else {
            on.join(",")
        }
    }
}

#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Region of each site (index = SiteId).
    pub regions: Vec<String>,
    pub quorum: Quorum,
    pub faults: Faults,
    /// Client operations in the whole run.
    pub ops: usize,
    pub clients: usize,
    pub keys: usize,
    /// Faults are injected until this (true) time, then everything heals.
    pub fault_phase: Duration,
    /// After healing, every operation must complete within this.
    pub liveness_window: Duration,
    pub planted_bug: Option<PlantedBug>,
    pub lease: bool,
    /// Simulated fsync time.
    pub fsync: Duration,
    pub preferred_leader: Option<SiteId>,
    /// Take a state-machine snapshot every this many applied slots.
    pub snapshot_every: u64,
    /// Clock drift rate bound ε used by the cores; the simulator drifts clocks within it.
    pub drift_bound: f64,
    /// Test-only: drift clocks far beyond ε (rates 0.4..1.6) to show that the lease and
    /// linearizability checkers catch the stale reads that follow.
    pub drift_beyond_bound: bool,
    /// Vary the run by seed: a quarter of the seeds without leases (reads through the log), a
    /// third with a preferred leader (leadership transfers).
    pub vary: bool,
    /// Run quorum leases (holders chosen per seed). With `vary`, a fifth of the other seeds
    /// run them too.
    pub quorum_leases: bool,
    /// With quorum leases: `[leases] mode = "auto"` (the leaders choose the holders from the
    /// demand, and change them during the run) instead of a pinned random set. With `vary`,
    /// half of the quorum-lease seeds.
    pub auto_leases: bool,
}

/// The five regions of the default demo cluster.
pub const FIVE_REGIONS: [&str; 5] = [
    "us-east-1",
    "us-west-2",
    "eu-west-1",
    "eu-central-1",
    "ap-northeast-1",
];
/// Nine regions in three continental groups of three (hierarchical quorums).
pub const NINE_REGIONS: [&str; 9] = [
    "us-east-1",
    "us-east-2",
    "us-west-2",
    "eu-west-1",
    "eu-west-2",
    "eu-central-1",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-southeast-1",
];

impl SimConfig {
    /// 5 sites use a majority quorum, 9 sites the hierarchical 3x3 quorum.
    pub fn for_sites(sites: usize) -> Result<SimConfig, String> {
        let (regions, quorum): (Vec<String>, Quorum) = match sites {
            5 => (
                FIVE_REGIONS.iter().map(|s| s.to_string()).collect(),
                Quorum::Majority(5),
            ),
            9 => (
                NINE_REGIONS.iter().map(|s| s.to_string()).collect(),
                Quorum::three_by_three(),
            ),
            n => return Err(format!("--sites must be 5 or 9, not {n}")),
        };
        Ok(SimConfig {
            regions,
            quorum,
            faults: Faults::ALL,
            ops: 200,
            clients: sites,
            keys: 4,
            fault_phase: Duration::from_secs(15),
            liveness_window: Duration::from_secs(45),
            planted_bug: None,
            lease: true,
            fsync: Duration::from_micros(200),
            preferred_leader: None,
            snapshot_every: 40,
            drift_bound: 0.01,
            drift_beyond_bound: false,
            vary: true,
            quorum_leases: false,
            auto_leases: false,
        })
    }

    pub fn sites(&self) -> usize {
        self.regions.len()
    }
}
