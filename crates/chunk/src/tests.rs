//! Chunker properties and the golden boundary test. The golden list pins the
//! on-disk format: if it changes, the repository format version must change.
//! Regenerate it deliberately with `CAIRN_BLESS_GOLDEN=1 cargo test -p cairn-chunk`.

use super::*;
use cairn_model::MemberSizes;
use proptest::prelude::*;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

fn small() -> ChunkerParams {
    ChunkerParams {
        min_size: 256,
        avg_size: 1024,
        max_size: 4096,
        normalization: 1,
        tar_aware: false,
        members: MemberSizes::default(),
    }
}

/// `small()`, tar-aware, with vector data in chunks of whole records
/// around 512 bytes (min 128, max 2048).
fn small_with_vectors() -> ChunkerParams {
    ChunkerParams {
        tar_aware: true,
        members: MemberSizes {
            vectors: Some(ChunkSizes::with_average(512)),
            ..MemberSizes::default()
        },
        ..small()
    }
}

/// The default parameters of format version 1 (no per-kind sizes).
fn v1() -> ChunkerParams {
    ChunkerParams {
        members: MemberSizes::default(),
        ..ChunkerParams::default()
    }
}

fn seeded(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    ChaCha20Rng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

fn via_reader(data: &[u8], params: ChunkerParams, block: usize) -> Vec<usize> {
    reader_lens(data, params, block, false)
}

fn reader_lens(data: &[u8], params: ChunkerParams, block: usize, tar_aware: bool) -> Vec<usize> {
    parallel_lens(data, params, block, tar_aware, 0)
}

/// Chunk lengths from a block reader finding boundaries in pieces of `piece`
/// bytes on the global pool (0: sequentially); also checks the ids it hashed.
fn parallel_lens(
    data: &[u8],
    params: ChunkerParams,
    block: usize,
    tar_aware: bool,
    piece: usize,
) -> Vec<usize> {
    let mut lens = Vec::new();
    let reader = BlockReader::new(data, Chunker::new(params), block)
        .tar_aware(tar_aware)
        .parallel(piece, None)
        .hashed(true);
    for b in reader {
        let b = b.expect("in-memory read");
        assert_eq!(b.ids, b.chunk_ids(), "hashed ids match the chunks");
        let mut start = 0;
        for e in b.ends {
            lens.push(e - start);
            start = e;
        }
    }
    lens
}

/// Seeded bytes with runs of zeros (where chunks hit the maximum size and
/// speculative chains never meet the exact one) and repeated stretches.
fn awkward(len: usize, seed: u64) -> Vec<u8> {
    let mut v = seeded(len, seed);
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x5eed);
    for _ in 0..len / 20_000 {
        let at = (rng.next_u64() as usize) % len;
        let run = ((rng.next_u64() as usize) % 30_000).min(len - at);
        v[at..at + run].fill(0);
    }
    v
}

proptest! {
    #[test]
    fn concatenation_equals_input(data in proptest::collection::vec(any::<u8>(), 0..40_000), block in 1usize..20_000) {
        let mut out = Vec::new();
        for b in BlockReader::new(&data[..], Chunker::new(small()), block) {
            let b = b.expect("in-memory read");
            for c in b.chunks() { out.extend_from_slice(c); }
        }
        prop_assert_eq!(out, data);
    }

    #[test]
    fn sizes_within_bounds(seed in any::<u64>(), len in 0usize..60_000) {
        let data = seeded(len, seed);
        let lens = Chunker::new(small()).cuts(&data);
        let p = small();
        for (i, l) in lens.iter().enumerate() {
            prop_assert!(*l <= p.max_size as usize);
            if i + 1 < lens.len() { prop_assert!(*l >= p.min_size as usize); }
        }
        prop_assert_eq!(lens.iter().sum::<usize>(), len);
    }

    #[test]
    fn block_size_does_not_change_boundaries(seed in any::<u64>(), block in 1usize..50_000) {
        let data = seeded(70_000, seed);
        prop_assert_eq!(via_reader(&data, small(), block), Chunker::new(small()).cuts(&data));
    }

    #[test]
    fn parallel_chunking_equals_sequential(seed in any::<u64>(), len in 0usize..300_000, block in 1usize..100_000, piece in 1usize..40_000) {
        let data = awkward(len, seed);
        prop_assert_eq!(parallel_lens(&data, small(), block, false, piece), Chunker::new(small()).cuts(&data));
    }

    #[test]
    fn deterministic(seed in any::<u64>()) {
        let data = seeded(30_000, seed);
        prop_assert_eq!(Chunker::new(small()).cuts(&data), Chunker::new(small()).cuts(&data));
    }

    #[test]
    fn resynchronises_after_insertion(seed in any::<u64>(), at in 0usize..100_000, insert in proptest::collection::vec(any::<u8>(), 1..200)) {
        let data = seeded(200_000, seed);
        let mut edited = data[..at].to_vec();
        edited.extend_from_slice(&insert);
        edited.extend_from_slice(&data[at..]);
        let ids = |d: &[u8]| -> Vec<ChunkId> {
            let mut pos = 0;
            Chunker::new(small()).cuts(d).into_iter().map(|n| { let id = ChunkId::of(&d[pos..pos + n]); pos += n; id }).collect()
        };
        let before = ids(&data);
        let after = ids(&edited);
        let shared = after.iter().filter(|id| before.contains(id)).count();
        // An insertion disturbs the chunk it lands in and a few after it, until a
        // cut point lines up again (min-size skipping can delay that by several
        // chunks: 10 of 163 changed for one recorded input).
        prop_assert!(shared + 16 >= before.len(), "shared {} of {}", shared, before.len());
    }
}

