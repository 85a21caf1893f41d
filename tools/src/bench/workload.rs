//! Workload generators of `meridian bench`: key choice (uniform, zipfian(θ), region-local with a
//! locality share that may shift during the run), the operation mix, and the open-loop schedule
//! with coordinated-omission correction. Pure and seeded: the same seed gives the same stream.
use anyhow::{bail, Context, Result};
use meridian_core::Rng;
use std::time::{Duration, Instant};

/// How keys are drawn (`--keys`).
#[derive(Clone, Debug, PartialEq)]
pub enum KeyDist {
    Uniform,
    /// Zipfian with exponent θ in (0, 1) over the key ranks (YCSB's default is 0.99).
    Zipf(f64),
    /// Each region owns a slice of the keys; a client picks from its own region's slice with
    /// probability `from` at the start of the run, moving linearly to `to` at the end.
    Local {
        from: f64,
        to: f64,
    },
}

impl std::str::FromStr for KeyDist {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<KeyDist> {
        let share = |x: &str| -> Result<f64> {
            let f: f64 = x.parse().with_context(|| format!("bad share {x:?}"))?;
            if !(0.0..=1.0).contains(&f) {
                bail!("share {f} outside 0..=1");
            }
            Ok(f)
        };
        match s.split_once(':') {
            None if s == "uniform" => Ok(KeyDist::Uniform),
            Some(("zipf", t)) => {
                let t: f64 = t
                    .parse()
                    .with_context(|| format!("bad zipf exponent {t:?}"))?;
                if !(t > 0.0 && t < 1.0) {
                    bail!("zipf exponent must lie in (0, 1), got {t}");
                }
                Ok(KeyDist::Zipf(t))
            }
            Some(("local", rest)) => {
                let (from, to) = match rest.split_once(':') {
                    Some((a, b)) => (share(a)?, share(b)?),
                    None => (share(rest)?, share(rest)?),
                };
                Ok(KeyDist::Local { from, to })
            }
            _ => bail!("--keys takes uniform, zipf:θ, local:F or local:F:G, got {s:?}"),
        }
    }
}

/// Zipfian ranks in `0..n`: P(rank k) proportional to 1/(k+1)^θ, rank 0 the hottest. Exact:
/// inverse transform over the cumulative distribution (binary search in a table shared by all
/// clients). YCSB's closed-form approximation (Gray et al., SIGMOD 1994) is off by ~20 % at
/// ranks 2..10, which is where a skewed workload's contention lives.
#[derive(Clone, Debug)]
pub struct Zipf {
    cdf: std::sync::Arc<Vec<f64>>,
    #[cfg(test)]
    theta: f64,
}

impl Zipf {
    pub fn new(n: u64, theta: f64) -> Zipf {
        assert!(n >= 2 && theta > 0.0 && theta < 1.0);
        let mut cdf = Vec::with_capacity(n as usize);
        let mut sum = 0.0;
        for i in 1..=n {
            sum += 1.0 / (i as f64).powf(theta);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        Zipf {
            cdf: std::sync::Arc::new(cdf),
            #[cfg(test)]
            theta,
        }
    }
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        let u = rng.unit();
        (self.cdf.partition_point(|&c| c <= u) as u64).min(self.cdf.len() as u64 - 1)
    }
    /// The exact probability of rank `k`.
    #[cfg(test)]
    pub fn probability(&self, k: u64) -> f64 {
        let zetan: f64 = (1..=self.cdf.len())
            .map(|i| 1.0 / (i as f64).powf(self.theta))
            .sum();
        1.0 / ((k + 1) as f64).powf(self.theta) / zetan
    }
}

/// Chooses the key index for one client.
#[derive(Clone, Debug)]
pub struct KeyChooser {
    keys: u64,
    dist: KeyDist,
    zipf: Option<Zipf>,
    /// This client's region index and the number of regions (for `Local`).
    region: u64,
    regions: u64,
}

