//! Running one job: a schedule's backup and then its retention, a prune or
//! a check. `cairn backup --schedule`, the daemon and "Backup now" all come
//! here, so they share one path and one history.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use cairn_config::Config;
use cairn_engine::{
    backup_job, draft_run, BackupOptions, BackupSource, Begin, ForgetOptions, Progress,
    PruneOptions, ReadData, Repository, RunHandle, RunRecord, RunState, Time, Trigger,
};

use crate::webhook::Notifier;

/// What a job run came to.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// It ran: the final record (SUCCEEDED or FAILED).
    Ran(RunRecord),
    /// Another run of the job was in progress: the SKIPPED record.
    Skipped(RunRecord),
    /// The fire time had been served already (by another daemon).
    AlreadyDone,
}

impl Outcome {
    /// The record written, if any.
    #[must_use]
    pub fn record(&self) -> Option<&RunRecord> {
        match self {
            Self::Ran(r) | Self::Skipped(r) => Some(r),
            Self::AlreadyDone => None,
        }
    }
}

/// The job name of the prune schedule.
pub const PRUNE_JOB: &str = "prune";
/// The job name of the check schedule.
pub const CHECK_JOB: &str = "check";
/// The job name of the drill schedule.
pub const DRILL_JOB: &str = "drill";

/// The tag every backup of schedule `name` carries (its retention applies to
/// these only).
#[must_use]
pub fn schedule_tag(name: &str) -> String {
    format!("schedule:{name}")
}

/// Runs jobs of one config: opens its repositories once and keeps them.
pub struct Runner {
    config: Arc<Config>,
    cache_root: PathBuf,
    repos: tokio::sync::Mutex<HashMap<String, Repository>>,
    lease: Option<Duration>,
    /// The password of encrypted repositories.
    password: Option<cairn_crypto::Password>,
    /// Set on SIGTERM: a backup in progress finishes its uploads and stops.
    pub cancel: Arc<AtomicBool>,
    notifier: Notifier,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner").finish_non_exhaustive()
    }
}

/// Counts the bytes a run has read so far, for its record.
#[derive(Default)]
struct Counter(AtomicU64);

impl Progress for Counter {
    fn advance(&self, bytes: u64) {
        self.0.fetch_add(bytes, Ordering::Relaxed);
    }
}

impl Runner {
    /// A runner for `config`; repositories are opened with caches under
    /// `cache_root` (or each repository's `cache_dir`), leases of `lease`
    /// when given.
    #[must_use]
    pub fn new(config: Arc<Config>, cache_root: PathBuf, lease: Option<Duration>) -> Self {
        let notifier = Notifier::new(&config);
        Self {
            config,
            cache_root,
            repos: tokio::sync::Mutex::new(HashMap::new()),
            lease,
            password: None,
            cancel: Arc::new(AtomicBool::new(false)),
            notifier,
        }
    }

    /// Opens encrypted repositories with `password`.
    #[must_use]
    pub fn with_password(mut self, password: Option<cairn_crypto::Password>) -> Self {
        self.password = password;
        self
    }

    /// The config.
    #[must_use]
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// Repository `name` of the config, opened once.
    ///
    /// # Errors
    /// An unknown name; the repository cannot be opened.
    pub async fn repository(&self, name: &str) -> Result<Repository> {
        let mut repos = self.repos.lock().await;
        if let Some(r) = repos.get(name) {
            return Ok(r.clone());
        }
        let def = self
            .config
            .repositories
            .get(name)
            .ok_or_else(|| anyhow!("no repository named {name:?} in the config"))?;
        let loc = def.location.get_ref();
        let mut store =
            cairn_engine::RepoStore::open(loc, false).map_err(cairn_engine::Error::from)?;
        // `[limits] upload` holds every write to the repository to the rate
        // (packs, index files, manifests, run records).
        if let Some(rate) = &self.config.limits.upload {
            if let Ok(rate) = cairn_config::parse_rate(rate.get_ref()) {
                store = store.map_backend(|b| {
                    Arc::new(cairn_store::throttled::ThrottledBackend::new(b, rate))
                });
            }
        }
        let cache = def
            .cache_dir
            .clone()
            .unwrap_or_else(|| self.cache_root.clone());
        let mut repo = Repository::open_with(store, &cache, self.password.as_ref())
            .await
            .with_context(|| format!("opening repository {name} ({loc})"))?;
        // Schedules read run history and apply retention: a write-only key
        // backs up only through `cairn backup` itself.
        repo.require_read(
            "run schedules (they read run history and apply retention; back up with `cairn backup` instead)",
        )?;
        if let Some(d) = self.lease {
            repo = repo.with_lease_duration(d);
        }
        repos.insert(name.to_string(), repo.clone());
        Ok(repo)
    }