#[test]
fn golden_boundaries() {
    // 1 MiB of ChaCha20(seed 42) bytes, default parameters (64 KiB average).
    let data = seeded(1 << 20, 42);
    let lens = Chunker::new(ChunkerParams::default()).cuts(&data);
    let mut pos = 0;
    let pinned: Vec<String> = lens
        .iter()
        .map(|&n| {
            let id = ChunkId::of(&data[pos..pos + n]);
            pos += n;
            format!("{n}:{}", id.short())
        })
        .collect();
    let golden = manifest_dir().join("src/golden_boundaries.txt");
    if std::env::var_os("CAIRN_BLESS_GOLDEN").is_some() {
        std::fs::write(&golden, pinned.join("\n") + "\n").expect("write golden file");
    }
    let expected = std::fs::read_to_string(&golden).expect("golden file");
    assert_eq!(
        pinned.join("\n"),
        expected.trim_end(),
        "chunk boundaries changed: bump the format version"
    );
}

#[test]
fn empty_input_has_no_chunks() {
    assert!(Chunker::new(small()).cuts(&[]).is_empty());
    assert!(via_reader(&[], small(), 10).is_empty());
}

fn tar_aware_lens(data: &[u8], params: ChunkerParams, block: usize) -> Vec<usize> {
    reader_lens(data, params, block, true)
}

/// This crate's directory: cargo sets it when it runs a test (the
/// compile-time value would be stale in a binary reused from a build in
/// another checkout of the same target dir).
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(
        || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        std::path::PathBuf::from,
    )
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(manifest_dir().join("../../tests/fixtures").join(name)).expect("fixture")
}

#[test]
fn tar_aware_chunking_of_a_real_qdrant_snapshot() {
    let data = fixture("cluster-collection-node0-day0.snapshot");
    let params = ChunkerParams::default();
    let lens = tar_aware_lens(&data, params, 1 << 20);
    assert_eq!(lens.iter().sum::<usize>(), data.len());
    // Block size must not change boundaries.
    assert_eq!(lens, tar_aware_lens(&data, params, 100_000));
    // Every member's data start is a cut: the nested segment tars are found too.
    let ends: std::collections::HashSet<usize> = lens
        .iter()
        .scan(0, |p, &n| {
            *p += n;
            Some(*p)
        })
        .collect();
    let mut scanner = TarScanner::new();
    let mut pos = 0u64;
    let mut boundaries = 0;
    while let Some(b) = scanner.next_boundary(&data, 0, pos) {
        assert!(
            ends.contains(&(b as usize)) || b as usize >= data.len(),
            "boundary {b} is not a cut"
        );
        boundaries += 1;
        pos = b;
    }
    assert!(
        boundaries > 40,
        "only {boundaries} boundaries: nested segment tars not parsed"
    );
    assert!(lens.iter().all(|&n| n <= params.max_size as usize));
}

/// Block size, parallel pieces and where tar headers fall relative to block
/// ends never change tar-aware boundaries, with or without vector sizes, in
/// both snapshot formats.
#[test]
fn tar_aware_boundaries_do_not_depend_on_blocks_or_pieces() {
    for name in [
        "cluster-collection-node0-day0.snapshot",
        "shard0-node0-day0.snapshot",
    ] {
        let data = fixture(name);
        for params in [small(), small_with_vectors()] {
            let reference = parallel_lens(&data, params, data.len() + 1, true, 0);
            // Block ends sweep across header positions, so some headers are cut off.
            let blocks = (0..48).map(|i| 8192 + i * 173).chain([65_537, 1 << 20]);
            for block in blocks {
                for piece in [0, 16_384] {
                    assert_eq!(
                        parallel_lens(&data, params, block, true, piece),
                        reference,
                        "{name}, block {block}, piece {piece}"
                    );
                }
            }
        }
    }
}

