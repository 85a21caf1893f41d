//! `meridian`: the single binary.
#![forbid(unsafe_code)]

mod bench;
mod cmd;
mod https;
mod ports;
mod telemetry;
mod wan;

use clap::{Parser, Subcommand};

/// jemalloc: freed memory goes back to the system (glibc's per-thread arenas kept the pages of
/// parked client connections resident: 27 KiB per idle connection against ~11 with jemalloc).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "meridian",
    version,
    about = "Meridian: a wide-area geo-replication gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run seeded simulations of a replica group under WAN delays and faults, and check them.
    Sim(cmd::sim::SimArgs),
    /// Check a recorded history file (DESIGN.md §7b) for linearizability.
    Check(cmd::check::CheckArgs),
    /// Score replica placements over an RTT matrix, with failure-domain analysis.
    Plan(cmd::plan::PlanArgs),
    /// Generate a cluster CA and a certificate per site, proxy and client.
    Certs(cmd::certs::CertsArgs),
    /// Run one replica site (all its shard groups).
    Replica(cmd::replica::ReplicaArgs),
    /// A local emulated five-region cluster, a workload from every region, a latency report.
    Demo(cmd::demo::DemoArgs),
    /// WAN benchmark: a workload from every region through Meridian and/or etcd, latency
    /// against the physical bound, report.json/md and CDF plots.
    Bench(cmd::bench::BenchArgs),
    /// Show every site's shards: leader, lease, progress, WAL.
    Status(cmd::status::StatusArgs),
    /// Run a regional proxy (HTTPS API for apps).
    Proxy(cmd::proxy::ProxyArgs),
    /// Start or stop a local cluster.
    #[command(subcommand)]
    Cluster(cmd::cluster::ClusterCmd),
    /// Host-level WAN emulation: network namespaces joined by a delaying packet router (root).
    #[command(subcommand)]
    Wan(wan::WanCmd),
}

fn main() -> std::process::ExitCode {
    meridian_replica::tls::install_provider();
    let cli = Cli::parse();
    // Long-running servers log at info by default; one-shot commands only warn.
    let default = if matches!(cli.command, Command::Replica(_)) {
        "info"
    } else {
        "warn"
    };
    let service = match cli.command {
        Command::Replica(_) => "meridian-replica",
        Command::Proxy(_) => "meridian-proxy",
        _ => "meridian",
    };
    let _telemetry = telemetry::init(default, service);
    let result = match cli.command {
        Command::Sim(a) => cmd::sim::run(a),
        Command::Check(a) => cmd::check::run(a),
        Command::Plan(a) => cmd::plan::run(a),
        Command::Certs(a) => cmd::certs::run(a),
        Command::Replica(a) => cmd::replica::run(a),
        Command::Cluster(c) => cmd::cluster::run(c),
        Command::Wan(c) => wan::run(c),
        Command::Demo(a) => cmd::demo::run(a),
        Command::Proxy(a) => cmd::proxy::run(a),
        Command::Status(a) => cmd::status::run(a),
        Command::Bench(a) => cmd::bench::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
