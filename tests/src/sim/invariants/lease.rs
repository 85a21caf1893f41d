//! Leader-lease safety (DESIGN.md §2 "Leases"; Chandra et al., "Paxos Made Live" §5.2 master
//! leases): at no true time do two replicas both believe they hold a valid leader lease.
use super::Findings;
use meridian_core::Core;
use std::time::Duration;

/// `cores`: each live replica with its own local clock reading at the same true instant.
pub fn check(true_ns: u64, cores: &[(usize, &Core, Duration)], f: &mut Findings) {
    let leaders: Vec<_> = cores.iter().filter(|(_, c, _)| c.is_leader()).collect();
    if leaders.len() < 2 {
        return;
    }
    let holders: Vec<usize> = leaders
        .iter()
        .filter(|(_, c, now)| c.holds_lease(*now))
        .map(|(i, _, _)| *i)
        .collect();
    if holders.len() > 1 {
        f.violation(format!(
            "lease: sites {holders:?} all hold a leader lease at t={}ms",
            true_ns / 1_000_000
        ));
    }
}