/// A pin of the chunks of `data`: their count and a hash of every length and id.
fn pin(data: &[u8], lens: &[usize]) -> String {
    let mut h = blake3::Hasher::new();
    let mut pos = 0;
    for n in lens {
        h.update(&(*n as u64).to_le_bytes());
        h.update(ChunkId::of(&data[pos..pos + n]).as_bytes());
        pos += n;
    }
    format!("{} chunks {}", lens.len(), &h.finalize().to_hex()[..16])
}

/// Golden pins for tar-aware boundaries on real snapshots (part of the
/// format): version 1's parameters, which repositories created before
/// version 2 keep using, and version 2's defaults (vector data in chunks of
/// whole records).
#[test]
fn golden_tar_aware_boundaries() {
    let data = fixture("shard0-node0-day0.snapshot");
    assert_eq!(
        pin(&data, &tar_aware_lens(&data, v1(), 1 << 20)),
        GOLDEN_TAR_V1,
        "version 1 tar-aware boundaries changed: repositories of version 1 would stop deduplicating"
    );
    assert_eq!(
        ChunkerParams::default().format_version(),
        2,
        "the defaults are version 2's"
    );
    for (name, golden) in [
        ("shard0-node0-day0.snapshot", GOLDEN_TAR_V2_SHARD),
        (
            "cluster-collection-node0-day0.snapshot",
            GOLDEN_TAR_V2_COLLECTION,
        ),
    ] {
        let data = fixture(name);
        assert_eq!(
            pin(
                &data,
                &tar_aware_lens(&data, ChunkerParams::default(), 1 << 20)
            ),
            golden,
            "{name}: version 2 boundaries changed: bump the format version"
        );
    }
}

const GOLDEN_TAR_V1: &str = "198 chunks d82b27be018e096b";
const GOLDEN_TAR_V2_SHARD: &str = "283 chunks 79da574a87a405f7";
const GOLDEN_TAR_V2_COLLECTION: &str = "478 chunks b662160b0aca72a3";

/// Every member the scanner classifies in `data`, walking it whole.
fn members_of(data: &[u8]) -> Vec<Member> {
    let mut scanner = TarScanner::new();
    let mut pos = 0u64;
    let mut out: Vec<Member> = Vec::new();
    while let Some(b) = scanner.next_boundary(data, 0, pos) {
        if let Some(m) = scanner.member_at(b) {
            if out.last() != Some(&m) {
                out.push(m);
            }
        }
        pos = b;
    }
    out
}

/// Both snapshot formats (nested segment tars; inline segments with GNU
/// long names and sparse vector files): vector members are found, with the
/// record size from their storage config (dim 64 float32: 256 bytes), and
/// every cut inside their data falls on a record boundary.
#[test]
fn vector_data_is_cut_on_record_boundaries() {
    for name in [
        "shard0-node0-day0.snapshot",
        "cluster-collection-node0-day0.snapshot",
    ] {
        let data = fixture(name);
        let members = members_of(&data);
        let vectors: Vec<&Member> = members
            .iter()
            .filter(|m| m.kind == MemberKind::Vectors)
            .collect();
        assert!(vectors.len() >= 2, "{name}: vector members {members:?}");
        assert!(
            vectors.iter().all(|m| m.record_size == Some(256)),
            "{name}: record sizes {vectors:?}"
        );
        assert!(
            members.iter().any(|m| m.kind == MemberKind::Payload),
            "{name}: no payload pages among {members:?}"
        );
        for params in [ChunkerParams::default(), small_with_vectors()] {
            let lens = tar_aware_lens(&data, params, 1 << 20);
            let mut end = 0u64;
            let mut inside = 0;
            for n in lens {
                end += n as u64;
                for m in &vectors {
                    if end > m.data_start && end < m.data_end {
                        inside += 1;
                        assert_eq!((end - m.data_start) % 256, 0, "{name}: cut {end} in {m:?}");
                    }
                }
            }
            assert!(inside > 10, "{name}: only {inside} cuts inside vector data");
        }
    }
}

