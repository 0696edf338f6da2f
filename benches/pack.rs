//! Pack encode (compress + frame, sealed or not) and decode (open +
//! decompress + verify) in MiB/s.
#![allow(missing_docs)] // criterion's macros define undocumented items

mod data;

use cairn_chunk::Chunker;
use std::sync::Arc;

use cairn_model::{ChunkerParams, Compression};
use cairn_pack::{compress, decode_blob, read_entries, PackWriter, Sealing};
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
    let sealed = Sealing::with_keys(Arc::new(cairn_crypto::Keys::full(
        &cairn_crypto::MasterKey::generate(),
    )));
    for (mode, sealing) in [("plain", Sealing::plain()), ("sealed", sealed)] {
        for level in [0, 1, 3] {
            let comp = Compression {
                zstd_level: level,
                ..Compression::default()
            };
            let write = || {
                let mut w = PackWriter::new().sealed(&sealing);
                for ch in &chunks {
                    let z = compress(ch, comp);
                    w.push(sealing.ids().id(ch), ch, z.as_deref());
                }
                w.finish()
            };
            g.bench_function(format!("encode {mode} zstd {level}"), |b| {
                b.iter(|| write().bytes.len())
            });
            let p = write();
            g.bench_function(format!("decode+verify {mode} zstd {level}"), |b| {
                b.iter(|| {
                    let entries = read_entries(&sealing, &p.bytes).expect("valid");
                    entries
                        .iter()
                        .map(|e| {
                            let s = &p.bytes
                                [e.offset as usize..(e.offset + u64::from(e.length)) as usize];
                            decode_blob(&sealing, s, e.id, e.codec, e.raw_length)
                                .expect("valid")
                                .len()
                        })
                        .sum::<usize>()
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, pack);
criterion_main!(benches);
