//! The local chunk index: a RocksDB map `ChunkId → PackLocation`.
//!
//! It is a **cache**. The repository's index files are the truth; this
//! database only makes lookups fast. It records which index files it has
//! ingested, so the engine can bring it up to date by ingesting the files it
//! lacks, or throw it away and rebuild it when the repository lost files it
//! had seen (or the schema changed).
//!
//! All calls block; run them off the async runtime.
//!
//! # Sharing one cache between processes
//! RocksDB admits one process per database. [`ChunkIndex::open_shared`]
//! therefore keeps a few **slots** under a cache directory, each a complete
//! database guarded by an advisory lock file (`<slot>.lock`, beside it so
//! that wiping a slot never drops its lock): a process takes the first free
//! slot, so concurrent backups on one host run side by side, each on a
//! consistent cache that it brings up to date from the repository. When
//! every slot is busy the process waits for the first one. A slot is only
//! ever wiped by the process holding its lock, and a database that RocksDB
//! reports as locked is never treated as corrupt.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use cairn_model::{ChunkId, IndexEntry, IndexGroup, IndexId, PackId, PackLocation};
use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, DB};

/// Bumped whenever the on-disk layout of this cache changes; a mismatch wipes it.
pub const SCHEMA_VERSION: u32 = 3;

const CF_CHUNKS: &str = "chunks";
const CF_FILES: &str = "files";
const CF_PACKS: &str = "packs";
const CF_META: &str = "meta";
const KEY_SCHEMA: &[u8] = b"schema";
/// Entries [`ChunkIndex::get_many_present`]'s walk steps over to reach the
/// next id before it seeks instead.
const STEPS_BEFORE_SEEK: usize = 8;
/// [`ChunkIndex::get_many_present`] walks batches of at least
/// 1/`WALK_SHARE` of the index and looks smaller ones up point by point.
const WALK_SHARE: u64 = 8;

/// Chunk index errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// RocksDB failed.
    #[error("chunk index at {path}: {source}")]
    Db {
        /// Database directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: rocksdb::Error,
    },
    /// A stored value could not be decoded.
    #[error("chunk index at {path} holds a malformed value: {reason}")]
    Corrupt {
        /// Database directory.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// Another process holds the database open (not a Cairn cache slot
    /// lock: an older or foreign process).
    #[error("chunk index at {path} is in use by another process ({reason}); it is left as it is")]
    Busy {
        /// Database directory.
        path: PathBuf,
        /// RocksDB's message.
        reason: String,
    },
    /// The directory could not be prepared.
    #[error("chunk index at {path}: {source}")]
    Io {
        /// Database directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The RocksDB chunk index.
pub struct ChunkIndex {
    db: DB,
    path: PathBuf,
    /// The slot lock held while the database is open (shared caches only).
    _lock: Option<std::fs::File>,
}

/// Databases kept under one cache directory for concurrent processes.
pub const MAX_SLOTS: usize = 8;

/// The directory of slot `n` under `dir`: `chunk-index`, then `chunk-index.N`.
fn slot_path(dir: &Path, n: usize) -> PathBuf {
    if n == 0 {
        dir.join("chunk-index")
    } else {
        dir.join(format!("chunk-index.{n}"))
    }
}

/// Positions into `ids`, in id order (RocksDB reads sorted keys faster).
fn id_order(ids: &[ChunkId]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_unstable_by_key(|&i| ids[i]);
    order
}

fn lock_path(slot: &Path) -> PathBuf {
    let mut name = slot.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    slot.with_file_name(name)
}

/// True for RocksDB's "another process has this database open".
fn is_lock_error(e: &rocksdb::Error) -> bool {
    let msg = e.to_string();
    msg.contains("lock") || msg.contains("Resource temporarily unavailable")
}

impl std::fmt::Debug for ChunkIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkIndex")
            .field("path", &self.path)
            .finish()
    }
}

