//! Garbage collection records: leases of running writers (`locks/<id>`) and
//! prune plans (`gc/<id>`). The protocol is specified in docs/format.md.

use serde::{Deserialize, Serialize};

use crate::{IndexId, PackId, SnapshotId};

/// A lease held by a running writer: valid while the storage's clock is
/// within `lease_secs` of the object's last write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// What the writer is doing.
    pub kind: LeaseKind,
    /// Host of the process.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// The storage's time of the lease's first write, once known; before
    /// that, the first write is the current version.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::time::offset::option::serialize",
        deserialize_with = "crate::time::offset::option::deserialize_lenient"
    )]
    pub started: Option<crate::Time>,
    /// Seconds the lease is valid after each write.
    pub lease_secs: u64,
}

/// What a lease's writer is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseKind {
    /// A backup: it may deduplicate against any pack it saw.
    Backup,
    /// A prune (one at a time, `locks/prune`).
    Prune,
    /// A reader of packs (a restore, `dump`, `check --read-data`): a sweep
    /// waits for it as for a backup, so no pack it located goes away.
    Reader,
    /// A kind written by a newer release; treated like a backup.
    #[serde(other)]
    Other,
}

impl std::fmt::Display for LeaseKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Backup => "backup",
            Self::Prune => "prune",
            Self::Reader => "reader",
            Self::Other => "other",
        })
    }
}

/// A prune's plan: what it condemned, to be deleted once no backup that
/// could still use it is running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcPlan {
    /// Host that wrote it.
    pub host: String,
    /// Packs no snapshot known to the prune needs (or repacked elsewhere).
    pub condemned_packs: Vec<PackId>,
    /// Index files replaced by the prune's own.
    pub superseded_index: Vec<IndexId>,
    /// Every snapshot the prune saw; others are newer and may still use a
    /// condemned pack.
    pub snapshots: Vec<SnapshotId>,
}

/// A snapshot file a cluster backup made on a Qdrant node
/// (`pending/<id>`), recorded right after the node made it and removed
/// once the file is deleted: a run killed in between leaves the record,
/// and the next cluster backup deletes the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFile {
    /// Host of the process that made it.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// The node's URL.
    pub node: String,
    /// Collection.
    pub collection: String,
    /// Shard.
    pub shard: u32,
    /// The snapshot file's name on the node.
    pub file: String,
}
