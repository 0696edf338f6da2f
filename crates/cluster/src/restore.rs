//! Restore of a cluster backup into a running Qdrant cluster, of any node
//! count and replication factor.
//!
//! Order of work, per collection (collections one after another, shards of
//! a collection uploaded `parallel` at once):
//! 1. checks, all before anything changes: the snapshot is a complete
//!    cluster backup of the collections asked for; the server version is the
//!    backup's or the next minor; an existing target collection has the same
//!    vectors, sharding and shard number (else refused unless the restore is
//!    forced, and then dropped and re-created);
//! 2. create the collection from the backed-up configuration (the same shard
//!    number, method and keys; the backup's or the requested replication
//!    factor), then its payload indexes;
//! 3. upload each shard's snapshot, streamed from the repository, to one
//!    node that the new cluster placed the shard on, with
//!    `priority=snapshot` and the sha256 recorded at backup as checksum; the
//!    node verifies it, takes the shard, and its other replicas re-sync;
//! 4. wait until every replica is Active, then verify the points count of
//!    every replica and of the collection against the backup;
//! 5. re-create the aliases, swap the alias asked for atomically, and delete
//!    snapshot files the uploads left on the nodes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_model::{
    AliasRecord, ClusterRecord, CollectionRecord, FileEntry, ShardRecord, SnapshotId,
};
use cairn_qdrant::{CollectionParams, SnapshotPriority, Version};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::error::Remedy;
use crate::topology::{Cluster, QdrantTarget};
use cairn_engine::seams::{FileStreamer, Sink};
use cairn_engine::{Error as EngineError, Progress, Repository, SnapshotInfo};

use crate::error::{Error, Result};

/// Prefix of the snapshot file names uploads use, so that leftovers can be
/// found and deleted.
const UPLOAD_PREFIX: &str = "cairn-restore-";

/// Settings of a restore into Qdrant.
#[derive(Debug, Clone)]
pub struct ClusterRestoreOptions {
    /// The cluster to restore into.
    pub target: QdrantTarget,
    /// Collections to restore, and the name to restore each as; empty:
    /// every collection of the backup under its own name.
    pub collections: Vec<Rename>,
    /// Replication factor of the created collections (default: the backup's).
    pub replication_factor: Option<u32>,
    /// Restore despite a version mismatch or an incompatible existing
    /// collection (which is dropped and re-created).
    pub force: bool,
    /// After the restore, point this alias at the restored collection, in
    /// one atomic alias operation.
    pub swap_alias: Option<String>,
    /// Shard uploads at once.
    pub parallel: usize,
    /// How long to wait for every replica to become Active.
    pub wait_timeout: Duration,
    /// An upload to a node that takes no byte for this long (or, with the
    /// whole snapshot sent, answers nothing for this long plus a second per
    /// 50 MiB) fails instead of hanging the restore.
    pub stall_timeout: Duration,
}

impl ClusterRestoreOptions {
    /// Defaults for `target`: everything, the backup's replication factor,
    /// 2 uploads at once, 10 minutes to become Active.
    #[must_use]
    pub fn new(target: QdrantTarget) -> Self {
        Self {
            target,
            collections: Vec::new(),
            replication_factor: None,
            force: false,
            swap_alias: None,
            parallel: 2,
            wait_timeout: Duration::from_secs(600),
            stall_timeout: Duration::from_secs(300),
        }
    }
}

/// A backed-up collection and the name to restore it as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rename {
    /// Its name in the backup.
    pub backed_up: String,
    /// The name to restore it as (the same to keep it).
    pub restore_as: String,
}

/// A points count known within bounds: a shard read while writes arrived
/// was counted before and after reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PointRange {
    /// The lower bound.
    pub min: u64,
    /// The upper bound (equal to `min` without writes meanwhile).
    pub max: u64,
}

impl PointRange {
    /// True when `n` is within the bounds.
    #[must_use]
    pub fn contains(self, n: u64) -> bool {
        (self.min..=self.max).contains(&n)
    }
}

impl From<(u64, u64)> for PointRange {
    fn from((min, max): (u64, u64)) -> Self {
        Self { min, max }
    }
}

impl std::fmt::Display for PointRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(
                f,
                "{} to {} (writes arrived while it was read)",
                self.min, self.max
            )
        }
    }
}

/// An alias pointed at a restored collection in one atomic operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwappedAlias {
    /// The alias.
    pub alias: String,
    /// The collection it pointed at before, if any.
    pub from: Option<String>,
    /// The restored collection it points at now.
    pub to: String,
}

