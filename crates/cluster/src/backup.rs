//! Backup of a live Qdrant cluster: discover the nodes and collections, pick
//! one Active replica per shard, stream every shard snapshot straight into
//! the backup pipeline (no file on the node, none here), and write one
//! manifest whose [`ClusterRecord`] holds everything a restore needs.
//!
//! Each shard is one input of the run, read by up to `parallel` readers at
//! once. A shard whose stream breaks is read again from the start, from the
//! next Active replica when there is one (its chunks already stored are
//! found again, so a retry costs reading, not storage). Servers that cannot
//! stream a shard get the fallback: create a shard snapshot file on the
//! node, download it (checked against the node's sha256), delete it.

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cairn_model::{
    AliasRecord, ClusterRecord, CollectionRecord, DeltaState, NodeFile, NodeRecord, ReplicaRecord,
    ShardRecord, ShardStatus, Snapshot,
};
use cairn_qdrant::{ByteStream, ReplicaState};
use futures::StreamExt;
use serde_json::Value;
use sha2::Digest;
use tokio::runtime::Handle;

use crate::topology::{Cluster, Node, QdrantTarget, RateLimiter};
use cairn_engine::seams::{hostname, Input, InputSource, RunShape, Stop, StreamInput, Tail};
use cairn_engine::{
    BackupOptions, BackupSummary, Error as EngineError, Progress, Repository,
    Result as EngineResult,
};

use crate::error::{Error, Result};

/// How shard snapshots are read from the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SnapshotMethod {
    /// Stream (`GET …/shards/{s}/snapshot`), falling back to files where a
    /// node does not offer streaming.
    #[default]
    Auto,
    /// Always stream.
    Stream,
    /// Always create, download and delete a snapshot file on the node.
    File,
}

/// Settings of a cluster backup.
#[derive(Debug, Clone)]
pub struct ClusterBackupOptions {
    /// The cluster.
    pub target: QdrantTarget,
    /// Collections to back up (default: all).
    pub collections: Vec<String>,
    /// Shards read at once.
    pub parallel: usize,
    /// Bytes per second read from the cluster, over all shards.
    pub limit_download: Option<u64>,
    /// Record shards that could not be read as failed instead of failing.
    pub allow_partial: bool,
    /// Streaming or snapshot files.
    pub method: SnapshotMethod,
    /// Attempts per shard (a broken stream is read again from the start).
    pub attempts: u32,
    /// A stream that delivers nothing for this long is broken.
    pub stall_timeout: Duration,
    /// Read each shard through Qdrant's partial snapshots: only the files
    /// changed since the previous backup of the shard (see [`crate::delta`]).
    pub delta: bool,
    /// With `delta`: a chain is read in full again after this many nights
    /// (0: only when it breaks).
    pub full_every: u32,
}

impl ClusterBackupOptions {
    /// Defaults for `target`: every collection, 4 shards at once, no rate
    /// limit, 3 attempts, 5 minutes of silence before a stream counts as broken.
    #[must_use]
    pub fn new(target: QdrantTarget) -> Self {
        Self {
            target,
            collections: Vec::new(),
            parallel: 4,
            limit_download: None,
            allow_partial: false,
            method: SnapshotMethod::Auto,
            attempts: 3,
            stall_timeout: Duration::from_secs(300),
            delta: false,
            full_every: 0,
        }
    }
}

/// The result of a cluster backup. `backup --qdrant --json` prints it as
/// the backup's summary (totals at the top level) with the record's
/// fields beside it, its version as `qdrant_version`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(into = "SummaryJson", from = "SummaryJson")]
pub struct ClusterBackupSummary {
    /// The snapshot written.
    pub backup: BackupSummary,
    /// Its cluster record.
    pub record: ClusterRecord,
}

/// [`ClusterBackupSummary`] as JSON.
#[derive(serde::Serialize, serde::Deserialize)]
struct SummaryJson {
    #[serde(flatten)]
    backup: BackupSummary,
    source: String,
    qdrant_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    commit: Option<String>,
    partial: bool,
    nodes: Vec<NodeRecord>,
    aliases: Vec<AliasRecord>,
    collections: Vec<CollectionRecord>,
}

