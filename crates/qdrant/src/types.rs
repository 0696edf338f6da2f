//! Typed views of the JSON Qdrant returns. Fields Cairn acts on are typed;
//! configuration that Cairn only records and replays (HNSW, optimizer, WAL,
//! quantization, vector parameters) stays as JSON so that a newer server's
//! fields survive a backup and restore unchanged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `GET /`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// Server title.
    #[serde(default)]
    pub title: String,
    /// Semantic version, e.g. `1.18.3`.
    pub version: String,
    /// Git commit of the build, when reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// A version split into numbers, for compatibility checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    /// Major.
    pub major: u64,
    /// Minor.
    pub minor: u64,
    /// Patch.
    pub patch: u64,
}

impl Version {
    /// Parses `1.18.3` (a `v` prefix and a `-suffix` are ignored).
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        let core = s.trim().trim_start_matches('v');
        let core = core.split(['-', '+']).next().unwrap_or(core);
        let mut it = core.split('.').map(str::parse::<u64>);
        let major = it.next()?.ok()?;
        let minor = it.next()?.ok()?;
        let patch = it.next().unwrap_or(Ok(0)).ok()?;
        Some(Self {
            major,
            minor,
            patch,
        })
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// `GET /collections/{c}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CollectionInfo {
    /// `green`, `yellow`, `grey` or `red`.
    pub status: String,
    /// Approximate number of points.
    #[serde(default)]
    pub points_count: Option<u64>,
    /// Number of segments.
    #[serde(default)]
    pub segments_count: Option<u64>,
    /// The whole configuration as the server reports it.
    pub config: Value,
    /// Payload indexes: field name → schema.
    #[serde(default)]
    pub payload_schema: BTreeMap<String, PayloadIndexInfo>,
}

impl CollectionInfo {
    /// The typed `config.params` part.
    ///
    /// # Errors
    /// A message when `config.params` is missing or malformed.
    pub fn params(&self) -> Result<CollectionParams, String> {
        let p = self
            .config
            .get("params")
            .ok_or_else(|| "the collection config has no params".to_string())?;
        serde_json::from_value(p.clone()).map_err(|e| format!("collection params: {e}"))
    }
}

/// `config.params` of a collection: what fixes its layout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionParams {
    /// Dense vector parameters (one unnamed vector, or named vectors).
    #[serde(default)]
    pub vectors: Value,
    /// Sparse vector parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sparse_vectors: Option<Value>,
    /// Number of shards (auto sharding), or shards per shard key (custom).
    #[serde(default = "one")]
    pub shard_number: u32,
    /// `auto` (absent) or `custom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharding_method: Option<String>,
    /// Replicas per shard.
    #[serde(default = "one")]
    pub replication_factor: u32,
    /// Replicas that must confirm a write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_consistency_factor: Option<u32>,
    /// Payload kept on disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_disk_payload: Option<bool>,
}

fn one() -> u32 {
    1
}

impl CollectionParams {
    /// True for user-defined sharding (shard keys).
    #[must_use]
    pub fn is_custom_sharding(&self) -> bool {
        self.sharding_method.as_deref() == Some("custom")
    }
}

/// One payload index in `payload_schema`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PayloadIndexInfo {
    /// `keyword`, `integer`, `float`, `text`, …
    pub data_type: String,
    /// Index parameters (text tokenizer, …), when not the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
    /// Points with this field indexed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points: Option<u64>,
}

impl PayloadIndexInfo {
    /// The `field_schema` to create this index with.
    #[must_use]
    pub fn field_schema(&self) -> Value {
        match &self.params {
            Some(p) => p.clone(),
            None => Value::String(self.data_type.clone()),
        }
    }
}

/// One alias.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasDescription {
    /// The alias.
    pub alias_name: String,
    /// The collection it points at.
    pub collection_name: String,
}

/// `GET /cluster`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// `enabled` (distributed) or `disabled` (a single node).
    pub status: String,
    /// This node's peer id (distributed mode only).
    #[serde(default)]
    pub peer_id: Option<u64>,
    /// Every peer: id (as a string) → its internal (p2p) address.
    #[serde(default)]
    pub peers: BTreeMap<String, PeerInfo>,
}

