//! The local chunk index: a RocksDB map `ChunkId → PackLocation`.
//!
//! It is a **cache**. The repository's index files are the truth; this
//! database only makes lookups fast. It records which index files it has
//! ingested, so the engine can bring it up to date by ingesting the files it
//! lacks, or throw it away and rebuild it when the repository lost files it
//! had seen (or the schema changed).
//!
//! All calls block; run them off the async runtime.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use cairn_model::{ChunkId, IndexGroup, PackLocation};
use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, DB};

/// Bumped whenever the on-disk layout of this cache changes; a mismatch wipes it.
pub const SCHEMA_VERSION: u32 = 1;

const CF_CHUNKS: &str = "chunks";
const CF_FILES: &str = "files";
const CF_META: &str = "meta";
const KEY_SCHEMA: &[u8] = b"schema";

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
        match Self::open_raw(path) {
            Ok(idx) if idx.schema()? == Some(SCHEMA_VERSION) => Ok(idx),
            Ok(idx) if idx.schema()?.is_none() && idx.is_empty()? => {
                idx.put_schema()?;
                Ok(idx)
            }
            other => {
                tracing::info!(path = %path.display(), "chunk index cache is from another schema or unreadable; recreating");
                drop(other);
                Self::destroy(path)?;
                let idx = Self::open_raw(path)?;
                idx.put_schema()?;
                Ok(idx)
            }
        }
    }

    fn open_raw(path: &Path) -> Result<Self> {
        std::fs::create_dir_all(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
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
            ColumnFamilyDescriptor::new(CF_META, Options::default()),
        ];
        let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(|source| Error::Db {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            db,
            path: path.to_path_buf(),
        })
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

    /// Looks up many chunks at once (one RocksDB `multi_get`).
    ///
    /// # Errors
    /// RocksDB failures or malformed values.
    pub fn get_many(&self, ids: &[ChunkId]) -> Result<Vec<Option<PackLocation>>> {
        let cf = self.cf(CF_CHUNKS);
        let keys = ids.iter().map(|id| (cf, id.as_bytes().as_slice()));
        self.db
            .multi_get_cf(keys)
            .into_iter()
            .map(|r| {
                let v = r.map_err(|e| self.db_err(e))?;
                v.map(|b| {
                    PackLocation::decode(&b).map_err(|e| Error::Corrupt {
                        path: self.path.clone(),
                        reason: e.to_string(),
                    })
                })
                .transpose()
            })
            .collect()
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
    pub fn ingest(&self, index_file: &str, groups: &[IndexGroup]) -> Result<()> {
        let mut batch = WriteBatch::default();
        let chunks = self.cf(CF_CHUNKS);
        for g in groups {
            for e in &g.entries {
                batch.put_cf(chunks, e.id.as_bytes(), e.locate(g.pack).encode());
            }
        }
        batch.put_cf(self.cf(CF_FILES), index_file.as_bytes(), []);
        self.db.write(batch).map_err(|e| self.db_err(e))
    }

    /// Names of the index files ingested so far.
    ///
    /// # Errors
    /// RocksDB failures.
    pub fn ingested_files(&self) -> Result<HashSet<String>> {
        let mut out = HashSet::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_FILES), rocksdb::IteratorMode::Start)
        {
            let (k, _) = item.map_err(|e| self.db_err(e))?;
            out.insert(String::from_utf8_lossy(&k).into_owned());
        }
        Ok(out)
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
    use cairn_model::{Codec, IndexEntry, PackId};

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
            idx.ingest("f1", &[group(1)]).expect("ingests");
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
            HashSet::from(["f1".to_string()])
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