impl From<ClusterBackupSummary> for SummaryJson {
    fn from(s: ClusterBackupSummary) -> Self {
        let r = s.record;
        Self {
            backup: s.backup,
            source: r.source,
            qdrant_version: r.version,
            commit: r.commit,
            partial: r.partial,
            nodes: r.nodes,
            aliases: r.aliases,
            collections: r.collections,
        }
    }
}

impl From<SummaryJson> for ClusterBackupSummary {
    fn from(j: SummaryJson) -> Self {
        Self {
            backup: j.backup,
            record: ClusterRecord {
                source: j.source,
                version: j.qdrant_version,
                commit: j.commit,
                nodes: j.nodes,
                partial: j.partial,
                aliases: j.aliases,
                collections: j.collections,
            },
        }
    }
}

/// The source key of a cluster backup: the URLs given, sorted, and the
/// collection filter.
pub(crate) fn source_key(target: &QdrantTarget, collections: &[String]) -> String {
    let mut urls = target.urls.clone();
    urls.sort();
    urls.dedup();
    let mut key = format!("qdrant {}", urls.join(","));
    if !collections.is_empty() {
        let mut c = collections.to_vec();
        c.sort();
        c.dedup();
        key.push_str(" collections=");
        key.push_str(&c.join(","));
    }
    key
}

/// What one shard's reads found out, for its record.
#[derive(Debug, Default)]
struct ShardState {
    node: Option<String>,
    method: Option<&'static str>,
    points_before: Option<u64>,
    points_after: Option<u64>,
    sha256: Option<String>,
    /// Snapshot files created on nodes, to delete: (node index, name, the
    /// repository's record of it).
    created: Vec<(usize, String, Option<String>)>,
    /// Bytes the node sent in the attempt that ended well (a partial
    /// snapshot's own bytes, not the file stored).
    node_bytes: Option<u64>,
    /// How the last attempt asked for a partial snapshot, if it did.
    pull: Option<Pull>,
    /// What that attempt's partial snapshot held, once read to its end.
    filtered: Arc<Mutex<Option<crate::delta::Filtered>>>,
    /// The peer and version the last attempt read.
    peer: Option<u64>,
    version: Option<String>,
    /// Where the chain stands after a successful attempt.
    next: Option<DeltaState>,
    /// A delta could not be completed: read the shard in full.
    force_full: bool,
    /// Record sizes of vector data the attempt's stream may lack configs for.
    records: Vec<(String, u32)>,
}

/// How a shard's partial snapshot was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pull {
    /// Against the empty manifest: complete, a chain's first night.
    Start,
    /// Against the previous backup's manifests.
    Delta,
    /// The same, answered 304: nothing changed.
    Unchanged,
}

impl Pull {
    fn method(self) -> &'static str {
        match self {
            Self::Start => "partial",
            Self::Delta => "delta",
            Self::Unchanged => "unchanged",
        }
    }
}

/// A shard read through partial snapshots: the previous backup's chain
/// state and file, when it has them.
struct DeltaPlan {
    prev: Option<(DeltaState, crate::delta::BaseFile)>,
    full_every: u32,
}

/// One shard to read, and what its reads found out.
struct Shard {
    cluster: Arc<Cluster>,
    /// Where snapshot files made on nodes are recorded (none in a dry run,
    /// which writes nothing).
    records: Option<Repository>,
    collection: String,
    shard: u32,
    /// Nodes holding an Active replica, in the order to try them.
    candidates: Vec<usize>,
    /// The replicas, described, for the error when there is no candidate.
    replicas: String,
    method: SnapshotMethod,
    attempts: u32,
    stall: Duration,
    limiter: Option<Arc<RateLimiter>>,
    handle: Handle,
    state: Arc<Mutex<ShardState>>,
    delta: Option<DeltaPlan>,
}