impl ChunkIndex {
    /// Opens (or creates) the index at `path`. A database with another schema
    /// version, or one RocksDB cannot open, is deleted and recreated empty:
    /// it is only a cache.
    ///
    /// # Errors
    /// When even a fresh database cannot be created.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_locked(path, None)
    }

    /// Opens the first free slot under the cache directory `dir` (see the
    /// crate docs), waiting for slot 0 when all [`MAX_SLOTS`] are in use.
    ///
    /// # Errors
    /// The directory or lock files cannot be created; as [`ChunkIndex::open`].
    pub fn open_shared(dir: &Path) -> Result<Self> {
        let io = |source| Error::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let lock_file = |slot: &Path| {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(lock_path(slot))
                .map_err(io)
        };
        for n in 0..MAX_SLOTS {
            let slot = slot_path(dir, n);
            let lock = lock_file(&slot)?;
            match lock.try_lock() {
                Ok(()) => {
                    if n > 0 {
                        tracing::info!(slot = n, "the chunk index cache is in use by another process; using another slot");
                    }
                    return Self::open_locked(&slot, Some(lock));
                }
                Err(std::fs::TryLockError::WouldBlock) => {}
                Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
            }
        }
        let slot = slot_path(dir, 0);
        let lock = lock_file(&slot)?;
        tracing::warn!(
            "all {MAX_SLOTS} chunk index cache slots are in use by other processes; waiting"
        );
        lock.lock().map_err(io)?;
        Self::open_locked(&slot, Some(lock))
    }

    /// Empties the cache (its chunks, files and packs; the slot lock and
    /// schema stay), to be refilled from the repository's index files.
    ///
    /// # Errors
    /// RocksDB failures.
    pub fn clear(&self) -> Result<()> {
        // Keys are 32-byte ids or 64-hex-digit names: all sort below this.
        let end = [0xffu8; 65];
        let mut batch = WriteBatch::default();
        for cf in [CF_CHUNKS, CF_FILES, CF_PACKS] {
            batch.delete_range_cf(self.cf(cf), [].as_slice(), end.as_slice());
        }
        self.db.write(batch).map_err(|e| self.db_err(e))
    }

    fn open_locked(path: &Path, lock: Option<std::fs::File>) -> Result<Self> {
        match Self::open_raw(path, lock) {
            Ok(idx) if idx.schema()? == Some(SCHEMA_VERSION) => Ok(idx),
            Ok(idx) if idx.schema()?.is_none() && idx.is_empty()? => {
                idx.put_schema()?;
                Ok(idx)
            }
            Err((Error::Db { source, .. }, _)) if is_lock_error(&source) => Err(Error::Busy {
                path: path.to_path_buf(),
                reason: source.to_string(),
            }),
            Err((e @ Error::Io { .. }, _)) => Err(e),
            other => {
                tracing::info!(path = %path.display(), "chunk index cache is from another schema or unreadable; recreating");
                let lock = match other {
                    Ok(idx) => idx._lock,
                    Err((_, lock)) => lock,
                };
                Self::destroy(path)?;
                let idx = Self::open_raw(path, lock).map_err(|(e, _)| e)?;
                idx.put_schema()?;
                Ok(idx)
            }
        }
    }

    /// Opens the database; on failure hands the lock back with the error.
    #[allow(clippy::result_large_err)]
    fn open_raw(
        path: &Path,
        lock: Option<std::fs::File>,
    ) -> std::result::Result<Self, (Error, Option<std::fs::File>)> {
        if let Err(source) = std::fs::create_dir_all(path) {
            let e = Error::Io {
                path: path.to_path_buf(),
                source,
            };
            return Err((e, lock));
        }
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_open_files(256);
        opts.increase_parallelism(2);
        let mut chunk_opts = Options::default();
        // Keys are random hashes: point lookups only, bloom filters help misses.
        let mut block = rocksdb::BlockBasedOptions::default();
        block.set_bloom_filter(10.0, false);
        block.set_cache_index_and_filter_blocks(true);
        chunk_opts.set_block_based_table_factory(&block);
        chunk_opts.optimize_for_point_lookup(64);
        let cfs = vec![
            ColumnFamilyDescriptor::new(CF_CHUNKS, chunk_opts),
            ColumnFamilyDescriptor::new(CF_FILES, Options::default()),
            ColumnFamilyDescriptor::new(CF_PACKS, Options::default()),
            ColumnFamilyDescriptor::new(CF_META, Options::default()),
        ];
        match DB::open_cf_descriptors(&opts, path, cfs) {
            Ok(db) => Ok(Self {
                db,
                path: path.to_path_buf(),
                _lock: lock,
            }),
            Err(source) => Err((
                Error::Db {
                    path: path.to_path_buf(),
                    source,
                },
                lock,
            )),
        }
    }

    /// Deletes the database at `path`.
    ///
    /// # Errors
    /// When the directory exists but cannot be removed.
    pub fn destroy(path: &Path) -> Result<()> {
        match std::fs::remove_dir_all(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(Error::Io {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    fn db_err(&self, source: rocksdb::Error) -> Error {
        Error::Db {
            path: self.path.clone(),
            source,
        }
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("invariant: column families are created at open")
    }

    fn schema(&self) -> Result<Option<u32>> {
        let v = self
            .db
            .get_cf(self.cf(CF_META), KEY_SCHEMA)
            .map_err(|e| self.db_err(e))?;
        Ok(v.and_then(|b| b.try_into().ok()).map(u32::from_le_bytes))
    }

    fn put_schema(&self) -> Result<()> {
        self.db
            .put_cf(self.cf(CF_META), KEY_SCHEMA, SCHEMA_VERSION.to_le_bytes())
            .map_err(|e| self.db_err(e))
    }

    fn is_empty(&self) -> Result<bool> {
        let mut it = self.db.raw_iterator_cf(self.cf(CF_CHUNKS));
        it.seek_to_first();
        Ok(!it.valid())
    }

    /// Looks up many chunks at once (one batched RocksDB `multi_get`, keys
    /// in sorted order so RocksDB need not sort them).
    ///
    /// # Errors
    /// RocksDB failures or malformed values.
    pub fn get_many(&self, ids: &[ChunkId]) -> Result<Vec<Option<PackLocation>>> {
        let order = id_order(ids);
        let found = self.db.batched_multi_get_cf(
            self.cf(CF_CHUNKS),
            order.iter().map(|&i| ids[i].as_bytes().as_slice()),
            true,
        );
        let mut out = vec![None; ids.len()];
        for (&i, r) in order.iter().zip(found) {
            let v = r.map_err(|e| self.db_err(e))?;
            out[i] = v.map(|b| self.location(&b)).transpose()?;
        }
        Ok(out)
    }

    /// A stored location, decoded.
    fn location(&self, value: &[u8]) -> Result<PackLocation> {
        PackLocation::decode(value).map_err(|e| Error::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        })
    }

    /// Like [`ChunkIndex::get_many`], for ids expected to be present (a
    /// restore's, a check's). When the ids are at least an eighth of the
    /// index (a restore of a recent snapshot), one iterator walks them in
    /// order, stepping over a few entries to reach the next id: close to one
    /// ordered scan, several times cheaper a chunk than point lookups. Fewer
    /// ids are looked up one by one as [`ChunkIndex::get_many`] does: an
    /// iterator's seek consults every level of the tree, where a point
    /// lookup's bloom filters skip most of them.
    ///
    /// # Errors
    /// As [`ChunkIndex::get_many`].
    pub fn get_many_present(&self, ids: &[ChunkId]) -> Result<Vec<Option<PackLocation>>> {
        if (ids.len() as u64).saturating_mul(WALK_SHARE) < self.estimate_len()? {
            return self.get_many(ids);
        }
        self.walk(ids)
    }

    /// Looks `ids` up with one iterator walked in id order.
    fn walk(&self, ids: &[ChunkId]) -> Result<Vec<Option<PackLocation>>> {
        let order = id_order(ids);
        let mut out = vec![None; ids.len()];
        let mut it = self.db.raw_iterator_cf(self.cf(CF_CHUNKS));
        if let Some(&first) = order.first() {
            it.seek(ids[first].as_bytes());
        }
        for &i in &order {
            let want = ids[i].as_bytes().as_slice();
            let before = |it: &rocksdb::DBRawIteratorWithThreadMode<'_, DB>| {
                it.valid() && it.key().is_some_and(|k| k < want)
            };
            let mut steps = 0;
            while steps < STEPS_BEFORE_SEEK && before(&it) {
                it.next();
                steps += 1;
            }
            if before(&it) {
                it.seek(want);
            }
            if it.valid() && it.key() == Some(want) {
                let v = it.value().expect("invariant: a valid iterator has a value");
                out[i] = Some(self.location(v)?);
            }
        }
        it.status().map_err(|e| self.db_err(e))?;
        Ok(out)
    }

    /// Looks up one chunk.
    ///
    /// # Errors
    /// As [`ChunkIndex::get_many`].
    pub fn get(&self, id: &ChunkId) -> Result<Option<PackLocation>> {
        Ok(self.get_many(std::slice::from_ref(id))?.pop().flatten())
    }

    /// Records the contents of one repository index file atomically (one
    /// `WriteBatch`): its entries and its name.
    ///
    /// # Errors
    /// RocksDB failures.
    pub fn ingest(&self, index_file: &IndexId, groups: &[IndexGroup]) -> Result<()> {
        self.ingest_superseding(index_file, &[], groups)
    }

    /// Like [`ChunkIndex::ingest`], for an index file that supersedes
    /// others: their names are recorded with it.
    ///
    /// # Errors
    /// RocksDB failures.
    pub fn ingest_superseding(
        &self,
        index_file: &IndexId,
        supersedes: &[IndexId],
        groups: &[IndexGroup],
    ) -> Result<()> {
        let mut names = Vec::with_capacity(supersedes.len() * 32);
        for n in supersedes {
            names.extend_from_slice(&n.0);
        }
        let mut batch = WriteBatch::default();
        let chunks = self.cf(CF_CHUNKS);
        // Inserted in id order: the memtable's skip list then finds each
        // insertion point next to the last one instead of searching from
        // the top. The sort is stable, so of an id named twice the later
        // location still wins.
        let mut entries: Vec<(&IndexGroup, &IndexEntry)> = groups
            .iter()
            .flat_map(|g| g.entries.iter().map(move |e| (g, e)))
            .collect();
        entries.sort_by(|a, b| a.1.id.as_bytes().cmp(b.1.id.as_bytes()));
        for (g, e) in entries {
            batch.put_cf(chunks, e.id.as_bytes(), e.locate(g.pack).encode());
        }
        for g in groups {
            batch.put_cf(
                self.cf(CF_PACKS),
                g.pack.as_bytes(),
                g.pack_length.to_le_bytes(),
            );
        }
        batch.put_cf(self.cf(CF_FILES), index_file.to_hex().as_bytes(), names);
        self.db.write(batch).map_err(|e| self.db_err(e))
    }

    /// Names that ingested index files supersede.
    ///
    /// # Errors
    /// RocksDB failures.
    pub fn superseded_files(&self) -> Result<HashSet<IndexId>> {
        let mut out = HashSet::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_FILES), rocksdb::IteratorMode::Start)
        {
            let (_, v) = item.map_err(|e| self.db_err(e))?;
            out.extend(
                v.chunks_exact(32)
                    .map(|c| IndexId(c.try_into().expect("invariant: 32 bytes"))),
            );
        }
        Ok(out)
    }

    /// Forgets that `names` were ingested (they were superseded and deleted;
    /// their still-needed entries came with the files that superseded them).
    ///
    /// # Errors
    /// RocksDB failures.
    pub fn forget_files(&self, names: &[IndexId]) -> Result<()> {
        let mut batch = WriteBatch::default();
        for n in names {
            batch.delete_cf(self.cf(CF_FILES), n.to_hex().as_bytes());
        }
        self.db.write(batch).map_err(|e| self.db_err(e))
    }

    /// Names of the index files ingested so far.
    ///
    /// # Errors
    /// RocksDB failures.
    pub fn ingested_files(&self) -> Result<HashSet<IndexId>> {
        let mut out = HashSet::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_FILES), rocksdb::IteratorMode::Start)
        {
            let (k, _) = item.map_err(|e| self.db_err(e))?;
            let id = std::str::from_utf8(&k)
                .ok()
                .and_then(|k| k.parse().ok())
                .ok_or_else(|| Error::Corrupt {
                    path: self.path.clone(),
                    reason: format!("ingested index file name {}", String::from_utf8_lossy(&k)),
                })?;
            out.insert(id);
        }
        Ok(out)
    }

    /// Every pack some ingested index file names.
    ///
    /// # Errors
    /// RocksDB failures.
    pub fn packs(&self) -> Result<HashSet<PackId>> {
        let mut out = HashSet::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_PACKS), rocksdb::IteratorMode::Start)
        {
            let (k, _) = item.map_err(|e| self.db_err(e))?;
            if k.len() == 32 {
                out.insert(PackId::from_slice(&k));
            }
        }
        Ok(out)
    }

    /// Removes every chunk located in one of `gone` (packs that no longer
    /// exist), so that nothing deduplicates against them; returns how many
    /// chunks were removed. Scans the whole index: meant for the rare case
    /// of packs deleted behind Cairn's back.
    ///
    /// # Errors
    /// RocksDB failures.
    pub fn forget_packs(&self, gone: &HashSet<PackId>) -> Result<u64> {
        let chunks = self.cf(CF_CHUNKS);
        let mut batch = WriteBatch::default();
        let mut removed = 0;
        for item in self.db.iterator_cf(chunks, rocksdb::IteratorMode::Start) {
            let (k, v) = item.map_err(|e| self.db_err(e))?;
            if v.len() >= 32 && gone.contains(&PackId::from_slice(&v)) {
                batch.delete_cf(chunks, k);
                removed += 1;
            }
        }
        for p in gone {
            batch.delete_cf(self.cf(CF_PACKS), p.as_bytes());
        }
        self.db.write(batch).map_err(|e| self.db_err(e))?;
        Ok(removed)
    }

    /// Number of chunks (RocksDB's estimate).
    ///
    /// # Errors
    /// RocksDB failures.
    pub fn estimate_len(&self) -> Result<u64> {
        Ok(self
            .db
            .property_int_value_cf(self.cf(CF_CHUNKS), "rocksdb.estimate-num-keys")
            .map_err(|e| self.db_err(e))?
            .unwrap_or(0))
    }

    /// The database directory.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The id of test index file `n`.
    fn file(n: u8) -> IndexId {
        IndexId([n; 32])
    }
    use cairn_model::{Codec, IndexEntry};

    fn group(n: u8) -> IndexGroup {
        IndexGroup {
            pack: PackId::of(&[n]),
            pack_length: 100,
            entries: (0..3u8)
                .map(|i| IndexEntry {
                    id: ChunkId::of(&[n, i]),
                    offset: 16 + u64::from(i),
                    length: 1,
                    raw_length: 2,
                    codec: Codec::Raw,
                })
                .collect(),
        }
    }

    #[test]
    fn ingest_lookup_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("idx");
        {
            let idx = ChunkIndex::open(&path).expect("opens");
            idx.ingest(&file(1), &[group(1)]).expect("ingests");
            let hits = idx
                .get_many(&[
                    ChunkId::of(&[1, 0]),
                    ChunkId::of(&[9, 9]),
                    ChunkId::of(&[1, 2]),
                ])
                .expect("looks up");
            assert_eq!(hits[0].expect("present").pack, PackId::of(&[1]));
            assert!(hits[1].is_none());
            assert_eq!(hits[2].expect("present").offset, 18);
        }
        let idx = ChunkIndex::open(&path).expect("reopens");
        assert!(idx.get(&ChunkId::of(&[1, 1])).expect("looks up").is_some());
        assert_eq!(
            idx.ingested_files().expect("lists"),
            HashSet::from([file(1)])
        );
    }

    #[test]
    fn present_lookups_find_what_point_lookups_find() {
        let dir = tempfile::tempdir().expect("tempdir");
        let idx = ChunkIndex::open(&dir.path().join("idx")).expect("opens");
        let groups: Vec<IndexGroup> = (0..200u8).map(group).collect();
        idx.ingest(&file(1), &groups[..100]).expect("ingests");
        idx.ingest(&file(2), &groups[100..]).expect("ingests");
        // Deleted entries (a forgotten pack) must not be found either.
        idx.forget_packs(&HashSet::from([PackId::of(&[7])]))
            .expect("forgets");
        let present: Vec<ChunkId> = groups
            .iter()
            .flat_map(|g| g.entries.iter().map(|e| e.id))
            .collect();
        let absent: Vec<ChunkId> = (0..300u16).map(|i| ChunkId::of(&i.to_le_bytes())).collect();
        let cases: Vec<Vec<ChunkId>> = vec![
            present.clone(),                                        // dense: steps
            present.iter().step_by(37).copied().collect(),          // sparse: seeks
            present.iter().chain(&absent).copied().rev().collect(), // mixed
            absent.clone(),
            [present[5], present[5], absent[0], present[5]].to_vec(), // repeats
            Vec::new(),
        ];
        for ids in cases {
            let expected = idx.get_many(&ids).expect("looks up");
            assert_eq!(
                idx.walk(&ids).expect("walks"),
                expected,
                "{} ids",
                ids.len()
            );
            assert_eq!(idx.get_many_present(&ids).expect("looks up"), expected);
        }
        let forgotten = ChunkId::of(&[7, 1]);
        assert_eq!(idx.walk(&[forgotten]).expect("walks"), vec![None]);
    }

    #[test]
    fn concurrent_openers_get_their_own_slots_and_nothing_is_wiped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = ChunkIndex::open_shared(dir.path()).expect("opens slot 0");
        a.ingest(&file(1), &[group(1)]).expect("ingests");
        let b = ChunkIndex::open_shared(dir.path()).expect("opens slot 1");
        assert_ne!(a.path(), b.path());
        assert!(b.ingested_files().expect("lists").is_empty());
        b.ingest(&file(2), &[group(2)]).expect("ingests");
        drop(a);
        drop(b);
        let again = ChunkIndex::open_shared(dir.path()).expect("slot 0 is free again");
        assert_eq!(again.path(), slot_path(dir.path(), 0));
        assert!(again
            .get(&ChunkId::of(&[1, 0]))
            .expect("looks up")
            .is_some());
        again.clear().expect("clears");
        assert!(again.ingested_files().expect("lists").is_empty());
        assert!(again
            .get(&ChunkId::of(&[1, 0]))
            .expect("looks up")
            .is_none());
        assert!(again.packs().expect("packs").is_empty());
    }

    #[test]
    fn a_database_open_elsewhere_is_reported_busy_not_wiped() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Opened without the slot protocol, as a foreign process would.
        let foreign = ChunkIndex::open(&slot_path(dir.path(), 0)).expect("opens");
        foreign.ingest(&file(1), &[group(1)]).expect("ingests");
        let err = ChunkIndex::open_shared(dir.path()).expect_err("busy");
        assert!(matches!(err, Error::Busy { .. }), "{err}");
        assert!(foreign
            .get(&ChunkId::of(&[1, 0]))
            .expect("looks up")
            .is_some());
        drop(foreign);
        let idx = ChunkIndex::open_shared(dir.path()).expect("opens");
        assert!(idx.ingested_files().expect("lists").contains(&file(1)));
    }

    #[test]
    fn forgotten_packs_lose_their_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let idx = ChunkIndex::open(&dir.path().join("idx")).expect("opens");
        idx.ingest(&file(1), &[group(1), group(2)])
            .expect("ingests");
        assert_eq!(idx.packs().expect("packs").len(), 2);
        let gone = HashSet::from([PackId::of(&[1])]);
        assert_eq!(idx.forget_packs(&gone).expect("forgets"), 3);
        assert!(idx.get(&ChunkId::of(&[1, 0])).expect("looks up").is_none());
        assert!(idx.get(&ChunkId::of(&[2, 0])).expect("looks up").is_some());
        assert_eq!(
            idx.packs().expect("packs"),
            HashSet::from([PackId::of(&[2])])
        );
    }

    #[test]
    fn garbage_directory_is_recreated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("idx");
        std::fs::create_dir_all(&path).expect("mkdir");
        std::fs::write(path.join("CURRENT"), b"not a manifest name\n").expect("write");
        let idx = ChunkIndex::open(&path).expect("recreated");
        assert!(idx.ingested_files().expect("lists").is_empty());
    }
}
