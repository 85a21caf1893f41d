//! Placement search: exhaustive over every multiset of candidate sites where that is small
//! enough, else a deterministic multi-start local search (swap one site at a time).
use crate::assess::{arrange, assess, Assessment};
use crate::failure::survives;
use crate::input::PlanInput;
use std::collections::BTreeMap;

/// Above this many placements the search switches to local search.
pub const EXHAUSTIVE_LIMIT: u128 = 300_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Exhaustive,
    Local,
    Fixed,
}

impl Method {
    pub fn name(&self) -> &'static str {
        match self {
            Method::Exhaustive => "exhaustive",
            Method::Local => "local",
            Method::Fixed => "fixed",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Scored {
    /// Region per position, in scoring order (grouped for hierarchical quorums).
    pub sites: Vec<usize>,
    pub assessment: Assessment,
}

pub struct SearchResult {
    pub method: Method,
    pub evaluated: u64,
    /// Best first.
    pub best: Vec<Scored>,
}

/// Number of multisets of size `n` within the per-region limits.
pub fn count_placements(cands: &[(usize, usize)], n: usize) -> u128 {
    let mut ways = vec![0u128; n + 1];
    ways[0] = 1;
    for &(_, max) in cands {
        let mut next = vec![0u128; n + 1];
        for (have, w) in ways.iter().enumerate() {
            for k in 0..=max.min(n - have) {
                next[have + k] += w;
            }
        }
        ways = next;
    }
    ways[n]
}

struct Evaluator<'a> {
    input: &'a PlanInput,
    evaluated: u64,
    seen: BTreeMap<Vec<usize>, Option<f64>>,
    top: Vec<Scored>,
}

impl<'a> Evaluator<'a> {
    /// Scores a placement (a sorted multiset of regions); None if infeasible.
    fn score(&mut self, mut placement: Vec<usize>) -> Option<f64> {
        placement.sort_unstable();
        if let Some(v) = self.seen.get(&placement) {
            return *v;
        }
        self.evaluated += 1;
        let sites = arrange(self.input, &placement);
        let result = if survives(self.input, &sites, self.input.survive).is_err() {
            None
        } else {
            let shape = self.input.shape();
            let opt: Vec<Option<usize>> = sites.iter().map(|&s| Some(s)).collect();
            assess(
                &self.input.matrix,
                &shape,
                &self.input.demand,
                self.input.leases,
                &opt,
            )
            .map(|a| {
                let obj = a.objective_ms;
                self.offer(Scored {
                    sites,
                    assessment: a,
                });
                obj
            })
        };
        self.seen.insert(placement, result);
        result
    }

