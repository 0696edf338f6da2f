//! `cairn forget`: arguments, engine call, table and JSON.

use anyhow::Result;
use cairn_engine::{ForgetAction, ForgetOptions, GroupBy};

use crate::global::GlobalArgs;

#[derive(Debug, clap::Args)]
pub struct ForgetArgs {
    /// Snapshots to forget by id (or unique prefix), instead of a policy.
    #[arg(value_name = "ID")]
    ids: Vec<String>,
    #[command(flatten)]
    policy: crate::policy::PolicyArgs,
    /// Apply the policy to each source, host, host and paths, or to everything at once.
    #[arg(long, value_enum, default_value = "source")]
    group_by: Group,
    /// Only snapshots of this source.
    #[arg(long, value_name = "SOURCE")]
    source: Option<String>,
    /// Only snapshots with this tag (repeatable: with every one given).
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// Show what would be kept and removed, and by which rule; delete nothing.
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// Then prune: delete the data no remaining snapshot needs.
    #[arg(long)]
    prune: bool,
    /// Let the policy remove every snapshot of a group (refused otherwise).
    #[arg(long)]
    allow_empty: bool,
    #[command(flatten)]
    prune_tuning: crate::prune::PruneTuning,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Group {
    Source,
    Host,
    Paths,
    None,
}

pub async fn forget(g: &GlobalArgs, a: ForgetArgs) -> Result<()> {
    let repo = crate::repo::open(g).await?;
    let opts = ForgetOptions {
        ids: a.ids,
        policy: a.policy.policy(),
        group_by: match a.group_by {
            Group::Source => GroupBy::Source,
            Group::Host => GroupBy::Host,
            Group::Paths => GroupBy::Paths,
            Group::None => GroupBy::Nothing,
        },
        source: a.source,
        tags: a.tags,
        dry_run: a.dry_run,
        allow_empty: a.allow_empty,
    };
    let mut s = repo.forget(&opts).await?;
    if a.prune && !s.dry_run {
        s.prune = Some(crate::prune::run_prune(g, &repo, &a.prune_tuning, false).await?);
    }
    if g.json {
        println!("{}", serde_json::to_string(&s)?);
        return Ok(());
    }
    for gr in &s.groups {
        let kept = gr
            .items
            .iter()
            .filter(|i| i.action == ForgetAction::Keep)
            .count();
        println!("{}: keep {kept}, remove {}", gr.key, gr.items.len() - kept);
        for i in &gr.items {
            println!(
                "  {:<6} {:<10} {:<27} {}",
                if i.action == ForgetAction::Keep {
                    "keep"
                } else {
                    "remove"
                },
                i.id.short(),
                crate::size::time(&i.time),
                i.reasons.join(", ")
            );
        }
    }
    if s.dry_run {
        println!(
            "dry run: {} snapshot(s) would be removed; nothing was deleted",
            s.removed.len()
        );
    } else {
        println!("removed {} snapshot(s)", s.removed.len());
        for l in &s.locked {
            println!(
                "kept {}: under Object Lock until {}; a forget after that removes it",
                l.id.short(),
                crate::size::time(&l.until)
            );
        }
        match &s.prune {
            Some(p) => crate::prune::print(p),
            None => println!("`cairn prune` frees the data only they used"),
        }
    }
    Ok(())
}
