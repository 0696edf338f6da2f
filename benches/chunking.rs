//! Chunking and hashing throughput (MiB/s) on a real Qdrant snapshot.
#![allow(missing_docs)] // criterion's macros define undocumented items

mod data;

use cairn_chunk::{BlockReader, Chunker};
use cairn_model::{ChunkId, ChunkerParams};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn chunking(c: &mut Criterion) {
    let (name, bytes) = data::snapshot_bytes();
    let mut g = c.benchmark_group(format!("chunk/{name}"));
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.sample_size(20);
    for avg in [16 * 1024, 64 * 1024] {
        let chunker = Chunker::new(ChunkerParams::with_average(avg));
        g.bench_function(format!("fastcdc avg {}KiB", avg / 1024), |b| {
            b.iter(|| chunker.cuts(&bytes).len())
        });
        g.bench_function(format!("block reader avg {}KiB", avg / 1024), |b| {
            b.iter(|| {
                BlockReader::new(&bytes[..], chunker.clone(), 8 << 20)
                    .map(|b| b.expect("in memory").ends.len())
                    .sum::<usize>()
            })
        });
    }
    let chunker = Chunker::new(ChunkerParams::default());
    let threads = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let pool = std::sync::Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("bench pool"),
    );
    for (label, piece) in [("sequential", 0), ("parallel", 1 << 20)] {
        g.bench_function(
            format!("block reader tar-aware {label} ({threads} threads)"),
            |b| {
                b.iter(|| {
                    BlockReader::new(&bytes[..], chunker.clone(), 8 << 20)
                        .tar_aware(true)
                        .parallel(piece, Some(pool.clone()))
                        .map(|b| b.expect("in memory").ends.len())
                        .sum::<usize>()
                })
            },
        );
    }
    let cuts = chunker.cuts(&bytes);
    g.bench_function("blake3 per 64KiB chunk", |b| {
        b.iter(|| {
            let mut pos = 0;
            cuts.iter()
                .map(|&n| {
                    let id = ChunkId::of(&bytes[pos..pos + n]);
                    pos += n;
                    id.0[0]
                })
                .fold(0u8, |a, b| a ^ b)
        })
    });
    g.bench_function("blake3 whole buffer", |b| b.iter(|| ChunkId::of(&bytes)));
    g.finish();
}

criterion_group!(benches, chunking);
criterion_main!(benches);
