//! `lock extend`: keeps what each kept backup needs (its manifest and every
//! pack holding its chunks) under S3 Object Lock for as long as the
//! retention policy keeps it, or until a given date. Locks only grow: an
//! object already locked as long is left alone.

use std::collections::{BTreeMap, HashMap};

use cairn_model::{PackId, SnapshotId};
use cairn_store::keys;
use cairn_store::objectlock::{LockMode, S3ObjectLock};
use chrono::{DateTime, Duration, Utc};
use futures::{StreamExt, TryStreamExt};

use crate::error::{Error, Result};
use crate::repository::{Repository, SnapshotInfo};
use crate::retention::{apply, Candidate, RetentionPolicy};

/// Objects whose retention is read or set at once.
const LOCK_CONCURRENCY: usize = 16;

/// What to extend, and to when.
#[derive(Debug, Clone, Default)]
pub struct LockExtendOptions {
    /// Every snapshot (or those named) until this date.
    pub until: Option<DateTime<Utc>>,
    /// Snapshots by id (or unique prefix); all when empty.
    pub ids: Vec<String>,
    /// Otherwise: each snapshot until the policy would let it go (per
    /// source, as `forget` groups by default).
    pub policy: RetentionPolicy,
    /// Report; change nothing.
    pub dry_run: bool,
}

/// One snapshot's lock.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SnapshotLock {
    /// The snapshot.
    pub id: SnapshotId,
    /// What it needs is locked at least until then.
    pub until: DateTime<Utc>,
}

/// What `lock extend` did (`--json` prints exactly this).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct LockExtendSummary {
    /// The snapshots and the date each is kept locked until.
    pub snapshots: Vec<SnapshotLock>,
    /// Objects (manifests and packs) whose retention was read.
    pub objects: usize,
    /// Of them, locks extended (or, dry, to extend).
    pub extended: usize,
    /// Nothing was changed.
    pub dry_run: bool,
}

/// How long after a snapshot's time the rule that keeps it keeps it:
/// `daily 7` seven days, `monthly 12` twelve months (31 days each), and so
/// on; `last` and `tag` rules name no time (the lock written with the
/// object stands).
fn kept_for(reason: &str, policy: &RetentionPolicy) -> Duration {
    let rule = reason.split(' ').next().unwrap_or("");
    let n = |c: Option<u32>| i64::from(c.unwrap_or(0));
    match rule {
        "hourly" => Duration::hours(n(policy.hourly)),
        "daily" => Duration::days(n(policy.daily)),
        "weekly" => Duration::days(7 * n(policy.weekly)),
        "monthly" => Duration::days(31 * n(policy.monthly)),
        "yearly" => Duration::days(366 * n(policy.yearly)),
        "within" => policy.within.unwrap_or_else(Duration::zero),
        _ => Duration::zero(),
    }
}

/// The date each snapshot must stay locked until under `policy`.
fn policy_targets(
    snapshots: &[SnapshotInfo],
    policy: &RetentionPolicy,
) -> Vec<(SnapshotId, DateTime<Utc>)> {
    let mut groups: BTreeMap<String, Vec<&SnapshotInfo>> = BTreeMap::new();
    for s in snapshots {
        groups.entry(s.snapshot.source_key()).or_default().push(s);
    }
    let mut out = Vec::new();
    for infos in groups.values() {
        let candidates: Vec<Candidate> = infos.iter().map(|i| Candidate::from(*i)).collect();
        for (info, reasons) in infos.iter().zip(apply(policy, &candidates)) {
            if let Some(longest) = reasons.iter().map(|r| kept_for(r, policy)).max() {
                out.push((info.id, info.snapshot.time + longest));
            }
        }
    }
    out
}

impl Repository {
    /// Extends the Object Lock of what the snapshots need (see the module).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a repository without Object Lock, or
    /// neither a date nor a policy; storage and Object Lock errors.
    pub async fn extend_locks(&self, opts: &LockExtendOptions) -> Result<LockExtendSummary> {
        self.require_read("extend locks")?;
        let Some((lock, mode)) = self.locking() else {
            return Err(Error::InvalidArgument(format!(
                "{} does not keep its backups under Object Lock (cairn init --object-lock)",
                self.location()
            )));
        };
        let lock = &*lock;
        let snapshots = if opts.ids.is_empty() {
            self.snapshots().await?
        } else {
            let mut v = Vec::new();
            for spec in &opts.ids {
                v.push(self.find_snapshot(spec).await?);
            }
            v
        };
        let targets: Vec<(SnapshotId, DateTime<Utc>)> = match opts.until {
            Some(u) => snapshots.iter().map(|s| (s.id, u)).collect(),
            None if opts.policy.is_empty() => {
                return Err(Error::InvalidArgument(
                    "give --until TIME or retention rules (--keep-daily …) to derive each backup's date from"
                        .into(),
                ))
            }
            None => policy_targets(&snapshots, &opts.policy),
        };
        let now = self.storage_now().await?;
        let mut targets: Vec<(SnapshotId, DateTime<Utc>)> =
            targets.into_iter().filter(|(_, t)| *t > now).collect();
        targets.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));

        // Each object gets the latest date of the snapshots that need it:
        // groups of snapshots by date, latest first, each claiming the
        // packs no later group took.
        let by_id: HashMap<SnapshotId, &SnapshotInfo> =
            snapshots.iter().map(|s| (s.id, s)).collect();
        let mut wanted: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
        let mut i = 0;
        while i < targets.len() {
            let until = targets[i].1;
            let group: Vec<SnapshotInfo> = targets[i..]
                .iter()
                .take_while(|(_, t)| *t == until)
                .map(|(id, _)| (*by_id[id]).clone())
                .collect();
            i += group.len();
            for s in &group {
                wanted.entry(keys::snapshot(&s.id)).or_insert(until);
            }
            for p in self.packs_needed(&group).await? {
                wanted.entry(keys::pack(&p)).or_insert(until);
            }
        }
        let extended: Vec<bool> = futures::stream::iter(wanted.iter())
            .map(|(key, until)| extend(lock, key, mode, *until, opts.dry_run))
            .buffer_unordered(LOCK_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(LockExtendSummary {
            snapshots: targets
                .into_iter()
                .map(|(id, until)| SnapshotLock { id, until })
                .collect(),
            objects: wanted.len(),
            extended: extended.iter().filter(|e| **e).count(),
            dry_run: opts.dry_run,
        })
    }

    /// Every pack holding a chunk (or chunk list) `snapshots` need.
    async fn packs_needed(&self, snapshots: &[SnapshotInfo]) -> Result<Vec<PackId>> {
        let tmp = self.scratch()?;
        let (mut scan, mut needed) = self
            .scan_needs(
                snapshots,
                crate::services::mark::DEFAULT_SORT_BUFFER,
                tmp.path(),
            )
            .await?;
        let mut out = std::collections::BTreeSet::new();
        scan.join(&mut needed, |packs, _, places| {
            out.extend(places.iter().map(|p| packs[p.pack as usize].id));
        })?;
        Ok(out.into_iter().collect())
    }
}

/// Locks `key` until `until` unless it already is; true when extended.
async fn extend(
    lock: &S3ObjectLock,
    key: &str,
    mode: LockMode,
    until: DateTime<Utc>,
    dry_run: bool,
) -> Result<bool> {
    let current = lock.retention(key).await?;
    if current.is_none_or(|r| r.until.is_some_and(|u| u >= until)) {
        return Ok(false);
    }
    if !dry_run {
        lock.retain(key, mode, until).await?;
    }
    Ok(true)
}
