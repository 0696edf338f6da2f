//! Writes a synthetic repository of any number of chunks into a local
//! repository made by `cairn init`, for measuring prune's mark at a scale no
//! real backup on this machine reaches: one index file per pack of 4,096
//! entries (a version 2 pack: 16 MiB of ~4 KiB chunks), data packs as sparse
//! files of the right length (never read by a dry-run prune), real chunk
//! lists in real packs (read and verified by the mark), and one snapshot
//! that needs every chunk but half of those in every tenth pack (so the
//! mark finds packs to repack).
//!
//! With `lookups`, times the local chunk-index cache that a command built
//! from such a repository: random ids it holds and ids it does not, looked
//! up in batches of 2,048 (a backup's read block of ~4 KiB chunks), and ids
//! it holds again with the ordered walk a restore uses.
//!
//! With `clone`, copies the one backup a local repository holds into N
//! backups an hour apart (each its own manifest naming the same chunk
//! lists, as a repository that has kept years of nightly backups of a
//! quiet source), for measuring what lists and shows backups.
//!
//! Usage: cargo run --release --example synthetic-repo -- REPO_DIR CHUNKS
//!        cargo run --release --example synthetic-repo -- lookups CACHE_DIR CHUNKS [N]
//!        cargo run --release --example synthetic-repo -- clone REPO_DIR N

use std::io::Write;
use std::path::{Path, PathBuf};

use cairn_model::{
    ChunkId, Codec, FileEntry, IndexEntry, IndexFile, IndexGroup, IndexId, PackId, Snapshot,
    SnapshotId, SnapshotTotals, FORMAT_VERSION,
};
use cairn_pack::PackWriter;

const ENTRIES_PER_PACK: u64 = 4096;
const CHUNK: u32 = 4096;
const LIST_LEN: usize = 1024;
/// Chunk ids per snapshot file (a large shard snapshot).
const FILE_CHUNKS: u64 = 4 << 20;
const LIST_PACK: usize = 16 << 20;

fn id_of(seed: u64, kind: u8) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&[kind]);
    h.update(&seed.to_le_bytes());
    *h.finalize().as_bytes()
}

fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(path.parent().expect("a parent"))?;
    std::fs::File::create(path)?.write_all(bytes)
}

fn pack_path(repo: &Path, id: &PackId) -> PathBuf {
    let h = id.to_hex();
    repo.join("packs").join(&h[..2]).join(&h)
}

fn index(repo: &Path, group: IndexGroup) -> std::io::Result<()> {
    let bytes = IndexFile {
        supersedes: Vec::new(),
        groups: vec![group],
    }
    .encode();
    write(
        &repo.join("index").join(IndexId::of(&bytes).to_hex()),
        &bytes,
    )
}

struct Lists {
    current: Vec<u8>,
    writer: PackWriter,
    file_lists: Vec<ChunkId>,
    files: Vec<FileEntry>,
    file_chunks: u64,
}

impl Lists {
    fn push(&mut self, repo: &Path, id: [u8; 32]) -> std::io::Result<()> {
        self.current.extend_from_slice(&id);
        self.file_chunks += 1;
        if self.current.len() == LIST_LEN * 32 {
            self.end_list(repo)?;
        }
        if self.file_chunks == FILE_CHUNKS {
            self.end_file(repo)?;
        }
        Ok(())
    }

    fn end_list(&mut self, repo: &Path) -> std::io::Result<()> {
        if self.current.is_empty() {
            return Ok(());
        }
        let id = ChunkId::of(&self.current);
        self.writer.push(id, &self.current, None);
        self.file_lists.push(id);
        self.current.clear();
        if self.writer.len() >= LIST_PACK {
            self.flush_pack(repo)?;
        }
        Ok(())
    }

    fn end_file(&mut self, repo: &Path) -> std::io::Result<()> {
        self.end_list(repo)?;
        if self.file_lists.is_empty() {
            return Ok(());
        }
        self.files.push(FileEntry {
            path: format!("shard-{}.snapshot", self.files.len()),
            size: self.file_chunks * u64::from(CHUNK),
            mode: 0o644,
            mtime: 0,
            chunks: Vec::new(),
            chunk_lists: std::mem::take(&mut self.file_lists),
            new_bytes: 0,
            new_stored_bytes: 0,
            damaged: None,
        });
        self.file_chunks = 0;
        Ok(())
    }

    fn flush_pack(&mut self, repo: &Path) -> std::io::Result<()> {
        if self.writer.is_empty() {
            return Ok(());
        }
        let pack = std::mem::take(&mut self.writer).finish();
        write(&pack_path(repo, &pack.id), &pack.bytes)?;
        index(
            repo,
            IndexGroup {
                pack: pack.id,
                pack_length: pack.bytes.len() as u64,
                entries: pack.entries,
            },
        )
    }
}

