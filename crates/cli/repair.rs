//! `cairn repair index` and `cairn repair snapshots`.

use std::sync::Arc;

use anyhow::Result;

use crate::global::GlobalArgs;
use crate::progress::Bar;

#[derive(Debug, clap::Subcommand)]
pub enum RepairCommand {
    /// Rebuild the index files from the packs' own trailers.
    Index,
    /// Write salvaged copies of damaged snapshots, their damaged files marked.
    Snapshots {
        /// Delete each damaged original once its salvaged copy is written.
        #[arg(long)]
        forget: bool,
        /// Show what would be written; change nothing.
        #[arg(long, short = 'n')]
        dry_run: bool,
    },
}

pub async fn repair(g: &GlobalArgs, cmd: RepairCommand) -> Result<()> {
    let repo = crate::repo::open(g).await?;
    let bar = Arc::new(Bar::new(g));
    match cmd {
        RepairCommand::Index => {
            let s = repo.repair_index(bar).await?;
            if g.json {
                println!("{}", serde_json::to_string(&s)?);
            } else {
                for u in &s.unreadable {
                    println!("unreadable: {u}");
                }
                println!(
                    "indexed {} packs in {} new index file(s); replaced {} old one(s)",
                    s.packs, s.written, s.removed
                );
            }
        }
        RepairCommand::Snapshots { forget, dry_run } => {
            let r = repo.repair_snapshots(forget, dry_run, bar).await?;
            if g.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                for x in &r.repaired {
                    println!(
                        "snapshot {}: {} damaged file(s) marked{}",
                        x.from.short(),
                        x.damaged.len(),
                        match (x.to, forget) {
                            (Some(t), true) =>
                                format!("; salvaged as {} (original deleted)", t.short()),
                            (Some(t), false) =>
                                format!("; salvaged as {} (original kept)", t.short()),
                            (None, _) => " (dry run)".into(),
                        }
                    );
                    for d in &x.damaged {
                        println!("  {}: {}", d.path, d.why);
                    }
                }
                if r.repaired.is_empty() {
                    println!("no damaged snapshots");
                }
            }
        }
    }
    Ok(())
}
