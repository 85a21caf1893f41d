//! The end of a run: operations still open, the linearizability, list-append and staleness
//! checks, and the seed's report.
use super::*;

impl World {
    pub(super) fn finish(mut self) -> SeedReport {
        for nd in &self.nodes {
            if let Some(d) = &nd.driver {
                self.snapshot_installs += d.snapshots_installed();
            }
        }
        let mut incomplete = self.incomplete;
        for (c, cl) in self.clients.iter().enumerate() {
            incomplete += cl.remaining;
            if let Some(p) = &cl.current {
                if p.op.is_read() || p.op.key().starts_with('l') {
                    continue;
                }
                let mut h = HistoryOp {
                    process: c as u64,
                    op: OpKind::Get,
                    key: p.op.key().to_string(),
                    value: None,
                    expect: None,
                    invoke_ns: p.invoke_ns,
                    complete_ns: self.now,
                    outcome: HOutcome::Unknown,
                    read: None,
                    path: None,
                };
                match &p.op {
                    ClientOp::Put { value, .. } => {
                        h.op = OpKind::Put;
                        h.value = Some(value.clone());
                    }
                    ClientOp::Delete { .. } => h.op = OpKind::Delete,
                    ClientOp::Cas { expect, value, .. } => {
                        h.op = OpKind::Cas;
                        h.value = Some(value.clone());
                        h.expect = expect.clone();
                    }
                    _ => {}
                }
                self.history.push(h);
            }
        }
        let verdicts = crate::linearizability::check(&self.history);
        let mut lin = 0;
        for v in verdicts.iter().filter(|v| !v.linearizable) {
            lin += 1;
            self.findings.violation(format!(
                "linearizability: key {} ({} ops) has no linearization",
                v.key, v.ops
            ));
        }
        let list_anomalies = self.lists.check(&mut self.findings);
        lin += list_anomalies;
        let other_before = self.findings.other;
        let stale = std::mem::take(&mut self.staleness).check(&mut self.findings);
        // Stale reads are counted on their own, not among the other violations.
        let other = other_before - lin;
        let completed = self
            .history
            .iter()
            .filter(|h| h.outcome != HOutcome::Unknown)
            .count();
        let mut trace = self.trace;
        trace.write(crate::history::to_jsonl(&self.history).as_bytes());
        SeedReport {
            seed: self.seed,
            ops_submitted: self.cfg.ops,
            ops_completed: self.cfg.ops - incomplete.min(self.cfg.ops),
            linearizability_violations: lin,
            agreement_violations: self.findings.agreement,
            stale_reads: stale,
            other_violations: other,
            incomplete_after_heal: incomplete,
            trace_hash: trace.0 ^ completed as u64,
            examples: self.findings.examples,
            history: self.history,
            commit_latency_ns: self.commit_latency,
            leaders: self.leaders,
            reads_by_path: self.reads_by_path,
            compactions: self.compactions,
            compaction_crashes: self.compaction_crashes,
            snapshot_installs: self.snapshot_installs,
            lease: self.cfg.lease,
            holders: self.holders,
            auto_leases: self.cfg.auto_leases,
            lease_config_changes: self.config_slots.len() as u64,
            reads_at_revision: self.at_revision.checked,
            preferred_leader: self.cfg.preferred_leader.map(|s| s.0 as usize),
        }
    }
}
