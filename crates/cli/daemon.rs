//! `cairn daemon` and `cairn backup --schedule`: arguments, then the
//! control plane (cairn-daemon) does the work.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use cairn_daemon::{DaemonOptions, Outcome, Runner};
use cairn_engine::{RunState, Trigger};

use crate::global::{exit, GlobalArgs, Reported};
use crate::repo::{cache_root, lease_override};
use crate::size::human;

#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    /// The config file (cairn.toml).
    #[arg(long, value_name = "FILE", env = "CAIRN_CONFIG")]
    config: PathBuf,
    /// Address of the API and dashboard (default: the config's, else 127.0.0.1:9410).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Seconds a SIGTERM waits for the run in progress to stop.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    stop_timeout: u64,
}

pub async fn daemon(g: &GlobalArgs, a: DaemonArgs) -> Result<()> {
    cairn_daemon::run(DaemonOptions {
        config: a.config,
        listen: a.listen,
        cache_root: cache_root(g),
        lease: lease_override(),
        stop_timeout: Duration::from_secs(a.stop_timeout),
        password: crate::repo::password(g)?,
    })
    .await
}

/// `cairn backup --schedule NAME --config FILE`: the daemon's path, once.
pub async fn backup_schedule(g: &GlobalArgs, name: &str, config: Option<PathBuf>) -> Result<()> {
    let Some(path) = config else {
        bail!(cairn_engine::Error::InvalidArgument(
            "--schedule needs the config that defines it: --config FILE (or CAIRN_CONFIG)".into()
        ));
    };
    let loaded = cairn_config::load(&path)?;
    for w in &loaded.warnings {
        tracing::warn!("{}:{w}", path.display());
    }
    if !loaded.config.schedules.contains_key(name) {
        bail!(cairn_engine::Error::InvalidArgument(format!(
            "{} defines no schedule named {name:?} (it has: {})",
            path.display(),
            loaded
                .config
                .schedules
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let runner = std::sync::Arc::new(
        Runner::new(
            std::sync::Arc::new(loaded.config),
            cache_root(g),
            lease_override(),
        )
        .with_password(crate::repo::password(g)?),
    );
    crate::commands::cancel_on_signal(runner.cancel.clone());
    let outcome = runner
        .run_schedule(name, Trigger::Cli, None, 1, None)
        .await
        .with_context(|| format!("running schedule {name}"))?;
    let Some(rec) = outcome.record() else {
        // Only scheduled fire times are deduplicated; a CLI run never is.
        return Ok(());
    };
    if g.json {
        println!("{}", serde_json::to_string(rec)?);
    } else {
        match rec.state {
            RunState::Succeeded => println!(
                "schedule {name}: run {} SUCCEEDED in {:.1}s: snapshot {} saved, {} read, {} added, {} uploaded; retention removed {} snapshot(s)",
                rec.seq,
                rec.seconds,
                rec.snapshot.as_deref().map_or("-", |s| &s[..8.min(s.len())]),
                human(rec.bytes_read),
                human(rec.bytes_added),
                human(rec.bytes_uploaded),
                rec.forgotten
            ),
            _ => eprintln!(
                "cairn: schedule {name}: run {} {}: {}",
                rec.seq,
                rec.state.as_str(),
                rec.reason.as_deref().unwrap_or("")
            ),
        }
    }
    match (&outcome, rec.state) {
        (Outcome::Ran(_), RunState::Succeeded) => Ok(()),
        (Outcome::Skipped(_), _) => Err(Reported(exit::BUSY).into()),
        _ => Err(Reported(exit::FAILURE).into()),
    }
}
