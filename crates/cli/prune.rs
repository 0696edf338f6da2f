//! `cairn prune` and `cairn unlock`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use cairn_engine::{PruneOptions, PruneSummary, Repository};

use crate::global::GlobalArgs;
use crate::progress::Bar;
use crate::size::human;

/// How a prune repacks and how long it waits; shared by `prune` and `forget --prune`.
#[derive(Debug, Clone, clap::Args)]
pub struct PruneTuning {
    /// Repack a pack when more than this share of it is unused (e.g. 10%, 0.25).
    #[arg(long, value_name = "SHARE", default_value = "10%", value_parser = parse_share)]
    max_unused: f64,
    /// Wait at least this long after marking before deleting (e.g. 1h); backups
    /// that were running when the plan was made are always waited for.
    #[arg(long, value_name = "DURATION", default_value = "0h", value_parser = parse_grace)]
    grace: Duration,
}

#[derive(Debug, Clone, clap::Args)]
pub struct PruneArgs {
    #[command(flatten)]
    tuning: PruneTuning,
    /// Print what would be deleted, downloaded and uploaded; change nothing.
    #[arg(long, short = 'n')]
    dry_run: bool,
}

fn parse_share(s: &str) -> Result<f64, String> {
    let v = match s.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|x| x / 100.0),
        None => s.trim().parse::<f64>(),
    }
    .map_err(|_| format!("{s:?} is not a share (10%, 0.1)"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{s:?} is not between 0% and 100%"))
    }
}

fn parse_grace(s: &str) -> Result<Duration, String> {
    cairn_engine::retention::parse_duration(s).map(|d| d.to_std().unwrap_or_default())
}

/// Runs a prune.
pub async fn run_prune(
    g: &GlobalArgs,
    repo: &Repository,
    t: &PruneTuning,
    dry_run: bool,
) -> Result<PruneSummary> {
    let opts = PruneOptions {
        max_unused: t.max_unused,
        dry_run,
        grace: t.grace,
        ..PruneOptions::default()
    };
    let bar = Arc::new(Bar::new(g));
    Ok(repo.prune(&opts, bar).await?)
}

pub async fn prune(g: &GlobalArgs, a: PruneArgs) -> Result<()> {
    let repo = crate::repo::open(g).await?;
    let s = run_prune(g, &repo, &a.tuning, a.dry_run).await?;
    if g.json {
        println!("{}", serde_json::to_string(&s)?);
    } else {
        print(&s);
    }
    Ok(())
}

/// The prune summary for people.
pub fn print(s: &PruneSummary) {
    let m = &s.mark;
    println!(
        "{} snapshots need {} of the {} in {} packs",
        m.snapshots,
        human(m.live_bytes),
        human(m.pack_bytes),
        m.packs
    );
    println!(
        "to delete: {} packs unused, {} repacked: {}; to download {}, to upload {}; about {} requests",
        m.packs_unused,
        m.packs_repacked,
        human(m.bytes_to_delete),
        human(m.bytes_to_download),
        human(m.bytes_to_upload),
        m.requests
    );
    if let Some(until) = m.locked_until {
        println!(
            "waiting: {} packs are under Object Lock until {} at the latest; a prune after that deletes what is still unneeded",
            m.packs_locked,
            crate::size::time(&until)
        );
    }
    for d in &m.damaged {
        println!("damaged: {d}");
    }
    if s.dry_run {
        println!("dry run: nothing was changed");
        return;
    }
    for r in &s.swept {
        println!(
            "plan {}: deleted {} packs ({}) and {} index files{}",
            r.plan,
            r.packs_deleted,
            human(r.bytes_deleted),
            r.index_deleted,
            if r.packs_spared > 0 {
                format!("; kept {} packs newer snapshots need", r.packs_spared)
            } else {
                String::new()
            }
        );
        if r.packs_locked > 0 {
            println!(
                "plan {}: left {} packs whose Object Lock was extended; a later prune deletes them",
                r.plan, r.packs_locked
            );
        }
    }
    for cairn_engine::Deferred { plan: p, why } in &s.deferred {
        println!("plan {p} waits for a later prune: {why}");
    }
    if m.plan.is_none() && s.swept.is_empty() && s.deferred.is_empty() {
        println!("nothing to prune");
    }
}

pub async fn unlock(g: &GlobalArgs) -> Result<()> {
    let repo = crate::repo::open(g).await?;
    let s = repo.unlock().await?;
    if g.json {
        println!("{}", serde_json::to_string(&s)?);
        return Ok(());
    }
    let (removed, live) = (&s.removed, &s.live);
    for r in removed {
        println!("removed lapsed lease: {r}");
    }
    for l in live {
        println!("left live lease: {l}");
    }
    if removed.is_empty() && live.is_empty() {
        println!("no leases");
    }
    Ok(())
}
