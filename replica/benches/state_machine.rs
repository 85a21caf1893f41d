//! The KV state machine's cost per applied write, as every replica pays it: puts of 64-byte
//! values over 100,000 keys (the throughput benchmark's shape), from 256 clients, with watch
//! recording on (as the shard driver runs it), with the binary's allocator (jemalloc).
//! `cargo bench -p meridian-replica --bench state_machine`
/// The allocator the `meridian` binary runs with.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use meridian_replica::kv::{KvCommand, KvStore, Op};

const KEYS: u64 = 100_000;
const WRITES: u64 = 20_000;

fn cmd(i: u64) -> KvCommand {
    // A fixed pseudo-random key order (the same every run).
    let k = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) % KEYS;
    KvCommand {
        client: 1 + i % 256,
        seq: 1 + i / 256,
        op: Op::Put {
            key: format!("bench/{k:06}").into_bytes(),
            value: vec![b'v'; 64],
        },
    }
}

fn loaded() -> KvStore {
    let mut s = KvStore::default();
    s.record_changes();
    for k in 0..KEYS {
        s.apply(&KvCommand {
            client: 10_000 + k,
            seq: 1,
            op: Op::Put {
                key: format!("bench/{k:06}").into_bytes(),
                value: vec![b'v'; 64],
            },
        });
    }
    s.take_changes();
    s
}

fn bench(c: &mut Criterion) {
    let base = loaded();
    let cmds: Vec<KvCommand> = (0..WRITES).map(cmd).collect();
    let mut group = c.benchmark_group("state_machine");
    group.throughput(Throughput::Elements(WRITES));
    group.sample_size(10);
    group.bench_function("put_100k_keys", |b| {
        b.iter_batched(
            // A clone shares the maps' nodes, as after a snapshot: the writes path-copy.
            || base.clone(),
            |mut s| {
                for c in &cmds {
                    criterion::black_box(s.apply(c));
                }
                s.take_changes();
                s
            },
            criterion::BatchSize::PerIteration,
        )
    });
    group.bench_function("put_100k_keys_unshared", |b| {
        b.iter_batched(
            // Nodes owned by this copy alone: the writes update in place.
            loaded,
            |mut s| {
                for c in &cmds {
                    criterion::black_box(s.apply(c));
                }
                s.take_changes();
                s
            },
            criterion::BatchSize::PerIteration,
        )
    });
    group.bench_function("put_100k_keys_unanswered", |b| {
        b.iter_batched(
            // A follower's apply: nobody waits for the result.
            loaded,
            |mut s| {
                for c in &cmds {
                    s.apply_unanswered(c);
                }
                s.take_changes();
                s
            },
            criterion::BatchSize::PerIteration,
        )
    });
    group.finish();
    // What every replica pays to decode a put from a log entry (the leader twice).
    let encoded: Vec<Vec<u8>> = cmds.iter().map(KvCommand::encode).collect();
    let mut decode = c.benchmark_group("command");
    decode.throughput(Throughput::Elements(WRITES));
    decode.bench_function("decode_put", |b| {
        b.iter(|| {
            for e in &encoded {
                criterion::black_box(KvCommand::decode(e).expect("decodes"));
            }
        })
    });
    decode.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
