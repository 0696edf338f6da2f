//! Leases of running writers (`locks/<name>`), the in-progress markers of
//! the garbage-collection protocol (docs/format.md).
//!
//! A lease is valid while the storage's clock is within `lease_secs` of the
//! object's last write; every comparison uses the storage's timestamps, so
//! clocks of the machines involved do not matter. The holder rewrites it
//! every third of its duration from a background task, and before it
//! commits anything a prune must not miss, it rewrites it once more and
//! finishes within half the duration by its own monotonic clock.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_model::{Lease, LeaseKind};
use cairn_store::keys;
use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::repository::Repository;

pub use crate::repository::DEFAULT_LEASE;

/// A lease this process holds; released explicitly with [`HeldLease::release`]
/// (or, if dropped, deleted in the background).
#[derive(Debug)]
pub(crate) struct HeldLease {
    repo: Repository,
    key: String,
    body: Lease,
    /// When it was last written, by this process's monotonic clock.
    written: Arc<Mutex<Instant>>,
    /// Set when two successful writes were half a lease or more apart: a
    /// prune may have taken the lease for lapsed, so nothing may be
    /// committed under it any more.
    lapsed: Arc<std::sync::atomic::AtomicBool>,
    refresher: Option<tokio::task::JoinHandle<()>>,
    duration: Duration,
}

/// Records a successful write at `t`; marks the lease lapsed when the
/// previous one was half a lease or more before.
fn note_write(
    written: &Mutex<Instant>,
    lapsed: &std::sync::atomic::AtomicBool,
    t: Instant,
    duration: Duration,
) {
    let mut w = written
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if t.saturating_duration_since(*w) >= duration / 2 {
        lapsed.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    *w = t;
}

fn encode(l: &Lease) -> Bytes {
    Bytes::from(serde_json::to_vec(l).expect("invariant: leases serialize"))
}

/// A lease found in the repository.
#[derive(Debug, Clone)]
pub(crate) struct FoundLease {
    pub(crate) name: String,
    pub(crate) lease: Option<Lease>,
    pub(crate) last_modified: DateTime<Utc>,
}

impl FoundLease {
    /// When its holder started (storage time).
    pub(crate) fn started(&self) -> DateTime<Utc> {
        self.lease
            .as_ref()
            .and_then(|l| l.started)
            .unwrap_or(self.last_modified)
    }

    /// True while valid at storage time `now`. An unreadable lease counts
    /// as valid for the default duration: better to wait than to delete.
    pub(crate) fn is_live(&self, now: DateTime<Utc>) -> bool {
        let secs = self
            .lease
            .as_ref()
            .map_or(DEFAULT_LEASE.as_secs(), |l| l.lease_secs);
        now - self.last_modified
            < chrono::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX))
    }

    /// "backup on HOST (pid N) since TIME".
    pub(crate) fn describe(&self) -> String {
        match &self.lease {
            Some(l) => format!(
                "{} on {} (pid {}) since {}",
                l.kind,
                l.host,
                l.pid,
                self.started().to_rfc3339()
            ),
            None => format!("an unreadable lease {}", self.name),
        }
    }
}

/// A reader's lease (restore, `dump`, `check --read-data`): while it is
/// held, a prune's sweep waits before deleting any pack, so the pack
/// locations the reader looked up stay valid. Released on
/// [`ReadLease::release`] or, if dropped, in the background.
#[derive(Debug)]
pub struct ReadLease(Option<HeldLease>);

impl ReadLease {
    /// No lease: for a reader that writes nothing, not even a lease (a dry
    /// run), and accepts that a prune sweeping meanwhile may fail it.
    pub(crate) fn none() -> Self {
        Self(None)
    }

    /// Stops renewing and deletes the lease.
    pub async fn release(self) {
        if let Some(l) = self.0 {
            l.release().await;
        }
    }
}

impl Repository {
    /// Takes a reader's lease before the reader looks up any pack. When
    /// the repository cannot take it (read-only credentials), the reader
    /// goes on without, saying that a prune running meanwhile could delete
    /// a pack it reads.
    pub async fn read_lease(&self) -> ReadLease {
        match self.acquire_lease(LeaseKind::Reader, None).await {
            Ok(l) => ReadLease(Some(l)),
            Err(e) => {
                tracing::warn!(error = %e, "reading without a lease (cannot write one under locks/): a prune that sweeps meanwhile may delete packs this command reads");
                ReadLease(None)
            }
        }
    }