/// One restored shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoredShard {
    /// Shard id in the backup.
    pub shard_id: u32,
    /// Shard id in the restored collection (differs only with shard keys).
    pub target_shard_id: u32,
    /// Shard key, for custom sharding.
    pub shard_key: Option<Value>,
    /// The node the snapshot was uploaded to.
    pub node: String,
    /// Bytes uploaded.
    pub bytes: u64,
    /// Upload time.
    pub seconds: f64,
    /// Points the backup holds.
    #[serde(rename = "expected_points")]
    pub expected: PointRange,
    /// Points in the restored replicas (each Active replica agrees).
    pub points: u64,
    /// Active replicas.
    pub replicas: usize,
}

/// One restored collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoredCollection {
    /// Name in the backup.
    pub source: String,
    /// Name restored as.
    pub name: String,
    /// True when it was created (false: restored into an existing one).
    pub created: bool,
    /// Exact points count after the restore.
    pub points: u64,
    /// The backup's count range (sum over shards).
    #[serde(rename = "expected_points")]
    pub expected: PointRange,
    /// Its shards.
    pub shards: Vec<RestoredShard>,
}

/// What a restore into Qdrant did (`restore --to-qdrant --json` prints
/// exactly this).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterRestoreSummary {
    /// The snapshot restored.
    pub snapshot: SnapshotId,
    /// Qdrant version of the backup.
    pub backup_version: String,
    /// Qdrant version of the target.
    pub target_version: String,
    /// Nodes of the target.
    pub nodes: usize,
    /// Collections restored.
    pub collections: Vec<RestoredCollection>,
    /// Aliases created or re-pointed.
    pub aliases: Vec<AliasRecord>,
    /// Aliases of the backup left alone because they point elsewhere now.
    pub aliases_skipped: Vec<String>,
    /// The alias swapped (`swap_alias`).
    #[serde(rename = "swapped_alias")]
    pub swapped: Option<SwappedAlias>,
    /// Snapshot files deleted from the nodes afterwards.
    #[serde(rename = "cleaned_files")]
    pub cleaned: usize,
    /// Wall time of the restore.
    pub seconds: f64,
    /// Every collection's counts were verified (a restore that returns at
    /// all has verified them; kept in the JSON for scripts).
    pub verified: bool,
}

/// Why a server's version does not fit a backup's, and whether a forced
/// restore may go on anyway.
#[derive(Debug)]
pub(crate) struct VersionMismatch {
    why: String,
    /// False for a server older than the backup: it cannot load newer data,
    /// so forcing would only leave a created collection with failed uploads.
    forceable: bool,
}

/// Checks that a server of version `server` can load data of `backup`:
/// the same major version and the same or the next minor version.
pub(crate) fn check_version(
    backup: &str,
    server: &str,
) -> std::result::Result<(), VersionMismatch> {
    let (Some(b), Some(s)) = (Version::parse(backup), Version::parse(server)) else {
        return Err(VersionMismatch {
            why: format!(
                "cannot compare the backup's Qdrant version {backup:?} with the server's {server:?}"
            ),
            forceable: true,
        });
    };
    if b.major == s.major && (s.minor == b.minor || s.minor == b.minor + 1) {
        return Ok(());
    }
    if (s.major, s.minor) < (b.major, b.minor) {
        return Err(VersionMismatch {
            why: format!(
                "the backup was made with Qdrant {b} and the server runs the older {s}, which cannot load data of a newer version; restore into {}.{}.x or {}.{}.x",
                b.major,
                b.minor,
                b.major,
                b.minor + 1
            ),
            forceable: false,
        });
    }
    Err(VersionMismatch { forceable: true, why: format!(
        "the backup was made with Qdrant {b} and the server runs {s}; Qdrant loads data from the same or the previous minor version only (restore into {}.{}.x or {}.{}.x)",
        b.major,
        b.minor,
        b.major,
        b.minor + 1
    ) })
}

