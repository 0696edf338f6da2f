//! The control plane: schedule runs and their history in the repository,
//! `cairn daemon` (the schedules, an HTTP API, Prometheus metrics, the
//! dashboard and webhooks), and the path `cairn backup --schedule` shares
//! with it.
//!
//! - [`jobs`]: one run of a schedule (backup, then retention), a prune or a
//!   check, recorded and notified;
//! - [`scheduler`]: fire times, catch-up after downtime, retries;
//! - [`api`]: the HTTP routes; [`schedules`]: the schedules as the API
//!   shows and edits them (edits rewrite the config file, comments kept);
//! - `metrics`: the Prometheus text; [`webhook`]: notifications.

pub mod api;
pub mod jobs;
mod metrics;
pub mod scheduler;
pub mod schedules;
pub mod webhook;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cairn_engine::{Progress, Repository, SnapshotId, SnapshotInfo, Time};
use serde_json::{json, Value};
use tokio::sync::watch;

pub use jobs::{Outcome, Runner};

/// How the daemon is started.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// The config file.
    pub config: PathBuf,
    /// Address to listen on (overrides the config's).
    pub listen: Option<String>,
    /// Where repository caches live when a repository names none.
    pub cache_root: PathBuf,
    /// Lease length (tests shorten it).
    pub lease: Option<Duration>,
    /// Longest a SIGTERM waits for the run in progress.
    pub stop_timeout: Duration,
    /// The password of encrypted repositories.
    pub password: Option<cairn_crypto::Password>,
}

/// An in-progress or finished restore started from the API.
#[derive(Debug)]
pub struct RestoreJob {
    id: String,
    snapshot: String,
    target: Vec<String>,
    state: String,
    error: Option<String>,
    summary: Option<Value>,
    started: Time,
    finished: Option<Time>,
    progress: Arc<RestoreProgress>,
}

impl RestoreJob {
    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "snapshot": self.snapshot,
            "target": self.target,
            "state": self.state,
            "error": self.error,
            "summary": self.summary,
            "started": self.started.to_rfc3339(),
            "finished": self.finished.map(|t| t.to_rfc3339()),
            "phase": lock(&self.progress.phase).clone(),
            "bytes_done": self.progress.done.load(Ordering::Relaxed),
            "bytes_total": self.progress.total.load(Ordering::Relaxed),
        })
    }
}

/// A restore's progress as the API reports it.
#[derive(Debug, Default)]
pub struct RestoreProgress {
    phase: Mutex<String>,
    done: AtomicU64,
    total: AtomicU64,
}

impl Progress for RestoreProgress {
    fn start(&self, phase: &str, total: Option<u64>) {
        *lock(&self.phase) = phase.to_string();
        self.done.store(0, Ordering::Relaxed);
        self.total.store(total.unwrap_or(0), Ordering::Relaxed);
    }
    fn advance(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
    }
    fn note(&self, message: &str) {
        *lock(&self.phase) = message.to_string();
    }
}

/// Spawns the future `make` builds on a blocking-pool thread that drives it
/// with this runtime. The engine's backup and restore futures are not
/// provably `Send` for every lifetime they borrow, so `tokio::spawn` refuses
/// them; their I/O still runs on this runtime.
pub(crate) fn spawn_run<F, M>(make: M) -> tokio::task::JoinHandle<F::Output>
where
    M: FnOnce() -> F + Send + 'static,
    F: std::future::Future + 'static,
    F::Output: Send + 'static,
{
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || handle.block_on(make()))
}

/// Locks `m`, also after a panic elsewhere held it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Hands memory freed after a run or a large listing back to the system:
/// the daemon idles most of the time, and the allocator (tuned by the CLI
/// for throughput) would otherwise keep the peak of the last run.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub(crate) fn release_memory() {
    // SAFETY: malloc_trim only returns free pages of the allocator's own
    // heaps to the kernel; it takes the allocator's locks and is safe to
    // call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn release_memory() {}

