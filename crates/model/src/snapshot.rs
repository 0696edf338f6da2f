//! Snapshot manifests, stored as `snapshots/<id>`.

use serde::{Deserialize, Serialize};

use crate::{ChunkId, ClusterRecord};

/// One backed-up file and the ordered chunks that make it up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the snapshot root, `/`-separated.
    pub path: String,
    /// Size in bytes; equals the sum of the chunks' raw lengths.
    pub size: u64,
    /// Unix permission bits.
    pub mode: u32,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
    /// Chunk ids in file order, for files of at most [`INLINE_CHUNKS`] chunks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<ChunkId>,
    /// For larger files: ids of chunk-list blobs, in order. Each list blob is
    /// stored in packs like any chunk and holds the concatenated 32-byte ids
    /// of a run of the file's chunks; lists are cut by content (see
    /// [`ends_chunk_list`]), so unchanged runs of a file yield identical list
    /// blobs and a backup's metadata grows with what changed, not with the
    /// file's size.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunk_lists: Vec<ChunkId>,
    /// Raw bytes of the chunks this backup added for this file (0 when
    /// everything was already stored).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub new_bytes: u64,
    /// The same, as stored (after compression).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub new_stored_bytes: u64,
    /// Set by `cairn repair snapshots` on a file whose data is not all in
    /// the repository: why. A restore names such files and skips them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub damaged: Option<String>,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Requests a backup made of the storage, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requests {
    /// PUT-class requests (each multipart part counts; so do lease renewals).
    pub puts: u64,
    /// GET requests (whole and ranged).
    pub gets: u64,
    /// LIST calls.
    pub lists: u64,
    /// HEAD requests.
    pub heads: u64,
    /// DELETE requests.
    pub deletes: u64,
}

/// Files with at most this many chunks list them inline in the manifest.
pub const INLINE_CHUNKS: usize = 64;
/// Most chunk ids in one list blob.
pub const MAX_LIST_CHUNKS: usize = 4096;

/// True when a chunk list should end after `id`, its `len`-th entry: on
/// average every 1024 ids (when the id's first two bytes, little-endian, are
/// 0 modulo 1024), and always at [`MAX_LIST_CHUNKS`].
#[must_use]
pub fn ends_chunk_list(id: &ChunkId, len: usize) -> bool {
    len >= MAX_LIST_CHUNKS || u16::from_le_bytes([id.0[0], id.0[1]]).is_multiple_of(1024)
}

/// Totals recorded when the snapshot was taken.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotTotals {
    /// Number of files.
    pub files: u64,
    /// Logical bytes of all files.
    pub bytes: u64,
    /// Chunk references (with repeats).
    pub chunks: u64,
    /// Chunks this backup added to the repository.
    pub new_chunks: u64,
    /// Raw bytes of the new chunks.
    pub new_bytes: u64,
    /// Bytes of the new chunks as stored (after compression).
    pub new_stored_bytes: u64,
    /// Packs this backup wrote.
    pub new_packs: u64,
    /// Requests it made (absent in manifests of older versions).
    #[serde(default)]
    pub requests: Requests,
}

/// A snapshot manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Repository format version the manifest was written with.
    pub version: u32,
    /// When the backup started (written `2026-11-25T04:00:00.000000Z`).
    #[serde(with = "crate::time::micros")]
    pub time: crate::Time,
    /// Host that ran the backup.
    pub host: String,
    /// Free-form tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// What was backed up, as given on the command line.
    pub source: Vec<String>,
    /// Files, in the order they were read.
    pub files: Vec<FileEntry>,
    /// Totals.
    pub totals: SnapshotTotals,
    /// For a backup of a live Qdrant cluster: what was read, and everything
    /// a restore into a cluster needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qdrant: Option<ClusterRecord>,
}

impl Snapshot {
    /// The source this snapshot belongs to: backups of the same source form
    /// one series, and `latest` picks within a series. A cluster backup's
    /// source is its record's (the node URLs given and the collection
    /// filter); a backup of files or standard input belongs to the host that
    /// made it (`files@HOST`), whatever paths it named, since snapshot file
    /// names change every night.
    #[must_use]
    pub fn source_key(&self) -> String {
        match &self.qdrant {
            Some(r) => r.source.clone(),
            None => format!("files@{}", self.host),
        }
    }

    /// True for a backup of a live Qdrant cluster.
    #[must_use]
    pub fn is_cluster(&self) -> bool {
        self.qdrant.is_some()
    }
}