    /// The repository schedule `name` writes.
    ///
    /// # Errors
    /// As [`Self::repository`]; an unknown schedule.
    pub async fn repository_of(&self, schedule: &str) -> Result<Repository> {
        let (name, _) = self.config.repository_of(schedule).ok_or_else(|| {
            anyhow!("no schedule named {schedule:?} in the config (or it names no repository)")
        })?;
        self.repository(name).await
    }

    /// The repository maintenance jobs use: the one they name, or the
    /// first.
    async fn maintenance_repository(&self, named: Option<&str>) -> Result<Repository> {
        let name = match named {
            Some(n) => n.to_string(),
            None => self
                .config
                .repositories
                .keys()
                .next()
                .cloned()
                .ok_or_else(|| anyhow!("the config names no repository"))?,
        };
        self.repository(&name).await
    }

    /// The newest fire time a run of `job` served (`schedule`: the backup
    /// schedule whose repository holds it; `None`: the maintenance
    /// repository).
    ///
    /// # Errors
    /// The repository cannot be opened or listed.
    pub async fn last_scheduled(&self, schedule: Option<&str>, job: &str) -> Result<Option<Time>> {
        let repo = match schedule {
            Some(s) => self.repository_of(s).await?,
            None => self.maintenance_repository(None).await?,
        };
        Ok(repo
            .runs(Some(job), 64)
            .await?
            .iter()
            .filter_map(|r| r.scheduled_for)
            .max())
    }

