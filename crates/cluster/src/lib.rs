//! Backups and restores of live Qdrant clusters, built on the engine's
//! public seams: a backup is an ingest run whose inputs are shard snapshot
//! streams (re-opened on another replica when one breaks) and whose
//! snapshot carries a [`ClusterRecord`](cairn_model::ClusterRecord); a
//! restore streams each shard file through a [`FileStreamer`] into an upload
//! to the node that holds the shard. The engine knows nothing of Qdrant.
//!
//! - [`topology`]: the nodes reached, their versions, shard placement;
//! - [`backup`]: [`backup()`], one snapshot of every shard;
//! - [`delta`]: delta pulls, a shard read through partial snapshots;
//! - [`restore`]: [`restore()`], into a cluster of any size, verified.
//!
//! [`FileStreamer`]: cairn_engine::seams::FileStreamer

pub mod backup;
pub mod delta;
pub mod drill;
mod error;
mod probe;
pub mod restore;
pub mod topology;

pub use backup::{backup, ClusterBackupOptions, ClusterBackupSummary, SnapshotMethod};
pub use error::{Error, Remedy, Result};
pub use restore::{
    restore, ClusterRestoreOptions, ClusterRestoreSummary, PointRange, Rename, RestoredCollection,
    RestoredShard, SwappedAlias,
};
pub use topology::QdrantTarget;

pub use cairn_qdrant::{
    ApiKey, ClientOptions as QdrantClientOptions, Error as QdrantError,
    ErrorKind as QdrantErrorKind,
};
