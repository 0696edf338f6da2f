//! `backup --qdrant` and `restore --to-qdrant`: arguments, engine calls,
//! tables and JSON.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cairn_cluster::{
    ApiKey, ClusterBackupOptions, ClusterRestoreOptions, QdrantTarget, Rename, SnapshotMethod,
};
use cairn_engine::{
    BackupOptions, ClusterRecord, CollectionRecord, Repository, ShardStatus, SnapshotInfo,
};

use crate::global::GlobalArgs;
use crate::progress::Bar;
use crate::size::{human, parse_size};

/// The API key option both commands take. The value never appears in help
/// output or logs.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiKeyArg {
    /// Qdrant API key or JWT, sent as the `api-key` header.
    #[arg(
        long,
        env = "QDRANT_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    qdrant_api_key: Option<String>,
}

impl ApiKeyArg {
    fn key(&self) -> Option<ApiKey> {
        self.qdrant_api_key.clone().and_then(ApiKey::new)
    }
}

#[derive(Debug, clap::Args)]
pub struct ClusterBackupArgs {
    /// Back up a live Qdrant cluster: REST URLs of one or more nodes
    /// (comma-separated or repeated); the other nodes are discovered.
    #[arg(long, value_name = "URL[,URL...]")]
    pub qdrant: Vec<String>,
    /// Only this collection (repeatable); default: every collection.
    #[arg(long = "collection", value_name = "NAME", requires = "qdrant")]
    collections: Vec<String>,
    /// Shards read at once.
    #[arg(long, value_name = "N", default_value_t = 4, requires = "qdrant")]
    parallel: usize,
    /// Most bytes per second read from the cluster, all shards together (e.g. 50MiB).
    #[arg(long, value_name = "RATE", value_parser = parse_size, requires = "qdrant")]
    limit_download: Option<u64>,
    /// Record shards that cannot be read as failed (a partial backup) instead of failing.
    #[arg(long, requires = "qdrant")]
    allow_partial: bool,
    /// How shard snapshots are read: stream them (no file on the node), create
    /// and download snapshot files, or auto (stream where the node can).
    #[arg(long, value_enum, default_value = "auto", requires = "qdrant")]
    snapshot_method: Method,
    /// Attempts per shard; a broken stream is read again from the start.
    #[arg(long, value_name = "N", default_value_t = 3, requires = "qdrant")]
    attempts: u32,
    /// Read from each node only the segment files that changed since the
    /// previous backup of the shard (Qdrant's partial snapshots, 1.15+),
    /// and store a complete shard snapshot all the same.
    #[arg(long, requires = "qdrant")]
    delta: bool,
    /// With --delta: read each shard in full again after N nights (0: only
    /// when its chain breaks).
    #[arg(long, value_name = "N", default_value_t = 0, requires = "delta")]
    full_every: u32,
    #[command(flatten)]
    key: ApiKeyArg,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Method {
    Auto,
    Stream,
    File,
}

#[derive(Debug, clap::Args)]
pub struct ClusterRestoreArgs {
    /// Restore a cluster backup into a running Qdrant cluster: REST URLs of
    /// one or more of its nodes (comma-separated or repeated).
    #[arg(long, value_name = "URL[,URL...]")]
    pub to_qdrant: Vec<String>,
    /// Restore only this collection, optionally under a new name (repeatable).
    #[arg(long = "collection", value_name = "NAME[:NEWNAME]")]
    collections: Vec<String>,
    /// Replication factor of the restored collections (default: the backup's).
    #[arg(long, value_name = "N", requires = "to_qdrant")]
    replication_factor: Option<u32>,
    /// Restore despite a version mismatch; drop and re-create an existing
    /// collection whose configuration differs; re-point existing aliases.
    #[arg(long, requires = "to_qdrant")]
    force: bool,
    /// Restore under a new name, then point this alias at it atomically (zero downtime).
    #[arg(long, value_name = "ALIAS", requires = "to_qdrant")]
    swap_alias: Option<String>,
    /// Shard snapshots uploaded at once.
    #[arg(
        long = "upload-parallel",
        value_name = "N",
        default_value_t = 2,
        requires = "to_qdrant"
    )]
    parallel: usize,
    /// Seconds to wait for every replica to become Active.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 600,
        requires = "to_qdrant"
    )]
    wait_timeout: u64,
    /// Seconds an upload to a node may make no progress before it fails
    /// (a node that accepts the upload and then hangs); with the whole
    /// shard sent, the node also gets a second per 50 MiB to load it.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 300,
        requires = "to_qdrant"
    )]
    stall_timeout: u64,
    #[command(flatten)]
    key: ApiKeyArg,
}

