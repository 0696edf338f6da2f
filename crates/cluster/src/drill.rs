//! Restore drills: prove that a cluster backup restores and answers,
//! without touching production. A drill starts a scratch Qdrant (the
//! binary given, one node in distributed mode, on loopback, its storage in
//! a temporary directory), restores the backup into it with the verified
//! cluster restore (every shard's points count against the count recorded
//! at backup), then asks each collection the probes recorded at backup
//! (exact top ids of stored points' vectors, some filtered on a payload
//! index) and compares the answers. Nothing is written to the source
//! cluster; the scratch node and its storage are removed afterwards.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_engine::{Progress, Repository, SnapshotInfo};
use cairn_qdrant::{Client, ClientOptions};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::restore::{ClusterRestoreOptions, PointRange, Rename};
use crate::topology::QdrantTarget;

/// Settings of a drill.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    /// The Qdrant binary to restore into.
    pub qdrant_bin: PathBuf,
    /// Where the scratch node keeps its storage (a temporary directory
    /// under it; default: the system's temporary directory). It needs room
    /// for the restored collections.
    pub work_dir: Option<PathBuf>,
    /// Collections to drill (default: all of the backup).
    pub collections: Vec<String>,
    /// How long the scratch node may take to start.
    pub start_timeout: Duration,
    /// How long restored replicas may take to become Active.
    pub wait_timeout: Duration,
}

impl DrillOptions {
    /// Defaults for `qdrant_bin`.
    #[must_use]
    pub fn new(qdrant_bin: PathBuf) -> Self {
        Self {
            qdrant_bin,
            work_dir: None,
            collections: Vec::new(),
            start_timeout: Duration::from_secs(60),
            wait_timeout: Duration::from_secs(600),
        }
    }
}

/// One probe's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeOutcome {
    /// The point whose vector was the query.
    pub point: serde_json::Value,
    /// True when the query was filtered.
    pub filtered: bool,
    /// True when the restored collection gave the recorded ids.
    pub matched: bool,
    /// The ids recorded at backup.
    pub expected: Vec<serde_json::Value>,
    /// The ids the restored collection gave.
    pub got: Vec<serde_json::Value>,
}

/// One drilled collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrilledCollection {
    /// Its name.
    pub name: String,
    /// Points in the restored collection (exact count).
    pub points: u64,
    /// Points the backup recorded.
    pub expected_points: PointRange,
    /// Shards restored, each verified against its recorded count.
    pub shards: usize,
    /// The recorded probes, asked.
    pub probes: Vec<ProbeOutcome>,
}

/// What a drill found (`drill --json` prints exactly this).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillReport {
    /// The snapshot drilled.
    pub snapshot: String,
    /// True when everything restored, counted and answered as recorded.
    pub passed: bool,
    /// How it was opened: the Qdrant binary and its version.
    pub engine: String,
    /// Wall time of the drill.
    pub seconds: f64,
    /// Collections restored and asked.
    pub collections: Vec<DrilledCollection>,
    /// What failed, one line each, naming the collection (and shard or
    /// probe).
    pub failures: Vec<String>,
}

impl DrillReport {
    /// The outcome as the repository keeps it (`drills/<snapshot id>`),
    /// finished now on this host.
    fn record(&self) -> cairn_model::DrillRecord {
        let probes = self.collections.iter().map(|c| c.probes.len()).sum();
        let probes_matched = self
            .collections
            .iter()
            .flat_map(|c| &c.probes)
            .filter(|p| p.matched)
            .count();
        cairn_model::DrillRecord {
            snapshot: self.snapshot.clone(),
            time: chrono::Utc::now(),
            passed: self.passed,
            engine: self.engine.clone(),
            seconds: self.seconds,
            collections: self.collections.len(),
            probes,
            probes_matched,
            failures: self.failures.clone(),
            host: cairn_engine::seams::hostname(),
        }
    }
}

