//! Core throughput: a 5-replica group in one thread, instant delivery and durability, so the
//! figure is the protocol's CPU cost (all five replicas' work) per committed command.
//! `cargo bench -p meridian-core --bench core_throughput`
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use meridian_core::harness::LocalGroup;
use meridian_core::{CoreConfig, Quorum};
use std::time::Duration;

const COMMANDS: usize = 10_000;

fn elected(batch: usize) -> (LocalGroup, meridian_core::SiteId) {
    let mut g = LocalGroup::new(5, |me| CoreConfig {
        max_batch_commands: batch,
        ..CoreConfig::wan(me, Quorum::Majority(5), 1)
    });
    g.advance(Duration::from_secs(4), Duration::from_millis(10));
    let l = g.leader().expect("leader");
    (g, l)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("core_5_replicas");
    group.throughput(Throughput::Elements(COMMANDS as u64));
    group.sample_size(10);
    let cmd = Bytes::from(vec![7u8; 64]);
    for batch in [1usize, 100] {
        group.bench_with_input(BenchmarkId::new("batch", batch), &batch, |b, &batch| {
            b.iter_batched(
                || elected(batch),
                |(mut g, l)| {
                    for _ in 0..COMMANDS / batch {
                        g.propose(l, vec![cmd.clone(); batch]);
                    }
                    let done: usize = g.applied[l.0 as usize].iter().map(|(_, b)| b.0.len()).sum();
                    assert_eq!(done, COMMANDS);
                    g
                },
                criterion::BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
