//! `[leases] mode = "auto"` (DESIGN.md §2 "Quorum leases"): who should hold read leases on a
//! shard, from where its operations come.
//!
//! Every replica counts the linearizable reads it serves by their origin site (the site of
//! the proxy that sent them; a quorum read counts 1/n at each of the n replicas it asks) and
//! reports the counts to the leader; the leader counts writes itself. Every interval the
//! leader folds the counts into a decaying demand (half of the old weight per interval), runs
//! the planner's holder rule (`meridian_topology::leases::best_holders`, the very function
//! `meridian plan --leases` runs) with itself as the leader over the sites' RTT matrix, and
//! proposes the new holder set through the log when it saves enough (hysteresis), or at once
//! when a holder has gone silent (it is then treated as a lost site).
use meridian_topology::input::Demand;
use meridian_topology::leases::{best_holders, objective, worth_switching};
use meridian_topology::model::QuorumShape;
use meridian_topology::RttMatrix;
use std::sync::Arc;
use std::time::Duration;

/// The knobs of the automatic choice.
#[derive(Clone, Debug)]
pub struct AutoLeases {
    /// Round-trip times between sites (the sites' regions in the configured matrix).
    pub matrix: Arc<RttMatrix>,
    /// Region of each site position, as indices into `matrix`.
    pub site_regions: Vec<usize>,
    pub shape: QuorumShape,
    /// How often the leader re-evaluates (followers report four times as often).
    pub every: Duration,
    /// Below this many operations of (decayed) demand the current choice stays.
    pub min_ops: f64,
    /// Hysteresis: a new set must save this share of the objective and `min_saving_ms`.
    pub min_saving: f64,
    pub min_saving_ms: f64,
    /// A site silent this long at the leader is treated as lost (no longer a holder).
    pub silent_after: Duration,
}

/// The counts of one replica of one shard.
#[derive(Clone, Debug)]
pub struct Demands {
    /// Reads counted here since the last report (followers) or evaluation (leader).
    reads: Vec<f64>,
    /// Writes counted here (the leader).
    writes: Vec<f64>,
    /// The leader's decayed demand.
    demand_reads: Vec<f64>,
    demand_writes: Vec<f64>,
    next_report: Duration,
    next_eval: Duration,
}

/// What the leader decided at an evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    pub holders: Vec<u8>,
    pub objective_ms: f64,
    pub current_ms: f64,
}

impl Demands {
    pub fn new(n: usize, now: Duration, every: Duration) -> Demands {
        Demands {
            reads: vec![0.0; n],
            writes: vec![0.0; n],
            demand_reads: vec![0.0; n],
            demand_writes: vec![0.0; n],
            next_report: now + every / 4,
            next_eval: now + every,
        }
    }

    /// Number of sites counted.
    pub fn sites(&self) -> usize {
        self.reads.len()
    }

    pub fn read(&mut self, origin: Option<u8>, weight: f64) {
        if let Some(r) = origin.and_then(|o| self.reads.get_mut(o as usize)) {
            *r += weight;
        }
    }

    pub fn write(&mut self, origin: Option<u8>, count: usize) {
        if let Some(w) = origin.and_then(|o| self.writes.get_mut(o as usize)) {
            *w += count as f64;
        }
    }

    /// A follower's report reached the leader: milli-reads by origin site.
    pub fn add_report(&mut self, milli_reads: &[u64]) {
        for (r, m) in self.reads.iter_mut().zip(milli_reads) {
            *r += *m as f64 / 1000.0;
        }
    }

    /// A follower's report, when one is due and there is something to say (counts reset).
    pub fn take_report(&mut self, now: Duration, every: Duration) -> Option<Vec<u64>> {
        if now < self.next_report {
            return None;
        }
        self.next_report = now + every / 4;
        if self.reads.iter().all(|r| *r == 0.0) {
            return None;
        }
        let out = self.reads.iter().map(|r| (r * 1000.0) as u64).collect();
        self.reads.iter_mut().for_each(|r| *r = 0.0);
        self.writes.iter_mut().for_each(|w| *w = 0.0);
        Some(out)
    }

