//! RocksDB chunk index: batched lookups of present and absent ids (lookups/s).
#![allow(missing_docs)] // criterion's macros define undocumented items

use cairn_index::ChunkIndex;
use cairn_model::{ChunkId, Codec, IndexEntry, IndexGroup, PackId};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn index(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let idx = ChunkIndex::open(&dir.path().join("idx")).expect("open");
    let n: u32 = 200_000;
    let ids: Vec<ChunkId> = (0..n).map(|i| ChunkId::of(&i.to_le_bytes())).collect();
    for (p, batch) in ids.chunks(500).enumerate() {
        let group = IndexGroup {
            pack: PackId::of(&p.to_le_bytes()),
            pack_length: 0,
            entries: batch
                .iter()
                .enumerate()
                .map(|(i, id)| IndexEntry {
                    id: *id,
                    offset: i as u64 * 65536,
                    length: 65536,
                    raw_length: 65536,
                    codec: Codec::Raw,
                })
                .collect(),
        };
        idx.ingest(
            &cairn_model::IndexId::of(format!("f{p}").as_bytes()),
            &[group],
        )
        .expect("ingest");
    }
    let present: Vec<ChunkId> = ids.iter().step_by(97).take(1024).copied().collect();
    let absent: Vec<ChunkId> = (0..1024u32)
        .map(|i| ChunkId::of(&(i + n).to_le_bytes()))
        .collect();
    let mut g = c.benchmark_group("index");
    g.throughput(Throughput::Elements(1024));
    g.bench_function("multi_get 1024 present", |b| {
        b.iter(|| idx.get_many(&present).expect("get").len())
    });
    g.bench_function("multi_get 1024 absent", |b| {
        b.iter(|| idx.get_many(&absent).expect("get").len())
    });
    g.finish();
}

criterion_group!(benches, index);
criterion_main!(benches);
