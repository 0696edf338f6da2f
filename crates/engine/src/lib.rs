//! The Cairn engine: a [`Repository`] façade and the backup, restore and
//! reporting commands built from the chunker, pack, index and store crates.
//!
//! # Model
//! A repository holds packs (chunk data), index files (which chunks each pack
//! holds) and snapshot manifests (which chunks make up each file). Writers
//! follow one order: a pack is durable before the index file naming it, and
//! index files are durable before the manifest that uses them. Everything but
//! the config is create-only or content-addressed, so a crash or a concurrent
//! writer never leaves a manifest pointing at missing data.
//!
//! The local RocksDB chunk index is a cache of the index files, kept under the
//! user's cache directory and rebuilt automatically when missing or stale.
//!
//! # Threads
//! CPU work (chunking, hashing, compression, verification) runs on dedicated
//! threads and a sized rayon pool; the tokio runtime only drives storage I/O.

mod commands;
mod error;
mod host;
mod lease;
mod progress;
pub mod read;
mod repository;
pub mod retention;
mod services;

pub use commands::backup::BackupSource;
pub use commands::forget::{
    Action as ForgetAction, ForgetGroup, ForgetItem, ForgetOptions, ForgetSummary, GroupBy,
    LockedSnapshot,
};
pub use commands::lock::{LockExtendOptions, LockExtendSummary, SnapshotLock};
pub use commands::prune::PruneOptions;
pub use commands::repair::{RepairIndexSummary, RepairSnapshotsSummary, Repaired};
pub use commands::report::{
    describe_policy, Added, BackupRow, ClassCost, ClassProjection, ClassRestore, Expiring, Growth,
    ProjectionPoint, Report, ReportOptions, RestoreCost, ShardAdded, SourceRow, Totals,
};
pub use commands::restore::RestoreOptions;
pub use commands::snapshots::{ClusterSummary, CollectionSummary, SnapshotKind, SnapshotRow};
pub use commands::stats::RepoStats;
pub use error::{Error, Result};
pub use lease::ReadLease;
pub use progress::{NoProgress, Progress};
pub use repository::{
    InitOptions, InitSummary, KeyInfo, NewKey, Repository, SnapshotFilter, SnapshotInfo,
};
pub use retention::RetentionPolicy;
pub use services::damage::{CheckReport, DamagedFile, Problem, ProblemKind, ReadData};
pub use services::gc::{Deferred, PrunePlanSummary, PruneSummary, SweepReport, UnlockSummary};
pub use services::history::{draft as draft_run, Begin, RunHandle, MAX_RUN_LEASE};
pub use services::ingest::{BackupOptions, BackupSummary, LOCAL_UPLOADS, OBJECT_STORE_UPLOADS};
pub use services::materialize::RestoreSummary;

pub use cairn_cost::PriceTable;
pub use cairn_model::{
    backup_job, valid_job_name, ChunkSizes, ChunkerParams, ClusterRecord, CollectionRecord,
    Compression, MemberSizes, ObjectLock, RepoConfig, RunRecord, RunState, ShardRecord,
    ShardStatus, Snapshot, SnapshotId, SnapshotTotals, Time, Trigger, FORMAT_VERSION,
};
pub use cairn_store::throttled::TokenBucket;
pub use cairn_store::{Error as StoreError, RepoStore};

/// The seams a front end above the engine builds on (the cluster crate's
/// backup and restore of a live Qdrant cluster): inputs that yield streams
/// and can be opened again, the ingest run and the commit of its snapshot
/// (carrying the front end's own source record), and restore sinks.
pub mod seams {
    pub use crate::host::hostname;
    pub use crate::services::ingest::{
        Commit, Input, InputOutcome, InputSource, RunResult, RunShape, Stop, StreamInput, Tail,
    };
    pub use crate::services::materialize::{FileStreamer, Sink};
}
