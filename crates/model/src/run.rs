//! Run records (`runs/<job>/<seq>`): the history of scheduled work — every
//! backup a schedule made, every prune and check the daemon ran — kept in
//! the repository so that every daemon, CLI and dashboard sees the same
//! history. The protocol is specified in docs/format.md ("Runs").

use serde::{Deserialize, Serialize};

use crate::Time;

/// The state of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunState {
    /// In progress (its holder rewrites the record while it runs).
    Running,
    /// Finished and did what it was asked.
    Succeeded,
    /// Finished with an error, or was interrupted.
    Failed,
    /// Did not run (another run of the job was in progress).
    Skipped,
}

impl RunState {
    /// The name shown to people and in metrics.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "RUNNING",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
            Self::Skipped => "SKIPPED",
        }
    }
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// Its schedule fired.
    Schedule,
    /// The daemon found a fire time missed while it was down.
    CatchUp,
    /// "Backup now" (the API or the dashboard).
    Manual,
    /// `cairn backup --schedule` (cron, systemd timers, CronJobs).
    Cli,
    /// A retry of a failed run.
    Retry,
}

/// One run of a job (a backup schedule, prune or check).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The job: `backup-NAME` for schedule NAME, `prune`, `check`.
    pub job: String,
    /// Its number in the job's history (the object's name).
    pub seq: u64,
    /// Its state.
    pub state: RunState,
    /// What started it.
    pub trigger: Trigger,
    /// The fire time it serves, when a schedule fired.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::time::offset::option::serialize",
        deserialize_with = "crate::time::offset::option::deserialize_lenient"
    )]
    pub scheduled_for: Option<Time>,
    /// When it started (the runner's clock).
    #[serde(with = "crate::time::offset")]
    pub started: Time,
    /// When it finished.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::time::offset::option::serialize",
        deserialize_with = "crate::time::offset::option::deserialize_lenient"
    )]
    pub finished: Option<Time>,
    /// Seconds it took.
    #[serde(default)]
    pub seconds: f64,
    /// The machine it ran on.
    pub host: String,
    /// Its process id there.
    pub pid: u32,
    /// The pid namespace the pid belongs to (containers on one host share
    /// a host name, not pids).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_ns: Option<String>,
    /// Seconds the record stays current after each rewrite while running;
    /// a RUNNING record older than that was interrupted.
    pub lease_secs: u64,
    /// Why it failed or was skipped, or a note (a catch-up, a retry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The snapshot a backup saved (hex id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// The source a backup read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Bytes read from the source (so far, while running).
    #[serde(default)]
    pub bytes_read: u64,
    /// Bytes of new chunk data (before compression).
    #[serde(default)]
    pub bytes_added: u64,
    /// Bytes uploaded to the repository.
    #[serde(default)]
    pub bytes_uploaded: u64,
    /// Snapshots the retention policy removed after the run.
    #[serde(default)]
    pub forgotten: u64,
    /// Bytes a prune freed.
    #[serde(default)]
    pub bytes_freed: u64,
    /// Problems a check found.
    #[serde(default)]
    pub check_errors: u64,
    /// The backup was partial (some shards could not be read).
    #[serde(default)]
    pub partial: bool,
    /// Attempt number (1 for the first; retries count up).
    #[serde(default = "one")]
    pub attempt: u32,
}

fn one() -> u32 {
    1
}

impl RunRecord {
    /// Encodes the record.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("invariant: run records serialize")
    }

    /// Decodes a record.
    ///
    /// # Errors
    /// [`crate::Error::Malformed`] when the bytes are not a run record.
    pub fn from_bytes(b: &[u8]) -> crate::Result<Self> {
        serde_json::from_slice(b).map_err(|e| crate::Error::Malformed {
            kind: "run record",
            reason: e.to_string(),
        })
    }
}

/// The job name of backup schedule `name`.
#[must_use]
pub fn backup_job(schedule: &str) -> String {
    format!("backup-{schedule}")
}

/// True for a job or schedule name that can name objects: 1 to 64 ASCII
/// letters, digits, `-` and `_`.
#[must_use]
pub fn valid_job_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The object name of run `seq` of `job` (`backup-daily.000000000003`):
/// zero-padded, so a job's names sort in run order, and self-describing, so
/// one listing of `runs/` names every job.
#[must_use]
pub fn run_name(job: &str, seq: u64) -> String {
    format!("{job}.{seq:012}")
}

/// The job and number a run object's name holds.
#[must_use]
pub fn parse_run_name(name: &str) -> Option<(&str, u64)> {
    let (job, seq) = name.rsplit_once('.')?;
    (seq.len() == 12 && valid_job_name(job))
        .then(|| seq.parse().ok().map(|n| (job, n)))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_names_sort_in_order_and_parse_back() {
        let a = run_name("backup-daily", 9);
        let b = run_name("backup-daily", 10);
        assert!(a < b);
        assert_eq!(parse_run_name(&b), Some(("backup-daily", 10)));
        assert_eq!(parse_run_name("backup-daily.12"), None);
        assert_eq!(parse_run_name("x y.000000000001"), None);
        assert!(!valid_job_name("a/b"));
        assert!(!valid_job_name(""));
    }
}
