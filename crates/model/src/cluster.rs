//! The cluster backup record: what a backup of a live Qdrant cluster saw and
//! read, stored in the snapshot manifest next to the shard snapshot files.
//!
//! Everything a restore needs to rebuild the collections is here: the server
//! version, each collection's full configuration as the server reported it,
//! the payload index schema, aliases, shard placement and, per shard, which
//! node it was read from, its points count and the sha256 of the bytes read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One backup of a Qdrant cluster (or of some of its collections).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterRecord {
    /// The source this backup belongs to (see [`crate::Snapshot::source_key`]):
    /// `qdrant ` followed by the node URLs given, sorted, and the collection
    /// filter when there was one.
    pub source: String,
    /// Qdrant version reported by `GET /` (the first node's, when they differ).
    pub version: String,
    /// Git commit of that build, when reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Every node reached.
    pub nodes: Vec<NodeRecord>,
    /// True when some shards could not be read (`--allow-partial`): those
    /// shards have status `failed` and no file.
    #[serde(default)]
    pub partial: bool,
    /// Aliases of the collections backed up.
    #[serde(default)]
    pub aliases: Vec<AliasRecord>,
    /// The collections, by name.
    pub collections: Vec<CollectionRecord>,
}

/// A node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Its REST URL.
    pub url: String,
    /// Its peer id (absent on a single node without cluster mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_id: Option<u64>,
    /// Its Qdrant version.
    pub version: String,
}

/// An alias.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasRecord {
    /// The alias name.
    pub alias: String,
    /// The collection it pointed at.
    pub collection: String,
}

/// One collection: its configuration and shards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionRecord {
    /// Collection name.
    pub name: String,
    /// The `config` object of `GET /collections/{name}`, verbatim: params
    /// (vectors, sparse vectors, shard number, sharding method, replication
    /// and write consistency factors), HNSW, optimizer, WAL and quantization
    /// settings.
    pub config: Value,
    /// The `payload_schema` object: field → `{data_type, params?, points?}`.
    #[serde(default)]
    pub payload_schema: BTreeMap<String, Value>,
    /// Points count the server reported when the backup started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points_count: Option<u64>,
    /// Shards in id order.
    pub shards: Vec<ShardRecord>,
    /// Queries a restore drill runs against the restored collection, with
    /// the answers the live cluster gave (`cairn drill`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<Probe>,
}

/// A query recorded at backup time: the vector of a stored point, the
/// named vector it searches (`using`) and an optional filter on an indexed
/// payload field, with the live cluster's exact top ids for it. Kept only
/// when the cluster gave the same answer before and after its shards were
/// read, so the answer is the backed-up data's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// The point whose vector is the query.
    pub point: Value,
    /// The named vector searched; `None` for the unnamed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub using: Option<String>,
    /// The query vector, as Qdrant wrote it (its f32 values in decimal;
    /// held as f64 so that JSON round trips keep the same digits).
    pub vector: Vec<f64>,
    /// A Qdrant filter, e.g. `{"must": [{"key": "lang", "match": {"value": "en"}}]}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Value>,
    /// Ids of the exact nearest points, nearest first.
    pub top: Vec<Value>,
}

impl CollectionRecord {
    /// True when every shard was read.
    #[must_use]
    pub fn is_complete(&self) -> bool {
        self.shards
            .iter()
            .all(|s| s.status == ShardStatus::Complete)
    }

    /// Sum of the shards' points counts at backup time.
    #[must_use]
    pub fn shard_points(&self) -> u64 {
        self.shards.iter().filter_map(|s| s.points_count).sum()
    }
}

/// Whether a shard's snapshot is in the backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardStatus {
    /// Read completely; `file` holds it.
    Complete,
    /// Could not be read (see `error`); only in partial backups.
    Failed,
}

