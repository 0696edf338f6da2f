//! Garbage collection records: leases of running writers (`locks/<id>`) and
//! prune plans (`gc/<id>`). The protocol is specified in docs/format.md.

use serde::{Deserialize, Serialize};

use crate::{PackId, SnapshotId};

/// A lease held by a running writer: valid while the storage's clock is
/// within `lease_secs` of the object's last write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// `backup` or `prune`.
    pub kind: String,
    /// Host of the process.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// The storage's time of the lease's first write (RFC 3339), once known;
    /// before that, the first write is the current version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    /// Seconds the lease is valid after each write.
    pub lease_secs: u64,
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
    pub superseded_index: Vec<String>,
    /// Every snapshot the prune saw; others are newer and may still use a
    /// condemned pack.
    pub snapshots: Vec<SnapshotId>,
}