    /// Runs schedule `name` once: the backup, then the schedule's retention.
    /// `note` is kept in the record (why a catch-up ran).
    ///
    /// # Errors
    /// Only when the run could not even be recorded (an unknown schedule,
    /// the repository unreachable); a backup that fails is a FAILED record.
    pub async fn run_schedule(
        &self,
        name: &str,
        trigger: Trigger,
        scheduled_for: Option<Time>,
        attempt: u32,
        note: Option<String>,
    ) -> Result<Outcome> {
        let sched = self
            .config
            .schedules
            .get(name)
            .ok_or_else(|| anyhow!("no schedule named {name:?} in the config"))?;
        let repo = self.repository_of(name).await?;
        let mut draft = draft_run(&backup_job(name), trigger, scheduled_for);
        draft.source = Some(sched.source.get_ref().clone());
        draft.reason = note;
        draft.attempt = attempt;
        let handle = match start(&repo, draft).await? {
            Ok(h) => h,
            Err(other) => return Ok(other),
        };
        let seq = handle.record().seq;
        tracing::info!(schedule = name, run = seq, ?trigger, "backup started");
        let counter = Arc::new(Counter::default());
        // Stops the backup when the run was taken over or SIGTERM came.
        let cancel = Arc::new(AtomicBool::new(false));
        let result = {
            let work = self.backup(name, &repo, Arc::clone(&cancel), Arc::clone(&counter));
            tokio::pin!(work);
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    r = &mut work => break r,
                    _ = tick.tick() => {
                        let read = counter.0.load(Ordering::Relaxed);
                        handle.update(|r| r.bytes_read = r.bytes_read.max(read));
                        if handle.superseded() || self.cancel.load(Ordering::Relaxed) {
                            cancel.store(true, Ordering::Relaxed);
                        }
                    }
                }
            }
        };
        let (state, reason) = match result {
            Ok(done) => {
                handle.update(|r| {
                    r.snapshot = Some(done.snapshot.clone());
                    r.bytes_read = done.bytes_read;
                    r.bytes_added = done.bytes_added;
                    r.bytes_uploaded = done.bytes_uploaded;
                    r.partial = done.partial;
                });
                match self.retention(name, &repo).await {
                    Ok(n) => {
                        handle.update(|r| r.forgotten = n);
                        (RunState::Succeeded, None)
                    }
                    Err(e) => (
                        RunState::Failed,
                        Some(format!(
                            "backup saved as snapshot {}, but applying the retention failed: {}",
                            &done.snapshot[..8.min(done.snapshot.len())],
                            describe(&e)
                        )),
                    ),
                }
            }
            Err(e) => {
                let why = if handle.superseded() {
                    format!(
                        "stopped: another runner took this run for interrupted ({})",
                        describe(&e)
                    )
                } else if self.cancel.load(Ordering::Relaxed) {
                    format!("interrupted by SIGTERM: {}", describe(&e))
                } else {
                    describe(&e)
                };
                (RunState::Failed, Some(why))
            }
        };
        self.end(handle, state, reason).await
    }

    async fn backup(
        &self,
        name: &str,
        repo: &Repository,
        cancel: Arc<AtomicBool>,
        progress: Arc<Counter>,
    ) -> Result<Done> {
        let sched = &self.config.schedules[name];
        let source_name = sched.source.get_ref();
        let source = self
            .config
            .sources
            .get(source_name)
            .ok_or_else(|| anyhow!("schedule {name}: no source named {source_name:?}"))?;
        let mut tags = sched.tags.clone();
        tags.push(schedule_tag(name));
        let opts = BackupOptions {
            tags,
            cancel,
            ..BackupOptions::default()
        };
        if let Some(urls) = &source.qdrant {
            let key = api_key(source)?;
            let target = cairn_cluster::QdrantTarget::new(&urls.get_ref().list(), key);
            let mut copts = cairn_cluster::ClusterBackupOptions::new(target);
            copts.delta = source.delta;
            copts.full_every = source.full_every;
            if let Some(rate) = &self.config.limits.download {
                copts.limit_download = cairn_config::parse_rate(rate.get_ref()).ok();
            }
            let s = cairn_cluster::backup(repo, copts, opts, progress).await?;
            let t = &s.backup.totals;
            return Ok(Done {
                snapshot: s.backup.id.to_hex(),
                bytes_read: t.bytes,
                bytes_added: t.new_bytes,
                bytes_uploaded: t.new_stored_bytes,
                partial: s.record.partial,
            });
        }
        let paths = source
            .paths
            .as_ref()
            .map(|p| p.get_ref().clone())
            .ok_or_else(|| anyhow!("source {source_name} names neither qdrant nor paths"))?;
        let s = repo
            .backup(BackupSource::Paths(paths), opts, progress)
            .await?;
        Ok(Done {
            snapshot: s.id.to_hex(),
            bytes_read: s.totals.bytes,
            bytes_added: s.totals.new_bytes,
            bytes_uploaded: s.totals.new_stored_bytes,
            partial: false,
        })
    }

    /// Applies schedule `name`'s retention to the backups it made; the
    /// number of snapshots removed. Under Object Lock, the backups kept
    /// are then locked for as long as the policy keeps them.
    async fn retention(&self, name: &str, repo: &Repository) -> Result<u64> {
        let Some(r) = &self.config.schedules[name].retention else {
            return Ok(0);
        };
        let policy = r.get_ref().policy();
        let opts = ForgetOptions {
            policy: policy.clone(),
            tags: vec![schedule_tag(name)],
            ..ForgetOptions::default()
        };
        let s = repo.forget(&opts).await?;
        if repo.config().object_lock.is_some() {
            let kept: Vec<String> = s
                .groups
                .iter()
                .flat_map(|g| &g.items)
                .filter(|i| i.action == cairn_engine::ForgetAction::Keep)
                .map(|i| i.id.to_hex())
                .collect();
            if !kept.is_empty() {
                repo.extend_locks(&cairn_engine::LockExtendOptions {
                    ids: kept,
                    policy,
                    ..cairn_engine::LockExtendOptions::default()
                })
                .await?;
            }
        }
        Ok(s.removed.len() as u64)
    }

    /// Runs the prune schedule once.
    ///
    /// # Errors
    /// As [`Self::run_schedule`].
    pub async fn run_prune(
        &self,
        trigger: Trigger,
        scheduled_for: Option<Time>,
    ) -> Result<Outcome> {
        let named = self
            .config
            .prune
            .as_ref()
            .and_then(|p| p.repository.as_ref().map(|r| r.get_ref().clone()));
        let repo = self.maintenance_repository(named.as_deref()).await?;
        let handle = match start(&repo, draft_run(PRUNE_JOB, trigger, scheduled_for)).await? {
            Ok(h) => h,
            Err(other) => return Ok(other),
        };
        let result = repo
            .prune(&PruneOptions::default(), Arc::new(cairn_engine::NoProgress))
            .await;
        let (state, reason) = match result {
            Ok(s) => {
                let freed: u64 = s.swept.iter().map(|w| w.bytes_deleted).sum();
                handle.update(|r| r.bytes_freed = freed);
                (RunState::Succeeded, None)
            }
            Err(e) => (RunState::Failed, Some(describe(&e.into()))),
        };
        self.end(handle, state, reason).await
    }

    /// Runs the check schedule once (the next part of the data, when it
    /// reads a rotating subset).
    ///
    /// # Errors
    /// As [`Self::run_schedule`].
    pub async fn run_check(
        &self,
        trigger: Trigger,
        scheduled_for: Option<Time>,
    ) -> Result<Outcome> {
        let job = self.config.check.as_ref();
        let named = job.and_then(|p| p.repository.as_ref().map(|r| r.get_ref().clone()));
        let repo = self.maintenance_repository(named.as_deref()).await?;
        let handle = match start(&repo, draft_run(CHECK_JOB, trigger, scheduled_for)).await? {
            Ok(h) => h,
            Err(other) => return Ok(other),
        };
        let seq = handle.record().seq;
        let read = match job.and_then(|j| j.read_data_subset.as_ref()) {
            None => ReadData::None,
            Some(s) => match ReadData::parse_subset(s.get_ref()) {
                // K/N rotates: run `seq` reads part (seq mod N) + 1.
                Ok(ReadData::Part(_, n)) => {
                    #[allow(clippy::cast_possible_truncation)]
                    let k = (seq % u64::from(n)) as u32 + 1;
                    ReadData::Part(k, n)
                }
                Ok(r) => r,
                Err(e) => bail!("check.read_data_subset: {e}"),
            },
        };
        if let ReadData::Part(k, n) = read {
            handle.update(|r| r.reason = Some(format!("read part {k}/{n} of the packs")));
        }
        let result = repo.check(read, Arc::new(cairn_engine::NoProgress)).await;
        let (state, reason) = match result {
            Ok(c) => {
                handle.update(|r| {
                    r.check_errors = c.errors.len() as u64;
                    r.bytes_read = c.bytes_read;
                });
                if c.clean {
                    (RunState::Succeeded, None)
                } else {
                    let first = c
                        .errors
                        .first()
                        .map(ToString::to_string)
                        .unwrap_or_default();
                    (
                        RunState::Failed,
                        Some(format!(
                            "check found {} problem(s); first: {first}",
                            c.errors.len()
                        )),
                    )
                }
            }
            Err(e) => (RunState::Failed, Some(describe(&e.into()))),
        };
        self.end(handle, state, reason).await
    }
}