impl ClusterRestoreArgs {
    /// The collections asked for, each with the name to restore it as.
    fn renames(&self) -> Vec<Rename> {
        self.collections
            .iter()
            .map(|c| {
                let (from, to) = match c.split_once(':') {
                    Some((from, to)) if !to.is_empty() => (from, to),
                    Some((from, _)) => (from, from),
                    None => (c.as_str(), c.as_str()),
                };
                Rename {
                    backed_up: from.to_string(),
                    restore_as: to.to_string(),
                }
            })
            .collect()
    }

    /// The backed-up names asked for.
    pub fn collection_names(&self) -> Vec<String> {
        self.renames().into_iter().map(|r| r.backed_up).collect()
    }
}

pub async fn backup(
    g: &GlobalArgs,
    repo: &Repository,
    a: &ClusterBackupArgs,
    opts: BackupOptions,
) -> Result<()> {
    let target = QdrantTarget::new(&a.qdrant, a.key.key());
    let mut copts = ClusterBackupOptions::new(target);
    copts.collections.clone_from(&a.collections);
    copts.parallel = a.parallel;
    copts.limit_download = a.limit_download;
    copts.allow_partial = a.allow_partial;
    copts.attempts = a.attempts;
    copts.delta = a.delta;
    copts.full_every = a.full_every;
    copts.method = match a.snapshot_method {
        Method::Auto => SnapshotMethod::Auto,
        Method::Stream => SnapshotMethod::Stream,
        Method::File => SnapshotMethod::File,
    };
    let started = Instant::now();
    let bar = Arc::new(Bar::new(g));
    let opts_dry_run = opts.dry_run;
    let s = cairn_cluster::backup(&repo, copts, opts, bar).await?;
    let secs = started.elapsed().as_secs_f64();
    let t = &s.backup.totals;
    let r = &s.record;
    if g.json {
        println!("{}", serde_json::to_string(&s)?);
        return Ok(());
    }
    println!(
        "{:<20} {:>5} {:<28} {:>10} {:>9} {:>7} {:>8}  STATUS",
        "COLLECTION", "SHARD", "NODE", "SIZE", "POINTS", "SECS", "SHA256"
    );
    for c in &r.collections {
        for sh in &c.shards {
            let secs = match (&sh.started, &sh.finished) {
                (Some(a), Some(b)) => seconds_between(a, b),
                _ => 0.0,
            };
            let status = match sh.status {
                ShardStatus::Complete => {
                    let mut notes = Vec::new();
                    if let Some(m) = sh.method.as_deref().filter(|m| *m != "stream") {
                        notes.push(m.to_string());
                    }
                    if sh.attempts > 1 {
                        notes.push(format!("{} attempts", sh.attempts));
                    }
                    if notes.is_empty() {
                        "ok".to_string()
                    } else {
                        format!("ok ({})", notes.join(", "))
                    }
                }
                ShardStatus::Failed => format!("FAILED: {}", sh.error.clone().unwrap_or_default()),
            };
            println!(
                "{:<20} {:>5} {:<28} {:>10} {:>9} {:>7.1} {:>8}  {status}",
                c.name,
                sh.shard_id,
                sh.node.clone().unwrap_or_else(|| "-".into()),
                human(sh.size),
                sh.points_count.map_or("-".into(), |p| p.to_string()),
                secs,
                sh.sha256.as_deref().map_or("-", |h| &h[..8.min(h.len())]),
            );
        }
    }
    println!(
        "snapshot {} {}{}: Qdrant {}, {}, {} read in {:.2}s ({}/s); {}",
        s.backup.id.short(),
        if opts_dry_run {
            "not written (dry run)"
        } else {
            "saved"
        },
        if r.partial { " (PARTIAL)" } else { "" },
        r.version,
        counts(r),
        human(t.bytes),
        secs,
        human((t.bytes as f64 / secs.max(1e-9)) as u64),
        crate::size::added(t)
    );
    Ok(())
}

fn seconds_between(a: &cairn_engine::Time, b: &cairn_engine::Time) -> f64 {
    (*b - *a).num_milliseconds() as f64 / 1000.0
}

