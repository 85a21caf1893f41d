//! Latency recording: one HDR histogram (microseconds, 3 significant digits, 1 µs .. 1 h) per
//! (system, region, operation, path), mergeable across client tasks.
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::time::Duration;

/// What a row of the report is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RowKey {
    pub system: String,
    pub region: String,
    /// `write` or `read`.
    pub op: String,
    /// The path asked for: `leader` for writes; `auto|leader|quorum|lease|serializable|bounded:MS`
    /// for Meridian reads; `linearizable|serializable` for etcd reads.
    pub path: String,
}

#[derive(Clone, Debug)]
pub struct Series {
    /// Latency from when each operation was due (= sent, closed loop).
    pub hist: Histogram<u64>,
    /// Service time: from when it was actually sent (differs from `hist` only open loop,
    /// when the generator fell behind its schedule).
    pub service: Histogram<u64>,
    /// The path that answered (Meridian reports it per request) and how often.
    pub served_by: BTreeMap<String, u64>,
    /// Requests that failed (not counted in the histogram).
    pub errors: u64,
    /// Operations per shard (the bound is computed per shard, then weighted by these).
    pub per_shard: BTreeMap<u32, u64>,
}

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

impl Default for Series {
    fn default() -> Series {
        Series {
            hist: new_histogram(),
            service: new_histogram(),
            served_by: BTreeMap::new(),
            errors: 0,
            per_shard: BTreeMap::new(),
        }
    }
}

impl Series {
    pub fn record(&mut self, latency: Duration, served_by: &str, shard: u32) {
        let us = (latency.as_micros() as u64).clamp(1, 3_600_000_000);
        self.hist.record(us).expect("within bounds");
        *self.served_by.entry(served_by.to_string()).or_default() += 1;
        *self.per_shard.entry(shard).or_default() += 1;
    }
    pub fn record_service(&mut self, t: Duration) {
        let us = (t.as_micros() as u64).clamp(1, 3_600_000_000);
        self.service.record(us).expect("within bounds");
    }
    pub fn merge(&mut self, other: &Series) {
        self.hist.add(&other.hist).expect("same bounds");
        self.service.add(&other.service).expect("same bounds");
        for (k, v) in &other.served_by {
            *self.served_by.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.per_shard {
            *self.per_shard.entry(*k).or_default() += v;
        }
        self.errors += other.errors;
    }
    /// Latency at quantile q in milliseconds.
    pub fn ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1e3
    }
    pub fn max_ms(&self) -> f64 {
        self.hist.max() as f64 / 1e3
    }
    /// Points (latency ms, cumulative fraction) of the CDF, one per distinct recorded value
    /// bucket: what the SVG plots draw.
    pub fn cdf(&self) -> Vec<(f64, f64)> {
        let n = self.hist.len() as f64;
        if n == 0.0 {
            return Vec::new();
        }
        let mut seen = 0u64;
        let mut out = Vec::new();
        for v in self.hist.iter_recorded() {
            seen += v.count_at_value();
            out.push((
                self.hist.highest_equivalent(v.value_iterated_to()) as f64 / 1e3,
                seen as f64 / n,
            ));
        }
        out
    }
}

/// All series of one run.
pub type Recorded = BTreeMap<RowKey, Series>;

pub fn merge_into(into: &mut Recorded, from: &Recorded) {
    for (k, s) in from {
        into.entry(k.clone()).or_default().merge(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_merge_and_cdf() {
        let mut a = Series::default();
        let mut b = Series::default();
        for i in 1..=900u64 {
            a.record(Duration::from_micros(i * 100), "leader", 0);
        }
        for i in 901..=1000u64 {
            b.record(Duration::from_micros(i * 100), "quorum", 1);
        }
        a.merge(&b);
        assert_eq!(a.hist.len(), 1000);
        assert!((a.ms(0.5) - 50.0).abs() < 0.1, "{}", a.ms(0.5));
        assert!((a.ms(0.99) - 99.0).abs() < 0.1, "{}", a.ms(0.99));
        assert!((a.max_ms() - 100.0).abs() < 0.1);
        assert_eq!(a.served_by["leader"], 900);
        assert_eq!(a.per_shard[&1], 100);
        let cdf = a.cdf();
        assert!(cdf.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        assert!((cdf.last().unwrap().1 - 1.0).abs() < 1e-12);
        let at_half = cdf.iter().find(|p| p.1 >= 0.5).unwrap().0;
        assert!((at_half - 50.0).abs() < 0.1);
    }
}