impl Runner {
    /// Runs the drill schedule once: the latest cluster backup of each
    /// source in the repository is restored into a scratch Qdrant and
    /// queried (`cairn drill`); each outcome is recorded. The run fails
    /// when any drill fails or cannot run, naming the first.
    ///
    /// # Errors
    /// As [`Self::run_schedule`].
    pub async fn run_drill(
        &self,
        trigger: Trigger,
        scheduled_for: Option<Time>,
    ) -> Result<Outcome> {
        let job = self
            .config
            .drill
            .as_ref()
            .ok_or_else(|| anyhow!("the config has no [drill] table"))?;
        let named = job.repository.as_ref().map(|r| r.get_ref().clone());
        let repo = self.maintenance_repository(named.as_deref()).await?;
        let handle = match start(&repo, draft_run(DRILL_JOB, trigger, scheduled_for)).await? {
            Ok(h) => h,
            Err(other) => return Ok(other),
        };
        let mut opts =
            cairn_cluster::drill::DrillOptions::new(PathBuf::from(job.qdrant_bin.get_ref()));
        opts.work_dir = job.work_dir.as_ref().map(|d| PathBuf::from(d.get_ref()));
        let result: Result<(usize, Vec<String>)> = async {
            // The newest cluster backup of each source.
            let mut latest: HashMap<String, cairn_engine::SnapshotInfo> = HashMap::new();
            for i in repo.snapshots().await? {
                if i.snapshot.qdrant.is_none() {
                    continue;
                }
                let key = i.snapshot.source_key();
                if latest
                    .get(&key)
                    .is_none_or(|l| i.snapshot.time > l.snapshot.time)
                {
                    latest.insert(key, i);
                }
            }
            let mut failures = Vec::new();
            for info in latest.values() {
                let report = cairn_cluster::drill::drill(
                    &repo,
                    info,
                    &opts,
                    Arc::new(cairn_engine::NoProgress),
                )
                .await
                .with_context(|| format!("drilling snapshot {}", info.id.short()))?;
                failures.extend(
                    report
                        .failures
                        .iter()
                        .map(|f| format!("snapshot {}: {f}", info.id.short())),
                );
            }
            Ok((latest.len(), failures))
        }
        .await;
        let (state, reason) = match result {
            Ok((0, _)) => (
                RunState::Succeeded,
                Some("no cluster backup to drill".to_string()),
            ),
            Ok((n, f)) if f.is_empty() => (
                RunState::Succeeded,
                Some(format!("{n} backup(s) restored and answered as recorded")),
            ),
            Ok((n, f)) => (
                RunState::Failed,
                Some(format!(
                    "{} problem(s) in {n} drill(s); first: {}",
                    f.len(),
                    f[0]
                )),
            ),
            Err(e) => (RunState::Failed, Some(describe(&e))),
        };
        self.end(handle, state, reason).await
    }