    /// The decayed demand, per origin site with any (for status and tests).
    pub fn demand(&self) -> Vec<(usize, f64, f64)> {
        (0..self.demand_reads.len())
            .filter(|&s| self.demand_reads[s] + self.demand_writes[s] > 0.0)
            .map(|s| (s, self.demand_reads[s], self.demand_writes[s]))
            .collect()
    }

    /// Leader: at each interval, fold the counts in and decide. `current`: the log's holders;
    /// `silent(s)`: whether site `s` has been silent too long. `None`: keep the current set.
    pub fn evaluate(
        &mut self,
        now: Duration,
        cfg: &AutoLeases,
        me: usize,
        current: &[u8],
        silent: impl Fn(usize) -> bool,
    ) -> Option<Choice> {
        if !self.fold(now, cfg.every) {
            return None;
        }
        self.decide(cfg, me, current, silent)
    }

    /// Leader: folds the counts into the decayed demand when an interval has passed (returns
    /// whether it did).
    pub fn fold(&mut self, now: Duration, every: Duration) -> bool {
        if now < self.next_eval {
            return false;
        }
        self.next_eval = now + every;
        for s in 0..self.reads.len() {
            self.demand_reads[s] = self.demand_reads[s] / 2.0 + self.reads[s];
            self.demand_writes[s] = self.demand_writes[s] / 2.0 + self.writes[s];
        }
        self.reads.iter_mut().for_each(|r| *r = 0.0);
        self.writes.iter_mut().for_each(|w| *w = 0.0);
        true
    }

