//! Failure-domain analysis (DESIGN.md §7): lose one site, region or continent, keep the full
//! group's quorum sizes, re-choose the leader among survivors and re-score.
use crate::assess::{assess, has_quorum, Assessment};
use crate::input::{PlanInput, Survive};

#[derive(Clone, Debug, PartialEq)]
pub struct FailureCase {
    /// The lost domain: a site (region name, `#k` when a region hosts several), a region or a
    /// continent.
    pub lost: String,
    pub kind: Survive,
    /// `None` when no quorum survives.
    pub outcome: Option<Assessment>,
}

/// The failure domains of a placement of the given kind, with the positions each one holds.
pub fn domains(input: &PlanInput, sites: &[usize], kind: Survive) -> Vec<(String, Vec<usize>)> {
    let m = &input.matrix;
    match kind {
        Survive::Site => sites
            .iter()
            .enumerate()
            .map(|(p, &r)| {
                let same = sites.iter().filter(|&&x| x == r).count();
                let name = if same > 1 {
                    let k = sites[..=p].iter().filter(|&&x| x == r).count();
                    format!("{}#{k}", m.regions[r])
                } else {
                    m.regions[r].clone()
                };
                (name, vec![p])
            })
            .collect(),
        Survive::Region => group_by(sites, |r| m.regions[r].clone()),
        Survive::Continent => group_by(sites, |r| input.continent[r].clone()),
    }
}

fn group_by(sites: &[usize], key: impl Fn(usize) -> String) -> Vec<(String, Vec<usize>)> {
    let mut out: Vec<(String, Vec<usize>)> = Vec::new();
    for (p, &r) in sites.iter().enumerate() {
        let k = key(r);
        match out.iter_mut().find(|(n, _)| *n == k) {
            Some(e) => e.1.push(p),
            None => out.push((k, vec![p])),
        }
    }
    out
}

fn without(sites: &[usize], lost: &[usize]) -> Vec<Option<usize>> {
    sites
        .iter()
        .enumerate()
        .map(|(p, &r)| (!lost.contains(&p)).then_some(r))
        .collect()
}

/// Does a quorum survive the loss of any single domain of `kind`? Else names the first domain
/// that breaks it.
pub fn survives(input: &PlanInput, sites: &[usize], kind: Survive) -> Result<(), String> {
    let shape = input.shape();
    for (name, lost) in domains(input, sites, kind) {
        if !has_quorum(&shape, &without(sites, &lost)) {
            return Err(name);
        }
    }
    Ok(())
}

/// Every single-domain loss of `kind`, scored.
pub fn analyse(input: &PlanInput, sites: &[usize], kind: Survive) -> Vec<FailureCase> {
    let shape = input.shape();
    domains(input, sites, kind)
        .into_iter()
        .map(|(lost, positions)| {
            let outcome = assess(
                &input.matrix,
                &shape,
                &input.demand,
                input.leases,
                &without(sites, &positions),
            );
            FailureCase {
                lost,
                kind,
                outcome,
            }
        })
        .collect()
}

/// The domain whose loss hurts most (an unrecoverable loss hurts most of all).
pub fn linchpin(cases: &[FailureCase]) -> Option<&FailureCase> {
    let cost = |c: &FailureCase| c.outcome.as_ref().map_or(f64::INFINITY, |a| a.objective_ms);
    cases
        .iter()
        .fold(None, |best: Option<&FailureCase>, c| match best {
            Some(b) if cost(b) >= cost(c) => Some(b),
            _ => Some(c),
        })
}