impl Shard {
    fn lock(&self) -> std::sync::MutexGuard<'_, ShardState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn local_points(&self, node: &Node) -> Result<Option<u64>> {
        let info = self
            .handle
            .block_on(node.client.collection_cluster(&self.collection))?;
        let local = info.local_shards.iter().find(|l| l.shard_id == self.shard);
        match local {
            Some(l) if l.state == ReplicaState::Active => Ok(Some(l.points_count)),
            Some(l) => Err(EngineError::Source {
                what: self.describe(),
                reason: format!("the replica on {} is now {:?}", node.url(), l.state),
            }
            .into()),
            None => Err(EngineError::Source {
                what: self.describe(),
                reason: format!("{} no longer holds a replica", node.url()),
            }
            .into()),
        }
    }

    /// Opens the shard's bytes on `node` by streaming or through a file.
    fn open_on(
        &self,
        ni: usize,
        node: &Node,
    ) -> Result<(ByteStream, &'static str, Option<String>)> {
        let stream_it = match self.method {
            SnapshotMethod::Stream => true,
            SnapshotMethod::File => false,
            SnapshotMethod::Auto => self.lock().method != Some("file"),
        };
        if stream_it {
            match self.handle.block_on(node.client.stream_shard_snapshot(
                &self.collection,
                self.shard,
                self.stall,
            )) {
                Ok(s) => return Ok((s, "stream", None)),
                // Servers without the streaming route answer 404 or 405 with
                // no mention of the shard.
                Err(e) if self.method == SnapshotMethod::Auto && e.is_route_missing() => {
                    tracing::info!(node = %node.url(), "shard snapshot streaming unavailable; using snapshot files");
                }
                Err(e) => return Err(e.into()),
            }
        }
        let desc = self.handle.block_on(
            node.client
                .create_shard_snapshot(&self.collection, self.shard),
        )?;
        // Recorded at once, so that a run killed from here on leaves a
        // record the next run deletes the file by.
        let record = match &self.records {
            Some(repo) => Some(self.handle.block_on(repo.record_node_file(&NodeFile {
                host: hostname(),
                pid: std::process::id(),
                node: node.url(),
                collection: self.collection.clone(),
                shard: self.shard,
                file: desc.name.clone(),
            }))?),
            None => None,
        };
        self.lock().created.push((ni, desc.name.clone(), record));
        let stream = self.handle.block_on(node.client.download_shard_snapshot(
            &self.collection,
            self.shard,
            &desc.name,
            self.stall,
        ))?;
        Ok((stream, "file", desc.checksum))
    }
}

/// A shard as an input of the backup run.
struct ShardInput(Arc<Shard>);

impl StreamInput for ShardInput {
    fn open(&self, attempt: u32, stop: &Stop) -> EngineResult<Box<dyn Read + Send>> {
        self.0.open(attempt, stop).map_err(Error::into_engine)
    }

    fn attempts(&self) -> u32 {
        // A delta that cannot be completed is read again in full.
        self.0.attempts + u32::from(self.0.delta.is_some())
    }

    fn describe(&self) -> String {
        self.0.describe()
    }

    fn tail(&self) -> EngineResult<Option<Tail>> {
        self.0.tail()
    }

    fn tar_records(&self) -> Vec<(String, u32)> {
        self.0.lock().records.clone()
    }
}

impl Shard {
    fn open(self: &Arc<Self>, attempt: u32, stop: &Stop) -> Result<Box<dyn Read + Send>> {
        if self.candidates.is_empty() {
            return Err(EngineError::Source {
                what: self.describe(),
                reason: format!(
                    "no reachable node holds an Active replica (replicas: {}); give every node's URL",
                    self.replicas
                ),
            }.into());
        }
        let mut ni = self.candidates[(attempt as usize - 1) % self.candidates.len()];
        // A chain stays on the replica it started on while that is Active.
        let chain_peer = self
            .delta
            .as_ref()
            .and_then(|d| d.prev.as_ref())
            .and_then(|(prev, _)| prev.peer_id)
            .filter(|_| !self.lock().force_full);
        if let Some(&same) = chain_peer.and_then(|peer| {
            self.candidates
                .iter()
                .find(|&&c| self.cluster.nodes[c].peer_id == Some(peer))
        }) {
            ni = same;
        }
        let node = &self.cluster.nodes[ni];
        let before = self.local_points(node)?;
        {
            let mut st = self.lock();
            st.node = Some(node.url());
            st.points_before = before;
            st.points_after = None;
            st.sha256 = None;
            st.node_bytes = None;
            st.pull = None;
            st.next = None;
            st.records = Vec::new();
            st.peer = node.peer_id;
            st.version = Some(node.version.version.clone());
            st.filtered = Arc::default();
        }
        if let Some(plan) = &self.delta {
            if let Some(reader) = self.open_partial(plan, ni, node, stop)? {
                return Ok(reader);
            }
        }
        let (stream, method, expected) = self.open_on(ni, node)?;
        self.lock().method = Some(method);
        Ok(Box::new(ShardReader::new(self, stream, ni, stop, expected)))
    }