    /// The holder rule on the current demand (see `evaluate`).
    pub fn decide(
        &self,
        cfg: &AutoLeases,
        me: usize,
        current: &[u8],
        silent: impl Fn(usize) -> bool,
    ) -> Option<Choice> {
        let sites: Vec<Option<usize>> = cfg
            .site_regions
            .iter()
            .enumerate()
            .map(|(s, &r)| (s == me || !silent(s)).then_some(r))
            .collect();
        let lost_holder = current.iter().any(|&h| sites[h as usize].is_none());
        let total: f64 = self.demand_reads.iter().chain(&self.demand_writes).sum();
        if total < cfg.min_ops && !lost_holder {
            return None;
        }
        let demand: Vec<Demand> = (0..sites.len())
            .filter_map(|s| {
                let w = self.demand_reads[s] + self.demand_writes[s];
                (w > 0.0).then(|| Demand {
                    region: cfg.site_regions[s],
                    weight: w,
                    read_share: self.demand_reads[s] / w,
                })
            })
            .collect();
        let current_pos: Vec<usize> = current
            .iter()
            .map(|&h| h as usize)
            .filter(|&h| sites[h].is_some())
            .collect();
        let current_ms = objective(&cfg.matrix, &cfg.shape, &demand, &sites, me, &current_pos);
        let (best_ms, best) = if total < cfg.min_ops {
            // Too little demand to judge: only drop the lost holders.
            (current_ms, current_pos.clone())
        } else {
            best_holders(&cfg.matrix, &cfg.shape, &demand, &sites, me)?
        };
        // A lost holder is never in `best`, so its set always changes.
        let current_all: Vec<usize> = current.iter().map(|&h| h as usize).collect();
        let change = best != current_all
            && (lost_holder
                || worth_switching(current_ms, best_ms, cfg.min_saving, cfg.min_saving_ms));
        change.then(|| Choice {
            holders: best.iter().map(|&h| h as u8).collect(),
            objective_ms: best_ms,
            current_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AutoLeases {
        let m = RttMatrix::embedded();
        let names = [
            "us-east-1",
            "us-west-2",
            "eu-west-1",
            "ap-northeast-1",
            "ap-southeast-2",
        ];
        AutoLeases {
            site_regions: names.iter().map(|n| m.index(n).unwrap()).collect(),
            matrix: Arc::new(m),
            shape: QuorumShape::Majority,
            every: Duration::from_secs(5),
            min_ops: 50.0,
            min_saving: 0.05,
            min_saving_ms: 1.0,
            silent_after: Duration::from_secs(10),
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn heavy_readers_get_holders_and_the_choice_is_the_planners() {
        let c = cfg();
        let mut d = Demands::new(5, secs(0), c.every);
        for _ in 0..1000 {
            d.read(Some(3), 1.0); // Tokyo reads
        }
        d.write(Some(0), 10);
        assert_eq!(d.evaluate(secs(1), &c, 0, &[], |_| false), None, "not due");
        let ch = d
            .evaluate(secs(5), &c, 0, &[], |_| false)
            .expect("a change");
        assert!(ch.holders.contains(&3), "{ch:?}");
        // The planner's rule on the same demand, by hand.
        let sites: Vec<_> = c.site_regions.iter().map(|&r| Some(r)).collect();
        let demand = [
            Demand {
                region: c.site_regions[0],
                weight: 10.0,
                read_share: 0.0,
            },
            Demand {
                region: c.site_regions[3],
                weight: 1000.0,
                read_share: 1.0,
            },
        ];
        let (obj, h) = best_holders(&c.matrix, &c.shape, &demand, &sites, 0).unwrap();
        assert_eq!(ch.holders, h.iter().map(|&x| x as u8).collect::<Vec<_>>());
        assert!((ch.objective_ms - obj).abs() < 1e-9);
    }

    #[test]
    fn hysteresis_keeps_a_good_enough_set_and_decay_follows_a_shift() {
        let c = cfg();
        let mut d = Demands::new(5, secs(0), c.every);
        for _ in 0..1000 {
            d.read(Some(3), 1.0);
        }
        let first = d.evaluate(secs(5), &c, 0, &[], |_| false).unwrap();
        // The same demand again: no change proposed.
        for _ in 0..1000 {
            d.read(Some(3), 1.0);
        }
        assert_eq!(d.evaluate(secs(10), &c, 0, &first.holders, |_| false), None);
        // Demand turns write-heavy from the leader's region: holders only cost writes now;
        // after the old reads decay the set shrinks.
        let mut changed = None;
        for t in 3..12 {
            d.write(Some(0), 1000);
            if let Some(ch) = d.evaluate(secs(5 * t), &c, 0, &first.holders, |_| false) {
                changed = Some(ch);
                break;
            }
        }
        let ch = changed.expect("the choice follows the demand");
        assert!(
            ch.holders.len() < first.holders.len(),
            "{ch:?} vs {first:?}"
        );
        assert!(ch.objective_ms < ch.current_ms);
    }

    #[test]
    fn a_silent_holder_is_dropped_at_once_and_little_demand_changes_nothing() {
        let c = cfg();
        let mut d = Demands::new(5, secs(0), c.every);
        d.read(Some(3), 3.0);
        assert_eq!(d.evaluate(secs(5), &c, 0, &[], |_| false), None, "min_ops");
        let ch = d
            .evaluate(secs(10), &c, 0, &[0, 3], |s| s == 3)
            .expect("the silent holder goes");
        assert_eq!(ch.holders, vec![0]);
    }

    #[test]
    fn reports_carry_follower_counts_to_the_leader() {
        let c = cfg();
        let mut f = Demands::new(5, secs(0), c.every);
        f.read(Some(2), 1.0);
        f.read(Some(2), 1.0 / 3.0);
        assert_eq!(f.take_report(secs(0), c.every), None, "not due");
        let r = f.take_report(secs(2), c.every).unwrap();
        assert_eq!(r, vec![0, 0, 1333, 0, 0]);
        assert_eq!(f.take_report(secs(4), c.every), None, "nothing new");
        let mut l = Demands::new(5, secs(0), c.every);
        for _ in 0..100 {
            l.add_report(&r);
        }
        l.evaluate(secs(5), &c, 0, &[], |_| false);
        let dm = l.demand();
        assert_eq!(dm.len(), 1);
        assert!((dm[0].1 - 133.3).abs() < 0.01, "{dm:?}");
    }
}