/// One shard: where it lived, where it was read from, what was read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardRecord {
    /// Shard id.
    pub shard_id: u32,
    /// Shard key (custom sharding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_key: Option<Value>,
    /// Every replica at backup time.
    pub replicas: Vec<ReplicaRecord>,
    /// Complete or failed.
    pub status: ShardStatus,
    /// Path of the shard snapshot among the snapshot's files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// URL of the node it was read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// `stream` (`GET …/shards/{s}/snapshot`) or `file` (created, downloaded, deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Points in the replica read, just before it was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points_count: Option<u64>,
    /// Points in that replica just after it was read (differs when writes
    /// arrived meanwhile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points_count_after: Option<u64>,
    /// Bytes read.
    #[serde(default)]
    pub size: u64,
    /// sha256 (hex) of the bytes read: the `checksum` a restore uploads with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// When reading began.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::time::offset::option"
    )]
    pub started: Option<crate::Time>,
    /// When reading ended.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::time::offset::option"
    )]
    pub finished: Option<crate::Time>,
    /// Attempts made (a broken stream is read again from the start).
    #[serde(default)]
    pub attempts: u32,
    /// Why the shard failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For a shard read through Qdrant's partial snapshots (`method`
    /// `partial`, `delta` or `unchanged`): what the next night's delta
    /// pull starts from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<DeltaState>,
}

/// Where a chain of delta pulls of one shard stands after a backup: the
/// node's own manifest of the stored shard snapshot, and where each member
/// lies in the stored file, so that the next night can ask the node for
/// what changed and take the rest from this file without reading it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaState {
    /// The peer read (a chain never moves to another replica); none for
    /// a node outside cluster mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_id: Option<u64>,
    /// Its Qdrant version (a chain never crosses versions).
    pub version: String,
    /// Nights since the chain's complete pull (0 on that night).
    pub nights: u32,
    /// Segment id to that segment's manifest, as the node embedded them in
    /// the snapshot stored (Qdrant's `SnapshotManifest`).
    pub manifest: Value,
    /// The stored file's tar members, in file order.
    pub members: Vec<MemberSpan>,
    /// Bytes per record of the vector data in each vector storage
    /// directory of the stored file, from its configs: the next night's
    /// partial snapshot may resend the data without its config, and is
    /// chunked as if the config had come first.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub records: std::collections::BTreeMap<String, u32>,
}

/// One tar member of a stored shard snapshot: its whole record (any long
/// name or extension headers, its header, data and padding).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberSpan {
    /// The member's path.
    pub name: String,
    /// Offset of its first header in the file.
    pub start: u64,
    /// Offset just past its padding.
    pub end: u64,
}

impl ShardRecord {
    /// The points counts a restored shard may have: those seen before and
    /// after reading (equal unless writes arrived while it was read).
    #[must_use]
    pub fn points_range(&self) -> Option<(u64, u64)> {
        let a = self.points_count?;
        let b = self.points_count_after.unwrap_or(a);
        Some((a.min(b), a.max(b)))
    }
}

/// A replica at backup time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaRecord {
    /// The node's peer id.
    pub peer_id: u64,
    /// Replica state (`Active`, `Dead`, …).
    pub state: String,
}

/// Path of a shard snapshot among a cluster backup's files.
#[must_use]
pub fn shard_file(collection: &str, shard: u32) -> String {
    format!("collections/{collection}/shard-{shard}.snapshot")
}

/// The collection and shard a cluster backup's file holds (the inverse of
/// [`shard_file`]), or `None` for another file.
#[must_use]
pub fn shard_of(path: &str) -> Option<(&str, u32)> {
    let rest = path.strip_prefix("collections/")?;
    let (name, file) = rest.rsplit_once('/')?;
    let shard = file
        .strip_prefix("shard-")?
        .strip_suffix(".snapshot")?
        .parse()
        .ok()?;
    Some((name, shard))
}

/// The outcome of the latest restore drill of a snapshot
/// (`drills/<snapshot id>`, written by `cairn drill`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillRecord {
    /// The snapshot drilled (hex id).
    pub snapshot: String,
    /// When the drill finished.
    pub time: crate::Time,
    /// True when the backup restored, counted and answered as recorded.
    pub passed: bool,
    /// What opened it (e.g. `Qdrant 1.18.3 (/usr/bin/qdrant)`).
    pub engine: String,
    /// Wall time of the drill.
    pub seconds: f64,
    /// Collections restored.
    pub collections: usize,
    /// Probes asked, and how many answered as recorded.
    pub probes: usize,
    /// Probes answered as recorded.
    pub probes_matched: usize,
    /// What failed, one line each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
    /// The host that ran it.
    pub host: String,
}