    /// Opens a partial snapshot of the shard on `node`: against the
    /// previous backup's manifests when the chain holds, else against the
    /// empty one. `None` when the node has no partial snapshots.
    fn open_partial(
        self: &Arc<Self>,
        plan: &DeltaPlan,
        ni: usize,
        node: &Node,
        stop: &Stop,
    ) -> Result<Option<Box<dyn Read + Send>>> {
        let force_full = self.lock().force_full;
        let chained = plan.prev.as_ref().filter(|(p, _)| {
            !force_full
                && p.peer_id == node.peer_id
                && p.version == node.version.version
                && (plan.full_every == 0 || p.nights + 1 < plan.full_every)
        });
        let manifest = chained.map_or_else(|| serde_json::json!({}), |(p, _)| p.manifest.clone());
        let asked = self
            .handle
            .block_on(node.client.stream_partial_shard_snapshot(
                &self.collection,
                self.shard,
                &manifest,
                self.stall,
            ));
        let stream = match asked {
            Ok(Some(s)) => s,
            Ok(None) if chained.is_some() => {
                let mut st = self.lock();
                st.pull = Some(Pull::Unchanged);
                st.method = Some(Pull::Unchanged.method());
                st.points_after = st.points_before;
                return Ok(Some(Box::new(std::io::empty())));
            }
            Ok(None) => {
                return Err(EngineError::Source {
                    what: self.describe(),
                    reason: "the node answered 304 (not modified) to a request for a complete partial snapshot".into(),
                }
                .into())
            }
            // Servers before 1.15 have no such route.
            Err(e) if e.is_route_missing() => {
                tracing::info!(node = %node.url(), "partial snapshots unavailable; reading shards in full");
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        let pull = if chained.is_some() {
            Pull::Delta
        } else {
            Pull::Start
        };
        let filtered = {
            let mut st = self.lock();
            st.pull = Some(pull);
            st.method = Some(pull.method());
            if let Some((p, _)) = chained {
                st.records = p.records.iter().map(|(d, r)| (d.clone(), *r)).collect();
            }
            Arc::clone(&st.filtered)
        };
        let reader = ShardReader::new(self, stream, ni, stop, None);
        Ok(Some(Box::new(crate::delta::PartialFilter::new(
            Box::new(reader),
            filtered,
        ))))
    }

    /// What ends the stored file after a partial snapshot was read (see
    /// [`crate::delta`]), and the chain's new state.
    fn tail(&self) -> EngineResult<Option<Tail>> {
        let Some(plan) = &self.delta else {
            return Ok(None);
        };
        let what = self.describe();
        let mut st = self.lock();
        let Some(pull) = st.pull else {
            return Ok(None); // read in full
        };
        let got = st
            .filtered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let (peer_id, version) = (st.peer, st.version.clone().unwrap_or_default());
        let prev = plan.prev.as_ref();
        match (pull, got, prev) {
            (Pull::Unchanged, _, Some((p, base))) => {
                st.next = Some(DeltaState {
                    nights: p.nights + 1,
                    ..p.clone()
                });
                Ok(Some(base.whole()))
            }
            (Pull::Start, Some(got), _) => {
                let members = got.members.clone();
                st.next = Some(crate::delta::state_after(
                    &got, members, None, peer_id, version,
                ));
                Ok(Some(crate::delta::first()))
            }
            (Pull::Delta, Some(got), Some((p, base))) => {
                match crate::delta::complete(&got, p, base) {
                    Ok((tail, members)) => {
                        st.next = Some(crate::delta::state_after(
                            &got,
                            members,
                            Some(p),
                            peer_id,
                            version,
                        ));
                        Ok(Some(tail))
                    }
                    Err(reason) => {
                        st.force_full = true;
                        tracing::warn!(shard = %what, %reason, "a delta pull cannot be completed; reading the shard in full");
                        Err(EngineError::Source {
                            what,
                            reason: format!("{reason}; reading it in full"),
                        })
                    }
                }
            }
            _ => Err(EngineError::Source {
                what,
                reason: "the partial snapshot was not read to its end".into(),
            }),
        }
    }

    fn describe(&self) -> String {
        let from = self
            .lock()
            .node
            .clone()
            .map(|n| format!(" from {n}"))
            .unwrap_or_default();
        format!("collection {}, shard {}{from}", self.collection, self.shard)
    }
}

/// Reads a shard's byte stream for the (blocking) backup pipeline, hashing
/// it and observing the rate limit; at its end records the digest and the
/// points count after reading.
struct ShardReader {
    stream: ByteStream,
    buf: Bytes,
    handle: Handle,
    stop: Stop,
    hasher: Option<sha2::Sha256>,
    limiter: Option<Arc<RateLimiter>>,
    /// The node's own sha256 of a snapshot file.
    expected: Option<String>,
    shard: Arc<Shard>,
    node: usize,
    /// Bytes read so far.
    read: u64,
}

impl Read for ShardReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.hasher.is_none() {
            return Ok(0); // ended
        }
        while self.buf.is_empty() {
            if self.stop.is_set() {
                // Not ErrorKind::Interrupted: readers retry that kind.
                return Err(std::io::Error::other("backup stopping"));
            }
            let next = self.handle.block_on(async {
                tokio::time::timeout(Duration::from_millis(250), self.stream.next()).await
            });
            match next {
                Err(_) => {} // still waiting; check the stop flags again
                Ok(Some(Ok(b))) => self.buf = b,
                Ok(Some(Err(e))) => return Err(std::io::Error::other(e.to_string())),
                Ok(None) => return self.end().map(|()| 0),
            }
        }
        let cap = self.limiter.as_ref().map_or(usize::MAX, |l| l.max_read());
        let n = out.len().min(self.buf.len()).min(cap);
        out[..n].copy_from_slice(&self.buf[..n]);
        if let Some(h) = &mut self.hasher {
            h.update(&self.buf[..n]);
        }
        self.read += n as u64;
        let _ = self.buf.split_to(n);
        if let Some(l) = &self.limiter {
            l.take(n);
        }
        Ok(n)
    }
}

