//! Fuzz targets for every parser of repository data (pack footers and
//! trailers, index files, manifests, configs, key objects, sealed strings,
//! prune plans, leases, run records), the tar scanner, Qdrant's API answers
//! and `cairn.toml`, with a mutation engine that runs on the stable
//! toolchain: inputs from a checked-in corpus (`fuzz/corpus/<target>/`) are
//! mutated (bit flips, interesting integers, cuts, inserts, splices) by a
//! seeded generator, so a run is reproducible from its seed.
//!
//! A target fails on a panic or on a single allocation above
//! [`ALLOCATION_LIMIT`] (an allocation sized by the input rather than by a
//! bound), both recorded by [`Tracking`], the allocator the fuzz binary and
//! tests install.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use rand::{Rng, SeedableRng};

/// The largest single allocation a parser may make for any input.
pub const ALLOCATION_LIMIT: usize = 128 << 20;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, recording the largest allocation since
/// [`reset_largest`].
#[derive(Debug)]
pub struct Tracking;

// SAFETY: every call is passed unchanged to the system allocator; the
// only addition is an atomic maximum of the requested size.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: as the caller's contract for GlobalAlloc::alloc.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from System.alloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: as for alloc.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: as the caller's contract for GlobalAlloc::realloc.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Starts a new measurement of the largest allocation.
pub fn reset_largest() {
    LARGEST.store(0, Ordering::Relaxed);
}

/// The largest allocation since [`reset_largest`] (0 when [`Tracking`] is
/// not the global allocator).
#[must_use]
pub fn largest() -> usize {
    LARGEST.load(Ordering::Relaxed)
}

/// One fuzz target: a parser run on arbitrary bytes.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Its name (and its corpus directory's).
    pub name: &'static str,
    /// Runs the parser; must not panic for any input.
    pub run: fn(&[u8]),
}

fn keys() -> &'static Arc<cairn_crypto::Keys> {
    static KEYS: OnceLock<Arc<cairn_crypto::Keys>> = OnceLock::new();
    KEYS.get_or_init(|| {
        Arc::new(cairn_crypto::Keys::full(
            &cairn_crypto::MasterKey::generate(),
        ))
    })
}

fn pack(data: &[u8]) {
    for sealing in [
        cairn_pack::Sealing::plain(),
        cairn_pack::Sealing::with_keys(Arc::clone(keys())),
    ] {
        if let Ok(entries) = cairn_pack::read_entries(&sealing, data) {
            for e in entries {
                let (from, to) = (e.offset as usize, e.offset as usize + e.length as usize);
                if let Some(stored) = data.get(from..to) {
                    let _ = cairn_pack::decode_blob(&sealing, stored, e.id, e.codec, e.raw_length);
                }
            }
        }
        let len = data.len();
        if len >= cairn_pack::FOOTER_LEN {
            let footer = &data[len - cairn_pack::FOOTER_LEN..];
            if let Ok((offset, _)) = cairn_pack::read_footer(&sealing, footer, len as u64) {
                if let Some(t) = data.get(offset as usize..len - cairn_pack::FOOTER_LEN) {
                    let _ = cairn_pack::read_trailer(&sealing, t);
                }
            }
        }
    }
}

fn index(data: &[u8]) {
    let _ = cairn_model::IndexFile::decode(data);
}

/// As the engine reads a manifest: zstd, bounded, then JSON.
fn manifest(data: &[u8]) {
    let mut json = Vec::new();
    let bounded = zstd::stream::read::Decoder::new(data)
        .and_then(|d| d.take(64 << 20).read_to_end(&mut json));
    if bounded.is_ok() {
        let _ = serde_json::from_slice::<cairn_model::Snapshot>(&json);
    }
    let _ = serde_json::from_slice::<cairn_model::Snapshot>(data);
}

fn config(data: &[u8]) {
    if let Ok(c) = serde_json::from_slice::<cairn_model::RepoConfig>(data) {
        let _ = c.validate();
    }
}

fn key(data: &[u8]) {
    let _ = cairn_crypto::KeyFile::parse(data);
}

fn sealed(data: &[u8]) {
    let k = keys();
    for kind in [
        cairn_crypto::Kind::Trailer,
        cairn_crypto::Kind::Object("snapshots"),
        cairn_crypto::Kind::Object("index"),
    ] {
        let _ = k.open(data, kind);
    }
    let mut out = Vec::new();
    let _ = k.open_blob_into(data, &[7; 32], &mut out);
}

fn records(data: &[u8]) {
    let _ = serde_json::from_slice::<cairn_model::GcPlan>(data);
    let _ = serde_json::from_slice::<cairn_model::Lease>(data);
    let _ = serde_json::from_slice::<cairn_model::RunRecord>(data);
}

fn tar(data: &[u8]) {
    let params = cairn_model::ChunkerParams::with_average(1024);
    let mut r = cairn_chunk::BlockReader::new(data, cairn_chunk::Chunker::new(params), 64 << 10)
        .tar_aware(true)
        .hashed(true);
    while let Ok(Some(_)) = r.next_block() {}
}

