//! `snapshots`: one row per snapshot, what `snapshots --json` prints.

use cairn_model::{AliasRecord, SnapshotId};

use crate::repository::SnapshotInfo;

/// What a snapshot backed up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotKind {
    /// Files, directories or stdin.
    Files,
    /// A live Qdrant cluster.
    Cluster,
}

/// One collection of a cluster backup, summed up.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CollectionSummary {
    /// The collection.
    pub name: String,
    /// Shards backed up.
    pub shards: usize,
    /// Points in them.
    pub points: u64,
    /// Bytes of their snapshots.
    pub bytes: u64,
    /// Every shard was backed up.
    pub complete: bool,
}

/// A cluster backup's record, summed up.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClusterSummary {
    /// Qdrant's version.
    pub version: String,
    /// Some shard could not be backed up.
    pub partial: bool,
    /// Nodes in the cluster.
    pub nodes: usize,
    /// Its aliases.
    pub aliases: Vec<AliasRecord>,
    /// Its collections.
    pub collections: Vec<CollectionSummary>,
}

/// One snapshot in a listing.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotRow {
    /// The snapshot.
    pub id: SnapshotId,
    /// When the backup started.
    #[serde(with = "cairn_model::time::micros")]
    pub time: cairn_model::Time,
    /// The host that ran it.
    pub host: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// What `latest` and retention group it by.
    pub source: String,
    /// The paths or URLs given to the backup.
    pub paths: Vec<String>,
    /// Files or a cluster.
    pub kind: SnapshotKind,
    /// Files in it.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Bytes this backup added, raw.
    pub new_bytes: u64,
    /// Bytes this backup added, as stored.
    pub new_stored_bytes: u64,
    /// For a cluster backup, its record summed up.
    pub qdrant: Option<ClusterSummary>,
    /// Its latest restore drill, when it had one (`cairn drill`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<cairn_model::DrillRecord>,
}

impl From<&SnapshotInfo> for SnapshotRow {
    fn from(i: &SnapshotInfo) -> Self {
        let s = &i.snapshot;
        Self {
            id: i.id,
            time: s.time,
            host: s.host.clone(),
            tags: s.tags.clone(),
            source: s.source_key(),
            paths: s.source.clone(),
            kind: if s.is_cluster() {
                SnapshotKind::Cluster
            } else {
                SnapshotKind::Files
            },
            files: s.totals.files,
            bytes: s.totals.bytes,
            new_bytes: s.totals.new_bytes,
            new_stored_bytes: s.totals.new_stored_bytes,
            qdrant: s.qdrant.as_ref().map(|r| ClusterSummary {
                version: r.version.clone(),
                partial: r.partial,
                nodes: r.nodes.len(),
                aliases: r.aliases.clone(),
                collections: r
                    .collections
                    .iter()
                    .map(|c| CollectionSummary {
                        name: c.name.clone(),
                        shards: c.shards.len(),
                        points: c.shard_points(),
                        bytes: c.shards.iter().map(|s| s.size).sum(),
                        complete: c.is_complete(),
                    })
                    .collect(),
            }),
            drill: None,
        }
    }
}
