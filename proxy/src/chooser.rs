//! The read-path chooser (DESIGN.md §4): estimate each valid path's latency from live RTTs and
//! lease state, pick the cheapest. Pure functions; new paths (quorum leases) add an estimate.
use meridian_topology::model::{kth, QuorumShape};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadPath {
    /// The shard leader answers under its leader lease (one round trip to the leader).
    Leader,
    /// Paxos Quorum Read: one round trip to a read quorum (plus a rinse if a write is pending).
    Quorum,
    /// A quorum-lease holder answers alone (one round trip to the holder).
    Lease,
}

impl ReadPath {
    pub fn name(&self) -> &'static str {
        match self {
            ReadPath::Leader => "leader",
            ReadPath::Quorum => "quorum",
            ReadPath::Lease => "lease",
        }
    }
}

/// Round trip from this proxy to a read quorum of the sites (`None`: unreachable).
pub fn quorum_rtt(rtt_ms: &[Option<f64>], shape: &QuorumShape) -> f64 {
    let v = |i: usize| rtt_ms[i].unwrap_or(f64::INFINITY);
    match shape {
        QuorumShape::Majority => kth(rtt_ms.len() / 2 + 1, (0..rtt_ms.len()).map(v).collect()),
        QuorumShape::Hierarchical(groups) => {
            let t: Vec<f64> = groups
                .iter()
                .map(|g| kth(g.len() / 2 + 1, g.iter().map(|&p| v(p)).collect()))
                .collect();
            kth(groups.len() / 2 + 1, t)
        }
    }
}

/// Estimated latency of every path for a linearizable read. Without a lease the leader reads
/// through the log, which costs the leader's own quorum round on top.
pub fn estimates(
    rtt_ms: &[Option<f64>],
    leader: Option<usize>,
    leader_lease: bool,
    shape: &QuorumShape,
) -> Vec<(ReadPath, f64)> {
    estimates_with_holder(rtt_ms, leader, leader_lease, shape, None)
}

/// `estimates` plus the lease path at `holder`, a site believed to hold a valid quorum lease.
pub fn estimates_with_holder(
    rtt_ms: &[Option<f64>],
    leader: Option<usize>,
    leader_lease: bool,
    shape: &QuorumShape,
    holder: Option<usize>,
) -> Vec<(ReadPath, f64)> {
    let mut out = Vec::new();
    if let Some(r) = holder.and_then(|h| rtt_ms[h]) {
        out.push((ReadPath::Lease, r));
    }
    if let Some(l) = leader {
        if let Some(r) = rtt_ms[l] {
            let extra = if leader_lease { 0.0 } else { r.max(1.0) };
            out.push((ReadPath::Leader, r + extra));
        }
    }
    let q = quorum_rtt(rtt_ms, shape);
    if q.is_finite() {
        out.push((ReadPath::Quorum, q));
    }
    out
}

/// How much faster a quorum read must be expected to answer than the best one-replica path
/// (lease holder, leader) to be taken: it asks every site, so it costs n replicas' work and n
/// calls where the others cost one. The margin covers the jitter of RTT estimates between
/// nearby sites (on a LAN or loopback the choice would otherwise be a coin toss, while the cost
/// is not); it is fixed, not a share, so across a WAN a quorum that is faster by more than a
/// millisecond still wins and reads keep their latency.
pub const QUORUM_MARGIN_MS: f64 = 1.0;