fn qdrant(data: &[u8]) {
    macro_rules! both {
        ($($t:ty),*) => {$(
            let _ = serde_json::from_slice::<$t>(data);
            let _ = serde_json::from_slice::<Result<$t>>(data);
        )*};
    }
    #[derive(serde::Deserialize)]
    struct Result<T> {
        #[allow(dead_code)]
        result: Option<T>,
    }
    both!(
        cairn_qdrant::VersionInfo,
        cairn_qdrant::ClusterStatus,
        cairn_qdrant::CollectionInfo,
        cairn_qdrant::CollectionClusterInfo,
        Vec<cairn_qdrant::SnapshotDescription>,
        cairn_qdrant::AliasDescription
    );
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = cairn_qdrant::Version::parse(s);
    }
}

fn cairn_toml(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = cairn_config::parse(s);
    }
}

/// Every target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "pack",
        run: pack,
    },
    Target {
        name: "index",
        run: index,
    },
    Target {
        name: "manifest",
        run: manifest,
    },
    Target {
        name: "config",
        run: config,
    },
    Target {
        name: "key",
        run: key,
    },
    Target {
        name: "sealed",
        run: sealed,
    },
    Target {
        name: "records",
        run: records,
    },
    Target {
        name: "tar",
        run: tar,
    },
    Target {
        name: "qdrant",
        run: qdrant,
    },
    Target {
        name: "cairn_toml",
        run: cairn_toml,
    },
];

/// The corpus of `target` under `dir` (`fuzz/corpus`), sorted by name.
///
/// # Errors
/// A directory that cannot be read.
pub fn corpus(dir: &Path, target: &str) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir.join(target))? {
        let e = e?;
        out.push((
            e.file_name().to_string_lossy().into_owned(),
            std::fs::read(e.path())?,
        ));
    }
    out.sort();
    Ok(out)
}

const INTERESTING: [u64; 10] = [
    0,
    1,
    0x7f,
    0xff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff_ffff_ffff,
    u64::MAX,
];

/// `input` changed by one to four random mutations (`other` for splices).
pub fn mutate(rng: &mut impl Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut b = input.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let len = b.len();
        match rng.random_range(0..8) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                b[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                b[i] = [0u8, 0xff, 0x7f, 0x80, b'0', b'"', b'{'][rng.random_range(0..7)];
            }
            2 if len >= 8 => {
                let i = rng.random_range(0..=len - 8);
                let v = INTERESTING[rng.random_range(0..INTERESTING.len())];
                let width = [1usize, 2, 4, 8][rng.random_range(0..4)];
                b[i..i + width].copy_from_slice(&v.to_le_bytes()[..width]);
            }
            3 if len > 0 => b.truncate(rng.random_range(0..len)),
            4 => {
                let i = rng.random_range(0..=len);
                let n = rng.random_range(1..64);
                let extra: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                b.splice(i..i, extra);
            }
            5 if len > 1 => {
                let i = rng.random_range(0..len);
                let j = rng.random_range(i..len);
                b.drain(i..=j.min(i + 256));
            }
            6 if len > 0 && !other.is_empty() => {
                let i = rng.random_range(0..len);
                let j = rng.random_range(0..other.len());
                let k = rng.random_range(j..=other.len());
                b.truncate(i);
                b.extend_from_slice(&other[j..k]);
            }
            7 if len > 0 => {
                let i = rng.random_range(0..len);
                let j = rng.random_range(i..len);
                let copy = b[i..=j].to_vec();
                let at = rng.random_range(0..=len);
                b.splice(at..at, copy);
            }
            _ => {}
        }
    }
    b
}

/// What a fuzz run found.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Inputs run.
    pub execs: u64,
    /// Inputs that panicked, with the message.
    pub panics: Vec<(Vec<u8>, String)>,
    /// Inputs whose largest allocation passed [`ALLOCATION_LIMIT`], with it.
    pub allocations: Vec<(Vec<u8>, usize)>,
    /// The largest allocation seen for any input.
    pub largest: usize,
}

/// Runs `target` on one input, recording a panic or an oversized allocation.
pub fn run_one(target: &Target, input: &[u8], out: &mut Outcome) {
    reset_largest();
    let r = std::panic::catch_unwind(|| (target.run)(input));
    let big = largest();
    out.execs += 1;
    out.largest = out.largest.max(big);
    if let Err(p) = r {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_string()))
            .unwrap_or_default();
        out.panics.push((input.to_vec(), msg));
    } else if big > ALLOCATION_LIMIT {
        out.allocations.push((input.to_vec(), big));
    }
}

/// Runs every corpus input, then `iterations` mutations of them, drawn
/// from a generator seeded with `seed`; stops early once `deadline` passes.
pub fn fuzz(
    target: &Target,
    corpus: &[Vec<u8>],
    iterations: u64,
    seed: u64,
    deadline: Option<std::time::Instant>,
) -> Outcome {
    let mut out = Outcome::default();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for input in corpus {
        run_one(target, input, &mut out);
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let empty = vec![Vec::new()];
    let pool = if corpus.is_empty() {
        &empty[..]
    } else {
        corpus
    };
    for i in 0..iterations {
        if i % 1024 == 0 && deadline.is_some_and(|d| std::time::Instant::now() > d) {
            break;
        }
        let a = &pool[rng.random_range(0..pool.len())];
        let b = &pool[rng.random_range(0..pool.len())];
        let input = mutate(&mut rng, a, b);
        run_one(target, &input, &mut out);
    }
    std::panic::set_hook(hook);
    out
}
