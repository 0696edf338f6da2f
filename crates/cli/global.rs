//! What every subcommand shares: the global options, the exit codes, and
//! the error that says its report was already printed.

use std::path::PathBuf;

/// Options every command takes.
#[derive(Debug, clap::Args)]
pub struct GlobalArgs {
    /// Repository: a directory, file://PATH, s3://BUCKET/PREFIX, gs://BUCKET/PREFIX or az://CONTAINER/PREFIX.
    #[arg(
        short,
        long,
        global = true,
        env = "CAIRN_REPOSITORY",
        value_name = "LOCATION"
    )]
    pub repo: Option<String>,
    /// Local cache directory (chunk index); default: the user's cache dir.
    #[arg(long, global = true, env = "CAIRN_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Print machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress bars.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Read the repository password from the first line of FILE (default:
    /// the CAIRN_PASSWORD environment variable, else asked on the terminal).
    #[arg(long, global = true, value_name = "FILE", env = "CAIRN_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
    /// Run CMD (with sh -c) and use the first line it prints as the
    /// repository password.
    #[arg(
        long,
        global = true,
        value_name = "CMD",
        env = "CAIRN_PASSWORD_COMMAND",
        conflicts_with = "password_file"
    )]
    pub password_command: Option<String>,
}

/// Exit codes (documented in docs/cli.md).
pub mod exit {
    /// Any failure not listed below.
    pub const FAILURE: u8 = 1;
    /// Bad command line (clap's own code).
    #[allow(dead_code)] // clap exits with it itself; listed to keep the table whole
    pub const USAGE: u8 = 2;
    /// The repository location is unusable, not a repository, or too new.
    pub const REPOSITORY: u8 = 3;
    /// Stored data failed verification or is missing.
    pub const INTEGRITY: u8 = 4;
    /// Another process holds what this one needs (a prune).
    pub const BUSY: u8 = 5;
    /// Interrupted by a signal; uploaded data is kept.
    pub const INTERRUPTED: u8 = 130;
}

/// An error whose report the command has already printed: only its exit
/// code remains to be given.
#[derive(Debug)]
pub struct Reported(pub u8);

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "reported (exit code {})", self.0)
    }
}

impl std::error::Error for Reported {}