/// A peer of the cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerInfo {
    /// The peer's p2p URI (not its REST address).
    pub uri: String,
}

/// State of one shard replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ReplicaState {
    /// Serving reads and writes.
    Active,
    /// Failed; needs recovery.
    Dead,
    /// Receiving a transfer.
    Partial,
    /// Being created.
    Initializing,
    /// Receives writes, serves no reads.
    Listener,
    /// Receiving a snapshot transfer.
    PartialSnapshot,
    /// Recovering from a snapshot.
    Recovery,
    /// Resharding up.
    Resharding,
    /// Resharding down.
    ReshardingScaleDown,
    /// Active for reads only.
    ActiveRead,
    /// Waiting for a manual snapshot recovery.
    ManualRecovery,
    /// A state this client does not know.
    #[serde(other)]
    Unknown,
}

/// `GET /collections/{c}/cluster` on one node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CollectionClusterInfo {
    /// The answering node's peer id (0 on a single node without cluster mode).
    pub peer_id: u64,
    /// Number of shards.
    pub shard_count: u32,
    /// Replicas held by the answering node.
    #[serde(default)]
    pub local_shards: Vec<LocalShardInfo>,
    /// Replicas held by other nodes.
    #[serde(default)]
    pub remote_shards: Vec<RemoteShardInfo>,
    /// Shard transfers in progress.
    #[serde(default)]
    pub shard_transfers: Vec<Value>,
}

/// A replica on the answering node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LocalShardInfo {
    /// Shard id.
    pub shard_id: u32,
    /// Shard key (custom sharding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_key: Option<Value>,
    /// Points in this replica.
    #[serde(default)]
    pub points_count: u64,
    /// Replica state.
    pub state: ReplicaState,
}

/// A replica on another node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoteShardInfo {
    /// Shard id.
    pub shard_id: u32,
    /// Shard key (custom sharding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_key: Option<Value>,
    /// The node holding it.
    pub peer_id: u64,
    /// Replica state.
    pub state: ReplicaState,
}

/// A snapshot file on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotDescription {
    /// File name.
    pub name: String,
    /// Creation time, when reported.
    #[serde(default)]
    pub creation_time: Option<String>,
    /// Size in bytes.
    #[serde(default)]
    pub size: u64,
    /// sha256 of the file, when the node has it.
    #[serde(default)]
    pub checksum: Option<String>,
}

/// How a recovered shard replica relates to the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotPriority {
    /// The snapshot's data wins: this replica becomes Active, the others re-sync from it.
    Snapshot,
    /// Existing replicas win.
    Replica,
    /// Activate without synchronisation.
    NoSync,
}

impl SnapshotPriority {
    /// The query-string value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Snapshot => "snapshot",
            Self::Replica => "replica",
            Self::NoSync => "no_sync",
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct CollectionsList {
    pub collections: Vec<NameOnly>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct NameOnly {
    pub name: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct AliasesList {
    pub aliases: Vec<AliasDescription>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct CountResult {
    pub count: u64,
}

#[derive(Debug, Deserialize)]
pub(crate) struct QueryResult {
    pub points: Vec<ScoredId>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ScoredId {
    pub id: Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_order() {
        let v = Version::parse("1.18.3").expect("parses");
        assert_eq!((v.major, v.minor, v.patch), (1, 18, 3));
        assert_eq!(Version::parse("v1.9").expect("parses").patch, 0);
        assert_eq!(Version::parse("1.18.3-dev").expect("parses").minor, 18);
        assert!(Version::parse("latest").is_none());
        assert!(Version::parse("1.9.0") < Version::parse("1.18.0"));
    }

    #[test]
    fn unknown_replica_states_do_not_fail() {
        let s: ReplicaState = serde_json::from_str("\"SomethingNew\"").expect("parses");
        assert_eq!(s, ReplicaState::Unknown);
        let s: ReplicaState = serde_json::from_str("\"ManualRecovery\"").expect("parses");
        assert_eq!(s, ReplicaState::ManualRecovery);
    }
}