impl KeyChooser {
    pub fn new(dist: &KeyDist, keys: u64, region: usize, regions: usize) -> KeyChooser {
        let zipf = match dist {
            KeyDist::Zipf(t) => Some(Zipf::new(keys, *t)),
            _ => None,
        };
        KeyChooser {
            keys,
            dist: dist.clone(),
            zipf,
            region: region as u64,
            regions: regions.max(1) as u64,
        }
    }
    /// The region that owns key `k` under `Local` (keys are dealt round-robin).
    #[cfg(test)]
    pub fn home(k: u64, regions: usize) -> usize {
        (k % regions.max(1) as u64) as usize
    }
    /// The key index for progress `frac` in [0, 1] through the measured run.
    pub fn next(&self, rng: &mut Rng, frac: f64) -> u64 {
        match &self.dist {
            KeyDist::Uniform => rng.below(self.keys),
            KeyDist::Zipf(_) => self.zipf.as_ref().expect("zipf").sample(rng),
            KeyDist::Local { from, to } => {
                let share = from + (to - from) * frac.clamp(0.0, 1.0);
                let per = self.keys / self.regions;
                let slot = rng.below(per.max(1));
                let owner = if self.regions == 1 || rng.chance(share) {
                    self.region
                } else {
                    // One of the other regions, uniformly.
                    let o = rng.below(self.regions - 1);
                    if o >= self.region {
                        o + 1
                    } else {
                        o
                    }
                };
                (slot * self.regions + owner).min(self.keys - 1)
            }
        }
    }
}

/// Open-loop pacing: operation k of a worker is due at `start + k / rate`. Latency is measured
/// from when the operation was due, not from when the worker got round to sending it, so a
/// stall counts against every operation it delayed (coordinated-omission correction, as in
/// wrk2 and HdrHistogram's `record_correct`).
#[derive(Clone, Debug)]
pub struct OpenLoop {
    start: Instant,
    interval: Duration,
    k: u64,
}

impl OpenLoop {
    pub fn new(start: Instant, rate_per_s: f64) -> OpenLoop {
        OpenLoop {
            start,
            interval: Duration::from_secs_f64(1.0 / rate_per_s),
            k: 0,
        }
    }
    /// When the next operation is due.
    pub fn next_due(&mut self) -> Instant {
        let due = self.start + self.interval.mul_f64(self.k as f64);
        self.k += 1;
        due
    }
}

/// One operation's timing: when it was due (open loop) or sent (closed loop), when it was
/// actually sent, and when it completed.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub due: Instant,
    pub sent: Instant,
    pub done: Instant,
}

