//! `cairn lock extend`: keep what kept backups need under S3 Object Lock
//! for as long as they are kept.

use anyhow::Result;
use cairn_engine::LockExtendOptions;

use crate::global::GlobalArgs;

/// `cairn lock …`
#[derive(Debug, clap::Subcommand)]
pub enum LockCommand {
    /// Extend the lock of each backup's manifest and packs: to --until, or
    /// to when the retention rules given would let the backup go.
    Extend(ExtendArgs),
}

#[derive(Debug, clap::Args)]
pub struct ExtendArgs {
    /// Snapshots by id (or unique prefix); every snapshot when none.
    #[arg(value_name = "ID")]
    ids: Vec<String>,
    /// Lock until this time (RFC 3339), instead of a policy.
    #[arg(long, value_parser = crate::commands::parse_time, conflicts_with = "policy")]
    until: Option<chrono::DateTime<chrono::Utc>>,
    #[command(flatten)]
    policy: crate::policy::PolicyArgs,
    /// Report what would be extended; change nothing.
    #[arg(long, short = 'n')]
    dry_run: bool,
}

pub async fn lock(g: &GlobalArgs, c: LockCommand) -> Result<()> {
    let repo = crate::repo::open(g).await?;
    let LockCommand::Extend(a) = c;
    let s = repo
        .extend_locks(&LockExtendOptions {
            until: a.until,
            ids: a.ids,
            policy: a.policy.policy(),
            dry_run: a.dry_run,
        })
        .await?;
    if g.json {
        println!("{}", serde_json::to_string(&s)?);
        return Ok(());
    }
    for l in &s.snapshots {
        println!(
            "{} locked until {}",
            l.id.short(),
            crate::size::time(&l.until)
        );
    }
    println!(
        "{}{} of {} objects{}",
        if s.dry_run {
            "dry run: would extend "
        } else {
            "extended "
        },
        s.extended,
        s.objects,
        if s.dry_run {
            "; nothing was changed"
        } else {
            ""
        }
    );
    Ok(())
}