#[test]
fn member_kinds_by_path() {
    let cases = [
        ("0/segments/a.tar", MemberKind::Other),
        (
            "snapshot/files/vector_storage/vectors/chunk_0.mmap",
            MemberKind::Vectors,
        ),
        (
            "segments/u/files/vector_storage-image/vectors/chunk_12.mmap",
            MemberKind::Vectors,
        ),
        (
            "segments/u/files/vector_storage/matrix.dat",
            MemberKind::Vectors,
        ),
        (
            "segments/u/files/vector_storage/vectors/config.json",
            MemberKind::Other,
        ),
        (
            "segments/u/files/vector_storage/deleted/flags_a.dat",
            MemberKind::Other,
        ),
        (
            "segments/u/files/vector_storage/vectors/chunk_.mmap",
            MemberKind::Other,
        ),
        (
            "segments/u/files/vector_index/chunk_0.mmap",
            MemberKind::Other,
        ),
        (
            "snapshot/files/payload_storage/page_0.dat",
            MemberKind::Payload,
        ),
        (
            "snapshot/files/payload_storage/tracker.dat",
            MemberKind::Other,
        ),
        (
            "snapshot/files/payload_index/x-map/page_0.dat",
            MemberKind::Other,
        ),
        ("0/wal/open-4", MemberKind::Wal),
        ("wal/closed-11", MemberKind::Wal),
        ("0/wal/first-index", MemberKind::Other),
        ("0/wal/open-x", MemberKind::Other),
    ];
    for (path, kind) in cases {
        assert_eq!(MemberKind::of_path(path), kind, "{path}");
    }
}

