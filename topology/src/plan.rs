//! A planning run and its report in the JSON schema of DESIGN.md §7.
use crate::assess::{arrange, assess, Assessment, RegionLatency};
use crate::error::Error;
use crate::failure::{analyse, linchpin, survives};
use crate::input::PlanInput;
use crate::search::{search, Method, Scored};
use serde::Serialize;

#[derive(Serialize, Debug, Clone)]
pub struct PlanReport {
    pub model: &'static str,
    pub search: SearchInfo,
    pub placements: Vec<PlacementReport>,
}

#[derive(Serialize, Debug, Clone)]
pub struct SearchInfo {
    pub method: &'static str,
    pub evaluated: u64,
}

#[derive(Serialize, Debug, Clone)]
pub struct PlacementReport {
    pub rank: usize,
    pub sites: Vec<String>,
    /// Hierarchical quorums only: the three groups of three.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<Vec<String>>>,
    pub leader: String,
    pub lease_holders: Vec<String>,
    pub objective_ms: f64,
    pub per_region: Vec<RegionReport>,
    pub failures: Vec<FailureReport>,
    pub linchpin: Option<String>,
}

#[derive(Serialize, Debug, Clone)]
pub struct RegionReport {
    pub region: String,
    pub weight: f64,
    pub read_share: f64,
    pub write_ms: f64,
    pub leader_read_ms: f64,
    pub quorum_read_ms: f64,
    pub lease_read_ms: Option<f64>,
    pub read_ms: f64,
}

#[derive(Serialize, Debug, Clone)]
pub struct FailureReport {
    pub lost: String,
    pub kind: &'static str,
    pub feasible: bool,
    pub leader: Option<String>,
    pub lease_holders: Vec<String>,
    pub objective_ms: Option<f64>,
    pub per_region: Vec<RegionReport>,
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn regions_report(input: &PlanInput, rl: &[RegionLatency]) -> Vec<RegionReport> {
    rl.iter()
        .map(|r| RegionReport {
            region: input.matrix.regions[r.region].clone(),
            weight: r.weight,
            read_share: r.read_share,
            write_ms: round(r.write_ms),
            leader_read_ms: round(r.leader_read_ms),
            quorum_read_ms: round(r.quorum_read_ms),
            lease_read_ms: r.lease_read_ms.map(round),
            read_ms: round(r.read_ms),
        })
        .collect()
}

fn site_names(input: &PlanInput, sites: &[usize], positions: &[usize]) -> Vec<String> {
    positions
        .iter()
        .map(|&p| input.matrix.regions[sites[p]].clone())
        .collect()
}

fn report(input: &PlanInput, rank: usize, s: &Scored) -> PlacementReport {
    let a: &Assessment = &s.assessment;
    let all: Vec<usize> = (0..s.sites.len()).collect();
    let failures = analyse(input, &s.sites, input.survive);
    let lin = linchpin(&failures).map(|f| f.lost.clone());
    PlacementReport {
        rank,
        sites: site_names(input, &s.sites, &all),
        groups: matches!(input.quorum, crate::input::QuorumKind::Hierarchical).then(|| {
            s.sites
                .chunks(3)
                .map(|g| g.iter().map(|&r| input.matrix.regions[r].clone()).collect())
                .collect()
        }),
        leader: input.matrix.regions[s.sites[a.leader]].clone(),
        lease_holders: site_names(input, &s.sites, &a.holders),
        objective_ms: round(a.objective_ms),
        per_region: regions_report(input, &a.per_region),
        failures: failures
            .iter()
            .map(|f| FailureReport {
                lost: f.lost.clone(),
                kind: f.kind.name(),
                feasible: f.outcome.is_some(),
                leader: f
                    .outcome
                    .as_ref()
                    .map(|o| input.matrix.regions[s.sites[o.leader]].clone()),
                lease_holders: f
                    .outcome
                    .as_ref()
                    .map_or(Vec::new(), |o| site_names(input, &s.sites, &o.holders)),
                objective_ms: f.outcome.as_ref().map(|o| round(o.objective_ms)),
                per_region: f
                    .outcome
                    .as_ref()
                    .map_or(Vec::new(), |o| regions_report(input, &o.per_region)),
            })
            .collect(),
        linchpin: lin,
    }
}

/// Searches for the best placements.
pub fn plan(input: &PlanInput) -> Result<(PlanReport, Vec<Scored>), Error> {
    input.validate()?;
    let r = search(input);
    if r.best.is_empty() {
        return Err(Error::Infeasible(format!(
            "no placement of {} replicas over the candidates survives the loss of any one {}",
            input.replicas,
            input.survive.name()
        )));
    }
    let placements = r
        .best
        .iter()
        .enumerate()
        .map(|(i, s)| report(input, i + 1, s))
        .collect();
    let rep = PlanReport {
        model: "v1",
        search: SearchInfo {
            method: r.method.name(),
            evaluated: r.evaluated,
        },
        placements,
    };
    Ok((rep, r.best))
}

/// Evaluates exactly one placement (leader and lease holders still chosen by the model).
pub fn evaluate_fixed(
    input: &PlanInput,
    fixed: &[(usize, usize)],
) -> Result<(PlanReport, Vec<Scored>), Error> {
    let placement: Vec<usize> = fixed
        .iter()
        .flat_map(|&(r, k)| std::iter::repeat_n(r, k))
        .collect();
    if placement.len() != input.replicas {
        return Err(Error::Invalid(format!(
            "--fixed names {} sites but --replicas is {}",
            placement.len(),
            input.replicas
        )));
    }
    input.validate()?;
    let sites = arrange(input, &placement);
    if let Err(domain) = survives(input, &sites, input.survive) {
        return Err(Error::Infeasible(format!(
            "losing {} '{domain}' leaves no quorum",
            input.survive.name()
        )));
    }
    let opt: Vec<Option<usize>> = sites.iter().map(|&s| Some(s)).collect();
    let a = assess(
        &input.matrix,
        &input.shape(),
        &input.demand,
        input.leases,
        &opt,
    )
    .ok_or_else(|| Error::Infeasible("the placement has no quorum".into()))?;
    let scored = Scored {
        sites,
        assessment: a,
    };
    let rep = PlanReport {
        model: "v1",
        search: SearchInfo {
            method: Method::Fixed.name(),
            evaluated: 1,
        },
        placements: vec![report(input, 1, &scored)],
    };
    Ok((rep, vec![scored]))
}
