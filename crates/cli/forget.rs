//! `cairn forget`: arguments, engine call, table and JSON.

use anyhow::Result;
use cairn_engine::retention::parse_duration;
use cairn_engine::{ForgetAction, ForgetOptions, GroupBy, RetentionPolicy};

use crate::GlobalArgs;

#[derive(Debug, clap::Args)]
pub struct ForgetArgs {
    /// Snapshots to forget by id (or unique prefix), instead of a policy.
    #[arg(value_name = "ID")]
    ids: Vec<String>,
    #[command(flatten)]
    policy: PolicyArgs,
    /// Apply the policy to each source, host, host and paths, or to everything at once.
    #[arg(long, value_enum, default_value = "source")]
    group_by: Group,
    /// Only snapshots of this source.
    #[arg(long, value_name = "SOURCE")]
    source: Option<String>,
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

/// A retention policy on the command line (`forget`, `report`).
#[derive(Debug, Clone, clap::Args)]
pub struct PolicyArgs {
    /// Keep the N newest snapshots.
    #[arg(long, value_name = "N")]
    keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours that have one.
    #[arg(long, value_name = "N")]
    keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the last N days that have one (UTC).
    #[arg(long, value_name = "N")]
    keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last N ISO weeks that have one.
    #[arg(long, value_name = "N")]
    keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last N months that have one.
    #[arg(long, value_name = "N")]
    keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the last N years that have one.
    #[arg(long, value_name = "N")]
    keep_yearly: Option<u32>,
    /// Keep every snapshot taken within this long of the group's newest (7d, 12h, 4w, 6m, 1y).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    keep_within: Option<chrono::Duration>,
    /// Keep every snapshot with this tag (repeatable).
    #[arg(long = "keep-tag", value_name = "TAG")]
    keep_tags: Vec<String>,
}

impl PolicyArgs {
    /// The engine's policy.
    pub fn policy(&self) -> RetentionPolicy {
        RetentionPolicy {
            last: self.keep_last,
            hourly: self.keep_hourly,
            daily: self.keep_daily,
            weekly: self.keep_weekly,
            monthly: self.keep_monthly,
            yearly: self.keep_yearly,
            within: self.keep_within,
            tags: self.keep_tags.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Group {
    Source,
    Host,
    Paths,
    None,
}

pub async fn forget(g: &GlobalArgs, a: ForgetArgs) -> Result<()> {
    let repo = crate::commands::open(g).await?;
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
                i.time,
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
        match &s.prune {
            Some(p) => crate::prune::print(p),
            None => println!("`cairn prune` frees the data only they used"),
        }
    }
    Ok(())
}