    /// Stores a run's final record, logs it and notifies the webhooks.
    async fn end(
        &self,
        handle: RunHandle,
        state: RunState,
        reason: Option<String>,
    ) -> Result<Outcome> {
        let rec = handle.finish(state, reason).await?;
        tracing::info!(
            job = %rec.job,
            run = rec.seq,
            state = rec.state.as_str(),
            seconds = rec.seconds,
            reason = rec.reason.as_deref().unwrap_or(""),
            "run finished"
        );
        self.notifier.run_finished(&rec).await;
        crate::release_memory();
        Ok(Outcome::Ran(rec))
    }
}

/// Starts the run `draft` describes: its handle, or what happened instead
/// (skipped because another run is in progress, or already served).
async fn start(repo: &Repository, draft: RunRecord) -> Result<Result<RunHandle, Outcome>> {
    Ok(match repo.begin_run(draft).await? {
        Begin::Started(h) => Ok(h),
        Begin::Busy { skipped, .. } => {
            tracing::info!(
                job = %skipped.job,
                reason = skipped.reason.as_deref().unwrap_or(""),
                "skipped"
            );
            Err(Outcome::Skipped(skipped))
        }
        Begin::AlreadyDone(_) => Err(Outcome::AlreadyDone),
    })
}

/// What a backup saved.
struct Done {
    snapshot: String,
    bytes_read: u64,
    bytes_added: u64,
    bytes_uploaded: u64,
    partial: bool,
}

/// A source's Qdrant API key, from the variable or file it names.
fn api_key(source: &cairn_config::Source) -> Result<Option<cairn_cluster::ApiKey>> {
    if let Some(var) = &source.api_key_env {
        return Ok(std::env::var(var).ok().and_then(cairn_cluster::ApiKey::new));
    }
    if let Some(file) = &source.api_key_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading the Qdrant API key file {}", file.display()))?;
        return Ok(cairn_cluster::ApiKey::new(text.trim().to_string()));
    }
    Ok(std::env::var("QDRANT_API_KEY")
        .ok()
        .and_then(cairn_cluster::ApiKey::new))
}

/// An error and its causes on one line, each once.
#[must_use]
pub fn describe(err: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !message.contains(&text) {
            if !message.is_empty() {
                message.push_str(": ");
            }
            message.push_str(&text);
        }
    }
    message
}
