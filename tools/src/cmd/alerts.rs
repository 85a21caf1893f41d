//! The alerts of `meridian status` (README "Monitoring"), computed from what every site
//! reported (or that it did not answer): no quorum margin, no leader, lease trouble, a leader
//! far from the measured demand, measured RTTs drifting from the planned matrix, WAL and fsync
//! trouble. Pure: the command gathers the reports, this judges them.
use meridian_core::{Quorum, QuorumSystem, SiteId, SiteSet};
use meridian_replica::config::ClusterConfig;
use meridian_replica::wire::pb;
use meridian_topology::input::Demand;
use meridian_topology::leases::{best_holders, objective};
use meridian_topology::model::QuorumShape;
use meridian_topology::RttMatrix;
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Alert {
    /// `unreachable`, `quorum_margin`, `no_leader`, `lease`, `leader_placement`, `rtt_drift`,
    /// `wal`, `lease_churn`, `state_divergence`.
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<u32>,
    pub message: String,
}

/// Thresholds (README "Monitoring").
pub const FSYNC_ALERT_US: u64 = 50_000;
pub const PLACEMENT_SLACK: f64 = 0.10;
pub const PLACEMENT_SLACK_MS: f64 = 5.0;
pub const PLACEMENT_MIN_OPS: f64 = 20.0;
pub const DRIFT_SHARE: f64 = 0.25;
pub const DRIFT_MS: f64 = 10.0;

/// How many more site losses a group with `up` sites answering survives (-1: no quorum now).
pub fn quorum_margin(q: &Quorum, up: SiteSet) -> i32 {
    if !q.is_phase2_quorum(up) || !q.is_phase1_quorum(up) {
        return -1;
    }
    let alive: Vec<SiteId> = up.iter().collect();
    // The smallest set of further losses that breaks every quorum (n <= 16: brute force).
    let mut best = alive.len() as i32;
    for mask in 1u32..(1 << alive.len()) {
        let k = mask.count_ones() as i32;
        if k >= best {
            continue;
        }
        let mut left = up;
        for (i, s) in alive.iter().enumerate() {
            if mask & (1 << i) != 0 {
                left.0 &= !(1 << s.0);
            }
        }
        if !q.is_phase2_quorum(left) || !q.is_phase1_quorum(left) {
            best = k;
        }
    }
    best - 1
}

/// The RTT matrix over the sites (index = site) as measured on the peer streams: each pair
/// from either end, the mean when both measured; `None` where neither did.
#[allow(clippy::needless_range_loop)] // a symmetric fill reads m[i][j] and m[j][i]
pub fn measured(reports: &[Option<pb::StatusReply>], n: usize) -> Vec<Vec<Option<f64>>> {
    let mut m = vec![vec![None; n]; n];
    for (i, r) in reports.iter().enumerate() {
        m[i][i] = Some(0.0);
        let Some(r) = r else { continue };
        for (j, &v) in r.peer_rtt_ms.iter().enumerate().take(n) {
            if v >= 0.0 && i != j {
                m[i][j] = Some(v);
            }
        }
    }
    for i in 0..n {
        for j in 0..i {
            let v = match (m[i][j], m[j][i]) {
                (Some(a), Some(b)) => Some((a + b) / 2.0),
                (a, b) => a.or(b),
            };
            m[i][j] = v;
            m[j][i] = v;
        }
    }
    m
}

pub struct Inputs<'a> {
    pub cfg: &'a ClusterConfig,
    /// Per site: its status, or why it did not answer.
    pub reports: &'a [Result<pb::StatusReply, String>],
    /// The matrix the placement was planned with, over the sites' regions.
    pub planned: Option<&'a RttMatrix>,
    /// Lease churn: alert when some site saw at least `churn_max` leadership or lease changes
    /// of a shard within the last `churn_window`.
    pub churn_window: std::time::Duration,
    pub churn_max: usize,
}

/// Defaults of `meridian status --churn-window / --churn-max`: three changes in ten minutes is
/// more than a maintenance restart or a moved leader explains.
pub const CHURN_WINDOW: std::time::Duration = std::time::Duration::from_secs(600);
pub const CHURN_MAX: usize = 3;

/// Groups of sites (index, digest) that applied the same log prefix of a shard yet report
/// different state digests of the same digest version (a digest of 0 is a site too old to
/// report one; digests of different versions — during a rolling upgrade — never compare).
pub fn divergent(rows: &[(usize, &pb::ShardStatus)]) -> Vec<(u64, Vec<(usize, u64)>)> {
    let mut by_applied: std::collections::BTreeMap<(u64, u32), Vec<(usize, u64)>> =
        Default::default();
    for (i, s) in rows {
        if s.state_digest != 0 {
            by_applied
                .entry((s.applied_index, s.digest_version.max(1)))
                .or_default()
                .push((*i, s.state_digest));
        }
    }
    by_applied
        .into_iter()
        .filter(|(_, v)| v.iter().any(|(_, d)| *d != v[0].1))
        .map(|((applied, _), v)| (applied, v))
        .collect()
}