impl ShardReader {
    fn new(
        shard: &Arc<Shard>,
        stream: ByteStream,
        node: usize,
        stop: &Stop,
        expected: Option<String>,
    ) -> Self {
        Self {
            stream,
            buf: Bytes::new(),
            handle: shard.handle.clone(),
            stop: stop.clone(),
            hasher: Some(sha2::Sha256::new()),
            limiter: shard.limiter.clone(),
            expected,
            shard: Arc::clone(shard),
            node,
            read: 0,
        }
    }

    /// The stream ended: check and record its digest and the points count.
    fn end(&mut self) -> std::io::Result<()> {
        let Some(h) = self.hasher.take() else {
            return Ok(());
        };
        let digest = hex::encode(h.finalize());
        if let Some(exp) = &self.expected {
            if !exp.trim().eq_ignore_ascii_case(&digest) {
                return Err(std::io::Error::other(format!(
                    "the downloaded snapshot file's sha256 {digest} differs from the node's {exp}"
                )));
            }
        }
        let node = &self.shard.cluster.nodes[self.node];
        let after = self.shard.local_points(node).ok().flatten();
        let mut st = self.shard.lock();
        st.sha256 = Some(digest);
        st.points_after = after;
        st.node_bytes = Some(self.read);
        Ok(())
    }
}

/// A collection to back up: what the server reported, and its shards.
struct Planned {
    name: String,
    config: Value,
    payload_schema: std::collections::BTreeMap<String, Value>,
    points_count: Option<u64>,
    shards: Vec<(crate::topology::ShardPlacement, Option<Arc<Shard>>)>,
    /// Drill probes drafted before the shards are read.
    probes: Vec<cairn_model::Probe>,
}

/// A shard's chain in the previous backup: its state and stored file.
type Chain = (DeltaState, crate::delta::BaseFile);