    /// Takes a new lease of `kind`. With `name`, the lease has that fixed name
    /// and is created only if absent (or stale: an expired one is replaced).
    pub(crate) async fn acquire_lease(
        &self,
        kind: LeaseKind,
        name: Option<&str>,
    ) -> Result<HeldLease> {
        let duration = self.lease_duration;
        let fixed = name.is_some();
        let name = name.map_or_else(|| hex::encode(rand::random::<[u8; 16]>()), str::to_string);
        let key = keys::lock(&name);
        let mut body = Lease {
            kind,
            host: crate::host::hostname(),
            pid: std::process::id(),
            started: None,
            lease_secs: duration.as_secs().max(1),
        };
        if fixed {
            // A fixed name (the prune lock): create-only, unless stale.
            match self.store.put_new(&key, encode(&body)).await {
                Ok(()) => {}
                Err(cairn_store::Error::AlreadyExists { .. }) => {
                    let now = self.storage_now().await?;
                    let found = self.lease(&name).await?;
                    if found.as_ref().is_some_and(|f| f.is_live(now)) {
                        let f = found.expect("invariant: checked above");
                        return Err(Error::Busy(format!(
                            "another {kind} is running: {}; it holds {key} until its lease lapses",
                            f.describe()
                        )));
                    }
                    tracing::warn!(lock = %key, "replacing a lapsed lease");
                    self.store.put_replace(&key, encode(&body)).await?;
                }
                Err(e) => return Err(e.into()),
            }
        } else {
            self.store.put_replace(&key, encode(&body)).await?;
        }
        let written = Arc::new(Mutex::new(Instant::now()));
        let started = self.store.modified(&key).await?;
        body.started = Some(started);
        self.store.put_replace(&key, encode(&body)).await?;
        let lapsed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let refresher = {
            let store = self.store.clone();
            let key = key.clone();
            let bytes = encode(&body);
            let written = Arc::clone(&written);
            let lapsed = Arc::clone(&lapsed);
            tokio::spawn(async move {
                let mut wait = duration / 3;
                loop {
                    tokio::time::sleep(wait).await;
                    let t = Instant::now();
                    match store.put_replace(&key, bytes.clone()).await {
                        Ok(()) => {
                            note_write(&written, &lapsed, t, duration);
                            wait = duration / 3;
                        }
                        Err(e) => {
                            tracing::warn!(lease = %key, error = %e, "could not renew the lease; retrying");
                            // Retry soon: a lease may not go unrenewed for half its length.
                            wait = (duration / 20).max(Duration::from_millis(200));
                        }
                    }
                }
            })
        };
        Ok(HeldLease {
            repo: self.clone(),
            key,
            body,
            written,
            lapsed,
            refresher: Some(refresher),
            duration,
        })
    }

    /// The storage's current time: the last-modified time of a probe
    /// object written now.
    pub(crate) async fn storage_now(&self) -> Result<DateTime<Utc>> {
        let key = keys::lock("clock");
        self.store
            .put_replace(&key, Bytes::from_static(b"{}"))
            .await?;
        Ok(self.store.modified(&key).await?)
    }

    /// One lease by name, if present.
    pub(crate) async fn lease(&self, name: &str) -> Result<Option<FoundLease>> {
        Ok(self.leases().await?.into_iter().find(|l| l.name == name))
    }

    /// Every lease in the repository (the clock probe excluded).
    pub(crate) async fn leases(&self) -> Result<Vec<FoundLease>> {
        let listed = self.store.list(keys::LOCK_DIR).await?;
        let mut out = Vec::new();
        for l in listed.into_iter().filter(|l| l.name != "clock") {
            let lease = match self.store.get(&keys::lock(&l.name)).await {
                Ok(b) => serde_json::from_slice::<Lease>(&b).ok(),
                Err(cairn_store::Error::NotFound { .. }) => continue, // released meanwhile
                Err(e) => return Err(e.into()),
            };
            out.push(FoundLease {
                name: l.name,
                lease,
                last_modified: l.last_modified,
            });
        }
        Ok(out)
    }
}

impl HeldLease {
    /// Rewrites the lease now (before a commit).
    ///
    /// # Errors
    /// Storage errors; [`Error::LeaseLapsed`] when it lapsed at some point.
    pub(crate) async fn renew(&self) -> Result<()> {
        let t = Instant::now();
        self.repo
            .store
            .put_replace(&self.key, encode(&self.body))
            .await?;
        note_write(&self.written, &self.lapsed, t, self.duration);
        if self.lapsed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::LeaseLapsed {
                secs: self.duration.as_secs(),
            });
        }
        Ok(())
    }

    /// True while a commit may still rely on the lease: it never lapsed,
    /// and less than half its duration passed since the last write.
    pub(crate) fn is_fresh(&self) -> bool {
        !self.lapsed.load(std::sync::atomic::Ordering::SeqCst)
            && self
                .written
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .elapsed()
                < self.duration / 2
    }

    /// Stops renewing and deletes the lease.
    pub(crate) async fn release(mut self) {
        if let Some(t) = self.refresher.take() {
            t.abort();
        }
        if let Err(e) = self.repo.store.delete(&self.key).await {
            tracing::warn!(lease = %self.key, error = %e, "could not delete the lease; it lapses by itself");
        }
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        if let Some(t) = self.refresher.take() {
            t.abort();
            // Not released explicitly (an error path): delete it if a runtime is at hand.
            if let Ok(h) = tokio::runtime::Handle::try_current() {
                let store = self.repo.store.clone();
                let key = self.key.clone();
                h.spawn(async move {
                    let _ = store.delete(&key).await;
                });
            }
        }
    }
}