/// One backup as the API lists it.
pub(crate) struct Listed {
    /// Its id, in hex.
    pub(crate) id: Box<str>,
    /// Its source key (what `latest` and retention group by).
    pub(crate) source: Box<str>,
    /// When it started.
    pub(crate) time: Time,
    /// What it added to the repository, as stored.
    pub(crate) new_stored_bytes: u64,
    /// Its row in `GET /api/v1/backups`, serialized.
    pub(crate) json: Box<str>,
}

impl Listed {
    fn new(repository: &str, info: &SnapshotInfo) -> Self {
        let mut v = json!(cairn_engine::SnapshotRow::from(info));
        v["repository"] = json!(repository);
        v["schedule"] = json!(info
            .snapshot
            .tags
            .iter()
            .find_map(|t| t.strip_prefix("schedule:")));
        Self {
            id: info.id.to_hex().into_boxed_str(),
            source: info.snapshot.source_key().into_boxed_str(),
            time: info.snapshot.time,
            new_stored_bytes: info.snapshot.totals.new_stored_bytes,
            json: v.to_string().into_boxed_str(),
        }
    }
}

/// What the API's handlers share.
pub struct Shared {
    runner: RwLock<Arc<Runner>>,
    config_path: PathBuf,
    cache_root: PathBuf,
    lease: Option<Duration>,
    password: Option<cairn_crypto::Password>,
    token: Option<String>,
    started: Instant,
    restores: Mutex<HashMap<String, RestoreJob>>,
    restore_seq: AtomicU64,
    /// Backups read so far, by repository, as the API lists them: listing
    /// reads only new manifests, and keeps a row, not the manifest.
    manifests: Mutex<HashMap<String, HashMap<SnapshotId, Arc<Listed>>>>,
    /// Asks the daemon to load the config again (after an edit).
    reload: watch::Sender<u64>,
    /// Next fire times.
    next: scheduler::NextRuns,
}