/// The `PUT /collections/{c}` body that re-creates a backed-up collection.
pub(crate) fn create_body(config: &Value, replication_factor: Option<u32>) -> Result<Value> {
    let params: CollectionParams = serde_json::from_value(
        config.get("params").cloned().unwrap_or(Value::Null),
    )
    .map_err(|e| EngineError::Malformed {
        what: "the backed-up collection config".into(),
        reason: e.to_string(),
    })?;
    let rf = replication_factor
        .unwrap_or(params.replication_factor)
        .max(1);
    let mut body = json!({
        "vectors": params.vectors,
        "shard_number": params.shard_number,
        "replication_factor": rf,
    });
    let obj = body.as_object_mut().expect("invariant: built as an object");
    if let Some(sv) = params.sparse_vectors {
        obj.insert("sparse_vectors".into(), sv);
    }
    if let Some(m) = params.sharding_method {
        obj.insert("sharding_method".into(), Value::String(m));
    }
    if let Some(w) = params.write_consistency_factor {
        obj.insert("write_consistency_factor".into(), json!(w.min(rf)));
    }
    if let Some(d) = params.on_disk_payload {
        obj.insert("on_disk_payload".into(), json!(d));
    }
    // The info route calls it optimizer_config; creation takes optimizers_config.
    for (from, to) in [
        ("hnsw_config", "hnsw_config"),
        ("optimizer_config", "optimizers_config"),
        ("wal_config", "wal_config"),
        ("quantization_config", "quantization_config"),
        ("strict_mode_config", "strict_mode_config"),
        ("metadata", "metadata"),
    ] {
        if let Some(v) = config.get(from).filter(|v| !v.is_null()) {
            obj.insert(to.into(), v.clone());
        }
    }
    Ok(body)
}

/// Why an existing collection cannot take the backup's data, if it cannot.
fn incompatibility(backup: &CollectionParams, existing: &CollectionParams) -> Option<String> {
    if backup.vectors != existing.vectors {
        return Some(format!(
            "its vectors are {} and the backup's {}",
            existing.vectors, backup.vectors
        ));
    }
    if backup.sparse_vectors != existing.sparse_vectors {
        return Some("its sparse vectors differ from the backup's".into());
    }
    if backup.shard_number != existing.shard_number {
        return Some(format!(
            "it has shard_number {} and the backup {}",
            existing.shard_number, backup.shard_number
        ));
    }
    if backup.is_custom_sharding() != existing.is_custom_sharding() {
        return Some("its sharding method differs from the backup's".into());
    }
    None
}

/// Sends restored bytes to an upload body.
struct ChannelSink(mpsc::Sender<Bytes>);

impl Sink for ChannelSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.0
            .blocking_send(Bytes::copy_from_slice(data))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "upload ended"))
    }
}

/// A collection to restore, after the checks.
struct Plan<'a> {
    record: &'a CollectionRecord,
    name: String,
    exists: bool,
    recreate: bool,
}

