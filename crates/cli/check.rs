//! `cairn check`.

use std::sync::Arc;

use anyhow::{bail, Result};
use cairn_engine::ReadData;

use crate::global::GlobalArgs;
use crate::progress::Bar;
use crate::size::human;

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Also read every pack and verify every chunk's hash.
    #[arg(long, conflicts_with = "read_data_subset")]
    read_data: bool,
    /// Read and verify part of the packs: a share (10%) or a part (1/5: run
    /// 1/5 to 5/5 on five days to cover everything).
    #[arg(long, value_name = "SUBSET", value_parser = ReadData::parse_subset)]
    read_data_subset: Option<ReadData>,
}

pub async fn check(g: &GlobalArgs, a: CheckArgs) -> Result<()> {
    let repo = crate::repo::open(g).await?;
    let read = match (a.read_data, a.read_data_subset) {
        (true, _) => ReadData::All,
        (false, Some(s)) => s,
        (false, None) => ReadData::None,
    };
    let bar = Arc::new(Bar::new(g));
    let r = repo.check(read, bar).await?;
    if g.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        for e in &r.errors {
            println!("error: {e}");
        }
        for (id, files) in &r.damaged {
            println!("damaged snapshot {id}:");
            for d in files {
                println!("  {}: {}", d.path, d.why);
            }
        }
        for w in &r.warnings {
            println!("note: {w}");
        }
        println!(
            "checked {} snapshots and {} packs{}: {}",
            r.snapshots,
            r.packs,
            if r.packs_read > 0 {
                format!(", read {} packs ({})", r.packs_read, human(r.bytes_read))
            } else {
                String::new()
            },
            if r.is_clean() {
                "no errors".to_string()
            } else {
                format!(
                    "{} error(s), {} damaged snapshot(s)",
                    r.errors.len(),
                    r.damaged.len()
                )
            }
        );
    }
    if !r.is_clean() {
        if !g.json {
            eprintln!("cairn: the repository is damaged; docs/operations.md, \"When check reports errors\", says what to do");
        }
        bail!(crate::global::Reported(crate::global::exit::INTEGRITY));
    }
    Ok(())
}