/// A scratch Qdrant node, stopped (and its storage removed) on drop.
struct ScratchNode {
    child: std::process::Child,
    dir: tempfile::TempDir,
    url: String,
}

impl Drop for ScratchNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ScratchNode {
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("qdrant.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().rev().take(15).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    async fn start(bin: &Path, work_dir: Option<&Path>, timeout: Duration) -> Result<Self> {
        // Absolute: the node runs in its scratch directory.
        let bin = &std::fs::canonicalize(bin)
            .ok()
            .filter(|b| b.is_file())
            .ok_or_else(|| {
                Error::Drill(format!(
                    "no Qdrant binary at {} (--qdrant-bin names the server to restore into)",
                    bin.display()
                ))
            })?;
        let dir = match work_dir {
            Some(d) => tempfile::Builder::new()
                .prefix("cairn-drill-")
                .tempdir_in(d),
            None => tempfile::Builder::new().prefix("cairn-drill-").tempdir(),
        }
        .map_err(|e| Error::Drill(format!("cannot make a scratch directory: {e}")))?;
        let ports = free_ports(3)?;
        let (http, grpc, p2p) = (ports[0], ports[1], ports[2]);
        let log = std::fs::File::create(dir.path().join("qdrant.log"))
            .map_err(|e| Error::Drill(format!("cannot write the scratch node's log: {e}")))?;
        let child = std::process::Command::new(bin)
            .arg("--uri")
            .arg(format!("http://127.0.0.1:{p2p}"))
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("QDRANT__STORAGE__STORAGE_PATH", dir.path().join("storage"))
            .env(
                "QDRANT__STORAGE__SNAPSHOTS_PATH",
                dir.path().join("snapshots"),
            )
            .env("QDRANT__SERVICE__HOST", "127.0.0.1")
            .env("QDRANT__SERVICE__HTTP_PORT", http.to_string())
            .env("QDRANT__SERVICE__GRPC_PORT", grpc.to_string())
            .env("QDRANT__CLUSTER__ENABLED", "true")
            .env("QDRANT__CLUSTER__P2P__PORT", p2p.to_string())
            .env("QDRANT__TELEMETRY_DISABLED", "true")
            .env("QDRANT__LOG_LEVEL", "WARN")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| Error::Drill(e.to_string()))?)
            .stderr(log)
            .spawn()
            .map_err(|e| Error::Drill(format!("cannot start {}: {e}", bin.display())))?;
        let mut node = Self {
            child,
            dir,
            url: format!("http://127.0.0.1:{http}"),
        };
        let client = Client::new(&node.url, ClientOptions::default())?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = node.child.try_wait() {
                return Err(Error::Drill(format!(
                    "the scratch Qdrant ({}) exited with {status} before answering; its log:\n{}",
                    bin.display(),
                    node.log_tail()
                )));
            }
            if client.version().await.is_ok() && client.cluster().await.is_ok() {
                return Ok(node);
            }
            if Instant::now() >= deadline {
                let tail = node.log_tail();
                let _ = node.child.kill();
                return Err(Error::Drill(format!(
                    "the scratch Qdrant ({}) did not answer within {}s; its log:\n{tail}",
                    bin.display(),
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// `n` loopback ports free now (the OS picks them).
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::Drill(format!("no free loopback port: {e}")))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::Drill(e.to_string()))
}

/// Drills the cluster backup `info`: restores it into a scratch Qdrant
/// started from `opts.qdrant_bin`, asks it the recorded probes, and records
/// the outcome in the repository (`drills/<snapshot id>`). A drill that runs
/// to its end returns its report, passed or not; errors are for a drill
/// that could not be run (not a cluster backup, no Qdrant binary, the
/// scratch node not starting) or recorded.
///
/// # Errors
/// As above.
pub async fn drill(
    repo: &Repository,
    info: &SnapshotInfo,
    opts: &DrillOptions,
    progress: Arc<dyn Progress>,
) -> Result<DrillReport> {
    let clock = Instant::now();
    let record = info.snapshot.qdrant.as_ref().ok_or_else(|| {
        Error::Drill(format!(
            "snapshot {} is not a cluster backup (drills restore cluster backups into Qdrant)",
            info.id.short()
        ))
    })?;
    for c in &opts.collections {
        if !record.collections.iter().any(|r| &r.name == c) {
            return Err(Error::Drill(format!(
                "snapshot {} has no collection {c}",
                info.id.short()
            )));
        }
    }
    let node = ScratchNode::start(
        &opts.qdrant_bin,
        opts.work_dir.as_deref(),
        opts.start_timeout,
    )
    .await?;
    let client = Client::new(&node.url, ClientOptions::default())?;
    let version = client.version().await?;
    let engine = format!("Qdrant {} ({})", version.version, opts.qdrant_bin.display());
    progress.note(&format!(
        "drill of snapshot {}: restoring into a scratch {engine} at {}",
        info.id.short(),
        node.url
    ));
    let mut ropts = ClusterRestoreOptions::new(QdrantTarget::new(&[node.url.clone()], None));
    ropts.collections = opts
        .collections
        .iter()
        .map(|c| Rename {
            backed_up: c.clone(),
            restore_as: c.clone(),
        })
        .collect();
    ropts.replication_factor = Some(1);
    ropts.force = true;
    ropts.wait_timeout = opts.wait_timeout;
    let mut report = DrillReport {
        snapshot: info.id.to_string(),
        passed: false,
        engine,
        seconds: 0.0,
        collections: Vec::new(),
        failures: Vec::new(),
    };
    match crate::restore(repo, info, &ropts, Arc::clone(&progress)).await {
        Err(e) => report
            .failures
            .push(format!("the backup did not restore: {e}")),
        Ok(summary) => {
            for c in summary.collections {
                let rec = record
                    .collections
                    .iter()
                    .find(|r| r.name == c.source)
                    .expect("invariant: restored collections come from the record");
                let probes = ask(&client, &c.name, &rec.probes, &mut report.failures).await;
                progress.note(&format!(
                    "drill: collection {}: {} points in {} shard(s) verified; {} of {} probes answered as recorded",
                    c.name,
                    c.points,
                    c.shards.len(),
                    probes.iter().filter(|p| p.matched).count(),
                    probes.len()
                ));
                report.collections.push(DrilledCollection {
                    name: c.name,
                    points: c.points,
                    expected_points: c.expected,
                    shards: c.shards.len(),
                    probes,
                });
            }
        }
    }
    drop(node);
    report.passed = report.failures.is_empty();
    report.seconds = clock.elapsed().as_secs_f64();
    repo.record_drill(&info.id, &report.record()).await?;
    Ok(report)
}

/// Asks `collection` the recorded `probes`; each one that cannot be asked
/// or answers otherwise adds a line to `failures`.
async fn ask(
    client: &Client,
    collection: &str,
    probes: &[cairn_model::Probe],
    failures: &mut Vec<String>,
) -> Vec<ProbeOutcome> {
    let mut out = Vec::new();
    for p in probes {
        let got = match crate::probe::answer(client, collection, p).await {
            Ok(got) => got,
            Err(e) => {
                failures.push(format!(
                    "collection {collection}: probe of point {} could not be asked: {e}",
                    p.point
                ));
                continue;
            }
        };
        let matched = crate::probe::same_ids(&got, &p.top);
        if !matched {
            failures.push(format!(
                "collection {collection}: the probe of point {}{} answered {} but the backup recorded {}",
                p.point,
                if p.filter.is_some() { " (filtered)" } else { "" },
                ids(&got),
                ids(&p.top)
            ));
        }
        out.push(ProbeOutcome {
            point: p.point.clone(),
            filtered: p.filter.is_some(),
            matched,
            expected: p.top.clone(),
            got,
        });
    }
    out
}

fn ids(v: &[serde_json::Value]) -> String {
    let s: Vec<String> = v.iter().map(serde_json::Value::to_string).collect();
    format!("[{}]", s.join(", "))
}
