//! Pack encode (compress + frame) and decode (decompress + verify) in MiB/s.
#![allow(missing_docs)] // criterion's macros define undocumented items

mod data;

use cairn_chunk::Chunker;
use cairn_model::{ChunkId, ChunkerParams, Compression};
use cairn_pack::{compress, decode_blob, read_entries, PackWriter};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn pack(c: &mut Criterion) {
    let (name, bytes) = data::snapshot_bytes();
    let cuts = Chunker::new(ChunkerParams::default()).cuts(&bytes);
    let chunks: Vec<&[u8]> = {
        let mut pos = 0;
        cuts.iter()
            .map(|&n| {
                let s = &bytes[pos..pos + n];
                pos += n;
                s
            })
            .collect()
    };
    let mut g = c.benchmark_group(format!("pack/{name}"));
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.sample_size(10);
    for level in [0, 1, 3] {
        let comp = Compression {
            zstd_level: level,
            ..Compression::default()
        };
        g.bench_function(format!("encode zstd {level}"), |b| {
            b.iter(|| {
                let mut w = PackWriter::new();
                for ch in &chunks {
                    let z = compress(ch, comp);
                    w.push(ChunkId::of(ch), ch, z.as_deref());
                }
                w.finish().bytes.len()
            })
        });
        let mut w = PackWriter::new();
        for ch in &chunks {
            let z = compress(ch, comp);
            w.push(ChunkId::of(ch), ch, z.as_deref());
        }
        let p = w.finish();
        g.bench_function(format!("decode+verify zstd {level}"), |b| {
            b.iter(|| {
                let entries = read_entries(&p.bytes).expect("valid");
                entries
                    .iter()
                    .map(|e| {
                        let s =
                            &p.bytes[e.offset as usize..(e.offset + u64::from(e.length)) as usize];
                        decode_blob(s, e.id, e.codec, e.raw_length)
                            .expect("valid")
                            .len()
                    })
                    .sum::<usize>()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, pack);
criterion_main!(benches);
