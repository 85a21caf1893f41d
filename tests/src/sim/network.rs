//! The simulated WAN: one-way delay rtt/2 from the RTT matrix per link, kept FIFO per link unless
//! reordering is on; loss, duplication and partitions while faults are active.
use meridian_core::Rng;
use meridian_topology::RttMatrix;

pub struct Network {
    /// One-way delay in ns between region indices of the matrix.
    one_way_ns: Vec<Vec<u64>>,
    /// Latest delivery time per (from, to) site link, for FIFO.
    link_last: Vec<Vec<u64>>,
    /// Per site: the sites it cannot exchange messages with (symmetric).
    cut: Vec<u32>,
    pub faulty: bool,
    pub loss: bool,
    pub dup: bool,
    pub reorder: bool,
}

pub const LOSS_P: f64 = 0.03;
pub const DUP_P: f64 = 0.02;
pub const REORDER_JITTER_NS: u64 = 30_000_000;
/// A duplicate may arrive much later than the original (a replay from a stale connection).
pub const DUP_DELAY_MAX_NS: u64 = 3_000_000_000;

impl Network {
    pub fn new(m: &RttMatrix, sites: usize) -> Network {
        let one_way_ns =
            m.ms.iter()
                .map(|row| row.iter().map(|ms| (ms * 1e6 / 2.0) as u64).collect())
                .collect();
        Network {
            one_way_ns,
            link_last: vec![vec![0; sites]; sites],
            cut: vec![0; sites],
            faulty: false,
            loss: false,
            dup: false,
            reorder: false,
        }
    }

    pub fn one_way(&self, region_a: usize, region_b: usize) -> u64 {
        self.one_way_ns[region_a][region_b]
    }

    /// A clean split: sites in `side` cannot talk to sites outside it.
    pub fn split(&mut self, side: u32) {
        let n = self.cut.len();
        for a in 0..n {
            for b in 0..n {
                if ((side >> a) & 1) != ((side >> b) & 1) {
                    self.cut[a] |= 1 << b;
                }
            }
        }
    }

    /// Cuts single links (non-transitive reachability: A hears B, B hears C, A not C).
    pub fn cut_link(&mut self, a: usize, b: usize) {
        self.cut[a] |= 1 << b;
        self.cut[b] |= 1 << a;
    }

    pub fn heal(&mut self) {
        self.cut.iter_mut().for_each(|c| *c = 0);
    }

    pub fn blocked(&self, a: usize, b: usize) -> bool {
        (self.cut[a] >> b) & 1 == 1
    }

    /// Delivery times for a message from site `a` to site `b` sent at `now` (empty: dropped).
    pub fn delivery_times(
        &mut self,
        rng: &mut Rng,
        now: u64,
        a: usize,
        b: usize,
        ra: usize,
        rb: usize,
    ) -> Vec<u64> {
        if self.blocked(a, b) {
            return Vec::new();
        }
        if self.faulty && self.loss && rng.chance(LOSS_P) {
            return Vec::new();
        }
        let base = now + self.one_way(ra, rb);
        let mut at = if self.faulty && self.reorder {
            base + rng.below(REORDER_JITTER_NS)
        } else {
            base
        };
        if !(self.faulty && self.reorder) {
            at = at.max(self.link_last[a][b]);
            self.link_last[a][b] = at;
        }
        let mut out = vec![at];
        if self.faulty && self.dup && rng.chance(DUP_P) {
            out.push(at + rng.below(DUP_DELAY_MAX_NS));
        }
        out
    }
}
