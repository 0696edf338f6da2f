//! Types shared by every Cairn crate: typed BLAKE3 identifiers, the repository
//! configuration, snapshot manifests and the binary index records.
//!
//! This crate does no I/O. Everything that ends up in a repository is defined
//! here, so the on-disk format has one home (see `docs/format.md`).

mod cluster;
mod config;
mod gc;
mod id;
mod index;
mod run;
mod snapshot;
pub mod time;

pub use cluster::{
    shard_file, shard_of, AliasRecord, ClusterRecord, CollectionRecord, DeltaState, DrillRecord,
    MemberSpan, NodeRecord, Probe, ReplicaRecord, ShardRecord, ShardStatus,
};
pub use config::{
    ChunkSizes, ChunkerParams, Compression, Encryption, MemberSizes, ObjectLock, RepoConfig,
    DEFAULT_VECTOR_AVG, ENCRYPTED_VERSION, ENCRYPTION_CIPHERS, FORMAT_VERSION, PACK_SIZES,
    ZSTD_LEVELS,
};
pub use gc::{GcPlan, Lease, LeaseKind, NodeFile};
pub use id::{ChunkHasher, ChunkId, IdParseError, IndexId, PackId, RepoId, SnapshotId};
pub use index::{
    Codec, IndexEntry, IndexFile, IndexGroup, PackLocation, INDEX_ENTRY_LEN, MAX_BLOB_LEN,
};
pub use run::{backup_job, parse_run_name, run_name, valid_job_name, RunRecord, RunState, Trigger};
pub use snapshot::{
    ends_chunk_list, FileEntry, Requests, Snapshot, SnapshotTotals, INLINE_CHUNKS, MAX_LIST_CHUNKS,
};
pub use time::Time;

/// Errors raised while decoding repository files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes are not a well-formed file of the expected kind.
    #[error("malformed {kind}: {reason}")]
    Malformed {
        /// Which file kind was being decoded.
        kind: &'static str,
        /// What was wrong.
        reason: String,
    },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
