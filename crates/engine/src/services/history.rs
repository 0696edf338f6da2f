//! Run history (`runs/<job>/<job>.<seq>`): the records of scheduled work,
//! and the one-run-at-a-time rule every daemon and `cairn backup
//! --schedule` obey through them (docs/format.md, "Runs").
//!
//! A job's records are numbered. To start, a runner reads the newest record
//! that is not SKIPPED: when it is RUNNING and current, the job is busy;
//! otherwise the runner creates the next number (create-only: of two
//! runners, one wins) as RUNNING, and rewrites it while it runs. A RUNNING
//! record not rewritten within its lease (storage time), or whose process
//! is gone from this host, was interrupted: the next runner records it as
//! FAILED. A runner that finds a newer, non-skipped record above its own
//! while running was taken for dead (it stalled past its lease) and stops.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cairn_model::{parse_run_name, run_name, valid_job_name, RunRecord, RunState, Time, Trigger};
use cairn_store::keys;
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::repository::Repository;

/// Longest a run record stays current without a rewrite.
pub const MAX_RUN_LEASE: Duration = Duration::from_secs(120);
/// Longest between two rewrites of a running record (progress shown while
/// it runs).
const MAX_HEARTBEAT: Duration = Duration::from_secs(10);
/// Skipped records read back, at most, to find the run they skipped.
const MAX_SKIPS_READ: usize = 64;

/// What [`Repository::begin_run`] found.
#[derive(Debug)]
pub enum Begin {
    /// The run is started; the handle keeps its record current.
    Started(RunHandle),
    /// Another run of the job is in progress; a SKIPPED record says so.
    Busy {
        /// The run in progress.
        running: RunRecord,
        /// The SKIPPED record written for this attempt.
        skipped: RunRecord,
    },
    /// The fire time was already served (by another daemon): nothing
    /// written.
    AlreadyDone(RunRecord),
}

/// A run this process holds.
#[derive(Debug)]
pub struct RunHandle {
    repo: Repository,
    key: String,
    record: Arc<Mutex<RunRecord>>,
    superseded: Arc<AtomicBool>,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
}