/// The chains of the last backup of `source`, by collection and shard:
/// every shard it read through partial snapshots and stored whole. The
/// files' layouts are read at once (they read chunk lists and walk the
/// local chunk index); the index is let go of before the run opens it.
async fn previous_chains(
    repo: &Repository,
    source: &str,
    dry_run: bool,
) -> Result<std::collections::HashMap<(String, u32), Chain>> {
    let latest = repo
        .snapshots()
        .await?
        .into_iter()
        .filter(|s| s.snapshot.is_cluster() && s.snapshot.source_key() == source)
        .max_by_key(|s| s.snapshot.time);
    let Some(info) = latest else {
        return Ok(Default::default());
    };
    let Some(record) = &info.snapshot.qdrant else {
        return Ok(Default::default());
    };
    let mut wanted = Vec::new();
    for c in &record.collections {
        for s in &c.shards {
            let (Some(state), Some(path), ShardStatus::Complete) = (&s.delta, &s.file, s.status)
            else {
                continue;
            };
            let Some(file) = info.snapshot.files.iter().find(|f| &f.path == path) else {
                continue;
            };
            if file.damaged.is_none() {
                wanted.push(((c.name.clone(), s.shard_id), state.clone(), file));
            }
        }
    }
    if wanted.is_empty() {
        return Ok(Default::default());
    }
    let streamer = if dry_run {
        repo.file_streamer_without_lease(wanted.len()).await?
    } else {
        repo.file_streamer(wanted.len()).await?
    };
    let layouts =
        futures::future::join_all(wanted.iter().map(|(_, _, f)| streamer.layout(&info, f))).await;
    let mut out = std::collections::HashMap::new();
    for ((key, state, _), layout) in wanted.into_iter().zip(layouts) {
        match layout {
            Ok(l) => {
                out.insert(key, (state, crate::delta::BaseFile::new(l)));
            }
            Err(e) => {
                tracing::warn!(collection = %key.0, shard = key.1, error = %e, "the previous backup of this shard cannot be continued; reading it in full");
            }
        }
    }
    Ok(out)
}

/// Deletes the snapshot files that killed runs left on this cluster's
/// nodes (their records say which), and the records.
async fn delete_left_files(
    repo: &Repository,
    cluster: &Cluster,
    progress: &dyn Progress,
) -> Result<()> {
    for (record, f) in repo.stale_node_files().await? {
        let Some(node) = cluster.nodes.iter().find(|n| n.url() == f.node) else {
            continue; // another cluster's node
        };
        node.client
            .delete_shard_snapshot(&f.collection, f.shard, &f.file)
            .await?;
        repo.forget_node_file(&record).await?;
        progress.note(&format!(
            "deleted snapshot file {} of collection {}, shard {} on {}, left by a run that was killed (pid {} on {})",
            f.file, f.collection, f.shard, f.node, f.pid, f.host
        ));
    }
    Ok(())
}

