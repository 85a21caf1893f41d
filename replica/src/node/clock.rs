//! The consensus core's clock at a replica process: `offset + elapsed × rate` since the process
//! started. In production rate is 1 and offset 0 (a monotonic clock). The nemesis tests skew it
//! per process through the test-only `MERIDIAN_TEST_CLOCK` setting, so clock rate and offset
//! differences between replicas are exercised on real processes, not only in the simulator:
//!
//! `MERIDIAN_TEST_CLOCK="0:rate=1.003,offset_ms=1200;eu-west-1:rate=0.998"` — entries are a site
//! (its index or its name), then `rate=` (0 < rate ≤ 100) and/or `offset_ms=` (0 ≤ offset). A
//! malformed setting refuses to start the replica; a set one is logged as a warning.
use std::time::Duration;
use tokio::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Skew {
    pub rate: f64,
    pub offset: Duration,
}

impl Default for Skew {
    fn default() -> Skew {
        Skew {
            rate: 1.0,
            offset: Duration::ZERO,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Clock {
    epoch: Instant,
    skew: Skew,
}

impl Clock {
    pub fn start(skew: Skew) -> Clock {
        Clock {
            epoch: Instant::now(),
            skew,
        }
    }

    /// The core's time now.
    pub fn now(&self) -> Duration {
        self.skew.apply(self.epoch.elapsed())
    }
}

impl Skew {
    /// The skewed reading after `elapsed` of real time.
    pub fn apply(&self, elapsed: Duration) -> Duration {
        if self.rate == 1.0 {
            return self.offset + elapsed;
        }
        self.offset + elapsed.mul_f64(self.rate)
    }
}

/// The skew `spec` sets for the site `name` at `index` (the default when it names neither).
pub fn parse(spec: &str, index: usize, name: &str) -> Result<Skew, String> {
    let mut mine = Skew::default();
    for entry in spec.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let (site, settings) = entry.split_once(':').ok_or_else(|| {
            format!("MERIDIAN_TEST_CLOCK entry {entry:?}: expected SITE:rate=R,offset_ms=MS")
        })?;
        let mut skew = Skew::default();
        for kv in settings.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("MERIDIAN_TEST_CLOCK {kv:?}: expected key=value"))?;
            match k {
                "rate" => {
                    let r: f64 = v
                        .parse()
                        .map_err(|_| format!("MERIDIAN_TEST_CLOCK rate {v:?} is not a number"))?;
                    if !(r > 0.0 && r <= 100.0) {
                        return Err(format!("MERIDIAN_TEST_CLOCK rate {r} outside (0, 100]"));
                    }
                    skew.rate = r;
                }
                "offset_ms" => {
                    let ms: u64 = v.parse().map_err(|_| {
                        format!("MERIDIAN_TEST_CLOCK offset_ms {v:?} is not a whole number")
                    })?;
                    skew.offset = Duration::from_millis(ms);
                }
                _ => {
                    return Err(format!(
                        "MERIDIAN_TEST_CLOCK: unknown setting {k:?} (rate, offset_ms)"
                    ))
                }
            }
        }
        if site == name || site.parse::<usize>().ok() == Some(index) {
            mine = skew;
        }
    }
    Ok(mine)
}

/// The skew of this process from the environment.
pub fn from_env(index: usize, name: &str) -> Result<Skew, String> {
    match std::env::var("MERIDIAN_TEST_CLOCK") {
        Ok(spec) => {
            let skew = parse(&spec, index, name)?;
            if skew != Skew::default() {
                tracing::warn!(
                    site = name,
                    rate = skew.rate,
                    offset_ms = skew.offset.as_millis() as u64,
                    "MERIDIAN_TEST_CLOCK skews this replica's consensus clock (tests only)"
                );
            }
            Ok(skew)
        }
        Err(_) => Ok(Skew::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_entry_for_this_site_by_index_or_name() {
        let spec = "0:rate=1.003,offset_ms=1200; eu-west-1:rate=0.5";
        let a = parse(spec, 0, "us-east-1").unwrap();
        assert_eq!(a.rate, 1.003);
        assert_eq!(a.offset, Duration::from_millis(1200));
        let b = parse(spec, 1, "eu-west-1").unwrap();
        assert_eq!((b.rate, b.offset), (0.5, Duration::ZERO));
        assert_eq!(parse(spec, 2, "ap-northeast-1").unwrap(), Skew::default());
    }

    #[test]
    fn refuses_malformed_settings() {
        for bad in [
            "0",
            "0:rate",
            "0:rate=fast",
            "0:rate=0",
            "0:rate=-1",
            "0:rate=1000",
            "0:offset_ms=-5",
            "0:speed=2",
        ] {
            assert!(parse(bad, 0, "x").is_err(), "{bad}");
        }
    }

    #[test]
    fn runs_at_its_rate_from_its_offset() {
        let s = Skew {
            rate: 2.0,
            offset: Duration::from_secs(5),
        };
        assert_eq!(s.apply(Duration::ZERO), Duration::from_secs(5));
        assert_eq!(
            s.apply(Duration::from_millis(100)) - s.apply(Duration::ZERO),
            Duration::from_millis(200)
        );
        let plain = Skew::default();
        assert_eq!(
            plain.apply(Duration::from_millis(100)),
            Duration::from_millis(100)
        );
        let c = Clock::start(s);
        assert!(c.now() >= Duration::from_secs(5));
    }
}