impl Timing {
    /// The latency a user saw (from `due`: corrected for coordinated omission).
    pub fn latency(&self) -> Duration {
        self.done.saturating_duration_since(self.due)
    }
    /// The service time (from the actual send).
    pub fn service(&self) -> Duration {
        self.done.saturating_duration_since(self.sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_dist_parses_and_refuses_bad_input() {
        assert_eq!("uniform".parse::<KeyDist>().unwrap(), KeyDist::Uniform);
        assert_eq!("zipf:0.99".parse::<KeyDist>().unwrap(), KeyDist::Zipf(0.99));
        assert_eq!(
            "local:0.9".parse::<KeyDist>().unwrap(),
            KeyDist::Local { from: 0.9, to: 0.9 }
        );
        assert_eq!(
            "local:0.9:0.1".parse::<KeyDist>().unwrap(),
            KeyDist::Local { from: 0.9, to: 0.1 }
        );
        for bad in [
            "zipf:1.0",
            "zipf:0",
            "zipf:x",
            "local:1.5",
            "hot",
            "local:0.5:2",
        ] {
            assert!(bad.parse::<KeyDist>().is_err(), "{bad}");
        }
    }

    /// The empirical frequency of the hottest ranks matches 1/k^θ / ζ(n, θ), and the stream
    /// covers the tail: a generator that returned uniform ranks, or always rank 0, fails.
    #[test]
    fn zipf_shape_matches_the_distribution() {
        let (n, theta, draws) = (1000u64, 0.99, 400_000usize);
        let z = Zipf::new(n, theta);
        let mut rng = Rng::new(42);
        let mut count = vec![0usize; n as usize];
        for _ in 0..draws {
            count[z.sample(&mut rng) as usize] += 1;
        }
        for k in [0u64, 1, 2, 5, 10] {
            let want = z.probability(k);
            let got = count[k as usize] as f64 / draws as f64;
            assert!(
                (got - want).abs() <= 0.1 * want + 0.002,
                "rank {k}: {got:.4} vs {want:.4}"
            );
        }
        // Rank 0 against rank 1 is 2^θ.
        let ratio = count[0] as f64 / count[1] as f64;
        assert!((ratio - 2f64.powf(theta)).abs() < 0.15, "ratio {ratio}");
        // The top 10 % of ranks carry most of the mass, yet the tail is reached.
        let top: usize = count[..100].iter().sum();
        assert!(top as f64 / draws as f64 > 0.6);
        assert!(count[500..].iter().any(|&c| c > 0));
        // Ranks summed over the exact distribution: 1.
        let mass: f64 = (0..n).map(|k| z.probability(k)).sum();
        assert!((mass - 1.0).abs() < 1e-9);
    }

    #[test]
    fn local_keys_follow_the_locality_share_and_its_shift() {
        let c = KeyChooser::new(&KeyDist::Local { from: 0.9, to: 0.1 }, 1000, 2, 5);
        let mut rng = Rng::new(7);
        let own = |frac: f64, rng: &mut Rng| {
            (0..20_000)
                .filter(|_| KeyChooser::home(c.next(rng, frac), 5) == 2)
                .count() as f64
                / 20_000.0
        };
        let start = own(0.0, &mut rng);
        let end = own(1.0, &mut rng);
        assert!((start - 0.9).abs() < 0.02, "{start}");
        assert!((end - 0.1).abs() < 0.02, "{end}");
        let mid = own(0.5, &mut rng);
        assert!((mid - 0.5).abs() < 0.02, "{mid}");
        // Every key is in range.
        assert!((0..10_000).all(|_| c.next(&mut rng, 0.3) < 1000));
    }

    /// A synthetic stall: a server answering in 1 ms except for one 1 s stall, driven open loop
    /// at 100 ops/s by one worker. Corrected latencies count the stall against every
    /// operation it held up (about 110 of them, from 1 s down to 10 ms); service times see
    /// one slow operation. The same code path `run` records with.
    #[test]
    fn open_loop_corrects_coordinated_omission_on_a_stall() {
        let t0 = Instant::now();
        let mut sched = OpenLoop::new(t0, 100.0);
        let mut free_at = t0;
        let mut corrected = Vec::new();
        let mut service = Vec::new();
        for i in 0..1000 {
            let due = sched.next_due();
            let sent = due.max(free_at);
            let took = if i == 200 {
                Duration::from_secs(1)
            } else {
                Duration::from_millis(1)
            };
            let t = Timing {
                due,
                sent,
                done: sent + took,
            };
            free_at = t.done;
            corrected.push(t.latency().as_secs_f64() * 1e3);
            service.push(t.service().as_secs_f64() * 1e3);
        }
        let over = |v: &[f64], ms: f64| v.iter().filter(|&&x| x > ms).count();
        assert_eq!(over(&service, 10.0), 1);
        // Held up: the stalled one and those due while the worker caught up (each later one
        // runs 1 ms but is due 10 ms after the one before: ~110 operations).
        let held = over(&corrected, 10.0);
        assert!((100..=115).contains(&held), "{held}");
        // Before the stall and once it is worked off: 1 ms again.
        assert!(corrected[..200].iter().all(|&x| x <= 1.01));
        assert!(corrected[320..].iter().all(|&x| x <= 1.01));
        corrected.sort_by(|a, b| a.total_cmp(b));
        let p95 = corrected[949];
        assert!(p95 > 400.0, "corrected p95 {p95}");
    }

    #[test]
    fn open_loop_schedule_is_evenly_spaced() {
        let t0 = Instant::now();
        let mut s = OpenLoop::new(t0, 250.0);
        let due: Vec<Instant> = (0..1001).map(|_| s.next_due()).collect();
        assert_eq!(due[0], t0);
        let span = due[1000] - t0;
        assert!((span.as_secs_f64() - 4.0).abs() < 1e-6, "{span:?}");
        assert!(due.windows(2).all(|w| w[1] > w[0]));
    }
}
