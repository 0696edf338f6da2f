//! `cairn drill`: restore a cluster backup into a scratch Qdrant and ask
//! it the queries recorded at backup.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use cairn_cluster::drill::DrillOptions;
use cairn_engine::SnapshotFilter;
use cairn_model::DrillRecord;

use crate::global::GlobalArgs;
use crate::progress::Bar;

#[derive(Debug, clap::Args)]
pub struct DrillArgs {
    /// The cluster backup to drill: an id, a prefix, or `latest`.
    #[arg(default_value = "latest")]
    snapshot: String,
    /// The Qdrant server binary to restore into (started on loopback with
    /// its storage in a temporary directory, stopped afterwards).
    #[arg(long, value_name = "PATH", env = "CAIRN_QDRANT_BIN")]
    qdrant_bin: PathBuf,
    /// Drill only this collection (repeatable; default: all of the backup).
    #[arg(long = "collection", value_name = "NAME")]
    collections: Vec<String>,
    /// Where the scratch node keeps its storage (needs room for the
    /// restored collections; default: the system's temporary directory).
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Seconds restored replicas may take to become Active.
    #[arg(long, default_value_t = 600, value_name = "SECS")]
    wait_timeout: u64,
    /// Only of this source (as `snapshots` shows it), for `latest`.
    #[arg(long, value_name = "SOURCE")]
    source: Option<String>,
}

/// One line for `snapshots`.
pub fn line(d: &DrillRecord) -> String {
    format!(
        "drill {} {}: {} collection(s), {}/{} probes as recorded, {:.1}s on {}{}",
        if d.passed { "passed" } else { "FAILED" },
        crate::size::time(&d.time),
        d.collections,
        d.probes_matched,
        d.probes,
        d.seconds,
        d.engine,
        d.failures
            .first()
            .map_or(String::new(), |f| format!("; {f}"))
    )
}

pub async fn drill(g: &GlobalArgs, a: DrillArgs) -> Result<()> {
    let repo = crate::repo::open(g).await?;
    repo.require_read("drill backups")?;
    let filter = SnapshotFilter {
        source: a.source.clone(),
        cluster: true,
        collections: a.collections.clone(),
    };
    let info = repo.find_snapshot_in(&a.snapshot, &filter).await?;
    let mut opts = DrillOptions::new(a.qdrant_bin.clone());
    opts.collections.clone_from(&a.collections);
    opts.work_dir.clone_from(&a.work_dir);
    opts.wait_timeout = Duration::from_secs(a.wait_timeout);
    let bar = Arc::new(Bar::new(g));
    let report = cairn_cluster::drill::drill(&repo, &info, &opts, bar)
        .await
        .with_context(|| format!("drilling snapshot {}", info.id.short()))?;
    if g.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        for c in &report.collections {
            println!(
                "collection {}: {} points in {} shard(s) (backup: {}), {}/{} probes answered as recorded",
                c.name,
                c.points,
                c.shards,
                c.expected_points,
                c.probes.iter().filter(|p| p.matched).count(),
                c.probes.len()
            );
        }
        for f in &report.failures {
            println!("failed: {f}");
        }
        println!(
            "drill of snapshot {} {} in {:.1}s on {}",
            info.id.short(),
            if report.passed { "passed" } else { "FAILED" },
            report.seconds,
            report.engine
        );
    }
    if !report.passed {
        if !g.json {
            eprintln!(
                "cairn: snapshot {} did not restore and answer as recorded",
                info.id.short()
            );
        }
        bail!(crate::global::Reported(crate::global::exit::INTEGRITY));
    }
    Ok(())
}