/// The cheapest path: the fastest one-replica path (ties go to the earlier estimate: lease,
/// then leader), unless the quorum path beats it by more than [`QUORUM_MARGIN_MS`].
pub fn choose(est: &[(ReadPath, f64)]) -> Option<ReadPath> {
    let single = est.iter().filter(|(p, _)| *p != ReadPath::Quorum).fold(
        None,
        |best: Option<(ReadPath, f64)>, &(p, ms)| match best {
            Some((_, b)) if b <= ms => best,
            _ => Some((p, ms)),
        },
    );
    let quorum = est
        .iter()
        .find(|(p, _)| *p == ReadPath::Quorum)
        .map(|e| e.1);
    match (single, quorum) {
        (Some((p, s)), Some(q)) if q + QUORUM_MARGIN_MS >= s => Some(p),
        (Some((p, _)), None) => Some(p),
        (_, Some(_)) => Some(ReadPath::Quorum),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearby_leader_wins_far_leader_loses_to_a_quorum() {
        let sh = QuorumShape::Majority;
        // Proxy next to sites 0 and 1, far from the others.
        let rtt = [Some(1.0), Some(10.0), Some(80.0), Some(90.0), Some(150.0)];
        assert_eq!(quorum_rtt(&rtt, &sh), 80.0);
        assert_eq!(
            choose(&estimates(&rtt, Some(0), true, &sh)),
            Some(ReadPath::Leader)
        );
        assert_eq!(
            choose(&estimates(&rtt, Some(4), true, &sh)),
            Some(ReadPath::Quorum)
        );
        // Without a lease the leader path costs twice: 2 x 80 > 80.
        assert_eq!(
            choose(&estimates(&rtt, Some(2), false, &sh)),
            Some(ReadPath::Quorum)
        );
        assert_eq!(
            choose(&estimates(&rtt, Some(2), true, &sh)),
            Some(ReadPath::Leader),
            "a tie goes to the leader"
        );
    }

    #[test]
    fn a_local_holder_wins_and_a_far_one_loses() {
        let sh = QuorumShape::Majority;
        let rtt = [Some(1.0), Some(10.0), Some(80.0), Some(90.0), Some(150.0)];
        let est = |h| estimates_with_holder(&rtt, Some(4), true, &sh, h);
        assert_eq!(choose(&est(Some(0))), Some(ReadPath::Lease));
        // A holder 150 ms away costs more than a quorum read at 80 ms.
        assert_eq!(choose(&est(Some(4))), Some(ReadPath::Quorum));
    }

    #[test]
    fn a_quorum_read_must_win_by_a_margin() {
        let sh = QuorumShape::Majority;
        // Loopback-like: the busy leader measures 2.6 ms, a quorum 1.8 ms. The quorum is
        // faster, but by less than 1 ms: the leader answers (one replica's work, not five).
        let rtt = [Some(1.5), Some(1.8), Some(2.6), Some(2.0), Some(1.7)];
        assert_eq!(quorum_rtt(&rtt, &sh), 1.8);
        assert_eq!(
            choose(&estimates(&rtt, Some(2), true, &sh)),
            Some(ReadPath::Leader)
        );
        // A leader 3 ms away loses to the 1.8 ms quorum.
        let rtt = [Some(1.5), Some(1.8), Some(3.0), Some(2.0), Some(1.7)];
        assert_eq!(
            choose(&estimates(&rtt, Some(2), true, &sh)),
            Some(ReadPath::Quorum)
        );
        // Across a WAN the margin is the same millisecond: a quorum at 60 ms beats a leader at
        // 61.5 ms, not one at 60.8 ms.
        let wan = |leader: f64| [Some(2.0), Some(40.0), Some(60.0), Some(90.0), Some(leader)];
        assert_eq!(
            choose(&estimates(&wan(61.5), Some(4), true, &sh)),
            Some(ReadPath::Quorum)
        );
        assert_eq!(
            choose(&estimates(&wan(60.8), Some(4), true, &sh)),
            Some(ReadPath::Leader)
        );
        // The same margin against a lease holder.
        let rtt = [Some(1.5), Some(1.8), Some(2.6), Some(2.0), Some(1.7)];
        let est = estimates_with_holder(&rtt, Some(2), true, &sh, Some(2));
        assert_eq!(choose(&est), Some(ReadPath::Lease));
    }

    #[test]
    fn unreachable_sites_remove_paths() {
        let sh = QuorumShape::Majority;
        let rtt = [Some(5.0), None, None, None, Some(7.0)];
        assert_eq!(estimates(&rtt, Some(1), true, &sh), vec![]);
        assert_eq!(choose(&[]), None);
    }

    #[test]
    fn hierarchical_quorum_rtt() {
        let sh = QuorumShape::three_by_three();
        let rtt: Vec<Option<f64>> = [1.0, 2.0, 3.0, 50.0, 60.0, 70.0, 100.0, 110.0, 120.0]
            .into_iter()
            .map(Some)
            .collect();
        // Group times: 2, 60, 110 -> second = 60.
        assert_eq!(quorum_rtt(&rtt, &sh), 60.0);
    }
}
