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
}