/// Backs up a live Qdrant cluster (see the module docs) and writes one
/// snapshot holding every shard snapshot and the cluster record.
///
/// # Errors
/// An unreachable node or a refused request (naming node, collection and
/// shard); an unknown collection; a shard that could not be read (unless
/// `allow_partial`); storage errors. No manifest is written on error;
/// data already uploaded is kept and reused by the next backup.
pub async fn backup(
    repo: &Repository,
    copts: ClusterBackupOptions,
    opts: BackupOptions,
    progress: Arc<dyn Progress>,
) -> Result<ClusterBackupSummary> {
    let clock = std::time::Instant::now();
    let started = opts.time.unwrap_or_else(chrono::Utc::now);
    let cluster = Arc::new(Cluster::discover(&copts.target).await?);
    let version = cluster.version().clone();
    for n in &cluster.nodes {
        if n.version.version != version.version {
            tracing::warn!(node = %n.url(), version = %n.version.version, first = %version.version, "nodes run different Qdrant versions");
        }
    }
    if !opts.dry_run {
        delete_left_files(repo, &cluster, progress.as_ref()).await?;
    }
    let any = cluster.any().client.clone();
    let all = any.collections().await?;
    let selected: Vec<String> = if copts.collections.is_empty() {
        let mut all = all.clone();
        all.sort();
        all
    } else {
        for c in &copts.collections {
            if !all.contains(c) {
                return Err(EngineError::InvalidArgument(format!(
                    "collection {c} does not exist on {} (it has: {})",
                    any.node(),
                    all.join(", ")
                ))
                .into());
            }
        }
        copts.collections.clone()
    };
    let aliases: Vec<AliasRecord> = any
        .aliases()
        .await?
        .into_iter()
        .filter(|a| selected.contains(&a.collection_name))
        .map(|a| AliasRecord {
            alias: a.alias_name,
            collection: a.collection_name,
        })
        .collect();

    // Delta pulls continue the chains of the last backup of this source.
    let mut chains = if copts.delta {
        let t = std::time::Instant::now();
        let key = source_key(&copts.target, &copts.collections);
        let chains = previous_chains(repo, &key, opts.dry_run).await?;
        tracing::debug!(
            shards = chains.len(),
            secs = t.elapsed().as_secs_f64(),
            "chains of the previous backup read"
        );
        chains
    } else {
        Default::default()
    };
    let limiter = copts.limit_download.map(RateLimiter::new);
    let handle = Handle::current();
    let mut load = vec![0usize; cluster.nodes.len()];
    let mut planned = Vec::new();
    let mut inputs = Vec::new();
    for name in &selected {
        let info = any.collection_info(name).await?;
        if let Some(mark) = info.config["metadata"][crate::restore::RESTORE_MARK].as_str() {
            tracing::warn!(collection = %name, mark, "backing up a collection a restore did not finish: it holds only part of that restore's data");
            progress.note(&format!(
                "warning: collection {name} is marked by a restore that did not finish ({mark}); this backup holds it as it is"
            ));
        }
        let placement = cluster.placement(name).await?;
        let mut shards = Vec::new();
        for sp in placement.shards() {
            // Active replicas on reachable nodes, least loaded first.
            let mut candidates: Vec<usize> = sp
                .replicas
                .iter()
                .filter(|r| r.state == ReplicaState::Active)
                .filter_map(|r| r.node)
                .collect();
            candidates.sort_by_key(|&n| (load[n], n));
            if let Some(&first) = candidates.first() {
                load[first] += 1;
            }
            let replicas = sp
                .replicas
                .iter()
                .map(|r| {
                    let at = match r.node {
                        Some(n) => cluster.nodes[n].url(),
                        None => cluster.unreached.get(&r.peer_id).map_or_else(
                            || "an unknown address".to_string(),
                            |p2p| format!("p2p {p2p}, not reached"),
                        ),
                    };
                    format!("peer {} {:?} at {at}", r.peer_id, r.state)
                })
                .collect::<Vec<_>>()
                .join("; ");
            let shard = Arc::new(Shard {
                cluster: Arc::clone(&cluster),
                records: (!opts.dry_run).then(|| repo.clone()),
                collection: name.clone(),
                shard: sp.shard_id,
                candidates,
                replicas,
                method: copts.method,
                attempts: copts.attempts.max(1),
                stall: copts.stall_timeout,
                limiter: limiter.clone(),
                handle: handle.clone(),
                state: Arc::default(),
                delta: if copts.delta {
                    Some(DeltaPlan {
                        prev: chains.remove(&(name.clone(), sp.shard_id)),
                        full_every: copts.full_every,
                    })
                } else {
                    None
                },
            });
            inputs.push(Input {
                name: cairn_model::shard_file(name, sp.shard_id),
                size: None,
                mode: 0o644,
                mtime: started.timestamp(),
                source: InputSource::Stream(Arc::new(ShardInput(Arc::clone(&shard)))),
            });
            shards.push((sp, Some(shard)));
        }
        let payload_schema = info
            .payload_schema
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or(Value::Null)))
            .collect();
        let probes = if opts.dry_run {
            Vec::new()
        } else {
            crate::probe::draft(&any, name, &payload_schema).await
        };
        planned.push(Planned {
            name: name.clone(),
            payload_schema,
            config: info.config,
            points_count: info.points_count,
            shards,
            probes,
        });
    }
    progress.note(&format!(
        "backing up {} collection(s), {} shard(s) from {} node(s) of Qdrant {}",
        planned.len(),
        inputs.len(),
        cluster.nodes.len(),
        version.version
    ));

    let shape = RunShape {
        parallel: copts.parallel.max(1),
        allow_failures: copts.allow_partial,
    };
    let host = opts.host.clone().unwrap_or_else(hostname);
    let tags = opts.tags.clone();
    let run = repo.run_inputs(inputs, opts, shape, progress).await;
    // Snapshot files made on nodes (fallback) go, whatever happened.
    for p in &planned {
        for (_, shard) in &p.shards {
            let Some(shard) = shard else { continue };
            let created = std::mem::take(&mut shard.lock().created);
            for (ni, file, record) in created {
                let node = &cluster.nodes[ni];
                match node
                    .client
                    .delete_shard_snapshot(&p.name, shard.shard, &file)
                    .await
                {
                    Ok(()) => {
                        if let Some(r) = record {
                            if let Err(e) = repo.forget_node_file(&r).await {
                                tracing::warn!(error = %e, "could not remove the record of a deleted snapshot file (the next cluster backup removes it)");
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not delete a snapshot file on the node (the next cluster backup tries again)");
                    }
                }
            }
        }
    }
    let run = run.map_err(|e| match e {
        e @ (EngineError::Source { .. } | EngineError::External { .. }) => Error::ShardsFailed {
            count: 1,
            details: format!("  {e}"),
        },
        other => Error::Engine(other),
    })?;

    let mut collections = Vec::new();
    let mut index = 0usize;
    let mut failed = Vec::new();
    for p in planned {
        let probes = crate::probe::confirm(&any, &p.name, p.probes).await;
        let mut shards = Vec::new();
        for (sp, shard) in p.shards {
            let shard = shard.expect("invariant: every planned shard has an input");
            let outcome = &run.outcomes[index];
            let file = run.files[index].as_ref().map(|f| f.path.clone());
            index += 1;
            let st = shard.lock();
            let status = if file.is_some() {
                ShardStatus::Complete
            } else {
                failed.push(format!(
                    "  collection {}, shard {}: {}",
                    p.name,
                    sp.shard_id,
                    outcome.error.clone().unwrap_or_default()
                ));
                ShardStatus::Failed
            };
            shards.push(ShardRecord {
                shard_id: sp.shard_id,
                shard_key: sp.shard_key.clone(),
                replicas: sp
                    .replicas
                    .iter()
                    .map(|r| ReplicaRecord {
                        peer_id: r.peer_id,
                        state: format!("{:?}", r.state),
                    })
                    .collect(),
                status,
                file,
                node: st.node.clone(),
                method: st.method.map(str::to_string),
                delta: st.next.clone().filter(|_| status == ShardStatus::Complete),
                points_count: st.points_before,
                points_count_after: st.points_after,
                size: st.node_bytes.unwrap_or(outcome.bytes),
                // A file put together from a partial snapshot is not the
                // bytes the node sent: no checksum for the upload.
                sha256: st
                    .sha256
                    .clone()
                    .filter(|_| status == ShardStatus::Complete && st.pull.is_none()),
                started: outcome.started,
                finished: outcome.finished,
                attempts: outcome.attempts,
                error: outcome.error.clone(),
            });
        }
        collections.push(CollectionRecord {
            name: p.name,
            config: p.config,
            payload_schema: p.payload_schema,
            points_count: p.points_count,
            shards,
            probes,
        });
    }
    let total_shards: usize = collections.iter().map(|c| c.shards.len()).sum();
    if !failed.is_empty() && (!copts.allow_partial || failed.len() == total_shards) {
        return Err(Error::ShardsFailed {
            count: failed.len(),
            details: failed.join("\n"),
        });
    }
    let record = ClusterRecord {
        source: source_key(&copts.target, &copts.collections),
        version: version.version.clone(),
        commit: version.commit.clone(),
        nodes: cluster
            .nodes
            .iter()
            .map(|n| NodeRecord {
                url: n.url(),
                peer_id: n.peer_id,
                version: n.version.version.clone(),
            })
            .collect(),
        partial: !failed.is_empty(),
        aliases,
        collections,
    };
    let snapshot = Snapshot {
        // The repository's version: manifests did not change in
        // version 2, so older readers of a version 1 repository can read them.
        version: repo.config().version,
        time: started,
        host,
        tags,
        source: copts.target.urls.clone(),
        files: run.files.into_iter().flatten().collect(),
        totals: run.totals,
        qdrant: Some(record.clone()),
    };
    let mut backup = repo.commit_snapshot(snapshot, run.commit).await?;
    backup.seconds = clock.elapsed().as_secs_f64();
    Ok(ClusterBackupSummary { backup, record })
}