/// This process's pid namespace (containers on one host can share a host
/// name but not a pid namespace).
fn pid_namespace() -> Option<String> {
    std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// True when `r` ran on this host (same pid namespace) in a process that is
/// gone.
fn process_gone(r: &RunRecord) -> bool {
    r.host == crate::host::hostname()
        && r.pid_ns == pid_namespace()
        && r.pid != std::process::id()
        && !std::path::Path::new(&format!("/proc/{}", r.pid)).exists()
}

/// The record of a run being started now.
#[must_use]
pub fn draft(job: &str, trigger: Trigger, scheduled_for: Option<Time>) -> RunRecord {
    RunRecord {
        job: job.to_string(),
        seq: 0,
        state: RunState::Running,
        trigger,
        scheduled_for,
        started: chrono::Utc::now(),
        finished: None,
        seconds: 0.0,
        host: crate::host::hostname(),
        pid: std::process::id(),
        pid_ns: pid_namespace(),
        lease_secs: 0,
        reason: None,
        snapshot: None,
        source: None,
        bytes_read: 0,
        bytes_added: 0,
        bytes_uploaded: 0,
        forgotten: 0,
        bytes_freed: 0,
        check_errors: 0,
        partial: false,
        attempt: 1,
    }
}

/// A listed record: its number, name and storage time.
struct Listed {
    seq: u64,
    key: String,
    modified: Time,
}

impl Repository {
    /// How long a run record stays current without a rewrite.
    #[must_use]
    pub fn run_lease(&self) -> Duration {
        self.lease_duration.min(MAX_RUN_LEASE)
    }

    async fn list_runs(&self, job: &str) -> Result<Vec<Listed>> {
        let mut out: Vec<Listed> = self
            .store
            .list(&keys::runs(job))
            .await?
            .into_iter()
            .filter_map(|l| {
                let (j, seq) = parse_run_name(&l.name)?;
                (j == job).then(|| Listed {
                    seq,
                    key: keys::run(job, &l.name),
                    modified: l.last_modified,
                })
            })
            .collect();
        out.sort_by_key(|l| l.seq);
        Ok(out)
    }

    async fn read_run(&self, key: &str) -> Result<Option<RunRecord>> {
        match self.store.get(key).await {
            Ok(b) => Ok(RunRecord::from_bytes(&b).ok()),
            Err(cairn_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Why a RUNNING record at storage time `now` is not current, if it is
    /// not.
    fn interrupted(r: &RunRecord, modified: Time, now: Time) -> Option<String> {
        let lease =
            chrono::Duration::seconds(i64::try_from(r.lease_secs.max(1)).unwrap_or(i64::MAX));
        if process_gone(r) {
            Some(format!(
                "interrupted: its process (pid {}) on this host ended without finishing the run",
                r.pid
            ))
        } else if now - modified >= lease {
            Some(format!(
                "interrupted: {} (pid {}) stopped updating the run at {} (lease {} s)",
                r.host,
                r.pid,
                modified.to_rfc3339(),
                r.lease_secs
            ))
        } else {
            None
        }
    }

    /// Starts a run of `draft.job` unless one is in progress (recording a
    /// SKIPPED run), or unless the fire time it serves was already served.
    /// Records an interrupted run it finds as FAILED.
    ///
    /// # Errors
    /// Storage errors; [`Error::InvalidArgument`] for a job name that
    /// cannot name objects.
    pub async fn begin_run(&self, mut draft: RunRecord) -> Result<Begin> {
        if !valid_job_name(&draft.job) {
            return Err(Error::InvalidArgument(format!(
                "{:?} cannot name a job (1 to 64 letters, digits, - and _)",
                draft.job
            )));
        }
        let lease = self.run_lease();
        draft.lease_secs = lease.as_secs().max(1);
        for _ in 0..16 {
            let listed = self.list_runs(&draft.job).await?;
            let next = listed.last().map_or(1, |l| l.seq + 1);
            // The newest record that is not a skip.
            let mut latest: Option<(RunRecord, &Listed)> = None;
            for l in listed.iter().rev().take(MAX_SKIPS_READ) {
                if let Some(r) = self.read_run(&l.key).await? {
                    if r.state != RunState::Skipped {
                        latest = Some((r, l));
                        break;
                    }
                }
            }
            if let Some((r, l)) = latest {
                let served = match (draft.trigger, r.scheduled_for, draft.scheduled_for) {
                    (Trigger::Retry, last, ours) => !(r.state == RunState::Failed && last == ours),
                    (Trigger::Schedule | Trigger::CatchUp, Some(last), Some(ours)) => last >= ours,
                    _ => false,
                };
                if served {
                    return Ok(Begin::AlreadyDone(r));
                }
                if r.state == RunState::Running {
                    let now = self.storage_now().await?;
                    match Self::interrupted(&r, l.modified, now) {
                        None => {
                            let mut skipped = draft.clone();
                            skipped.seq = next;
                            skipped.state = RunState::Skipped;
                            skipped.finished = Some(chrono::Utc::now());
                            skipped.reason = Some(format!(
                                "run {} ({}) is still in progress on {} (pid {}) since {}",
                                r.seq,
                                trigger_name(&r),
                                r.host,
                                r.pid,
                                r.started.to_rfc3339()
                            ));
                            let key = keys::run(&draft.job, &run_name(&draft.job, next));
                            match self
                                .store
                                .put_new(&key, Bytes::from(skipped.to_bytes()))
                                .await
                            {
                                Ok(()) => {
                                    return Ok(Begin::Busy {
                                        running: r,
                                        skipped,
                                    })
                                }
                                Err(cairn_store::Error::AlreadyExists { .. }) => continue,
                                Err(e) => return Err(e.into()),
                            }
                        }
                        Some(why) => {
                            let mut failed = r.clone();
                            failed.state = RunState::Failed;
                            failed.finished = Some(l.modified);
                            failed.seconds =
                                (l.modified - r.started).num_milliseconds().max(0) as f64 / 1000.0;
                            failed.reason = Some(why);
                            tracing::warn!(job = %r.job, run = r.seq, "recording an interrupted run as failed");
                            self.store
                                .put_replace(&l.key, Bytes::from(failed.to_bytes()))
                                .await?;
                        }
                    }
                }
            }
            let mut rec = draft.clone();
            rec.seq = next;
            rec.started = chrono::Utc::now();
            let key = keys::run(&draft.job, &run_name(&draft.job, next));
            match self.store.put_new(&key, Bytes::from(rec.to_bytes())).await {
                Ok(()) => return Ok(Begin::Started(self.hold_run(key, rec, lease))),
                Err(cairn_store::Error::AlreadyExists { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Busy(format!(
            "could not start a run of {}: other runners kept taking the next number",
            draft.job
        )))
    }

    fn hold_run(&self, key: String, rec: RunRecord, lease: Duration) -> RunHandle {
        let record = Arc::new(Mutex::new(rec));
        let superseded = Arc::new(AtomicBool::new(false));
        let heartbeat = {
            let repo = self.clone();
            let key = key.clone();
            let record = Arc::clone(&record);
            let superseded = Arc::clone(&superseded);
            let every = (lease / 3).min(MAX_HEARTBEAT);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let r = lock(&record).clone();
                    if let Err(e) = repo
                        .store
                        .put_replace(&key, Bytes::from(r.to_bytes()))
                        .await
                    {
                        tracing::warn!(run = %key, error = %e, "could not update the run record; retrying");
                        continue;
                    }
                    match repo.superseded_by(&r).await {
                        Ok(Some(other)) => {
                            tracing::error!(job = %r.job, run = r.seq, newer = other.seq, host = %other.host, "this run was taken for interrupted and a newer one started; stopping");
                            superseded.store(true, Ordering::SeqCst);
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(run = %key, error = %e, "could not list the job's runs")
                        }
                    }
                }
            })
        };
        RunHandle {
            repo: self.clone(),
            key,
            record,
            superseded,
            heartbeat: Some(heartbeat),
        }
    }

    /// A newer run of `r`'s job that is not a skip, if any.
    async fn superseded_by(&self, r: &RunRecord) -> Result<Option<RunRecord>> {
        for l in self.list_runs(&r.job).await?.into_iter().rev() {
            if l.seq <= r.seq {
                break;
            }
            if let Some(o) = self.read_run(&l.key).await? {
                if o.state != RunState::Skipped {
                    return Ok(Some(o));
                }
            }
        }
        Ok(None)
    }

    /// Run records, newest first: of one job, or of every job; at most
    /// `limit` of them. A RUNNING record that stopped being updated (by
    /// this machine's clock) is shown as FAILED, interrupted.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn runs(&self, job: Option<&str>, limit: usize) -> Result<Vec<RunRecord>> {
        let dir = job.map_or_else(|| keys::RUN_DIR.to_string(), keys::runs);
        let mut listed: Vec<(String, u64, String, Time)> = self
            .store
            .list(&dir)
            .await?
            .into_iter()
            .filter_map(|l| {
                let (j, seq) = parse_run_name(&l.name)?;
                (job.is_none() || job == Some(j))
                    .then(|| (j.to_string(), seq, keys::run(j, &l.name), l.last_modified))
            })
            .collect();
        // Newest first: by storage time, then number.
        listed.sort_by(|a, b| b.3.cmp(&a.3).then(b.1.cmp(&a.1)));
        listed.truncate(limit);
        let now = chrono::Utc::now();
        let read: Vec<(Result<Option<RunRecord>>, Time)> = futures::stream::iter(listed)
            .map(|(_, _, key, modified)| {
                let repo = self.clone();
                async move { (repo.read_run(&key).await, modified) }
            })
            .buffered(16)
            .collect()
            .await;
        let mut out = Vec::with_capacity(read.len());
        for (r, modified) in read {
            let Some(mut r) = r? else { continue };
            if r.state == RunState::Running {
                if let Some(why) = Self::interrupted(&r, modified, now) {
                    r.state = RunState::Failed;
                    r.finished = Some(modified);
                    r.reason = Some(why);
                }
            }
            out.push(r);
        }
        out.sort_by(|a, b| b.started.cmp(&a.started).then(b.seq.cmp(&a.seq)));
        Ok(out)
    }
}

fn lock(m: &Mutex<RunRecord>) -> std::sync::MutexGuard<'_, RunRecord> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn trigger_name(r: &RunRecord) -> &'static str {
    match r.trigger {
        Trigger::Schedule => "scheduled",
        Trigger::CatchUp => "catch-up",
        Trigger::Manual => "backup now",
        Trigger::Cli => "cairn backup --schedule",
        Trigger::Retry => "retry",
    }
}

impl RunHandle {
    /// The record as it stands.
    #[must_use]
    pub fn record(&self) -> RunRecord {
        lock(&self.record).clone()
    }

    /// Changes the record; the next rewrite stores it.
    pub fn update(&self, f: impl FnOnce(&mut RunRecord)) {
        f(&mut lock(&self.record));
    }

    /// True once another runner took this run for interrupted and started
    /// a newer one: the run must stop without committing more.
    #[must_use]
    pub fn superseded(&self) -> bool {
        self.superseded.load(Ordering::SeqCst)
    }

    /// Ends the run in `state` (with `reason` for a failure) and stores the
    /// final record.
    ///
    /// # Errors
    /// Storage errors (the record then lapses and is read as interrupted).
    pub async fn finish(mut self, state: RunState, reason: Option<String>) -> Result<RunRecord> {
        if let Some(t) = self.heartbeat.take() {
            t.abort();
        }
        let rec = {
            let mut r = lock(&self.record);
            let now = chrono::Utc::now();
            r.state = state;
            r.finished = Some(now);
            r.seconds = (now - r.started).num_milliseconds().max(0) as f64 / 1000.0;
            if reason.is_some() {
                r.reason = reason;
            }
            r.clone()
        };
        self.repo
            .store
            .put_replace(&self.key, Bytes::from(rec.to_bytes()))
            .await?;
        Ok(rec)
    }
}

impl Drop for RunHandle {
    fn drop(&mut self) {
        if let Some(t) = self.heartbeat.take() {
            t.abort();
        }
    }
}