/// Whether a shard's log grew past twice its compaction threshold since its last compaction
/// (compaction is not keeping up); returns the threshold. The growth is compared, not the
/// WAL's full size: that also counts the snapshot file, which a large state makes large.
/// A replica that does not report its threshold is held to `compact_bytes`.
pub fn wal_overgrown(s: &pb::ShardStatus, compact_bytes: u64) -> Option<u64> {
    let threshold = if s.compact_threshold_bytes > 0 {
        s.compact_threshold_bytes
    } else {
        compact_bytes
    };
    (s.wal_grown_bytes > 2 * threshold).then_some(threshold)
}

pub fn alerts(x: &Inputs) -> Vec<Alert> {
    let cfg = x.cfg;
    let n = cfg.sites.len();
    let mut out = Vec::new();
    let ok: Vec<Option<pb::StatusReply>> =
        x.reports.iter().map(|r| r.as_ref().ok().cloned()).collect();
    let mut up = SiteSet::default();
    for (i, r) in x.reports.iter().enumerate() {
        match r {
            Ok(_) => up.insert(SiteId(i as u8)),
            Err(e) => out.push(Alert {
                kind: "unreachable",
                shard: None,
                message: format!("site {} did not answer: {e}", cfg.sites[i].name),
            }),
        }
    }
    let margin = quorum_margin(&cfg.quorum(), up);
    if margin <= 0 {
        out.push(Alert {
            kind: "quorum_margin",
            shard: None,
            message: if margin < 0 {
                format!(
                    "only {} of {n} sites answer: no quorum, writes stop",
                    up.len()
                )
            } else {
                format!(
                    "{} of {n} sites answer: one more site loss stops writes (margin 0)",
                    up.len()
                )
            },
        });
    }
    let shards = cfg.cluster.shards;
    let planned_rows = x.planned.map(|m| {
        cfg.sites
            .iter()
            .map(|s| m.index(&s.region).ok())
            .collect::<Vec<_>>()
    });
    let meas = measured(&ok, n);
    for shard in 0..shards {
        let rows: Vec<(usize, &pb::ShardStatus)> = ok
            .iter()
            .enumerate()
            .filter_map(|(i, r)| Some((i, r.as_ref()?.shards.iter().find(|s| s.shard == shard)?)))
            .collect();
        // Sites that applied the same prefix of the log must hold the same state.
        for (applied, sites) in divergent(&rows) {
            out.push(Alert {
                kind: "state_divergence",
                shard: Some(shard),
                message: format!(
                    "shard {shard}: sites at applied index {applied} hold different states: {}",
                    sites
                        .iter()
                        .map(|(i, d)| format!("{} {d:016x}", cfg.sites[*i].name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        let leader = rows.iter().find(|(_, s)| s.is_leader);
        let Some(&(l, ls)) = leader else {
            if up.len() > n / 2 {
                out.push(Alert {
                    kind: "no_leader",
                    shard: Some(shard),
                    message: format!("shard {shard}: no reachable site leads it"),
                });
            }
            continue;
        };
        if cfg.cluster.lease_ms > 0 && !ls.holds_lease {
            out.push(Alert {
                kind: "lease",
                shard: Some(shard),
                message: format!(
                    "shard {shard}: leader {} holds no valid lease (lease reads go through the log)",
                    cfg.sites[l].name
                ),
            });
        }
        for &h in &ls.lease_holders {
            let h = h as usize;
            if let Some((_, hs)) = rows.iter().find(|(i, _)| *i == h) {
                if !hs.holds_quorum_lease {
                    out.push(Alert {
                        kind: "lease",
                        shard: Some(shard),
                        message: format!(
                            "shard {shard}: holder {} holds no valid quorum lease (its region's reads leave it)",
                            cfg.sites[h].name
                        ),
                    });
                }
            }
        }
        // The leader against the measured demand, on measured RTTs (planned where unmeasured).
        let total: f64 = ls.demand_reads.iter().chain(&ls.demand_writes).sum();
        if total >= PLACEMENT_MIN_OPS {
            let full: Option<Vec<Vec<f64>>> = (0..n)
                .map(|i| {
                    (0..n)
                        .map(|j| {
                            meas[i][j].or_else(|| {
                                let p = planned_rows.as_ref()?;
                                Some(x.planned?.rtt(p[i]?, p[j]?))
                            })
                        })
                        .collect()
                })
                .collect();
            if let Some(ms) = full {
                let m = RttMatrix {
                    regions: cfg.sites.iter().map(|s| s.name.clone()).collect(),
                    ms,
                };
                let shape = match cfg.quorum() {
                    Quorum::Majority(_) => QuorumShape::Majority,
                    Quorum::Hierarchical(g) => QuorumShape::Hierarchical(
                        g.iter()
                            .map(|g| g.iter().map(|s| s.0 as usize).collect())
                            .collect(),
                    ),
                };
                let demand: Vec<Demand> = (0..n)
                    .filter_map(|s| {
                        let r = ls.demand_reads.get(s).copied().unwrap_or(0.0);
                        let w = ls.demand_writes.get(s).copied().unwrap_or(0.0);
                        (r + w > 0.0).then(|| Demand {
                            region: s,
                            weight: r + w,
                            read_share: r / (r + w),
                        })
                    })
                    .collect();
                let sites: Vec<Option<usize>> = (0..n)
                    .map(|i| up.contains(SiteId(i as u8)).then_some(i))
                    .collect();
                let leases = cfg.leases.mode != "off";
                let score = |p: usize| -> Option<f64> {
                    if leases {
                        best_holders(&m, &shape, &demand, &sites, p).map(|b| b.0)
                    } else {
                        sites[p]?;
                        Some(objective(&m, &shape, &demand, &sites, p, &[]))
                    }
                };
                let now = score(l);
                let best = (0..n)
                    .filter_map(|p| Some((p, score(p)?)))
                    .min_by(|a, b| a.1.total_cmp(&b.1));
                if let (Some(now), Some((bp, bv))) = (now, best) {
                    if bp != l && now > bv * (1.0 + PLACEMENT_SLACK) + PLACEMENT_SLACK_MS {
                        out.push(Alert {
                            kind: "leader_placement",
                            shard: Some(shard),
                            message: format!(
                                "shard {shard}: leader {} costs {now:.1} ms per operation for the measured demand; {} would cost {bv:.1} ms (set cluster.preferred_leader or shard_leaders)",
                                cfg.sites[l].name, cfg.sites[bp].name
                            ),
                        });
                    }
                }
            }
        }
        // Lease churn: the site that saw the most changes in the window speaks for the shard
        // (every site sees a leader change; counting them all would count it n times).
        let window_ms = x.churn_window.as_millis() as u64;
        let churned = rows
            .iter()
            .map(|(i, s)| {
                let recent: Vec<&pb::ChurnEvent> = s
                    .churn
                    .iter()
                    .filter(|e| e.age_ms <= window_ms && e.counts)
                    .collect();
                (*i, recent)
            })
            .max_by_key(|(_, r)| r.len());
        if let Some((i, recent)) = churned {
            if recent.len() >= x.churn_max.max(1) {
                let mut kinds: Vec<(String, usize)> = Vec::new();
                for e in &recent {
                    match kinds.iter_mut().find(|(k, _)| *k == e.kind) {
                        Some((_, c)) => *c += 1,
                        None => kinds.push((e.kind.clone(), 1)),
                    }
                }
                let kinds: Vec<String> = kinds.iter().map(|(k, c)| format!("{c} {k}")).collect();
                out.push(Alert {
                    kind: "lease_churn",
                    shard: Some(shard),
                    message: format!(
                        "shard {shard}: {} leadership/lease changes in the last {} s as {} saw them ({}); leases keep lapsing, so reads leave their fast path",
                        recent.len(),
                        x.churn_window.as_secs(),
                        cfg.sites[i].name,
                        kinds.join(", ")
                    ),
                });
            }
        }
        for (i, s) in &rows {
            if s.fsync_us_last > FSYNC_ALERT_US {
                out.push(Alert {
                    kind: "wal",
                    shard: Some(shard),
                    message: format!(
                        "shard {shard} at {}: last fsync took {} ms",
                        cfg.sites[*i].name,
                        s.fsync_us_last / 1000
                    ),
                });
            }
            if let Some(threshold) = wal_overgrown(s, cfg.cluster.compact_bytes) {
                out.push(Alert {
                    kind: "wal",
                    shard: Some(shard),
                    message: format!(
                        "shard {shard} at {}: WAL grew {} bytes since its last compaction, over twice its threshold of {threshold} (compaction is not keeping up)",
                        cfg.sites[*i].name, s.wal_grown_bytes
                    ),
                });
            }
        }
    }
    // Measured RTTs against the planned matrix.
    if let (Some(p), Some(rows)) = (x.planned, planned_rows.as_ref()) {
        let mut drifted = Vec::new();
        for i in 0..n {
            for j in i + 1..n {
                let (Some(got), Some(ri), Some(rj)) = (meas[i][j], rows[i], rows[j]) else {
                    continue;
                };
                let want = p.rtt(ri, rj);
                if (got - want).abs() > (want * DRIFT_SHARE).max(DRIFT_MS) {
                    drifted.push(format!(
                        "{}-{} {got:.1} ms (planned {want:.1})",
                        cfg.sites[i].name, cfg.sites[j].name
                    ));
                }
            }
        }
        if !drifted.is_empty() {
            out.push(Alert {
                kind: "rtt_drift",
                shard: None,
                message: format!(
                    "measured RTTs differ from the planned matrix: {}",
                    drifted.join(", ")
                ),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(sites: &[u8]) -> SiteSet {
        let mut s = SiteSet::default();
        sites.iter().for_each(|&i| s.insert(SiteId(i)));
        s
    }

    #[test]
    fn margins_of_majority_and_hierarchical_quorums() {
        let q = Quorum::Majority(5);
        assert_eq!(quorum_margin(&q, set(&[0, 1, 2, 3, 4])), 2);
        assert_eq!(quorum_margin(&q, set(&[0, 1, 2, 3])), 1);
        assert_eq!(quorum_margin(&q, set(&[0, 1, 2])), 0);
        assert_eq!(quorum_margin(&q, set(&[0, 1])), -1);
        let h = Quorum::three_by_three();
        assert_eq!(quorum_margin(&h, set(&[0, 1, 2, 3, 4, 5, 6, 7, 8])), 3);
        // Groups {0,1,2} whole, {3,4} of the second, {6} of the third: losing 3 or 4 breaks it.
        assert_eq!(quorum_margin(&h, set(&[0, 1, 2, 3, 4, 6])), 0);
    }

    #[test]
    fn divergence_is_sites_at_one_applied_index_with_different_digests() {
        let sh = |applied: u64, digest: u64| pb::ShardStatus {
            applied_index: applied,
            state_digest: digest,
            ..Default::default()
        };
        let (a, b, c, d) = (sh(10, 7), sh(10, 7), sh(9, 5), sh(10, 8));
        assert!(
            divergent(&[(0, &a), (1, &b), (2, &c)]).is_empty(),
            "behind is not divergent"
        );
        let found = divergent(&[(0, &a), (1, &b), (2, &c), (3, &d)]);
        assert_eq!(found, vec![(10, vec![(0, 7), (1, 7), (3, 8)])]);
        let old = sh(10, 0);
        assert!(
            divergent(&[(0, &a), (1, &old)]).is_empty(),
            "no digest reported"
        );
        // A rolling upgrade: the same state under another entry hash is not divergence; two
        // sites of the new version that differ still are.
        let v2 = |digest: u64| pb::ShardStatus {
            digest_version: 2,
            ..sh(10, digest)
        };
        let (e, f) = (v2(99), v2(98));
        assert!(
            divergent(&[(0, &a), (1, &b), (2, &e)]).is_empty(),
            "versions 1 (reported as 0) and 2 do not compare"
        );
        assert_eq!(
            divergent(&[(0, &a), (1, &e), (2, &f)]),
            vec![(10, vec![(1, 99), (2, 98)])]
        );
    }

    #[test]
    fn the_wal_alert_compares_growth_since_compaction_with_the_sites_threshold() {
        let sh = |bytes: u64, grown: u64, threshold: u64| pb::ShardStatus {
            wal_bytes: bytes,
            wal_grown_bytes: grown,
            compact_threshold_bytes: threshold,
            ..Default::default()
        };
        let mb = 1 << 20;
        // A 300 MB snapshot file behind a log compacting on time: no alert.
        assert_eq!(
            wal_overgrown(&sh(310 * mb, 10 * mb, 300 * mb), 64 * mb),
            None
        );
        assert_eq!(
            wal_overgrown(&sh(1000 * mb, 700 * mb, 300 * mb), 64 * mb),
            Some(300 * mb)
        );
        // No threshold reported: compact_bytes.
        assert_eq!(wal_overgrown(&sh(0, 100 * mb, 0), 64 * mb), None);
        assert_eq!(wal_overgrown(&sh(0, 130 * mb, 0), 64 * mb), Some(64 * mb));
    }

    #[test]
    fn measured_rtts_are_symmetric_and_fill_from_either_end() {
        let r = |row: Vec<f64>| {
            Some(pb::StatusReply {
                peer_rtt_ms: row,
                ..Default::default()
            })
        };
        let m = measured(
            &[r(vec![0.0, 10.0, -1.0]), r(vec![12.0, 0.0, 5.0]), None],
            3,
        );
        assert_eq!(m[0][1], Some(11.0));
        assert_eq!(m[1][0], Some(11.0));
        assert_eq!(m[2][1], Some(5.0));
        assert_eq!(m[0][2], None);
    }
}
