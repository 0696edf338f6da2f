//! The `cairn` command line: parses arguments, calls the engine, prints.

mod check;
mod cluster;
mod commands;
mod config;
mod daemon;
mod drill;
mod forget;
mod global;
mod key;
mod lock;
mod policy;
mod progress;
mod prune;
mod repair;
mod repo;
mod report;
mod size;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use global::{exit, GlobalArgs, Reported};

/// Content-addressed, incremental backups of Qdrant snapshots.
#[derive(Debug, Parser)]
#[command(name = "cairn", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a repository.
    Init(commands::InitArgs),
    /// Back up a live Qdrant cluster (--qdrant), files, directories or standard input.
    Backup(commands::BackupArgs),
    /// Restore a snapshot into a directory, or a cluster backup into a Qdrant cluster (--to-qdrant).
    Restore(commands::RestoreArgs),
    /// Write one file of a snapshot to stdout.
    Dump(commands::DumpArgs),
    /// List snapshots.
    Snapshots(commands::SnapshotsArgs),
    /// Remove snapshots by id or by a retention policy.
    Forget(forget::ForgetArgs),
    /// Delete data no snapshot needs; safe while backups run.
    Prune(prune::PruneArgs),
    /// Remove lapsed leases of crashed processes.
    Unlock,
    /// Manage the keys (passwords) of an encrypted repository.
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Keep long-kept backups under S3 Object Lock for as long as they are kept.
    #[command(subcommand)]
    Lock(lock::LockCommand),
    /// Verify the repository's structure (and, with --read-data, every chunk).
    Check(check::CheckArgs),
    /// Prove a cluster backup restores and answers: restore it into a scratch Qdrant and query it.
    Drill(drill::DrillArgs),
    /// Rebuild index files from packs, or salvage damaged snapshots.
    #[command(subcommand)]
    Repair(repair::RepairCommand),
    /// Show repository size, dedup and compression ratios.
    Stats,
    /// What the backups added and what the repository costs, now and projected.
    Report(report::ReportArgs),
    /// Check a cairn.toml, or write a starter one.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Run a cairn.toml's schedules, with an HTTP API, metrics and a dashboard.
    Daemon(daemon::DaemonArgs),
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(progress::LogWriter::default)
        .with_target(false)
        .init();
}

/// glibc's malloc serves allocations above a threshold that starts at 128 KiB
/// with fresh mappings and unmaps them on free, and returns freed heap tops
/// to the system. A backup allocates such buffers for every block (the read
/// buffer, and per block the chunk ids, offsets and lookup keys: hundreds
/// of KiB with small vector chunks), so each block paid page faults for
/// memory it had just freed: ~20 % of a re-backup's time in the kernel.
/// Mapping only above 32 MiB and trimming above 256 MiB keeps that memory
/// in the process; peak RSS does not change (the same buffers are live).
///
/// The daemon lives long and idles: it also caps malloc's arenas at one per
/// core (glibc's default is eight per core), so that what a burst of work
/// freed on many threads is not held in many half-empty arenas (measured by
/// benches/daemon.sh: 68 → 48 MiB after listing 10,000 backups).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn tune_allocator(long_lived: bool) {
    let arenas = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    // SAFETY: mallopt only sets malloc parameters; it is called once, before
    // any other thread exists, with values glibc documents as valid.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
        if long_lived {
            libc::mallopt(libc::M_ARENA_MAX, i32::try_from(arenas).unwrap_or(i32::MAX));
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator(_long_lived: bool) {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tune_allocator(matches!(cli.command, Command::Daemon(_)));
    init_logging(cli.global.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cairn: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    let json = cli.global.json;
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            if let Some(Reported(code)) = err.downcast_ref::<Reported>() {
                return ExitCode::from(*code);
            }
            let code = commands::exit_code(&err);
            let message = match commands::remedy(&err) {
                Some(hint) => format!("{}; {hint}", describe(&err)),
                None => describe(&err),
            };
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "error": message, "exit_code": code })
                );
            }
            eprintln!("cairn: {message}");
            ExitCode::from(code)
        }
    }
}

/// Runs the parsed command line.
async fn run(cli: Cli) -> anyhow::Result<()> {
    let g = &cli.global;
    match cli.command {
        Command::Init(a) => commands::init(g, a).await,
        Command::Backup(a) => commands::backup(g, a).await,
        Command::Restore(a) => commands::restore(g, a).await,
        Command::Dump(a) => commands::dump(g, a).await,
        Command::Snapshots(a) => commands::snapshots(g, a).await,
        Command::Forget(a) => forget::forget(g, a).await,
        Command::Prune(a) => prune::prune(g, a).await,
        Command::Unlock => prune::unlock(g).await,
        Command::Key(c) => key::key(g, c).await,
        Command::Lock(c) => lock::lock(g, c).await,
        Command::Check(a) => check::check(g, a).await,
        Command::Drill(a) => drill::drill(g, a).await,
        Command::Repair(c) => repair::repair(g, c).await,
        Command::Stats => commands::stats(g).await,
        Command::Report(a) => report::report(g, a).await,
        Command::Config(c) => config::config(g, c),
        Command::Daemon(a) => daemon::daemon(g, a).await,
    }
}

/// The error and its causes on one line, each cause once: many errors
/// (ours and our dependencies') already print their source in their own
/// message, and the chain would repeat it.
fn describe(err: &anyhow::Error) -> String {
    cairn_daemon::jobs::describe(err)
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[derive(Debug)]
    struct Wraps(std::io::Error);
    impl std::fmt::Display for Wraps {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "cannot write /t/x: {}", self.0)
        }
    }
    impl std::error::Error for Wraps {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn each_cause_is_printed_once() {
        let io = std::io::Error::other("File too large");
        let err = anyhow::Error::new(Wraps(io)).context("restore failed");
        assert_eq!(
            describe(&err),
            "restore failed: cannot write /t/x: File too large"
        );
        // A cause its parent does not print still appears.
        let err = anyhow::Error::new(std::io::Error::other("disk full")).context("backup failed");
        assert_eq!(describe(&err), "backup failed: disk full");
    }
}