pub async fn restore(
    g: &GlobalArgs,
    repo: &Repository,
    info: &SnapshotInfo,
    a: &ClusterRestoreArgs,
) -> Result<()> {
    if a.renames().iter().any(|r| r.backed_up.is_empty()) {
        bail!(cairn_engine::Error::InvalidArgument(
            "--collection needs a name (NAME or NAME:NEWNAME)".into()
        ));
    }
    let target = QdrantTarget::new(&a.to_qdrant, a.key.key());
    let mut ropts = ClusterRestoreOptions::new(target);
    ropts.collections = a.renames();
    ropts.replication_factor = a.replication_factor;
    ropts.force = a.force;
    ropts.swap_alias.clone_from(&a.swap_alias);
    ropts.parallel = a.parallel;
    ropts.wait_timeout = Duration::from_secs(a.wait_timeout);
    ropts.stall_timeout = Duration::from_secs(a.stall_timeout.max(1));
    let started = Instant::now();
    let bar = Arc::new(Bar::new(g));
    let s = cairn_cluster::restore(&repo, info, &ropts, bar)
        .await
        .with_context(|| format!("restoring snapshot {} into Qdrant", info.id.short()))?;
    let secs = started.elapsed().as_secs_f64();
    if g.json {
        println!("{}", serde_json::to_string(&s)?);
        return Ok(());
    }
    println!(
        "{:<20} {:>5} {:<28} {:>10} {:>9} {:>8} {:>7}",
        "COLLECTION", "SHARD", "UPLOADED TO", "SIZE", "POINTS", "REPLICAS", "SECS"
    );
    for c in &s.collections {
        for sh in &c.shards {
            println!(
                "{:<20} {:>5} {:<28} {:>10} {:>9} {:>8} {:>7.1}",
                c.name,
                sh.target_shard_id,
                sh.node,
                human(sh.bytes),
                sh.points,
                sh.replicas,
                sh.seconds
            );
        }
    }
    for c in &s.collections {
        let from = if c.source == c.name {
            String::new()
        } else {
            format!(" (from {})", c.source)
        };
        println!(
            "collection {}{from}: {} points in {} shard(s), every replica Active, counts verified",
            c.name,
            c.points,
            c.shards.len()
        );
    }
    for a in &s.aliases {
        println!("alias {} -> {}", a.alias, a.collection);
    }
    for alias in &s.aliases_skipped {
        println!(
            "alias {alias} left as it is: it points at another collection (--force re-points it)"
        );
    }
    if let Some(sw) = &s.swapped {
        println!(
            "alias {} swapped atomically: {} -> {}",
            sw.alias,
            sw.from.as_deref().unwrap_or("(unset)"),
            sw.to
        );
    }
    println!(
        "restored snapshot {} (Qdrant {}) into {} node(s) running Qdrant {} in {secs:.1}s; {} leftover snapshot file(s) deleted",
        info.id.short(),
        s.backup_version,
        s.nodes,
        s.target_version,
        s.cleaned
    );
    Ok(())
}

/// "2 collections, 6 shards", for a backup's summary line.
fn counts(r: &ClusterRecord) -> String {
    let shards: usize = r.collections.iter().map(|c| c.shards.len()).sum();
    let plural = |n: usize, one: &str| format!("{n} {one}{}", if n == 1 { "" } else { "s" });
    format!(
        "{}, {}",
        plural(r.collections.len(), "collection"),
        plural(shards, "shard")
    )
}

/// "qdrant 1.18.3: 2 coll, 6 shards" (and "PARTIAL (1 failed)"), for the
/// snapshot table's content column.
pub fn record_content(r: &ClusterRecord) -> String {
    let shards: usize = r.collections.iter().map(|c| c.shards.len()).sum();
    let failed: usize = r
        .collections
        .iter()
        .flat_map(|c| &c.shards)
        .filter(|s| s.status == ShardStatus::Failed)
        .count();
    let mut out = format!(
        "qdrant {}: {} coll, {} shards",
        r.version,
        r.collections.len(),
        shards
    );
    if failed > 0 {
        out.push_str(&format!(", PARTIAL ({failed} failed)"));
    }
    out
}

/// One collection of a record, for `cairn snapshots`.
pub fn collection_line(c: &CollectionRecord) -> String {
    let failed: Vec<String> = c
        .shards
        .iter()
        .filter(|s| s.status == ShardStatus::Failed)
        .map(|s| s.shard_id.to_string())
        .collect();
    let size: u64 = c.shards.iter().map(|s| s.size).sum();
    let mut line = format!(
        "{}: {} shard(s), {} points, {}",
        c.name,
        c.shards.len(),
        c.shard_points(),
        human(size)
    );
    if !failed.is_empty() {
        line.push_str(&format!(", missing shard(s) {}", failed.join(",")));
    }
    line
}