/// A deterministic sequence (splitmix64).
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `lookups CACHE_DIR CHUNKS [N]`: N (default 1 M) present and N absent
/// ids, in batches, then N more present ones with the restore's ordered
/// walk ([`cairn_index::ChunkIndex::get_many_present`]), against the
/// chunk-index cache in CACHE_DIR (a repository's directory under the cache
/// root, holding `chunk-index`); prints lookups/s.
fn lookups(args: &[String]) {
    let (Some(dir), Some(chunks)) = (args.first(), args.get(1)) else {
        eprintln!("usage: synthetic-repo lookups CACHE_DIR CHUNKS [N]");
        std::process::exit(2);
    };
    let chunks: u64 = chunks.parse().expect("CHUNKS is a number");
    let n: u64 = args
        .get(2)
        .map_or(1 << 20, |n| n.parse().expect("N is a number"));
    let index = cairn_index::ChunkIndex::open_shared(Path::new(dir)).expect("the cache opens");
    let mut state = 42;
    for (what, kind, walk) in [
        ("present", 0u8, false),
        ("absent", 2u8, false),
        ("present-walk", 0u8, true),
    ] {
        let ids: Vec<ChunkId> = (0..n)
            .map(|_| ChunkId(id_of(next(&mut state) % chunks, kind)))
            .collect();
        let start = std::time::Instant::now();
        let mut found = 0u64;
        for batch in ids.chunks(2048) {
            let hits = if walk {
                index.get_many_present(batch)
            } else {
                index.get_many(batch)
            };
            found += hits.expect("lookup").iter().flatten().count() as u64;
        }
        let secs = start.elapsed().as_secs_f64();
        let expected = if kind == 0 { n } else { 0 };
        assert_eq!(found, expected, "{what} ids found");
        println!("{what} {:.0}", n as f64 / secs);
    }
}

/// Copies the repository's one backup into `N` backups an hour apart.
fn clone(args: &[String]) -> std::io::Result<()> {
    let (Some(repo), Some(n)) = (args.first(), args.get(1)) else {
        eprintln!("usage: synthetic-repo clone REPO_DIR N");
        std::process::exit(2);
    };
    let repo = Path::new(repo);
    let n: u64 = n.parse().expect("N is a number");
    let dir = repo.join("snapshots");
    let mut entries = std::fs::read_dir(&dir)?.collect::<Result<Vec<_>, _>>()?;
    assert_eq!(
        entries.len(),
        1,
        "clone wants a repository holding exactly one backup"
    );
    let packed = std::fs::read(entries.remove(0).path())?;
    let json = zstd::stream::decode_all(&packed[..])?;
    let original: Snapshot = serde_json::from_slice(&json).expect("a snapshot manifest");
    for i in 1..n {
        let mut s = original.clone();
        s.time -= chrono::Duration::hours(i64::try_from(i).expect("fits"));
        let json = serde_json::to_vec(&s).expect("serializes");
        let packed = zstd::bulk::compress(&json, 3)?;
        write(&dir.join(SnapshotId::of(&json).to_hex()), &packed)?;
    }
    println!("{n} backups in {}", repo.display());
    Ok(())
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("lookups") {
        lookups(&args[2..]);
        return Ok(());
    }
    if args.get(1).map(String::as_str) == Some("clone") {
        return clone(&args[2..]);
    }
    let (Some(repo), Some(chunks)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: synthetic-repo REPO_DIR CHUNKS");
        std::process::exit(2);
    };
    let repo = Path::new(repo);
    let chunks: u64 = chunks.parse().expect("CHUNKS is a number");
    assert!(
        repo.join("config").exists(),
        "run cairn init on {} first",
        repo.display()
    );
    let mut lists = Lists {
        current: Vec::new(),
        writer: PackWriter::new(),
        file_lists: Vec::new(),
        files: Vec::new(),
        file_chunks: 0,
    };
    let packs = chunks.div_ceil(ENTRIES_PER_PACK);
    let mut needed = 0u64;
    for p in 0..packs {
        let n = ENTRIES_PER_PACK.min(chunks - p * ENTRIES_PER_PACK);
        let pack = PackId(id_of(p, 1));
        let mut entries = Vec::with_capacity(n as usize);
        for i in 0..n {
            let id = id_of(p * ENTRIES_PER_PACK + i, 0);
            entries.push(IndexEntry {
                id: ChunkId(id),
                offset: i * u64::from(CHUNK),
                length: CHUNK,
                raw_length: CHUNK,
                codec: Codec::Raw,
            });
            if !(p % 10 == 0 && i % 2 == 0) {
                lists.push(repo, id)?;
                needed += 1;
            }
        }
        let pack_length = n * u64::from(CHUNK) + n * 49 + 64;
        let path = pack_path(repo, &pack);
        std::fs::create_dir_all(path.parent().expect("a parent"))?;
        std::fs::File::create(&path)?.set_len(pack_length)?;
        index(
            repo,
            IndexGroup {
                pack,
                pack_length,
                entries,
            },
        )?;
    }
    lists.end_file(repo)?;
    lists.flush_pack(repo)?;
    let snapshot = Snapshot {
        version: FORMAT_VERSION,
        time: chrono::DateTime::from_timestamp(1_780_000_000, 0).expect("a time"),
        host: "synthetic".into(),
        tags: Vec::new(),
        source: vec!["synthetic".into()],
        totals: SnapshotTotals {
            files: lists.files.len() as u64,
            bytes: needed * u64::from(CHUNK),
            chunks: needed,
            ..SnapshotTotals::default()
        },
        files: lists.files,
        qdrant: None,
    };
    let json = serde_json::to_vec(&snapshot).expect("serializes");
    let packed = zstd::bulk::compress(&json, 3)?;
    write(
        &repo.join("snapshots").join(SnapshotId::of(&json).to_hex()),
        &packed,
    )?;
    println!("{chunks} chunks in {packs} data packs; {needed} needed");
    Ok(())
}
