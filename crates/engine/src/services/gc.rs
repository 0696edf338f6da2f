//! What garbage collection did: the result types a prune returns, which a
//! forget that prunes afterwards carries too, and `unlock`'s.

use chrono::{DateTime, Utc};

/// What a mark found and decided.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct PrunePlanSummary {
    /// Snapshots read.
    pub snapshots: usize,
    /// Packs in the repository (not counting those earlier plans condemned).
    pub packs: usize,
    /// Bytes in them.
    pub pack_bytes: u64,
    /// Bytes of blobs some snapshot needs.
    pub live_bytes: u64,
    /// Packs condemned because nothing needs them (or no index names them).
    pub packs_unused: usize,
    /// Packs repacked (their live blobs copied, then condemned).
    pub packs_repacked: usize,
    /// Bytes that the condemned packs take.
    pub bytes_to_delete: u64,
    /// Bytes read to repack.
    pub bytes_to_download: u64,
    /// Bytes written by repacking (packs and index files).
    pub bytes_to_upload: u64,
    /// Storage requests the prune makes: reads, writes, deletes.
    pub requests: u64,
    /// Index files superseded.
    pub index_superseded: usize,
    /// Entries in the index files read.
    #[serde(default)]
    pub index_entries: u64,
    /// Distinct chunks (and chunk lists) the snapshots need.
    #[serde(default)]
    pub chunks_needed: u64,
    /// Bytes of sorted runs the mark wrote to local disk (temporary).
    #[serde(default)]
    pub scratch_bytes: u64,
    /// Snapshot files whose chunks are not all in the repository.
    pub damaged: Vec<String>,
    /// Packs that would be deleted or repacked but are under Object Lock:
    /// left as they are (and indexed) until a prune after their date.
    #[serde(default)]
    pub packs_locked: usize,
    /// The latest date one of them is locked until.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked_until: Option<DateTime<Utc>>,
    /// The plan written (not in a dry run, not when there is nothing to do).
    pub plan: Option<String>,
}

/// What a sweep did to one plan.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct SweepReport {
    /// The plan.
    pub plan: String,
    /// Packs deleted.
    pub packs_deleted: usize,
    /// Their bytes.
    pub bytes_deleted: u64,
    /// Condemned packs a newer snapshot needs, kept.
    pub packs_spared: usize,
    /// Index files deleted.
    pub index_deleted: usize,
    /// Condemned packs left because a lock was extended meanwhile.
    #[serde(default)]
    pub packs_locked: usize,
}

/// What `unlock` did (`unlock --json` prints exactly this).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct UnlockSummary {
    /// Lapsed leases deleted, described.
    pub removed: Vec<String>,
    /// Live leases left alone, described.
    pub live: Vec<String>,
}

/// A plan left for a later prune.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Deferred {
    /// The plan.
    pub plan: String,
    /// Why it was not swept yet.
    pub why: String,
}

/// What a prune did (`prune --json` prints exactly this; the mark's fields
/// at the top level).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct PruneSummary {
    /// The mark.
    #[serde(flatten)]
    pub mark: PrunePlanSummary,
    /// Plans swept.
    pub swept: Vec<SweepReport>,
    /// Plans left for a later prune, and why.
    pub deferred: Vec<Deferred>,
    /// Nothing was changed.
    pub dry_run: bool,
}