/// Restores a cluster backup into a running cluster (see the module docs).
///
/// # Errors
/// [`Error::Refused`] when a check fails (nothing was changed);
/// [`Error::Verification`] when replicas do not become Active or counts
/// differ; Qdrant and storage errors, naming node, collection and shard.
pub async fn restore(
    repo: &Repository,
    info: &SnapshotInfo,
    ropts: &ClusterRestoreOptions,
    progress: Arc<dyn Progress>,
) -> Result<ClusterRestoreSummary> {
    let clock = Instant::now();
    let record = info.snapshot.qdrant.as_ref().ok_or_else(|| {
        Error::refused(format!(
            "snapshot {} is a backup of files, not of a Qdrant cluster; restore it to a directory",
            info.id.short()
        ))
    })?;
    let plans_wanted = select_collections(
        record,
        &ropts.collections,
        ropts.swap_alias.as_deref(),
        info,
    )?;
    let cluster = Cluster::discover(&ropts.target).await?;
    let target_version = cluster.version().version.clone();
    if let Err(m) = check_version(&record.version, &target_version) {
        if !m.forceable {
            return Err(Error::refused(m.why));
        }
        if !ropts.force {
            return Err(Error::refused_unless(m.why, Remedy::Force));
        }
        tracing::warn!("{}; going on because the restore is forced", m.why);
    }
    let any = cluster.any().client.clone();
    let distributed = cluster.nodes.iter().any(|n| n.peer_id.is_some());
    let mut plans = Vec::new();
    for (rec, name) in plans_wanted {
        let backup_params = params_of(rec)?;
        if backup_params.is_custom_sharding() && !distributed {
            return Err(Error::refused(format!(
                "collection {} uses custom sharding (shard keys), which Qdrant supports only in distributed mode, and {} runs without it; restore into a cluster, or start the node with cluster mode on (QDRANT__CLUSTER__ENABLED=true and --uri; one node is enough)",
                rec.name,
                any.node()
            )));
        }
        let mut plan = Plan {
            record: rec,
            name: name.clone(),
            exists: false,
            recreate: false,
        };
        match any.collection_info(&name).await {
            Ok(existing) => {
                plan.exists = true;
                let existing = existing.params().map_err(|reason| EngineError::Malformed {
                    what: format!("collection {name} on {}", any.node()),
                    reason,
                })?;
                if let Some(why) = incompatibility(&backup_params, &existing) {
                    if !ropts.force {
                        return Err(Error::refused_unless(
                            format!("collection {name} already exists on the target and {why}"),
                            Remedy::RenameOrForce {
                                collection: rec.name.clone(),
                            },
                        ));
                    }
                    plan.recreate = true;
                } else if backup_params.is_custom_sharding() {
                    if !ropts.force {
                        return Err(Error::refused_unless(
                            format!(
                                "collection {name} (custom sharding) already exists on the target"
                            ),
                            Remedy::RenameOrForce {
                                collection: rec.name.clone(),
                            },
                        ));
                    }
                    plan.recreate = true;
                }
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        if ropts.swap_alias.is_some() && plan.exists && !ropts.force {
            return Err(Error::refused_unless(
                format!("an alias swap restores into a new collection, but {name} already exists"),
                Remedy::Rename {
                    collection: rec.name.clone(),
                },
            ));
        }
        plans.push(plan);
    }

    let total: u64 = plans
        .iter()
        .flat_map(|p| &p.record.shards)
        .map(|s| s.size)
        .sum();
    progress.start("restore", Some(total));
    let mut summary = ClusterRestoreSummary {
        snapshot: info.id,
        backup_version: record.version.clone(),
        target_version,
        nodes: cluster.nodes.len(),
        collections: Vec::new(),
        aliases: Vec::new(),
        aliases_skipped: Vec::new(),
        swapped: None,
        cleaned: 0,
        seconds: 0.0,
        verified: true,
    };
    // One reader for every upload: requests in flight are bounded across
    // them, and each file's window shrinks with the parallelism.
    let streamer = repo.file_streamer(ropts.parallel.max(1)).await?;
    for plan in &plans {
        let restored = restore_collection(info, &cluster, plan, ropts, &streamer, &*progress).await;
        let cleaned = clean_uploads(&cluster, &plan.name).await;
        summary.cleaned += cleaned;
        match restored {
            Ok(r) => summary.collections.push(r),
            Err(e) => {
                progress.finish();
                return Err(e);
            }
        }
    }
    progress.finish();

    // Aliases of the restored collections.
    let renamed: BTreeMap<&str, &str> = plans
        .iter()
        .map(|p| (p.record.name.as_str(), p.name.as_str()))
        .collect();
    let current: BTreeMap<String, String> = any
        .aliases()
        .await?
        .into_iter()
        .map(|a| (a.alias_name, a.collection_name))
        .collect();
    let mut actions = Vec::new();
    for a in &record.aliases {
        let Some(&to) = renamed.get(a.collection.as_str()) else {
            continue;
        };
        if ropts.swap_alias.as_deref() == Some(a.alias.as_str()) {
            continue;
        }
        match current.get(&a.alias) {
            Some(c) if c == to => {}
            Some(c) if !ropts.force => {
                tracing::warn!(alias = %a.alias, points_at = %c, "alias exists and points at another collection; left as it is (a forced restore re-points it)");
                summary.aliases_skipped.push(a.alias.clone());
            }
            existing => {
                if existing.is_some() {
                    actions.push(json!({ "delete_alias": { "alias_name": a.alias } }));
                }
                actions.push(
                    json!({ "create_alias": { "alias_name": a.alias, "collection_name": to } }),
                );
                summary.aliases.push(AliasRecord {
                    alias: a.alias.clone(),
                    collection: to.to_string(),
                });
            }
        }
    }
    if !actions.is_empty() {
        any.update_aliases(actions).await?;
    }
    if let Some(alias) = &ropts.swap_alias {
        let to = plans[0].name.clone();
        let previous = current.get(alias).cloned();
        let mut actions = Vec::new();
        if previous.is_some() {
            actions.push(json!({ "delete_alias": { "alias_name": alias } }));
        }
        actions.push(json!({ "create_alias": { "alias_name": alias, "collection_name": to } }));
        // One request: Qdrant applies the actions together, so readers of
        // the alias see the old collection, then the new one, never none.
        any.update_aliases(actions).await?;
        progress.note(&format!(
            "alias {alias} now points at {to} (was {})",
            previous.as_deref().unwrap_or("unset")
        ));
        summary.swapped = Some(SwappedAlias {
            alias: alias.clone(),
            from: previous,
            to,
        });
    }
    summary.seconds = clock.elapsed().as_secs_f64();
    Ok(summary)
}

/// The collection metadata key a restore sets on a collection it creates
/// until the collection is verified.
pub const RESTORE_MARK: &str = "cairn_restore";

async fn restore_collection(
    info: &SnapshotInfo,
    cluster: &Cluster,
    plan: &Plan<'_>,
    ropts: &ClusterRestoreOptions,
    streamer: &FileStreamer,
    progress: &dyn Progress,
) -> Result<RestoredCollection> {
    let rec = plan.record;
    let name = &plan.name;
    let any = &cluster.any().client;
    let params = params_of(rec)?;
    if plan.recreate {
        progress.note(&format!("dropping collection {name} (forced)"));
        any.delete_collection(name).await?;
    }
    let created = !plan.exists || plan.recreate;
    // An existing collection keeps its payload indexes; the backup's that
    // it lacks are added, so queries filtered on them stay indexed.
    let have: std::collections::BTreeSet<String> = if created {
        let mut body = create_body(&rec.config, ropts.replication_factor)?;
        // Marked incomplete until verified, so that a restore killed
        // mid-way does not leave a collection that looks like any other.
        let metadata = body
            .as_object_mut()
            .expect("invariant: create_body makes an object")
            .entry("metadata")
            .or_insert_with(|| serde_json::json!({}));
        if let Some(m) = metadata.as_object_mut() {
            m.insert(
                RESTORE_MARK.into(),
                Value::String(format!(
                    "incomplete: cairn is restoring snapshot {} into it; re-run the restore (this key goes when it is verified)",
                    info.id.short()
                )),
            );
        }
        any.create_collection(name, &body).await?;
        if params.is_custom_sharding() {
            create_shard_keys(cluster, name, rec, ropts.replication_factor).await?;
        }
        std::collections::BTreeSet::new()
    } else {
        any.collection_info(name)
            .await?
            .payload_schema
            .into_keys()
            .collect()
    };
    let mut added = 0usize;
    for (field, schema) in &rec.payload_schema {
        if have.contains(field) {
            continue;
        }
        let schema: cairn_qdrant::PayloadIndexInfo = serde_json::from_value(schema.clone())
            .map_err(|e| EngineError::Malformed {
                what: format!("payload schema of {field} in collection {}", rec.name),
                reason: e.to_string(),
            })?;
        any.create_payload_index(name, field, &schema.field_schema())
            .await?;
        added += 1;
    }
    if created {
        progress.note(&format!(
            "created collection {name}: {} shard(s), {added} payload index(es)",
            rec.shards.len(),
        ));
    } else if added > 0 {
        progress.note(&format!(
            "collection {name} exists: added {added} payload index(es) the backup has"
        ));
    }

    // Where the target placed each shard; custom-sharded shards are
    // matched by key (ids of one key in ascending order).
    let placement = cluster
        .placement_when_known(name, rec.shards.len(), ropts.wait_timeout)
        .await?;
    let target_shards = placement.shards();
    let id_map = map_shard_ids(rec, &target_shards)?;
    let mut load = vec![0usize; cluster.nodes.len()];
    let mut jobs = Vec::new();
    for shard in &rec.shards {
        let target_id = id_map[&shard.shard_id];
        let sp = target_shards
            .iter()
            .find(|s| s.shard_id == target_id)
            .expect("invariant: mapped ids come from the placement");
        let node = sp
            .replicas
            .iter()
            .filter_map(|r| r.node)
            .min_by_key(|&n| (load[n], n))
            .ok_or_else(|| {
                Error::refused_unless(
                    format!("collection {name}: no reachable node holds shard {target_id}"),
                    Remedy::AllNodes,
                )
            })?;
        load[node] += 1;
        let file = info
            .snapshot
            .files
            .iter()
            .find(|f| Some(&f.path) == shard.file.as_ref())
            .ok_or_else(|| EngineError::Malformed {
                what: format!("snapshot {}", info.id.short()),
                reason: format!(
                    "collection {}, shard {} names no file of the snapshot",
                    rec.name, shard.shard_id
                ),
            })?;
        jobs.push((shard, target_id, node, file));
    }
    let uploads: Vec<(u32, u32, usize, u64, f64)> = futures::stream::iter(jobs)
        .map(|(shard, target_id, node, file)| async move {
            let t = Instant::now();
            upload_shard(
                info,
                cluster,
                node,
                name,
                shard,
                target_id,
                file,
                streamer,
                progress,
                ropts.stall_timeout,
            )
            .await?;
            let secs = t.elapsed().as_secs_f64();
            progress.note(&format!(
                "collection {name}, shard {target_id}: {:.1} MiB uploaded to {} in {secs:.1}s",
                file.size as f64 / 1048576.0,
                cluster.nodes[node].url()
            ));
            Ok::<_, Error>((shard.shard_id, target_id, node, file.size, secs))
        })
        .buffer_unordered(ropts.parallel.max(1))
        .try_collect()
        .await?;

    // Every replica Active, then counts.
    let deadline = Instant::now() + ropts.wait_timeout;
    let (placement, shards) = loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let placement = cluster.wait_active(name, remaining).await?;
        match verify_counts(rec, &id_map, &placement.shards()) {
            Ok(v) => break (placement, v),
            Err(why) if Instant::now() >= deadline => {
                return Err(Error::Verification(format!("collection {name}: {why}")))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    };
    let _ = placement;
    let points = any.count_exact(name).await?;
    let expected = rec
        .shards
        .iter()
        .fold(PointRange { min: 0, max: 0 }, |acc, s| {
            let (lo, hi) = s.points_range().unwrap_or((0, u64::MAX / 1024));
            PointRange {
                min: acc.min + lo,
                max: acc.max + hi,
            }
        });
    if !expected.contains(points) {
        return Err(Error::Verification(format!(
            "collection {name} holds {points} points; the backup holds {expected}"
        )));
    }
    let mut restored = Vec::new();
    for (shard_id, target_id, node, bytes, secs) in uploads {
        let s = rec
            .shards
            .iter()
            .find(|s| s.shard_id == shard_id)
            .expect("invariant: uploaded shards come from the record");
        let (pts, replicas) = shards[&target_id];
        restored.push(RestoredShard {
            shard_id,
            target_shard_id: target_id,
            shard_key: s.shard_key.clone(),
            node: cluster.nodes[node].url(),
            bytes,
            seconds: secs,
            expected: s.points_range().unwrap_or((pts, pts)).into(),
            points: pts,
            replicas,
        });
    }
    restored.sort_by_key(|r| r.shard_id);
    // Verified: the mark goes (also the one a killed run left on a
    // collection this run restored into).
    any.update_collection_metadata(name, &serde_json::json!({ RESTORE_MARK: null }))
        .await?;
    progress.note(&format!(
        "collection {name}: {points} points, every replica Active and verified"
    ));
    Ok(RestoredCollection {
        source: rec.name.clone(),
        name: name.clone(),
        created,
        points,
        expected,
        shards: restored,
    })
}

/// Streams one shard snapshot from the repository into an upload.
#[allow(clippy::too_many_arguments)]
async fn upload_shard(
    info: &SnapshotInfo,
    cluster: &Cluster,
    node: usize,
    collection: &str,
    shard: &ShardRecord,
    target_id: u32,
    file: &FileEntry,
    streamer: &FileStreamer,
    progress: &dyn Progress,
    stall: Duration,
) -> Result<()> {
    let client = &cluster.nodes[node].client;
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<Bytes, std::io::Error>(b), rx))
    });
    let name = format!(
        "{UPLOAD_PREFIX}{}-{collection}-shard-{target_id}.snapshot",
        info.id.short()
    );
    // The sink comes back when the file is done; dropping it ends the body.
    let feed = async {
        streamer
            .stream(info, file, ChannelSink(tx), progress)
            .await
            .map(drop)
    };
    let upload = client.upload_shard_snapshot(
        collection,
        target_id,
        &name,
        body,
        file.size,
        SnapshotPriority::Snapshot,
        shard.sha256.as_deref(),
        stall,
    );
    let (fed, uploaded) = tokio::join!(feed, upload);
    match (fed, uploaded) {
        // Data that fails verification is the cause, whatever the node said.
        (
            Err(
                e @ (EngineError::Corrupt { .. }
                | EngineError::MissingChunk { .. }
                | EngineError::Malformed { .. }),
            ),
            _,
        ) => Err(e.into()),
        (_, Err(e)) => Err(e.into()),
        (Err(e), Ok(())) => Err(e.into()),
        (Ok(()), Ok(())) => Ok(()),
    }
}

