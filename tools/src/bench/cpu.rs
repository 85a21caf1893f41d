//! CPU time of processes, from /proc (user + system, in seconds).
use std::path::Path;

fn ticks_per_second() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64
}

/// utime + stime of `/proc/<pid>/stat` (or `self`), in seconds; None if it is gone.
pub fn seconds_of(pid: &str) -> Option<f64> {
    let text = std::fs::read_to_string(Path::new("/proc").join(pid).join("stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields count from after it.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5) are utime and stime; `rest` starts at field 3.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks_per_second())
}

/// Summed CPU seconds of `pids`.
pub fn total(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|p| seconds_of(&p.to_string())).sum()
}

pub fn this_process() -> f64 {
    seconds_of("self").unwrap_or(0.0)
}

/// The machine's CPU time so far, from the first line of `/proc/stat`, in ticks: `steal` is
/// time the hypervisor gave this VM's CPUs to someone else (a noisy neighbour), `total` all of
/// it (user, nice, system, idle, iowait, irq, softirq, steal).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostTimes {
    pub steal: u64,
    pub total: u64,
}

/// The `cpu` line of `/proc/stat` text (None if it has none or fewer than eight fields).
pub fn parse_host_times(stat: &str) -> Option<HostTimes> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    (f.len() == 8).then(|| HostTimes {
        steal: f[7],
        total: f.iter().sum(),
    })
}

pub fn host_times() -> Option<HostTimes> {
    parse_host_times(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// The share of the machine's CPU time stolen by the hypervisor between two readings (None
/// without readings or time between them). A benchmark row measured while a neighbour took a
/// tenth of the CPUs compares a slower machine: the reports say so beside each row.
pub fn steal_share(before: Option<HostTimes>, after: Option<HostTimes>) -> Option<f64> {
    let (b, a) = (before?, after?);
    let total = a.total.checked_sub(b.total).filter(|t| *t > 0)?;
    Some(a.steal.saturating_sub(b.steal) as f64 / total as f64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn own_cpu_time_grows_with_work() {
        let before = super::this_process();
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed().as_millis() < 300 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let spent = super::this_process() - before;
        // At least some of the 300 ms of spinning is charged (the machine may be busy).
        assert!(spent > 0.02, "{spent}");
        assert!(super::seconds_of("999999999").is_none());
    }

    #[test]
    fn steal_is_the_stolen_share_of_all_cpu_time_between_readings() {
        use super::*;
        let before = "cpu  100 0 50 800 10 0 5 35 0 0\ncpu0 50 0 25 400 5 0 2 18 0 0\n";
        let after = "cpu  200 0 100 1500 20 0 10 170 7 0\ncpu0 1 1 1 1 1 1 1 1 0 0\n";
        let (b, a) = (parse_host_times(before), parse_host_times(after));
        assert_eq!(
            b,
            Some(HostTimes {
                steal: 35,
                total: 1000
            })
        );
        assert_eq!(
            a.map(|t| t.total),
            Some(2000),
            "guest time is already in user"
        );
        let s = steal_share(b, a).unwrap();
        assert!((s - 135.0 / 1000.0).abs() < 1e-12, "{s}");
        assert_eq!(steal_share(b, b), None, "no time passed");
        assert_eq!(steal_share(None, a), None);
        assert_eq!(parse_host_times("cpu0 1 2 3\n"), None);
        assert_eq!(
            parse_host_times("cpu  1 2 3 4 5 6 7\n"),
            None,
            "no steal field"
        );
        assert_eq!(parse_host_times("cpu  1 2 x 4 5 6 7 8\n"), None);
        // This machine's own reading parses.
        assert!(host_times().is_some());
    }
}