    fn offer(&mut self, s: Scored) {
        let k = self.input.top.max(1);
        self.top.push(s);
        self.top.sort_by(|a, b| {
            a.assessment
                .objective_ms
                .total_cmp(&b.assessment.objective_ms)
                .then_with(|| sorted(&a.sites).cmp(&sorted(&b.sites)))
        });
        self.top.truncate(k);
    }
}

fn sorted(v: &[usize]) -> Vec<usize> {
    let mut v = v.to_vec();
    v.sort_unstable();
    v
}

pub fn search(input: &PlanInput) -> SearchResult {
    let total = count_placements(&input.candidates, input.replicas);
    let mut ev = Evaluator {
        input,
        evaluated: 0,
        seen: BTreeMap::new(),
        top: Vec::new(),
    };
    let method = if total <= EXHAUSTIVE_LIMIT {
        let mut cur = Vec::new();
        enumerate(&input.candidates, input.replicas, 0, &mut cur, &mut |p| {
            ev.score(p.to_vec());
        });
        Method::Exhaustive
    } else {
        local_search(&mut ev);
        Method::Local
    };
    SearchResult {
        method,
        evaluated: ev.evaluated,
        best: ev.top,
    }
}

/// Exhaustive search regardless of size (tests compare it with the heuristic).
pub fn search_exhaustive(input: &PlanInput) -> SearchResult {
    let mut ev = Evaluator {
        input,
        evaluated: 0,
        seen: BTreeMap::new(),
        top: Vec::new(),
    };
    let mut cur = Vec::new();
    enumerate(&input.candidates, input.replicas, 0, &mut cur, &mut |p| {
        ev.score(p.to_vec());
    });
    SearchResult {
        method: Method::Exhaustive,
        evaluated: ev.evaluated,
        best: ev.top,
    }
}

/// Local search regardless of size.
pub fn search_local(input: &PlanInput) -> SearchResult {
    let mut ev = Evaluator {
        input,
        evaluated: 0,
        seen: BTreeMap::new(),
        top: Vec::new(),
    };
    local_search(&mut ev);
    SearchResult {
        method: Method::Local,
        evaluated: ev.evaluated,
        best: ev.top,
    }
}

fn enumerate(
    cands: &[(usize, usize)],
    n: usize,
    i: usize,
    cur: &mut Vec<usize>,
    f: &mut impl FnMut(&[usize]),
) {
    if cur.len() == n {
        f(cur);
        return;
    }
    if i == cands.len() {
        return;
    }
    let (region, max) = cands[i];
    for k in (0..=max.min(n - cur.len())).rev() {
        for _ in 0..k {
            cur.push(region);
        }
        enumerate(cands, n, i + 1, cur, f);
        for _ in 0..k {
            cur.pop();
        }
    }
}

/// Deterministic multi-start best-improvement swap search.
fn local_search(ev: &mut Evaluator) {
    let input = ev.input;
    let n = input.replicas;
    let slots: Vec<usize> = input
        .candidates
        .iter()
        .flat_map(|&(r, k)| std::iter::repeat_n(r, k))
        .collect();
    let mut starts: Vec<Vec<usize>> = Vec::new();
    // Start 1: the slots closest to the demand (weighted mean RTT).
    let mut by_demand = slots.clone();
    let demand_cost = |r: usize| {
        input
            .demand
            .iter()
            .map(|d| d.weight * input.matrix.rtt(d.region, r))
            .sum::<f64>()
    };
    by_demand.sort_by(|&a, &b| demand_cost(a).total_cmp(&demand_cost(b)).then(a.cmp(&b)));
    starts.push(by_demand[..n].to_vec());
    // Starts 2..: seeded pseudo-random placements.
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..15 {
        let mut pool = slots.clone();
        let mut p = Vec::new();
        for _ in 0..n {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            p.push(pool.swap_remove((rng % pool.len() as u64) as usize));
        }
        starts.push(p);
    }
    for start in starts {
        descend(ev, start, &slots);
    }
}

fn descend(ev: &mut Evaluator, mut cur: Vec<usize>, slots: &[usize]) {
    let mut cur_score = ev.score(cur.clone()).unwrap_or(f64::INFINITY);
    loop {
        let mut best: Option<(f64, Vec<usize>)> = None;
        for i in 0..cur.len() {
            let mut distinct: Vec<usize> = slots.to_vec();
            distinct.dedup();
            for &r in &distinct {
                if r == cur[i] {
                    continue;
                }
                let limit = slots.iter().filter(|&&s| s == r).count();
                if cur.iter().filter(|&&s| s == r).count() >= limit {
                    continue;
                }
                let mut next = cur.clone();
                next[i] = r;
                if let Some(s) = ev.score(next.clone()) {
                    if s < cur_score - 1e-9 && best.as_ref().is_none_or(|b| s < b.0) {
                        best = Some((s, next));
                    }
                }
            }
        }
        match best {
            Some((s, next)) => {
                cur = next;
                cur_score = s;
            }
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_counts() {
        assert_eq!(count_placements(&[(0, 1), (1, 1), (2, 1), (3, 1)], 2), 6);
        assert_eq!(count_placements(&[(0, 2), (1, 1)], 2), 2);
        let all: Vec<(usize, usize)> = (0..32).map(|r| (r, 1)).collect();
        assert_eq!(count_placements(&all, 5), 201_376);
        assert_eq!(count_placements(&all, 9), 28_048_800);
    }
}