fn params_of(rec: &CollectionRecord) -> Result<CollectionParams> {
    serde_json::from_value(rec.config.get("params").cloned().unwrap_or(Value::Null)).map_err(|e| {
        EngineError::Malformed {
            what: format!("the backed-up config of collection {}", rec.name),
            reason: e.to_string(),
        }
        .into()
    })
}

/// The collections to restore and the names to restore them as.
fn select_collections<'a>(
    record: &'a ClusterRecord,
    wanted: &[Rename],
    swap_alias: Option<&str>,
    info: &SnapshotInfo,
) -> Result<Vec<(&'a CollectionRecord, String)>> {
    let mut out = Vec::new();
    if wanted.is_empty() {
        for c in &record.collections {
            out.push((c, c.name.clone()));
        }
    } else {
        for Rename {
            backed_up: from,
            restore_as: to,
        } in wanted
        {
            let c = record
                .collections
                .iter()
                .find(|c| &c.name == from)
                .ok_or_else(|| {
                    Error::refused(format!(
                        "snapshot {} has no collection {from} (it has: {})",
                        info.id.short(),
                        record
                            .collections
                            .iter()
                            .map(|c| c.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?;
            out.push((c, to.clone()));
        }
    }
    for (c, _) in &out {
        if !c.is_complete() {
            let failed: Vec<String> = c
                .shards
                .iter()
                .filter(|s| s.file.is_none())
                .map(|s| s.shard_id.to_string())
                .collect();
            return Err(Error::refused_unless(
                format!(
                    "snapshot {} is a partial backup: collection {} lacks shard(s) {}",
                    info.id.short(),
                    c.name,
                    failed.join(", ")
                ),
                Remedy::SelectCollections,
            ));
        }
    }
    if let Some(alias) = swap_alias {
        if out.len() != 1 {
            return Err(EngineError::InvalidArgument(
                "an alias swap needs exactly one collection (NAME or NAME:NEWNAME)".into(),
            )
            .into());
        }
        if out[0].1 == out[0].0.name && wanted.iter().all(|r| r.backed_up == r.restore_as) {
            // No new name given: restore beside the old one.
            out[0].1 = format!("{}-{}", out[0].0.name, info.id.short());
        }
        if out[0].1 == alias {
            return Err(EngineError::InvalidArgument(format!(
                "alias {alias} cannot have the restored collection's name"
            ))
            .into());
        }
    }
    Ok(out)
}

/// Creates the backup's shard keys on a new custom-sharded collection, in
/// the order of their original shard ids so that a fresh collection gives
/// them the same ids.
async fn create_shard_keys(
    cluster: &Cluster,
    name: &str,
    rec: &CollectionRecord,
    replication_factor: Option<u32>,
) -> Result<()> {
    let mut keys: Vec<(u32, Value, u32)> = Vec::new();
    for s in &rec.shards {
        let Some(k) = &s.shard_key else {
            return Err(EngineError::Malformed {
                what: format!("the backup of collection {}", rec.name),
                reason: format!("custom-sharded shard {} has no shard key", s.shard_id),
            }
            .into());
        };
        match keys.iter_mut().find(|(_, key, _)| key == k) {
            Some(e) => {
                e.0 = e.0.min(s.shard_id);
                e.2 += 1;
            }
            None => keys.push((s.shard_id, k.clone(), 1)),
        }
    }
    keys.sort_by_key(|(first, _, _)| *first);
    let rf = replication_factor.or_else(|| {
        rec.config
            .pointer("/params/replication_factor")
            .and_then(Value::as_u64)
            .and_then(|v| u32::try_from(v).ok())
    });
    for (_, key, count) in keys {
        cluster
            .any()
            .client
            .create_shard_key(name, &key, Some(count), rf)
            .await?;
    }
    Ok(())
}

/// Backed-up shard id → target shard id.
fn map_shard_ids(
    rec: &CollectionRecord,
    target: &[crate::topology::ShardPlacement],
) -> Result<BTreeMap<u32, u32>> {
    let mut out = BTreeMap::new();
    let custom = rec.shards.iter().any(|s| s.shard_key.is_some());
    if !custom {
        for s in &rec.shards {
            if !target.iter().any(|t| t.shard_id == s.shard_id) {
                return Err(Error::Verification(format!(
                    "collection {}: the target has no shard {}",
                    rec.name, s.shard_id
                )));
            }
            out.insert(s.shard_id, s.shard_id);
        }
        return Ok(out);
    }
    let mut by_key: BTreeMap<String, (Vec<u32>, Vec<u32>)> = BTreeMap::new();
    for s in &rec.shards {
        let k = s
            .shard_key
            .as_ref()
            .map(Value::to_string)
            .unwrap_or_default();
        by_key.entry(k).or_default().0.push(s.shard_id);
    }
    for t in target {
        let k = t
            .shard_key
            .as_ref()
            .map(Value::to_string)
            .unwrap_or_default();
        by_key.entry(k).or_default().1.push(t.shard_id);
    }
    for (key, (mut from, mut to)) in by_key {
        if from.is_empty() {
            continue;
        }
        from.sort_unstable();
        to.sort_unstable();
        if from.len() != to.len() {
            return Err(Error::Verification(format!(
                "collection {}: shard key {key} has {} shard(s) in the backup and {} on the target",
                rec.name,
                from.len(),
                to.len()
            )));
        }
        out.extend(from.into_iter().zip(to));
    }
    Ok(out)
}

/// Per target shard: its points count and number of Active replicas, when
/// every reachable replica holds the count the backup recorded.
fn verify_counts(
    rec: &CollectionRecord,
    id_map: &BTreeMap<u32, u32>,
    shards: &[crate::topology::ShardPlacement],
) -> std::result::Result<BTreeMap<u32, (u64, usize)>, String> {
    let mut out = BTreeMap::new();
    for s in &rec.shards {
        let target = id_map[&s.shard_id];
        let sp = shards
            .iter()
            .find(|p| p.shard_id == target)
            .ok_or_else(|| format!("shard {target} is gone"))?;
        let counts: Vec<u64> = sp.replicas.iter().filter_map(|r| r.points).collect();
        let Some(&first) = counts.first() else {
            return Err(format!("no reachable node holds shard {target}"));
        };
        if let Some((lo, hi)) = s.points_range() {
            if let Some(bad) = counts.iter().find(|&&c| c < lo || c > hi) {
                return Err(format!(
                    "shard {target} holds {bad} points; the backup holds {}",
                    PointRange::from((lo, hi))
                ));
            }
        }
        if counts.iter().any(|&c| c != first) {
            return Err(format!(
                "the replicas of shard {target} disagree: {counts:?}"
            ));
        }
        out.insert(target, (first, sp.replicas.len()));
    }
    Ok(out)
}

/// Deletes snapshot files that uploads left on the nodes (collection and
/// shard snapshot lists); returns how many. Failures are logged, not fatal.
async fn clean_uploads(cluster: &Cluster, collection: &str) -> usize {
    let shards: Vec<u32> = match cluster.placement(collection).await {
        Ok(p) => p.shards().iter().map(|s| s.shard_id).collect(),
        Err(_) => Vec::new(),
    };
    let mut cleaned = 0;
    for node in &cluster.nodes {
        let c = &node.client;
        if let Ok(list) = c.list_collection_snapshots(collection).await {
            for s in list.iter().filter(|s| s.name.starts_with(UPLOAD_PREFIX)) {
                match c.delete_collection_snapshot(collection, &s.name).await {
                    Ok(()) => cleaned += 1,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not delete an uploaded snapshot file")
                    }
                }
            }
        }
        for &shard in &shards {
            let Ok(list) = c.list_shard_snapshots(collection, shard).await else {
                continue;
            };
            for s in list.iter().filter(|s| s.name.starts_with(UPLOAD_PREFIX)) {
                match c.delete_shard_snapshot(collection, shard, &s.name).await {
                    Ok(()) => cleaned += 1,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not delete an uploaded snapshot file")
                    }
                }
            }
        }
    }
    cleaned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_same_or_next_minor() {
        assert!(check_version("1.18.3", "1.18.0").is_ok());
        assert!(check_version("1.17.1", "1.18.3").is_ok());
        let e = check_version("1.16.2", "1.18.3").expect_err("two minors apart");
        assert!(
            e.why.contains("1.16.2") && e.why.contains("1.18.3") && e.why.contains("1.17.x"),
            "{e:?}"
        );
        assert!(e.forceable);
        let e = check_version("1.18.3", "1.17.0").expect_err("older server");
        assert!(
            !e.forceable,
            "an older server cannot load newer data: {e:?}"
        );
        assert!(check_version("2.0.0", "1.18.3").is_err());
        assert!(check_version("dev", "1.18.3").is_err());
    }

    #[test]
    fn create_body_replays_the_config() {
        let config = json!({
            "params": {"vectors": {"size": 64, "distance": "Cosine"}, "shard_number": 3,
                       "replication_factor": 2, "write_consistency_factor": 2, "on_disk_payload": true},
            "hnsw_config": {"m": 16},
            "optimizer_config": {"indexing_threshold": 150},
            "wal_config": {"wal_capacity_mb": 32},
            "quantization_config": null
        });
        let b = create_body(&config, Some(1)).expect("builds");
        assert_eq!(b["shard_number"], 3);
        assert_eq!(b["replication_factor"], 1);
        assert_eq!(
            b["write_consistency_factor"], 1,
            "capped at the replication factor"
        );
        assert_eq!(b["optimizers_config"]["indexing_threshold"], 150);
        assert!(b.get("quantization_config").is_none());
        assert_eq!(
            create_body(&config, None).expect("builds")["replication_factor"],
            2
        );
    }
}