#[test]
fn record_size_from_vector_storage_config() {
    let real =
        br#"{"chunk_size_bytes":33552384,"chunk_size_vectors":10922,"dim":768,"populate":true}"#;
    assert_eq!(record_size(real), Some(3072));
    assert_eq!(
        record_size(br#"{"chunk_size_vectors": 4, "chunk_size_bytes" : 64}"#),
        Some(16)
    );
    for bad in [
        &br#"{"chunk_size_bytes":100,"chunk_size_vectors":3}"#[..],
        br#"{"chunk_size_bytes":100,"chunk_size_vectors":0}"#,
        br#"{"chunk_size_bytes":100}"#,
        br#"{"chunk_size_bytes":-100,"chunk_size_vectors":1}"#,
        br#"{"chunk_size_bytes":4194304,"chunk_size_vectors":2}"#,
        b"\xff\xfe not json",
    ] {
        assert_eq!(record_size(bad), None, "{}", String::from_utf8_lossy(bad));
    }
}

/// A tar (GNU long names for paths over 100 bytes) of `members`.
fn gnu_tar(members: &[(&str, &[u8])]) -> Vec<u8> {
    fn header(name: &[u8], size: usize, typeflag: u8) -> [u8; 512] {
        let mut h = [0u8; 512];
        h[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
        h[100..107].copy_from_slice(b"0000644");
        h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        h[136..147].copy_from_slice(b"00000000000");
        h[156] = typeflag;
        h[257..265].copy_from_slice(b"ustar  \0");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        h
    }
    let mut out = Vec::new();
    let put = |out: &mut Vec<u8>, name: &[u8], data: &[u8], typeflag: u8| {
        out.extend_from_slice(&header(name, data.len(), typeflag));
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    };
    for (name, data) in members {
        if name.len() > 100 {
            let mut long = name.as_bytes().to_vec();
            long.push(0);
            put(&mut out, b"././@LongLink", &long, b'L');
        }
        put(&mut out, name.as_bytes(), data, b'0');
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// A segment directory's worth of vector storage: its config and one chunk
/// file of `records` (each `record` bytes).
fn vector_tar(dir: &str, record: usize, records: &[Vec<u8>], tail: &[u8]) -> Vec<u8> {
    let config = format!(
        r#"{{"chunk_size_bytes":{},"chunk_size_vectors":1024,"dim":{}}}"#,
        record * 1024,
        record / 4
    );
    let vectors: Vec<u8> = records.concat();
    gnu_tar(&[
        (
            &format!("{dir}/vector_storage/vectors/config.json"),
            config.as_bytes(),
        ),
        (
            &format!("{dir}/vector_storage/vectors/chunk_0.mmap"),
            &vectors,
        ),
        (&format!("{dir}/payload_storage/page_0.dat"), tail),
    ])
}

/// Vector data whose record size is unknown (no storage config before it)
/// is chunked as any other member: byte-level cuts at the small vector
/// sizes would multiply the chunks for little gain.
#[test]
fn vector_data_without_a_config_gets_the_default_sizes() {
    let vectors = seeded(200_000, 3);
    let data = gnu_tar(&[("s/vector_storage/vectors/chunk_0.mmap", &vectors)]);
    let members = members_of(&data);
    assert!(
        members
            .iter()
            .any(|m| m.kind == MemberKind::Vectors && m.record_size.is_none()),
        "{members:?}"
    );
    let with = parallel_lens(&data, small_with_vectors(), 1 << 20, true, 0);
    let plain = ChunkerParams {
        tar_aware: true,
        ..small()
    };
    assert_eq!(with, parallel_lens(&data, plain, 1 << 20, true, 0));
    // Its chunks average about the default 1 KiB, not the vectors' 512 bytes.
    assert!(with.len() < 200_000 / 700, "{} chunks", with.len());
}

fn chunk_ids(data: &[u8], params: ChunkerParams, block: usize, piece: usize) -> Vec<ChunkId> {
    let mut pos = 0;
    parallel_lens(data, params, block, true, piece)
        .into_iter()
        .map(|n| {
            pos += n;
            ChunkId::of(&data[pos - n..pos])
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Long names (paths over 100 bytes) are followed, and where blocks end
    /// or pieces start never changes the boundaries.
    #[test]
    fn record_boundaries_do_not_depend_on_blocks(seed in any::<u64>(), block in 2048usize..40_000, long in any::<bool>()) {
        let dir = if long { "segments/0123456789abcdef0123456789abcdef/files/a-rather-long-directory-name-to-need-a-gnu-long-name" } else { "s/files" };
        let records: Vec<Vec<u8>> = (0..300).map(|i| seeded(384, seed ^ i)).collect();
        let data = vector_tar(dir, 384, &records, &seeded(5000, seed));
        let whole = parallel_lens(&data, small_with_vectors(), data.len() + 1, true, 0);
        prop_assert_eq!(&parallel_lens(&data, small_with_vectors(), block, true, 0), &whole);
        prop_assert_eq!(&parallel_lens(&data, small_with_vectors(), block, true, 16_384), &whole);
        // The vector data is found, with its record size, and cut on record boundaries.
        let members = members_of(&data);
        let v = members.iter().find(|m| m.kind == MemberKind::Vectors);
        prop_assert!(v.is_some_and(|m| m.record_size == Some(384) && m.data_end - m.data_start == 300 * 384), "{:?}", members);
        let (start, stop) = v.map(|m| (m.data_start as usize, m.data_end as usize)).unwrap_or_default();
        let mut end = 0;
        for n in whole {
            end += n;
            if end > start && end < stop {
                prop_assert_eq!((end - start) % 384, 0);
            }
        }
    }

    /// Removing one record and inserting another (what an optimizer rebuild
    /// does to runs of vectors) leaves all but a few vector chunks intact.
    #[test]
    fn rebuilt_vectors_deduplicate(seed in any::<u64>(), del in 0usize..400, ins in 0usize..400) {
        let record = 768;
        let records: Vec<Vec<u8>> = (0..400).map(|i| seeded(record, seed ^ (i << 8))).collect();
        let mut rebuilt = records.clone();
        rebuilt.remove(del);
        rebuilt.insert(ins, seeded(record, !seed));
        let params = small_with_vectors();
        let before: std::collections::HashSet<ChunkId> =
            chunk_ids(&vector_tar("s", record, &records, b"x"), params, 1 << 20, 0).into_iter().collect();
        let after = chunk_ids(&vector_tar("s", record, &rebuilt, b"x"), params, 1 << 20, 0);
        let new = after.iter().filter(|id| !before.contains(id)).count();
        // Records of 768 bytes are chunks of their own (average 512): the
        // inserted record, the changed header and the last chunk.
        prop_assert!(new <= 4, "{} new chunks", new);
    }
}

/// The record hash is part of the format (it places vector chunk cuts).
#[test]
fn golden_record_hash() {
    let bytes: Vec<u8> = (0..3072u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let got: Vec<String> = [
        &bytes[..0],
        &bytes[..4],
        &bytes[..63],
        &bytes[..64],
        &bytes[..512],
        &bytes[..],
    ]
    .iter()
    .map(|r| format!("{:016x}", record_hash(r)))
    .collect();
    assert_eq!(
        got.join(" "),
        GOLDEN_RECORD_HASH,
        "record hash changed: bump the format version"
    );
}

const GOLDEN_RECORD_HASH: &str =
    "0000000000000000 ad7233385700f555 ec2b5ccace5f2d90 5aca482d2fac308c 9d0dcf6916440e05 74951e0229a83f20";
