//! What a measured window cost: each system's CPU by role, the load generator's, the
//! machine's busy share and the host's steal — and from those whether the generator could have
//! been the bottleneck.
use super::cpu;
use super::drive::{self, Client, Workload};
use super::hist::Recorded;
use anyhow::Result;
use serde_json::{json, Value};
use std::time::Instant;

pub(super) struct SystemRun {
    pub(super) recorded: Recorded,
    pub(super) rows: Vec<Value>,
    pub(super) measured_ops: u64,
    pub(super) system_cpu: f64,
    /// The system's CPU seconds by role (they sum to `system_cpu`).
    pub(super) by_role: Vec<(String, f64)>,
    pub(super) generator_cpu: f64,
    pub(super) window: f64,
    /// The share of the machine's CPU time the hypervisor stole during the window.
    pub(super) host_steal: Option<f64>,
    pub(super) topology: Value,
}

/// A system's processes by role, for CPU accounting.
pub(super) type Roles = Vec<(String, Vec<u32>)>;

/// What the measured window cost: the system's CPU seconds by role, the generator's, the
/// window's length and the share of the machine the hypervisor stole meanwhile.
pub(super) struct Measured {
    pub(super) by_role: Vec<(String, f64)>,
    pub(super) generator_cpu: f64,
    pub(super) window: f64,
    pub(super) host_steal: Option<f64>,
}

/// Measures `drive::run` with CPU accounting over the measured window: the system's CPU
/// seconds by role (`roles`), the generator's, the window, the host's steal.
pub(super) async fn measured(
    system: &str,
    clients: Vec<Client>,
    w: &Workload,
    regions: usize,
    roles: &Roles,
    history: bool,
    origin: Instant,
) -> Result<(drive::Outcome, Measured)> {
    let roles_owned = roles.clone();
    let warm = w.warmup;
    let cpu_start = tokio::spawn(async move {
        tokio::time::sleep(warm).await;
        let by_role: Vec<f64> = roles_owned.iter().map(|(_, p)| cpu::total(p)).collect();
        (
            Instant::now(),
            by_role,
            cpu::this_process(),
            cpu::host_times(),
        )
    });
    let out = drive::run(system, clients, w, regions, history, origin).await?;
    let (t0, sys0, gen0, host0) = cpu_start.await?;
    let window = t0.elapsed().as_secs_f64();
    let by_role = roles
        .iter()
        .zip(sys0)
        .map(|((name, pids), before)| (name.clone(), cpu::total(pids) - before))
        .collect();
    Ok((
        out,
        Measured {
            by_role,
            generator_cpu: cpu::this_process() - gen0,
            window,
            host_steal: cpu::steal_share(host0, cpu::host_times()),
        },
    ))
}

pub(super) fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
}

/// What the load generator cost and whether it could have been the bottleneck: its CPU per
/// operation gives the most it could drive with every core (`capacity`). A run whose rate is
/// within `margin` times that (10 for WAN runs: the bar; 2 for loopback throughput
/// rows), or in which the machine was saturated with the generator taking a third or more of
/// it, is flagged.
pub(super) fn generator_json(s: &SystemRun, margin: f64) -> Value {
    let ops = s.measured_ops.max(1) as f64;
    let rate = ops / s.window.max(1e-9);
    let gen_per_op = s.generator_cpu / ops;
    let capacity = if gen_per_op > 0.0 {
        cores() / gen_per_op
    } else {
        f64::INFINITY
    };
    let busy = (s.generator_cpu + s.system_cpu) / s.window.max(1e-9) / cores();
    let share = s.generator_cpu / (s.generator_cpu + s.system_cpu).max(1e-9);
    json!({
        "ops_per_s": (rate * 10.0).round() / 10.0,
        "generator_cpu_us_per_op": (gen_per_op * 1e7).round() / 10.0,
        "system_cpu_us_per_op": (s.system_cpu / ops * 1e7).round() / 10.0,
        "system_cpu_us_per_op_by_role": s.by_role.iter().map(|(r, c)| (r.clone(), json!((c / ops * 1e7).round() / 10.0))).collect::<serde_json::Map<_, _>>(),
        "generator_capacity_ops_per_s": if capacity.is_finite() { json!(capacity.round()) } else { json!(null) },
        "headroom": if capacity.is_finite() { json!((capacity / rate * 10.0).round() / 10.0) } else { json!(null) },
        "machine_busy": (busy * 1000.0).round() / 1000.0,
        "host_steal": s.host_steal.map(|x| (x * 1000.0).round() / 1000.0),
        "generator_bottleneck": capacity < margin * rate || (busy >= 0.9 && share >= 1.0 / 3.0),
    })
}