impl Shared {
    /// The runner of the config in force.
    pub fn runner(&self) -> Arc<Runner> {
        Arc::clone(
            &self
                .runner
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Every backup of repository `name`, in no order; manifests already
    /// read are not read again.
    async fn listed(&self, name: &str, repo: &Repository) -> Result<Vec<Arc<Listed>>> {
        let ids = repo.snapshot_ids().await?;
        let missing: Vec<SnapshotId> = {
            let cache = lock(&self.manifests);
            let have = cache.get(name);
            ids.iter()
                .filter(|id| have.is_none_or(|h| !h.contains_key(id)))
                .copied()
                .collect()
        };
        // In batches, so that only a batch of whole manifests is in memory
        // at once: the cache keeps rows.
        for batch in missing.chunks(256) {
            let loaded = repo.load_snapshots(batch).await?;
            let mut cache = lock(&self.manifests);
            let entry = cache.entry(name.to_string()).or_default();
            for info in &loaded {
                entry.insert(info.id, Arc::new(Listed::new(name, info)));
            }
        }
        if !missing.is_empty() {
            release_memory();
        }
        let mut cache = lock(&self.manifests);
        let entry = cache.entry(name.to_string()).or_default();
        if entry.len() != ids.len() {
            let ids: std::collections::HashSet<&SnapshotId> = ids.iter().collect();
            entry.retain(|id, _| ids.contains(id));
        }
        Ok(entry.values().cloned().collect())
    }

    fn forget_cached(&self, id: &SnapshotId) {
        for m in lock(&self.manifests).values_mut() {
            m.remove(id);
        }
    }
}

/// The API token: `CAIRN_API_TOKEN`, else the config's `api.token_file`.
fn token(config: &cairn_config::Config) -> Result<Option<String>> {
    if let Ok(t) = std::env::var("CAIRN_API_TOKEN") {
        if !t.trim().is_empty() {
            return Ok(Some(t.trim().to_string()));
        }
    }
    if let Some(f) = &config.api.token_file {
        let t = std::fs::read_to_string(f)
            .with_context(|| format!("reading the API token file {}", f.display()))?;
        if t.trim().is_empty() {
            bail!("the API token file {} is empty", f.display());
        }
        return Ok(Some(t.trim().to_string()));
    }
    Ok(None)
}

fn load(path: &std::path::Path) -> Result<Arc<cairn_config::Config>> {
    let loaded = cairn_config::load(path)?;
    for w in &loaded.warnings {
        tracing::warn!("{}:{w}", path.display());
    }
    Ok(Arc::new(loaded.config))
}

/// Runs the daemon until SIGTERM or SIGINT: the schedules, and the API on
/// `listen`. Prints `listening on ADDR` on stdout once it accepts.
///
/// # Errors
/// The config cannot be loaded, the address is refused (beyond loopback
/// without a token) or cannot be bound.
pub async fn run(opts: DaemonOptions) -> Result<()> {
    let config = load(&opts.config)?;
    let listen = opts
        .listen
        .clone()
        .or_else(|| config.api.listen.as_ref().map(|l| l.get_ref().clone()))
        .unwrap_or_else(|| cairn_config::DEFAULT_LISTEN.to_string());
    let addr: SocketAddr = listen
        .parse()
        .with_context(|| format!("--listen {listen:?}: expected IP:PORT"))?;
    let token = token(&config)?;
    if token.is_none() && !addr.ip().is_loopback() {
        bail!(
            "refusing to listen on {addr} without an API token: set CAIRN_API_TOKEN or [api] token_file, or listen on 127.0.0.1"
        );
    }
    let runner = Arc::new(
        Runner::new(Arc::clone(&config), opts.cache_root.clone(), opts.lease)
            .with_password(opts.password.clone()),
    );
    let (reload, mut reloads) = watch::channel(0u64);
    let shared = Arc::new(Shared {
        runner: RwLock::new(Arc::clone(&runner)),
        config_path: opts.config.clone(),
        cache_root: opts.cache_root.clone(),
        lease: opts.lease,
        password: opts.password.clone(),
        token,
        started: Instant::now(),
        restores: Mutex::new(HashMap::new()),
        restore_seq: AtomicU64::new(0),
        manifests: Mutex::new(HashMap::new()),
        reload,
        next: Arc::default(),
    });
    // Signal handlers before anything is announced, kept for the daemon's
    // life, so no SIGTERM falls between two waits.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot handle SIGTERM")?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("cannot handle SIGINT")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let bound = listener.local_addr()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = {
        let app = api::router(Arc::clone(&shared));
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let r = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.changed().await;
                })
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "the API server stopped");
            }
        })
    };
    println!("listening on {bound}");
    tracing::info!(%bound, schedules = config.schedules.len(), "daemon started");
    // The schedules of the config in force; an edit reloads them (a run in
    // progress finishes under the old config).
    let (mut gen_stop, mut gen_rx) = watch::channel(false);
    let mut tasks = scheduler::spawn(&runner, &gen_rx, &shared.next);
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            r = reloads.changed() => {
                if r.is_err() { break; }
                // The edit installed the new config's runner; its schedules
                // replace the old ones (a run in progress finishes first).
                let _ = gen_stop.send(true);
                (gen_stop, gen_rx) = watch::channel(false);
                tasks.extend(scheduler::spawn(&shared.runner(), &gen_rx, &shared.next));
                tracing::info!("config reloaded");
            }
        }
    }
    tracing::warn!("stopping: runs in progress finish their uploads and stop");
    // One flag, shared by every runner an edit made.
    runner.cancel.store(true, Ordering::Relaxed);
    let _ = gen_stop.send(true);
    let _ = stop_tx.send(true);
    drop(gen_rx);
    let all = futures::future::join_all(tasks);
    if tokio::time::timeout(opts.stop_timeout, all).await.is_err() {
        tracing::error!(
            secs = opts.stop_timeout.as_secs(),
            "runs did not stop in time; exiting (their records read as interrupted)"
        );
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    Ok(())
}
